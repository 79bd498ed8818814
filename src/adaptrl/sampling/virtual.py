"""Rollouts on a learned model ("virtual" samples of model-based RL) as `Episodes`.

The model and the policy are both callables (this package imports no network class), so the
same advantage and TRPO machinery as for real episodes applies. Rewards are the task family's
torch reward r_ψ(s, a, s') on the predicted transition, and the family's termination rule is
evaluated on the predicted state (the AdMRL families never terminate early).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..tasks import TaskFamily, get_family
from .episodes import Episodes
from .sampler import Actor

# (obs [T, N, obs_dim], act [T, N, act_dim], generator) -> next_obs [T, N, obs_dim]
ModelStep = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


class VirtualSampler:
    """``num_episodes`` model rollouts of ``horizon`` steps for each of ``num_tasks`` tasks.

    Start states are drawn uniformly (with replacement) from a pool of real states, as SLBO
    does. Actions are clipped to ``[action_low, action_high]`` before the model and the reward
    see them (the real environments clip the same way); `Episodes.actions` keeps the policy's
    unclipped actions, whose log-probabilities the policy gradient needs.
    """

    def __init__(self, family: TaskFamily | str, num_tasks: int, num_episodes: int, horizon: int,
                 action_low=None, action_high=None):
        self.family = get_family(family)
        if min(num_tasks, num_episodes, horizon) < 1:
            raise ValueError(f"virtual rollouts need positive sizes: tasks {num_tasks}, "
                             f"episodes {num_episodes}, horizon {horizon}")
        self.num_tasks, self.num_episodes, self.horizon = num_tasks, num_episodes, horizon
        self.action_low = None if action_low is None else torch.as_tensor(action_low,
                                                                           dtype=torch.float32)
        self.action_high = None if action_high is None else torch.as_tensor(action_high,
                                                                            dtype=torch.float32)

    @torch.no_grad()
    def sample(self, actor: Actor, model_step: ModelStep, tasks, start_obs,
               rng: np.random.Generator) -> Episodes:
        """Roll ``actor`` on ``model_step`` for the tasks ``tasks [T, k]``.

        start_obs: ``[M, obs_dim]`` real states to start from. Returns `Episodes`
        ``[T, N, H, ...]`` whose rewards are r_ψ of each task.
        """
        T, N, H = self.num_tasks, self.num_episodes, self.horizon
        tasks = self.family.check_tasks(tasks)
        if len(tasks) != T:
            raise ValueError(f"virtual sampler built for {T} tasks, got {len(tasks)}")
        start_obs = torch.as_tensor(np.asarray(start_obs), dtype=torch.float32)
        if start_obs.dim() != 2 or start_obs.shape[0] < 1:
            raise ValueError(f"start_obs must be [M ≥ 1, obs_dim], got {tuple(start_obs.shape)}")
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        psi = torch.as_tensor(tasks, dtype=torch.float32)[:, None, :]  # [T, 1, k]
        obs = start_obs[torch.from_numpy(rng.integers(0, start_obs.shape[0], size=(T, N)))]
        od = obs.shape[-1]
        obs_buf = torch.zeros(H + 1, T, N, od)
        act_buf = torch.zeros(H, T, N, self.family.act_dim)
        rew_buf = torch.zeros(H, T, N)
        mask_buf = torch.zeros(H, T, N)
        term_buf = torch.zeros(H, T, N, dtype=torch.bool)
        active = torch.ones(T, N, dtype=torch.bool)
        obs_buf[0] = obs
        for t in range(H):
            mask_buf[t] = active.float()
            actions = actor(obs_buf[t], generator)
            act_buf[t] = actions
            clipped = actions
            if self.action_low is not None:
                clipped = torch.maximum(torch.minimum(actions, self.action_high), self.action_low)
            next_obs = model_step(obs_buf[t], clipped, generator)
            obs_buf[t + 1] = next_obs
            rew_buf[t] = self.family.reward(obs_buf[t], clipped, next_obs, psi).float() * active
            term = self.family.terminated(next_obs, psi) & active
            term_buf[t] = term
            active = active & ~term
            if not active.any():
                break

        def tnh(x):  # time-major [H, T, N, ...] → [T, N, H, ...]
            return x.movedim(0, 2).contiguous()

        return Episodes(obs=tnh(obs_buf[:-1]), actions=tnh(act_buf), rewards=tnh(rew_buf),
                        next_obs=tnh(obs_buf[1:]), mask=tnh(mask_buf),
                        terminated=tnh(term_buf), tasks=np.array(tasks))
