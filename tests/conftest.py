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
