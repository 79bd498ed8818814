"""Single-environment Gymnasium views of the task families, ``adaptrl/<Name>-v0``.

A view is the batched simulator with one task and one episode, so it has exactly the dynamics,
observations, rewards and termination of the batch. ``set_task(psi)`` chooses ψ (or pass
``options={"task": psi}`` to ``reset``); without one, ``reset`` draws a training task from the
environment's own generator.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from ..tasks import REGISTRY, get_family
from . import make_batch_env


class TaskEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, family: str, task=None, render_mode=None):
        if render_mode is not None:
            raise ValueError("adaptrl views do not render")
        self.family = get_family(family)
        self._batch = make_batch_env(self.family, 1, 1, threads=1)
        if self.family.discrete_actions:  # an action index (the batch takes one-hot vectors)
            self.action_space = gym.spaces.Discrete(self.family.act_dim)
        else:
            low = self._batch.action_low.astype(np.float32)
            high = self._batch.action_high.astype(np.float32)
            self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.family.obs_dim,), np.float64)
        # the task chosen by the user (None: draw a training task at every reset) and the task
        # of the running episode, kept apart so that set_task() mid-episode waits for reset()
        self._task = None if task is None else self.family.check_tasks(task)[0]
        self._episode_task: np.ndarray | None = None
        self._t = 0
        self._done = True

    @property
    def task(self) -> np.ndarray | None:
        """The task set by the user (used from the next reset on), else the running episode's
        (None before the first reset); ``info['task']`` always names the episode's task."""
        task = self._task if self._task is not None else self._episode_task
        return None if task is None else task.copy()

    def set_task(self, psi) -> None:
        """Use task ψ from the next ``reset`` on."""
        self._task = self.family.check_tasks(psi)[0]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        if self._task is None:
            self._episode_task = self.family.sample(1, self.np_random)[0]
        else:
            self._episode_task = self._task.copy()
        self._batch.set_tasks(self._episode_task[None])
        obs = self._batch.reset(self.np_random)
        self._t = 0
        self._done = False
        return obs[0, 0].astype(np.float64), {"task": self._episode_task.copy()}

    def step(self, action):
        if self._done:
            raise RuntimeError("the episode is over: call reset()")
        if self.family.discrete_actions:
            action = np.eye(self.family.act_dim, dtype=np.float32)[int(action)]
        action = np.asarray(action, dtype=np.float32).reshape(1, 1, -1)
        result = self._batch.step(action)
        self._t += 1
        terminated = bool(result.terminated[0, 0])
        truncated = (not terminated) and self._t >= self.family.horizon
        self._done = terminated or truncated
        return (result.obs[0, 0].astype(np.float64), float(result.reward[0, 0]), terminated,
                truncated, {"task": self._episode_task.copy()})


def register_all() -> list[str]:
    """Register every family's view with Gymnasium (idempotent); returns the ids."""
    ids = []
    for name, family in REGISTRY.items():
        if family.gym_id not in gym.registry:
            gym.register(id=family.gym_id, entry_point="adaptrl.envs.gym_view:TaskEnv",
                         kwargs={"family": name}, max_episode_steps=None)
        ids.append(family.gym_id)
    return ids
