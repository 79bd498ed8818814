"""The `adaptrl` command line: tables, JSON, benchmarks and one-line errors."""

import json
import subprocess
import sys

import pytest

from adaptrl.cli import main
from adaptrl.tasks import REGISTRY


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "adaptrl.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_envs_table_lists_every_family(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for name, family in REGISTRY.items():
        assert name in out and family.gym_id in out


def test_envs_json_has_the_contract_keys(capsys):
    assert main(["envs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(REGISTRY)
    for row in rows:
        for key in ("name", "gym_id", "param_low", "param_high", "horizon", "obs_dim", "act_dim"):
            assert key in row
        assert len(row["param_low"]) == len(row["param_high"])
    cheetah = next(r for r in rows if r["name"] == "cheetah-vel")
    assert cheetah["gym_id"] == "adaptrl/CheetahVel-v0"
    assert (cheetah["param_low"], cheetah["param_high"]) == ([0.0], [2.0])
    assert (cheetah["horizon"], cheetah["obs_dim"], cheetah["act_dim"]) == (200, 17, 6)


def test_bench_sampler_json_reports_rates_and_ratio(capsys):
    assert main(["bench", "sampler", "cheetah-vel", "--tasks", "2", "--episodes", "2",
                 "--horizon", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2 * 2 * 20
    assert result["steps_per_s"] > 0 and result["raw_steps_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["steps_per_s"] / result["raw_steps_per_s"])


def test_bench_sampler_point_nav_has_no_raw_rate(capsys):
    assert main(["bench", "sampler", "point-nav", "--tasks", "2", "--episodes", "2",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["raw_steps_per_s"] is None and result["ratio"] is None


def test_bench_meta_step_json_splits_sampling_and_update(capsys):
    assert main(["bench", "meta-step", "point-nav", "--algos", "maml,fomaml", "--preset", "smoke",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for name in ("maml", "fomaml"):
        m = result["methods"][name]
        assert m["sample_s"] > 0 and m["update_s"] > 0
        assert m["total_s"] == pytest.approx(m["sample_s"] + m["update_s"])
        assert m["raw_sim_s"] > 0
        assert m["total_over_raw_sim"] is None  # a point mass costs next to nothing
    assert result["maml_over_fomaml_update"] == pytest.approx(
        result["methods"]["maml"]["update_s"] / result["methods"]["fomaml"]["update_s"])


def test_raw_simulation_reference_times_the_bare_mujoco_steps():
    from adaptrl.bench.meta_step import raw_simulation_seconds
    assert raw_simulation_seconds("cheetah-vel", 2, 3, 5, 2) > 0


def test_bench_adapt_json_has_latency_memory_and_ratios(capsys):
    assert main(["bench", "adapt", "point-nav", "--algos", "flap,pearl,maml", "--tasks", "3",
                 "--repeats", "2", "--preset", "smoke", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples_per_task"] == 100 and result["tasks"] == 3
    for name in ("flap", "pearl", "maml"):
        m = result["methods"][name]
        assert 0 < m["median_ms"] <= m["p95_ms"] and m["batched_ms_per_task"] > 0
        assert m["peak_mb"] is None or m["peak_mb"] >= 0
    assert set(result["ratios"]) == {"maml/flap", "maml/pearl"}
    assert result["ratios"]["maml/flap"] == pytest.approx(
        result["methods"]["maml"]["median_ms"] / result["methods"]["flap"]["median_ms"])
    assert main(["bench", "adapt", "point-nav", "--algos", "flap", "--tasks", "2",
                 "--repeats", "1", "--preset", "smoke"]) == 0
    assert "flap" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["bench", "adapt", "point-nav", "--algos", "flapp"], "unknown algorithm 'flapp'"),
    (["bench", "sampler", "cheeta-vel"], "did you mean 'cheetah-vel'"),
    (["bench", "samplr", "cheetah-vel"], "choose from 'sampler'"),
    (["frobnicate"], "choose from 'envs', 'bench'"),
    (["bench", "sampler", "cheetah-vel", "--tasks", "0"], "positive integer"),
    (["bench", "sampler", "cheetah-vel", "--hidden", "a,b"], "--hidden"),
])
def test_bad_input_is_one_clear_line_without_traceback(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
