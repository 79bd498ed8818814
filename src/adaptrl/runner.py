"""The shared training loop: run folders, metrics, TensorBoard, checkpoints and exact resume.

A run folder (default ``runs/<algo>-<family>-s<seed>``)::

    config.yaml          algo, family, seed, preset, library version and the full config
    metrics.csv          one row per iteration: iteration, the method's metrics, the phase times
                         (time/sample_s, time/<phase>_s, time/update_s), step_s, elapsed_s
    tb/                  TensorBoard events (the same scalars, step = iteration)
    checkpoints/         latest.pt and the last few iter_000010.pt (see `adaptrl.checkpoint`)
    .lock                held while a process trains here

Non-finite values: sampled episodes and replay inserts are checked where they enter
(`adaptrl.errors.NonFiniteError`), and after each iteration the method's networks, optimizer
states and learned tensors (`MetaAlgorithm.trainables`) are. An iteration that meets a NaN or
infinity is refused: its updates are undone from a snapshot taken before it, its metrics are
dropped, a ``nonfinite/refused`` column (`REFUSED_COLUMN`) records it, and training goes on;
after ``max_refusals`` refused iterations in a row the run stops with one line naming what went
non-finite, where, and the last good checkpoint. So no checkpoint holds a NaN or infinity.

Exact resume: the run seed gives one `numpy.random.SeedSequence`; torch's global RNG is seeded
with the seed before the method is built (network initialisation) and the method's training
stream is ``default_rng(SeedSequence(seed).spawn(1)[0])``. A checkpoint carries the method's
``state_dict()``, that stream's bit-generator state, torch's global RNG state, the iteration, the
elapsed time and how many metrics rows had been written. Resuming rebuilds the method the same
way, loads all of that, and cuts ``metrics.csv`` back to the checkpoint (rows written after it by
a killed run are dropped), so a resumed run writes the same metric values as one that was never
interrupted; only wall-clock columns (`is_timing_column`) differ.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import math
import numbers
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from . import __version__
from .algos import MetaAlgorithm, get_algorithm
from .atomic import atomic_write_text, output_problem, remove_stale_temporaries
from .checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    numbered_checkpoints,
    numbered_name,
    write_run_checkpoint,
)
from .config import (
    apply_overrides,
    config_differences,
    config_from_dict,
    config_to_dict,
    make_config,
)
from .errors import AdaptrlError, NonFiniteError
from .optim import TrainableSnapshot, first_nonfinite
from .options import MAX_SEED
from .progress import progress_bar, shows_plain_lines
from .resources import memory_refusal
from .sampling import LocalSampler, Sampler
from .tasks import get_family
from .timing import timing_metrics

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
TB_DIR = "tb"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"

TIMING_COLUMNS = ("step_s", "elapsed_s")
"""The runner's wall-clock columns, last in metrics.csv."""


def is_timing_column(name: str) -> bool:
    """Whether a metrics.csv column measures wall-clock time: `TIMING_COLUMNS` and the
    runner's ``time/...`` phase columns. Every other column is reproducible from the seed."""
    return name in TIMING_COLUMNS or name.startswith("time/")

REFUSED_COLUMN = "nonfinite/refused"
"""1 in the row of an iteration refused for a NaN or infinity, else 0; the column appears with
the first refusal (empty cells before it mean 0)."""

RESUMABLE_FIELDS = ("iterations", "checkpoint_every", "keep_checkpoints", "max_refusals")
"""Config fields that ``--resume`` may change (they do not change what an iteration computes)."""


def configure_threads() -> int:
    """Set up the process for compute (the CLI calls this before any work): torch's intra-op
    threads, set deliberately: one per core (``ADAPTRL_TORCH_THREADS`` overrides). MuJoCo's
    rollout threads and torch never run at the same moment in the sampler, so they share the
    cores instead of oversubscribing them. Also `keep_freed_memory`."""
    keep_freed_memory()
    n = int(os.environ.get("ADAPTRL_TORCH_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the OS.

    By default glibc serves tensors of more than a few MB with a fresh ``mmap`` and unmaps them
    on free, so every new large tensor page-faults on first touch. In the meta-updates, which
    make many short-lived tensors of tens of MB, that doubled the cost of an elementwise pass
    (3.2 ms against 1.6 ms on a [40, 2000, 64] product) and was a fifth of the line search. This
    is what PyTorch's CPU tuning guides get from preloading jemalloc or tcmalloc; here it is two
    ``mallopt`` calls. The process keeps its peak heap (up to 1 GiB of free memory at the top).
    ``ADAPTRL_MALLOC=system`` leaves the allocator alone; other C libraries are left alone.
    Returns whether the setting was applied.
    """
    if os.environ.get("ADAPTRL_MALLOC", "").lower() == "system" or not sys.platform.startswith(
            "linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def default_run_dir(algo: str, family: str, seed: int) -> Path:
    return Path("runs") / f"{algo}-{family}-s{seed}"


def training_rng(seed: int) -> np.random.Generator:
    """The method's training stream: child 0 of ``SeedSequence(seed)`` (child 1 onwards are
    left for other consumers, such as evaluation)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


# ─── the public entry points ────────────────────────────────────────────────────────────────
def train(algo_name, family_name, preset: str | None = None, overrides=(),
          seed: int | None = None, out=None, resume: bool = False, progress: bool = True,
          sampler: Sampler | None = None) -> Path:
    """Train ``algo_name`` on ``family_name`` in a run folder; the folder's path.

    preset, overrides: see `adaptrl.config.make_config` (``overrides`` are ``"key=value"``).
    seed: the run seed; None means 0 for a new run and the stored seed when resuming.
    out: the run folder (default ``runs/<algo>-<family>-s<seed>``).
    resume: continue the run in ``out`` from its latest checkpoint. The config is the stored
        one with ``overrides`` applied (or, if ``preset`` is given, rebuilt from it); only
        `RESUMABLE_FIELDS` may differ from config.yaml, so ``iterations=N`` extends a run.
    progress: show a tqdm bar on stderr (only when it is a terminal).
    sampler: the backend the method samples through (default: local, `LocalSampler`); its
        `Sampler.metrics` (the Ray backend's restarts) join each metrics.csv row.

    A new run refuses a folder that already holds checkpoints. Errors caused by the arguments or
    by the folder's contents are `AdaptrlError`.
    """
    algo_cls = _algorithm_class(algo_name)
    family = get_family(family_name)
    run_dir = Path(out) if out is not None else default_run_dir(algo_cls.name, family.name,
                                                                seed if seed is not None else 0)
    check_seed(seed)
    problem = output_problem(run_dir, folder=True)
    if problem is not None:
        raise AdaptrlError(f"run folder {run_dir}: {problem}")
    if resume:
        record, config = _resume_record(run_dir, algo_cls, family.name, preset, overrides, seed)
    else:
        config = make_config(algo_cls, preset, overrides)
        record = {"algo": algo_cls.name, "family": family.name,
                  "seed": seed if seed is not None else 0, "preset": preset}
        _refuse_existing_run(run_dir)
    algo_cls.check_family(family)
    refuse_oversized(algo_cls, config, family)  # before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    with _run_lock(run_dir):
        ckpt_dir = run_dir / CHECKPOINT_DIR
        remove_stale_temporaries(ckpt_dir)
        remove_stale_temporaries(run_dir)
        if resume:
            payload = _load_resume_checkpoint(run_dir, algo_cls, family.name, config)
        else:
            _refuse_existing_run(run_dir)  # again, now that no other process can start one
            payload = None
        # built (and a checkpoint loaded) before anything is written: a checkpoint that does not
        # fit the config is refused with the folder as it was
        trainer = _Trainer(run_dir, algo_cls, family, config, record["seed"], payload, progress,
                           latest_checkpoint(run_dir / CHECKPOINT_DIR), sampler)
        _write_run_record(run_dir, record, config)
        trainer.run()
    return run_dir


def load_run(run_dir, checkpoint=None, sampler: Sampler | None = None
             ) -> tuple[MetaAlgorithm, object, dict]:
    """Rebuild a run's method from ``run_dir/config.yaml`` and load its latest checkpoint (or
    the ``checkpoint`` file given); ``(algo, config, info)``.

    info: run_dir, algo, family, seed, preset, iteration, elapsed_s, checkpoint (its path).
    sampler: the backend the method samples through (default: local).
    Torch's global RNG is seeded with the run seed while the method is built (as in training);
    the training RNG states are not restored, so evaluation draws from its own streams.
    """
    run_dir = Path(run_dir)
    record = read_run_record(run_dir)
    algo_cls = _algorithm_class(record["algo"])
    family = get_family(record["family"])
    config = config_from_dict(algo_cls, record["config"], source=str(run_dir / CONFIG_FILE))
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir
                                                                              / CHECKPOINT_DIR)
    if path is None:
        raise AdaptrlError(f"run folder {run_dir} has no checkpoint yet")
    payload = load_checkpoint(path)
    _check_payload(payload, path, algo_cls.name, family.name)
    torch.manual_seed(record["seed"])
    algo = algo_cls(family, config, sampler if sampler is not None else LocalSampler(family))
    _load_state(algo, payload, path)
    algo.iteration = payload["iteration"]
    info = {"run_dir": run_dir, "algo": algo_cls.name, "family": family.name,
            "seed": record["seed"], "preset": record.get("preset"),
            "iteration": payload["iteration"], "elapsed_s": payload["elapsed_s"],
            "checkpoint": path}
    return algo, config, info


def run_checkpoint(run_dir, iteration: int) -> Path:
    """The numbered checkpoint of ``iteration`` in ``run_dir`` (for `load_run`); a one-line
    error listing the iterations kept when there is none."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    path = folder / numbered_name(iteration)
    if not path.is_file():
        kept = [str(i) for i, _ in numbered_checkpoints(folder)]
        raise AdaptrlError(f"run folder {run_dir} has no checkpoint of iteration {iteration}; "
                           f"it keeps {', '.join(kept) if kept else 'no numbered ones'}")
    return path


def read_run_record(run_dir) -> dict:
    """The checked contents of ``run_dir/config.yaml``."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise AdaptrlError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    try:
        record = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise AdaptrlError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    except UnicodeDecodeError:
        raise AdaptrlError(f"{path} is not UTF-8 text (a run's config.yaml)") from None
    required = {"algo": str, "family": str, "seed": int, "config": dict}
    if not isinstance(record, dict) or any(not isinstance(record.get(k), t)
                                           for k, t in required.items()):
        raise AdaptrlError(f"{path} is not an adaptrl run config: it needs "
                           f"{', '.join(required)}")
    check_seed(record["seed"], f"{path}: seed")
    return record


# ─── starting and resuming ──────────────────────────────────────────────────────────────────
def check_seed(seed, name: str = "seed") -> None:
    """An `AdaptrlError` unless ``seed`` is None or an integer in [0, `MAX_SEED`]."""
    if seed is None:
        return
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) \
            or not 0 <= seed <= MAX_SEED:
        raise AdaptrlError(f"{name} must be an integer in [0, {MAX_SEED}], got {seed!r}")


def refuse_oversized(algo_cls, config, family) -> None:
    """An `AdaptrlError` when the method's memory estimate (`MetaAlgorithm.memory_estimate`)
    exceeds this machine's memory: the largest part, the estimate and the memory."""
    reason = memory_refusal(algo_cls.memory_estimate(config, family))
    if reason is not None:
        raise AdaptrlError(f"cannot train {algo_cls.name} on {family.name}: {reason}; "
                           f"choose smaller settings with --set")


def _algorithm_class(algo) -> type[MetaAlgorithm]:
    if isinstance(algo, type) and issubclass(algo, MetaAlgorithm):
        return algo
    return get_algorithm(algo)


def _refuse_existing_run(run_dir: Path) -> None:
    found = latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if found is not None:
        raise AdaptrlError(f"{run_dir} already holds a run with checkpoints ({found.name}); "
                           f"pass --resume to continue it, or choose another --out")


def _resume_record(run_dir, algo_cls, family_name, preset, overrides, seed):
    """The run record and config for resuming ``run_dir``, checked against the arguments."""
    if not (run_dir / CONFIG_FILE).exists():
        raise AdaptrlError(f"nothing to resume in {run_dir}: it has no {CONFIG_FILE} "
                           f"(start the run without --resume)")
    record = read_run_record(run_dir)
    for key, now in (("algo", algo_cls.name), ("family", family_name), ("seed", seed)):
        if now is not None and record[key] != now:
            raise AdaptrlError(f"cannot resume {run_dir}: it was trained with {key} "
                               f"{record[key]!r}, not {now!r}")
    stored = config_from_dict(algo_cls, record["config"], source=str(run_dir / CONFIG_FILE))
    if preset is None:
        config = apply_overrides(algo_cls, stored, overrides)
    else:
        config = make_config(algo_cls, preset, overrides)
    changed = config_differences(stored, config, ignore=RESUMABLE_FIELDS)
    if changed:
        raise AdaptrlError(f"cannot resume {run_dir} with a different config "
                           f"({'; '.join(changed)}); only {', '.join(RESUMABLE_FIELDS)} may "
                           f"change when resuming")
    return dict(record), config


def _load_resume_checkpoint(run_dir, algo_cls, family_name, config) -> dict:
    path = latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if path is None:
        raise AdaptrlError(f"nothing to resume in {run_dir}: it has no checkpoint yet "
                           f"(start the run again without --resume)")
    payload = load_checkpoint(path)
    _check_payload(payload, path, algo_cls.name, family_name)
    saved = config_from_dict(algo_cls, payload["config"], source=str(path))
    changed = config_differences(saved, config, ignore=RESUMABLE_FIELDS)
    if changed:
        raise AdaptrlError(f"cannot resume {run_dir}: {CONFIG_FILE} no longer matches the config "
                           f"{path.name} was trained with ({'; '.join(changed)})")
    if payload["iteration"] > config.iterations:
        raise AdaptrlError(f"{path} is at iteration {payload['iteration']}, beyond "
                           f"iterations={config.iterations}; set iterations to at least that")
    return payload


_PAYLOAD_KEYS = ("algo", "family", "seed", "iteration", "elapsed_s", "algorithm", "numpy_rng",
                 "torch_rng", "metrics_rows", "metrics_columns", "config")


def _check_payload(payload: dict, path, algo: str, family: str) -> None:
    missing = [k for k in _PAYLOAD_KEYS if k not in payload]
    if missing:
        raise AdaptrlError(f"{path} is not a run checkpoint (it lacks {', '.join(missing)})")
    if (payload["algo"], payload["family"]) != (algo, family):
        raise AdaptrlError(f"{path} belongs to a {payload['algo']} run on {payload['family']}, "
                           f"not {algo} on {family}")
    wrong = [key for key, ok in _PAYLOAD_TYPES.items() if not ok(payload[key])]
    if wrong:
        raise AdaptrlError(f"{path} is not a valid run checkpoint: "
                           + ", ".join(f"{k} is a {type(payload[k]).__name__}" for k in wrong))


def _count(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


_PAYLOAD_TYPES = {
    "seed": _count, "iteration": _count, "metrics_rows": _count,
    "elapsed_s": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
    "algorithm": lambda v: isinstance(v, dict), "config": lambda v: isinstance(v, dict),
    "numpy_rng": lambda v: isinstance(v, dict), "torch_rng": lambda v: isinstance(v, torch.Tensor),
    "metrics_columns": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
}
"""What each payload entry must be, so that a payload of the wrong shape is one clear error."""


def _load_state(algo, payload: dict, path, rng: np.random.Generator | None = None) -> None:
    """Load the method's state (and, when resuming, the RNG states) from a checked payload; a
    checkpoint whose tensors do not fit the run's config (torch's "size mismatch", "Missing
    key(s)"), or that holds a NaN or infinity in a parameter or optimizer state, is a one-line
    `AdaptrlError` naming the file."""
    try:
        algo.load_state_dict(payload["algorithm"])
        if rng is not None:
            rng.bit_generator.state = payload["numpy_rng"]
            torch.set_rng_state(payload["torch_rng"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        if len(detail) > 300:
            detail = detail[:297] + "..."
        raise AdaptrlError(f"checkpoint {path} does not fit this run's {algo.name} config: "
                           f"{detail}") from None
    broken = first_nonfinite(algo.trainables())
    if broken is not None:  # adaptrl never writes one (the guard refuses such an update)
        raise AdaptrlError(f"checkpoint {path} holds a NaN or infinity in {broken}: it was "
                           f"altered or not written by adaptrl")


def _write_run_record(run_dir: Path, record: dict, config) -> None:
    record = {"algo": record["algo"], "family": record["family"], "seed": record["seed"],
              "preset": record.get("preset"), "library_version": __version__,
              "config": config_to_dict(config)}
    atomic_write_text(run_dir / CONFIG_FILE,
                      yaml.safe_dump(record, sort_keys=False, allow_unicode=True,
                                     default_flow_style=None))


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """Hold an exclusive lock on the run folder (POSIX; released by the OS if killed)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent runs are the user's problem
        yield
        return
    with open(run_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AdaptrlError(f"another adaptrl process is training in {run_dir}; wait for it "
                               f"or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ─── metrics.csv ────────────────────────────────────────────────────────────────────────────
class MetricsLog:
    """metrics.csv: ``iteration``, the method's metrics in the order of the first row, then
    `TIMING_COLUMNS`. A metric that first appears in a later row is added as a new column
    (before the timing columns) and the file is rewritten with that column empty in the
    earlier rows; a metric missing from a row is left empty."""

    def __init__(self, path: Path, columns: list[str] | None = None, rows: int = 0):
        self.path = path
        self.columns = list(columns) if columns else []
        self.rows = rows

    @classmethod
    def restore(cls, path: Path, columns: list[str], rows: int) -> "MetricsLog":
        """The log as it was at a checkpoint: the file is cut back to its first ``rows`` rows
        and to ``columns``."""
        if rows == 0:
            path.unlink(missing_ok=True)
            return cls(path)
        if not path.is_file():
            raise AdaptrlError(f"cannot resume: {path} is missing but the checkpoint records "
                               f"{rows} rows")
        with open(path, newline="") as handle:
            table = list(csv.reader(handle))
        header, body = (table[0], table[1:]) if table else ([], [])
        complete = [r for r in body[:rows] if len(r) == len(header)]
        if len(complete) < rows or not set(columns) <= set(header):
            raise AdaptrlError(f"cannot resume: {path} holds {len(complete)} complete rows, but "
                               f"the checkpoint records {rows}; restore the file or start over")
        index = [header.index(c) for c in columns]
        log = cls(path, columns, rows)
        log._rewrite([[r[i] for i in index] for r in complete])
        return log

    def append(self, values: dict) -> None:
        """Write one row (``values``: column → number) and flush it."""
        new = [k for k in values if k not in self.columns]
        if not self.columns:
            metric_keys = [k for k in new if k not in ("iteration", *TIMING_COLUMNS)]
            self.columns = ["iteration", *metric_keys, *TIMING_COLUMNS]
            self._rewrite([])
        elif new:
            with open(self.path, newline="") as handle:
                old = list(csv.reader(handle))[1:]
            cut = len(self.columns) - len(TIMING_COLUMNS)
            self.columns[cut:cut] = new
            self._rewrite([r[:cut] + [""] * len(new) + r[cut:] for r in old])
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow([_format(values.get(c)) for c in self.columns])
        self.rows += 1

    def sync(self) -> None:
        """Make the rows written so far durable (called before each checkpoint)."""
        if self.path.exists():
            with open(self.path, "rb+") as handle:
                os.fsync(handle.fileno())

    def _rewrite(self, rows: list[list[str]]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(self.columns)
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return repr(float(value))  # shortest text that reads back as the same float


def _checked_metrics(metrics) -> dict[str, float]:
    """``train_step``'s metrics as floats; a TypeError/ValueError for a method's mistake."""
    if not isinstance(metrics, dict):
        raise TypeError(f"train_step must return a dict of metrics, got "
                        f"{type(metrics).__name__}")
    checked = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or key in ("iteration", *TIMING_COLUMNS) \
                or key.startswith("time/"):
            raise ValueError(f"train_step returned metric name {key!r}; names are strings "
                             f"other than the runner's iteration, {', '.join(TIMING_COLUMNS)} "
                             f"and time/... (mark phases with `self.phase(name)` instead)")
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"train_step returned metric {key!r} = {value!r}; metrics must be "
                            f"numbers")
        checked[key] = float(value)
    return checked


def run_hparams(run_dir) -> dict:
    """A run's hyper-parameters for TensorBoard's HParams tab: config.yaml flattened (algo,
    family, seed, preset, library version, then every config field); values that are not
    numbers or text (lists, None) as their text."""
    record = yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text())
    flat = {k: v for k, v in record.items() if k != "config"}
    flat.update(record.get("config") or {})
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}


def write_hparams(writer, hparams: dict, metric_tags) -> None:
    """Write ``hparams`` into the run's own TensorBoard events (not a sub-run, as
    ``SummaryWriter.add_hparams`` would), with ``metric_tags`` (scalar tags) as its metrics."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    summaries = hparams_summaries(hparams, {tag: 0.0 for tag in metric_tags})
    for summary in summaries:  # experiment, session start, session end
        writer._get_file_writer().add_summary(summary)


def _return_key(metrics: dict) -> str | None:
    """The metric to show in the progress bar: 'return', else the first containing 'return'."""
    if "return" in metrics:
        return "return"
    return next((k for k in metrics if re.search("return", k, re.IGNORECASE)), None)


# ─── the loop ───────────────────────────────────────────────────────────────────────────────
class _Trainer:
    """One training session in a locked run folder, fresh (``payload`` None) or resumed."""

    def __init__(self, run_dir, algo_cls, family, config, seed, payload, progress,
                 payload_path=None, sampler: Sampler | None = None):
        self.run_dir, self.config, self.seed, self.progress = run_dir, config, seed, progress
        torch.manual_seed(seed)  # network initialisation inside the constructor
        self.algo = algo_cls(family, config,
                             sampler if sampler is not None else LocalSampler(family))
        self.rng = training_rng(seed)
        metrics_path = run_dir / METRICS_FILE
        if payload is None:
            self.start, self.elapsed_before = 0, 0.0
            self.log = MetricsLog.restore(metrics_path, [], 0)
        else:
            _load_state(self.algo, payload, payload_path, self.rng)
            if payload.get("torch_cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(payload["torch_cuda_rng"])
            self.start, self.elapsed_before = payload["iteration"], payload["elapsed_s"]
            self.log = MetricsLog.restore(metrics_path, payload["metrics_columns"],
                                          payload["metrics_rows"])
        self.algo.iteration = self.start
        # the iteration of the newest checkpoint of this run (None: none yet)
        self.checkpointed = self.start if payload is not None else None

    def run(self) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

        config, algo = self.config, self.algo
        # purge_step hides events a killed session logged after this session's checkpoint
        writer = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=self.start + 1)
        bar = progress_bar(config.iterations, f"{algo.name} {algo.family.name}", self.progress,
                           initial=self.start)
        # without a terminal (CI logs, `| tee`) the bar is off: report at each checkpoint instead
        plain = shows_plain_lines(self.progress)
        session_start = time.perf_counter()
        refused_in_a_row = 0
        try:
            for iteration in range(self.start + 1, config.iterations + 1):
                algo.clock.take()  # phases of this iteration only
                step_start = time.perf_counter()
                metrics, refusal = self._guarded_step()
                now = time.perf_counter()
                algo.iteration = iteration
                step_s = now - step_start
                timing = timing_metrics(algo.clock.take(), step_s, algo.phases)
                elapsed = self.elapsed_before + now - session_start
                refused_in_a_row = 0 if refusal is None else refused_in_a_row + 1
                if refusal is not None or REFUSED_COLUMN in self.log.columns:
                    metrics[REFUSED_COLUMN] = float(refusal is not None)
                row = {"iteration": iteration, **metrics, **algo.sampler.metrics(), **timing,
                       "step_s": step_s, "elapsed_s": elapsed}
                self.log.append(row)
                if refusal is not None:
                    self._refused(iteration, refusal, refused_in_a_row)
                if iteration == self.start + 1:  # once a session, naming this row's tags
                    write_hparams(writer, run_hparams(self.run_dir), list(row)[1:])
                for key, value in list(row.items())[1:]:  # the metrics.csv names, as tags
                    writer.add_scalar(key, value, iteration)
                shown = _return_key(metrics)
                if shown is not None and math.isfinite(metrics[shown]):
                    bar.set_postfix({shown: f"{metrics[shown]:.4g}"}, refresh=False)
                bar.update(1)
                if iteration % config.checkpoint_every == 0 or iteration == config.iterations:
                    writer.flush()
                    self._checkpoint(iteration, elapsed)
                    if plain:
                        self._report(iteration, metrics, elapsed, now - session_start)
        finally:
            bar.close()
            writer.close()

    def _guarded_step(self) -> tuple[dict[str, float], NonFiniteError | None]:
        """One ``train_step``: its metrics and None, or ``({}, the error)`` when it was refused:
        it raised `NonFiniteError` (non-finite sampled data or a replay insert, caught where it
        entered) or left a NaN or infinity in a network, optimizer state or learned tensor
        (`MetaAlgorithm.trainables`). A refused iteration's updates are undone (the trainables
        are restored from a snapshot taken before it) and its metrics dropped; the data it had
        already stored, all finite, is kept."""
        algo = self.algo
        snapshot = TrainableSnapshot(algo.trainables())
        try:
            metrics = _checked_metrics(algo.train_step(self.rng))
            broken = first_nonfinite(algo.trainables())
            if broken is not None:
                raise NonFiniteError(broken, "the update")
        except NonFiniteError as err:
            snapshot.restore()
            return {}, err
        return metrics, None

    def _refused(self, iteration: int, error: NonFiniteError, in_a_row: int) -> None:
        """Say that ``iteration`` was refused (one line on stderr); stop the run with an
        `AdaptrlError` naming what, where and the last good checkpoint after `max_refusals`
        refused iterations in a row."""
        limit = self.config.max_refusals
        where = f"{self.algo.name} {self.algo.family.name}"
        if in_a_row < limit:
            print(f"{where}: iteration {iteration} refused and undone ({error}); {in_a_row} of "
                  f"max_refusals={limit} in a row", file=sys.stderr, flush=True)
            return
        good = latest_checkpoint(self.run_dir / CHECKPOINT_DIR)
        good = ("none yet" if good is None or self.checkpointed is None
                else f"{good} (iteration {self.checkpointed})")
        raise AdaptrlError(
            f"{where}: stopped at iteration {iteration} after {in_a_row} iterations in a row "
            f"refused for non-finite values (max_refusals={limit}); the last: {error}; last good "
            f"checkpoint: {good}")

    def _report(self, iteration: int, metrics: dict, elapsed: float, session_s: float) -> None:
        """One progress line: iteration, the return metric, elapsed time and ETA."""
        done = iteration - self.start
        eta = session_s / done * (self.config.iterations - iteration) if done else 0.0
        shown = _return_key(metrics)
        value = f", {shown} {metrics[shown]:.4g}" if shown is not None else ""
        print(f"{self.algo.name} {self.algo.family.name}: iteration {iteration}/"
              f"{self.config.iterations}{value}, elapsed {elapsed:.0f} s, ETA {eta:.0f} s",
              file=sys.stderr, flush=True)

    def _checkpoint(self, iteration: int, elapsed: float) -> None:
        self.log.sync()
        self.checkpointed = iteration
        payload = {
            "algo": self.algo.name, "family": self.algo.family.name, "seed": self.seed,
            "iteration": iteration, "elapsed_s": elapsed,
            "algorithm": self.algo.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            # only a process that used CUDA has CUDA RNG state (and asking would initialise it)
            "torch_cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized()
            else None,
            "metrics_rows": self.log.rows, "metrics_columns": list(self.log.columns),
            "config": config_to_dict(self.config),
        }
        write_run_checkpoint(self.run_dir / CHECKPOINT_DIR, iteration, payload,
                             keep=self.config.keep_checkpoints)
