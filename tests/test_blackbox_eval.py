"""The black-box families through the evaluation protocol: analytic oracles, `adaptrl
baselines` (one eval.json per classical baseline, budgets = episodes in the trial) and `adaptrl
compare` of RL² beside them."""

import json

import numpy as np
import pytest
import torch
from scripted import Scripted

from adaptrl.algos.classical import finite_horizon_plan
from adaptrl.cli import main
from adaptrl.eval.oracles import get_oracle, oracle_returns
from adaptrl.runner import train
from adaptrl.sampling import LocalSampler
from adaptrl.tasks import get_family
from adaptrl.tasks.families import tabular_mdp_parts


def test_bandit_oracle_is_the_best_arm():
    family = get_family("bandit-k10")
    tasks = family.sample(7, np.random.default_rng(0))
    assert get_oracle(family).kind == "analytic"
    np.testing.assert_array_equal(oracle_returns(family, tasks, 1), tasks.max(1))


def test_tabular_mdp_oracle_is_what_the_optimal_plan_earns():
    """Value iteration's value from state 0 equals the mean return of its plan executed in the
    environment (2000 episodes per task: 95% CI ≈ ±0.15)."""
    family = get_family("tabular-mdp")
    tasks = family.sample(3, np.random.default_rng(1))
    transitions, means = (torch.as_tensor(x) for x in tabular_mdp_parts(tasks))
    plan = finite_horizon_plan(transitions, means, 10, torch.Generator().manual_seed(0))

    def optimal(obs, generator):  # the plan's action for (task, step, state)
        step = optimal.step % 10
        optimal.step += 1
        actions = plan[:, step][torch.arange(3)[:, None], obs.argmax(-1)]
        return torch.nn.functional.one_hot(actions, 5).float()

    optimal.step = 0
    episodes = LocalSampler(family).sample(Scripted(optimal), tasks, np.random.default_rng(2),
                                           2000)
    measured = episodes.episode_returns().double().mean(1).numpy()
    np.testing.assert_allclose(measured, oracle_returns(family, tasks, 10), atol=0.2)


def test_baselines_write_one_evaluation_each_and_compare_beside_rl2(tmp_path, capsys):
    out = tmp_path / "baselines"
    assert main(["baselines", "bandit-k5", "--trial-episodes", "10", "--num-tasks", "12",
                 "--episodes", "3", "--only", "random,gittins", "--out", str(out)]) == 0
    results = {name: json.loads((out / name / "eval" / "test" / "eval.json").read_text())
               for name in ("random", "gittins")}
    for name, result in results.items():
        assert result["algo"] == name and result["budget_unit"] == "episodes in the trial"
        assert result["steps"] == list(range(10)) and result["oracle_kind"] == "analytic"
        assert [t["samples"] for t in result["tasks"]][0] == list(range(10))
    # the same seed and task count as `adaptrl eval` give the same tasks
    run = train("rl2", "bandit-k5", preset="smoke", out=tmp_path / "rl2", progress=False)
    assert main(["eval", str(run), "--num-tasks", "12", "--episodes", "3"]) == 0
    rl2 = json.loads((run / "eval" / "test" / "eval.json").read_text())
    assert [t["params"] for t in rl2["tasks"]] == [t["params"] for t in results["gittins"]["tasks"]]
    assert main(["compare", str(run), str(out / "gittins"), str(out / "random"),
                 "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "rl2" in table and "gittins" in table and "random" in table


@pytest.mark.parametrize("argv, message", [
    (["baselines", "point-nav"], "no classical baselines"),
    (["baselines", "bandit-k5", "--only", "ucb3"], "unknown baseline"),
    (["baselines", "bandit-k5", "--epsilon", "2"], "--epsilon"),
])
def test_baselines_refuse_bad_input_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
