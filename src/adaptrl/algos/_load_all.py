"""Importing this module registers the built-in methods."""

from . import baselines, maml, reptile  # noqa: F401
