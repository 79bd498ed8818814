"""Shared fixtures."""

import pytest
import torch

import adaptrl.envs  # noqa: F401  (first, before MuJoCo: sets MUJOCO_GL=egl without a display)


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for tests of tiny problems: spinning OpenMP threads make them
    much slower when the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ─── Meta-World (the optional extra; `make test-metaworld` runs its tests on mujoco 3.3.0) ──
def metaworld_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("metaworld") is not None


needs_metaworld = pytest.mark.skipif(not metaworld_installed(),
                                     reason="Meta-World is not installed (make test-metaworld)")


def family_params(names):
    """``names`` as pytest parameters, the Meta-World families skipped without metaworld."""
    from adaptrl.names import METAWORLD_FAMILIES

    return [pytest.param(n, marks=needs_metaworld) if n in METAWORLD_FAMILIES else n
            for n in names]
