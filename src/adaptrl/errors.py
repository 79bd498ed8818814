"""User-facing errors: the CLI prints these as one line, without a traceback."""

from __future__ import annotations

import difflib


class AdaptrlError(Exception):
    """An error caused by user input (a bad name, shape, file or setting)."""


class UnknownNameError(AdaptrlError, KeyError):
    def __init__(self, kind: str, name: str, known):
        known = sorted(known)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        super().__init__(f"unknown {kind} '{name}'{hint}; known: {', '.join(known)}")
        self.message = self.args[0]

    def __str__(self):  # KeyError would quote the message
        return self.message
