"""Baselines evaluated with the same protocol as the meta-learners.

* ``random``: a randomly initialised policy, adapted at test time by the same REINFORCE steps.
* ``pretrain``: multi-task pretraining — one policy trained by TRPO on episodes of all training
  tasks (no inner loop), then fine-tuned at test time with the same inner steps as MAML.
* ``oracle``: a task-conditioned policy (ψ appended to the observation) trained by TRPO on all
  training tasks; it needs no adaptation, so every budget evaluates the same policy.
"""

from __future__ import annotations

import numpy as np
import torch

from ..optim import flatten, masked_task_mean, per_task_vectors, task_fisher, trpo_step
from .base import Adapted
from .pg import PGConfig, PolicyGradientMethod, episode_metrics, trpo_metrics


class RandomInit(PolicyGradientMethod):
    """No meta-training: each iteration only measures the initial policy's return."""

    name = "random"
    Config = PGConfig

    def train_step(self, rng):
        T = self.config.meta_batch
        tasks = self.family.sample(T, rng)
        return episode_metrics("return", self.rollout(self.actor(None, tasks), tasks, rng))


class MultiTaskPretrain(PolicyGradientMethod):
    """TRPO on the pooled episodes of the sampled training tasks (Â normalised per task)."""

    name = "pretrain"
    Config = PGConfig

    def train_step(self, rng):
        cfg = self.config
        T = cfg.meta_batch
        tasks = self.family.sample(T, rng)
        episodes = self.rollout(self.actor(None, tasks), tasks, rng)
        metrics = episode_metrics("return", episodes)

        policy = self.policy
        inputs, actions, mask = self.policy_inputs(episodes), episodes.actions, episodes.mask
        advantages = self.advantages(episodes)
        old = {k: v.detach().clone() for k, v in policy.params().items()}
        with torch.no_grad():
            old_logp = policy.log_prob(inputs, actions, old)

        def surrogate():
            ratio = torch.exp(policy.log_prob(inputs, actions) - old_logp)
            return -masked_task_mean(ratio * advantages, mask).mean()

        def mean_kl():
            return masked_task_mean(policy.kl(inputs, old, policy.params()), mask).mean()

        fvp = (self.fisher_vector_product(episodes.subsample(cfg.cg_subsample))
               if self.hand_curvature else None)
        info = trpo_step(list(policy.parameters()), surrogate, mean_kl, fvp=fvp,
                         **cfg.trpo_kwargs())
        metrics.update(trpo_metrics(info))
        return metrics

    def fisher_vector_product(self, episodes):
        """v ↦ F v for the shared policy: the Hessian of the mean (over tasks) KL over each
        task's valid steps, exact in Gauss–Newton form, with θ seen as T equal per-task copies
        (the Gaussian MLP's hand-written product)."""
        policy, T = self.policy, episodes.num_tasks
        per_task = {k: v.detach() for k, v in policy.expand_params(T).items()}
        fisher = task_fisher(policy, self.policy_obs(episodes), per_task, episodes.mask)

        def fvp(v):
            products = fisher(dict(zip(per_task, per_task_vectors(v, per_task))))
            return flatten([f.sum(0) / T for f in products.values()])

        return fvp


class TaskConditionedOracle(MultiTaskPretrain):
    """Sees ψ: the policy input is [s, ψ]. Adaptation is the identity."""

    name = "oracle"
    condition_on_task = True

    def adapt(self, tasks, budgets, rng):
        tasks = self.family.check_tasks(tasks)
        if any(int(b) < 0 for b in budgets):
            raise ValueError(f"adaptation budgets must be ≥ 0, got {list(budgets)}")
        actor = self.actor(None, tasks)
        return [Adapted(actor, np.zeros(len(tasks)), 0.0) for _ in budgets]
