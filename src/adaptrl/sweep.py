"""`adaptrl sweep`: every combination of methods × families × presets × seeds, trained and
evaluated as separate runs, on Ray (one task per run, with a CPU request) or on local
processes, then one `adaptrl compare` per family aggregated over seeds.

A sweep folder (``--out``, default ``runs/sweep``)::

    sweep.json                  the sweep's definition; the same command continues the sweep
    status.json                 per run: state (pending, done, failed), times, the error line
    runs/<algo>-<family>-<preset>-s<seed>/    each run's folder (`adaptrl train --out`)
    logs/<run>.log              each run's train and eval output
    compare-<family>/           `adaptrl compare` of the family's finished runs

Each run is two child processes: ``adaptrl train`` (with ``--resume`` when its folder holds a
checkpoint) and ``adaptrl eval``. Their torch, MuJoCo and OpenMP threads are pinned to the
CPUs the run asked for (``--cpus-per-run``), so runs side by side do not oversubscribe the
cores. A child dies with the process that started it (``ADAPTRL_DIE_WITH_PARENT``), so a
killed sweep leaves no orphan training; started again, the sweep skips the finished runs,
resumes the interrupted ones from their last checkpoint, and retries the failed ones. A run
that fails is reported with its log's last line and does not stop the others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import atomic_write_text
from .errors import AdaptrlError

SWEEP_FILE = "sweep.json"
STATUS_FILE = "status.json"
DIE_WITH_PARENT = "ADAPTRL_DIE_WITH_PARENT"
THREAD_VARIABLES = ("ADAPTRL_TORCH_THREADS", "ADAPTRL_MUJOCO_THREADS", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class SweepRun:
    """One combination: the run folder's name is ``<algo>-<family>-<preset>-s<seed>``."""

    algo: str
    family: str
    preset: str | None
    seed: int

    @property
    def name(self) -> str:
        return f"{self.algo}-{self.family}-{self.preset or 'default'}-s{self.seed}"


@dataclass
class SweepSpec:
    """What `adaptrl sweep` runs; stored in ``sweep.json``."""

    algos: list[str]
    families: list[str]
    presets: list[str | None]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    eval_split: str = "test"
    eval_tasks: int = 40
    eval_episodes: int = 20
    eval_seed: int = 0
    eval_steps: list[int] | None = None
    cpus_per_run: int = 1

    def runs(self) -> list[SweepRun]:
        return [SweepRun(a, f, p, s) for f in self.families for p in self.presets
                for a in self.algos for s in self.seeds]


def parse_seeds(text: str) -> list[int]:
    """``0-4`` → [0, 1, 2, 3, 4]; ``0,3,7``; or a mix ``0-2,10``."""
    from .options import MAX_SEED

    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise AdaptrlError(f"--seeds: expected seeds like 0-4 or 0,3,7, got '{text}'")
        low, high = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if high < low or high > MAX_SEED:
            raise AdaptrlError(f"--seeds: '{part}' is not a range of seeds in [0, {MAX_SEED}]")
        seeds += [s for s in range(low, high + 1) if s not in seeds]
    return seeds


def parse_list(text: str, flag: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not items or any(not item for item in items):
        raise AdaptrlError(f"{flag}: expected a comma-separated list, got '{text}'")
    return list(dict.fromkeys(items))


def check_spec(spec: SweepSpec) -> None:
    """Every method, family, preset and ``--set`` of the sweep, checked before anything runs
    (a one-line `AdaptrlError` for the first bad one)."""
    from .config import make_config
    from .eval import SPLITS, check_steps
    from .tasks import get_family

    for family in spec.families:
        get_family(family)
    for algo in spec.algos:
        for preset in spec.presets:
            make_config(algo, preset, spec.overrides)
    if spec.eval_split not in SPLITS:
        raise AdaptrlError(f"--eval-split must be one of {', '.join(SPLITS)}")
    if spec.eval_steps is not None:
        check_steps(spec.eval_steps)
    if spec.cpus_per_run < 1:
        raise AdaptrlError("--cpus-per-run must be at least 1")


_CHILDREN: set[subprocess.Popen] = set()
"""This process's running children (`LocalExecutor.close` stops them)."""


# ─── one run, in a worker (a Ray task or a local thread) ────────────────────────────────────
def _die_with_parent_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env[DIE_WITH_PARENT] = str(os.getpid())
    return env


def die_with_parent() -> None:
    """In a sweep's child process (``ADAPTRL_DIE_WITH_PARENT`` = the parent's pid): ask Linux to
    send SIGTERM when the parent dies, and exit now if it already has. Elsewhere a no-op."""
    expected = os.environ.pop(DIE_WITH_PARENT, None)
    if expected is None or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != expected:  # the parent died before the prctl
        sys.exit(143)


def _last_line(log: Path, start: int) -> str:
    try:
        with open(log, "rb") as handle:
            handle.seek(start)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    lines = [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def execute_run(job: dict) -> dict:
    """Train (or resume) one run, then evaluate it, each in a child process with pinned threads;
    ``{"name", "state": "done" | "failed", "error", "train_s", "eval_s"}``. ``job`` holds plain
    values (it travels to Ray workers): name, run_dir, log, train (argv after ``adaptrl``,
    without ``--resume``), eval (argv), threads."""
    run_dir, log = Path(job["run_dir"]), Path(job["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    result = {"name": job["name"], "state": "done", "error": None, "train_s": 0.0, "eval_s": 0.0}
    train = list(job["train"])
    if (run_dir / "config.yaml").is_file():
        if (run_dir / "checkpoints" / "latest.pt").is_file():
            train.append("--resume")
        else:  # killed before its first checkpoint: nothing to keep
            shutil.rmtree(run_dir)
    for stage, argv in (("train", train), ("eval", job["eval"])):
        with open(log, "ab") as out:
            start = out.tell()
            out.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} adaptrl {' '.join(argv)}\n"
                      .encode())
            out.flush()
            began = time.perf_counter()
            child = subprocess.Popen([sys.executable, "-m", "adaptrl", *argv], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=_die_with_parent_env(job["threads"]))
            _CHILDREN.add(child)
            try:
                code = child.wait()
            finally:
                _CHILDREN.discard(child)
        result[f"{stage}_s"] = round(time.perf_counter() - began, 2)
        if code != 0:
            result.update(state="failed",
                          error=f"{stage} exited with {code}: {_last_line(log, start)}")
            return result
    return result


# ─── executors ───────────────────────────────────────────────────────────────────────────────
class LocalExecutor:
    """Runs on local threads, each waiting on its run's child processes (``jobs`` at once)."""

    def __init__(self, jobs: int):
        from concurrent.futures import ThreadPoolExecutor

        self.parallel = jobs
        self._pool = ThreadPoolExecutor(max_workers=jobs)
        self._futures: dict[str, object] = {}

    def submit(self, job: dict) -> None:
        self._futures[job["name"]] = self._pool.submit(execute_run, job)

    def finished(self, timeout: float) -> list[dict]:
        from concurrent.futures import FIRST_COMPLETED, wait

        if not self._futures:
            return []
        done, _ = wait(list(self._futures.values()), timeout=timeout,
                       return_when=FIRST_COMPLETED)
        results = []
        for name, future in list(self._futures.items()):
            if future in done:
                del self._futures[name]
                results.append(_result_of(name, future.result))
        return results

    def close(self) -> None:
        """Cancel the runs not started and stop the running ones (SIGTERM: their checkpoints
        are atomic, so the next sweep resumes them)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for child in list(_CHILDREN):
            child.terminate()
        self._pool.shutdown(wait=True)


class RayExecutor:
    """One Ray task per run, each asking for ``cpus`` CPUs (Ray runs as many at once as the
    cluster has CPUs for); tasks are not retried by Ray: a failed run is reported."""

    def __init__(self, cpus: int, address: str | None):
        from .sampling.backends import ray_backend

        module = ray_backend()
        self._ray = module.ray
        self._started = module.start_ray(address, workers=cpus)
        total = int(self._ray.cluster_resources().get("CPU", 0))
        if total < cpus:
            raise AdaptrlError(f"--cpus-per-run {cpus} is more than the Ray cluster's {total} "
                               f"CPUs")
        self.parallel = max(1, total // cpus)
        self._remote = self._ray.remote(num_cpus=cpus, max_retries=0)(execute_run)
        self._refs: dict[object, str] = {}

    def submit(self, job: dict) -> None:
        self._refs[self._remote.remote(job)] = job["name"]

    def finished(self, timeout: float) -> list[dict]:
        if not self._refs:
            return []
        done, _ = self._ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        results = []
        for ref in done:
            name = self._refs.pop(ref)
            results.append(_result_of(name, lambda ref=ref: self._ray.get(ref)))
        return results

    def close(self) -> None:
        for ref in self._refs:
            self._ray.cancel(ref, force=True)
        if self._started:
            self._ray.shutdown()


def _result_of(name: str, get) -> dict:
    try:
        return get()
    except Exception as err:  # the worker itself failed (Ray worker lost, ...): report the run
        text = str(err).strip().splitlines()
        return {"name": name, "state": "failed", "train_s": 0.0, "eval_s": 0.0,
                "error": f"worker failed: {text[-1] if text else type(err).__name__}"[:300]}


# ─── the driver ─────────────────────────────────────────────────────────────────────────────
def _job(spec: SweepSpec, run: SweepRun, out: Path) -> dict:
    run_dir = out / "runs" / run.name
    # train's progress: a line per checkpoint in the log (it is not a terminal)
    train = ["train", run.algo, run.family, "--seed", str(run.seed), "--out", str(run_dir)]
    if run.preset is not None:
        train += ["--preset", run.preset]
    for item in spec.overrides:
        train += ["--set", item]
    evaluate = ["eval", str(run_dir), "--split", spec.eval_split, "--seed", str(spec.eval_seed),
                "--episodes", str(spec.eval_episodes), "--no-progress"]
    if spec.eval_split != "grid":
        evaluate += ["--num-tasks", str(spec.eval_tasks)]
    if spec.eval_steps is not None:
        evaluate += ["--steps", ",".join(map(str, spec.eval_steps))]
    return {"name": run.name, "run_dir": str(run_dir), "log": str(out / "logs" / f"{run.name}.log"),
            "train": train, "eval": evaluate, "threads": spec.cpus_per_run}


def _eval_file(spec: SweepSpec, out: Path, run: SweepRun) -> Path:
    return out / "runs" / run.name / "eval" / spec.eval_split / "eval.json"


def _open_sweep(spec: SweepSpec, out: Path) -> dict:
    """Write ``sweep.json`` for a new sweep, or check that ``out`` holds this same sweep; the
    statuses recorded so far."""
    definition = asdict(spec)
    path = out / SWEEP_FILE
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise AdaptrlError(f"{path} is not a sweep definition; choose another --out"
                               ) from None
        if before != definition:
            changed = sorted(k for k in set(before) | set(definition)
                             if before.get(k) != definition.get(k))
            raise AdaptrlError(f"{out} holds another sweep (it differs in {', '.join(changed)}); "
                               f"run the same command to continue it, or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise AdaptrlError(f"--out {out} exists and is not a sweep folder; choose another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(definition, indent=1) + "\n")
    status_path = out / STATUS_FILE
    try:
        status = json.loads(status_path.read_text(encoding="utf-8"))
        return status if isinstance(status, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


class _Board:
    """The sweep's counts and ETA, as a tqdm bar on a terminal or a line per change."""

    def __init__(self, total: int, already: int, parallel: int, enabled: bool):
        from .progress import progress_bar, shows_plain_lines

        self.total, self.parallel = total, parallel
        self.done, self.failed, self.running = already, 0, {}
        self.durations: list[float] = []
        self.lines = shows_plain_lines(enabled)
        self.bar = progress_bar(total, "sweep", enabled and not self.lines, unit="run",
                                initial=already)
        self.enabled = enabled

    def eta(self, pending: int) -> str:
        if not self.durations:
            return "?"
        mean = sum(self.durations) / len(self.durations)
        now = time.time()
        left = pending * mean + sum(max(mean - (now - t), 0.0) for t in self.running.values())
        seconds = int(left / self.parallel)
        return f"{seconds // 60}m{seconds % 60:02d}s"

    def show(self, pending: int, note: str | None = None) -> None:
        text = (f"{self.done} done, {len(self.running)} running, {self.failed} failed, "
                f"{pending} waiting, ETA {self.eta(pending)}")
        if self.lines:
            print(f"sweep: {text}" + (f"  ({note})" if note else ""), file=sys.stderr,
                  flush=True)
        elif note and self.enabled:
            self.bar.write(note, file=sys.stderr)
        self.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        self.bar.close()


def run_sweep(spec: SweepSpec, out, backend: str = "ray", address: str | None = None,
              jobs: int | None = None, progress: bool = True) -> int:
    """Run (or continue) the sweep in ``out``; 0 when every run is done, 1 when some failed,
    130 when interrupted. Prints one line per run and the compare folders written."""
    out = Path(out).resolve()
    check_spec(spec)
    if backend not in ("ray", "local"):
        raise AdaptrlError(f"unknown --backend '{backend}'; known: local, ray")
    if backend == "local" and address is not None:
        raise AdaptrlError("--ray-address needs --backend ray")
    status = _open_sweep(spec, out)
    runs = spec.runs()
    todo = [r for r in runs if not (status.get(r.name, {}).get("state") == "done"
                                    and _eval_file(spec, out, r).is_file())]
    if not todo:  # a finished sweep: only the summary and the compares again
        print(f"sweep {out}: all {len(runs)} runs are done", file=sys.stderr)
        return _finish(spec, out, runs, status, progress)
    if backend == "ray":
        executor = RayExecutor(spec.cpus_per_run, address)
    else:
        executor = LocalExecutor(jobs or max(1, (os.cpu_count() or 1) // spec.cpus_per_run))
    board = _Board(len(runs), len(runs) - len(todo), executor.parallel, progress)
    print(f"sweep {out}: {len(runs)} runs ({len(runs) - len(todo)} already done), "
          f"{executor.parallel} at a time on {backend}", file=sys.stderr)

    def save():
        atomic_write_text(out / STATUS_FILE, json.dumps(status, indent=1) + "\n")

    jobs_by_name = {r.name: _job(spec, r, out) for r in todo}
    submitted: dict[str, float] = {}
    try:
        for run in todo:
            executor.submit(jobs_by_name[run.name])
            submitted[run.name] = time.time()
            status[run.name] = {**status.get(run.name, {}), "state": "pending"}
        save()
        waiting = set(submitted)
        while waiting:
            for name in waiting:  # started: its log grew since it was submitted
                log = Path(jobs_by_name[name]["log"])
                if name not in board.running and log.is_file() and \
                        log.stat().st_mtime >= submitted[name] - 1:
                    board.running[name] = time.time()
            for result in executor.finished(timeout=1.0):
                name = result["name"]
                waiting.discard(name)
                started = board.running.pop(name, submitted[name])
                entry = {"state": result["state"], "error": result["error"],
                         "train_s": result["train_s"], "eval_s": result["eval_s"]}
                status[name] = entry
                save()
                if result["state"] == "done":
                    board.done += 1
                    board.durations.append(time.time() - started)
                    board.bar.update(1)
                    board.show(len(waiting) - len(board.running), f"done: {name}")
                else:
                    board.failed += 1
                    board.show(len(waiting) - len(board.running),
                               f"FAILED: {name}: {result['error']}")
            if board.lines and int(time.time()) % 60 == 0:
                board.show(len(waiting) - len(board.running))
    except KeyboardInterrupt:
        board.close()
        save()
        executor.close()
        print("adaptrl: sweep interrupted; run the same command to continue it",
              file=sys.stderr)
        return 130
    board.close()
    executor.close()
    return _finish(spec, out, runs, status, progress)


def _training_seconds(run_dir: Path) -> float | None:
    """The run's training wall time over all its sessions: the last ``elapsed_s`` of its
    metrics.csv (None when it cannot be read)."""
    import csv

    try:
        with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return float(rows[-1]["elapsed_s"]) if rows else None
    except (OSError, KeyError, ValueError, UnicodeDecodeError):
        return None


def _times_table(out: Path, runs: list[SweepRun], status: dict) -> str:
    """Markdown: per method, family and preset, the mean training wall time (over all of a
    run's sessions) and evaluation time over its seeds."""
    groups: dict[tuple, list[SweepRun]] = {}
    for r in runs:
        groups.setdefault((r.algo, r.family, r.preset), []).append(r)
    lines = ["wall time per run, mean over seeds (each run on its own CPUs; training over all "
             "of its sessions)", "",
             "| method | family | preset | seeds | train s | eval s |",
             "|---|---|---|---:|---:|---:|"]
    for (algo, family, preset), members in groups.items():
        train = [t for t in (_training_seconds(out / "runs" / r.name) for r in members)
                 if t is not None]
        evals = [status.get(r.name, {}).get("eval_s", 0.0) for r in members]
        mean_train = f"{sum(train) / len(train):.1f}" if train else "—"
        lines.append(f"| {algo} | {family} | {preset or 'default'} | {len(members)} | "
                     f"{mean_train} | {sum(evals) / len(evals):.1f} |")
    return "\n".join(lines) + "\n"


def _finish(spec: SweepSpec, out: Path, runs: list[SweepRun], status: dict,
            progress: bool) -> int:
    """The per-run summary and one compare per family over its finished runs."""
    from .eval import write_compare

    failed = [r for r in runs if status.get(r.name, {}).get("state") != "done"]
    for r in runs:
        entry = status.get(r.name, {})
        took = entry.get("train_s", 0.0) + entry.get("eval_s", 0.0)
        line = f"{entry.get('state', '?'):7} {r.name}"
        if entry.get("state") == "done":
            line += f"  ({took:.0f} s)" if took else ""
        else:
            line += f"  {entry.get('error')}  (log: {out / 'logs' / (r.name + '.log')})"
        print(line)
    finished = [r for r in runs if r not in failed]
    if finished:
        times = _times_table(out, finished, status)
        atomic_write_text(out / "times.md", times)
        print()
        print(times)
    for family in spec.families:
        done = [out / "runs" / r.name for r in finished if r.family == family]
        if not done:
            continue
        table, paths = write_compare(done, spec.eval_split, out / f"compare-{family}",
                                     progress=progress)
        print()
        print(table)
        for path in paths.values():
            print(f"wrote {path}")
    if failed:
        print(f"adaptrl: {len(failed)} of {len(runs)} runs failed; their logs are in "
              f"{out / 'logs'}; run the same command to retry them", file=sys.stderr)
        return 1
    return 0
