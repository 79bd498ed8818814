"""Meta-RL methods, one file each, sharing samplers, networks and optimizers."""

from .base import (
    ALGORITHMS,
    Adapted,
    BaseConfig,
    MetaAlgorithm,
    get_algorithm,
    option,
    register_algorithm,
)

__all__ = ["ALGORITHMS", "Adapted", "BaseConfig", "MetaAlgorithm", "get_algorithm", "option",
           "register_algorithm"]
