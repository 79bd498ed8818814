"""Rollouts of many tasks at once: the rollout contract (policies, snapshots), the one rollout
loop, sampler backends, the `Episodes` container, GAE and the linear baseline, replay buffers.
This package imports no network class."""

from .backends import make_sampler
from .episodes import Episodes, LinearFeatureBaseline
from .model import ModelEnv, ModelSampler
from .numpy_io import NumpyPolicy, episodes_from_records
from .policy import (
    AppendToObservation,
    ContinueTrial,
    MemorylessPolicy,
    Policy,
    PolicySnapshot,
    ScaleActions,
    UniformPolicy,
    class_path,
    snapshot_tensors,
)
from .replay import ReplayBuffer
from .sampler import LocalSampler, Sampler, rollout

__all__ = ["AppendToObservation", "ContinueTrial", "Episodes", "LinearFeatureBaseline",
           "LocalSampler", "MemorylessPolicy", "ModelEnv", "ModelSampler", "NumpyPolicy", "Policy",
           "PolicySnapshot", "ReplayBuffer", "Sampler", "ScaleActions", "UniformPolicy",
           "class_path", "episodes_from_records", "make_sampler", "rollout",
           "snapshot_tensors"]
