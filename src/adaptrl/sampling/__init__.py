"""Rollouts of many tasks at once, the `Episodes` container, GAE and the linear baseline."""

from .episodes import Episodes, LinearFeatureBaseline
from .replay import ReplayBuffer
from .sampler import Actor, Sampler

__all__ = ["Actor", "Episodes", "LinearFeatureBaseline", "ReplayBuffer", "Sampler"]
