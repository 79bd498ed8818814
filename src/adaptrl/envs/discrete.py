"""Batched discrete-action environments of the black-box meta-RL literature: Bernoulli bandits
and random tabular MDPs (RL² §§3.1–3.2). Actions arrive as one-hot vectors (the base class takes
the argmax); the randomness of rewards and transitions comes from a generator drawn from each
reset's ``rng``, so equal generators give equal episodes.
"""

from __future__ import annotations

import numpy as np

from ..tasks.families import tabular_mdp_parts
from .base import BatchEnv
from .render import draw_bars


class _RandomEnv(BatchEnv):
    """A discrete environment with its own noise stream, reseeded at every reset."""

    def __init__(self, family, num_tasks, num_episodes):
        super().__init__(family, num_tasks, num_episodes)
        self.action_low = np.zeros(self.act_dim, np.float32)
        self.action_high = np.ones(self.act_dim, np.float32)
        self._noise = np.random.default_rng(0)

    def _reseed(self, rng: np.random.Generator) -> None:
        self._noise = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))

    def _reset_envs(self, index, rngs):
        # one noise stream for the batch: each generator gives a seed, as a batch of one's
        # reset takes it, and the first one seeds the fresh stream (draws stay independent)
        seeds = [int(rng.integers(0, 2**63 - 1)) for rng in rngs]
        self._noise = np.random.default_rng(seeds[0])
        return self._restart(index)


class BanditEnv(_RandomEnv):
    """k-armed Bernoulli bandits: the observation is a constant 0, the reward of arm a is
    Bernoulli(p_a) (the family's reward is its mean)."""

    render_fps = 2

    def __init__(self, family, num_tasks, num_episodes):
        super().__init__(family, num_tasks, num_episodes)
        self._last_arm = np.full(self.batch_size, -1, np.int64)  # for pictures only

    def _reset_state(self, rng):
        self._reseed(rng)
        return self._restart(np.arange(self.batch_size))

    def _restart(self, rows):
        self._last_arm[rows] = -1
        return np.zeros((len(rows), 1), np.float32)

    def _simulate(self, index, action):
        n = self.batch_size if index is None else len(index)
        self._last_arm[slice(None) if index is None else index] = action.argmax(-1)
        return np.zeros((n, 1), np.float32)

    def _render(self, row, width, height):
        """The arms' success probabilities as bars, the arm pulled last highlighted."""
        arm = int(self._last_arm[row])
        return draw_bars(self.tasks[row // self.num_episodes], None if arm < 0 else arm,
                         width, height)

    def _draw_reward(self, mean):
        return (self._noise.random(mean.shape) < mean).astype(np.float32)


class TabularMDPEnv(_RandomEnv):
    """Random tabular MDPs: one-hot states, every episode starting in state 0; s' ~ P(·|s, a)
    and a reward ~ N(μ(s, a), 1) (the family's reward is μ(s, a))."""

    render_fps = 4

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
        return self._restart(np.arange(self.batch_size))

    def _restart(self, rows):
        self._state[rows] = 0
        return self._one_hot(self._state[rows])

    def _render(self, row, width, height):
        """One bar per state, the current one highlighted (the bars' heights: the expected
        reward of the state's best action, scaled to [0, 1])."""
        task = row // self.num_episodes
        _, means = tabular_mdp_parts(self.tasks[task:task + 1], self.num_states, self.act_dim)
        best = np.asarray(means, np.float64).reshape(self.num_states, -1).max(-1)
        span = best.max() - best.min()
        heights = (best - best.min()) / span if span > 0 else np.full_like(best, 0.5)
        return draw_bars(0.1 + 0.9 * heights, int(self._state[row]), width, height)

    def _simulate(self, index, action):
        rows = np.arange(self.batch_size) if index is None else index
        task = rows // self.num_episodes
        cdf = self._cdf[task, self._state[rows], action.argmax(-1)]  # [n, S]
        u = self._noise.random((len(rows), 1))
        self._state[rows] = np.minimum((u > cdf).sum(-1), self.num_states - 1)
        return self._one_hot(self._state[rows])

    def _draw_reward(self, mean):
        return (mean + self._noise.standard_normal(mean.shape)).astype(np.float32)
