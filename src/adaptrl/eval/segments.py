"""`adaptrl compare` for families whose dynamics change within an episode
(``family.change_step``, e.g. ``cheetah-crippled-midway``): the return before and after the
change per method and budget, and the reward over the episode, from each evaluation's
``segments`` (`adaptrl.eval.protocol`).

    segment_table(entries, groups)    Markdown: method, n, seeds, return before / after the
                                      change (mean over seeds ± the 95% t-interval over seeds)
    plot_segment_curves(...)          the mean reward per step over the episode, one line per
                                      method and budget, averaged over seeds, the change marked

Runs are grouped as `adaptrl.eval.seeds` groups them (a run alone is a group of one seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .report_common import ORACLE_STYLE, CompareEntry, add_legend, format_number, save_png
from .stats import ci95_half_width

SMOOTH = 10
"""Steps of the moving average drawn over the per-step reward curves."""


def _units(entries: list[CompareEntry], groups) -> list[tuple[str, list[CompareEntry]]]:
    if groups is None:
        return [(e.label, [e]) for e in entries]
    return [(g.label, g.entries) for g in groups]


def has_segments(entries: list[CompareEntry]) -> bool:
    return all(e.result.get("segments") for e in entries)


def segment_table(entries: list[CompareEntry], groups=None) -> str:
    """Markdown: per method and budget, the return before and after the change."""
    change = entries[0].result["segments"]["change_step"]
    lines = [f"return before the dynamics change (steps 0–{change - 1}) and after it (steps "
             f"{change}–), mean over seeds ± the 95% t-interval over seeds", "",
             "| method | n | seeds | before | after |", "|---|---:|---:|---:|---:|"]
    for label, members in _units(entries, groups):
        for b, n in enumerate(members[0].result["steps"]):
            cells = []
            for key in ("before", "after"):
                values = np.asarray([e.result["segments"][key][b] for e in members
                                     if e.result["segments"][key][b] is not None], np.float64)
                ci = ci95_half_width(values)
                cells.append("—" if not len(values) else format_number(float(values.mean()))
                             + ("" if ci is None else f" ± {ci:.2f}"))
            lines.append(f"| {label} | {n} | {len(members)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def plot_segment_curves(entries: list[CompareEntry], groups, split: str, path) -> Path | None:
    """The mean reward at each step of an episode (moving average over `SMOOTH` steps),
    averaged over a group's seeds: one colour per method, solid for its largest budget and
    dashed for the others; the change step marked. None when no run has a reward curve."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    units = _units(entries, groups)
    palette = [to_hex(c) for c in colormaps["tab10"].colors]
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    drawn = False
    kernel = np.ones(SMOOTH) / SMOOTH
    for i, (label, members) in enumerate(units):
        steps = members[0].result["steps"]
        for b, n in enumerate(steps):
            curves = [e.result["segments"]["reward_curve"][b] for e in members
                      if e.result["segments"]["reward_curve"][b] is not None]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            mean = np.mean([c[:length] for c in curves], axis=0)
            smooth = np.convolve(mean, kernel, mode="valid")
            ax.plot(np.arange(len(smooth)) + (SMOOTH - 1) / 2, smooth,
                    color=palette[i % len(palette)], linewidth=1.4,
                    linestyle="-" if b == len(steps) - 1 else (0, (4, 2)),
                    label=f"{label}, n = {n} ({len(curves)} seed{'s' * (len(curves) > 1)})")
            drawn = True
    if not drawn:
        return None
    ax.axvline(entries[0].result["segments"]["change_step"], label="dynamics change",
               **ORACLE_STYLE)
    ax.set_xlabel("control step of the episode")
    ax.set_ylabel(f"mean reward per step ({SMOOTH}-step average)")
    ax.set_title(f"{entries[0].result['family']} ({split}): reward over the episode")
    ax.grid(True, alpha=0.3)
    add_legend(ax)
    return save_png(fig, path)
