"""FLAP (Fast Linearized Adaptive Policy): shared policy layers, a linear output layer per task,
and an adapter network that predicts that layer from transitions, so adaptation needs no
gradient step.

* Policy (`adaptrl.nets.sac_nets.LinearHeadActor`): [μ, log σ] = W_i [φ(s); 1], a = tanh(u),
  u ~ N(μ, σ²). Meta-training learns the shared layers φ together with one head W_i per
  training task by SAC, on all training tasks' data.
* Critics: twin Q-networks on [s, one-hot(i), a], i.e. task-conditioned by the training task's
  index (equivalently a per-task bias in the first layer). The critics are only a training
  device: the meta-test policy never uses them, so they may know which training task they
  score. (FLAP allows a shared critic with a task head instead; the one-hot is simpler and
  trains all tasks in one batched call.)
* Adapter (`adaptrl.nets.context.AdapterNet`): every transition (s, a, r, s') predicts a head;
  a context's prediction is the mean over its transitions (FLAP's rule; ``adapter_decoder``
  adds layers after the averaging, see `AdapterNet`). It is trained alongside SAC by
  supervised regression: for a meta-batch of training tasks, the prediction from
  ``adapter_batch`` of the task's stored transitions should equal the task's current head
  W_i. Targets are standardised per weight over the training tasks (and detached), so the
  loss weighs what tells tasks apart; ``adapter/r2`` logs the share of the heads' variation
  across tasks that the adapter explains.
* Adapter training data (``adapter_data``): by default contexts collected the way meta-test
  collects them — ``context_rounds`` rounds per collecting task, the first with the mean head,
  later ones with predicted heads — kept in a context buffer that each collection replaces.
  Training on the tasks' own replay data (``replay``, the paper's description) lets the
  adapter read a head off the behaviour that head produced; on 2-D navigation that reached a
  training R² of 0.7 yet adapted no better than the mean head (see `collect_contexts`).
* Meta-test `adapt`: budget 0 acts with the mean of the training heads; after each round of
  context episodes (collected with the current head), the head is the adapter's prediction
  from the transitions so far (the first ``adapt_transitions`` of them when that is set).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..nets.context import AdapterNet
from ..nets.sac_nets import HeadRollout, LinearHeadActor
from ..sampling import Policy, ReplayBuffer
from .base import option
from .offpolicy import OffPolicyConfig, OffPolicyMethod


@dataclass
class FLAPConfig(OffPolicyConfig):
    collect_episodes: int = option(5, "episodes per collecting task and iteration, each task "
                                      "acting with its own head", ge=1, le=10**6)
    adapter_hidden: list = option([256, 256], "hidden widths of the adapter's per-transition "
                                  "network", item_ge=1, nonempty=True)
    adapter_decoder: list[int] = option([], "hidden widths of the adapter's decoder after "
                                        "averaging (empty: the mean of per-transition "
                                        "predictions, FLAP's rule)", item_ge=1)
    adapter_lr: float = option(3e-4, "Adam learning rate of the adapter", gt=0, le=1)
    adapter_batch: int = option(64, "transitions per task whose mean prediction is regressed "
                                    "onto the task's head in each adapter step", ge=1, le=10**6)
    adapt_transitions: int = option(0, "meta-test: predict the head from only the first k "
                                       "context transitions (0: all of them)", ge=0, le=10**10)
    adapter_data: Literal["explore", "replay"] = option(
        "explore", "adapter training contexts: 'explore' = episodes collected the way meta-test "
        "collects them (context_rounds rounds: the mean head, then predicted heads); 'replay' = "
        "the task's own replay data (collected by its own head)")
    context_rounds: int = option(1, "explore: context rounds (fast_batch episodes each) per "
                                    "collecting task and iteration", ge=1, le=10**4)
    context_capacity: int = option(10_000, "explore: transitions kept per task for contexts",
                                   ge=1, le=10**10)


class FLAP(OffPolicyMethod):
    name = "flap"
    Config = FLAPConfig

    def __init__(self, family, config: FLAPConfig, sampler=None):
        super().__init__(family, config, sampler)
        cfg = config
        M = cfg.num_train_tasks
        self.actor = LinearHeadActor(self.obs_dim, self.act_dim, M, cfg.hidden_sizes,
                                     cfg.activation)
        self.sac = self.build_sac(self.obs_dim + M, actor=self.actor)
        self.adapter = AdapterNet(self.context_dim, self.actor.head_shape, cfg.adapter_hidden,
                                  cfg.activation, cfg.adapter_decoder)
        self.adapter_optim = torch.optim.Adam(self.adapter.parameters(), lr=cfg.adapter_lr)
        self._eye = torch.eye(M)
        self.context_buffer = (ReplayBuffer(M, cfg.context_capacity, self.obs_dim, self.act_dim)
                               if cfg.adapter_data == "explore" else None)

    # ── acting ──
    def head_actor(self, heads: torch.Tensor, deterministic: bool) -> Policy:
        """[-1, 1] policy with one head per task, ``heads [T, 2·act_dim, F + 1]``."""
        return HeadRollout(self.actor, heads, deterministic)

    def _own_head_actor_for(self, rows):
        return self.head_actor(self.actor.heads.detach()[rows], deterministic=False)

    def with_task(self, x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Append the one-hot training-task index to ``x [K, B, dim]``."""
        one_hot = self._eye[torch.as_tensor(rows)][:, None].expand(-1, x.shape[1], -1)
        return torch.cat([x, one_hot], -1)

    # ── one meta-iteration ──
    def train_step(self, rng):
        cfg = self.config
        self.ensure_initial_data(self._own_head_actor_for, rng)
        if self.context_buffer is not None:
            empty = np.flatnonzero(self.context_buffer.size == 0)
            for chunk in np.array_split(empty, max(1, int(np.ceil(empty.size / 20)))):
                if chunk.size:
                    self.collect_contexts(chunk, rng)
        rows = np.sort(rng.choice(cfg.num_train_tasks, cfg.tasks_per_iteration, replace=False))
        batch = self.collect(self.train_tasks[rows], cfg.collect_episodes,
                             self._own_head_actor_for(rows), rng)
        self.store(batch, rows)
        if self.context_buffer is not None:
            self.collect_contexts(rows, rng)

        totals: dict[str, float] = {}
        for _ in range(cfg.updates_per_iteration):
            for k, v in self.update(rng).items():
                totals[k] = totals.get(k, 0.0) + v
        out = {k: v / max(cfg.updates_per_iteration, 1) for k, v in totals.items()}
        out["return"] = float(batch.episode_returns().mean())
        out["env_steps"] = float(self.env_steps)
        return out

    def collect_contexts(self, rows: np.ndarray, rng) -> None:
        """Collect adapter training contexts for training tasks ``rows`` exactly as meta-test
        collects them (`context_rounds`), replacing those tasks' stored contexts (contexts
        follow the current mean head and adapter); the episodes also go to the replay buffer.

        Why not the replay data: a task's own head drives its replay episodes, so there the
        adapter can read the head off the behaviour (the states and actions) instead of off
        the rewards, and that shortcut fails at meta-test, where the mean head acts."""
        self.context_buffer.clear(rows)
        for batch in self.context_rounds(self.train_tasks[rows], self.config.context_rounds, rng):
            self.store(batch, rows)
            self.context_buffer.add_episodes(batch, tasks=rows)

    def update(self, rng) -> dict[str, float]:
        """One SAC step on a meta-batch of training tasks (shared layers, their heads, the
        critics, α), then one adapter regression step on the same tasks."""
        cfg = self.config
        rows = rng.choice(cfg.num_train_tasks, cfg.meta_batch, replace=False)
        # with replay-trained adapters, the adapter's context is a prefix of the same draw
        drawn = cfg.batch_size if self.context_buffer is not None else max(cfg.batch_size,
                                                                          cfg.adapter_batch)
        raw = self.replay.sample(drawn, rng, rows)
        batch = self.sac_batch({k: v[:, :cfg.batch_size] for k, v in raw.items()})
        batch["obs"] = self.with_task(batch["obs"], rows)
        batch["next_obs"] = self.with_task(batch["next_obs"], rows)
        metrics = self.sac.update(batch)

        # ── adapter: context of each task → its head (regression on detached targets) ──
        if self.context_buffer is not None:
            context = self.context_batch(self.context_buffer.sample(cfg.adapter_batch, rng, rows))
        else:
            context = self.context_batch({k: v[:, :cfg.adapter_batch] for k, v in raw.items()})
        loss, r2 = self.adapter_loss(context, torch.as_tensor(rows))
        self.adapter_optim.zero_grad(set_to_none=True)
        loss.backward()
        self.adapter_optim.step()
        metrics["loss/adapter"] = loss.item()
        metrics["adapter/r2"] = r2
        return metrics

    def head_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation over the training tasks' heads, per weight (cached
        until the heads change: the optimizer's in-place step bumps their version)."""
        heads = self.actor.heads
        key = (id(heads), heads._version)
        if getattr(self, "_head_stats_key", None) != key:
            detached = heads.detach()
            self._head_stats = (detached.mean(0), detached.std(0, unbiased=False))
            self._head_stats_key = key
        return self._head_stats

    def predict_heads(self, context: torch.Tensor, mask: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Heads ``[T, 2·act_dim, F + 1]`` from contexts: the adapter predicts standardised
        heads (per weight, over the training tasks), which are mapped back here."""
        mean, std = self.head_statistics()
        return mean + std * self.adapter(context, mask)

    def adapter_loss(self, context: torch.Tensor, rows: torch.Tensor):
        """Mean squared error between the adapter's standardised prediction and the
        standardised heads of training tasks ``rows`` (targets detached), and the R² of the
        heads: 1 − error / variance across tasks (1: perfect; 0: no better than the mean head).

        Standardising makes the regression weigh what distinguishes the tasks rather than the
        part of the head that all tasks share."""
        mean, std = self.head_statistics()
        target = (self.actor.heads.detach()[rows] - mean) / std.clamp_min(1e-6)
        error = (self.adapter(context) - target) ** 2
        with torch.no_grad():
            spread = std.pow(2).sum().clamp_min(1e-12)
            r2 = 1.0 - float((error.detach() * std.pow(2)).sum(dim=(1, 2)).mean() / spread)
        return error.mean(), r2

    # ── meta-test ──
    def read_context(self, context, mask):
        T = context.shape[0]
        if context.shape[1] == 0 or float(mask.sum()) == 0:
            return self.actor.heads.detach().mean(0).expand(T, -1, -1)
        k = self.config.adapt_transitions
        if k:  # the first k valid transitions of each task
            mask = mask * (mask.cumsum(1) <= k).to(mask.dtype)
        return self.predict_heads(context, mask)

    def context_actor(self, belief, final: bool):
        return self.head_actor(belief, deterministic=self.config.eval_deterministic)

    # ── checkpoints ──
    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(adapter=self.adapter.state_dict(),
                     adapter_optim=self.adapter_optim.state_dict(),
                     context_buffer=(self.context_buffer.state_dict()
                                     if self.context_buffer is not None
                                     and self.config.checkpoint_replay else None))
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.adapter.load_state_dict(state["adapter"])
        self.adapter_optim.load_state_dict(copy.deepcopy(state["adapter_optim"]))
        if self.context_buffer is not None:
            if state.get("context_buffer") is not None:
                self.context_buffer.load_state_dict(state["context_buffer"])
            else:
                self.context_buffer.clear()
