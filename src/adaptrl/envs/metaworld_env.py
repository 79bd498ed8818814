"""Meta-World's environments behind the batched-simulator contract: T tasks × N episodes.

Each of the T·N rows holds one Meta-World environment of its task's type (an instance of the
benchmark's own class, given the benchmark's own ``Task`` with ``set_task``), stepped one after
the other in this process: Meta-World computes its reward and success flag in Python from the
simulator's state after every step, so there is no batch call to make. Instances are pooled by
task type, so moving a row to another task of the same type only calls ``set_task`` again.

* Rewards are Meta-World's (v2), taken from ``env.step``; ``StepResult.success`` carries
  ``info["success"]`` of each step (the episode succeeds if it is ever 1).
* Episodes never terminate early (Meta-World's ``terminated`` is always False; the sampler cuts
  them at the horizon, at most Meta-World's 500 steps).
* Resets are deterministic given the task: Meta-World places the objects and the goal from the
  task's fixed vector and ignores ``reset(seed=...)``; the reset ``rng`` is not drawn from.
"""

from __future__ import annotations

import copy
import functools

import mujoco
import numpy as np

from ..errors import AdaptrlError
from ..tasks.metaworld import HORIZON, MetaWorldFamily
from .base import BatchEnv, StepResult

_MODELS: dict[str, mujoco.MjModel] = {}


def _initialize_simulation(self):
    """Gymnasium's ``MujocoEnv._initialize_simulation`` with the XML compiled once per process
    (compiling is 0.1 s of the 0.12 s an environment takes to build; a copy takes well under a
    millisecond and is the same model)."""
    if self.fullpath not in _MODELS:
        _MODELS[self.fullpath] = mujoco.MjModel.from_xml_path(self.fullpath)
    model = copy.copy(_MODELS[self.fullpath])
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
    return model, mujoco.MjData(model)


@functools.lru_cache(maxsize=None)
def fast_class(cls: type) -> type:
    """A subclass of a Meta-World environment class that builds from a cached compiled model
    (still an instance of ``cls``, as ``set_task`` checks)."""
    return type(cls.__name__, (cls,), {"_initialize_simulation": _initialize_simulation,
                                       "__module__": __name__})


class MetaWorldBatchEnv(BatchEnv):
    """T·N Meta-World environments of a `MetaWorldFamily` (ψ = task index)."""

    def __init__(self, family, num_tasks, num_episodes, threads: int | None = None):
        super().__init__(family, num_tasks, num_episodes)
        if not isinstance(self.family, MetaWorldFamily):
            raise TypeError(f"'{self.family.name}' is not a Meta-World family")
        self.action_low = -np.ones(self.act_dim, np.float32)
        self.action_high = np.ones(self.act_dim, np.float32)
        self.render_fps = 80  # Meta-World's metadata: 1 / (0.0025 s · frame_skip 5)
        self._start()

    def _start(self) -> None:
        """The native parts (rebuilt after unpickling): the benchmark's task list and classes,
        one environment per row and the pool of spare ones by task type."""
        self._task_list = self.family.task_list()
        self._classes = self.family.env_classes()
        self._envs: list = [None] * self.batch_size
        self._row_type: list[str | None] = [None] * self.batch_size
        self._pool: dict[str, list] = {}

    def __getstate__(self):
        state = super().__getstate__()
        for name in ("_task_list", "_classes", "_envs", "_row_type", "_pool"):
            del state[name]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._start()
        if self.tasks is not None:  # the episodes in flight do not travel: reset() again
            self._apply_tasks(self.tasks)
        self.active[:] = False

    def _make(self, env_type: str):
        pool = self._pool.get(env_type)
        if pool:
            return pool.pop()
        return fast_class(self._classes[env_type])()

    def _apply_tasks(self, tasks):
        for i, psi in enumerate(tasks):
            task = self._task_list[int(psi[0])]
            for row in range(i * self.num_episodes, (i + 1) * self.num_episodes):
                if self._row_type[row] != task.env_name:
                    if self._envs[row] is not None:
                        self._pool.setdefault(self._row_type[row], []).append(self._envs[row])
                    self._envs[row] = self._make(task.env_name)
                    self._row_type[row] = task.env_name
                self._envs[row].set_task(task)

    def task_types(self) -> list[str]:
        """The task type (``reach-v3``) of each of the T tasks."""
        return [self._row_type[i * self.num_episodes] for i in range(self.num_tasks)]

    # ── the batch contract ──
    def _reset_rows(self, rows) -> np.ndarray:
        obs = np.empty((len(rows), self.obs_dim), np.float32)
        for j, row in enumerate(rows):
            obs[j] = self._envs[row].reset()[0]
        return obs

    def _reset_state(self, rng):
        return self._reset_rows(range(self.batch_size))

    def _reset_envs(self, index, rngs):
        return self._reset_rows(index)

    def step(self, action) -> StepResult:
        """Step every running environment with Meta-World's own ``step``; rewards, success
        flags and observations come from it (see the module docstring)."""
        action = self._checked_action(action).reshape(self.batch_size, -1)
        flat_obs = self._obs.reshape(self.batch_size, self.obs_dim)
        reward = np.zeros(self.batch_size, np.float32)
        success = np.zeros(self.batch_size, bool)
        for row in np.flatnonzero(self.active.reshape(-1)):
            env = self._envs[row]
            if env.curr_path_length >= env.max_path_length:
                raise AdaptrlError(f"Meta-World episodes last at most {HORIZON} steps; "
                                   "set horizon to 500 or less")
            obs, r, _, _, info = env.step(action[row])
            flat_obs[row] = obs
            reward[row] = r
            success[row] = bool(info["success"])
        shape = (self.num_tasks, self.num_episodes)
        return StepResult(self._obs.copy(), reward.reshape(shape),
                          np.zeros(shape, bool), success.reshape(shape))

    def _render(self, row, width, height):
        raise NotImplementedError("Meta-World environments are not drawn by adaptrl yet")

    def close(self):
        for env in [e for e in self._envs if e is not None] + [
                e for pool in self._pool.values() for e in pool]:
            env.close()
