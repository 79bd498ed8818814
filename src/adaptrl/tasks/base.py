"""Task families: a parameter space Ψ, named splits of it, and a reward r_ψ(s, a, s').

A family knows the observation layout of its body (which index holds the torso height or the
forward velocity), because its reward and termination rule read them; it does not know how the
body is simulated (that is `adaptrl.envs`).

Conventions
-----------
* Task parameters ψ are float64 numpy arrays ``[n, k]`` when sampled and torch tensors
  ``[..., k]`` when a reward is evaluated.
* ``reward(obs, act, next_obs, psi)`` broadcasts over leading dimensions:
  ``obs: [..., obs_dim]``, ``act: [..., act_dim]``, ``psi: [..., k]`` → ``[...]``.
  It is written in torch so that ∂r/∂ψ is available to model-based and adversarial methods.
* ``terminated(next_obs, psi) -> [...] bool``: the body's health rule (Gymnasium v5) or a task
  rule (point-nav's goal radius), evaluated on the observation so that learned models can use it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..names import gym_name

MAX_GRID_POINTS = 1_000_000


# ─── splits: named sets of tasks inside (or outside) Ψ ──────────────────────────────────────
class Split:
    """A named distribution or finite set of task parameters."""

    description = ""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class BoxSplit(Split):
    """Uniform on the box [low, high]."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def sample(self, n, rng):
        return rng.uniform(self.low, self.high, size=(n, len(self.low)))

    @property
    def description(self):
        return _box_str(self.low, self.high)


@dataclass(frozen=True)
class BoundarySplit(Split):
    """Uniform on the surface of the box [low, high] (each face weighted by its area; for
    zero-area faces, i.e. 1-D boxes, the two end points with equal probability)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def sample(self, n, rng):
        return sample_box_boundary(np.asarray(self.low), np.asarray(self.high), n, rng)

    @property
    def description(self):
        return "boundary of " + _box_str(self.low, self.high)


@dataclass(frozen=True)
class DiscreteSplit(Split):
    """Uniform over a finite set of parameter vectors."""

    values: tuple[tuple[float, ...], ...]

    def sample(self, n, rng):
        values = np.asarray(self.values, dtype=np.float64)
        return values[rng.integers(0, len(values), size=n)]

    @property
    def description(self):
        return "{" + ", ".join(",".join(f"{v:g}" for v in row) for row in self.values) + "}"


@dataclass(frozen=True)
class UnavailableSplit(Split):
    """A split a family cannot offer (say why): asking for it is a clear error."""

    reason: str

    def sample(self, n, rng):
        from ..errors import AdaptrlError

        raise AdaptrlError(self.reason)

    @property
    def description(self):
        return "unavailable"


@dataclass(frozen=True)
class DiskSplit(Split):
    """Uniform on the disk of the given radius (goal positions as in PEARL's ant-goal)."""

    radius: float

    def sample(self, n, rng):
        angle = rng.uniform(0.0, 2 * math.pi, size=n)
        r = self.radius * np.sqrt(rng.uniform(0.0, 1.0, size=n))
        return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)

    @property
    def description(self):
        return f"disk r≤{self.radius:g}"


@dataclass(frozen=True)
class CircleSplit(Split):
    """Uniform on the circle of the given radius (the boundary of a disk)."""

    radius: float

    def sample(self, n, rng):
        angle = rng.uniform(0.0, 2 * math.pi, size=n)
        return self.radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)

    @property
    def description(self):
        return f"circle r={self.radius:g}"


def _box_str(low, high) -> str:
    parts = [f"[{lo:g},{hi:g}]" for lo, hi in zip(low, high)]
    if len(set(parts)) == 1 and len(parts) > 2:
        return f"{parts[0]}^{len(parts)}"
    return "×".join(parts)


def sample_box_boundary(low: np.ndarray, high: np.ndarray, n: int, rng: np.random.Generator):
    """Points uniform on the surface of a box: pick a face with probability ∝ its area, then a
    point uniform on it."""
    k = len(low)
    width = high - low
    if k == 1:
        pick = rng.integers(0, 2, size=n)
        return np.where(pick[:, None] == 0, low, high).astype(np.float64)
    # area of the two faces orthogonal to dimension d: prod of the other widths
    areas = np.array([np.prod(np.delete(width, d)) for d in range(k)])
    if areas.sum() <= 0:  # degenerate box: fall back to equal weights
        areas = np.ones(k)
    dims = rng.choice(k, size=n, p=areas / areas.sum())
    points = rng.uniform(low, high, size=(n, k))
    side = rng.integers(0, 2, size=n)
    points[np.arange(n), dims] = np.where(side == 0, low[dims], high[dims])
    return points


# ─── the family ──────────────────────────────────────────────────────────────────────────────
RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _counts_str(counts) -> str:
    """``3^18`` for equal counts, ``4×4×3`` otherwise."""
    if len(set(counts)) == 1:
        return f"{counts[0]}^{len(counts)}"
    return "×".join(map(str, counts))


@dataclass(eq=False)
class TaskFamily:
    """A family of tasks sharing one body and differing in ψ.

    Attributes:
        name: CLI name, e.g. ``cheetah-vel``.
        body: the simulated body, a key of `adaptrl.envs` (``point``, ``half_cheetah`` …).
        task_names: one name per dimension of ψ (the task parameters).
        low, high: the box that contains Ψ (for discrete families, the hull of the set).
        horizon: episode length H.
        obs_dim, act_dim: observation and action sizes of the body.
        source: the paper whose definition is followed.
        reward_doc: the formula, for tables and docs.
        splits: named splits; ``train`` and ``test`` always exist.
        reward_fn / terminated_fn: see the module docstring.
        dynamics: ``None`` when ψ enters only the reward; otherwise the name of the dynamics
            randomizer in `adaptrl.envs` that maps ψ to physics parameters.
        default_test_tasks: how many tasks ``split('test')`` gives by default.
        grid_shape: grid points per dimension of the evaluation grid the source paper uses
            (AdMRL's 4×4×3 for Ant3D); empty means the evaluation protocol's default.
        discrete_actions: the body takes one of ``act_dim`` actions; actions travel as one-hot
            vectors ``[..., act_dim]`` (environments act on their argmax), so the sampler,
            `Episodes` and the previous-action feedback need no second layout.
        reward_differentiable: ``reward`` is r_ψ(s, a, s') in torch, differentiable in ψ; False
            where the simulator computes the reward itself (Meta-World), which the model-based
            methods refuse.
        change_step: for families whose dynamics change *within* an episode, the control step
            from which ψ's dynamics apply (before it the body is intact); None: ψ applies from
            the first step. The evaluation reports the return before and after it.
    """

    name: str
    body: str
    task_names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    horizon: int
    obs_dim: int
    act_dim: int
    source: str
    reward_doc: str
    reward_fn: RewardFn
    splits: dict[str, Split]
    terminated_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    dynamics: str | None = None
    discrete: np.ndarray | None = None
    notes: str = ""
    weights: dict[str, float] = field(default_factory=dict)
    grid_shape: tuple[int, ...] = ()
    discrete_actions: bool = False
    reward_differentiable: bool = True
    change_step: int | None = None

    def __post_init__(self):
        self.low = np.asarray(self.low, dtype=np.float64)
        self.high = np.asarray(self.high, dtype=np.float64)
        if self.low.shape != (len(self.task_names),) or self.high.shape != self.low.shape:
            raise ValueError(f"{self.name}: low/high must have one entry per parameter")
        if "train" not in self.splits or "test" not in self.splits:
            raise ValueError(f"{self.name}: a family needs 'train' and 'test' splits")

    # ── parameter space ──
    @property
    def task_dim(self) -> int:
        return len(self.task_names)

    @property
    def gym_id(self) -> str:
        return f"adaptrl/{gym_name(self.name)}-v0"

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` training tasks, ``[n, k]``."""
        return self.split("train", n, rng)

    def split(self, name: str, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` tasks from the named split, ``[n, k]``."""
        if name not in self.splits:
            raise KeyError(
                f"family '{self.name}' has no split '{name}'; known: {', '.join(self.splits)}"
            )
        _check_count(n)
        return np.asarray(self.splits[name].sample(n, rng), dtype=np.float64).reshape(n, -1)

    def grid(self, per_dim) -> np.ndarray:
        """A regular grid over the box Ψ, end points included: ``per_dim`` points per dimension
        (an int, or one count per dimension such as ``(4, 4, 3)``), ``[Π counts, k]``; for
        discrete families, the whole set."""
        if self.discrete is not None:
            return self.discrete.copy()
        counts = ([int(per_dim)] * self.task_dim if np.ndim(per_dim) == 0
                  else [int(c) for c in per_dim])
        if len(counts) != self.task_dim:
            raise ValueError(f"'{self.name}' has {self.task_dim} parameters; got grid counts "
                             f"{counts}")
        if min(counts) < 1:
            raise ValueError(f"grid needs at least 1 point per dimension, got {counts}")
        if math.prod(counts) > MAX_GRID_POINTS:
            raise ValueError(
                f"a grid of {_counts_str(counts)} points over '{self.name}' is too large "
                f"(limit {MAX_GRID_POINTS}); use boundary() or sample() for high-dimensional Ψ"
            )
        axes = [
            np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2])
            for lo, hi, n in zip(self.low, self.high, counts)
        ]
        return np.array(list(itertools.product(*axes)), dtype=np.float64)

    def boundary(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` tasks on the boundary of Ψ (the surface of the box; for discrete families, the
        set itself)."""
        _check_count(n)
        if "boundary" in self.splits:
            return self.split("boundary", n, rng)
        if self.discrete is not None:
            return DiscreteSplit(tuple(map(tuple, self.discrete))).sample(n, rng)
        return sample_box_boundary(self.low, self.high, n, rng)

    def contains(self, tasks: np.ndarray) -> np.ndarray:
        """Whether each row of ``tasks`` lies in the box Ψ."""
        tasks = np.asarray(tasks, dtype=np.float64)
        return np.all((tasks >= self.low - 1e-12) & (tasks <= self.high + 1e-12), axis=-1)

    def check_tasks(self, tasks) -> np.ndarray:
        """Validate a task array ψ ``[T, k]`` (or one task ``[k]``) and return it as float64
        ``[T, k]`` (values outside Ψ are allowed: OOD evaluation)."""
        tasks = np.asarray(tasks, dtype=np.float64)
        if tasks.ndim == 1:
            tasks = tasks[None]
        if tasks.ndim != 2 or tasks.shape[1] != self.task_dim:
            raise ValueError(
                f"'{self.name}' tasks have {self.task_dim} parameter(s) "
                f"({', '.join(self.task_names)}); got an array of shape {tasks.shape}"
            )
        if not np.all(np.isfinite(tasks)):
            raise ValueError(f"'{self.name}' task parameters must be finite")
        return tasks

    # ── reward and termination ──
    def reward(self, obs, act, next_obs, psi) -> torch.Tensor:
        """r_ψ(s, a, s'); broadcasts over leading dims; differentiable in ``psi``."""
        return self.reward_fn(obs, act, next_obs, psi)

    def terminated(self, next_obs: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        """Whether the episode ends on arriving in ``next_obs``; ``[...]`` bool."""
        shape = torch.broadcast_shapes(next_obs.shape[:-1], psi.shape[:-1])
        if self.terminated_fn is None:
            return torch.zeros(shape, dtype=torch.bool, device=next_obs.device)
        return self.terminated_fn(next_obs, psi).expand(shape)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "gym_id": self.gym_id,
            "body": self.body,
            "param_names": list(self.task_names),
            "param_low": self.low.tolist(),
            "param_high": self.high.tolist(),
            "discrete": None if self.discrete is None else self.discrete.tolist(),
            "horizon": self.horizon,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "splits": {k: v.description for k, v in self.splits.items()},
            "reward": self.reward_doc,
            "source": self.source,
            "dynamics": self.dynamics,
        }


def _check_count(n):
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"number of tasks must be a positive integer, got {n!r}")

