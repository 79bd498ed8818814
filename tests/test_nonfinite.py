"""NaN and infinity from the environment or the model: every method refuses the batch or update
where the value enters, counts it in metrics.csv, keeps training, and after ``max_refusals``
refused iterations in a row stops with one line; parameters, optimizer states and checkpoints
stay finite; an evaluation with a broken task completes the others."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptrl.algos import get_algorithm
from adaptrl.algos.registry import ALGORITHMS
from adaptrl.checkpoint import load_checkpoint, numbered_checkpoints
from adaptrl.cli import main
from adaptrl.config import make_config
from adaptrl.envs.base import BatchEnv, StepResult
from adaptrl.errors import AdaptrlError, NonFiniteError
from adaptrl.eval.protocol import evaluate, write_eval_json
from adaptrl.eval.report import format_table
from adaptrl.optim import TrainableSnapshot, first_nonfinite
from adaptrl.runner import REFUSED_COLUMN, load_run, train
from adaptrl.sampling import Episodes, LinearFeatureBaseline, ModelEnv, ReplayBuffer
from adaptrl.tasks import get_family

FAMILY = "point-nav"
METHODS = sorted(name for name, cls in ALGORITHMS.items() if cls.__module__.startswith("adaptrl."))

_PG = ["horizon=10", "fast_batch=2", "meta_batch=2"]
_OFF_POLICY = ["horizon=10", "updates_per_iteration=2", "num_train_tasks=4", "meta_batch=2",
               "initial_episodes=1"]
_MODEL_BASED = ["horizon=10", "fast_batch=2", "n_model=5", "n_policy=1", "virtual_episodes=2",
                "task_cg_iters=3", "n_zeroshot=1", "n_slbo=1", "n_slbo_first=1", "n_inner=1",
                "hidden_sizes=[8]", "model_hidden_sizes=[8]"]
_RECURRENT = ["horizon=10", "trial_episodes=2", "meta_batch=2", "fast_batch=2"]
_MPC = ["horizon=10", "hidden_sizes=[8]", "window=2", "future=2", "model_steps=2",
        "model_batch=4", "plan_horizon=2", "candidates=4"]
FAST = {"maml": _PG, "fomaml": _PG, "reptile": _PG, "random": _PG, "pretrain": _PG,
        "oracle": _PG, "pearl": _OFF_POLICY, "flap": _OFF_POLICY, "admrl": _MODEL_BASED,
        "mb-unif": _MODEL_BASED, "mb-gauss": _MODEL_BASED, "rl2": _RECURRENT,
        "snail": _RECURRENT, "grbal": _MPC, "mb-mpc": _MPC, "mb-mpc-finetune": _MPC}


def test_every_method_has_a_fast_setting():
    assert set(METHODS) <= set(FAST)


# ─── injection ──────────────────────────────────────────────────────────────────────────────
class Corruption:
    """Writes ``value`` into the reward or the observation of environment (0, 0) of every real
    (not learned-model) environment step taken in the training iterations ``iterations``
    (1-based; a predicate). The environment's own state stays finite, so a corruption limited to
    some iterations is transient."""

    def __init__(self, field: str, value: float, iterations):
        self.field, self.value, self.iterations = field, value, iterations
        self.iteration = 0
        self.hits = 0

    def install(self, monkeypatch, algo: str) -> "Corruption":
        cls = get_algorithm(algo)
        train_step, env_step = cls.train_step, BatchEnv.step

        def counted_train_step(method, rng):
            self.iteration = method.iteration + 1
            return train_step(method, rng)

        def corrupted_step(env, action):
            result = env_step(env, action)
            if isinstance(env, ModelEnv) or not self.iterations(self.iteration):
                return result
            self.hits += 1
            obs, reward = result.obs.copy(), result.reward.copy()
            if self.field == "reward":
                reward[0, 0] = self.value
            else:
                obs[0, 0, 0] = self.value
            return StepResult(obs, reward, result.terminated)

        monkeypatch.setattr(cls, "train_step", counted_train_step)
        monkeypatch.setattr(BatchEnv, "step", corrupted_step)
        return self


def run(tmp_path, algo, *overrides, name="run"):
    return train(algo, FAMILY, preset="smoke", overrides=[*FAST[algo], *overrides],
                 out=tmp_path / name, progress=False)


def read_metrics(run_dir):
    with open(Path(run_dir) / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def assert_finite(obj, where="checkpoint"):
    """Every float in a nested structure of dicts, lists, tensors and arrays is finite."""
    if isinstance(obj, torch.Tensor):
        assert not obj.is_floating_point() or torch.isfinite(obj).all(), where
    elif isinstance(obj, np.ndarray):
        assert obj.dtype.kind != "f" or np.isfinite(obj).all(), where
    elif isinstance(obj, float):
        assert math.isfinite(obj), where
    elif isinstance(obj, dict):
        for key, value in obj.items():
            assert_finite(value, f"{where}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            assert_finite(value, f"{where}/{i}")


def assert_checkpoints_finite(run_dir):
    found = numbered_checkpoints(Path(run_dir) / "checkpoints")
    assert found
    for _, path in found:
        payload = load_checkpoint(path)
        assert_finite(payload["algorithm"], str(path))


# ─── training: every method ─────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("algo", METHODS)
def test_transient_nan_reward_and_inf_observation_are_refused_and_counted(
        tmp_path, monkeypatch, one_torch_thread, algo):
    reward = Corruption("reward", math.nan, lambda i: i == 2).install(monkeypatch, algo)
    obs = Corruption("observation", math.inf, lambda i: i == 4).install(monkeypatch, algo)
    run_dir = run(tmp_path, algo, "iterations=5", "checkpoint_every=1")
    assert reward.hits and obs.hits
    rows = read_metrics(run_dir)
    assert [float(r[REFUSED_COLUMN] or 0) for r in rows] == [0, 1, 0, 1, 0]
    method_columns = [c for c in rows[0] if c not in ("iteration", REFUSED_COLUMN, "step_s",
                                                      "elapsed_s") and not c.startswith("time/")]
    for row in rows:
        refused = float(row[REFUSED_COLUMN] or 0) == 1
        assert all((row[c] == "") == refused for c in method_columns), row
    assert_checkpoints_finite(run_dir)
    method, _, info = load_run(run_dir)
    assert info["iteration"] == 5 and first_nonfinite(method.trainables()) is None


@pytest.mark.parametrize("field, value", [("reward", -math.inf), ("observation", math.nan)])
@pytest.mark.parametrize("algo", METHODS)
def test_persistent_corruption_stops_the_run_with_one_line(tmp_path, monkeypatch,
                                                             one_torch_thread, algo, field, value):
    Corruption(field, value, lambda i: i >= 2).install(monkeypatch, algo)
    with pytest.raises(AdaptrlError) as caught:
        run(tmp_path, algo, "iterations=6", "checkpoint_every=1", "max_refusals=2")
    message = str(caught.value)
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    assert "\n" not in message
    assert f"non-finite {field} in sampled episodes" in message
    assert "stopped at iteration 3" in message and "max_refusals=2" in message
    assert f"last good checkpoint: {latest} (iteration 2)" in message
    rows = read_metrics(tmp_path / "run")
    assert [float(r[REFUSED_COLUMN] or 0) for r in rows] == [0, 1, 1]
    assert_checkpoints_finite(tmp_path / "run")


def test_persistent_corruption_before_any_checkpoint_says_so(tmp_path, monkeypatch):
    Corruption("reward", math.nan, lambda i: True).install(monkeypatch, "maml")
    with pytest.raises(AdaptrlError, match="max_refusals=1.*last good checkpoint: none yet"):
        run(tmp_path, "maml", "iterations=3", "max_refusals=1")


def test_cli_prints_the_stop_as_one_line(tmp_path, monkeypatch, capsys):
    Corruption("reward", math.inf, lambda i: i >= 2).install(monkeypatch, "reptile")
    code = main(["train", "reptile", FAMILY, "--preset", "smoke", "--out", str(tmp_path / "r"),
                 *[x for o in [*FAST["reptile"], "iterations=4", "max_refusals=1",
                               "checkpoint_every=1"] for x in ("--set", o)]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "non-finite reward in sampled episodes" in err[-1]
    assert "last good checkpoint" in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("algo, target", [("pearl", "sac.critic"), ("flap", "adapter"),
                                          ("maml", "policy"), ("rl2", "optimizer")])
def test_an_update_that_goes_non_finite_is_undone(tmp_path, monkeypatch, one_torch_thread,
                                                  algo, target):
    """A NaN made by the model itself (here written into a network or an optimizer state at
    the end of iteration 2) is found after the update; the iteration's changes are undone."""
    cls = get_algorithm(algo)
    train_step = cls.train_step

    def poisoning_train_step(method, rng):
        metrics = train_step(method, rng)
        if method.iteration + 1 == 2:
            obj = method.trainables()[target]
            with torch.no_grad():
                if isinstance(obj, torch.optim.Optimizer):
                    next(iter(obj.state.values()))["exp_avg"].fill_(math.nan)
                else:
                    next(obj.parameters()).fill_(math.nan)
        return metrics

    monkeypatch.setattr(cls, "train_step", poisoning_train_step)
    run_dir = run(tmp_path, algo, "iterations=3", "checkpoint_every=1")
    rows = read_metrics(run_dir)
    assert [float(r[REFUSED_COLUMN] or 0) for r in rows] == [0, 1, 0]
    assert_checkpoints_finite(run_dir)
    # the checkpoint of the refused iteration holds the weights from before it
    if algo == "maml":
        before = load_checkpoint(run_dir / "checkpoints" / "iter_000001.pt")["algorithm"]
        after = load_checkpoint(run_dir / "checkpoints" / "iter_000002.pt")["algorithm"]
        for key, value in before["policy"].items():
            assert torch.equal(value, after["policy"][key]), key


# ─── the pieces ─────────────────────────────────────────────────────────────────────────────
def test_snapshot_restores_modules_optimizers_and_tensors():
    net = torch.nn.Linear(3, 2)
    log_alpha = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([*net.parameters(), log_alpha], lr=0.1)
    trainables = {"net": net, "opt": opt, "log_alpha": log_alpha}
    snapshot = TrainableSnapshot(trainables)  # the optimizer has no state yet
    (net(torch.ones(4, 3)).sum() + log_alpha).backward()
    opt.step()
    with torch.no_grad():
        net.weight.fill_(math.nan)
        log_alpha.fill_(math.inf)
    assert first_nonfinite(trainables) == "net.weight"
    snapshot.restore()
    assert first_nonfinite(trainables) is None and len(opt.state) == 0
    assert float(log_alpha.detach()) == 0.0

    opt.step()  # now with state: a non-finite moment is found and restored
    snapshot = TrainableSnapshot(trainables)
    saved = {k: v.clone() for k, v in opt.state[net.bias].items()}
    opt.state[net.bias]["exp_avg"].fill_(math.nan)
    assert first_nonfinite(trainables) == "opt state exp_avg"
    snapshot.restore()
    assert all(torch.equal(opt.state[net.bias][k], v) for k, v in saved.items())


def test_module_buffers_may_hold_infinity_but_not_nan():
    net = torch.nn.Linear(2, 2)
    net.register_buffer("low", torch.full((2,), -math.inf))
    assert first_nonfinite({"net": net}) is None
    net.low[0] = math.nan
    assert first_nonfinite({"net": net}) == "net.low"


def _episodes(reward_value=0.0):
    T, N, H = 2, 1, 3
    rewards = torch.zeros(T, N, H)
    rewards[1, 0, 2] = reward_value
    return Episodes(torch.zeros(T, N, H, 2), torch.zeros(T, N, H, 2), rewards,
                    torch.zeros(T, N, H, 2), torch.ones(T, N, H), torch.zeros(T, N, H, dtype=bool),
                    np.zeros((T, 2)))


def test_replay_refuses_a_non_finite_batch_whole():
    buffer = ReplayBuffer(2, 10, 2, 2)
    buffer.add_episodes(_episodes())
    with pytest.raises(NonFiniteError, match="non-finite reward in replay insert"):
        buffer.add_episodes(_episodes(math.nan))
    assert buffer.size.tolist() == [3, 3]


def test_episodes_check_names_what_is_not_finite():
    assert _episodes().check_finite("here") is not None
    with pytest.raises(NonFiniteError) as caught:
        _episodes(math.inf).check_finite("sampled episodes")
    assert (caught.value.what, caught.value.where) == ("reward",
                                                      "sampled episodes (task 1, step 2)")
    episodes = _episodes()  # a policy fed a NaN reward acts NaN a step later
    episodes.rewards[1, 0, 1] = math.nan
    episodes.actions[1, 0, 2] = math.nan
    episodes.next_obs[1, 0, 2] = math.nan
    with pytest.raises(NonFiniteError, match=r"non-finite reward in here \(task 1, step 1\)"):
        episodes.check_finite("here")
    assert isinstance(caught.value, FloatingPointError)


def test_baseline_without_finite_solution_is_a_non_finite_error():
    episodes = _episodes()
    episodes.obs[0, 0, 0, 0] = math.nan  # the sampler would have refused this
    with pytest.raises(NonFiniteError, match="baseline"):
        LinearFeatureBaseline().fit(episodes)


# ─── evaluation ─────────────────────────────────────────────────────────────────────────────
def _broken_task_env(monkeypatch, bad_psi):
    """Rewards of every environment of the task ``bad_psi`` are NaN."""
    env_step = BatchEnv.step

    def step(env, action):
        result = env_step(env, action)
        rows = np.flatnonzero(np.all(np.isclose(env.tasks, bad_psi), axis=1))
        if rows.size:
            reward = result.reward.copy()
            reward[rows] = math.nan
            result = StepResult(result.obs, reward, result.terminated)
        return result

    monkeypatch.setattr(BatchEnv, "step", step)


@pytest.mark.parametrize("algo", ["maml", "pearl", "rl2"])
def test_eval_marks_a_broken_task_and_completes_the_others(tmp_path, monkeypatch,
                                                           one_torch_thread, algo):
    family = get_family(FAMILY)
    cls = get_algorithm(algo)
    torch.manual_seed(0)
    method = cls(family, make_config(cls, "smoke", FAST[algo]))
    tasks = family.sample(5, np.random.default_rng(1))
    _broken_task_env(monkeypatch, tasks[3])
    result = evaluate(method, family, tasks, [0, 1], episodes=2, rng=np.random.default_rng(2))
    assert result["nonfinite_tasks"] == [3]
    assert result["tasks"][3]["returns"][-1] is None
    healthy = [t for i, t in enumerate(result["tasks"]) if i != 3]
    assert all(math.isfinite(r) for t in healthy for r in t["returns"])
    for b in range(2):
        expected = np.mean([t["returns"][b] for t in healthy])
        assert result["summary"]["mean"][b] == pytest.approx(expected)
    write_eval_json(result, tmp_path / "eval.json")  # strict JSON: no NaN in it
    table = format_table(result)
    assert "Non-finite: 1 of 5 tasks" in table and "task 3" in table


def test_adaptrl_eval_reports_a_broken_task_in_eval_json_and_the_table(tmp_path, monkeypatch,
                                                                       capsys):
    run_dir = run(tmp_path, "fomaml", "iterations=1")
    tasks = [[0.3, -0.2], [-0.4, 0.1], [0.2, 0.4]]
    task_file = tmp_path / "three.json"
    task_file.write_text(json.dumps(tasks))
    _broken_task_env(monkeypatch, np.asarray(tasks[1]))
    assert main(["eval", str(run_dir), "--tasks", str(task_file), "--steps", "0,1",
                 "--episodes", "2", "--no-progress"]) == 0
    out = run_dir / "eval" / "three"
    result = json.loads((out / "eval.json").read_text())
    assert result["nonfinite_tasks"] == [1]
    assert all(math.isfinite(r) for i in (0, 2) for r in result["tasks"][i]["returns"])
    assert "Non-finite: 1 of 3 tasks" in (out / "eval.md").read_text()
    assert "Non-finite" in capsys.readouterr().out
