"""Importing this module registers the built-in methods."""
