"""Meta-RL methods, one file each, sharing samplers, networks and optimizers."""

from .base import Adapted, BaseConfig, MetaAlgorithm, option
from .registry import ALGORITHMS, get_algorithm, register_algorithm

__all__ = ["ALGORITHMS", "Adapted", "BaseConfig", "MetaAlgorithm", "get_algorithm", "option",
           "register_algorithm"]
