"""The batched simulator behind Gymnasium's `VectorEnv` API: the vector entry point of every
``adaptrl/<Name>-v0`` id.

    envs = gym.make_vec("adaptrl/CheetahVel-v0", num_envs=64,
                        vectorization_mode="vector_entry_point")
    envs.unwrapped.set_tasks(psi)            # psi [64, k]: one task per environment

One `BatchEnv` of ``num_envs`` tasks × 1 episode steps all environments in one call, where
``SyncVectorEnv`` of the views steps them one by one (`benchmarks/vector_env.py` measures the
difference). The semantics are those of ``SyncVectorEnv`` over ``gym.make`` views, step for
step: environment i is seeded with ``seed + i``, draws its training task and start state from
its own generator exactly as a view does (unless a task is set), episodes are truncated at
``max_episode_steps`` (the family's horizon H), and finished environments restart on the next
step (Gymnasium's default ``NextStep`` autoreset; ``SameStep`` and ``Disabled`` are available).
Only the discrete families' reward and transition noise differ: the batch draws it from one
stream, so their episodes are equal in distribution, not draw for draw.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ..errors import AdaptrlError
from ..tasks import get_family
from . import make_batch_env
from .base import PicklesFamilyByName
from .render import DEFAULT_SIZE, check_size


class TaskVectorEnv(PicklesFamilyByName, VectorEnv):
    """``num_envs`` environments of one family, one task each, stepped as one batch.

    ``task``: one ψ for every environment (as the view's ``task``); ``threads``: the MuJoCo
    thread pool (default: as `make_batch_env`); ``render_mode``: None or ``"rgb_array"``
    (``render()`` returns one frame per environment).
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, family: str, task=None, render_mode=None,
                 max_episode_steps: int | None = None, threads: int | None = None,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 width: int = DEFAULT_SIZE, height: int = DEFAULT_SIZE):
        if int(num_envs) < 1:
            raise AdaptrlError(f"num_envs must be positive, got {num_envs}")
        if render_mode not in (None, "rgb_array"):
            raise AdaptrlError(f"the vector env renders frames only (render_mode='rgb_array'), "
                               f"got {render_mode!r}; use single views for 'human'")
        self.family = get_family(family)
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.width, self.height = check_size(width, height)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {"render_modes": ["rgb_array"], "autoreset_mode": self.autoreset_mode}
        self._batch = make_batch_env(self.family, self.num_envs, 1, threads=threads)
        self.metadata["render_fps"] = self._batch.render_fps

        if self.family.discrete_actions:
            self.single_action_space = gym.spaces.Discrete(self.family.act_dim)
        else:
            self.single_action_space = gym.spaces.Box(self._batch.action_low.astype(np.float32),
                                                      self._batch.action_high.astype(np.float32),
                                                      dtype=np.float32)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (self.family.obs_dim,),
                                                       np.float64)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

        k = self.family.task_dim
        self._chosen = np.zeros((self.num_envs, k))  # tasks set by the user ...
        self._has_chosen = np.zeros(self.num_envs, dtype=bool)  # ... where this is True
        if task is not None:
            self.set_tasks(np.repeat(self.family.check_tasks(task), self.num_envs, axis=0))
        self._episode_tasks = np.zeros((self.num_envs, k))
        self._obs = np.zeros((self.num_envs, self.family.obs_dim))  # the latest observations
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._elapsed = np.zeros(self.num_envs, np.int64)
        self._ended = np.ones(self.num_envs, dtype=bool)  # True until the first reset
        self._started = False

    # ── tasks ──
    def set_tasks(self, tasks) -> None:
        """Environment i uses task ``tasks[i]`` from its next (auto)reset on; ``tasks [num_envs,
        k]``. ``None`` goes back to drawing a training task at every reset."""
        if tasks is None:
            self._has_chosen[:] = False
            return
        tasks = self.family.check_tasks(tasks)
        if tasks.shape[0] != self.num_envs:
            raise AdaptrlError(f"need one task per environment: {self.num_envs} environments, "
                               f"{tasks.shape[0]} task(s)")
        self._chosen[:] = tasks
        self._has_chosen[:] = True

    def set_task(self, index: int, psi) -> None:
        """Environment ``index`` uses task ψ from its next (auto)reset on."""
        if not 0 <= int(index) < self.num_envs:
            raise AdaptrlError(f"no environment {index} among {self.num_envs}")
        self._chosen[int(index)] = self.family.check_tasks(psi)[0]
        self._has_chosen[int(index)] = True

    @property
    def tasks(self) -> np.ndarray:
        """The tasks of the running episodes, ``[num_envs, k]`` (a copy)."""
        return self._episode_tasks.copy()

    # ── Gymnasium's API ──
    def reset(self, *, seed=None, options=None):
        """Restart every environment (``options={"reset_mask": mask}``: those where the mask is
        True). ``seed``: an int (environment i gets ``seed + i``), a list with one seed (or
        None) per environment, or None. ``options={"task": ψ}`` sets every environment's task,
        ``{"tasks": [num_envs, k]}`` one per environment (kept for later resets)."""
        options = dict(options or {})
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise AdaptrlError(f"give one seed per environment: {self.num_envs} "
                                   f"environments, {len(seeds)} seeds")
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        elif not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_
                  and mask.shape == (self.num_envs,) and mask.any()):
            raise AdaptrlError(f"options['reset_mask'] must be a bool array of shape "
                               f"({self.num_envs},) with at least one True value")
        elif not self._started and not mask.all():
            raise AdaptrlError("the first reset must restart every environment")
        if "task" in options:
            self.set_tasks(np.repeat(self.family.check_tasks(options["task"]), self.num_envs, 0))
        if "tasks" in options:
            self.set_tasks(options["tasks"])
        for i in np.flatnonzero(mask):
            if seeds[i] is not None:
                self._rngs[i] = seeding.np_random(int(seeds[i]))[0]
        self._start_episodes(np.flatnonzero(mask))
        self._started = True
        return self._obs.copy(), self._task_info()

    def step(self, actions):
        """One step of every environment; see the module docstring for autoreset."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._batch_actions(actions)
        restart = np.zeros(self.num_envs, dtype=bool)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            restart = self._ended.copy()
        elif self.autoreset_mode == AutoresetMode.DISABLED and self._ended.any():
            raise RuntimeError(f"environments {np.flatnonzero(self._ended).tolist()} have "
                               "ended: reset them with options={'reset_mask': mask} first")
        active = self._batch.active.reshape(-1)
        active[restart] = False  # finished environments take no step: they restart below
        stepping = active.copy()
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        if stepping.any():
            result = self._batch.step(actions)
            rewards[:] = result.reward[:, 0]
            terminated[:] = result.terminated[:, 0]
            self._obs[stepping] = result.obs[stepping, 0]
        self._elapsed[stepping] += 1
        truncated = stepping & self._time_up()
        self._ended = terminated | truncated
        if restart.any():
            self._start_episodes(np.flatnonzero(restart))
        infos = self._task_info()
        if self.autoreset_mode == AutoresetMode.SAME_STEP and self._ended.any():
            ended = np.flatnonzero(self._ended)
            for i in ended:
                infos = self._add_info(infos, {"final_obs": self._obs[i].copy(),
                                               "final_info": {"task": self._episode_tasks[i]
                                                              .copy()}}, i)
            self._start_episodes(ended)
            infos.update(self._task_info())
        return self._obs.copy(), rewards, terminated, truncated, infos

    def render(self):
        """One frame ``[height, width, 3]`` uint8 per environment (``rgb_array`` mode)."""
        if self.render_mode is None:
            gym.logger.warn("render() without a render_mode: pass render_mode='rgb_array'")
            return None
        if not self._started:
            raise RuntimeError("call reset() before render()")
        return tuple(self._batch.render_frame(i, 0, width=self.width, height=self.height)
                     for i in range(self.num_envs))

    def close_extras(self, **kwargs):
        self._batch.close()

    # ── helpers ──
    def _time_up(self) -> np.ndarray:
        if self.max_episode_steps is None:
            return np.zeros(self.num_envs, dtype=bool)
        return self._elapsed >= self.max_episode_steps

    def _batch_actions(self, actions) -> np.ndarray:
        if self.family.discrete_actions:
            index = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
            if index.min() < 0 or index.max() >= self.family.act_dim:
                raise AdaptrlError(f"actions must be indices in [0, {self.family.act_dim})")
            batch = np.eye(self.family.act_dim, dtype=np.float32)[index]
        else:
            batch = np.asarray(actions, dtype=np.float32)
            if batch.shape != (self.num_envs, self.family.act_dim):
                raise AdaptrlError(f"actions must have shape ({self.num_envs}, "
                                   f"{self.family.act_dim}), got {batch.shape}")
        return batch[:, None, :]

    def _start_episodes(self, index: np.ndarray) -> np.ndarray:
        """New episodes in environments ``index``: each draws its task (unless one is set) and
        its start state from its own generator, as a view's reset does."""
        for i in index:
            if self._rngs[i] is None:
                self._rngs[i] = seeding.np_random()[0]
            if self._has_chosen[i]:
                self._episode_tasks[i] = self._chosen[i]
            else:
                self._episode_tasks[i] = self.family.sample(1, self._rngs[i])[0]
        if self._batch.tasks is None or not np.array_equal(self._batch.tasks, self._episode_tasks):
            self._batch.set_tasks(self._episode_tasks)
        self._obs[index] = self._batch.reset_envs(index, [self._rngs[i] for i in index])
        self._elapsed[index] = 0
        self._ended[index] = False

    def _task_info(self) -> dict:
        return {"task": self._episode_tasks.copy(), "_task": np.ones(self.num_envs, dtype=bool)}
