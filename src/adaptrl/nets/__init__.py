"""Networks: policies usable with per-task parameter dicts, and their sampler policies."""

from .policy import ACTIVATIONS, GaussianMLPActor, GaussianMLPPolicy, Params
from .recurrent import CategoricalGRUPolicy, GaussianGRUPolicy, GRUActor, GRUPolicy
from .sac_nets import HeadRollout, QNetwork, TanhGaussianActor, TanhGaussianRollout, TwinQ

__all__ = ["ACTIVATIONS", "CategoricalGRUPolicy", "GRUActor", "GRUPolicy", "GaussianGRUPolicy",
           "GaussianMLPActor", "GaussianMLPPolicy", "HeadRollout", "Params", "QNetwork",
           "TanhGaussianActor", "TanhGaussianRollout", "TwinQ"]
