"""Aggregation over seeds for `adaptrl compare`: runs that differ only in their seed form one
group, summarised per budget by the mean over seeds of each run's mean return and the 95%
Student-t interval over seeds (a seed is the unit: its evaluation's mean over tasks is one
sample).

    seed_groups(entries)        the groups of a comparison, or None when no two runs share
                                method, family and config apart from the seed
    format_seed_table(groups)   Markdown: one row per group (method, seeds, n=..., oracle)
    plot_seed_groups(groups)    one curve and one band per group (t-interval over seeds)
    seed_summary(groups)        the same numbers as a JSON-ready dict (compare.json)

Two runs are "the same but for the seed" when their config.yaml files agree on the method, the
family, the preset and every config field except those that do not change what is computed
(`IGNORED_FIELDS`), and their evaluations used the same budgets and split. Runs without a
config.yaml (e.g. `adaptrl baselines` folders) each form a group of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure

from ..errors import AdaptrlError
from .report_common import (
    ORACLE_STYLE,
    CompareEntry,
    add_legend,
    budget_unit,
    draw_band,
    format_number,
    same_tasks,
    save_png,
)
from .stats import ci95_half_width

IGNORED_FIELDS = ("checkpoint_every", "keep_checkpoints", "max_refusals")
"""Config fields that do not change what a run computes, so runs that differ in them still
belong to one group."""


@dataclass
class SeedGroup:
    """Runs of one method and config that differ only in seed."""

    label: str
    algo: str
    preset: str | None
    entries: list[CompareEntry] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return [int(n) for n in self.entries[0].result["steps"]]

    def per_seed(self, key: str = "mean") -> np.ndarray:
        """Each run's summary ``key`` per budget ``[S, B]``: its mean return (``mean``) or
        success rate (``success``); NaN where a run's value is missing."""
        rows = []
        for e in self.entries:
            values = e.result["summary"].get(key) or [None] * len(e.result["steps"])
            rows.append([np.nan if m is None else m for m in values])
        return np.asarray(rows, dtype=np.float64)

    def mean(self, key: str = "mean") -> list[float | None]:
        values = self.per_seed(key)
        return [None if np.isnan(col).all() else float(np.nanmean(col)) for col in values.T]

    def ci95(self, key: str = "mean") -> list[float | None]:
        """The t-interval's half-width over seeds per budget (None for fewer than 2 seeds)."""
        return [ci95_half_width(col[~np.isnan(col)]) for col in self.per_seed(key).T]

    @property
    def reports_success(self) -> bool:
        return any(e.result["summary"].get("success") is not None for e in self.entries)

    def samples(self) -> list[float]:
        """Adaptation samples per task at each budget, mean over tasks and seeds (the x axis
        when the groups' budgets count different things)."""
        per_run = []
        for e in self.entries:
            rows = [t["samples"] for t in e.result["tasks"] if t.get("samples") is not None
                    and None not in t["samples"]]
            if rows:
                per_run.append(np.mean(np.asarray(rows, dtype=np.float64), axis=0))
        return (np.mean(per_run, axis=0).tolist() if per_run
                else [float(n) for n in self.steps])

    def oracle_mean(self) -> float | None:
        values = [e.result["summary"]["oracle_mean"] for e in self.entries]
        known = [v for v in values if v is not None]
        return float(np.mean(known)) if known else None


def _record(run_dir: Path) -> dict | None:
    """The run's config.yaml as a dict, or None when it has none (or it cannot be read)."""
    path = Path(run_dir) / "config.yaml"
    try:
        record = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("config"), dict) else None


def _group_key(entry: CompareEntry, record: dict | None, index: int) -> str:
    result = entry.result
    if record is None:
        return f"alone:{index}"
    config = {k: v for k, v in record["config"].items() if k not in IGNORED_FIELDS and k != "seed"}
    return json.dumps({"algo": record.get("algo"), "family": record.get("family"),
                       "preset": record.get("preset"), "config": config,
                       "steps": result["steps"], "split": result.get("split"),
                       "unit": budget_unit(result)}, sort_keys=True, default=str)


def seed_groups(entries: list[CompareEntry]) -> list[SeedGroup] | None:
    """Group the runs that differ only in seed; None when no group has two runs of different
    seeds (then there is nothing to aggregate). Groups keep the order of first appearance."""
    groups: dict[str, SeedGroup] = {}
    for i, entry in enumerate(entries):
        record = _record(entry.run_dir)
        key = _group_key(entry, record, i)
        if key not in groups:
            groups[key] = SeedGroup(label=entry.result["algo"], algo=entry.result["algo"],
                                    preset=None if record is None else record.get("preset"))
        seed = (entry.result.get("run") or {}).get("seed",
                                                    None if record is None else record.get("seed"))
        groups[key].entries.append(entry)
        groups[key].seeds.append(seed)
    result = list(groups.values())
    if not any(len(set(g.seeds)) > 1 for g in result):
        return None
    for g in result:
        if len(set(g.seeds)) != len(g.seeds):
            raise AdaptrlError(f"{g.algo}: runs {', '.join(str(e.run_dir) for e in g.entries)} "
                               f"have the same config and repeat a seed; compare each once")
    _name_groups(result)
    return result


def _name_groups(groups: list[SeedGroup]) -> None:
    """Labels: the method; with the preset when one method has several groups; numbered when
    that is still ambiguous."""
    by_algo: dict[str, list[SeedGroup]] = {}
    for g in groups:
        by_algo.setdefault(g.algo, []).append(g)
    for algo, same in by_algo.items():
        if len(same) == 1:
            continue
        for g in same:
            g.label = f"{algo} [{g.preset or 'no preset'}]"
        labels = [g.label for g in same]
        if len(set(labels)) < len(labels):
            for k, g in enumerate(same, 1):
                g.label = f"{g.label} #{k}"


def _seed_list(seeds) -> str:
    known = sorted(s for s in seeds if s is not None)
    if len(known) > 2 and known == list(range(known[0], known[-1] + 1)):
        return f"{known[0]}–{known[-1]}"
    return ", ".join(str(s) for s in known) or "?"


def format_seed_table(groups: list[SeedGroup], split: str) -> str:
    """Markdown: one row per group; each cell the mean over seeds ± the 95% t-interval over
    seeds (a group of one seed shows its mean alone and says so)."""
    entries = [e for g in groups for e in g.entries]
    steps = sorted({n for g in groups for n in g.steps})
    family = entries[0].result["family"]
    units = sorted({budget_unit(e.result) for e in entries})
    lines = [f"`{family}`, split `{split}`, aggregated over seeds: each seed's mean return per "
             f"episode after a budget n ({'; '.join(units)}), averaged over seeds, ± the 95% "
             f"Student-t interval over seeds"]
    if not same_tasks(entries):
        lines += ["", "note: the runs were evaluated on different task sets"]
    few = [g.label for g in groups if len(g.seeds) < 3]
    if few:
        lines += ["", f"fewer than 3 seeds: {', '.join(few)}"]
    lines += ["", "| method | seeds | " + " | ".join(f"n={n}" for n in steps) + " | oracle |",
              "|---|---|" + "---:|" * (len(steps) + 1)]
    for g in groups:
        mean, ci = g.mean(), g.ci95()
        by_step = {n: b for b, n in enumerate(g.steps)}
        cells = []
        for n in steps:
            if n not in by_step or mean[by_step[n]] is None:
                cells.append("—")
                continue
            b = by_step[n]
            cells.append(format_number(mean[b]) + ("" if ci[b] is None else f" ± {ci[b]:.2f}"))
        lines.append(f"| {g.label} | {len(g.seeds)} ({_seed_list(g.seeds)}) | "
                     + " | ".join(cells) + f" | {format_number(g.oracle_mean())} |")
    if any(g.reports_success for g in groups):
        lines += ["", "success rate (episodes with the task's success flag at any step, every "
                      "evaluation episode counted), mean over seeds ± the 95% t-interval over "
                      "seeds", "",
                  "| method | seeds | " + " | ".join(f"n={n}" for n in steps) + " |",
                  "|---|---|" + "---:|" * len(steps)]
        for g in groups:
            mean, ci = g.mean("success"), g.ci95("success")
            by_step = {n: b for b, n in enumerate(g.steps)}
            cells = ["—" if n not in by_step or mean[by_step[n]] is None else
                     f"{100 * mean[by_step[n]]:.1f}%" + ("" if ci[by_step[n]] is None else
                                                         f" ± {100 * ci[by_step[n]]:.1f}")
                     for n in steps]
            lines.append(f"| {g.label} | {len(g.seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_seed_groups(groups: list[SeedGroup], split: str, path) -> Path:
    """One curve per group (mean over seeds) with its band (95% t-interval over seeds; none for
    a single seed), one colour per method, the oracle as a neutral dashed line."""
    from matplotlib import colormaps

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    palette = colormaps["tab10" if len(groups) <= 10 else "tab20"].colors
    entries = [e for g in groups for e in g.entries]
    by_samples = len({budget_unit(e.result) for e in entries}) > 1  # as `plot_compare`
    for i, g in enumerate(groups):
        x = np.asarray(g.samples() if by_samples else g.steps, dtype=np.float64)
        mean = np.asarray([np.nan if m is None else m for m in g.mean()])
        color = palette[i % len(palette)]
        ax.plot(x, mean, marker="o", color=color, zorder=3,
                label=f"{g.label} ({len(g.seeds)} seed{'s' if len(g.seeds) != 1 else ''})")
        ci = g.ci95()
        if all(c is not None for c in ci):
            half = np.asarray(ci, dtype=np.float64)
            draw_band(ax, x, mean - half, mean + half, color)
    oracles = [g.oracle_mean() for g in groups if g.oracle_mean() is not None]
    if oracles:
        ax.axhline(float(np.mean(oracles)), label="oracle", **ORACLE_STYLE)
    ax.set_title(f"{entries[0].result['family']} ({split}): mean over seeds, "
                 f"band = 95% t-interval over seeds")
    ax.set_xlabel("adaptation samples per task" if by_samples
                  else budget_unit(entries[0].result))
    ax.set_ylabel("mean return per episode")
    if not by_samples:
        ax.set_xticks(sorted({n for g in groups for n in g.steps}))
    ax.grid(True, alpha=0.3)
    add_legend(ax)
    return save_png(fig, path)


def seed_summary(groups: list[SeedGroup], split: str) -> dict:
    """compare.json: per group its method, preset, seeds, budgets, mean and ci95 over seeds,
    and each seed's mean return per budget with its run folder."""
    entries = [e for g in groups for e in g.entries]
    return {"family": entries[0].result["family"], "split": split,
            "groups": [{"label": g.label, "algo": g.algo, "preset": g.preset,
                        "seeds": g.seeds, "steps": g.steps, "mean": g.mean(), "ci95": g.ci95(),
                        "oracle_mean": g.oracle_mean(),
                        **({"success": g.mean("success"), "success_ci95": g.ci95("success")}
                           if g.reports_success else {}),
                        "runs": [{"seed": s, "dir": str(e.run_dir),
                                  "mean": e.result["summary"]["mean"]}
                                 for s, e in zip(g.seeds, g.entries)]}
                       for g in groups]}
