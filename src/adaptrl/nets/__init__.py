"""Networks: policies usable with per-task parameter dicts."""

from .policy import ACTIVATIONS, GaussianMLPPolicy, Params

__all__ = ["ACTIVATIONS", "GaussianMLPPolicy", "Params"]
