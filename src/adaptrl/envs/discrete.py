"""Batched discrete-action environments of the black-box meta-RL literature: Bernoulli bandits
and random tabular MDPs (RL² §§3.1–3.2). Actions arrive as one-hot vectors (the base class takes
the argmax); the randomness of rewards and transitions comes from a generator drawn from each
reset's ``rng``, so equal generators give equal episodes.
"""

from __future__ import annotations

import numpy as np

from ..tasks.families import tabular_mdp_parts
from .base import BatchEnv


class _RandomEnv(BatchEnv):
    """A discrete environment with its own noise stream, reseeded at every reset."""

    def __init__(self, family, num_tasks, num_episodes):
        super().__init__(family, num_tasks, num_episodes)
        self.action_low = np.zeros(self.act_dim, np.float32)
        self.action_high = np.ones(self.act_dim, np.float32)
        self._noise = np.random.default_rng(0)

    def _reseed(self, rng: np.random.Generator) -> None:
        self._noise = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))


class BanditEnv(_RandomEnv):
    """k-armed Bernoulli bandits: the observation is a constant 0, the reward of arm a is
    Bernoulli(p_a) (the family's reward is its mean)."""

    def _reset_state(self, rng):
        self._reseed(rng)
        return np.zeros((self.batch_size, 1), np.float32)

    def _simulate(self, index, action):
        n = self.batch_size if index is None else len(index)
        return np.zeros((n, 1), np.float32)

    def _draw_reward(self, mean):
        return (self._noise.random(mean.shape) < mean).astype(np.float32)


class TabularMDPEnv(_RandomEnv):
    """Random tabular MDPs: one-hot states, every episode starting in state 0; s' ~ P(·|s, a)
    and a reward ~ N(μ(s, a), 1) (the family's reward is μ(s, a))."""

    def __init__(self, family, num_tasks, num_episodes):
        super().__init__(family, num_tasks, num_episodes)
        self.num_states = self.obs_dim
        self._state = np.zeros(self.batch_size, np.int64)
        self._cdf = np.zeros((self.num_tasks, self.num_states, self.act_dim, self.num_states))

    def _apply_tasks(self, tasks):
        transitions, _ = tabular_mdp_parts(np.asarray(tasks), self.num_states, self.act_dim)
        total = transitions.sum(-1, keepdims=True)
        if np.any(transitions < 0) or np.any(total <= 0):
            raise ValueError("tabular-mdp tasks need non-negative transition rows with a "
                             "positive sum")
        self._cdf = np.cumsum(transitions / total, axis=-1)
        self._cdf[..., -1] = 1.0  # rounding must not leave a gap above the last state

    def _one_hot(self, states):
        return np.eye(self.num_states, dtype=np.float32)[states]

    def _reset_state(self, rng):
        self._reseed(rng)
        self._state[:] = 0
        return self._one_hot(self._state)

    def _simulate(self, index, action):
        rows = np.arange(self.batch_size) if index is None else index
        task = rows // self.num_episodes
        cdf = self._cdf[task, self._state[rows], action.argmax(-1)]  # [n, S]
        u = self._noise.random((len(rows), 1))
        self._state[rows] = np.minimum((u > cdf).sum(-1), self.num_states - 1)
        return self._one_hot(self._state[rows])

    def _draw_reward(self, mean):
        return (mean + self._noise.standard_normal(mean.shape)).astype(np.float32)
