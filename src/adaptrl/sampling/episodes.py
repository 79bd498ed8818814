"""The `Episodes` container ``[T, N, H, …]``, returns, GAE and the linear feature baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Episodes:
    """Episodes of T tasks × N episodes × H steps.

    obs, next_obs: ``[T, N, H, obs_dim]``; actions: ``[T, N, H, act_dim]``;
    rewards: ``[T, N, H]`` (0 after an episode ended); mask: ``[T, N, H]`` float, 1 where the
    step happened; terminated: ``[T, N, H]`` bool, True on the step that ended an episode by the
    family's rule (not by the horizon); tasks: ``[T, k]`` the tasks' ψ (float64).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    mask: torch.Tensor
    terminated: torch.Tensor
    tasks: np.ndarray

    @property
    def num_tasks(self) -> int:
        return self.obs.shape[0]

    @property
    def num_episodes(self) -> int:
        return self.obs.shape[1]

    @property
    def horizon(self) -> int:
        return self.obs.shape[2]

    @property
    def num_steps(self) -> int:
        """Environment steps actually taken (masked steps excluded)."""
        return int(self.mask.sum().item())

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, ``[T, N]``."""
        return (self.rewards * self.mask).sum(-1)

    def discounted_returns(self, gamma: float) -> torch.Tensor:
        """Reward-to-go Σ_{l≥0} γ^l r_{t+l} within each episode, ``[T, N, H]``."""
        rewards = self.rewards * self.mask
        out = torch.zeros_like(rewards)
        running = torch.zeros_like(rewards[..., 0])
        for t in range(self.horizon - 1, -1, -1):
            running = rewards[..., t] + gamma * running
            out[..., t] = running
        return out * self.mask

    def gae(self, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
        """Generalized advantage estimates ``[T, N, H]`` (Schulman et al. 2016).

        δ_t = r_t + γ V(s_{t+1}) − V(s_t) with V(s_{t+1}) = 0 after the last step of an episode
        (termination or horizon: no bootstrapping, as in MAML's sampler);
        A_t = Σ_l (γλ)^l δ_{t+l}. ``values``: ``[T, N, H]``.
        """
        if values.shape != self.rewards.shape:
            raise ValueError(f"values must have shape {tuple(self.rewards.shape)}, "
                             f"got {tuple(values.shape)}")
        values = values * self.mask
        next_values = torch.zeros_like(values)
        next_values[..., :-1] = values[..., 1:]  # masked (0) after the episode ended
        deltas = (self.rewards + gamma * next_values - values) * self.mask
        adv = torch.zeros_like(deltas)
        running = torch.zeros_like(deltas[..., 0])
        for t in range(self.horizon - 1, -1, -1):
            running = deltas[..., t] + gamma * lam * running
            adv[..., t] = running
        return adv * self.mask

    def task(self, i: int) -> "Episodes":
        """The episodes of task ``i`` as a one-task container."""
        return self.select([i])

    def select(self, tasks) -> "Episodes":
        index = torch.as_tensor(tasks, dtype=torch.long)
        return Episodes(self.obs[index], self.actions[index], self.rewards[index],
                        self.next_obs[index], self.mask[index], self.terminated[index],
                        self.tasks[np.asarray(tasks)])


class LinearFeatureBaseline:
    """Per-task linear value baseline (Duan et al. 2016, as in MAML).

    Features of step t: [clip(s, ±10), clip(s, ±10)², t/100, (t/100)², (t/100)³, 1]. One
    ridge regression per task on the discounted returns, solved for all tasks in one batched
    call; the ridge coefficient grows ×10 until the solution is finite.
    """

    def __init__(self, reg_coeff: float = 1e-5):
        self.reg_coeff = reg_coeff
        self.coeffs: torch.Tensor | None = None  # [T, F]

    @staticmethod
    def features(obs: torch.Tensor) -> torch.Tensor:
        """``obs [T, N, H, d]`` → ``[T, N, H, 2d + 4]`` (float64)."""
        o = obs.to(torch.float64).clamp(-10, 10)
        H = obs.shape[-2]
        t = (torch.arange(H, dtype=torch.float64) / 100.0).reshape(
            *([1] * (obs.dim() - 2)), H, 1).expand(*obs.shape[:-1], 1)
        return torch.cat([o, o**2, t, t**2, t**3, torch.ones_like(t)], dim=-1)

    def fit(self, episodes: Episodes, gamma: float = 0.99) -> "LinearFeatureBaseline":
        feats = self.features(episodes.obs)  # [T, N, H, F]
        T, F = feats.shape[0], feats.shape[-1]
        mask = episodes.mask.to(torch.float64).reshape(T, -1, 1)
        X = feats.reshape(T, -1, F) * mask
        y = episodes.discounted_returns(gamma).to(torch.float64).reshape(T, -1, 1) * mask
        XtX = X.transpose(1, 2) @ X
        Xty = X.transpose(1, 2) @ y
        eye = torch.eye(F, dtype=torch.float64)
        reg = self.reg_coeff
        for _ in range(6):
            coeffs = torch.linalg.solve(XtX + reg * eye, Xty)
            if torch.isfinite(coeffs).all():
                break
            reg *= 10
        else:
            raise FloatingPointError("linear baseline: the regression has no finite solution")
        self.coeffs = coeffs.squeeze(-1)
        return self

    def predict(self, episodes: Episodes) -> torch.Tensor:
        """Values ``[T, N, H]`` (float32, 0 on masked steps)."""
        if self.coeffs is None:
            return torch.zeros_like(episodes.rewards)
        feats = self.features(episodes.obs)
        values = torch.einsum("tnhf,tf->tnh", feats, self.coeffs)
        return (values * episodes.mask).to(episodes.rewards.dtype)

    def state_dict(self) -> dict:
        return {"reg_coeff": self.reg_coeff, "coeffs": self.coeffs}

    def load_state_dict(self, state: dict) -> None:
        self.reg_coeff = state["reg_coeff"]
        self.coeffs = state["coeffs"]
