"""Single-environment Gymnasium views of the task families, ``adaptrl/<Name>-v0``.

A view is the batched simulator with one task and one episode, so it has exactly the dynamics,
observations, rewards and termination of the batch. ``set_task(psi)`` chooses ψ (or pass
``options={"task": psi}`` to ``reset``); without one, ``reset`` draws a training task from the
environment's own generator.

Episodes end as in Gymnasium: ``terminated`` by the family's health or goal rule; ``truncated``
by the ``TimeLimit`` wrapper that ``gym.make`` adds at the family's horizon H (the id's
``max_episode_steps``; pass ``max_episode_steps=`` to ``gym.make`` for another length). A view
built directly, ``TaskEnv("cheetah-vel")``, has no time limit.

``render_mode="rgb_array"``: ``render()`` returns the frame ``[height, width, 3]`` uint8 (MuJoCo
bodies by MuJoCo's renderer; headless through ``MUJOCO_GL=egl``, see `adaptrl.envs.render`);
``"human"`` (only where a display exists) shows the frames in a window after every step. Views
pickle and deep-copy, mid-episode included; the copy continues the same episode.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from ..errors import AdaptrlError
from ..names import register_gym_ids
from ..tasks import REGISTRY, get_family
from . import make_batch_env
from .base import family_reference
from .render import DEFAULT_SIZE, check_size, has_display


def render_modes() -> list[str]:
    """The render modes of views here: ``rgb_array``, and ``human`` where a display exists."""
    return ["human", "rgb_array"] if has_display() else ["rgb_array"]


def check_render_mode(render_mode) -> None:
    if render_mode is None or render_mode in render_modes():
        return
    if render_mode == "human":
        raise AdaptrlError("render_mode='human' needs a display and none was found (DISPLAY "
                           "is unset); use render_mode='rgb_array' for frames")
    raise AdaptrlError(f"unknown render_mode {render_mode!r}; known: "
                       f"{', '.join(render_modes())} (or None)")


class TaskEnv(gym.Env):
    # what the class can do; an instance's metadata says what works here (human: a display)
    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 20}

    def __init__(self, family: str, task=None, render_mode=None, width: int = DEFAULT_SIZE,
                 height: int = DEFAULT_SIZE):
        check_render_mode(render_mode)
        self.family = get_family(family)
        self._batch = make_batch_env(self.family, 1, 1, threads=1)
        self.render_mode = render_mode
        self.width, self.height = check_size(width, height)
        self.metadata = {"render_modes": render_modes(), "render_fps": self._batch.render_fps}
        self._window = None  # human mode: (matplotlib figure, image)
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
        self._done = False
        if self.render_mode == "human":
            self.render()
        return obs[0, 0].astype(np.float64), {"task": self._episode_task.copy()}

    def step(self, action):
        if self._done:
            raise RuntimeError("the episode is over: call reset()")
        if self.family.discrete_actions:
            action = np.eye(self.family.act_dim, dtype=np.float32)[int(action)]
        action = np.asarray(action, dtype=np.float32).reshape(1, 1, -1)
        result = self._batch.step(action)
        terminated = bool(result.terminated[0, 0])
        self._done = terminated
        if self.render_mode == "human":
            self.render()
        info = {"task": self._episode_task.copy()}
        if result.success is not None:  # families that define success (Meta-World)
            info["success"] = bool(result.success[0, 0])
        # truncation is the TimeLimit wrapper's (gym.make adds it at the family's horizon)
        return (result.obs[0, 0].astype(np.float64), float(result.reward[0, 0]), terminated,
                False, info)

    def render(self):
        """``rgb_array``: the current frame ``[height, width, 3]`` uint8; ``human``: show it;
        no render mode: None (Gymnasium's convention, with a warning)."""
        if self.render_mode is None:
            gym.logger.warn("render() without a render_mode: pass render_mode='rgb_array' to "
                            "gym.make")
            return None
        if self._episode_task is None:
            raise RuntimeError("call reset() before render()")
        frame = self._batch.render_frame(0, 0, width=self.width, height=self.height)
        if self.render_mode == "rgb_array":
            return frame
        self._show(frame)
        return None

    def _show(self, frame) -> None:
        import matplotlib.pyplot as plt  # only in human mode: a window on the display

        if self._window is None or not plt.fignum_exists(self._window[0].number):
            figure, axes = plt.subplots(figsize=(frame.shape[1] / 100, frame.shape[0] / 100))
            axes.set_axis_off()
            figure.subplots_adjust(0, 0, 1, 1)
            self._window = (figure, axes.imshow(frame))
            plt.show(block=False)
        else:
            self._window[1].set_data(frame)
        plt.pause(1.0 / self.metadata["render_fps"])

    def close(self):
        self._batch.close()
        if self._window is not None:
            import matplotlib.pyplot as plt

            plt.close(self._window[0])
            self._window = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_window"] = None  # a window stays with its process
        state["family"] = family_reference(self.family)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.family = get_family(self.family)


def register_all() -> list[str]:
    """Register every family's view with Gymnasium (idempotent), families registered after
    import included; returns the ids. ``import adaptrl`` registers the built-in ones."""
    return register_gym_ids({name: family.gym_id for name, family in REGISTRY.items()},
                            {name: family.horizon for name, family in REGISTRY.items()})
