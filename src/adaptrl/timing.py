"""Phase timing: methods say which phase they are in; the runner owns the clock and logs it.

A method marks its phases (``with self.phase("virtual"):``; sampling through
`MetaAlgorithm.rollout` is the phase ``sample``) and never reads a timer. Phases may nest; each
second is charged to the innermost phase only, so the phases of an iteration add up to at most
its wall time, and the rest is its ``update`` time (`timing_metrics`).
"""

from __future__ import annotations

import contextlib
import time


class PhaseClock:
    """Exclusive wall time per named phase since the last `take`."""

    def __init__(self):
        self._totals: dict[str, float] = {}
        self._stack: list[str] = []
        self._since = 0.0

    def _charge(self, now: float) -> None:
        if self._stack:
            name = self._stack[-1]
            self._totals[name] = self._totals.get(name, 0.0) + now - self._since
        self._since = now

    @contextlib.contextmanager
    def phase(self, name: str):
        """Charge the time inside the block to ``name`` (minus nested phases)."""
        self._charge(time.perf_counter())
        self._stack.append(name)
        try:
            yield
        finally:
            self._charge(time.perf_counter())
            self._stack.pop()

    def take(self) -> dict[str, float]:
        """Seconds per phase since the last call (then starts again from zero)."""
        if self._stack:
            self._charge(time.perf_counter())
        totals, self._totals = self._totals, {}
        return totals


def timing_metrics(phases: dict[str, float], step_s: float, declared=()) -> dict[str, float]:
    """An iteration's ``time/<phase>_s`` columns: ``time/sample_s`` and every ``declared``
    phase always (0 when absent), any other phase the method marked, and ``time/update_s``,
    the rest of the step's ``step_s`` seconds."""
    out = {"time/sample_s": phases.get("sample", 0.0)}
    out.update({f"time/{name}_s": phases.get(name, 0.0) for name in declared})
    out.update({f"time/{name}_s": s for name, s in phases.items() if name != "sample"})
    out["time/update_s"] = max(step_s - sum(phases.values()), 0.0)
    return out
