"""Batched Reptile for RL (Nichol & Schulman 2018; Algorithm 3 of ../shared/papers/002).

One meta-iteration: sample T tasks; starting from θ, take k policy-gradient steps on each task
(fresh episodes before every step, the same REINFORCE step as MAML's inner loop, all tasks in one
batched call); then move the initialisation toward the adapted parameters,

    θ ← θ + ε · (1/T) Σ_i (θ_i − θ).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import option
from .pg import PGConfig, PolicyGradientMethod, episode_metrics


@dataclass
class ReptileConfig(PGConfig):
    unused_fields: ClassVar[dict[str, str]] = {
        **{name: "Reptile takes no TRPO step" for name in (
            "max_kl", "cg_iters", "cg_damping", "ls_backtrack_ratio", "ls_max_steps",
            "cg_subsample")},
        "inner_steps": "Reptile takes reptile_steps steps per task"}

    reptile_steps: int = option(3, "k: policy-gradient steps per task in each meta-iteration",
                                ge=1, le=1000)
    meta_lr: float = option(1.0, "ε: step toward the mean adapted parameters", gt=0, le=100)


class Reptile(PolicyGradientMethod):
    name = "reptile"
    Config = ReptileConfig

    def train_step(self, rng):
        cfg = self.config
        T = cfg.meta_batch
        tasks = self.family.sample(T, rng)
        metrics = {}

        # ── k adaptation steps per task, batched over tasks ─────────────────────────────────
        params = {k: v.detach() for k, v in self.policy.expand_params(T).items()}
        for step in range(cfg.reptile_steps):
            episodes = self.rollout(self.actor(params, tasks), tasks, rng)
            if step == 0:
                metrics.update(episode_metrics("return_pre", episodes))
            elif step == 1:  # after one adaptation step: comparable with MAML's "return"
                metrics.update(episode_metrics("return", episodes))
            params = {k: v.detach() for k, v in
                      self.inner_update(params, episodes, self.advantages(episodes)).items()}

        # ── θ ← θ + ε · mean_i(θ_i − θ) ──────────────────────────────────────────────────────
        with torch.no_grad():
            shift_sq = 0.0
            for name, theta in self.policy.named_parameters():
                shift = cfg.meta_lr * (params[name] - theta).mean(0)
                theta.add_(shift)
                shift_sq += float((shift**2).sum())
        metrics["reptile/step_norm"] = shift_sq**0.5
        metrics.setdefault("return", metrics["return_pre"])
        return metrics
