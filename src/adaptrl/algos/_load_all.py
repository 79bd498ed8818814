"""Importing this module registers the built-in methods."""

from . import admrl, baselines, flap, maml, pearl, reptile  # noqa: F401
