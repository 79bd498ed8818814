"""Baselines evaluated with the same protocol as the meta-learners.

* ``random``: a randomly initialised policy, adapted at test time by the same REINFORCE steps.
* ``pretrain``: multi-task pretraining — one policy trained by TRPO on episodes of all training
  tasks (no inner loop), then fine-tuned at test time with the same inner steps as MAML.
* ``oracle``: a task-conditioned policy (ψ appended to the observation) trained by TRPO on all
  training tasks; it needs no adaptation, so every budget evaluates the same policy.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..optim import make_hvp, trpo_step
from .base import Adapted, register_algorithm
from .pg import (PGConfig, PolicyGradientMethod, episode_metrics, masked_task_mean,
                 subsample_episodes, trpo_metrics)


@register_algorithm
class RandomInit(PolicyGradientMethod):
    """No meta-training: each iteration only measures the initial policy's return."""

    name = "random"
    Config = PGConfig

    def train_step(self, rng):
        T = self.config.meta_batch
        tasks = self.family.sample(T, rng)
        start = time.perf_counter()
        episodes = self.sampler(T).sample(self.actor(None, tasks), tasks, rng)
        metrics = episode_metrics("return", episodes)
        metrics["time/sample_s"] = time.perf_counter() - start
        metrics["time/update_s"] = 0.0
        self.iteration += 1
        return metrics


@register_algorithm
class MultiTaskPretrain(PolicyGradientMethod):
    """TRPO on the pooled episodes of the sampled training tasks (Â normalised per task)."""

    name = "pretrain"
    Config = PGConfig

    def train_step(self, rng):
        cfg = self.config
        T = cfg.meta_batch
        tasks = self.family.sample(T, rng)
        start = time.perf_counter()
        episodes = self.sampler(T).sample(self.actor(None, tasks), tasks, rng)
        sample_s = time.perf_counter() - start
        metrics = episode_metrics("return", episodes)

        policy = self.policy
        obs, actions, mask = self.policy_obs(episodes), episodes.actions, episodes.mask
        advantages = self.advantages(episodes)
        old = {k: v.detach().clone() for k, v in policy.params().items()}
        with torch.no_grad():
            old_logp = policy.log_prob(obs, actions, old)

        def surrogate():
            ratio = torch.exp(policy.log_prob(obs, actions) - old_logp)
            return -masked_task_mean(ratio * advantages, mask).mean()

        def mean_kl(episodes=episodes):
            return masked_task_mean(
                policy.kl(self.policy_obs(episodes), old, policy.params()), episodes.mask).mean()

        # the Fisher-vector product on a subsample of the episodes (cg_subsample = 1: all)
        curvature = subsample_episodes(episodes, cfg.cg_subsample)
        fvp = make_hvp(lambda: mean_kl(curvature), list(policy.parameters()))
        info = trpo_step(list(policy.parameters()), surrogate, mean_kl, max_kl=cfg.max_kl,
                         cg_iters=cfg.cg_iters, cg_damping=cfg.cg_damping,
                         backtrack_ratio=cfg.ls_backtrack_ratio, max_backtracks=cfg.ls_max_steps,
                         fvp=fvp)
        metrics.update(trpo_metrics(info))
        metrics["time/sample_s"] = sample_s
        metrics["time/update_s"] = time.perf_counter() - start - sample_s
        self.iteration += 1
        return metrics


@register_algorithm
class TaskConditionedOracle(MultiTaskPretrain):
    """Sees ψ: the policy input is [s, ψ]. Adaptation is the identity."""

    name = "oracle"
    condition_on_task = True

    def adapt(self, tasks, budgets, rng):
        tasks = self.family.check_params(tasks)
        if any(int(b) < 0 for b in budgets):
            raise ValueError(f"adaptation budgets must be ≥ 0, got {list(budgets)}")
        actor = self.actor(None, tasks)
        return [Adapted(actor, np.zeros(len(tasks)), 0.0) for _ in budgets]
