"""The method protocol that the runner, the evaluation protocol, checkpoints and the CLI share.

Every method is a `MetaAlgorithm` subclass with a typed `Config` dataclass and four entry points:

* ``train_step(rng) -> dict[str, float]``: one meta-iteration; the metrics to log.
* ``adapt(tasks, budgets, rng) -> list[Adapted]``: meta-test adaptation of T tasks at once, one
  `Adapted` per budget (for gradient methods a budget is a number of adaptation steps, each
  using ``config.fast_batch`` episodes per task); methods adapt incrementally, so the budgets
  0,1,2,3 cost three steps, not six.
* ``state_dict()`` / ``load_state_dict(state)``: everything needed to resume exactly (networks,
  optimizer states, baselines, counters). The runner saves its own RNG state beside it.

A method receives its `Sampler` (the local lock-step backend by default) and samples through
`MetaAlgorithm.rollout`; it marks other phases of an iteration with ``with self.phase(name):``.
The runner counts iterations (``self.iteration``) and times the phases: a method reports what it
did, never its own timers. Adapted policies are `adaptrl.sampling.Policy` objects, so they can
be rolled out by any backend and shipped as snapshots.

Randomness: a method draws only from the ``numpy.random.Generator`` it is handed (the sampler
derives torch generators from it); it never touches global RNGs after construction. The
constructor may use torch's global RNG for network initialisation: the runner seeds it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import AdaptrlError
from ..options import check_ranges, option
from ..sampling import Episodes, LocalSampler, Policy, Sampler
from ..tasks import TaskFamily
from ..timing import PhaseClock


@dataclass
class BaseConfig:
    """Fields every method has. Subclasses add their own (flat, typed, each with help)."""

    iterations: int = option(100, "meta-training iterations", ge=1)
    checkpoint_every: int = option(10, "write a checkpoint every k iterations (and at the end)",
                                   ge=1)
    meta_batch: int = option(20, "tasks per meta-iteration", ge=1)
    fast_batch: int = option(20, "episodes per task for each adaptation step", ge=1)
    horizon: int = option(0, "episode length; 0 means the family's horizon", ge=0)
    hidden_sizes: list = option([100, 100], "policy hidden layer widths", item_ge=1,
                                nonempty=True)
    activation: str = option("relu", "policy activation: relu, tanh or elu")
    gamma: float = option(0.99, "discount", gt=0, le=1)
    gae_lambda: float = option(1.0, "GAE λ (1.0: Monte-Carlo returns minus baseline, as MAML)",
                               ge=0, le=1)

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value: every field's declared range
        (`check_ranges`, inherited fields included); subclasses add cross-field rules."""
        check_ranges(self)


@dataclass
class Adapted:
    """A policy adapted to T tasks.

    policy: what the sampler drives (`adaptrl.sampling.Policy`), acting for ``[T, N]``
        environments of the adapted tasks.
    samples: environment steps used for adaptation, per task ``[T]``.
    seconds: wall time of the adaptation (cumulative up to this budget), for all T tasks.
    """

    policy: Policy
    samples: np.ndarray
    seconds: float


class MetaAlgorithm:
    """Base class of every method (see the module docstring)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = BaseConfig
    default_budgets: tuple[int, ...] = (0, 1, 2, 3)
    """The budgets `adaptrl eval` uses when ``--steps`` is not given (a method may make it a
    property of its config)."""
    budget_unit: ClassVar[str] = "adaptation steps"
    """What a budget counts, for reports (each step uses ``fast_batch`` episodes per task)."""
    phases: ClassVar[tuple[str, ...]] = ()
    """The phases (besides ``sample``) the method marks with `phase`; each gets a
    ``time/<phase>_s`` column in every row, 0 in iterations without it."""
    discrete_actions: ClassVar[tuple[bool, ...]] = (False,)
    discrete_hint: ClassVar[str] = ""
    """Which kinds of action spaces the method handles (False: continuous boxes, True: one of
    ``act_dim`` discrete actions); others are refused when the method is built."""

    def __init__(self, family: TaskFamily, config: BaseConfig, sampler: Sampler | None = None):
        if family.discrete_actions not in self.discrete_actions:
            kind = "discrete" if family.discrete_actions else "continuous"
            raise AdaptrlError(f"{self.name or type(self).__name__} does not handle {kind} "
                               f"actions, and '{family.name}' has them"
                               + (self.discrete_hint if family.discrete_actions else ""))
        self.family = family
        self.config = config
        self.iteration = 0  # set by the runner
        self.sampler = sampler if sampler is not None else LocalSampler(family)
        self.clock = PhaseClock()  # read by the runner

    @property
    def horizon(self) -> int:
        return self.config.horizon or self.family.horizon

    def phase(self, name: str):
        """``with self.phase(name):`` charges the block's wall time to ``time/<name>_s``."""
        return self.clock.phase(name)

    def rollout(self, policy: Policy, tasks, rng: np.random.Generator,
                episodes: int | None = None, trial_episodes: int = 1) -> Episodes:
        """``episodes`` (default ``fast_batch``) trials of ``trial_episodes`` episodes per task
        of ``tasks [T, k]`` at the method's horizon, through the method's sampler (the phase
        ``sample``)."""
        with self.phase("sample"):
            return self.sampler.sample(policy, tasks, rng, episodes or self.config.fast_batch,
                                       horizon=self.horizon, trial_episodes=trial_episodes)

    def train_step(self, rng: np.random.Generator) -> dict[str, float]:
        raise NotImplementedError

    def adapt(self, tasks: np.ndarray, budgets: list[int], rng: np.random.Generator
              ) -> list[Adapted]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


def sorted_budgets(budgets) -> tuple[list[int], list[int]]:
    """``(requested, increasing)``: the budgets as asked (results go back in this order) and
    the distinct budgets in increasing order (methods adapt incrementally through them)."""
    requested = [int(b) for b in budgets]
    increasing = sorted(set(requested))
    if increasing and increasing[0] < 0:
        raise ValueError(f"adaptation budgets must be ≥ 0, got {increasing}")
    return requested, increasing
