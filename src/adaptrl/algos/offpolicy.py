"""Shared machinery of the off-policy context methods (PEARL, FLAP) on the SAC core.

Both meta-train on a fixed set of ``num_train_tasks`` training tasks drawn from the family's
``train`` split when the method is built, each with its own replay buffer row, and both adapt
at meta-test time without a gradient step: they collect context episodes, read the task from
the transitions (PEARL: a posterior over z; FLAP: predicted output-layer weights) and act.

Budgets (the evaluation protocol's ``steps``): budget n means n adaptation rounds of
``fast_batch`` episodes per task (default one episode per round), the same unit the gradient
methods use (a round is one REINFORCE step there). Budget 0 acts without any context.

Actions: SAC acts in [-1, 1]; `env_action` maps to the environment's bounds. Replay buffers and
contexts hold the [-1, 1] actions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import numpy as np
import torch

from ..envs import action_bounds
from ..nets.context import context_size, transition_features
from ..optim.sac import SAC, SACConfig
from ..resources import episode_bytes, mlp_parameters, transition_bytes
from ..sampling import Episodes, Policy, ReplayBuffer, ScaleActions
from .base import Adapted, BaseConfig, MetaAlgorithm, option, sorted_budgets


@dataclass
class OffPolicyConfig(BaseConfig, SACConfig):
    """Settings shared by PEARL and FLAP: meta-training on a fixed task set, SAC's own fields
    (gamma, tau, learning rates, batch_size, hidden_sizes, entropy), and data collection."""

    unused_fields: ClassVar[dict[str, str]] = {
        "gae_lambda": "SAC's critics bootstrap one step; there is no GAE"}

    iterations: int = option(200, "meta-training iterations (each: collect, then update)")
    meta_batch: int = option(16, "training tasks in each gradient step")
    fast_batch: int = option(1, "episodes per task in each meta-test adaptation round")
    hidden_sizes: list = option([256, 256], "hidden widths of the actor and the critics")
    # every training task needs data before the first update samples it
    num_train_tasks: int = option(100, "training tasks, drawn once from the family's train split",
                                  ge=1, le=10**6)
    initial_episodes: int = option(10, "episodes per training task collected before training",
                                   ge=1, le=10**6)
    tasks_per_iteration: int = option(5, "training tasks that collect new data each iteration",
                                      ge=1, le=10**6)
    updates_per_iteration: int = option(2000, "gradient steps per iteration", ge=0, le=10**7)
    replay_capacity: int = option(100_000, "transitions kept per training task", ge=1, le=10**10)
    reward_scale: float = option(5.0, "rewards are multiplied by this in the SAC losses",
                                 gt=0, le=1e6)
    use_next_obs_in_context: bool = option(True, "transitions in a context include s'")
    eval_deterministic: bool = option(True, "act with the policy's mean action at meta-test")
    checkpoint_replay: bool = option(
        True, "store the replay buffers in checkpoints (exact resume); without them a resumed "
        "run refills the buffers with fresh initial episodes")

    def validate(self) -> None:
        # the ranges of both bases' fields, once (a field both declare, such as gamma, has
        # BaseConfig's declaration: it comes first in the MRO)
        BaseConfig.validate(self)
        if self.meta_batch > self.num_train_tasks:
            raise ValueError(f"meta_batch ({self.meta_batch}) cannot exceed num_train_tasks "
                             f"({self.num_train_tasks})")
        if self.tasks_per_iteration > self.num_train_tasks:
            raise ValueError(f"tasks_per_iteration ({self.tasks_per_iteration}) cannot exceed "
                             f"num_train_tasks ({self.num_train_tasks})")

    def sac_config(self) -> SACConfig:
        """The `SACConfig` part of this config."""
        return SACConfig(**{f.name: getattr(self, f.name) for f in fields(SACConfig)})


class OffPolicyMethod(MetaAlgorithm):
    """Training tasks, replay buffers, samplers, action scaling, checkpoints and the meta-test
    loop shared by PEARL and FLAP. Subclasses build ``self.sac`` and implement `train_step`,
    `read_context` and `context_actor`."""

    Config = OffPolicyConfig
    budget_unit = "context rounds"

    @classmethod
    def memory_estimate(cls, config, family) -> dict[str, int]:
        """The replay and context buffers (preallocated), a collection's episodes, and the
        actor and twin critics with their targets and optimizer states."""
        M, od, ad = config.num_train_tasks, family.obs_dim, family.act_dim
        H = config.horizon or family.horizon
        parts = {
            f"the replay buffers (num_train_tasks × replay_capacity = {M}×"
            f"{config.replay_capacity} transitions)":
                transition_bytes(M * config.replay_capacity, od, ad),
            f"a collection of initial_episodes × horizon = {config.initial_episodes}×{H} "
            f"steps for {M} tasks": episode_bytes(M, config.initial_episodes, H, od, ad),
            f"the actor and critics (hidden_sizes {list(config.hidden_sizes)})":
                4 * 4 * (mlp_parameters(od, config.hidden_sizes, 2 * ad)
                         + 4 * mlp_parameters(od + ad, config.hidden_sizes, 1))}
        context = getattr(config, "context_capacity", 0)
        if context:
            parts[f"the context buffers (num_train_tasks × context_capacity = {M}×{context} "
                  f"transitions)"] = transition_bytes(M * context, od, ad)
        return parts

    def __init__(self, family, config: OffPolicyConfig, sampler=None):
        super().__init__(family, config, sampler)
        # the training tasks come from torch's global RNG, which the runner seeds
        task_seed = int(torch.randint(0, 2**62, (1,)).item())
        self.train_tasks = family.split("train", config.num_train_tasks,
                                        np.random.default_rng(task_seed))
        self.obs_dim, self.act_dim = family.obs_dim, family.act_dim
        self.replay = ReplayBuffer(config.num_train_tasks, config.replay_capacity,
                                   self.obs_dim, self.act_dim)
        low, high = action_bounds(family)
        self._act_low = torch.as_tensor(low, dtype=torch.float32)
        self._act_high = torch.as_tensor(high, dtype=torch.float32)
        self.sac: SAC  # built by the subclass with `build_sac`
        self.env_steps = 0  # environment steps collected for meta-training (all tasks)

    def build_sac(self, obs_dim: int, actor=None) -> SAC:
        """The SAC learner for observations of ``obs_dim`` numbers (conditioning included);
        its noise generator is seeded from torch's global RNG, like the networks."""
        return SAC(obs_dim, self.act_dim, self.config.sac_config(),
                   seed=int(torch.randint(0, 2**62, (1,)).item()), actor=actor)

    # ── actions ──
    def env_action(self, unit_action: torch.Tensor) -> torch.Tensor:
        """[-1, 1] → the environment's action box."""
        return self._act_low + (unit_action + 1.0) * 0.5 * (self._act_high - self._act_low)

    def unit_action(self, env_action: torch.Tensor) -> torch.Tensor:
        """The environment's action box → [-1, 1] (inverse of `env_action`)."""
        return (env_action - self._act_low) * 2.0 / (self._act_high - self._act_low) - 1.0

    def env_policy(self, unit_policy: Policy) -> ScaleActions:
        """A policy acting in [-1, 1] as one acting in the environment's action box."""
        return ScaleActions(unit_policy, self._act_low, self._act_high)

    def collect(self, tasks: np.ndarray, episodes: int, unit_policy: Policy, rng) -> Episodes:
        """``episodes`` episodes of each task ``[T, k]`` with ``unit_policy`` (acting in
        [-1, 1]); the returned episodes hold [-1, 1] actions."""
        with torch.no_grad():
            batch = self.rollout(self.env_policy(unit_policy), tasks, rng, episodes)
        batch.actions = self.unit_action(batch.actions).clamp(-1.0, 1.0)
        return batch

    def store(self, batch: Episodes, rows: np.ndarray) -> None:
        """Add episodes of training tasks ``rows`` to the replay buffer (and count them as
        meta-training samples)."""
        self.replay.add_episodes(batch, tasks=rows)
        self.env_steps += int(batch.mask.sum())

    def context_of(self, episodes: list[Episodes]) -> tuple[torch.Tensor, torch.Tensor]:
        """Transitions of a list of episode batches of the same T tasks as a context
        ``[T, M, dim]`` (see `adaptrl.nets.context.transition_features`) with its mask
        ``[T, M]``; `empty_context` for no episodes."""
        feats, masks = [], []
        for batch in episodes:
            T = batch.num_tasks
            next_obs = batch.next_obs if self.config.use_next_obs_in_context else None
            feats.append(transition_features(batch.obs, batch.actions, batch.rewards,
                                             next_obs).reshape(T, -1, self.context_dim))
            masks.append(batch.mask.reshape(T, -1))
        return torch.cat(feats, 1), torch.cat(masks, 1)

    def context_batch(self, batch: dict) -> torch.Tensor:
        """Transitions sampled from a replay buffer (``[K, B, ...]`` dict) as a context."""
        next_obs = batch["next_obs"] if self.config.use_next_obs_in_context else None
        return transition_features(batch["obs"], batch["action"], batch["reward"], next_obs)

    @property
    def context_dim(self) -> int:
        return context_size(self.obs_dim, self.act_dim, self.config.use_next_obs_in_context)

    def sac_batch(self, batch: dict) -> dict:
        """A replay batch with the rewards scaled for the SAC losses."""
        return {**batch, "reward": batch["reward"] * self.config.reward_scale}

    # ── meta-test adaptation: collect context rounds, read the task, act ──
    def read_context(self, context: torch.Tensor, mask: torch.Tensor):
        """What the method infers about T tasks from ``context [T, M, dim]`` (M may be 0)."""
        raise NotImplementedError

    def context_actor(self, belief, final: bool) -> Policy:
        """A [-1, 1] policy for ``belief`` (from `read_context`); ``final`` is the policy handed
        to evaluation, otherwise the one that collects the next context round."""
        raise NotImplementedError

    def adapt(self, tasks, budgets, rng):
        tasks = self.family.check_tasks(tasks)
        requested, budgets = sorted_budgets(budgets)
        if not budgets:
            return []
        results: dict[int, Adapted] = {}
        start = time.perf_counter()

        def record(step, belief, samples):
            if step in budgets:
                results[step] = Adapted(self.env_policy(self.context_actor(belief, final=True)),
                                        samples.copy(), time.perf_counter() - start)

        self.context_rounds(tasks, budgets[-1], rng, record)
        return [results[b] for b in requested]

    def adapt_from(self, episodes, rng):
        """Read the tasks from recorded episodes, all of them one context (no gradient step)."""
        start = time.perf_counter()
        unit = replace(episodes, actions=self.unit_action(episodes.actions).clamp(-1.0, 1.0))
        with torch.no_grad():
            belief = self.read_context(*self.context_of([unit]))
        return Adapted(self.env_policy(self.context_actor(belief, final=True)),
                       episodes.mask.sum((1, 2)).numpy(), time.perf_counter() - start)

    def context_rounds(self, tasks: np.ndarray, rounds: int, rng, on_belief=None
                       ) -> list[Episodes]:
        """The meta-test procedure: ``rounds`` times, read the task from the context so far,
        then collect ``fast_batch`` episodes per task with `context_actor`. ``on_belief(step,
        belief, samples [T])`` sees every belief (step 0: before any context); returns the
        collected episode batches."""
        T = len(tasks)
        collected: list[Episodes] = []
        samples = np.zeros(T)
        for step in range(rounds + 1):
            with torch.no_grad():
                belief = self.read_context(*self.context_of(collected) if collected else
                                           self.empty_context(T))
            if on_belief is not None:
                on_belief(step, belief, samples)
            if step == rounds:
                break
            batch = self.collect(tasks, self.config.fast_batch,
                                 self.context_actor(belief, final=False), rng)
            samples += batch.mask.sum((1, 2)).numpy()
            collected.append(batch)
        return collected

    def empty_context(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(T, 0, self.context_dim), torch.zeros(T, 0)

    # ── meta-training helpers ──
    def ensure_initial_data(self, explore_policy_for, rng) -> None:
        """Collect ``initial_episodes`` for every training task whose buffer is empty (the
        first iteration, or a resume without stored buffers); ``explore_policy_for(rows)`` is
        the [-1, 1] policy for those training tasks."""
        empty = np.flatnonzero(self.replay.size == 0)
        if empty.size == 0:
            return
        for chunk in np.array_split(empty, max(1, int(np.ceil(empty.size / 20)))):
            batch = self.collect(self.train_tasks[chunk], self.config.initial_episodes,
                                 explore_policy_for(chunk), rng)
            self.store(batch, chunk)

    # ── checkpoints ──
    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "env_steps": self.env_steps,
                "train_tasks": torch.from_numpy(self.train_tasks.copy()),
                "sac": self.sac.state_dict(),
                "replay": self.replay.state_dict() if self.config.checkpoint_replay else None}

    def load_state_dict(self, state: dict) -> None:
        train_tasks = np.asarray(state["train_tasks"], dtype=np.float64)
        if train_tasks.shape != self.train_tasks.shape:
            raise ValueError(f"checkpoint holds {train_tasks.shape} training tasks; this config "
                             f"has {self.train_tasks.shape}")
        self.train_tasks = train_tasks
        self.sac.load_state_dict(state["sac"])
        if state.get("replay") is not None:
            self.replay.load_state_dict(state["replay"])
        else:
            self.replay.clear()
        self.iteration = int(state["iteration"])
        self.env_steps = int(state.get("env_steps", 0))  # absent before this counter existed
