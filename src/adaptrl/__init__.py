"""adaptrl: meta-reinforcement learning that adapts from a handful of samples.

Importing the package registers every task family's Gymnasium view as ``adaptrl/<Name>-v0``.
``adaptrl.load_run(RUN_DIR)`` opens a trained run (`adaptrl.api`, imported on first use).
"""

__version__ = "0.1.0"

import os as _os

# GNU OpenMP's idle workers spin for 300,000 rounds after each parallel region by default. A
# recurrent policy's step (torch on two threads) would then take the simulator's cores for a
# millisecond after every step; 30,000 rounds keep torch's back-to-back kernels fast and leave
# the cores to MuJoCo (docs/blackbox.md, recurrent sampling). Read once, when torch loads: it
# takes effect when adaptrl is imported first, and a value the user set wins.
_os.environ.setdefault("GOMP_SPINCOUNT", "30000")

from .names import register_gym_ids as _register_gym_ids  # noqa: E402

_register_gym_ids()  # names only: importing adaptrl does not import torch


def __getattr__(name):
    # the Python API is imported on first use, so that `import adaptrl` stays light
    if name in ("load_run", "TrainedMethod"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'adaptrl' has no attribute {name!r}")
