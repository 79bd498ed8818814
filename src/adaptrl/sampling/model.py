"""Rollouts on a learned model ("virtual" samples of model-based RL): the model as a batched
environment, and the sampler backend that rolls policies out on it.

The model is a callable (this package imports no network class), the rollouts go through the
same loop as real ones (`adaptrl.sampling.sampler.rollout`), and the result is the same
`Episodes`, so the advantage and TRPO machinery applies unchanged. Rewards are the task
family's torch reward r_ψ(s, a, s') on the predicted transition, and the family's termination
rule is evaluated on the predicted state (the AdMRL families never terminate early).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..envs import BatchEnv
from ..tasks import TaskFamily, get_family
from .sampler import Sampler, rollout

# (obs [..., obs_dim], act [..., act_dim], generator) -> next_obs [..., obs_dim]
ModelStep = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


class ModelEnv(BatchEnv):
    """T × N environments whose transitions come from a learned model.

    Episodes start in states drawn uniformly (with replacement) from a pool of real states, as
    SLBO does. Actions are clipped to ``[action_low, action_high]`` before the model and the
    reward see them (the real environments clip the same way); `Episodes.actions` keeps the
    policy's unclipped actions, whose log-probabilities the policy gradient needs. The model's
    own randomness (an ensemble member per sample) draws from the rollout's torch generator.
    """

    def __init__(self, family: TaskFamily | str, num_tasks: int, num_episodes: int,
                 model_step: ModelStep, start_obs, action_low, action_high):
        super().__init__(family, num_tasks, num_episodes)
        self.model_step = model_step
        self.start_obs = np.asarray(start_obs, dtype=np.float32)
        if self.start_obs.ndim != 2 or self.start_obs.shape[0] < 1 \
                or self.start_obs.shape[1] != self.obs_dim:
            raise ValueError(f"start_obs must be [M ≥ 1, {self.obs_dim}], got "
                             f"{self.start_obs.shape}")
        self.action_low = np.asarray(action_low, dtype=np.float32)
        self.action_high = np.asarray(action_high, dtype=np.float32)

    def _reset_state(self, rng):
        return self.start_obs[rng.integers(0, self.start_obs.shape[0],
                                           size=(self.num_tasks, self.num_episodes))]

    def _simulate(self, index, action):
        obs = self._obs.reshape(self.batch_size, self.obs_dim)
        if index is not None:
            obs = obs[index]
        with torch.no_grad():
            next_obs = self.model_step(torch.from_numpy(obs), torch.from_numpy(action),
                                       self.generator)
        return next_obs.numpy()


class ModelSampler(Sampler):
    """The backend whose environment is a learned model: `ModelEnv` rollouts of ``horizon``
    steps (default: the family's) from the start-state pool ``start_obs [M, obs_dim]``."""

    def __init__(self, family: TaskFamily | str, model_step: ModelStep, start_obs, action_low,
                 action_high):
        self.family = get_family(family)
        self.model_step, self.start_obs = model_step, start_obs
        self.action_low, self.action_high = action_low, action_high

    def sample(self, policy, tasks, rng, episodes, *, horizon=None, trial_episodes=1):
        tasks = self.family.check_tasks(tasks)
        env = ModelEnv(self.family, len(tasks), episodes, self.model_step, self.start_obs,
                       self.action_low, self.action_high)
        return rollout(env, policy, tasks, rng, horizon or self.family.horizon, trial_episodes)
