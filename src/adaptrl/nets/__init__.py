"""Networks: policies usable with per-task parameter dicts."""

from .policy import ACTIVATIONS, GaussianMLPPolicy, Params
from .sac_nets import QNetwork, TanhGaussianActor, TwinQ

__all__ = ["ACTIVATIONS", "GaussianMLPPolicy", "Params", "QNetwork", "TanhGaussianActor", "TwinQ"]
