"""Choosing a sampler backend by name: ``--backend local|ray`` (the local one imports no Ray)."""

from __future__ import annotations

import importlib

from ..errors import AdaptrlError, UnknownNameError
from ..tasks import TaskFamily
from .sampler import LocalSampler, Sampler

BACKENDS = ("local", "ray")
RAY_INSTALL_HINT = "pip install 'adaptrl[ray]'  (or: pip install 'ray>=2.9')"


def make_sampler(family: TaskFamily | str, backend: str = "local", workers: int | None = None,
                 address: str | None = None) -> Sampler:
    """The sampler backend ``backend``: ``"local"`` (`LocalSampler`, the default; imports no
    Ray) or ``"ray"`` (`adaptrl.sampling.ray_backend.RaySampler` on ``workers`` actors, default
    2, of the cluster at ``address``, default a local one)."""
    if backend == "local":
        if workers is not None or address is not None:
            raise AdaptrlError("--workers and --ray-address need --backend ray")
        return LocalSampler(family)
    if backend == "ray":
        return ray_backend().RaySampler(family, workers if workers is not None else 2,
                                        address=address)
    raise UnknownNameError("sampler backend", backend, BACKENDS)


def ray_backend():
    """The module `adaptrl.sampling.ray_backend`, or an `AdaptrlError` saying how to install
    Ray when it is missing."""
    try:
        module = importlib.import_module(f"{__package__}.ray_backend")
    except ImportError as err:
        if (err.name or "").split(".")[0] != "ray":
            raise
        raise AdaptrlError(f"--backend ray needs Ray, which is not installed: "
                           f"{RAY_INSTALL_HINT}") from None
    return module
