"""Meta-World's meta-learning benchmarks as task families: ML1 (one task type, 50 training and
50 held-out goal positions), ML10 (10 training and 5 held-out task types) and ML45 (45 and 5).

Yu et al. 2019, *Meta-World* (CoRL); metaworld 3.1.1 (the optional extra ``adaptrl[metaworld]``,
which pins ``mujoco==3.3.0``: `make test-metaworld` runs it in its own virtualenv).

ψ is one number, the **task index**: a row of the benchmark object's own task lists,
``train_tasks`` first, then ``test_tasks`` (``metaworld.ML1(env, seed)`` / ``ML10(seed)`` /
``ML45(seed)`` built once per process with `BENCHMARK_SEED`). The ``train`` split holds the
indices of ``train_tasks``, ``test`` those of ``test_tasks``; nothing is taken from the
vectorised ``Meta-World/ML1-train`` environment, which serves the *test* goals (an open
upstream bug, pinned in ``tests/test_metaworld.py``). Each task type contributes 50 goal
positions to its split (the benchmark's count, also for the test types, where the Meta-World
docs say 40). Within a split, ``sample`` draws without replacement and balanced across task
types (every type once before any twice, every goal of a type once before any twice), so a
meta-batch of 20 on ML10 holds every training type twice; `grid` is every test task.

Rewards are Meta-World's own (``reward_function_version`` ``v2``), computed by the simulator
from its internal state: they are **not** a function of (s, a, s', ψ) available in torch, so
they are not differentiable in ψ, and the model-based methods (GrBAL, MB-MPC, AdMRL, MB-Unif,
MB-Gauss), which need r_ψ, refuse these families. Episodes last 500 steps (Meta-World's
``max_path_length``); they never terminate early; success (``info["success"]`` at any step of
an episode) is recorded by the environment and reported by the evaluation protocol. The goal is
zeroed in the 39-d observation (the ML benchmarks' partial observability), so the task must be
inferred from rewards. Actions: 4-d in [-1, 1] (end-effector xyz displacement, gripper).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import AdaptrlError
from ..names import METAWORLD_ML1_TYPES
from .base import Split, TaskFamily, UnavailableSplit

BENCHMARK_SEED = 0
"""The seed the benchmark objects are built with (it places the goals): fixed, so that a task
index means the same goal in every run and every process."""
GOALS_PER_TYPE = 50  # metaworld's _N_GOALS, in every split
HORIZON = 500  # metaworld's max_path_length
OBS_DIM, ACT_DIM = 39, 4
SOURCE = "Yu et al. 2019 (Meta-World)"
INSTALL_HINT = ("Meta-World is an optional extra that pins mujoco==3.3.0: pip install "
                "'adaptrl[metaworld]' in its own virtualenv (make test-metaworld builds .venv-mw)")

# metaworld.env_dict.ALL_V3_ENVIRONMENTS, in its order (tests/test_metaworld.py holds them equal)
ML1_ENVS = METAWORLD_ML1_TYPES
# (benchmark, training task types, test task types)
BENCHMARKS = {"mw-ml10": ("ML10", 10, 5), "mw-ml45": ("ML45", 45, 5)}


@dataclass(frozen=True)
class TaskIndexSplit(Split):
    """The task indices ``[start, start + types·goals)``, grouped by task type (blocks of
    ``goals`` consecutive indices, as the benchmark lists them). ``sample(n)`` draws without
    replacement, balanced across types: a random order of types, each with a random order of
    its goals, dealt round-robin; past the whole set it deals again."""

    start: int
    types: int
    goals: int = GOALS_PER_TYPE

    @property
    def size(self) -> int:
        return self.types * self.goals

    def indices(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.size, dtype=np.float64)[:, None]

    def sample(self, n, rng):
        out = []
        while len(out) < n:
            type_order = rng.permutation(self.types)
            goal_orders = [rng.permutation(self.goals) for _ in range(self.types)]
            for g in range(self.goals):
                out.extend(self.start + t * self.goals + goal_orders[t][g] for t in type_order)
        return np.asarray(out[:n], dtype=np.float64)[:, None]

    @property
    def description(self):
        return (f"indices {self.start}..{self.start + self.size - 1} ({self.types} type(s) × "
                f"{self.goals} goals)")


@dataclass(eq=False)
class MetaWorldFamily(TaskFamily):
    """A Meta-World benchmark (ML1 of one task type, ML10 or ML45); ψ = ``[task index]``."""

    benchmark: str = "ML1"
    env_name: str | None = None  # ML1's task type, e.g. "reach-v3"

    @property
    def num_train(self) -> int:
        return self.splits["train"].size

    @property
    def num_tasks_total(self) -> int:
        return self.num_train + self.splits["test"].size

    def grid(self, per_dim=None) -> np.ndarray:
        """Every test task (a task index has no grid): ``[types·50, 1]``."""
        return self.splits["test"].indices()

    def contains(self, tasks) -> np.ndarray:
        tasks = np.asarray(tasks, dtype=np.float64)
        return np.all((tasks == np.round(tasks)) & (tasks >= 0)
                      & (tasks < self.num_tasks_total), axis=-1)

    def check_tasks(self, tasks) -> np.ndarray:
        """Task indices ``[T, 1]``: integers in [0, number of train + test tasks)."""
        tasks = super().check_tasks(tasks)
        if not self.contains(tasks).all():
            raise ValueError(
                f"'{self.name}' tasks are task indices, integers in [0, "
                f"{self.num_tasks_total - 1}] (train 0..{self.num_train - 1}, test "
                f"{self.num_train}..{self.num_tasks_total - 1}); got {tasks[:, 0].tolist()[:8]}")
        return tasks

    # ── the benchmark object (metaworld is imported here only) ──
    def benchmark_object(self):
        """The metaworld benchmark (built once per process: ML10 takes seconds, ML45 more)."""
        return _benchmark(self.benchmark, self.env_name, BENCHMARK_SEED)

    def task_list(self) -> list:
        """metaworld ``Task`` objects in task-index order: ``train_tasks + test_tasks``."""
        bench = self.benchmark_object()
        return list(bench.train_tasks) + list(bench.test_tasks)

    def env_classes(self) -> dict:
        bench = self.benchmark_object()
        return dict(bench.train_classes) | dict(bench.test_classes)

    def task_type(self, index: int) -> str:
        """The task type (``reach-v3``) of a task index."""
        return self.task_list()[int(index)].env_name

    def provenance(self) -> dict:
        """What a Meta-World result must be reported with (versions, seed, reward version,
        goals per type, how the splits were built)."""
        from importlib.metadata import version

        return {"benchmark": self.benchmark, "env_name": self.env_name,
                "metaworld": version("metaworld"), "mujoco": version("mujoco"),
                "benchmark_seed": BENCHMARK_SEED, "reward_function_version": "v2",
                "goals_per_type": {"train": GOALS_PER_TYPE, "test": GOALS_PER_TYPE},
                "splits": "the benchmark object's train_tasks / test_tasks"}


def import_metaworld():
    """``metaworld``, or a one-line error saying how to install it."""
    try:
        import metaworld
    except ImportError as err:
        raise AdaptrlError(f"{INSTALL_HINT} ({err})") from None
    return metaworld


@functools.lru_cache(maxsize=None)
def _benchmark(kind: str, env_name: str | None, seed: int):
    metaworld = import_metaworld()
    if kind == "ML1":
        return metaworld.ML1(env_name, seed=seed)
    return getattr(metaworld, kind)(seed=seed)


def _no_torch_reward(obs, act, next_obs, psi):
    raise AdaptrlError("Meta-World's rewards come from its simulator's internal state: there "
                       "is no reward function r_ψ(s, a, s') in torch (not differentiable in ψ)")


REWARD_DOC = "Meta-World's own reward (v2), in [0, 10] per step; not differentiable in ψ"


def _family(name: str, benchmark: str, train_types: int, test_types: int,
            env_name: str | None = None) -> MetaWorldFamily:
    train = TaskIndexSplit(0, train_types)
    test = TaskIndexSplit(train.size, test_types)
    what = (f"ML1 {env_name}: 50 training goals, 50 held-out goals of the same type"
            if benchmark == "ML1" else
            f"{benchmark}: {train_types} training task types, {test_types} held-out types, "
            f"50 goals each")
    return MetaWorldFamily(
        name=name, body="metaworld", task_names=("task",), low=(0.0,),
        high=(float(train.size + test.size - 1),), horizon=HORIZON, obs_dim=OBS_DIM,
        act_dim=ACT_DIM, source=SOURCE, reward_doc=REWARD_DOC, reward_fn=_no_torch_reward,
        splits={"train": train, "test": test,
                "boundary": UnavailableSplit(
                    f"'{name}' tasks are task indices: they have no boundary; use --split "
                    "test (or grid: every test task)")},
        notes=f"{what}; ψ = task index (train first, then test); benchmark seed "
              f"{BENCHMARK_SEED}", reward_differentiable=False,
        benchmark=benchmark, env_name=env_name)


def metaworld_families() -> list[MetaWorldFamily]:
    """``mw-ml1-<type>`` for every v3 task type, then ``mw-ml10`` and ``mw-ml45``."""
    families = [_family(f"mw-ml1-{env}", "ML1", 1, 1, f"{env}-v3") for env in ML1_ENVS]
    families += [_family(name, *spec) for name, spec in BENCHMARKS.items()]
    return families
