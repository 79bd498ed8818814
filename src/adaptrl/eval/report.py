"""Reports of evaluations: Markdown tables and PNG plots, for one run or several side by side.

One run (`write_reports`, next to its ``eval.json``):
    eval.md           the table: rows = budgets; mean ± ci95, gap mean, gap max, oracle, ...
    curve.png         adaptation curve: mean return with its ci95 band vs adaptation steps,
                      the oracle's mean as a dashed line
    gap_heatmap.png   only when the tasks form a 2-D grid: the gap per grid cell, one panel per
                      budget (the return per cell when the family has no oracle)
    reward_curve.png  only for families whose dynamics change within an episode: the mean
                      reward at each step, one line per budget, the change step marked

Several runs (`write_compare`): compare.md (rows = runs, columns = budgets) and compare.png
(every run's adaptation curve on one plot); with an oracle also the worst-case gap table (in
compare.md), compare_worst_gap.png and, for a shared 2-D grid, compare_heatmaps.png (see
`adaptrl.eval.gap_report`); compare.md links the runs' videos (`adaptrl eval --video`) and,
for families that report success (Meta-World), gives each run's success rate per budget.
For families whose dynamics change within an episode (`adaptrl.eval.segments`), compare.md
adds the return before and after the change and compare_reward_curve.png the reward over the
episode. When some runs differ only in their seed (`adaptrl.eval.seeds`), compare.md starts with the
table aggregated over seeds (mean and 95% t-interval over seeds per budget, the per-seed table
below it), compare.png has one band per method over seeds, compare_runs.png every run's own
curve, compare.json the numbers.

Plots use matplotlib's object API (``Figure`` + Agg canvas), never pyplot's global state, so
they work headless and in threads.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..errors import AdaptrlError
from ..progress import progress_bar
from .gap_report import write_worst_case
from .protocol import eval_dir, read_eval_json, write_file
from .report_common import (
    MAX_ANNOTATED_CELLS,
    ORACLE_EXTRA_DASHES,
    ORACLE_STYLE,
    CompareEntry,
    add_legend,
    budget_unit,
    draw_band,
    format_number,
    grid_layout,
    legend_labels,
    method_styles,
    same_tasks,
    save_png,
)
from .seeds import format_seed_table, plot_seed_groups, seed_groups, seed_summary
from .segments import has_segments, plot_segment_curves, segment_table
from .video import video_links


def _budget_stats(result: dict, key: str) -> list[float]:
    """Mean over tasks of a per-task list aligned with steps (adapt_ms, samples), without the
    ``nonfinite_tasks`` (as the summary)."""
    broken = set(result.get("nonfinite_tasks", ()))
    values = np.asarray([task[key] for i, task in enumerate(result["tasks"]) if i not in broken],
                        dtype=np.float64).reshape(-1, len(result["steps"]))  # [T, B]
    return values.mean(0).tolist() if len(values) else [math.nan] * len(result["steps"])


# ─── one run ─────────────────────────────────────────────────────────────────────────────────
def format_table(result: dict) -> str:
    """The Markdown table of one evaluation: one row per budget."""
    s = result["summary"]
    ms, samples = _budget_stats(result, "adapt_ms"), _budget_stats(result, "samples")
    lines = [
        f"**{result['algo']}** on `{result['family']}`, split `{result['split']}`: "
        f"{len(result['tasks'])} tasks × {result['episodes']} episodes"
        + (f", horizon {result['horizon']}" if result.get("horizon") else "")
        + f"; budget n = {budget_unit(result)}",
        "",
        "| n | return (mean ± ci95) | gap mean | gap max | oracle | adapt ms/task "
        "| samples/task |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    success = s.get("success")  # families that report success (Meta-World)
    if success is not None:
        lines[-2] += " success (mean ± ci95) |"
        lines[-1] += "---:|"
    for b, n in enumerate(result["steps"]):
        ci = s["ci95"][b]
        ret = format_number(s["mean"][b]) + ("" if ci is None else f" ± {ci:.2f}")
        gap_mean = None if s["gap_mean"] is None else s["gap_mean"][b]
        gap_max = None if s["gap_max"] is None else s["gap_max"][b]
        lines.append(f"| {n} | {ret} | {format_number(gap_mean)} | {format_number(gap_max)} | "
                     f"{format_number(s['oracle_mean'])} | {ms[b]:.1f} | {samples[b]:.0f} |")
        if success is not None:
            rate, rate_ci = success[b], s.get("success_ci95", [None] * len(success))[b]
            lines[-1] += (" — |" if rate is None else f" {100 * rate:.1f}%"
                          + ("" if rate_ci is None else f" ± {100 * rate_ci:.1f}") + " |")
    segments = result.get("segments")  # dynamics that change within an episode
    if segments:
        c = segments["change_step"]
        lines += ["", f"| n | return before the change (steps 0–{c - 1}) | after (steps {c}–) |",
                  "|---:|---:|---:|"]
        for b, n in enumerate(result["steps"]):
            lines.append(f"| {n} | {format_number(segments['before'][b])} | "
                         f"{format_number(segments['after'][b])} |")
    model = result.get("model")  # model-based methods (`adaptrl.algos.grbal`)
    if model:
        lines += ["", "| n | model error before adaptation | after | windows "
                      "| planning ms/step (median, p95) |", "|---:|---:|---:|---:|---:|"]
        for row in model:
            plan = ("—" if row["plan_ms_median"] is None
                    else f"{row['plan_ms_median']:.1f}, {row['plan_ms_p95']:.1f}")
            lines.append(f"| {row['n']} | {format_number(row['error_before'])} | "
                         f"{format_number(row['error_after'])} | {row['n_windows']} | {plan} |")
        envs = model[0]["envs"]
        lines += ["", "model error: the one-step mean squared error of the normalised Δs on the "
                      "evaluation transitions, before and after adapting on each transition's "
                      f"preceding window; planning time per control step for all {envs} "
                      "environments at once."]
    broken = result.get("nonfinite_tasks") or []
    if broken:
        shown = "; ".join(f"task {i} ψ={result['tasks'][i]['params']}" for i in broken[:5])
        lines += ["", f"Non-finite: {len(broken)} of {len(result['tasks'])} tasks met a NaN or "
                      f"infinity in adaptation or returns and are left out of the means "
                      f"({shown}{'; ...' if len(broken) > 5 else ''})."]
    if success is not None:
        lines += ["", "success: the fraction of evaluation episodes in which the task's success "
                      "flag was set at any step (every episode counted), averaged within each "
                      "task, then across tasks."]
    return "\n".join(lines) + "\n"


def plot_curve(result: dict, path) -> Path:
    """Adaptation curve of one evaluation: mean return ± ci95 vs adaptation steps, with the
    oracle's mean return as a neutral dashed line."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    kind = result.get("oracle_kind")
    _draw_curve(ax, result, label=result["algo"], color=method_styles(
                    [CompareEntry(result["algo"], Path(), result)])[0]["color"],
                oracle_label=f"oracle ({kind})" if kind else "oracle")
    ax.set_title(f"{result['algo']} on {result['family']} ({result['split']}, "
                 f"{len(result['tasks'])} tasks)")
    _finish_curve_axes(ax, result["steps"], budget_unit(result))
    return save_png(fig, path)


def plot_reward_curve(result: dict, path) -> Path | None:
    """For families whose dynamics change within an episode: the mean reward at each step of an
    episode, one line per budget, the change step marked; None for other families."""
    segments = result.get("segments")
    if not segments or not any(c is not None for c in segments["reward_curve"]):
        return None
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    colors = [to_hex(c) for c in colormaps["viridis"](np.linspace(0.1, 0.85,
                                                                 len(result["steps"])))]
    for b, n in enumerate(result["steps"]):
        curve = segments["reward_curve"][b]
        if curve is not None:
            ax.plot(np.arange(len(curve)), curve, color=colors[b], linewidth=1.2,
                    label=f"n = {n}")
    ax.axvline(segments["change_step"], label="dynamics change", **ORACLE_STYLE)
    ax.set_xlabel("control step of the episode")
    ax.set_ylabel("mean reward per step")
    ax.set_title(f"{result['algo']} on {result['family']} ({result['split']}): reward over the "
                 f"episode, n = {budget_unit(result)}")
    ax.grid(True, alpha=0.3)
    add_legend(ax)
    return save_png(fig, path)


def _draw_curve(ax, result: dict, label: str, color, oracle_label: str = "oracle",
                by_samples: bool = False, marker: str = "o", oracle_dashes=None) -> None:
    """Mean return vs budget (or vs adaptation samples per task) in the method's colour with
    its ci95 band, and the oracle mean as a neutral dashed line (if any; ``oracle_dashes``
    another neutral dash pattern)."""
    steps = np.asarray(_budget_stats(result, "samples") if by_samples else result["steps"])
    s = result["summary"]
    mean = np.asarray(s["mean"], dtype=np.float64)
    ax.plot(steps, mean, marker=marker, color=color, label=label, zorder=3)
    if all(c is not None for c in s["ci95"]):
        ci = np.asarray(s["ci95"], dtype=np.float64)
        draw_band(ax, steps, mean - ci, mean + ci, color)
    if s["oracle_mean"] is not None:
        style = ORACLE_STYLE if oracle_dashes is None else {**ORACLE_STYLE,
                                                            "linestyle": oracle_dashes}
        ax.axhline(s["oracle_mean"], label=oracle_label, **style)


def sample_axis_linthresh(samples) -> float | None:
    """Where a samples-per-task axis should turn logarithmic: the smallest positive sample
    count, when the positive counts span 20× or more (a black-box method's one episode beside
    MAML's thousands of samples per step would otherwise sit on x = 0); None keeps it linear."""
    positive = [float(s) for s in samples if s > 0]
    if not positive or max(positive) < 20 * min(positive):
        return None
    return min(positive)


def _finish_curve_axes(ax, steps, unit: str = "adaptation steps") -> None:
    """Labels, grid and legend; ``steps``: the x values drawn (budgets, or sample counts when
    ``unit`` is adaptation samples per task, which may turn the axis logarithmic)."""
    ax.set_xlabel(unit)
    ax.set_ylabel("mean return per episode")
    if unit != "adaptation samples per task":
        ax.set_xticks(sorted(set(int(n) for n in steps)))
    else:
        linthresh = sample_axis_linthresh(steps)
        if linthresh is not None:  # 0 stays linear, the rest logarithmic
            ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
            ax.set_xlabel(f"{unit} (log scale above {format_number(linthresh)})")
    ax.grid(True, alpha=0.3)
    add_legend(ax)


def plot_gap_heatmap(result: dict, path) -> Path | None:
    """Gap (oracle − return) per cell of a 2-D task grid, one panel per budget, on one colour
    scale; the return per cell when there is no oracle. None (nothing written) when the tasks do
    not form a 2-D grid."""
    layout = grid_layout([task["params"] for task in result["tasks"]])
    if layout is None:
        return None
    xs, ys, cell = layout
    returns = np.asarray([task["returns"] for task in result["tasks"]], dtype=np.float64)  # [T,B]
    has_oracle = all(task["oracle"] is not None for task in result["tasks"])
    if has_oracle:
        oracle = np.asarray([task["oracle"] for task in result["tasks"]], dtype=np.float64)
        values, what, cmap = oracle[:, None] - returns, "gap A* − Aₙ", "magma_r"
    else:
        values, what, cmap = returns, "return Aₙ (no oracle)", "viridis"
    steps = result["steps"]
    maps = np.full((len(steps), len(ys), len(xs)), np.nan)
    maps[:, cell[:, 0], cell[:, 1]] = values.T
    names = result.get("param_names") or ["ψ₀", "ψ₁"]
    dx, dy = np.diff(xs).min(), np.diff(ys).min()
    extent = (xs[0] - dx / 2, xs[-1] + dx / 2, ys[0] - dy / 2, ys[-1] + dy / 2)
    vmin, vmax = float(np.nanmin(maps)), float(np.nanmax(maps))

    fig = Figure(figsize=(3.4 * len(steps) + 1.2, 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(steps), sharey=True))
    for b, ax in enumerate(axes):
        image = ax.imshow(maps[b], origin="lower", extent=extent, aspect="auto", cmap=cmap,
                          vmin=vmin, vmax=vmax, interpolation="nearest")
        if len(xs) <= MAX_ANNOTATED_CELLS and len(ys) <= MAX_ANNOTATED_CELLS:
            middle = (vmin + vmax) / 2
            for iy, y in enumerate(ys):
                for ix, x in enumerate(xs):
                    v = maps[b, iy, ix]
                    dark = (v > middle) == (cmap == "magma_r")
                    ax.text(x, y, f"{v:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
        ax.set_title(f"{steps[b]} step{'s' if steps[b] != 1 else ''}")
        ax.set_xlabel(names[0])
    axes[0].set_ylabel(names[1])
    fig.colorbar(image, ax=list(axes), label=what, shrink=0.9)
    fig.suptitle(f"{result['algo']} on {result['family']}: {what} per task", y=1.02)
    return save_png(fig, path)


def write_reports(result: dict, out_dir) -> dict[str, Path]:
    """Write eval.md, curve.png and (for 2-D grids) gap_heatmap.png into ``out_dir``; returns
    ``{"table": ..., "curve": ..., "heatmap": ...}`` for the files written."""
    out_dir = Path(out_dir)
    paths = {"table": write_file(out_dir / "eval.md", format_table(result).encode()),
             "curve": plot_curve(result, out_dir / "curve.png")}
    curve = plot_reward_curve(result, out_dir / "reward_curve.png")
    if curve is not None:
        paths["reward_curve"] = curve
    heatmap = plot_gap_heatmap(result, out_dir / "gap_heatmap.png")
    if heatmap is not None:
        paths["heatmap"] = heatmap
    return paths


# ─── several runs ────────────────────────────────────────────────────────────────────────────
def load_compare_entries(run_dirs, split: str) -> list[CompareEntry]:
    """Each run's ``eval/<split>/eval.json``; AdaptrlError naming the run that lacks one."""
    if not run_dirs:
        raise AdaptrlError("give at least one run folder to compare")
    dirs = [Path(d) for d in run_dirs]
    for d in dirs:
        if not d.is_dir():
            raise AdaptrlError(f"run folder {d} does not exist")
    names = _short_names(dirs)
    entries = []
    for d, name in zip(dirs, names):
        path = eval_dir(d, split) / "eval.json"
        if not path.is_file():
            raise AdaptrlError(f"run {d} has no evaluation on split '{split}' ({path} is missing); "
                               f"run `adaptrl eval {d} --split {split}` first")
        result = read_eval_json(path)
        entries.append(CompareEntry(f"{result['algo']} ({name})", d, result))
    families = sorted({e.result["family"] for e in entries})
    if len(families) > 1:
        raise AdaptrlError(f"these runs were evaluated on different task families "
                           f"({', '.join(families)}); compare runs of one family")
    return entries


def _short_names(dirs: list[Path]) -> list[str]:
    """Folder names that tell runs apart: the base names, or paths below the common parent."""
    names = [d.resolve().name for d in dirs]
    if len(set(names)) == len(names):
        return names
    parent = default_compare_parent(dirs)
    return [os.path.relpath(d.resolve(), parent) for d in dirs]


def default_compare_parent(run_dirs) -> Path:
    """The deepest folder that contains every run folder."""
    parents = [str(Path(d).resolve().parent) for d in run_dirs]
    return Path(os.path.commonpath(parents))


def default_compare_dir(run_dirs, split: str) -> Path:
    """``<common parent of the runs>/compare-<split>``."""
    return default_compare_parent(run_dirs) / f"compare-{split}"


def format_compare_table(entries: list[CompareEntry], split: str) -> str:
    """Markdown: one row per run, one column per budget (mean return ± ci95), plus the oracle."""
    steps = sorted({int(n) for e in entries for n in e.result["steps"]})
    family = entries[0].result["family"]
    units = sorted({budget_unit(e.result) for e in entries})
    lines = [f"`{family}`, split `{split}`: mean return per episode after a budget n "
             f"({'; '.join(units)})"]
    if not same_tasks(entries):
        lines += ["", "note: the runs were evaluated on different task sets (seed, --num-tasks "
                  "or task file differ), so the rows are not paired"]
    lines.append("")
    lines.append("| run | " + " | ".join(f"n={n}" for n in steps) + " | oracle | n counts |")
    lines.append("|---|" + "---:|" * (len(steps) + 1) + "---|")
    for e in entries:
        s = e.result["summary"]
        by_step = {int(n): b for b, n in enumerate(e.result["steps"])}
        cells = []
        for n in steps:
            if n not in by_step:
                cells.append("—")
                continue
            b = by_step[n]
            ci = s["ci95"][b]
            cells.append(format_number(s["mean"][b]) + ("" if ci is None else f" ± {ci:.2f}"))
        lines.append(f"| {e.label} | " + " | ".join(cells)
                     + f" | {format_number(s['oracle_mean'])} | {budget_unit(e.result)} |")
    return "\n".join(lines) + "\n"


def format_compare_success(entries: list[CompareEntry]) -> str | None:
    """Markdown: each run's success rate per budget (± ci95 over tasks), for families that
    report success (Meta-World); None when no run reports it."""
    if not any(e.result["summary"].get("success") is not None for e in entries):
        return None
    steps = sorted({int(n) for e in entries for n in e.result["steps"]})
    lines = ["success rate per run (episodes with the task's success flag at any step, every "
             "evaluation episode counted; mean over tasks ± ci95)", "",
             "| run | " + " | ".join(f"n={n}" for n in steps) + " |",
             "|---|" + "---:|" * len(steps)]
    for e in entries:
        s = e.result["summary"]
        rates, cis = s.get("success"), s.get("success_ci95") or [None] * len(e.result["steps"])
        by_step = {int(n): b for b, n in enumerate(e.result["steps"])}
        cells = []
        for n in steps:
            rate = None if rates is None or n not in by_step else rates[by_step[n]]
            ci = None if rate is None else cis[by_step[n]]
            cells.append("—" if rate is None else f"{100 * rate:.1f}%"
                         + ("" if ci is None else f" ± {100 * ci:.1f}"))
        lines.append(f"| {e.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_compare(entries: list[CompareEntry], split: str, path) -> Path:
    """Every run's adaptation curve (mean ± ci95) on one plot, one colour per method; the
    oracle neutral and dashed, once when the runs share it, else once per run (its own dash
    pattern). Runs whose budgets count different things (steps,
    context rounds, real samples) are drawn against adaptation samples per task."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    oracles = [e.result["summary"]["oracle_mean"] for e in entries]
    known = [o for o in oracles if o is not None]
    shared = bool(known) and len(known) == len(oracles) and bool(np.allclose(known, known[0]))
    units = {budget_unit(e.result) for e in entries}
    by_samples = len(units) > 1
    styles, labels = method_styles(entries), legend_labels(entries)
    dashes = iter([ORACLE_STYLE["linestyle"], *ORACLE_EXTRA_DASHES] * len(entries))
    for i, e in enumerate(entries):
        result = e.result
        if shared and i > 0:
            result = _without_oracle(result)
        kind = result.get("oracle_kind")
        name = f"{kind} oracle" if kind else "oracle"  # not to be confused with an 'oracle' run
        oracle_label = name if shared else f"{name} of {labels[i]}"
        _draw_curve(ax, result, label=labels[i], color=styles[i]["color"],
                    oracle_label=oracle_label, by_samples=by_samples,
                    marker=styles[i]["marker"],
                    oracle_dashes=None if result["summary"]["oracle_mean"] is None
                    else next(dashes))
    ax.set_title(f"{entries[0].result['family']} ({split})")
    xs = [x for e in entries
          for x in (_budget_stats(e.result, "samples") if by_samples else e.result["steps"])]
    _finish_curve_axes(ax, xs, "adaptation samples per task" if by_samples else units.pop())
    return save_png(fig, path)


def _without_oracle(result: dict) -> dict:
    summary = dict(result["summary"], oracle_mean=None)
    return dict(result, summary=summary)


def write_compare(run_dirs, split: str, out_dir=None, progress: bool = False
                  ) -> tuple[str, dict[str, Path]]:
    """Compare runs on ``split``: write compare.md and compare.png into ``out_dir`` (default
    `default_compare_dir`); returns the table and ``{"table": ..., "plot": ...}``.
    ``progress``: a bar over the stages (read, worst case, plot) on stderr."""
    with progress_bar(3, f"compare {split}", progress, unit="stage") as bar:
        bar.set_postfix_str(f"reading {len(run_dirs)} evaluations", refresh=True)
        entries = load_compare_entries(run_dirs, split)
        out_dir = Path(out_dir) if out_dir is not None else default_compare_dir(run_dirs, split)
        table = format_compare_table(entries, split)
        success = format_compare_success(entries)  # families that report success
        if success is not None:
            table = table + "\n" + success
        groups = seed_groups(entries)  # runs that differ only in seed: aggregated first
        if groups is not None:
            table = (format_seed_table(groups, split) + "\nPer seed:\n\n" + table)
        if has_segments(entries):  # dynamics that change within an episode
            table = table + "\n" + segment_table(entries, groups)
        bar.update(1)
        bar.set_postfix_str("worst case", refresh=True)
        worst_table, worst_paths = write_worst_case(entries, split, out_dir)
        if worst_table is not None:  # with gaps: the worst-case table follows the returns table
            table = table + "\n" + worst_table
        videos = video_links(entries, split, out_dir)  # `adaptrl eval --video` files, if any
        if videos is not None:
            table = table + "\n" + videos
        bar.update(1)
        bar.set_postfix_str("plot", refresh=True)
        paths = {"table": write_file(out_dir / "compare.md", table.encode())}
        if groups is None:
            paths["plot"] = plot_compare(entries, split, out_dir / "compare.png")
        else:  # one band per method over seeds; every run's own curve beside it
            paths["plot"] = plot_seed_groups(groups, split, out_dir / "compare.png")
            paths["runs_plot"] = plot_compare(entries, split, out_dir / "compare_runs.png")
            paths["json"] = write_file(out_dir / "compare.json", json.dumps(
                seed_summary(groups, split), indent=1).encode())
        if has_segments(entries):
            curves = plot_segment_curves(entries, groups, split,
                                         out_dir / "compare_reward_curve.png")
            if curves is not None:
                paths["reward_curve"] = curves
        paths.update(worst_paths)
        bar.update(1)
    return table, paths
