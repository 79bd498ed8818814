"""Batched simulators (T tasks × N episodes in lock-step) and Gymnasium views."""

import functools

import numpy as np

from ..tasks import TaskFamily, get_family
from .base import BatchEnv, PointEnv, StepResult
from .render import default_headless_gl

default_headless_gl()  # before MuJoCo is first imported: without a display, render through EGL


def make_batch_env(family: TaskFamily | str, num_tasks: int, num_episodes: int,
                   threads: int | None = None) -> BatchEnv:
    """The batched simulator for ``family`` running ``num_tasks`` × ``num_episodes`` episodes."""
    family = get_family(family)
    if family.body == "point":
        return PointEnv(family, num_tasks, num_episodes)
    if family.body in ("bandit", "tabular_mdp"):
        from .discrete import BanditEnv, TabularMDPEnv

        cls = BanditEnv if family.body == "bandit" else TabularMDPEnv
        return cls(family, num_tasks, num_episodes)
    if family.body == "metaworld":
        from .metaworld_env import MetaWorldBatchEnv

        return MetaWorldBatchEnv(family, num_tasks, num_episodes)
    if family.body == "maze":
        from .maze import MazeEnv

        return MazeEnv(family, num_tasks, num_episodes)
    from .mujoco_env import MujocoBatchEnv

    return MujocoBatchEnv(family, num_tasks, num_episodes, threads=threads)


def action_bounds(family: TaskFamily | str) -> tuple[np.ndarray, np.ndarray]:
    """The action box ``(low, high)`` of a family's body, ``[act_dim]`` float32 each (fresh
    copies)."""
    low, high = _action_bounds(get_family(family).name)
    return low.copy(), high.copy()


@functools.lru_cache(maxsize=None)
def _action_bounds(name: str) -> tuple[np.ndarray, np.ndarray]:
    env = make_batch_env(name, 1, 1, threads=1)
    return env.action_low.copy(), env.action_high.copy()


__all__ = ["BatchEnv", "PointEnv", "StepResult", "action_bounds", "make_batch_env"]
