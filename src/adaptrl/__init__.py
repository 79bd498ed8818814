"""adaptrl: meta-reinforcement learning that adapts from a handful of samples.

Importing the package registers every task family's Gymnasium view as ``adaptrl/<Name>-v0``.
"""

__version__ = "0.1.0"

from .envs.gym_view import register_all as _register_gym_views  # noqa: E402

_register_gym_views()
