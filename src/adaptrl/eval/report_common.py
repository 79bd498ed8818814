"""Building blocks shared by the report modules (`adaptrl.eval.report` for one run and for the
returns of several, `adaptrl.eval.gap_report` for worst-case gaps and visited tasks).

    CompareEntry    one run in a comparison: label, folder, eval dict
    same_tasks      whether the runs of a comparison were evaluated on the same tasks
    budget_unit     what the budgets n of an evaluation count
    format_number   a table cell: ``1.23``, or ``—`` for a missing value
    grid_layout     the 2-D grid that task parameters form, if they form one
    save_png        write a matplotlib Figure as a PNG file

Both report modules import this one and it imports neither, so the dependency between them
runs one way (``report`` → ``gap_report``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .protocol import write_file

MAX_ANNOTATED_CELLS = 8  # write the value into each heatmap cell up to 8×8 grids


@dataclass
class CompareEntry:
    """One run in a comparison: its label (``algo (folder)``), folder and eval dict."""

    label: str
    run_dir: Path
    result: dict


def same_tasks(entries: list[CompareEntry]) -> bool:
    """Whether every run was evaluated on the same task parameters."""
    first = [t["params"] for t in entries[0].result["tasks"]]
    return all([t["params"] for t in e.result["tasks"]] == first for e in entries[1:])


def budget_unit(result: dict) -> str:
    """What the budgets of an evaluation count (older eval.json files: adaptation steps)."""
    return result.get("budget_unit", "adaptation steps")


def format_number(x) -> str:
    """A table cell: two decimals, or an em dash for None."""
    return "—" if x is None else f"{x:.2f}"


def grid_layout(tasks) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """If 2-D task parameters ``[T, 2]`` form a full rectangular grid (≥ 2 values per axis),
    ``(xs [X], ys [Y], cell [T, 2])`` with ``cell[i] = (row iy, column ix)`` of task i;
    otherwise None."""
    tasks = np.asarray(tasks, dtype=np.float64)
    if tasks.ndim != 2 or tasks.shape[1] != 2:
        return None
    xs, ix = np.unique(tasks[:, 0], return_inverse=True)
    ys, iy = np.unique(tasks[:, 1], return_inverse=True)
    if len(xs) < 2 or len(ys) < 2 or len(tasks) != len(xs) * len(ys):
        return None
    if len(set(zip(ix.tolist(), iy.tolist()))) != len(tasks):
        return None
    return xs, ys, np.stack([iy, ix], axis=1)


def save_png(fig: Figure, path) -> Path:
    """Write ``fig`` to ``path`` as a PNG (120 dpi, tight bounding box); returns the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return write_file(path, buffer.getvalue())
