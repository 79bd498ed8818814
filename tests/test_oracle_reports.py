"""The trained oracle (cache, lookup, a tiny training run, `adaptrl oracle`), the worst-case gap
reports of `adaptrl compare`, and the visited-tasks plot (`adaptrl plot-tasks`)."""

import csv
import json

import numpy as np
import pytest
import yaml

from adaptrl.errors import AdaptrlError
from adaptrl.eval import oracle_returns, write_compare, write_eval_json
from adaptrl.eval.gap_report import (
    format_worst_gap_table,
    plot_visited_tasks,
    read_visited_tasks,
)
from adaptrl.eval.oracles import get_oracle
from adaptrl.eval.protocol import summarize
from adaptrl.eval.report import load_compare_entries
from adaptrl.eval.trained_oracle import (
    CACHE_ENV,
    OracleCache,
    OracleTrainingConfig,
    build_oracle,
    task_key,
    train_oracle,
)
from adaptrl.tasks import get_family

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(iterations=2, episodes=2, eval_episodes=2, hidden_sizes=[8, 8])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """Every lookup in the test reads a fresh, empty cache folder."""
    folder = tmp_path / "oracle-cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def _entry(tasks, returns, horizon=20, iterations=5, created="2026-01-01T00:00:00+00:00"):
    return {"format": "adaptrl-trained-oracle", "version": 1, "family": "hopper-2d",
            "horizon": horizon, "param_names": ["target_vx", "target_z"],
            "tasks": np.asarray(tasks).tolist(), "returns": list(returns),
            "returns_stochastic": list(returns), "returns_deterministic": list(returns),
            "train_returns": [[0.0] * iterations for _ in returns],
            "trpo_refused": [0] * len(returns),
            "training": {"method": "per-task TRPO on the real environment",
                         "iterations": iterations},
            "samples_per_task": iterations * 40, "seconds": {"train": 1.0, "total": 1.0},
            "created": created, "adaptrl_version": "0"}


# ─── the trained oracle ──────────────────────────────────────────────────────────────────────
def test_hopper_2d_has_a_trained_oracle_and_point_nav_keeps_its_analytic_one():
    assert get_oracle("hopper-2d").kind == "trained"
    assert get_oracle("point-nav").kind == "analytic"


def test_cache_round_trip_in_any_task_order(cache_dir):
    tasks = np.array([[-2.0, 1.2], [0.0, 1.6], [2.0, 2.0]])
    path = OracleCache().save(_entry(tasks, [1.0, 2.0, 3.0]))
    assert path.parent == cache_dir / "hopper-2d" and path.suffix == ".json"
    assert path.name.startswith(task_key("hopper-2d", tasks, 20))
    assert oracle_returns("hopper-2d", tasks, horizon=20).tolist() == [1.0, 2.0, 3.0]
    assert oracle_returns("hopper-2d", tasks[::-1], horizon=20).tolist() == [3.0, 2.0, 1.0]
    # the entry with more training wins over a smaller one for the same tasks
    OracleCache().save(_entry(tasks, [7.0, 8.0, 9.0], iterations=50))
    assert oracle_returns("hopper-2d", tasks, horizon=20).tolist() == [7.0, 8.0, 9.0]


def test_lookup_miss_returns_none(cache_dir):
    tasks = np.array([[-2.0, 1.2], [0.0, 1.6]])
    assert OracleCache().lookup("hopper-2d", tasks, 20) is None  # no folder at all
    OracleCache().save(_entry(tasks, [1.0, 2.0]))
    assert oracle_returns("hopper-2d", tasks, horizon=21) is None  # another horizon
    assert oracle_returns("hopper-2d", tasks[:1], horizon=20) is None  # a subset
    assert oracle_returns("hopper-2d", [[-2.0, 1.2], [0.0, 1.7]], horizon=20) is None
    assert oracle_returns("walker-2d", tasks, horizon=20) is None  # another family
    # a corrupt or foreign file with a matching name is skipped, not an error
    (cache_dir / "hopper-2d" / f"{task_key('hopper-2d', tasks, 21)}-junk.json").write_text("{")
    assert oracle_returns("hopper-2d", tasks, horizon=21) is None


def test_tiny_training_fills_the_cache_and_oracle_returns_gives_its_numbers(cache_dir):
    family = get_family("hopper-2d")
    tasks = family.grid(2)
    assert oracle_returns(family, tasks, horizon=10) is None  # evaluation never trains
    config = OracleTrainingConfig(**TINY)
    path, entry, trained = build_oracle(family, tasks, config, horizon=10, log=None)
    assert trained and path.is_file()
    assert json.loads(path.read_text()) == entry
    assert entry["samples_per_task"] == 2 * 2 * 10
    assert np.asarray(entry["train_returns"]).shape == (4, 2)
    best = np.maximum(entry["returns_stochastic"], entry["returns_deterministic"])
    assert entry["returns"] == best.tolist()
    assert oracle_returns(family, tasks, horizon=10).tolist() == entry["returns"]
    # the same settings are not trained again; --force does
    again_path, again, trained_again = build_oracle(family, tasks, config, horizon=10, log=None)
    assert (again_path, trained_again) == (path, False) and again == entry
    assert build_oracle(family, tasks, config, horizon=10, log=None, force=True)[2]


def test_training_is_reproducible_from_its_seed():
    tasks = np.array([[1.0, 1.5]])
    config = OracleTrainingConfig(**TINY)
    a = train_oracle("hopper-2d", tasks, config, horizon=8)
    b = train_oracle("hopper-2d", tasks, config, horizon=8)
    assert a["returns"] == b["returns"] and a["train_returns"] == b["train_returns"]


def test_bad_oracle_settings_are_one_clear_error():
    with pytest.raises(AdaptrlError, match=r"oracle iterations must be in \[1, 1e6\]"):
        train_oracle("hopper-2d", [[0.0, 1.5]], OracleTrainingConfig(iterations=0), horizon=5)


def test_cli_oracle_trains_then_reuses(cache_dir, capsys):
    from adaptrl.cli import main

    args = ["oracle", "hopper-2d", "--per-dim", "2", "--horizon", "6", "--iterations", "1",
            "--episodes", "2", "--eval-episodes", "2", "--hidden", "8,8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trained oracle for 'hopper-2d': 4 tasks, horizon 6" in out and "wrote " in out
    assert main(args) == 0
    assert "cached oracle" in capsys.readouterr().out
    assert oracle_returns("hopper-2d", get_family("hopper-2d").grid(2), horizon=6) is not None


def test_cli_oracle_bad_hidden_is_one_line(capsys):
    from adaptrl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["oracle", "hopper-2d", "--hidden", "8,x"])
    assert exit_info.value.code == 2
    assert "expected positive sizes like 64,64" in capsys.readouterr().err
    assert main(["oracle", "point-nav", "--iterations", "1"]) == 2
    assert "'point-nav' has an analytic oracle" in capsys.readouterr().err


# ─── worst-case gap reports across runs ──────────────────────────────────────────────────────
def _synthetic_eval(algo, returns, oracle, steps=(0, 2000, 4000), per_dim=3):
    """An eval dict on a per_dim × per_dim hopper-2d grid; returns ``[B, T]``."""
    tasks = get_family("hopper-2d").grid(per_dim)
    returns = np.asarray(returns, dtype=np.float64)
    return {"algo": algo, "family": "hopper-2d", "split": "grid", "steps": list(steps),
            "budget_unit": "real samples", "episodes": 2, "seed": 0, "horizon": 50,
            "param_names": ["target_vx", "target_z"],
            "oracle_kind": None if oracle is None else "trained",
            "tasks": [{"params": tasks[i].tolist(), "returns": returns[:, i].tolist(),
                       "oracle": None if oracle is None else float(oracle[i]),
                       "adapt_ms": [1.0] * len(steps), "samples": list(steps)}
                      for i in range(len(tasks))],
            "summary": summarize(returns, oracle)}


def _write_runs(tmp_path, with_oracle=True):
    rng = np.random.default_rng(0)
    oracle = rng.uniform(50, 100, 9) if with_oracle else None
    dirs = []
    for name, shift in (("admrl", 0.0), ("mb-unif", 10.0), ("mb-gauss", 20.0)):
        returns = np.stack([np.full(9, 10.0 - shift), np.full(9, 30.0 - shift),
                            np.full(9, 40.0 - shift)]) + rng.uniform(0, 5, (3, 9))
        run = tmp_path / "runs" / name
        write_eval_json(_synthetic_eval(name, returns, oracle), run / "eval" / "grid" / "eval.json")
        dirs.append(run)
    return dirs


def test_compare_writes_the_worst_case_table_plot_and_heatmaps(tmp_path):
    dirs = _write_runs(tmp_path)
    table, paths = write_compare(dirs, "grid")
    out = tmp_path / "runs" / "compare-grid"
    assert paths["worst_gap_plot"] == out / "compare_worst_gap.png"
    assert paths["heatmaps"] == out / "compare_heatmaps.png"
    for key in ("plot", "worst_gap_plot", "heatmaps"):
        assert paths[key].read_bytes()[:8] == PNG_MAGIC
    assert (out / "compare.md").read_text() == table
    assert "worst-case gap G_n^max" in table and "(trained oracle)" in table
    lines = table.splitlines()
    header = "| run | n=0 | n=2000 | n=4000 | n counts |"
    assert lines.count(header) == 1
    for run in dirs:
        summary = json.loads((run / "eval" / "grid" / "eval.json").read_text())["summary"]
        row = [line for line in lines[lines.index(header):] if line.startswith(f"| {run.name} ")]
        cells = [c.strip() for c in row[0].split("|")[2:-2]]
        assert cells == [f"{g:.2f} ({m:.2f})" for g, m in zip(summary["gap_max"],
                                                               summary["gap_mean"])]


def test_worst_case_table_marks_missing_budgets_and_runs_without_gaps(tmp_path):
    dirs = _write_runs(tmp_path)
    extra = tmp_path / "runs" / "short"
    write_eval_json(_synthetic_eval("short", np.zeros((1, 9)), np.ones(9), steps=(0,)),
                    extra / "eval" / "grid" / "eval.json")
    entries = load_compare_entries([*dirs, extra], "grid")
    table = format_worst_gap_table(entries, "grid")
    short = next(line for line in table.splitlines() if line.startswith("| short "))
    assert [c.strip() for c in short.split("|")[2:-2]] == ["1.00 (1.00)", "—", "—"]


def test_without_an_oracle_there_is_no_worst_case_table_but_return_heatmaps(tmp_path):
    dirs = _write_runs(tmp_path, with_oracle=False)
    table, paths = write_compare(dirs, "grid")
    assert "worst-case" not in table and "worst_gap_plot" not in paths
    assert paths["heatmaps"].read_bytes()[:8] == PNG_MAGIC
    assert format_worst_gap_table(load_compare_entries(dirs, "grid"), "grid") is None


def test_no_side_by_side_heatmaps_for_different_task_sets(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_eval_json(_synthetic_eval("a", np.zeros((3, 9)), np.ones(9)), a / "eval/grid/eval.json")
    write_eval_json(_synthetic_eval("b", np.zeros((3, 16)), np.ones(16), per_dim=4),
                    b / "eval/grid/eval.json")
    _table, paths = write_compare([a, b], "grid")
    assert "heatmaps" not in paths and paths["worst_gap_plot"].is_file()


# ─── visited tasks ───────────────────────────────────────────────────────────────────────────
def _write_metrics(run_dir, algo, tasks, family="hopper-2d"):
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"algo": algo, "family": family,
                                                         "seed": 0, "config": {}}))
    with open(run_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["iteration", "return", "task/target_vx", "task/next_target_vx",
                         "task/target_z", "task/next_target_z", "task_grad/target_vx",
                         "step_s"])
        for i, (vx, z) in enumerate(tasks):
            writer.writerow([i + 1, 1.0, vx, 0.0, z, 0.0, "nan", 0.1])


def test_visited_tasks_are_read_in_order_and_plotted_side_by_side(tmp_path):
    runs = {"admrl": [[0.0, 1.6], [2.0, 2.0], [-2.0, 1.2]],
            "mb-unif": [[0.5, 1.5], [-0.3, 1.7], [1.1, 1.3]],
            "mb-gauss": [[0.1, 1.6], [0.0, 1.6], [0.2, 1.7]]}
    dirs = []
    for algo, tasks in runs.items():
        _write_metrics(tmp_path / algo, algo, tasks)
        dirs.append(tmp_path / algo)
    visited = read_visited_tasks(tmp_path / "admrl")
    assert visited["algo"] == "admrl" and visited["param_names"] == ["target_vx", "target_z"]
    assert visited["iterations"] == [1, 2, 3]
    assert visited["tasks"].tolist() == runs["admrl"]
    path = plot_visited_tasks(dirs, tmp_path / "visited.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_tasks_cli_and_runs_without_tasks(tmp_path, capsys):
    from adaptrl.cli import main

    _write_metrics(tmp_path / "runs" / "admrl", "admrl", [[0.0, 1.6], [2.0, 2.0]])
    assert main(["plot-tasks", str(tmp_path / "runs" / "admrl")]) == 0
    out = capsys.readouterr().out
    assert "admrl (admrl): 2 tasks: (0.00, 1.60) → (2.00, 2.00)" in out
    assert (tmp_path / "runs" / "visited_tasks.png").read_bytes()[:8] == PNG_MAGIC
    other = tmp_path / "runs" / "maml"
    other.mkdir()
    (other / "metrics.csv").write_text("iteration,return\n1,2.0\n")
    assert main(["plot-tasks", str(other), "--out", str(tmp_path / "x.png")]) == 2
    assert "logs no visited tasks" in capsys.readouterr().err
