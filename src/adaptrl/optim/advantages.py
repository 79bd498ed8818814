"""Advantages and per-task means over the valid steps of `Episodes` ``[T, N, H]``.

Written once for every method that takes policy-gradient steps (MAML and its relatives, the
trained oracle, AdMRL's virtual training and its task gradient).
"""

from __future__ import annotations

import torch

from ..sampling import Episodes, LinearFeatureBaseline


def masked_task_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each task's valid steps: ``x, mask [T, N, H]`` → ``[T]``."""
    return (x * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1.0)


def step_weights(mask: torch.Tensor) -> torch.Tensor:
    """``mask [T, N, H]`` divided by each task's number of valid steps: the weights of a
    per-task mean over valid steps."""
    return mask / mask.sum((1, 2), keepdim=True).clamp_min(1.0)


def normalize_per_task(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Advantages ``[T, N, H]`` centred and scaled over each task's valid steps (0 elsewhere)."""
    mean = masked_task_mean(adv, mask)[:, None, None]
    var = masked_task_mean((adv - mean) ** 2, mask)[:, None, None]
    return (adv - mean) / (var.sqrt() + 1e-8) * mask


def estimate_advantages(episodes: Episodes, gamma: float, gae_lambda: float,
                        normalize: bool = True) -> torch.Tensor:
    """GAE ``[T, N, H]`` with a per-task linear feature baseline fitted on these episodes
    (refitted on every batch: the baseline carries no state), optionally normalised per task.

    Not detached: the result is differentiable in the rewards (AdMRL's ∂/∂ψ); callers that
    treat advantages as constants detach them.
    """
    baseline = LinearFeatureBaseline().fit(episodes, gamma)
    adv = episodes.gae(baseline.predict(episodes), gamma, gae_lambda)
    return normalize_per_task(adv, episodes.mask) if normalize else adv
