"""Task families (parameter spaces Ψ, splits, rewards r_ψ differentiable in ψ)."""

from ..errors import UnknownNameError
from .base import (
    BoundarySplit,
    BoxSplit,
    CircleSplit,
    DiscreteSplit,
    DiskSplit,
    Split,
    TaskFamily,
    UnavailableSplit,
    gym_name,
    sample_box_boundary,
)
from .families import REGISTRY, highdim_normalizer


def get_family(name: str) -> TaskFamily:
    """The registered family called ``name``; a clear error listing the known ones otherwise."""
    if isinstance(name, TaskFamily):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownNameError("task family", name, REGISTRY) from None


def family_names() -> list[str]:
    return list(REGISTRY)


__all__ = [
    "BoundarySplit", "BoxSplit", "CircleSplit", "DiscreteSplit", "DiskSplit", "Split",
    "TaskFamily", "UnavailableSplit", "get_family", "family_names", "gym_name",
    "highdim_normalizer", "sample_box_boundary", "REGISTRY",
]
