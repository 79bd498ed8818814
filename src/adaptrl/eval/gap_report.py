"""Worst-case reports across runs, and the tasks visited during meta-training.

For several runs evaluated on one split (`adaptrl compare`, see `report.write_compare`):

    worst-case gap table   rows = runs, columns = budgets n: G_n^max = max_ψ (A*(ψ) − A_n(ψ))
                           (appended to compare.md when any run has an oracle)
    compare_worst_gap.png  G_n^max vs n, one line per run (AdMRL Fig. 3b)
    compare_heatmaps.png   gap per cell of a 2-D task grid, rows = runs, columns = budgets, one
                           colour scale (AdMRL Fig. 3a); the return per cell without an oracle

For meta-training runs that log the task of each iteration as ``task/<param>`` columns of
metrics.csv (AdMRL, MB-Unif, MB-Gauss):

    `plot_visited_tasks`   the visited ψ over Ψ, numbered in visiting order, one panel per run
                           (AdMRL Fig. 4a); `adaptrl plot-tasks RUN_DIR... --out FILE.png`
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..errors import AdaptrlError
from ..tasks import get_family
from .report_common import (
    MAX_ANNOTATED_CELLS,
    CompareEntry,
    add_legend,
    budget_unit,
    format_number,
    grid_layout,
    legend_labels,
    method_styles,
    same_tasks,
    save_png,
)


# ─── worst-case gap across runs ──────────────────────────────────────────────────────────────
def _has_gaps(entry: CompareEntry) -> bool:
    return entry.result["summary"].get("gap_max") is not None


def format_worst_gap_table(entries: list[CompareEntry], split: str) -> str | None:
    """Markdown: one row per run, one column per budget n, each cell G_n^max (the gap mean in
    parentheses); None when no run has an oracle."""
    if not any(_has_gaps(e) for e in entries):
        return None
    steps = sorted({int(n) for e in entries for n in e.result["steps"]})
    kinds = sorted({e.result.get("oracle_kind") or "?" for e in entries if _has_gaps(e)})
    lines = [f"worst-case gap G_n^max = max over tasks of A*(ψ) − A_n(ψ), `{split}` split "
             f"({', '.join(kinds)} oracle); gap mean in parentheses; lower is better", "",
             "| run | " + " | ".join(f"n={n}" for n in steps) + " | n counts |",
             "|---|" + "---:|" * len(steps) + "---|"]
    for e in entries:
        s = e.result["summary"]
        by_step = {int(n): b for b, n in enumerate(e.result["steps"])}
        cells = []
        for n in steps:
            if n not in by_step or not _has_gaps(e):
                cells.append("—")
                continue
            b = by_step[n]
            cells.append(f"{format_number(s['gap_max'][b])} ({format_number(s['gap_mean'][b])})")
        lines.append(f"| {e.label} | " + " | ".join(cells) + f" | {budget_unit(e.result)} |")
    return "\n".join(lines) + "\n"


def plot_worst_gap(entries: list[CompareEntry], split: str, path) -> Path | None:
    """G_n^max vs the budget n, one line per run with gaps in its method's colour (the gap
    mean dotted in the same colour; the legend names each run once and each line style once);
    None (nothing written) when no run has an oracle. Runs whose budgets count different
    things are drawn against adaptation samples per task."""
    with_gaps = [e for e in entries if _has_gaps(e)]
    if not with_gaps:
        return None
    units = {budget_unit(e.result) for e in with_gaps}
    by_samples = len(units) > 1
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    styles, labels = method_styles(entries), legend_labels(entries)
    for i, e in enumerate(entries):
        if not _has_gaps(e):
            continue
        result = e.result
        if by_samples:
            x = np.asarray([t["samples"] for t in result["tasks"]], dtype=np.float64).mean(0)
        else:
            x = np.asarray(result["steps"], dtype=np.float64)
        color = styles[i]["color"]
        ax.plot(x, np.asarray(result["summary"]["gap_max"], dtype=np.float64),
                marker=styles[i]["marker"], color=color, label=labels[i], zorder=3)
        ax.plot(x, np.asarray(result["summary"]["gap_mean"], dtype=np.float64), linestyle=":",
                color=color, linewidth=1, zorder=2)
    # the two line styles, once, in a neutral colour
    ax.plot([], [], color="0.3", marker="o", label="worst task (solid)")
    ax.plot([], [], color="0.3", linestyle=":", linewidth=1, label="mean over tasks (dotted)")
    if by_samples:
        ax.set_xlabel("adaptation samples per task")
    else:
        ax.set_xlabel(units.pop())
        ax.set_xticks(sorted({int(n) for e in with_gaps for n in e.result["steps"]}))
    ax.set_ylabel("gap to the oracle, A* − Aₙ")
    ax.set_title(f"{entries[0].result['family']} ({split}): sub-optimality gap, worst task "
                 "and mean")
    ax.grid(True, alpha=0.3)
    add_legend(ax)
    return save_png(fig, path)


def _cell_values(result: dict, use_gap: bool) -> np.ndarray:
    """Per task and budget ``[T, B]``: the gap A* − A_n, or the return A_n."""
    returns = np.asarray([t["returns"] for t in result["tasks"]], dtype=np.float64)
    if not use_gap:
        return returns
    oracle = np.asarray([t["oracle"] for t in result["tasks"]], dtype=np.float64)
    return oracle[:, None] - returns


def plot_compare_heatmaps(entries: list[CompareEntry], split: str, path) -> Path | None:
    """The gap per grid cell of every run side by side: rows = runs, columns = budgets (the
    union of the runs' budgets; empty where a run lacks one), one colour scale. Shows returns
    instead when some run has no oracle. None (nothing written) unless every run was evaluated
    on the same 2-D grid."""
    tasks = [t["params"] for t in entries[0].result["tasks"]]  # ψ of each task
    layout = grid_layout(tasks)
    if layout is None or not same_tasks(entries):
        return None
    xs, ys, cell = layout
    use_gap = all(t["oracle"] is not None for e in entries for t in e.result["tasks"])
    what, cmap = (("gap A* − Aₙ", "magma_r") if use_gap else ("return Aₙ (no oracle)",
                                                              "viridis"))
    steps = sorted({int(n) for e in entries for n in e.result["steps"]})
    maps = np.full((len(entries), len(steps), len(ys), len(xs)), np.nan)
    for r, e in enumerate(entries):
        values = _cell_values(e.result, use_gap)  # [T, B]
        for b, n in enumerate(e.result["steps"]):
            maps[r, steps.index(int(n)), cell[:, 0], cell[:, 1]] = values[:, b]
    vmin, vmax = float(np.nanmin(maps)), float(np.nanmax(maps))
    dx, dy = np.diff(xs).min(), np.diff(ys).min()
    extent = (xs[0] - dx / 2, xs[-1] + dx / 2, ys[0] - dy / 2, ys[-1] + dy / 2)
    names = entries[0].result.get("param_names") or ["ψ₀", "ψ₁"]
    annotate = len(xs) <= MAX_ANNOTATED_CELLS and len(ys) <= MAX_ANNOTATED_CELLS
    unit = budget_unit(entries[0].result)

    fig = Figure(figsize=(3.0 * len(steps) + 1.2, 2.8 * len(entries) + 0.6))
    axes = np.asarray(fig.subplots(len(entries), len(steps), sharex=True, sharey=True,
                                   squeeze=False))
    image = None
    for r, e in enumerate(entries):
        for b, n in enumerate(steps):
            ax = axes[r, b]
            if np.all(np.isnan(maps[r, b])):
                ax.set_axis_off()
                continue
            image = ax.imshow(maps[r, b], origin="lower", extent=extent, aspect="auto",
                              cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            if annotate:
                middle = (vmin + vmax) / 2
                for iy, y in enumerate(ys):
                    for ix, x in enumerate(xs):
                        v = maps[r, b, iy, ix]
                        if math.isnan(v):
                            continue
                        dark = (v > middle) == (cmap == "magma_r")
                        ax.text(x, y, f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}",
                                ha="center", va="center", fontsize=6,
                                color="white" if dark else "black")
            worst = np.nanmax(maps[r, b]) if use_gap else np.nanmin(maps[r, b])
            ax.set_title(f"{e.label}\nn={n}: {'max' if use_gap else 'min'} {worst:.1f}",
                         fontsize=8)
            if r == len(entries) - 1:
                ax.set_xlabel(names[0])
            if b == 0:
                ax.set_ylabel(names[1])
    if image is not None:
        fig.colorbar(image, ax=list(axes.ravel()), label=what, shrink=0.9)
    fig.suptitle(f"{entries[0].result['family']} ({split}): {what} per task, n = {unit}",
                 y=1.0)
    return save_png(fig, path)


def write_worst_case(entries: list[CompareEntry], split: str, out_dir
                     ) -> tuple[str | None, dict[str, Path]]:
    """The worst-case table (or None) and the files written into ``out_dir``:
    ``{"worst_gap_plot": compare_worst_gap.png, "heatmaps": compare_heatmaps.png}`` (each only
    when it applies)."""
    out_dir = Path(out_dir)
    paths = {}
    plot = plot_worst_gap(entries, split, out_dir / "compare_worst_gap.png")
    if plot is not None:
        paths["worst_gap_plot"] = plot
    heatmaps = plot_compare_heatmaps(entries, split, out_dir / "compare_heatmaps.png")
    if heatmaps is not None:
        paths["heatmaps"] = heatmaps
    return format_worst_gap_table(entries, split), paths


# ─── tasks visited during meta-training ──────────────────────────────────────────────────────
def read_visited_tasks(run_dir) -> dict:
    """The task of every logged iteration of a run, from its metrics.csv ``task/<param>``
    columns (``task/next_<param>`` columns are skipped).

    Returns ``{"algo", "family" (None if unknown), "param_names": [k], "iterations": [I],
    "tasks": [I, k] float64}``; AdaptrlError when the run logs no tasks.
    """
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        raise AdaptrlError(f"run {run_dir} has no metrics.csv")
    algo, family = run_dir.name, None
    config = run_dir / "config.yaml"
    if config.is_file():
        try:
            record = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, ValueError):  # ValueError: not UTF-8
            record = {}
        if isinstance(record, dict):
            algo, family = str(record.get("algo", algo)), record.get("family")
    try:
        with open(metrics, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise AdaptrlError(f"{metrics} is not a CSV text file ({' '.join(str(err).split())})"
                           ) from None
    if not rows:
        raise AdaptrlError(f"{metrics} is empty")
    header, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    if family is not None:
        names = list(get_family(family).task_names)
    else:
        names = [c[len("task/"):] for c in header
                 if c.startswith("task/") and not c.startswith("task/next_")]
    columns = [f"task/{n}" for n in names]
    missing = [c for c in columns if c not in header]
    if not names or missing:
        raise AdaptrlError(f"run {run_dir} logs no visited tasks (metrics.csv has no "
                           f"{', '.join(missing) or 'task/<param>'} column); only methods that "
                           "train one logged task per iteration (admrl, mb-unif, mb-gauss) do")
    index = [header.index(c) for c in columns]
    it_col = header.index("iteration") if "iteration" in header else None
    tasks, iterations = [], []
    for i, row in enumerate(body):
        try:
            values = [float(row[j]) for j in index]
        except ValueError:  # empty cell: the iteration logged no task
            continue
        try:
            iterations.append(int(float(row[it_col])) if it_col is not None else i + 1)
        except (ValueError, OverflowError):
            raise AdaptrlError(f"{metrics}: row {i + 1} has iteration {row[it_col]!r}, not a "
                               f"number") from None
        tasks.append(values)
    if not tasks:
        raise AdaptrlError(f"run {run_dir}: metrics.csv has task columns but no values")
    return {"algo": algo, "family": family, "param_names": names, "iterations": iterations,
            "tasks": np.asarray(tasks, dtype=np.float64)}


def plot_visited_tasks(run_dirs, path, labels=None) -> Path:
    """Visited tasks of each run over Ψ, one panel per run, numbered in visiting order and
    joined by a thin line; Ψ drawn as a box. 2-D families: ψ₀ vs ψ₁; 1-D: ψ vs iteration;
    more parameters: the first two."""
    if not run_dirs:
        raise AdaptrlError("give at least one run folder")
    runs = [read_visited_tasks(d) for d in run_dirs]
    labels = labels or [f"{r['algo']} ({Path(d).name})" for r, d in zip(runs, run_dirs)]
    fig = Figure(figsize=(4.2 * len(runs) + 0.8, 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(runs), squeeze=False)[0])
    scatter = None
    for ax, run, label in zip(axes, runs, labels):
        tasks, order = run["tasks"], np.arange(1, len(run["tasks"]) + 1)
        names = run["param_names"]
        if tasks.shape[1] == 1:
            x, y = order.astype(np.float64), tasks[:, 0]
            xlabel, ylabel = "training task (order)", names[0]
        else:
            x, y = tasks[:, 0], tasks[:, 1]
            xlabel, ylabel = names[0], names[1]
        if run["family"] is not None:
            family = get_family(run["family"])
            if family.discrete is None:
                low, high = family.low, family.high
                if tasks.shape[1] == 1:
                    ax.axhspan(low[0], high[0], color="0.9", zorder=0, label="Ψ")
                else:
                    ax.add_patch(Rectangle((low[0], low[1]), high[0] - low[0], high[1] - low[1],
                                           fill=False, edgecolor="0.4", linestyle="--",
                                           label="Ψ"))
                    pad_x, pad_y = 0.05 * (high[0] - low[0]), 0.05 * (high[1] - low[1])
                    ax.set_xlim(min(low[0], x.min()) - pad_x, max(high[0], x.max()) + pad_x)
                    ax.set_ylim(min(low[1], y.min()) - pad_y, max(high[1], y.max()) + pad_y)
        ax.plot(x, y, color="0.6", linewidth=0.8, zorder=1)
        scatter = ax.scatter(x, y, c=order, cmap="viridis", s=36, zorder=2,
                             vmin=1, vmax=max(len(order), 2))
        for xi, yi, k in zip(x, y, order):
            ax.annotate(str(k), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        extra = f" (first 2 of {tasks.shape[1]} parameters)" if tasks.shape[1] > 2 else ""
        ax.set_title(f"{label}: {len(tasks)} tasks{extra}", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    if scatter is not None:
        fig.colorbar(scatter, ax=list(axes), label="visiting order", shrink=0.9)
    families = sorted({r["family"] or "?" for r in runs})
    fig.suptitle(f"tasks visited during meta-training ({', '.join(families)})", y=1.02)
    return save_png(fig, path)
