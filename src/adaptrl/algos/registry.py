"""The methods by name: the built-in ones, and any registered later (plug-ins, tests).

This module imports every method; the methods import only `adaptrl.algos.base`, so the registry
and the methods do not import each other.
"""

from __future__ import annotations

from ..errors import UnknownNameError
from .admrl import AdMRL, MBGauss, MBUniform
from .base import MetaAlgorithm
from .baselines import MultiTaskPretrain, RandomInit, TaskConditionedOracle
from .flap import FLAP
from .grbal import MBMPC, GrBAL, MBMPCFinetune
from .maml import FOMAML, MAML
from .pearl import PEARL
from .reptile import Reptile
from .rl2 import RL2, SNAIL

ALGORITHMS: dict[str, type[MetaAlgorithm]] = {
    cls.name: cls for cls in (MAML, FOMAML, Reptile, RandomInit, MultiTaskPretrain,
                              TaskConditionedOracle, PEARL, FLAP, AdMRL, MBUniform, MBGauss,
                              RL2, SNAIL, GrBAL, MBMPC, MBMPCFinetune)
}


def register_algorithm(cls: type[MetaAlgorithm]) -> type[MetaAlgorithm]:
    """Make ``cls`` available by its ``name`` (a class decorator, for methods outside this
    package)."""
    ALGORITHMS[cls.name] = cls
    return cls


def get_algorithm(name: str) -> type[MetaAlgorithm]:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise UnknownNameError("algorithm", name, ALGORITHMS) from None
