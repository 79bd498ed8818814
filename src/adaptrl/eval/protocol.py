"""The meta-test protocol, one for all methods.

For a set of tasks ``[T, k]`` and budgets ``steps`` (e.g. 0,1,2,3 adaptation steps): adapt every
task with every budget in one ``algo.adapt`` call, roll each adapted policy out on fresh
episodes, and compare with the oracle return A*(ψ). The result is one plain dict (the
``eval.json`` schema below), identical for every method:

    {
      "algo": str, "family": str, "split": str, "steps": [n, ...], "episodes": N,
      "budget_unit": "adaptation steps" | "context rounds" | "real samples",  # what n counts
      "seed": int | null, "horizon": H, "param_names": [str, ...],
      "oracle_kind": "analytic" | "trained" | null,
      "tasks": [                                   # one entry per task, in evaluation order
        {"params": [ψ_1, ..., ψ_k],
         "returns": [A_n for n in steps],         # mean undiscounted return over N episodes
                                                  # (null where it is not finite)
         "oracle": A* | null,
         "adapt_ms": [ms for n in steps],          # adaptation wall time per task, cumulative
         "samples": [env steps for n in steps]},   # adaptation environment steps of this task
        ...                                        # (both null if its adaptation failed)
      ],
      "nonfinite_tasks": [i, ...],                 # tasks whose adaptation met a NaN or inf,
                                                   # or with a non-finite return at any budget
      "summary": {                                 # lists aligned with "steps"
        "mean": [...], "ci95": [...],              # over the other tasks; ci95 = t·std/√T,
                                                   # t = Student's t_{0.975, T−1} (1.96 for T→∞)
        "gap_mean": [...] | null, "gap_max": [...] | null,   # gap = oracle − return
        "oracle_mean": float | null
      },
      "segments": {"change_step": c, "before": [...], "after": [...],   # dynamics that change
                   "reward_curve": [[mean reward per step] per budget]},   # within an episode
      "model": [{"n": n, "error_before": e, "error_after": e′, "n_windows": W,     # model-
                 "plan_ms_median": ms, "plan_ms_p95": ms, "envs": T·N}, ...],   # based only
      "run": {"dir": str, "seed": int, "iteration": int, "checkpoint": str}   # `adaptrl eval`
    }

Families whose environment reports success (Meta-World: ``info["success"]`` at any step of an
episode) add, per task, ``"success": [rate for n in steps]`` (the fraction of its N evaluation
episodes that succeeded; every episode counts, none is dropped for finishing late) and, in the
summary, ``"success": [...]`` and ``"success_ci95": [...]`` (the mean over tasks, i.e. averaged
within each task, then across tasks). Meta-World families also record each task's
``"task_type"`` (``reach-v3``), the summary's ``"success_by_type": {type: [...]}`` (the
benchmark's per-type numbers, averaged over that type's goals) and a top-level ``"benchmark"``
block (metaworld and mujoco versions, benchmark seed, reward version, goals per type).

Files: ``RUN_DIR/eval/<split>/eval.json`` (see `eval_dir`), written atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..algos import Adapted, MetaAlgorithm
from ..atomic import atomic_write_bytes
from ..errors import AdaptrlError, NonFiniteError
from ..progress import progress_bar
from ..sampling import LocalSampler
from ..tasks import TaskFamily, get_family
from .oracles import get_oracle, oracle_returns
from .stats import ci95_half_width

SPLITS = ("test", "grid", "boundary", "ood")
MAX_GRID_DIM = 3  # grids above this many parameters are too coarse or too large to be useful


# ─── task sets ───────────────────────────────────────────────────────────────────────────────
def default_per_dim(family: TaskFamily):
    """Grid points per dimension: the family's own ``grid_shape`` where its paper fixes one
    (Ant3D: 4×4×3), else 6 for 1-D and 2-D families and 4 for 3-D ones."""
    if family.grid_shape:
        return tuple(family.grid_shape)
    return 6 if family.task_dim <= 2 else 4


def tasks_for_split(family: TaskFamily | str, split: str, n: int, rng: np.random.Generator,
                    per_dim: int | None = None) -> np.ndarray:
    """The evaluation tasks ``[T, k]`` of a named split.

    test: ``n`` tasks of the family's test split; grid: the regular grid over Ψ with ``per_dim``
    points per dimension (default `default_per_dim`; only for families with ≤ 3 parameters);
    boundary: ``n`` tasks on the boundary of Ψ; ood: ``n`` tasks of the family's ``ood`` split.
    """
    family = get_family(family)
    if n < 1:
        raise AdaptrlError(f"the number of tasks must be positive, got {n}")
    if split == "test":
        return family.split("test", n, rng)
    if split == "grid":
        if family.discrete is None and family.task_dim > MAX_GRID_DIM:
            raise AdaptrlError(
                f"'{family.name}' has {family.task_dim} parameters: a grid over Ψ is too large; "
                "use --split boundary or --split test")
        per_dim = default_per_dim(family) if per_dim is None else per_dim
        if min(np.atleast_1d(per_dim)) < 1:
            raise AdaptrlError(f"--per-dim must be positive, got {per_dim}")
        try:
            return family.grid(per_dim)
        except ValueError as err:
            raise AdaptrlError(f"{err} (lower --per-dim)") from None
    if split == "boundary":
        return family.boundary(n, rng)
    if split == "ood":
        if "ood" not in family.splits:
            raise AdaptrlError(
                f"family '{family.name}' has no 'ood' split (its splits: "
                f"{', '.join(family.splits)}); use --split boundary, or --tasks FILE.json with "
                "tasks of your choice")
        return family.split("ood", n, rng)
    raise AdaptrlError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")


def load_task_file(family: TaskFamily | str, path) -> np.ndarray:
    """Tasks ``[T, k]`` from a JSON file holding a list of lists, e.g. ``[[0.1, -0.3], ...]``.

    Values outside Ψ are allowed (out-of-distribution evaluation); the shape must fit the
    family and every value must be a finite number.
    """
    family = get_family(family)
    path = Path(path)
    example = "[" + ", ".join(["[" + ", ".join(["0.5"] * family.task_dim) + "]"] * 2) + "]"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise AdaptrlError(f"cannot read task file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise AdaptrlError(f"task file {path} is not UTF-8 text (a JSON list of lists)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise AdaptrlError(f"task file {path} is not valid JSON: {err}") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise AdaptrlError(f"task file {path}: {err}") from None
    if not isinstance(data, list) or not data or not all(isinstance(row, list) for row in data):
        raise AdaptrlError(f"task file {path} must hold a non-empty JSON list of tasks, each a "
                           f"list of {family.task_dim} number(s), like {example}")
    for i, row in enumerate(data):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            raise AdaptrlError(f"task file {path}: task {i} is {row!r}; every value must be a "
                               "number")
        if len(row) != family.task_dim:
            raise AdaptrlError(
                f"task file {path}: task {i} has {len(row)} value(s), but '{family.name}' tasks "
                f"have {family.task_dim} ({', '.join(family.task_names)}), like {example}")
    try:
        return family.check_tasks(np.asarray(data, dtype=np.float64))
    except ValueError as err:
        raise AdaptrlError(f"task file {path}: {err}") from None
    except OverflowError:
        raise AdaptrlError(f"task file {path}: a value is too large for a float (every value "
                           f"must be a finite number)") from None


def parse_steps(text: str) -> list[int]:
    """``"0,1,2,3"`` → ``[0, 1, 2, 3]``; AdaptrlError for anything else (see `check_steps`)."""
    try:
        steps = [int(part) for part in text.split(",")]
    except ValueError:
        raise AdaptrlError(f"--steps takes non-negative integers like 0,1,2,3; got '{text}'"
                           ) from None
    return check_steps(steps)


def check_steps(steps) -> list[int]:
    """Budgets must be a non-empty, strictly increasing list of non-negative integers (methods
    adapt incrementally from one budget to the next)."""
    steps = [int(s) for s in steps]
    if not steps:
        raise AdaptrlError("give at least one adaptation budget, like --steps 0,1,2,3")
    if min(steps) < 0:
        raise AdaptrlError(f"adaptation budgets must be ≥ 0, got {steps}")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise AdaptrlError(f"adaptation budgets must be strictly increasing, got {steps}")
    return steps


# ─── the protocol ────────────────────────────────────────────────────────────────────────────
def evaluate(algo: MetaAlgorithm, family: TaskFamily | str, tasks, steps: list[int],
             episodes: int, rng: np.random.Generator, horizon: int | None = None, *,
             split: str = "custom", seed: int | None = None, progress: bool = False) -> dict:
    """Adapt ``algo`` to ``tasks [T, k]`` with each budget in ``steps`` and measure it.

    One ``algo.adapt(tasks, steps, ·)`` call adapts every task with every budget; each adapted
    policy is then rolled out on ``episodes`` fresh episodes per task, all T tasks in one batch,
    through the method's own sampler (its backend: local or remote). ``horizon``: episode length
    (None: the method's own, else the family's). ``split`` and ``seed`` are recorded in the
    result; ``progress`` shows a bar on stderr (on a terminal). Returns the eval dict described
    in the module docstring.

    Randomness: ``rng`` is split into an adaptation stream and one rollout stream per budget, so
    the rollouts do not depend on how much randomness a method's adaptation consumed.

    Non-finite values: when adapting the batch meets a NaN or infinity
    (`adaptrl.errors.NonFiniteError`), the tasks are adapted again in halves, recursively, so
    that only the task(s) at fault fail (the others then draw from child streams of the same
    ones). A task whose adaptation failed, or whose adapted policy returned a non-finite mean
    return at any budget, is listed in ``nonfinite_tasks``, its non-finite values are null,
    and it is left out of the summary; the other tasks are evaluated as usual.
    """
    family = get_family(family)
    tasks = family.check_tasks(tasks)
    steps = check_steps(steps)
    if episodes < 1:
        raise AdaptrlError(f"episodes per task must be positive, got {episodes}")
    horizon = int(horizon or getattr(algo, "horizon", None) or family.horizon)
    T = len(tasks)
    adapt_rng, rollout_rng = rng.spawn(2)
    rollout_rngs = rollout_rng.spawn(len(steps))

    # progress: the adaptation, then one rollout batch per budget
    bar = progress_bar(1 + len(steps), f"eval {_algo_name(algo)} {family.name}", progress)
    bar.set_postfix_str(f"adapting {T} tasks", refresh=True)
    groups, failed = _adapt_in_groups(algo, tasks, steps, adapt_rng, np.arange(T))
    bar.update(1)

    sampler = getattr(algo, "sampler", None) or LocalSampler(family)
    returns = np.full((len(steps), T), np.nan)  # [B, T]
    success = np.full((len(steps), T), np.nan)  # [B, T]; stays NaN if no success is reported
    # families whose dynamics change within an episode: the return before and after the change
    change = getattr(family, "change_step", None)
    if change is not None and horizon <= change:  # episodes end before the change
        change = None
    segments = np.full((len(steps), T, 2), np.nan) if change is not None else None
    reward_curve = [None] * len(steps)  # mean reward per step of an episode, per budget
    # model-based methods also report their model's error and planning time (`model_report`)
    model_batches = [] if hasattr(algo, "model_report") else None
    for b, budget_rng in enumerate(rollout_rngs):
        bar.set_postfix_str(f"rollouts after {steps[b]}", refresh=True)
        group_rngs = [budget_rng] if len(groups) == 1 else budget_rng.spawn(len(groups))
        for (index, adapted), group_rng in zip(groups, group_rngs):
            with torch.no_grad():
                batch = sampler.sample(adapted[b].policy, tasks[index], group_rng, episodes,
                                       horizon=horizon)
            if model_batches is not None and len(groups) == 1:
                model_batches.append(batch)
            returns[b, index] = batch.episode_returns().to(torch.float64).mean(1).numpy()
            if segments is not None:
                plain = batch.per_episode()
                rewards = (plain.rewards * plain.mask).to(torch.float64)  # [T', E, H]
                segments[b, index, 0] = rewards[:, :, :change].sum(-1).mean(1).numpy()
                segments[b, index, 1] = rewards[:, :, change:].sum(-1).mean(1).numpy()
                if len(groups) == 1:
                    steps_taken = plain.mask.to(torch.float64).sum((0, 1)).clamp_min(1.0)
                    reward_curve[b] = (rewards.sum((0, 1)) / steps_taken).tolist()
            succeeded = batch.episode_success()  # [T', N] bool, or None
            if succeeded is not None:
                success[b, index] = succeeded.to(torch.float64).mean(1).numpy()
        bar.update(1)
    nonfinite = sorted(set(failed) | set(np.flatnonzero(~np.isfinite(returns).all(0)).tolist()))
    healthy = np.setdiff1d(np.arange(T), nonfinite)

    bar.close()
    model = None
    if model_batches is not None and len(model_batches) == len(steps):
        model = [{"n": int(n), **row} for n, row in zip(
            steps, algo.model_report([a.policy for a in groups[0][1]], model_batches))]
    oracle = oracle_returns(family, tasks, horizon)
    oracle_info = get_oracle(family)
    records = [{"params": tasks[i].tolist(),
                "returns": [float(r) if math.isfinite(r) else None for r in returns[:, i]],
                "oracle": None if oracle is None else float(oracle[i]),
                "adapt_ms": [None] * len(steps), "samples": [None] * len(steps)}
               for i in range(T)]
    for index, adapted in groups:
        for j, i in enumerate(index):
            records[i]["adapt_ms"] = [r.seconds * 1000.0 / len(index) for r in adapted]
            records[i]["samples"] = [int(np.asarray(r.samples).reshape(-1)[j]) for r in adapted]
    summary = summarize(returns[:, healthy], None if oracle is None else oracle[healthy])
    if not np.isnan(success).all():  # the family reports success
        for i in range(T):
            records[i]["success"] = [None if math.isnan(v) else float(v) for v in success[:, i]]
        summary.update(success_summary(success[:, healthy]))
    extra = {}
    if model is not None:  # per budget: model error before/after adaptation, planning ms
        extra["model"] = model
    if segments is not None:  # the return before and after the change, per budget
        for i in range(T):
            records[i]["segment_returns"] = [[None if math.isnan(v) else float(v) for v in pair]
                                             for pair in segments[:, i]]
        kept = segments[:, healthy] if len(healthy) else segments[:, :0]
        extra["segments"] = {
            "change_step": int(change),
            "before": [float(np.mean(kept[b, :, 0])) if kept.shape[1] else None
                       for b in range(len(steps))],
            "after": [float(np.mean(kept[b, :, 1])) if kept.shape[1] else None
                      for b in range(len(steps))],
            "reward_curve": reward_curve}
    if hasattr(family, "task_type"):  # Meta-World: the benchmark's task types and provenance
        types = [family.task_type(int(psi[0])) for psi in tasks]
        for record, task_type in zip(records, types):
            record["task_type"] = task_type
        summary["success_by_type"] = {
            name: success[:, [i for i in healthy if types[i] == name]].mean(1).tolist()
            for name in dict.fromkeys(types[i] for i in healthy)}
        extra["benchmark"] = family.provenance()
    return {
        "algo": _algo_name(algo),
        "family": family.name,
        "split": split,
        "steps": steps,
        "budget_unit": getattr(algo, "budget_unit", "adaptation steps"),
        "episodes": int(episodes),
        "seed": seed,
        "horizon": horizon,
        "param_names": list(family.task_names),
        "oracle_kind": None if oracle is None or oracle_info is None else oracle_info.kind,
        "tasks": records,
        "nonfinite_tasks": nonfinite,
        "summary": summary,
        **extra,
    }


def success_summary(success: np.ndarray) -> dict:
    """``success [B, T]`` (each task's success rate per budget) → the summary's ``success``
    (mean over tasks) and ``success_ci95`` (as for returns; null for a single task)."""
    success = np.asarray(success, dtype=np.float64)
    if success.shape[1] == 0:
        nothing = [None] * success.shape[0]
        return {"success": nothing, "success_ci95": nothing}
    return {"success": success.mean(1).tolist(),
            "success_ci95": [ci95_half_width(row) for row in success]}


def _adapt_in_groups(algo, tasks: np.ndarray, steps: list[int], rng: np.random.Generator,
                     index: np.ndarray) -> tuple[list, list[int]]:
    """Adapt the tasks ``index`` in one call; if that meets a NaN or infinity, adapt each half
    again (child streams of ``rng``) until the task(s) at fault stand alone. Returns the
    groups that adapted, ``[(index, [Adapted per budget]), ...]``, and the tasks that failed."""
    try:
        adapted = algo.adapt(tasks[index], steps, rng)
    except NonFiniteError:
        if len(index) == 1:
            return [], [int(index[0])]
        groups, failed = [], []
        for half, half_rng in zip(np.array_split(index, 2), rng.spawn(2)):
            more, bad = _adapt_in_groups(algo, tasks, steps, half_rng, half)
            groups += more
            failed += bad
        return groups, failed
    _check_adapted(algo, adapted, steps, len(index))
    return [(index, adapted)], []


def summarize(returns: np.ndarray, oracle: np.ndarray | None) -> dict:
    """Aggregate ``returns [B, T]`` (budget × task) and ``oracle [T]`` (or None) into the
    ``summary`` block: per budget ``mean``, ``ci95`` (the 95% interval's half-width
    t_{0.975, T−1}·std/√T, Student's t, std with ddof 1; null for a single task), ``gap_mean``
    and ``gap_max`` (gap = oracle − return; null without an oracle), and ``oracle_mean``."""
    returns = np.asarray(returns, dtype=np.float64)
    T = returns.shape[1]
    if T == 0:  # every task was non-finite
        nothing = [None] * returns.shape[0]
        return {"mean": nothing, "ci95": nothing, "gap_mean": None, "gap_max": None,
                "oracle_mean": None}
    mean = returns.mean(1)
    ci95 = [ci95_half_width(row) for row in returns]
    summary = {"mean": mean.tolist(), "ci95": ci95, "gap_mean": None, "gap_max": None,
               "oracle_mean": None}
    if oracle is not None:
        gap = np.asarray(oracle, dtype=np.float64)[None, :] - returns  # [B, T]
        summary.update(gap_mean=gap.mean(1).tolist(), gap_max=gap.max(1).tolist(),
                       oracle_mean=float(np.mean(oracle)))
    return summary


def _algo_name(algo) -> str:
    return getattr(algo, "name", "") or type(algo).__name__


def _check_adapted(algo, adapted, steps, T) -> None:
    """A method that breaks the `adapt` contract is a bug in the method: say which rule."""
    name = _algo_name(algo)
    if not isinstance(adapted, (list, tuple)):
        raise RuntimeError(f"{name}.adapt must return a list of Adapted, got "
                           f"{type(adapted).__name__}")
    if len(adapted) != len(steps):
        raise RuntimeError(f"{name}.adapt must return one Adapted per budget: {len(steps)} "
                           f"budgets {steps}, got {len(adapted)}")
    for budget, result in zip(steps, adapted):
        if not isinstance(result, Adapted):
            raise RuntimeError(f"{name}.adapt returned {type(result).__name__} for budget "
                               f"{budget}; expected adaptrl.algos.Adapted")
        if np.asarray(result.samples).reshape(-1).shape != (T,):
            raise RuntimeError(f"{name}.adapt: Adapted.samples must hold one count per task "
                               f"[{T}], got shape {np.shape(result.samples)} at budget {budget}")
        if not (math.isfinite(result.seconds) and result.seconds >= 0):
            raise RuntimeError(f"{name}.adapt: Adapted.seconds must be a time ≥ 0, got "
                               f"{result.seconds} at budget {budget}")


# ─── files ───────────────────────────────────────────────────────────────────────────────────
def eval_dir(run_dir, split: str) -> Path:
    """Where a run's evaluation on ``split`` lives: ``RUN_DIR/eval/<split>/``."""
    return Path(run_dir) / "eval" / split


def split_name_for_file(path) -> str:
    """The split name of a user task file: its stem (``hard.json`` → ``hard``), prefixed with
    ``custom-`` when it would collide with a built-in split or is empty."""
    stem = Path(path).stem
    return f"custom-{stem}" if stem in SPLITS or not stem else stem


def write_file(path, data: bytes) -> Path:
    """Create ``path``'s folder and write ``data`` atomically (temporary file + rename, see
    `adaptrl.checkpoint.atomic_write_bytes`), so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def write_eval_json(result: dict, path) -> Path:
    """Write an eval dict as ``eval.json`` atomically (strict JSON: no NaN)."""
    text = json.dumps(result, indent=1, allow_nan=False) + "\n"
    return write_file(path, text.encode())


def read_eval_json(path) -> dict:
    """Read an ``eval.json``; AdaptrlError when it is missing or not an eval file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdaptrlError(f"no evaluation at {path}") from None
    except (OSError, ValueError) as err:  # ValueError: JSON errors, not UTF-8, huge integers
        raise AdaptrlError(f"cannot read {path}: {' '.join(str(err).split())}") from None
    missing = [k for k in ("algo", "family", "split", "steps", "tasks", "summary")
               if not isinstance(data, dict) or k not in data]
    if missing:
        raise AdaptrlError(f"{path} is not an adaptrl eval.json (missing {', '.join(missing)})")
    return data
