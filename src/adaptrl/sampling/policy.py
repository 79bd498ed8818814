"""The rollout contract: what a sampler drives, and how it travels to another process.

A **policy** acts for a batch of environments ``[T, N]`` (T tasks × N environments per task), one
call per time step::

    state = policy.initial_state((T, N))            # None for a memoryless policy
    actions, state = policy.step(obs, state, prev_action, prev_reward, prev_done, generator)

``obs [T, N, obs_dim]``; ``prev_action [T, N, act_dim]``, ``prev_reward [T, N]`` and
``prev_done [T, N]`` (float, 1.0 where the previous step ended an episode) describe the previous
step of the same environment and are zeros at the start of a trial; ``generator`` is the torch
generator of the rollout (all policy noise comes from it). The state is None, a tensor with
leading dims ``[T, N]``, or a tuple / list / dict of such tensors; the sampler holds it for
environments whose episode is over and carries it across the episodes of a trial.

A policy turns into a **snapshot**: the import path of its class, a plain dict of constructor
settings and a dict of tensors (and, for wrappers, the snapshots of the policies they wrap). A
snapshot pickles without dragging in an algorithm, a sampler or a buffer, and `PolicySnapshot.
build` rebuilds an equal policy in another process, which is how a remote sampler receives it.

This module knows no network class: networks implement the contract in `adaptrl.nets`, and
`build` finds their class by its import path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import torch

State = object  # None | Tensor | tuple/list/dict of Tensors with leading dims [T, N]


@dataclass(frozen=True)
class PolicySnapshot:
    """A policy as data. ``builder``: ``"module:Class"`` of a `Policy` subclass whose
    ``from_snapshot`` rebuilds it; ``spec``: plain settings (numbers, strings, lists, dicts);
    ``tensors``: detached CPU tensors; ``inner``: snapshots of wrapped policies by name."""

    builder: str
    spec: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)
    inner: dict = field(default_factory=dict)

    def build(self) -> Policy:
        """The policy this snapshot describes (imports its class by path)."""
        module_name, _, qualname = self.builder.partition(":")
        try:
            target = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError):
            raise ValueError(f"policy snapshot names '{self.builder}', which cannot be "
                             f"imported here") from None
        if not (isinstance(target, type) and issubclass(target, Policy)):
            raise ValueError(f"policy snapshot names '{self.builder}', which is not a Policy")
        return target.from_snapshot(self)


def snapshot_tensors(tensors: dict) -> dict:
    """Detached, contiguous CPU copies (views of a module's parameters must not travel with
    their module)."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class Policy:
    """Base class of everything a sampler drives (see the module docstring)."""

    uses_feedback = True
    """Whether `step` reads the previous action, reward and done flag (the sampler skips
    their bookkeeping for policies that do not)."""

    parallel_step = False
    """Whether `step` is heavy enough to run on all of the caller's torch threads (a wide GRU,
    SNAIL, an MPC planner); the sampler runs other policies, and the simulator, with torch on
    one thread."""

    def initial_state(self, num_envs) -> State:
        """The state at the start of a trial for a batch ``num_envs`` = ``(T, N)``; None for a
        memoryless policy."""
        return None

    def step(self, obs: torch.Tensor, state: State, prev_action: torch.Tensor,
             prev_reward: torch.Tensor, prev_done: torch.Tensor,
             generator: torch.Generator) -> tuple[torch.Tensor, State]:
        """Actions ``[T, N, act_dim]`` and the next state."""
        raise NotImplementedError

    def snapshot(self) -> PolicySnapshot:
        raise NotImplementedError(f"{type(self).__name__} cannot be snapshotted")

    @classmethod
    def from_snapshot(cls, snapshot: PolicySnapshot) -> Policy:
        raise NotImplementedError(f"{cls.__name__} cannot be rebuilt from a snapshot")


class MemorylessPolicy(Policy):
    """A policy whose action depends on the current observation only: subclasses implement
    ``act(obs, generator) -> actions``; `step` passes the state (None) through."""

    uses_feedback = False

    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        return self.act(obs, generator), state


class UniformPolicy(MemorylessPolicy):
    """Actions drawn uniformly from the box [low, high] (random exploration, benchmarks)."""

    def __init__(self, low, high):
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)

    def act(self, obs, generator=None):
        u = torch.rand(*obs.shape[:-1], self.low.shape[0], generator=generator)
        return self.low + u * (self.high - self.low)

    def snapshot(self):
        return PolicySnapshot(class_path(type(self)), {},
                              snapshot_tensors({"low": self.low, "high": self.high}))

    @classmethod
    def from_snapshot(cls, snapshot):
        return cls(snapshot.tensors["low"], snapshot.tensors["high"])


class PolicyWrapper(Policy):
    """A policy around another one, ``inner``: its state and use of feedback are the inner
    policy's. A memoryless inner policy is called through `act` (the wrapper's own); a
    stateful one through `wrapped_step`."""

    def __init__(self, inner: Policy):
        self.inner = inner

    @property
    def uses_feedback(self):
        return self.inner.uses_feedback

    @property
    def parallel_step(self):
        return self.inner.parallel_step

    def initial_state(self, num_envs):
        return self.inner.initial_state(num_envs)

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        if isinstance(self.inner, MemorylessPolicy):
            return self.act(obs, generator), state
        return self.wrapped_step(obs, state, prev_action, prev_reward, prev_done, generator)

    def act(self, obs, generator=None):
        raise NotImplementedError

    def wrapped_step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        raise NotImplementedError


class AppendToObservation(PolicyWrapper):
    """Wraps a policy so that it sees ``[obs, extra]``: the task ψ for a task-conditioned
    policy, PEARL's latent z. ``extra``: ``[T, d]`` (one vector per task) or ``[T, N, d]``
    (one per environment)."""

    def __init__(self, inner: Policy, extra: torch.Tensor):
        super().__init__(inner)
        self.extra = extra

    def _inputs(self, obs: torch.Tensor) -> torch.Tensor:
        extra = self.extra if self.extra.dim() == obs.dim() else self.extra[:, None]
        return torch.cat([obs, extra.expand(*obs.shape[:-1], extra.shape[-1])], dim=-1)

    def act(self, obs, generator=None):
        return self.inner.act(self._inputs(obs), generator)

    def wrapped_step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        return self.inner.step(self._inputs(obs), state, prev_action, prev_reward, prev_done,
                               generator)

    def snapshot(self):
        return PolicySnapshot(class_path(type(self)), {}, snapshot_tensors({"extra": self.extra}),
                              {"inner": self.inner.snapshot()})

    @classmethod
    def from_snapshot(cls, snapshot):
        return cls(snapshot.inner["inner"].build(), snapshot.tensors["extra"])


class ScaleActions(PolicyWrapper):
    """Wraps a policy acting in [-1, 1] so that it acts in the box [low, high]:
    a = low + (u + 1)/2 · (high − low) (the off-policy methods' tanh-squashed actors)."""

    def __init__(self, inner: Policy, low: torch.Tensor, high: torch.Tensor):
        super().__init__(inner)
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)

    def scale(self, unit_action: torch.Tensor) -> torch.Tensor:
        return self.low + (unit_action + 1.0) * 0.5 * (self.high - self.low)

    def act(self, obs, generator=None):
        with torch.no_grad():
            return self.scale(self.inner.act(obs, generator))

    def wrapped_step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        # the inner policy saw its own [-1, 1] actions: hand it those back
        unit_prev = (prev_action - self.low) * 2.0 / (self.high - self.low) - 1.0
        with torch.no_grad():
            unit, state = self.inner.step(obs, state, unit_prev, prev_reward, prev_done,
                                          generator)
            return self.scale(unit), state

    def snapshot(self):
        return PolicySnapshot(class_path(type(self)), {},
                              snapshot_tensors({"low": self.low, "high": self.high}),
                              {"inner": self.inner.snapshot()})

    @classmethod
    def from_snapshot(cls, snapshot):
        return cls(snapshot.inner["inner"].build(), snapshot.tensors["low"],
                   snapshot.tensors["high"])


class ContinueTrial(PolicyWrapper):
    """A stateful policy resumed in the middle of a trial: it starts every environment of task
    i from the state ``state[i]`` its inner policy had reached there (a tensor ``[T, ...]``, or a
    tuple / list / dict of such tensors), and
    feeds the first step the previous action, reward and done flag of the last step taken
    (``[T, act_dim]``, ``[T]``, ``[T]``) instead of a trial start's zeros. Black-box methods
    hand this out as the policy adapted by the episodes already in the trial."""

    def __init__(self, inner: Policy, state: torch.Tensor, prev_action: torch.Tensor,
                 prev_reward: torch.Tensor, prev_done: torch.Tensor):
        super().__init__(inner)
        self.state, self.prev_action = state, prev_action
        self.prev_reward, self.prev_done = prev_reward, prev_done

    @property
    def uses_feedback(self):
        return True

    def initial_state(self, num_envs):
        T, N = num_envs
        state = tree_map(lambda x: x[:, None].expand(T, N, *x.shape[1:]).clone(), self.state)
        return state, torch.zeros(T, N, dtype=torch.bool)

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        inner_state, started = state
        if not bool(started.all()):  # the first step: the feedback of the trial so far
            fresh = ~started
            prev_action = torch.where(fresh[..., None], self.prev_action[:, None], prev_action)
            prev_reward = torch.where(fresh, self.prev_reward[:, None], prev_reward)
            prev_done = torch.where(fresh, self.prev_done[:, None], prev_done)
        actions, inner_state = self.inner.step(obs, inner_state, prev_action, prev_reward,
                                               prev_done, generator)
        return actions, (inner_state, torch.ones_like(started))

    def snapshot(self):
        leaves, layout = tree_flatten(self.state)
        tensors = {"prev_action": self.prev_action, "prev_reward": self.prev_reward,
                   "prev_done": self.prev_done,
                   **{f"state.{i}": leaf for i, leaf in enumerate(leaves)}}
        return PolicySnapshot(class_path(type(self)), {"state_layout": layout},
                              snapshot_tensors(tensors), {"inner": self.inner.snapshot()})

    @classmethod
    def from_snapshot(cls, snapshot):
        t = snapshot.tensors
        layout = snapshot.spec["state_layout"]
        state = tree_unflatten([t[f"state.{i}"] for i in range(_count_leaves(layout))], layout)
        return cls(snapshot.inner["inner"].build(), state, t["prev_action"],
                   t["prev_reward"], t["prev_done"])


# ── state bookkeeping for the sampler ──────────────────────────────────────────────────────
def tree_map(fn, tree):
    """``fn`` applied to every tensor of a state (a tensor, or a tuple/list/dict of them)."""
    if tree is None:
        return None
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    return type(tree)(tree_map(fn, v) for v in tree)


def tree_flatten(tree) -> tuple[list, object]:
    """The tensors of a state in a fixed order, and a plain-data layout to rebuild it."""
    if isinstance(tree, torch.Tensor):
        return [tree], "tensor"
    if isinstance(tree, dict):
        keys = sorted(tree)
        parts = [tree_flatten(tree[k]) for k in keys]
        return [x for leaves, _ in parts for x in leaves], {"dict": [[k, lay] for k, (_, lay)
                                                                    in zip(keys, parts)]}
    parts = [tree_flatten(v) for v in tree]
    kind = "tuple" if isinstance(tree, tuple) else "list"
    return [x for leaves, _ in parts for x in leaves], {kind: [lay for _, lay in parts]}


def _count_leaves(layout) -> int:
    if layout == "tensor":
        return 1
    (kind, items), = layout.items()
    return sum(_count_leaves(lay if kind != "dict" else lay[1]) for lay in items)


def tree_unflatten(leaves: list, layout):
    """The inverse of `tree_flatten`."""
    leaves = list(leaves)

    def build(lay):
        if lay == "tensor":
            return leaves.pop(0)
        (kind, items), = lay.items()
        if kind == "dict":
            return {k: build(sub) for k, sub in items}
        built = [build(sub) for sub in items]
        return tuple(built) if kind == "tuple" else built

    return build(layout)



def check_state(state: State) -> None:
    """TypeError unless ``state`` is None, a tensor, or a tuple/list/dict of them."""
    if state is None or isinstance(state, torch.Tensor):
        return
    if isinstance(state, dict):
        state = list(state.values())
    if isinstance(state, (tuple, list)):
        for part in state:
            check_state(part)
        return
    raise TypeError(f"a policy state must be None, a tensor, or a tuple/list/dict of tensors; "
                    f"got {type(state).__name__}")


def hold_state(keep: torch.Tensor, new: State, old: State) -> State:
    """``new`` where ``keep [T, N]`` is True, ``old`` elsewhere, for every tensor of a state."""
    if new is None:
        return None
    if isinstance(new, torch.Tensor):
        mask = keep.reshape(*keep.shape, *([1] * (new.dim() - keep.dim())))
        return torch.where(mask, new, old)
    if isinstance(new, dict):
        return {k: hold_state(keep, new[k], old[k]) for k in new}
    if isinstance(new, (tuple, list)):
        return type(new)(hold_state(keep, n, o) for n, o in zip(new, old))
    raise TypeError(f"a policy state must be None, a tensor, or a tuple/list/dict of tensors; "
                    f"got {type(new).__name__}")
