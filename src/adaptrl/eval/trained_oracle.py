"""Trained oracles: A*(ψ) measured from a policy trained for each task ψ, cached on disk.

Families without an analytic oracle (hopper-2d, walker-2d, ant-2d, ...) get A*(ψ) from
`train_oracle`: for every task ψ of a set (usually the evaluation grid) one Gaussian MLP policy
is trained by model-free TRPO on the real environment with reward r_ψ, and

    A*(ψ) = max(stochastic return, deterministic (mean-action) return)

of the final policy, each the mean undiscounted return over ``eval_episodes`` fresh episodes of
``horizon`` steps. Both are returns of one policy that knows ψ, so either is a valid lower bound
on the true optimum; taking the better one removes the exploration noise that training leaves.

How it trains (`OracleTrainingConfig`): the T task policies are independent (each its own
parameters, advantages, trust region and line search: one TRPO step per task per iteration, as
if each were trained alone); they only share the batched sampler, so all T·N episodes of an
iteration are simulated in lock-step. Budget: ``iterations × episodes × horizon`` real samples
per task (the defaults, 200 × 10 × 200 = 400k per task, ≈ 14M for a 6×6 grid: an hour or more on
one CPU core; the paper's methods use ≤ 6000 samples at meta-test, so the oracle sees far more).

Cache (`OracleCache`): one JSON file per (family, horizon, task set, training settings) under
``<root>/<family>/<task key>-<settings key>.json``, where the root is ``$ADAPTRL_ORACLE_CACHE``,
else ``$XDG_CACHE_HOME/adaptrl/oracles``, else ``~/.cache/adaptrl/oracles``. Each file records
the tasks, A*(ψ) per task (and both of its parts), the per-iteration training returns, the
settings, the samples used, the wall time and the library version. `oracle_returns` uses a
cached entry only when one exists for exactly the evaluated task set (in any order) and
horizon; when several exist (different settings), the one trained on the most samples per
task, then the newest. Evaluation never trains: without an entry the gap is null.

Build one with ``adaptrl oracle FAMILY --split grid [--per-dim 6] [--horizon H]
[--iterations K] ...``; its horizon must be the one the runs are evaluated with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..errors import AdaptrlError
from ..nets import GaussianMLPPolicy, Params
from ..optim import TRPOOptions, estimate_advantages, per_task_trpo_step
from ..options import Activation, check_ranges, option
from ..progress import progress_bar
from ..sampling import LocalSampler, Sampler
from ..tasks import REGISTRY, TaskFamily, get_family
from .oracles import ORACLES, Oracle, register_oracle
from .protocol import write_file

CACHE_ENV = "ADAPTRL_ORACLE_CACHE"
FORMAT = "adaptrl-trained-oracle"
FORMAT_VERSION = 1


@dataclass
class OracleTrainingConfig(TRPOOptions):
    """How each task's oracle policy is trained (per-task TRPO on the real environment; the
    TRPO step's fields come from `TRPOOptions`, listed first)."""

    iterations: int = option(200, "TRPO iterations per task", ge=1, le=10**6)
    episodes: int = option(10, "real episodes per task per iteration", ge=1, le=10**6)
    eval_episodes: int = option(20, "fresh episodes per task measuring A*(ψ) after training",
                                ge=1, le=10**6)
    hidden_sizes: list = option([64, 64], "policy hidden layer widths", item_ge=1,
                                nonempty=True)
    activation: Activation = option("tanh", "policy activation: relu, tanh or elu")
    init_log_std: float = option(0.0, "initial log standard deviation of the policy", ge=-10, le=3)
    gamma: float = option(0.99, "discount", gt=0, le=1)
    gae_lambda: float = option(0.97, "GAE λ", ge=0, le=1)
    seed: int = option(0, "training seed (policy initialisations, episodes)", ge=0, le=2**32 - 1)

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value (every field's declared range);
        `train_oracle` and `build_oracle` report it as an `AdaptrlError` "oracle ..."."""
        check_ranges(self)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, (list, tuple)) else v)
                for k, v in dataclasses.asdict(self).items()}


# ─── training ────────────────────────────────────────────────────────────────────────────────
def _init_task_params(policy: GaussianMLPPolicy, seed: int) -> Params:
    """Leaf parameters ``[1, ...]`` of one task, drawn by the policy's own init scheme
    (`GaussianMLPPolicy.init_params`) from ``seed``."""
    return policy.init_params(1, torch.Generator().manual_seed(seed))


def _check_config(config: OracleTrainingConfig) -> None:
    """``config.validate()``, an impossible value reported as one line: `AdaptrlError`
    ``"oracle <field> must be ..."``."""
    try:
        config.validate()
    except ValueError as err:
        raise AdaptrlError(f"oracle {err}") from None


def train_oracle(family: TaskFamily | str, tasks, config: OracleTrainingConfig | None = None,
                 horizon: int | None = None,
                 progress: Callable[[int, np.ndarray], None] | None = None,
                 sampler: Sampler | None = None) -> dict:
    """Train one policy per task and measure A*(ψ); returns a cache entry (see `OracleCache`).

    tasks: ``[T, k]``; horizon: episode length (None: the family's). ``progress(iteration,
    returns [T])`` is called after every iteration with the tasks' mean training returns.
    The entry holds ``returns [T]`` = A*(ψ), ``returns_stochastic [T]``,
    ``returns_deterministic [T]`` and ``train_returns [T][iterations]``.
    """
    family = get_family(family)
    tasks = family.check_tasks(tasks)
    cfg = config or OracleTrainingConfig()
    _check_config(cfg)
    H = int(horizon or family.horizon)
    if H < 1:
        raise AdaptrlError(f"horizon must be positive, got {H}")
    T = len(tasks)
    seeds = np.random.SeedSequence(cfg.seed)
    init_seed, train_seed, eval_seed = seeds.spawn(3)
    init_seeds = init_seed.generate_state(T, dtype=np.uint64)
    rng = np.random.default_rng(train_seed)
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, tuple(cfg.hidden_sizes),
                               cfg.activation, cfg.init_log_std)
    thetas = [_init_task_params(policy, int(s) % (2**63)) for s in init_seeds]

    def joint() -> Params:  # [T, ...]
        return {k: torch.cat([th[k].detach() for th in thetas]) for k in thetas[0]}

    sampler = sampler if sampler is not None else LocalSampler(family)
    curve = np.zeros((cfg.iterations, T))
    refused = np.zeros(T, dtype=np.int64)
    start = time.perf_counter()
    for it in range(cfg.iterations):
        with torch.no_grad():
            episodes = sampler.sample(policy.actor(joint()), tasks, rng, cfg.episodes, horizon=H)
        curve[it] = episodes.episode_returns().to(torch.float64).mean(1).numpy()
        adv = estimate_advantages(episodes, cfg.gamma, cfg.gae_lambda).detach()
        for i in range(T):  # each task's policy alone: its own trust region and line search
            info = per_task_trpo_step(policy, thetas[i], episodes.task(i), adv[i:i + 1],
                                      **cfg.trpo_kwargs())
            refused[i] += info.get("refused") is not None
        if progress is not None:
            progress(it + 1, curve[it])
    train_seconds = time.perf_counter() - start

    final = joint()
    eval_rngs = np.random.default_rng(eval_seed).spawn(2)
    measured = []
    for deterministic, eval_rng in zip((False, True), eval_rngs):
        with torch.no_grad():
            batch = sampler.sample(policy.actor(final, deterministic), tasks, eval_rng,
                                   cfg.eval_episodes, horizon=H)
        measured.append(batch.episode_returns().to(torch.float64).mean(1).numpy())
    stochastic, deterministic = measured
    best = np.maximum(stochastic, deterministic)
    if not np.all(np.isfinite(best)):
        raise FloatingPointError(f"the oracle policies of '{family.name}' gave non-finite returns")
    return {
        "format": FORMAT, "version": FORMAT_VERSION,
        "family": family.name, "horizon": H, "param_names": list(family.task_names),
        "tasks": tasks.tolist(),
        "returns": best.tolist(),
        "returns_stochastic": stochastic.tolist(),
        "returns_deterministic": deterministic.tolist(),
        "train_returns": curve.T.tolist(),
        "trpo_refused": refused.tolist(),
        "training": {"method": "per-task TRPO on the real environment", **cfg.to_dict()},
        "samples_per_task": int(cfg.iterations * cfg.episodes * H),
        "seconds": {"train": train_seconds, "total": time.perf_counter() - start},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "adaptrl_version": __version__,
    }


# ─── the cache ───────────────────────────────────────────────────────────────────────────────
def default_cache_root() -> Path:
    """``$ADAPTRL_ORACLE_CACHE``, else ``$XDG_CACHE_HOME/adaptrl/oracles``, else
    ``~/.cache/adaptrl/oracles``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "adaptrl" / "oracles"


def _digest(payload) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical_rows(tasks: np.ndarray) -> list[tuple[float, ...]]:
    return [tuple(float(v) for v in row) for row in np.asarray(tasks, dtype=np.float64)]


def task_key(family_name: str, tasks, horizon: int) -> str:
    """Hash of (family, horizon, the SET of task rows): equal for any order of the same tasks."""
    rows = sorted(_canonical_rows(tasks))
    return _digest({"family": family_name, "horizon": int(horizon),
                    "tasks": [[repr(v) for v in row] for row in rows]})


class OracleCache:
    """Trained-oracle entries under ``root`` (default `default_cache_root`, read when used so
    that the environment variable can change between calls)."""

    def __init__(self, root=None):
        self._root = None if root is None else Path(root).expanduser()

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else default_cache_root()

    def path_for(self, entry: dict) -> Path:
        """``<root>/<family>/<task key>-<settings key>.json``."""
        tkey = task_key(entry["family"], entry["tasks"], entry["horizon"])
        skey = _digest(entry["training"])
        return self.root / entry["family"] / f"{tkey}-{skey}.json"

    def save(self, entry: dict) -> Path:
        """Write ``entry`` atomically; returns its path (an entry with the same tasks, horizon
        and settings is replaced)."""
        text = json.dumps(entry, indent=1, allow_nan=False) + "\n"
        return write_file(self.path_for(entry), text.encode())

    def entries(self, family_name: str, tasks, horizon: int) -> list[tuple[Path, dict]]:
        """Every readable entry for exactly this task set and horizon (unreadable or foreign
        files are skipped)."""
        folder = self.root / family_name
        if not folder.is_dir():
            return []
        want = set(_canonical_rows(tasks))
        found = []
        for path in sorted(folder.glob(f"{task_key(family_name, tasks, horizon)}-*.json")):
            try:
                entry = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if (not isinstance(entry, dict) or entry.get("format") != FORMAT
                    or entry.get("family") != family_name
                    or entry.get("horizon") != int(horizon)):
                continue
            rows = _canonical_rows(entry.get("tasks", []))
            if set(rows) != want or len(rows) != len(entry.get("returns", [])):
                continue
            found.append((path, entry))
        return found

    def lookup(self, family_name: str, tasks, horizon: int) -> tuple[Path, dict] | None:
        """The entry to use for these tasks, or None: the one with the most samples per task,
        then the newest."""
        found = self.entries(family_name, tasks, horizon)
        if not found:
            return None
        return max(found, key=lambda pe: (pe[1].get("samples_per_task", 0),
                                          pe[1].get("created", "")))

    def returns(self, family_name: str, tasks, horizon: int) -> np.ndarray | None:
        """A*(ψ) ``[T]`` in the order of ``tasks``, or None without an entry."""
        hit = self.lookup(family_name, tasks, horizon)
        if hit is None:
            return None
        entry = hit[1]
        by_row = dict(zip(_canonical_rows(entry["tasks"]), entry["returns"]))
        return np.asarray([by_row[row] for row in _canonical_rows(tasks)], dtype=np.float64)


def _cached_returns(family: TaskFamily, tasks: np.ndarray, horizon: int) -> np.ndarray | None:
    return OracleCache().returns(family.name, tasks, horizon)


TRAINED_ORACLE = Oracle(
    kind="trained",
    description="per-task TRPO policy, cached by `adaptrl oracle` (better of stochastic and "
                "mean-action returns)",
    returns=_cached_returns,
)


def register_trained_oracles() -> list[str]:
    """Give every registered family without an oracle the cached trained one; returns the
    names it was given to."""
    names = [name for name in REGISTRY if name not in ORACLES]
    for name in names:
        register_oracle(name, TRAINED_ORACLE)
    return names


register_trained_oracles()


def format_progress(iteration: int, total: int, returns: np.ndarray, seconds: float) -> str:
    """One progress line: ``iteration 10/200  mean return 123.4 (min 5.6, max 210.0)  12s``."""
    return (f"iteration {iteration}/{total}  mean return {returns.mean():.1f} "
            f"(min {returns.min():.1f}, max {returns.max():.1f})  {seconds:.0f}s")


def build_oracle(family: TaskFamily | str, tasks, config: OracleTrainingConfig,
                 horizon: int | None = None, cache: OracleCache | None = None,
                 force: bool = False, log=sys.stderr) -> tuple[Path, dict, bool]:
    """Train (unless an entry with these exact tasks, horizon and settings is cached and not
    ``force``) and store; returns ``(path, entry, trained)``. Progress goes to ``log`` (None:
    none): a bar when it is a terminal, else a line every tenth of the iterations."""
    family = get_family(family)
    current = ORACLES.get(family.name)
    if current is not None and current.kind == "analytic":
        raise AdaptrlError(f"'{family.name}' has an analytic oracle ({current.description}); "
                           "evaluation uses it, so a trained one would never be read")
    tasks = family.check_tasks(tasks)
    _check_config(config)
    cache = cache or OracleCache()
    H = int(horizon or family.horizon)
    probe = {"family": family.name, "tasks": tasks.tolist(), "horizon": H,
             "training": {"method": "per-task TRPO on the real environment", **config.to_dict()}}
    path = cache.path_for(probe)
    if not force:
        for found_path, entry in cache.entries(family.name, tasks, H):
            if found_path == path:
                return path, entry, False
    start = time.perf_counter()
    every = max(1, config.iterations // 10)
    as_bar = log is not None and getattr(log, "isatty", lambda: False)()
    bar = progress_bar(config.iterations, f"oracle {family.name} ({len(tasks)} tasks)", as_bar)

    def progress(it, returns):
        if as_bar:
            bar.set_postfix_str(f"mean return {returns.mean():.1f}", refresh=False)
            bar.update(1)
        elif log is not None and (it % every == 0 or it == config.iterations):
            print(format_progress(it, config.iterations, returns, time.perf_counter() - start),
                  file=log, flush=True)

    with bar:
        entry = train_oracle(family, tasks, config, H, progress)
    return cache.save(entry), entry, True
