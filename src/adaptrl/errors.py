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


class NonFiniteError(FloatingPointError):
    """A NaN or infinity where training data or a method's numbers must be finite.

    what: the quantity (``"reward"``, ``"observation"``, ``"sac.critic.q1.0.weight"``).
    where: the boundary that caught it (``"sampled episodes (task 0, step 7)"``,
        ``"replay insert"``, ``"model rollouts ..."``, ``"the update"``).

    Raised where the value enters (the sampler and replay boundaries, a method's update); the
    runner refuses the iteration, restores the method's weights and optimizer states and goes
    on (see `adaptrl.runner`); the evaluation protocol marks the task. Not an `AdaptrlError`:
    it is caught and counted, and only a persistent one becomes a one-line user error.
    """

    def __init__(self, what: str, where: str):
        super().__init__(f"non-finite {what} in {where}")
        self.what, self.where = what, where
