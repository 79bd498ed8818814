"""Plots people read: one colour per method across curves and bands, a neutral oracle line,
plain-text labels, a legend that says each thing once; Student-t confidence intervals."""

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba

import adaptrl.eval.gap_report as gap_report
import adaptrl.eval.report as report
from adaptrl.eval.protocol import summarize
from adaptrl.eval.report_common import ORACLE_STYLE, CompareEntry, legend_labels, method_styles
from adaptrl.eval.stats import ci95_half_width, t_quantile


@pytest.mark.parametrize("p, dof, expected", [
    (0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 4, 2.7764), (0.975, 9, 2.2622),
    (0.975, 29, 2.0452), (0.975, 1000, 1.9623), (0.95, 10, 1.8125), (0.995, 5, 4.0321)])
def test_t_quantiles_match_the_tables(p, dof, expected):
    assert t_quantile(p, dof) == pytest.approx(expected, abs=1e-4)


def test_ci95_uses_t_for_few_tasks_and_is_none_for_one():
    values = [1.0, 2.0, 4.0, 7.0, 11.0]
    assert ci95_half_width(values) == pytest.approx(
        2.776445 * np.std(values, ddof=1) / math.sqrt(5))
    assert ci95_half_width([3.0]) is None
    assert summarize(np.array([values]), None)["ci95"] == [pytest.approx(
        ci95_half_width(values))]


def _result(algo, base, rng, oracle=0.0, steps=(0, 1, 2)):
    returns = np.array([[base + 5 * n + rng.normal() for _ in range(6)] for n in steps])
    return {"algo": algo, "family": "point-nav", "split": "test", "steps": list(steps),
            "budget_unit": "adaptation steps", "oracle_kind": "analytic", "episodes": 2,
            "tasks": [{"params": [0.1 * i, 0.0], "returns": returns[:, i].tolist(),
                       "oracle": oracle, "adapt_ms": [0.0] * len(steps),
                       "samples": [0] * len(steps)} for i in range(6)],
            "summary": summarize(returns, np.full(6, oracle))}


@pytest.fixture
def entries():
    rng = np.random.default_rng(0)
    return [CompareEntry(f"{algo} ({folder})", Path(folder), _result(algo, base, rng))
            for algo, folder, base in [("maml", "maml-s0", -30), ("maml", "maml-s1", -29),
                                       ("reptile", "reptile-s0", -31)]]


def _figure(monkeypatch, module):
    """Run a plot function of ``module`` and return its Figure instead of a PNG."""
    figures = []
    monkeypatch.setattr(module, "save_png", lambda fig, path: figures.append(fig) or path)
    return figures


def test_one_colour_per_method_and_labels_without_repetition(entries):
    styles = method_styles(entries)
    assert styles[0]["color"] == styles[1]["color"] != styles[2]["color"]
    assert styles[0]["marker"] != styles[1]["marker"]
    assert legend_labels(entries) == ["maml-s0", "maml-s1", "reptile"]


def test_compare_plot_colours_bands_oracle_and_legend(entries, monkeypatch):
    figures = _figure(monkeypatch, report)
    report.plot_compare(entries, "test", "unused.png")
    ax = figures[0].axes[0]
    styles = method_styles(entries)
    curves = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    for label, style in zip(legend_labels(entries), styles):
        assert to_rgba(curves[label].get_color()) == to_rgba(style["color"])
    # every band in its method's colour
    band_colours = {to_rgba(c.get_facecolor()[0], 1.0) for c in ax.collections}
    assert band_colours == {to_rgba(s["color"]) for s in styles}
    # the shared oracle: one neutral line, last in the legend
    oracle = [line for line in ax.lines if "oracle" in line.get_label()]
    assert len(oracle) == 1 and oracle[0].get_color() == ORACLE_STYLE["color"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["maml-s0", "maml-s1", "reptile", "analytic oracle"]
    _assert_plain_text(figures[0])


def test_sample_axis_turns_logarithmic_only_over_a_wide_range():
    assert report.sample_axis_linthresh([0, 100, 2000, 4000]) == 100
    assert report.sample_axis_linthresh([0, 100, 1500]) is None  # 15×: linear
    assert report.sample_axis_linthresh([0, 0, math.nan]) is None


def test_compare_of_different_budget_units_puts_one_episode_beside_thousands_of_samples(
        entries, monkeypatch):
    """RL² (one budget = one episode of 100 steps) beside MAML (2000 samples a step): against
    samples per task, on a symlog axis, so neither curve sits on x = 0."""
    rl2 = entries[2].result
    rl2["budget_unit"] = "episodes in the trial"
    for task in rl2["tasks"]:
        task["samples"] = [0, 100, 200]
    for task in entries[0].result["tasks"] + entries[1].result["tasks"]:
        task["samples"] = [0, 2000, 4000]
    figures = _figure(monkeypatch, report)
    report.plot_compare(entries, "test", "unused.png")
    ax = figures[0].axes[0]
    assert ax.get_xscale() == "symlog" and ax.get_xlabel().startswith(
        "adaptation samples per task (log scale above 100")
    curves = [line for line in ax.lines if not line.get_label().startswith("_")
              and "oracle" not in line.get_label()]
    assert sorted(float(line.get_xdata()[-1]) for line in curves) == [200, 4000, 4000]
    _assert_plain_text(figures[0])


def test_worst_gap_plot_names_each_run_and_line_style_once(entries, monkeypatch):
    figures = _figure(monkeypatch, gap_report)
    gap_report.plot_worst_gap(entries, "test", "unused.png")
    ax = figures[0].axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == len(set(legend)) == 5
    _assert_plain_text(figures[0])


def _assert_plain_text(fig):
    texts = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]
    for ax in fig.axes:
        texts += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
    raw = [t for t in texts if "$" in t or "^" in t or "_{" in t or "\\" in t]
    assert not raw, raw
