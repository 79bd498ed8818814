"""The evaluation protocol: eval.json schema, oracles, task sets, reports, `adaptrl eval/compare`.

The methods here are dummies defined in this file: `GreedyDummy` acts like the point-nav oracle
after ≥ 1 adaptation step and outputs zero actions before, so its gaps are known exactly.
"""

import json
import math

import numpy as np
import pytest
import torch
from scripted import Scripted

from adaptrl.algos import ALGORITHMS, Adapted, MetaAlgorithm
from adaptrl.errors import AdaptrlError
from adaptrl.eval import (
    evaluate,
    format_compare_table,
    format_table,
    greedy_point_action,
    load_task_file,
    oracle_returns,
    parse_steps,
    read_eval_json,
    split_name_for_file,
    summarize,
    tasks_for_split,
    write_compare,
    write_eval_json,
    write_reports,
)
from adaptrl.eval.report import grid_layout, load_compare_entries, plot_gap_heatmap
from adaptrl.sampling import LocalSampler
from adaptrl.tasks import get_family

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SAMPLES_PER_STEP = 50
SECONDS_PER_STEP = 0.004


class GreedyDummy(MetaAlgorithm):
    """Point-nav 'method': zero actions at budget 0, the greedy oracle at budget ≥ 1.

    Each adaptation step is said to use SAMPLES_PER_STEP env steps and SECONDS_PER_STEP
    seconds for all tasks. Trainable by the runner (a counter is its whole state).
    """

    name = "test-greedy-dummy"

    def __init__(self, family, config, sampler=None):
        super().__init__(family, config, sampler)
        self.updates = 0

    def train_step(self, rng):
        self.updates += 1
        return {"loss": float(rng.uniform())}

    def adapt(self, tasks, budgets, rng):
        goals = torch.as_tensor(tasks, dtype=torch.float32)[:, None, :]  # [T, 1, 2]

        def greedy(obs, generator):
            return greedy_point_action(obs, goals.expand_as(obs))

        def still(obs, generator):
            return torch.zeros(*obs.shape[:-1], self.family.act_dim)

        return [Adapted(Scripted(greedy if n >= 1 else still),
                        np.full(len(tasks), n * SAMPLES_PER_STEP), n * SECONDS_PER_STEP)
                for n in budgets]

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = state["updates"]


class NoisyDummy(GreedyDummy):
    """Random actions whose scale shrinks with the budget: returns differ across tasks and
    episodes, so ci95 is not 0."""

    name = "test-noisy-dummy"

    def adapt(self, tasks, budgets, rng):
        def actor_for(n):
            def actor(obs, generator):
                return 0.1 / (1 + n) * torch.randn(obs.shape, generator=generator)
            return actor

        return [Adapted(Scripted(actor_for(n)), np.zeros(len(tasks), dtype=int), 0.0)
                for n in budgets]


@pytest.fixture
def point_nav():
    family = get_family("point-nav")
    return family, GreedyDummy(family, GreedyDummy.Config())


def _evaluate_grid(family, algo, steps=(0, 1, 2), episodes=2, per_dim=4):
    tasks = tasks_for_split(family, "grid", 1, np.random.default_rng(0), per_dim=per_dim)
    return evaluate(algo, family, tasks, list(steps), episodes, np.random.default_rng(1),
                    split="grid", seed=1)


# ─── eval.json ───────────────────────────────────────────────────────────────────────────────
def test_eval_json_has_every_key_with_lists_aligned_with_steps(point_nav, tmp_path):
    family, algo = point_nav
    steps = [0, 1, 3]
    tasks = tasks_for_split(family, "test", 5, np.random.default_rng(0))
    result = evaluate(algo, family, tasks, steps, 3, np.random.default_rng(0), split="test",
                      seed=7)
    path = write_eval_json(result, tmp_path / "eval" / "test" / "eval.json")
    data = json.loads(path.read_text())
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]  # no temporary left over
    for key in ("algo", "family", "split", "steps", "episodes", "seed", "tasks", "summary"):
        assert key in data
    assert (data["algo"], data["family"], data["split"]) == (GreedyDummy.name, "point-nav", "test")
    assert (data["steps"], data["episodes"], data["seed"]) == (steps, 3, 7)
    assert data["budget_unit"] == "adaptation steps"
    assert len(data["tasks"]) == 5
    for task, params in zip(data["tasks"], tasks):
        assert set(task) == {"params", "returns", "oracle", "adapt_ms", "samples"}
        assert task["params"] == params.tolist()
        for key in ("returns", "adapt_ms", "samples"):
            assert len(task[key]) == len(steps)
        assert isinstance(task["oracle"], float)
        assert task["samples"] == [n * SAMPLES_PER_STEP for n in steps]
        assert task["adapt_ms"] == pytest.approx([n * SECONDS_PER_STEP * 1000 / 5 for n in steps])
    summary = data["summary"]
    for key in ("mean", "ci95", "gap_mean", "gap_max"):
        assert len(summary[key]) == len(steps)
    assert summary["oracle_mean"] == pytest.approx(np.mean([t["oracle"] for t in data["tasks"]]))
    assert read_eval_json(path) == data


def test_ci95_is_student_t_std_over_sqrt_tasks(tmp_path):
    family = get_family("point-nav")
    algo = NoisyDummy(family, NoisyDummy.Config())
    tasks = tasks_for_split(family, "test", 7, np.random.default_rng(3))
    result = evaluate(algo, family, tasks, [0, 2], 4, np.random.default_rng(4), horizon=20)
    returns = np.array([t["returns"] for t in result["tasks"]])  # [T, B]
    oracle = np.array([t["oracle"] for t in result["tasks"]])
    s = result["summary"]
    assert s["mean"] == pytest.approx(returns.mean(0).tolist())
    t_975_6 = 2.446912  # Student's t, 0.975 quantile, 6 degrees of freedom (7 tasks)
    by_hand = [t_975_6 * np.std(returns[:, b], ddof=1) / math.sqrt(7) for b in range(2)]
    assert s["ci95"] == pytest.approx(by_hand)
    assert min(s["ci95"]) > 0
    gap = oracle[:, None] - returns
    assert s["gap_mean"] == pytest.approx(gap.mean(0).tolist())
    assert s["gap_max"] == pytest.approx(gap.max(0).tolist())
    assert result["horizon"] == 20


def test_evaluation_is_reproducible_from_the_seed():
    family = get_family("point-nav")
    algo = NoisyDummy(family, NoisyDummy.Config())
    tasks = tasks_for_split(family, "test", 3, np.random.default_rng(0))
    a, b = (evaluate(algo, family, tasks, [0, 1], 2, np.random.default_rng(5), horizon=10)
            for _ in range(2))
    assert [t["returns"] for t in a["tasks"]] == [t["returns"] for t in b["tasks"]]


def test_method_breaking_the_adapt_contract_is_named(point_nav):
    family, _ = point_nav

    class OneShort(GreedyDummy):
        name = "one-short"

        def adapt(self, tasks, budgets, rng):
            return super().adapt(tasks, budgets[:-1], rng)

    tasks = family.grid(2)
    with pytest.raises(RuntimeError, match="one-short.adapt must return one Adapted per budget"):
        evaluate(OneShort(family, OneShort.Config()), family, tasks, [0, 1], 1,
                 np.random.default_rng(0))


# ─── oracles ─────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("name", ["point-nav", "point-nav-sq"])
@pytest.mark.parametrize("horizon", [100, 4])
def test_point_nav_oracle_equals_an_environment_rollout_of_the_greedy_policy(name, horizon):
    family = get_family(name)
    rng = np.random.default_rng(11)
    # inside Ψ, its corners, the start itself and goals far outside Ψ (never reached at H=100)
    tasks = np.concatenate([family.split("test", 20, rng), family.grid(2),
                            [[0.0, 0.0], [0.005, -0.004], [3.0, -2.0]]])
    goals = torch.as_tensor(tasks, dtype=torch.float32)[:, None, :]
    greedy = Scripted(lambda obs, g: greedy_point_action(obs, goals.expand_as(obs)))
    episodes = LocalSampler(family).sample(greedy, tasks, rng, 3, horizon=horizon)
    rollout = episodes.episode_returns().to(torch.float64).numpy()  # [T, N]
    oracle = oracle_returns(family, tasks, horizon)
    assert oracle.shape == (len(tasks),)
    assert np.array_equal(rollout, np.repeat(oracle[:, None], 3, axis=1))  # exactly
    # a goal at the start is reached on the first step (reward −‖0‖, clamped to −1e-6)
    assert oracle[-3] == pytest.approx(0.0, abs=1e-5) and oracle[-1] < -1.0


def test_point_nav_oracle_by_hand():
    # goal (0.25, 0): distances after each step 0.15, 0.05, then the goal is reached (0; the
    # distance reward clamps it to −1e-6); float32 positions: agreement to 1e-5
    family = get_family("point-nav")
    assert oracle_returns(family, [[0.25, 0.0]])[0] == pytest.approx(-0.2, abs=1e-5)
    squared = get_family("point-nav-sq")
    assert oracle_returns(squared, [[0.25, 0.0]])[0] == pytest.approx(-(0.15**2 + 0.05**2),
                                                                      abs=1e-5)
    # H = 1 stops after the first step
    assert oracle_returns(family, [[0.25, 0.0]], horizon=1)[0] == pytest.approx(-0.15, abs=1e-5)


def test_families_without_an_oracle_give_none():
    family = get_family("cheetah-vel")
    assert oracle_returns(family, [[1.0]]) is None


def test_oracle_dummy_has_no_gap_after_adapting_and_a_positive_gap_before(point_nav):
    family, algo = point_nav
    result = _evaluate_grid(family, algo)
    s = result["summary"]
    assert s["gap_mean"][0] > 0.5 and s["gap_max"][0] > s["gap_mean"][0]
    assert s["gap_mean"][1:] == [0.0, 0.0] and s["gap_max"][1:] == [0.0, 0.0]
    for task in result["tasks"]:
        assert task["returns"][1] == task["oracle"]


# ─── task sets ───────────────────────────────────────────────────────────────────────────────
def test_splits_give_tasks_of_the_right_shape():
    rng = np.random.default_rng(0)
    point = get_family("point-nav")
    assert tasks_for_split(point, "test", 9, rng).shape == (9, 2)
    assert tasks_for_split(point, "grid", 9, rng).shape == (36, 2)  # 6 per dim by default
    assert tasks_for_split(point, "grid", 9, rng, per_dim=3).shape == (9, 2)
    boundary = tasks_for_split(point, "boundary", 8, rng)
    assert np.all(np.isclose(np.abs(boundary), 0.5).any(axis=1))
    assert tasks_for_split("ant-3d", "grid", 1, rng).shape == (48, 3)  # AdMRL: 4×4×3
    assert tasks_for_split("cheetah-vel", "grid", 1, rng).shape == (6, 1)
    ood = tasks_for_split("cheetah-vel-hard", "ood", 5, rng)
    assert ood.shape == (5, 1) and np.all(ood >= 2.5)


def test_grid_over_a_high_dimensional_family_suggests_boundary_or_test():
    with pytest.raises(AdaptrlError, match="--split boundary or --split test"):
        tasks_for_split("hopper-params", "grid", 1, np.random.default_rng(0))


def test_ood_on_a_family_without_one_lists_its_splits():
    with pytest.raises(AdaptrlError, match=r"'point-nav' has no 'ood' split \(its splits: "
                                           r"train, test, boundary\)"):
        tasks_for_split("point-nav", "ood", 5, np.random.default_rng(0))


def test_task_file_with_values_outside_psi_is_accepted(tmp_path):
    path = tmp_path / "far.json"
    path.write_text("[[0.1, -0.2], [2, 3]]")
    tasks = load_task_file("point-nav", path)
    assert tasks.tolist() == [[0.1, -0.2], [2.0, 3.0]] and tasks.dtype == np.float64
    assert split_name_for_file(path) == "far"
    assert split_name_for_file(tmp_path / "test.json") == "custom-test"


@pytest.mark.parametrize("text, needle", [
    ("[[0.1, 0.2], [0.3", "is not valid JSON"),
    ('{"tasks": [[0.1, 0.2]]}', "must hold a non-empty JSON list of tasks"),
    ("[]", "must hold a non-empty JSON list of tasks"),
    ("[0.1, 0.2]", "each a list of 2 number"),
    ('[[0.1, "a"]]', "task 0 is [0.1, 'a']; every value must be a number"),
    ("[[0.1, 0.2], [0.3]]", "task 1 has 1 value(s), but 'point-nav' tasks have 2 (goal_x, goal_y)"),
    ("[[0.1, 0.2, 0.3]]", "task 0 has 3 value(s)"),
    ("[[NaN, 0.2]]", "must be finite"),
])
def test_bad_task_files_are_one_clear_error(tmp_path, text, needle):
    path = tmp_path / "tasks.json"
    path.write_text(text)
    with pytest.raises(AdaptrlError) as info:
        load_task_file("point-nav", path)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_missing_task_file_is_a_clear_error(tmp_path):
    with pytest.raises(AdaptrlError, match="cannot read task file .*nope.json"):
        load_task_file("point-nav", tmp_path / "nope.json")


@pytest.mark.parametrize("text, needle", [
    ("0,a", "non-negative integers like 0,1,2,3; got '0,a'"),
    ("0,-1", "must be ≥ 0"),
    ("0,2,1", "strictly increasing"),
    ("", "non-negative integers"),
])
def test_malformed_steps_are_rejected(text, needle):
    with pytest.raises(AdaptrlError, match=needle):
        parse_steps(text)
    assert parse_steps("0,1,5") == [0, 1, 5]


# ─── reports ─────────────────────────────────────────────────────────────────────────────────
def test_grid_evaluation_writes_table_curve_and_gap_heatmap(point_nav, tmp_path):
    family, algo = point_nav
    result = _evaluate_grid(family, algo)
    paths = write_reports(result, tmp_path)
    assert set(paths) == {"table", "curve", "heatmap"}
    assert paths["heatmap"].name == "gap_heatmap.png" and paths["curve"].name == "curve.png"
    for key in ("curve", "heatmap"):
        assert paths[key].read_bytes()[:8] == PNG_MAGIC
    table = paths["table"].read_text()
    assert table == format_table(result)
    assert "| n | return (mean ± ci95) | gap mean | gap max | oracle |" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["0", "1", "2"]
    assert rows[1].split("|")[3].strip() == "0.00"  # the oracle-dummy's gap after one step


def test_non_grid_tasks_get_a_curve_but_no_heatmap(point_nav, tmp_path):
    family, algo = point_nav
    tasks = tasks_for_split(family, "test", 4, np.random.default_rng(0))
    result = evaluate(algo, family, tasks, [0, 1], 1, np.random.default_rng(0), split="test")
    paths = write_reports(result, tmp_path)
    assert set(paths) == {"table", "curve"} and not (tmp_path / "gap_heatmap.png").exists()
    assert paths["curve"].read_bytes()[:8] == PNG_MAGIC


def test_heatmap_shows_returns_when_there_is_no_oracle(point_nav, tmp_path):
    family, algo = point_nav
    result = _evaluate_grid(family, algo, steps=[0, 1], per_dim=3)
    for task in result["tasks"]:
        task["oracle"] = None
    assert plot_gap_heatmap(result, tmp_path / "h.png").read_bytes()[:8] == PNG_MAGIC
    xs, ys, cell = grid_layout([t["params"] for t in result["tasks"]])
    assert xs.tolist() == ys.tolist() == [-0.5, 0.0, 0.5] and len(cell) == 9
    assert grid_layout([[0.0, 0.0], [0.1, 0.2], [0.3, 0.1]]) is None


def test_without_an_oracle_gaps_are_null_and_shown_as_dashes(point_nav):
    family, algo = point_nav
    result = _evaluate_grid(family, algo, steps=[0, 1], per_dim=2)
    returns = np.array([t["returns"] for t in result["tasks"]]).T  # [B, T]
    result["summary"] = summarize(returns, None)
    assert result["summary"]["gap_mean"] is None and result["summary"]["gap_max"] is None
    assert result["summary"]["oracle_mean"] is None
    row = next(line for line in format_table(result).splitlines() if line.startswith("| 1 |"))
    assert [c.strip() for c in row.split("|")[3:6]] == ["—", "—", "—"]
    assert summarize(returns[:, :1], None)["ci95"] == [None, None]  # one task: no interval


def _write_run_eval(run_dir, algo, family, steps, seed=0):
    tasks = tasks_for_split(family, "test", 4, np.random.default_rng(seed))
    result = evaluate(algo, family, tasks, steps, 1, np.random.default_rng(0), split="test")
    write_eval_json(result, run_dir / "eval" / "test" / "eval.json")
    return result


def test_compare_table_over_two_eval_files(point_nav, tmp_path):
    family, algo = point_nav
    a = _write_run_eval(tmp_path / "runs" / "greedy", algo, family, [0, 1])
    b = _write_run_eval(tmp_path / "runs" / "noisy", NoisyDummy(family, NoisyDummy.Config()),
                        family, [0, 1, 2])
    table, paths = write_compare([tmp_path / "runs" / "greedy", tmp_path / "runs" / "noisy"],
                                 "test")
    assert paths["table"] == tmp_path / "runs" / "compare-test" / "compare.md"
    assert paths["table"].read_text() == table
    assert paths["plot"].read_bytes()[:8] == PNG_MAGIC
    lines = table.splitlines()
    assert "| run | n=0 | n=1 | n=2 | oracle | n counts |" in lines
    greedy = next(line for line in lines if line.startswith(f"| {GreedyDummy.name} (greedy)"))
    noisy = next(line for line in lines if line.startswith(f"| {NoisyDummy.name} (noisy)"))
    cells = [c.strip() for c in greedy.split("|")[2:-1]]
    assert cells[0].startswith(f"{a['summary']['mean'][0]:.2f}")
    assert cells[2] == "—"  # greedy was not evaluated with 2 steps
    assert cells[3] == f"{a['summary']['oracle_mean']:.2f}"
    assert noisy.split("|")[4].strip().startswith(f"{b['summary']['mean'][2]:.2f}")
    assert "different task sets" not in table
    entries = load_compare_entries([tmp_path / "runs" / "greedy"], "test")
    assert format_compare_table(entries, "test").count("\n| test-") == 1


def test_compare_without_an_evaluation_names_the_run(point_nav, tmp_path):
    family, algo = point_nav
    _write_run_eval(tmp_path / "a", algo, family, [0, 1])
    (tmp_path / "b").mkdir()
    with pytest.raises(AdaptrlError, match=r"run .*b has no evaluation on split 'test'"):
        write_compare([tmp_path / "a", tmp_path / "b"], "test")
    with pytest.raises(AdaptrlError, match="run folder .*c does not exist"):
        write_compare([tmp_path / "a", tmp_path / "c"], "test")


# ─── the command line, end to end ───────────────────────────────────────────────────────────
@pytest.fixture
def trained_runs(tmp_path, monkeypatch):
    """Two tiny runs of the dummies trained by the runner (load_run finds them by name)."""
    from adaptrl.runner import train

    runs = []
    for cls in (GreedyDummy, NoisyDummy):
        monkeypatch.setitem(ALGORITHMS, cls.name, cls)
        runs.append(train(cls.name, "point-nav", overrides=["iterations=2", "checkpoint_every=1"],
                          seed=3, out=tmp_path / "runs" / cls.name, progress=False))
    return runs


def test_cli_eval_and_compare_end_to_end(trained_runs, tmp_path, capsys):
    from adaptrl.cli import main

    greedy, noisy = trained_runs
    for run in trained_runs:
        assert main(["eval", str(run), "--split", "grid", "--per-dim", "3", "--steps", "0,1",
                     "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "| n | return (mean ± ci95)" in out and "gap_heatmap.png" in out
    folder = greedy / "eval" / "grid"
    for name in ("eval.json", "eval.md", "curve.png", "gap_heatmap.png"):
        assert (folder / name).is_file()
    data = read_eval_json(folder / "eval.json")
    assert (data["algo"], data["split"], data["seed"], len(data["tasks"])) == (
        GreedyDummy.name, "grid", 0, 9)
    assert data["run"]["seed"] == 3 and data["run"]["iteration"] == 2
    assert data["summary"]["gap_max"][1] == 0.0

    assert main(["compare", str(greedy), str(noisy), "--split", "grid"]) == 0
    out = capsys.readouterr().out
    assert f"| {GreedyDummy.name} ({GreedyDummy.name}) |" in out
    assert (tmp_path / "runs" / "compare-grid" / "compare.md").is_file()
    assert (tmp_path / "runs" / "compare-grid" / "compare.png").is_file()

    task_file = tmp_path / "far-goals.json"
    task_file.write_text("[[1.5, 0.0], [0.0, -2.0]]")
    assert main(["eval", str(greedy), "--tasks", str(task_file), "--steps", "1",
                 "--episodes", "1"]) == 0
    data = read_eval_json(greedy / "eval" / "far-goals" / "eval.json")
    assert [t["params"] for t in data["tasks"]] == [[1.5, 0.0], [0.0, -2.0]]


def test_cli_eval_uses_the_same_tasks_for_every_run(trained_runs):
    from adaptrl.cli import main

    for run in trained_runs:
        assert main(["eval", str(run), "--num-tasks", "3", "--steps", "0", "--episodes", "1",
                     "--seed", "4"]) == 0
    first, second = (read_eval_json(run / "eval" / "test" / "eval.json") for run in trained_runs)
    assert [t["params"] for t in first["tasks"]] == [t["params"] for t in second["tasks"]]


def test_cli_eval_of_a_chosen_checkpoint(trained_runs):
    from adaptrl.cli import main

    run = trained_runs[0]
    assert main(["eval", str(run), "--num-tasks", "2", "--steps", "0", "--episodes", "1",
                 "--checkpoint", "1"]) == 0
    data = read_eval_json(run / "eval" / "test" / "eval.json")
    assert data["run"]["iteration"] == 1 and data["run"]["checkpoint"].endswith("iter_000001.pt")


@pytest.mark.parametrize("args, needle", [
    (["eval", "{run}", "--checkpoint", "7"], "has no checkpoint of iteration 7; it keeps 1, 2"),
    (["eval", "{tmp}/missing"], "run folder {tmp}/missing does not exist"),
    (["eval", "{run}", "--split", "ood"], "has no 'ood' split"),
    (["eval", "{run}", "--tasks", "{tmp}/none.json"], "cannot read task file"),
    (["compare", "{run}", "--split", "boundary"], "has no evaluation on split 'boundary'"),
    (["compare", "{tmp}/missing"], "does not exist"),
])
def test_cli_mistakes_are_one_line(trained_runs, tmp_path, capsys, args, needle):
    from adaptrl.cli import main

    fill = {"tmp": str(tmp_path), "run": str(trained_runs[0])}
    assert main([a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle.format(**fill) in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("steps, needle", [("0,a", "got '0,a'"), ("0,-2", "must be ≥ 0")])
def test_cli_malformed_steps_are_one_line(tmp_path, capsys, steps, needle):
    from adaptrl.cli import EVAL_SPLITS, main
    from adaptrl.eval import SPLITS

    assert EVAL_SPLITS == SPLITS
    with pytest.raises(SystemExit) as info:
        main(["eval", str(tmp_path), "--steps", steps])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_grid_split_uses_the_papers_shape_and_accepts_counts_per_dimension():
    rng = np.random.default_rng(0)
    ant3d = tasks_for_split("ant-3d", "grid", 1, rng)
    assert ant3d.shape == (4 * 4 * 3, 3)  # AdMRL's 4×4×3 grid
    assert sorted(set(ant3d[:, 2].round(6))) == [0.4, 0.5, 0.6]
    assert tasks_for_split("hopper-2d", "grid", 1, rng).shape == (36, 2)
    assert tasks_for_split("hopper-2d", "grid", 1, rng, per_dim=(3, 2)).shape == (6, 2)
    with pytest.raises(ValueError, match="2 parameters"):
        get_family("hopper-2d").grid((3, 2, 2))
