"""Batched simulators (T tasks × N episodes in lock-step) and Gymnasium views."""

from ..tasks import TaskFamily, get_family
from .base import BatchEnv, PointEnv, StepResult


def make_batch_env(family: TaskFamily | str, num_tasks: int, num_episodes: int,
                   threads: int | None = None) -> BatchEnv:
    """The batched simulator for ``family`` running ``num_tasks`` × ``num_episodes`` episodes."""
    family = get_family(family)
    if family.body == "point":
        return PointEnv(family, num_tasks, num_episodes)
    from .mujoco_env import MujocoBatchEnv

    return MujocoBatchEnv(family, num_tasks, num_episodes, threads=threads)


__all__ = ["BatchEnv", "PointEnv", "StepResult", "make_batch_env"]
