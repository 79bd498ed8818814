"""Config fields with help text, shared by every layer's config dataclasses (no imports)."""

from __future__ import annotations

from dataclasses import field


def option(default, help: str, **kwargs):
    """A dataclass field with its one-line help text (shown by ``--help`` and in errors);
    mutable defaults (lists, dicts, tuples) are copied per instance."""
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help},
                     **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)
