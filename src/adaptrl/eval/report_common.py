"""Building blocks shared by the report modules (`adaptrl.eval.report` for one run and for the
returns of several, `adaptrl.eval.gap_report` for worst-case gaps and visited tasks).

    CompareEntry    one run in a comparison: label, folder, eval dict
    same_tasks      whether the runs of a comparison were evaluated on the same tasks
    budget_unit     what the budgets n of an evaluation count
    format_number   a table cell: ``1.23``, or ``—`` for a missing value
    grid_layout     the 2-D grid that task parameters form, if they form one
    save_png        write a matplotlib Figure as a PNG file
    method_styles   one colour per method across every curve, band and plot of a comparison
    legend_labels   legend labels that name each run once, without repeating the method
    ORACLE_STYLE    the oracle's line: neutral (dark grey, dashed), never a method's colour
    draw_band       a ci95 band that stays legible where methods overlap
    add_legend      a legend with each label once

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

ORACLE_STYLE = {"color": "0.25", "linestyle": (0, (5, 3)), "linewidth": 1.3, "zorder": 2}
"""The oracle's line in every plot: dark grey and dashed, so it is never read as a method."""
ORACLE_EXTRA_DASHES = [(0, (1, 2)), (0, (5, 2, 1, 2)), (0, (8, 3)), (0, (3, 1, 1, 1, 1, 1))]
"""Further neutral dash patterns, for comparisons whose runs have different oracles."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


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


def method_styles(entries: list[CompareEntry]) -> list[dict]:
    """``{"color", "marker"}`` per entry: one colour per method (the eval's ``algo``), in
    order of first appearance, so a method has the same colour in every curve, band and plot of
    a comparison; several runs of one method (seeds, presets) differ by marker."""
    from matplotlib import colormaps

    methods = list(dict.fromkeys(e.result["algo"] for e in entries))
    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"].colors
    seen: dict[str, int] = {}
    styles = []
    for e in entries:
        method = e.result["algo"]
        k = seen[method] = seen.get(method, -1) + 1
        styles.append({"color": palette[methods.index(method) % len(palette)],
                       "marker": MARKERS[k % len(MARKERS)]})
    return styles


def legend_labels(entries: list[CompareEntry]) -> list[str]:
    """Legend labels that say each thing once: the method alone when it has one run in the
    comparison; else its run folder, which usually names the method already (``maml-s1``), or
    ``method (folder)`` when it does not."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.result["algo"]] = counts.get(e.result["algo"], 0) + 1
    labels = []
    for e in entries:
        method = e.result["algo"]
        folder = e.label[len(method) + 2:-1] if e.label.startswith(f"{method} (") else e.label
        if counts[method] == 1:
            labels.append(method)
        else:
            labels.append(folder if method in folder else f"{method} ({folder})")
    return labels


def draw_band(ax, x, low, high, color) -> None:
    """A ci95 band: a light fill with thin edges in the method's colour, under the lines, so
    overlapping bands of several methods stay apart."""
    ax.fill_between(x, low, high, color=color, alpha=0.12, linewidth=0, zorder=1)
    for edge in (low, high):
        ax.plot(x, edge, color=color, alpha=0.55, linewidth=0.7, zorder=1)


def add_legend(ax, **kwargs) -> None:
    """The legend, each label once (the first line drawn with it), the oracle lines last."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(reversed(labels), reversed(handles)))
    order = sorted(dict.fromkeys(labels),
                   key=lambda label: getattr(unique[label], "get_color", lambda: None)()
                   == ORACLE_STYLE["color"])
    ax.legend([unique[label] for label in order], order, **{"fontsize": 8, "loc": "best",
                                                           **kwargs})


def save_png(fig: Figure, path) -> Path:
    """Write ``fig`` to ``path`` as a PNG (120 dpi, tight bounding box); returns the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return write_file(path, buffer.getvalue())
