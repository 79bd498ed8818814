"""The method protocol that the runner, the evaluation protocol, checkpoints and the CLI share.

Every method is a `MetaAlgorithm` subclass with a typed `Config` dataclass and four entry points:

* ``train_step(rng) -> dict[str, float]``: one meta-iteration; the metrics to log.
* ``adapt(tasks, budgets, rng) -> list[Adapted]``: meta-test adaptation of T tasks at once, one
  `Adapted` per budget (for gradient methods a budget is a number of adaptation steps, each
  using ``config.fast_batch`` episodes per task); methods adapt incrementally, so the budgets
  0,1,2,3 cost three steps, not six.
* ``state_dict()`` / ``load_state_dict(state)``: everything needed to resume exactly (networks,
  optimizer states, baselines, counters) as tensors and plain Python values, no NumPy arrays
  (checkpoints open with ``torch.load(weights_only=True)``, `adaptrl.checkpoint`). The runner
  saves its own RNG state beside it.

Optionally, ``adapt_from(episodes, rng) -> Adapted`` adapts to the tasks of episodes the caller
recorded (the Python API's ``method.adapt(episodes=...)``); by default a method refuses.

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
import torch

from ..errors import AdaptrlError
from ..options import Activation, check_ranges, option
from ..resources import episode_bytes, mlp_parameters
from ..sampling import Episodes, LocalSampler, Policy, Sampler
from ..tasks import TaskFamily
from ..timing import PhaseClock


@dataclass
class BaseConfig:
    """Fields every method has. Subclasses add their own (flat, typed, each with help)."""

    unused_fields: ClassVar[dict[str, str]] = {}
    """Inherited fields this method ignores, with the reason: ``--set`` and presets that set
    one are refused (`adaptrl.config`), so a setting never silently does nothing."""

    iterations: int = option(100, "meta-training iterations", ge=1, le=10**8)
    checkpoint_every: int = option(10, "write a checkpoint every k iterations (and at the end)",
                                   ge=1, le=10**8)
    keep_checkpoints: int = option(3, "numbered checkpoints kept in checkpoints/ (the newest; "
                                      "0 keeps every one)", ge=0, le=10**8)
    max_refusals: int = option(5, "stop the run after this many consecutive iterations refused "
                               "for a NaN or infinity (in sampled data or an update)", ge=1,
                               le=10**6)
    meta_batch: int = option(20, "tasks per meta-iteration", ge=1, le=10**6)
    fast_batch: int = option(20, "episodes per task for each adaptation step", ge=1, le=10**6)
    horizon: int = option(0, "episode length; 0 means the family's horizon", ge=0, le=10**7)
    hidden_sizes: list = option([100, 100], "policy hidden layer widths", item_ge=1,
                                nonempty=True)
    activation: Activation = option("relu", "policy activation: relu, tanh or elu")
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

    needs_reward_function: ClassVar[bool] = False
    """The method evaluates the family's reward r_ψ(s, a, s') itself (model-based methods);
    families whose simulator computes the reward (Meta-World) are refused."""

    def __init__(self, family: TaskFamily, config: BaseConfig, sampler: Sampler | None = None):
        self.check_family(family)
        self.family = family
        self.config = config
        self.iteration = 0  # set by the runner
        self.sampler = sampler if sampler is not None else LocalSampler(family)
        self.clock = PhaseClock()  # read by the runner

    @classmethod
    def check_family(cls, family: TaskFamily) -> None:
        """An `AdaptrlError` (one line) if the method cannot run on ``family``: its kind of
        actions, or a reward the method cannot evaluate."""
        name = cls.name or cls.__name__
        if family.discrete_actions not in cls.discrete_actions:
            kind = "discrete" if family.discrete_actions else "continuous"
            raise AdaptrlError(f"{name} does not handle {kind} actions, and '{family.name}' "
                               "has them" + (cls.discrete_hint if family.discrete_actions else ""))
        if cls.needs_reward_function and not family.reward_differentiable:
            raise AdaptrlError(f"{name} is model-based: it needs the task's reward r_ψ(s, a, s') "
                               f"as a function, and '{family.name}' computes its reward inside "
                               "its simulator (Meta-World); use maml, fomaml, reptile, pearl, "
                               "flap or rl2")

    @property
    def horizon(self) -> int:
        return self.config.horizon or self.family.horizon

    @classmethod
    def memory_estimate(cls, config, family: TaskFamily) -> dict[str, int]:
        """Lower bounds of the memory a run needs, ``{what: bytes}``, checked against the
        machine before a run folder is created (`adaptrl.resources`). Default: one batch of
        ``meta_batch × fast_batch`` episodes, and the policy for every task of a batch with its
        gradients and optimizer state; methods with buffers add theirs."""
        T, N = config.meta_batch, config.fast_batch
        H = config.horizon or family.horizon
        weights = mlp_parameters(family.obs_dim, config.hidden_sizes, 2 * family.act_dim)
        return {
            f"a batch of meta_batch × fast_batch × horizon = {T}×{N}×{H} steps":
                episode_bytes(T, N, H, family.obs_dim, family.act_dim),
            f"the policy (hidden_sizes {list(config.hidden_sizes)}) for {T} tasks":
                4 * weights * (T + 3)}

    def phase(self, name: str):
        """``with self.phase(name):`` charges the block's wall time to ``time/<name>_s``."""
        return self.clock.phase(name)

    def rollout(self, policy: Policy, tasks, rng: np.random.Generator,
                episodes: int | None = None, trial_episodes: int = 1) -> Episodes:
        """``episodes`` (default ``fast_batch``) trials of ``trial_episodes`` episodes per task
        of ``tasks [T, k]`` at the method's horizon, through the method's sampler (the phase
        ``sample``)."""
        with self.phase("sample"):
            batch = self.sampler.sample(policy, tasks, rng, episodes or self.config.fast_batch,
                                        horizon=self.horizon, trial_episodes=trial_episodes)
        return batch.check_finite("sampled episodes")  # NaN/inf enter no method's data

    def trainables(self) -> dict[str, object]:
        """What an iteration's updates change in place, by name: networks (``nn.Module``),
        optimizers and loose tensors (a learned log α). The runner snapshots them before each
        iteration and restores them when it refuses one (`adaptrl.optim.TrainableSnapshot`),
        so none ever keeps a NaN or infinity. Default: the method's attributes of those kinds,
        and those of attributes that have their own ``trainables()`` (a SAC learner), under
        ``name.inner``."""
        found: dict[str, object] = {}
        for name, value in vars(self).items():
            if isinstance(value, (torch.nn.Module, torch.optim.Optimizer, torch.Tensor)):
                found[name] = value
            elif callable(getattr(value, "trainables", None)):
                found.update({f"{name}.{k}": v for k, v in value.trainables().items()})
        return found

    def train_step(self, rng: np.random.Generator) -> dict[str, float]:
        raise NotImplementedError

    def adapt(self, tasks: np.ndarray, budgets: list[int], rng: np.random.Generator
              ) -> list[Adapted]:
        raise NotImplementedError

    def adapt_from(self, episodes: Episodes, rng: np.random.Generator) -> Adapted:
        """Adapt to the T tasks of ``episodes [T, N, L]``, transitions the caller recorded (in
        the environment's action units), without sampling. ``episodes.tasks`` holds ψ, or NaN
        where it is unknown. Methods that adapt only from episodes they collect refuse."""
        raise AdaptrlError(f"{self.name} adapts only from episodes it collects itself: call "
                           f"adapt() with a budget instead of passing recorded episodes")

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
