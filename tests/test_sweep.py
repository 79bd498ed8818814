"""`adaptrl sweep` (methods × families × presets × seeds, on local processes or Ray) and the
aggregation over seeds in `adaptrl compare`.

The end-to-end tests run a sweep of 2 methods × 2 seeds on the smoke preset, SIGKILL its driver
once a run has written a checkpoint, check that no training survives it (every run folder's lock
is free), start the same command again and check that every run completes, that an interrupted
run resumed from its checkpoint, and that one compare aggregated the seeds. With Ray the sweep
runs one Ray task per run on a local Ray of 2 CPUs (skipped when Ray is not installed).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from adaptrl.cli import main
from adaptrl.errors import AdaptrlError
from adaptrl.eval import write_compare
from adaptrl.eval.stats import t_quantile
from adaptrl.sweep import SweepSpec, parse_seeds

SMOKE = ["--algos", "maml,fomaml", "--families", "point-nav", "--presets", "smoke",
         "--seeds", "0-1", "--set", "iterations=5", "--eval-tasks", "4", "--eval-episodes", "2",
         "--eval-steps", "0,1"]


def _sweep_command(out: Path, backend: str) -> list[str]:
    return [sys.executable, "-m", "adaptrl", "sweep", *SMOKE, "--out", str(out),
            "--backend", backend, "--no-progress"]


def _child_env() -> dict[str, str]:
    # a local Ray of 2 CPUs, whatever the machine has
    return dict(os.environ, ADAPTRL_TORCH_THREADS="1", ADAPTRL_MUJOCO_THREADS="1",
                ADAPTRL_RAY_CPUS="2")


def _locked(run_dir: Path) -> bool:
    lock = run_dir / ".lock"
    if not lock.exists():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _kill_then_finish(tmp_path: Path, backend: str) -> Path:
    out = tmp_path / "sweep"
    driver = subprocess.Popen(_sweep_command(out, backend), env=_child_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list(out.glob("runs/*/checkpoints/latest.pt")):
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no run wrote a checkpoint in 240 s"
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only: its children must follow it
        driver.wait()
        runs = sorted((out / "runs").iterdir())
        deadline = time.time() + 60
        while any(_locked(r) for r in runs):
            assert time.time() < deadline, "a run was still training 60 s after the kill"
            time.sleep(0.2)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    status = json.loads((out / "status.json").read_text())
    assert any(v["state"] != "done" for v in status.values())  # killed before the end
    again = subprocess.run(_sweep_command(out, backend), env=_child_env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    return out


def _check_finished(out: Path) -> None:
    names = [f"{a}-point-nav-smoke-s{s}" for a in ("maml", "fomaml") for s in (0, 1)]
    status = json.loads((out / "status.json").read_text())
    assert {n: status[n]["state"] for n in names} == {n: "done" for n in names}
    for name in names:
        assert (out / "runs" / name / "eval" / "test" / "eval.json").is_file()
        rows = (out / "runs" / name / "metrics.csv").read_text().strip().splitlines()
        assert len(rows) == 1 + 5  # header + every iteration once
    logs = "".join((out / "logs" / f"{n}.log").read_text() for n in names)
    assert "--resume" in logs  # the run interrupted after its checkpoint went on from it
    summary = json.loads((out / "compare-point-nav" / "compare.json").read_text())
    assert [(g["algo"], g["seeds"]) for g in summary["groups"]] == [
        ("maml", [0, 1]), ("fomaml", [0, 1])]
    assert all(len(g["mean"]) == 2 and g["ci95"][0] is not None for g in summary["groups"])
    assert (out / "compare-point-nav" / "compare.png").is_file()
    assert "| maml | point-nav | smoke | 2 |" in (out / "times.md").read_text()


def test_sweep_killed_once_then_restarted_completes_every_run_local(tmp_path):
    out = _kill_then_finish(tmp_path, "local")
    _check_finished(out)
    again = subprocess.run(_sweep_command(out, "local"), env=_child_env(), capture_output=True,
                           text=True, timeout=300)  # a finished sweep: the summary again
    assert again.returncode == 0 and "all 4 runs are done" in again.stderr
    assert again.stdout.count("done    ") == 4


def test_sweep_killed_once_then_restarted_completes_every_run_ray(tmp_path):
    pytest.importorskip("ray")
    _check_finished(_kill_then_finish(tmp_path, "ray"))


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ADAPTRL_TORCH_THREADS", "1")
    out = tmp_path / "sweep"
    spec = SweepSpec(algos=["maml"], families=["point-nav"], presets=["smoke"], seeds=[0, 1],
                     overrides=["iterations=2"], eval_tasks=4, eval_episodes=2,
                     eval_steps=[0, 1])
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps(asdict(spec), indent=1) + "\n")
    broken = out / "runs" / "maml-point-nav-smoke-s1"  # a run whose checkpoint is corrupt
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "config.yaml").write_text(yaml.safe_dump({"algo": "maml", "family": "point-nav",
                                                        "seed": 1, "preset": "smoke",
                                                        "config": {"iterations": 2}}))
    (broken / "checkpoints" / "latest.pt").write_bytes(b"not a checkpoint")
    code = main(["sweep", "--algos", "maml", "--families", "point-nav", "--presets", "smoke",
                 "--seeds", "0,1", "--set", "iterations=2", "--eval-tasks", "4",
                 "--eval-episodes", "2", "--eval-steps", "0,1", "--out", str(out),
                 "--backend", "local", "--jobs", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "done    maml-point-nav-smoke-s0" in captured.out
    assert "failed  maml-point-nav-smoke-s1  train exited with 2: adaptrl: error:" in captured.out
    assert "1 of 2 runs failed" in captured.err
    status = json.loads((out / "status.json").read_text())
    assert status["maml-point-nav-smoke-s0"]["state"] == "done"
    assert status["maml-point-nav-smoke-s1"]["state"] == "failed"
    assert (out / "compare-point-nav" / "compare.md").is_file()  # over the finished run


@pytest.mark.parametrize("argv, message", [
    (["--algos", "maml,nope", "--families", "point-nav"], "unknown algorithm 'nope'"),
    (["--algos", "maml", "--families", "mars"], "unknown task family 'mars'"),
    (["--algos", "maml", "--families", "point-nav", "--presets", "nope"], "nope"),
    (["--algos", "maml", "--families", "point-nav", "--set", "meta_batch=-3"], "meta_batch"),
    (["--algos", "maml", "--families", "point-nav", "--seeds", "4-1"], "--seeds"),
    (["--algos", "maml", "--families", "point-nav", "--seeds", "a"], "--seeds"),
    (["--algos", "maml,,fomaml", "--families", "point-nav"], "--algos"),
    (["--algos", "maml", "--families", "point-nav", "--jobs", "2", "--backend", "ray"], "--jobs"),
    (["--algos", "maml", "--families", "point-nav", "--backend", "local", "--ray-address",
      "10.0.0.5:6379"], "--ray-address"),
])
def test_bad_sweeps_are_one_line_errors_before_anything_is_written(tmp_path, capsys, argv,
                                                                   message):
    out = tmp_path / "sweep"
    assert main(["sweep", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adaptrl: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_a_different_sweep_in_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    spec = SweepSpec(algos=["maml"], families=["point-nav"], presets=["smoke"], seeds=[0])
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps(asdict(spec)))
    assert main(["sweep", "--algos", "maml", "--families", "point-nav", "--presets", "smoke",
                 "--seeds", "0-1", "--out", str(out), "--backend", "local"]) == 2
    err = capsys.readouterr().err
    assert "holds another sweep (it differs in seeds)" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    assert main(["sweep", "--algos", "maml", "--families", "point-nav", "--out",
                 str(tmp_path / "other"), "--backend", "local"]) == 2
    assert "is not a sweep folder" in capsys.readouterr().err


def test_seed_lists():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("0-2,10,1") == [0, 1, 2, 10]
    for bad in ("", "1-", "-1", "x", "3-1"):
        with pytest.raises(AdaptrlError):
            parse_seeds(bad)


# ─── compare over seeds, on hand-made evaluations ─────────────────────────────────────────────
def _fake_run(root: Path, name: str, algo: str, seed: int, means: list[float],
              config: dict | None = None, success: list[float] | None = None,
              segments: dict | None = None) -> Path:
    run = root / name
    (run / "eval" / "test").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({
        "algo": algo, "family": "point-nav", "seed": seed, "preset": "nav",
        "config": config or {"iterations": 10, "inner_lr": 0.1, "checkpoint_every": seed + 1}}))
    tasks = [{"params": [0.1 * i, 0.2], "returns": [m + d for m in means], "oracle": -1.0,
              "adapt_ms": [0.0, 1.0], "samples": [0, 400]} for i, d in enumerate((-1.0, 1.0))]
    result = {"algo": algo, "family": "point-nav", "split": "test", "steps": [0, 1],
              "episodes": 2, "seed": 0, "tasks": tasks,
              "summary": {"mean": means, "ci95": [0.5, 0.5], "gap_mean": None,
                          "gap_max": None, "oracle_mean": -1.0,
                          **({} if success is None else {"success": success,
                                                         "success_ci95": [0.1, 0.1]})},
              "run": {"dir": str(run), "seed": seed, "iteration": 10, "checkpoint": "x"},
              **({} if segments is None else {"segments": segments})}
    (run / "eval" / "test" / "eval.json").write_text(json.dumps(result))
    return run


def test_compare_aggregates_runs_that_differ_only_in_seed(tmp_path):
    means = {0: [-30.0, -20.0], 1: [-28.0, -16.0], 2: [-32.0, -18.0]}
    runs = [_fake_run(tmp_path, f"maml-s{s}", "maml", s, m) for s, m in means.items()]
    runs += [_fake_run(tmp_path, f"random-s{s}", "random", s, [-60.0 - s, -60.0 - s])
             for s in (0, 1)]
    runs.append(_fake_run(tmp_path, "maml-lr", "maml", 0, [-40.0, -40.0],  # another config
                          {"iterations": 10, "inner_lr": 0.5}))
    table, paths = write_compare(runs, "test", tmp_path / "cmp")
    summary = json.loads(paths["json"].read_text())
    groups = {g["label"]: g for g in summary["groups"]}
    assert list(groups) == ["maml [nav] #1", "random", "maml [nav] #2"]
    first = summary["groups"][0]
    assert first["seeds"] == [0, 1, 2]
    per_budget = np.array(list(means.values()))  # [seeds, budgets]
    assert first["mean"] == pytest.approx(per_budget.mean(0).tolist())
    half = t_quantile(0.975, 2) * per_budget.std(0, ddof=1) / math.sqrt(3)
    assert first["ci95"] == pytest.approx(half.tolist())
    assert summary["groups"][2]["seeds"] == [0] and summary["groups"][2]["ci95"] == [None, None]
    assert table.index("aggregated over seeds") < table.index("Per seed:")
    assert f"-30.00 ± {half[0]:.2f}" in table
    assert "fewer than 3 seeds:" in table and "random" in table.split("fewer than 3 seeds:")[1]
    assert paths["plot"].name == "compare.png" and paths["runs_plot"].is_file()


def test_compare_of_one_seed_per_method_is_unchanged(tmp_path):
    runs = [_fake_run(tmp_path, "a", "maml", 0, [-3.0, -2.0]),
            _fake_run(tmp_path, "b", "fomaml", 0, [-4.0, -2.5])]
    table, paths = write_compare(runs, "test", tmp_path / "cmp")
    assert "aggregated over seeds" not in table and "json" not in paths
    assert "| maml (a) | -3.00 ± 0.50 | -2.00 ± 0.50 |" in table


def test_compare_shows_success_rates_per_run_and_over_seeds(tmp_path):
    runs = [_fake_run(tmp_path, f"maml-s{s}", "maml", s, [-3.0, -2.0], success=rates)
            for s, rates in enumerate(([0.2, 0.5], [0.4, 0.7]))]
    table, paths = write_compare(runs, "test", tmp_path / "cmp")
    assert "| maml (maml-s0) | 20.0% ± 10.0 | 50.0% ± 10.0 |" in table
    halves = [100 * t_quantile(0.975, 1) * np.std(pair, ddof=1) / math.sqrt(2)
              for pair in ([0.2, 0.4], [0.5, 0.7])]
    assert f"| maml | 2 | 30.0% ± {halves[0]:.1f} | 60.0% ± {halves[1]:.1f} |" in table
    summary = json.loads(paths["json"].read_text())
    assert summary["groups"][0]["success"] == pytest.approx([0.3, 0.6])


def test_compare_of_a_midway_family_shows_returns_before_and_after_the_change(tmp_path):
    runs = [_fake_run(tmp_path, f"grbal-s{s}", "grbal", s, [-3.0, -2.0], segments={
        "change_step": 4, "before": [b, b + 1], "after": [a, a + 2],
        "reward_curve": [[0.5] * 4 + [0.1] * 16, [0.6] * 4 + [0.3] * 16]})
        for s, (b, a) in enumerate(((10.0, 1.0), (12.0, 3.0), (14.0, 5.0)))]
    table, paths = write_compare(runs, "test", tmp_path / "cmp")
    half = t_quantile(0.975, 2) * np.std([1.0, 3.0, 5.0], ddof=1) / math.sqrt(3)
    assert "return before the dynamics change (steps 0–3) and after it (steps 4–)" in table
    assert f"| grbal | 0 | 3 | 12.00 ± {half:.2f} | 3.00 ± {half:.2f} |" in table
    assert f"| grbal | 1 | 3 | 13.00 ± {half:.2f} | 5.00 ± {half:.2f} |" in table
    assert paths["reward_curve"].name == "compare_reward_curve.png"
