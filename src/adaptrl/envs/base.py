"""The batched-simulator contract: T tasks × N episodes stepped in lock-step.

Episodes that end are masked, never reset mid-batch: a finished environment keeps its last
observation, is no longer simulated, and yields reward 0. ``active`` tells which are still running.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import torch

from ..tasks import REGISTRY, TaskFamily, get_family
from .render import DEFAULT_SIZE, draw_point


def family_reference(family: TaskFamily) -> str:
    """How a family travels in a pickle: by its registered name (families hold closures, their
    rewards, which do not pickle); `get_family` turns the name back into the family."""
    if REGISTRY.get(family.name) is not family:
        raise pickle.PicklingError(f"task family '{family.name}' is not registered, so "
                                   "environments of it cannot be pickled or deep-copied; "
                                   "register it with adaptrl.tasks.families.register first")
    return family.name


@dataclass
class StepResult:
    """One lock-step transition of all T·N environments.

    obs: ``[T, N, obs_dim]`` float32, the observation after the step.
    reward: ``[T, N]`` float32 (0 where the environment had already finished).
    terminated: ``[T, N]`` bool, True where the episode ended on this step.
    success: ``[T, N]`` bool, the task's success flag after this step (False where the
        environment had already finished), for environments that define success (Meta-World's
        ``info["success"]``); None for the others.
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    success: np.ndarray | None = None


class PicklesFamilyByName:
    """Pickles ``self.family`` as `family_reference` (its reward functions do not pickle) and
    looks it up again on unpickling."""

    def __getstate__(self):
        state = self.__dict__.copy()
        state["family"] = family_reference(self.family)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.family = get_family(self.family)


class BatchEnv(PicklesFamilyByName):
    """Base class: owns tasks, the done-mask and the reward; subclasses own the physics.

    Subclasses implement ``_reset_state(rng) -> obs [B, obs_dim]`` and
    ``_simulate(index, action) -> obs [len(index), obs_dim]`` where ``index`` lists the flat
    indices (task-major) of the environments still running and ``action`` is already clipped.
    """

    def __init__(self, family: TaskFamily | str, num_tasks: int, num_episodes: int):
        self.family = get_family(family)
        if int(num_tasks) < 1 or int(num_episodes) < 1:
            raise ValueError(
                f"need at least one task and one episode, got {num_tasks} × {num_episodes}"
            )
        self.num_tasks = int(num_tasks)
        self.num_episodes = int(num_episodes)
        self.batch_size = self.num_tasks * self.num_episodes
        self.obs_dim = self.family.obs_dim
        self.act_dim = self.family.act_dim
        self.horizon = self.family.horizon
        self.tasks: np.ndarray | None = None  # ψ of each task, [T, k]
        self._tasks_t: torch.Tensor | None = None
        self._obs = np.zeros((self.num_tasks, self.num_episodes, self.obs_dim), np.float32)
        self.active = np.zeros((self.num_tasks, self.num_episodes), dtype=bool)
        self.generator: torch.Generator | None = None

    # action bounds, [act_dim] float32 each
    action_low: np.ndarray
    action_high: np.ndarray
    render_fps = 10  # frames per second of a video of this body, one frame per control step

    def set_tasks(self, tasks) -> None:
        """Give each of the T environments' tasks its ψ, ``tasks [T, k]``."""
        tasks = self.family.check_tasks(tasks)
        if tasks.shape[0] != self.num_tasks:
            raise ValueError(
                f"this env runs {self.num_tasks} task(s); got parameters for {tasks.shape[0]}"
            )
        self.tasks = tasks.copy()
        self._tasks_t = torch.as_tensor(tasks, dtype=torch.float32)[:, None, :]
        self._apply_tasks(tasks)

    def _apply_tasks(self, tasks: np.ndarray) -> None:
        """Hook for families whose ψ changes the physics."""

    def reset(self, rng: np.random.Generator,
              generator: torch.Generator | None = None) -> np.ndarray:
        """Start all T·N episodes; returns ``obs [T, N, obs_dim]`` float32.

        ``generator``: the rollout's torch generator, kept for environments whose steps draw
        torch random numbers (a learned model's ensemble); simulators ignore it.
        """
        if self.tasks is None:
            raise RuntimeError("call set_tasks(tasks) before reset()")
        self.generator = generator
        obs = self._reset_state(rng)
        self._obs[:] = obs.reshape(self._obs.shape)
        self.active[:] = True
        return self._obs.copy()

    def _checked_action(self, action) -> np.ndarray:
        """``action [T, N, act_dim]`` as float32, checked against the batch and the episodes
        running, clipped to the action bounds (one-hot of its argmax for discrete actions)."""
        if self.tasks is None or not self.active.any():
            raise RuntimeError("reset() the environment before step() (all episodes are over)")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self.num_tasks, self.num_episodes, self.act_dim):
            raise ValueError(
                f"action must have shape {(self.num_tasks, self.num_episodes, self.act_dim)}, "
                f"got {action.shape}"
            )
        if self.family.discrete_actions:  # one-hot of the chosen action (argmax of any vector)
            return np.eye(self.act_dim, dtype=np.float32)[action.argmax(-1)]
        return np.clip(action, self.action_low, self.action_high)

    def step(self, action) -> StepResult:
        """Advance every running environment by one control step.

        action: ``[T, N, act_dim]``; it is clipped to the action bounds.
        """
        action = self._checked_action(action)
        prev_obs = self._obs.copy()
        running = self.active.reshape(-1)
        flat_obs = self._obs.reshape(self.batch_size, self.obs_dim)
        if running.all():
            flat_obs[:] = self._simulate(None, action.reshape(self.batch_size, self.act_dim))
        else:
            index = np.flatnonzero(running)
            flat_obs[index] = self._simulate(index, action.reshape(self.batch_size, -1)[index])
        obs_t = torch.from_numpy(self._obs)
        with torch.no_grad():
            reward = self.family.reward(
                torch.from_numpy(prev_obs), torch.from_numpy(action), obs_t, self._tasks_t
            ).to(torch.float32).numpy()
            terminated = self.family.terminated(obs_t, self._tasks_t).numpy()
        reward = self._draw_reward(reward)
        was_active = self.active.copy()
        reward = np.where(was_active, reward, 0.0).astype(np.float32)
        terminated = terminated & was_active
        self.active &= ~terminated
        return StepResult(self._obs.copy(), reward, terminated)

    def reset_envs(self, index, rngs) -> np.ndarray:
        """Start new episodes in the environments ``index`` only (flat, task-major indices),
        the others running on; ``rngs``: one generator per index, each drawn from as `reset`
        draws from its generator for a batch of one. Returns their observations
        ``[len(index), obs_dim]`` float32. (Gymnasium's vector entry point autoresets with this.)
        """
        if self.tasks is None:
            raise RuntimeError("call set_tasks(tasks) before reset_envs()")
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(rngs) != len(index):
            raise ValueError(f"need one generator per environment: {len(index)} indices, "
                             f"{len(rngs)} generators")
        flat_obs = self._obs.reshape(self.batch_size, self.obs_dim)
        flat_obs[index] = self._reset_envs(index, rngs)
        self.active.reshape(-1)[index] = True
        return flat_obs[index].copy()

    def render_frame(self, task: int, episode: int = 0, *, width: int = DEFAULT_SIZE,
                     height: int = DEFAULT_SIZE) -> np.ndarray:
        """A picture of environment (``task``, ``episode``) as it is now, ``[height, width, 3]``
        uint8 RGB (see `adaptrl.envs.render`)."""
        if self.tasks is None:
            raise RuntimeError("call set_tasks(tasks) and reset() before render_frame()")
        if not (0 <= task < self.num_tasks and 0 <= episode < self.num_episodes):
            raise IndexError(f"no environment ({task}, {episode}) in {self.num_tasks} task(s) × "
                             f"{self.num_episodes} episode(s)")
        return self._render(task * self.num_episodes + episode, width, height)

    def close(self) -> None:
        """Free rendering resources (the environment stays usable)."""

    # ── subclass hooks ──
    def _reset_envs(self, index: np.ndarray, rngs) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} cannot restart single environments")

    def _render(self, row: int, width: int, height: int) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} draws no frames")

    def _draw_reward(self, mean: np.ndarray) -> np.ndarray:
        """The rewards of this step ``[T, N]`` given the family's (mean) reward; environments
        with random rewards draw them here."""
        return mean

    def _reset_state(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _simulate(self, index, action: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class PointEnv(BatchEnv):
    """2-D point mass (MAML): starts at the origin, s' = s + clip(a, ±0.1). Pure array math."""

    def __init__(self, family, num_tasks, num_episodes):
        super().__init__(family, num_tasks, num_episodes)
        self.action_low = np.full(2, -0.1, np.float32)
        self.action_high = np.full(2, 0.1, np.float32)
        self._pos = np.zeros((self.batch_size, 2), np.float32)

    def _reset_state(self, rng):
        self._pos[:] = 0.0
        return self._pos

    def _simulate(self, index, action):
        if index is None:
            self._pos += action
            return self._pos
        self._pos[index] += action
        return self._pos[index]

    def _reset_envs(self, index, rngs):
        self._pos[index] = 0.0
        return self._pos[index]

    def _render(self, row, width, height):
        goal = self.tasks[row // self.num_episodes]
        half_width = 1.2 * max(float(np.abs(self.family.low).max()),
                               float(np.abs(self.family.high).max()), float(np.abs(goal).max()))
        return draw_point(self._pos[row], goal, half_width, width, height)
