"""Meta-World ML1 / ML10 / ML45 as task families: splits from the benchmark's own task lists
(and the upstream vector env's leak they avoid), the batched environment, seeded task sampling,
the success rate of the evaluation protocol, and the model-based methods' refusal.

Most tests need the optional extra (``make test-metaworld`` runs them in .venv-mw, on mujoco
3.3.0); the default environment runs the ones that do not.
"""

from __future__ import annotations

import pickle
from collections import Counter

import mujoco
import numpy as np
import pytest
import torch
from conftest import metaworld_installed, needs_metaworld
from scripted import Scripted

from adaptrl.algos import ALGORITHMS, Adapted, MetaAlgorithm
from adaptrl.cli import main
from adaptrl.envs import make_batch_env
from adaptrl.errors import AdaptrlError
from adaptrl.eval.protocol import evaluate
from adaptrl.eval.report import format_table
from adaptrl.names import METAWORLD_FAMILIES, METAWORLD_ML1_TYPES
from adaptrl.sampling import LocalSampler, MemorylessPolicy
from adaptrl.tasks import REGISTRY, get_family

MODEL_BASED = ("grbal", "mb-mpc", "mb-mpc-finetune", "admrl", "mb-unif", "mb-gauss")


def _rand_vecs(tasks) -> set[tuple]:
    """The goal-and-object vectors (``rand_vec``) of metaworld ``Task`` objects."""
    return {tuple(np.round(pickle.loads(t.data)["rand_vec"], 10)) for t in tasks}


def _indices(family, split) -> list[int]:
    return [int(i) for i in family.splits[split].indices()[:, 0]]


# ─── without the extra ───────────────────────────────────────────────────────────────────────
def test_families_are_registered_with_their_names():
    for name in ("mw-ml1-reach", "mw-ml1-push", "mw-ml1-pick-place", "mw-ml10", "mw-ml45"):
        family = get_family(name)
        assert (family.horizon, family.obs_dim, family.act_dim) == (500, 39, 4)
        assert not family.reward_differentiable
    assert [n for n in REGISTRY if n.startswith("mw-")] == list(METAWORLD_FAMILIES)
    assert len(METAWORLD_ML1_TYPES) == 50


@pytest.mark.parametrize("name, train, test", [("mw-ml1-reach", 50, 50), ("mw-ml10", 500, 250),
                                               ("mw-ml45", 2250, 250)])
def test_splits_are_disjoint_index_ranges(name, train, test):
    family = get_family(name)
    assert _indices(family, "train") == list(range(train))
    assert _indices(family, "test") == list(range(train, train + test))
    np.testing.assert_array_equal(family.grid(6)[:, 0], np.arange(train, train + test))
    with pytest.raises(ValueError, match="task indices"):
        family.check_tasks([[train + test]])
    with pytest.raises(ValueError, match="task indices"):
        family.check_tasks([[0.5]])


def test_seeded_task_sampling_repeats_and_is_balanced_across_types():
    family = get_family("mw-ml10")
    a = family.sample(20, np.random.default_rng(7))
    np.testing.assert_array_equal(a, family.sample(20, np.random.default_rng(7)))
    assert not np.array_equal(a, family.sample(20, np.random.default_rng(8)))
    types = Counter(int(i) // 50 for i in a[:, 0])  # ML10's train list: 10 types × 50 goals
    assert sorted(types) == list(range(10)) and set(types.values()) == {2}
    test = get_family("mw-ml1-reach").split("test", 50, np.random.default_rng(0))[:, 0]
    assert sorted(test.astype(int)) == list(range(50, 100))  # without replacement


@pytest.mark.parametrize("algo", MODEL_BASED)
def test_model_based_methods_refuse_metaworld_in_one_line(algo, tmp_path, capsys):
    with pytest.raises(AdaptrlError, match="model-based.*mw-ml1-reach.*Meta-World"):
        ALGORITHMS[algo].check_family(get_family("mw-ml1-reach"))
    out = tmp_path / "run"
    assert main(["train", algo, "mw-ml1-reach", "--preset", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model-based" in err
    assert not out.exists()


@pytest.mark.skipif(metaworld_installed(), reason="metaworld is installed")
def test_without_the_extra_the_error_says_how_to_install():
    with pytest.raises(AdaptrlError, match=r"adaptrl\[metaworld\]"):
        make_batch_env("mw-ml1-reach", 1, 1)


# ─── with the extra ──────────────────────────────────────────────────────────────────────────
@needs_metaworld
def test_ml1_types_are_metaworlds_v3_environments():
    import metaworld

    assert [f"{t}-v3" for t in METAWORLD_ML1_TYPES] == list(metaworld.ML1.ENV_NAMES)


@needs_metaworld
@pytest.mark.parametrize("name", ["mw-ml1-reach", "mw-ml1-push", "mw-ml1-pick-place"])
def test_ml1_train_split_contains_none_of_the_test_goals(name):
    family = get_family(name)
    bench = family.benchmark_object()
    tasks = family.task_list()
    train = _rand_vecs(tasks[i] for i in _indices(family, "train"))
    test = _rand_vecs(tasks[i] for i in _indices(family, "test"))
    assert train == _rand_vecs(bench.train_tasks) and test == _rand_vecs(bench.test_tasks)
    assert len(train) == len(test) == 50
    assert not train & test
    # and the environments serve those goals: the batch env's targets are the train goals
    env = make_batch_env(family, 50, 1)
    env.set_tasks(family.splits["train"].indices())
    env.reset(np.random.default_rng(0))
    served = {tuple(np.round(e._last_rand_vec, 10)) for e in env._envs}
    assert served == train


@needs_metaworld
def test_upstream_ml1_train_vector_env_would_fail_the_same_check():
    """Documents the upstream bug (Metaworld PR #573, open): ``Meta-World/ML1-train`` builds its
    environments with the *test* factory, so the goals it trains on are ML1's test goals."""
    import gymnasium as gym
    import metaworld

    seed = 3
    bench = metaworld.ML1("reach-v3", seed=seed)
    train, test = _rand_vecs(bench.train_tasks), _rand_vecs(bench.test_tasks)
    envs = gym.make_vec("Meta-World/ML1-train", env_name="reach-v3", seed=seed,
                        meta_batch_size=10, vector_strategy="sync")
    try:
        served = set()
        for _ in range(5):  # 10 sub-environments × 5 rounds of goals
            envs.call("sample_tasks")
            envs.reset()
            served |= {tuple(np.round(v, 10)) for v in envs.get_attr("_last_rand_vec")}
    finally:
        envs.close()
    assert served and served <= test  # every goal it serves is a held-out test goal
    assert not served & train  # and none is a training goal: our check above would fail


@needs_metaworld
@pytest.mark.parametrize("name, kind", [("mw-ml10", "ML10"), ("mw-ml45", "ML45")])
def test_ml10_ml45_task_type_splits_match_the_benchmark(name, kind):
    import metaworld.env_dict as env_dict

    family = get_family(name)
    bench = family.benchmark_object()
    types = {split: Counter(family.task_type(i) for i in _indices(family, split))
             for split in ("train", "test")}
    assert set(types["train"]) == set(bench.train_classes)
    assert set(types["test"]) == set(bench.test_classes)
    assert set(types["train"]) == set(getattr(env_dict, f"{kind}_V3")["train"])
    assert set(types["test"]) == set(getattr(env_dict, f"{kind}_V3")["test"])
    assert not set(types["train"]) & set(types["test"])
    assert set(types["train"].values()) == set(types["test"].values()) == {50}
    # the index blocks of 50 that TaskIndexSplit deals from are the benchmark's task types
    for split in ("train", "test"):
        index = _indices(family, split)
        for block in range(0, len(index), 50):
            assert len({family.task_type(i) for i in index[block:block + 50]}) == 1


@needs_metaworld
def test_batch_env_equals_metaworlds_own_env_step_by_step():
    family = get_family("mw-ml1-pick-place")
    tasks = np.array([[3.0], [57.0]])
    env = make_batch_env(family, 2, 2)
    env.set_tasks(tasks)
    obs = env.reset(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, size=(30, 2, 2, 4)).astype(np.float32)
    results = [env.step(a) for a in actions]
    cls = family.env_classes()["pick-place-v3"]
    for t, psi in enumerate(tasks[:, 0]):
        for n in range(2):
            plain = cls()
            plain.set_task(family.task_list()[int(psi)])
            o = plain.reset()[0]
            np.testing.assert_allclose(obs[t, n], o.astype(np.float32))
            for a, result in zip(actions, results):
                o, r, terminated, _, info = plain.step(a[t, n])
                np.testing.assert_allclose(result.obs[t, n], o.astype(np.float32))
                assert result.reward[t, n] == np.float32(r)
                assert result.success[t, n] == bool(info["success"])
                assert not result.terminated[t, n] and not terminated


@needs_metaworld
def test_episodes_last_500_steps_at_most():
    sampler = LocalSampler("mw-ml1-reach")
    policy = _Reacher(np.zeros((1, 3)), np.zeros((1, 1), bool))
    episodes = sampler.sample(policy, [[0.0]], np.random.default_rng(0), 1)
    assert episodes.obs.shape == (1, 1, 500, 39) and episodes.mask.all()
    with pytest.raises(AdaptrlError, match="at most 500 steps"):
        sampler.sample(policy, [[0.0]], np.random.default_rng(0), 1, horizon=501)


# ─── success rate: the protocol against a hand count ────────────────────────────────────────
class _Reacher(MemorylessPolicy):
    """Moves the hand to each environment's goal where ``reach [T, N]`` is True, else holds
    still: a scripted policy that succeeds exactly where we say (the goal is hidden in the ML
    observation, so the test hands it over)."""

    def __init__(self, goals: np.ndarray, reach: np.ndarray):
        self.goals = torch.as_tensor(goals, dtype=torch.float32)[:, None, :]  # [T, 1, 3]
        self.reach = torch.as_tensor(reach)[..., None]  # [T, N, 1]

    def act(self, obs, generator=None):
        move = ((self.goals - obs[..., :3]) * 20).clamp(-1, 1)
        action = torch.cat([move, -torch.ones_like(move[..., :1])], -1)
        return torch.where(self.reach, action, torch.zeros_like(action))


class _Scripted(MetaAlgorithm):
    """Returns a `_Reacher` for every budget that goes for the goal in the first
    ``reach_counts[i]`` episodes of task i (``adapt`` gets the tasks, so it can)."""

    name = "scripted"
    horizon = 100

    def __init__(self, family, reach_counts, episodes):
        self.family, self.reach_counts, self.episodes = family, reach_counts, episodes
        self.sampler = LocalSampler(family)

    def adapt(self, tasks, budgets, rng):
        goals = np.stack([_goal(self.family, int(i)) for i in tasks[:, 0]])
        reach = np.arange(self.episodes)[None, :] < np.asarray(self.reach_counts)[:, None]
        return [Adapted(_Reacher(goals, reach), np.zeros(len(tasks), np.int64), 0.0)
                for _ in budgets]


def _goal(family, index):
    return pickle.loads(family.task_list()[index].data)["rand_vec"][-3:]


@needs_metaworld
def test_success_rate_equals_a_hand_count_on_recorded_episodes():
    family = get_family("mw-ml1-reach")
    tasks = np.array([[50.0], [61.0], [72.0]])
    reach_counts, N, H = [3, 0, 1], 4, 100  # episodes of each task that go for the goal
    algo = _Scripted(family, reach_counts, N)
    result = evaluate(algo, family, tasks, [0], N, np.random.default_rng(0), horizon=H)

    # the hand count: Meta-World's own environments, one episode at a time, success if
    # info["success"] is ever 1; then averaged within each task, then across tasks
    cls = family.env_classes()["reach-v3"]
    hand = []
    for i, psi in enumerate(tasks[:, 0]):
        wins = 0
        for n in range(N):
            env = cls()
            env.set_task(family.task_list()[int(psi)])
            obs = env.reset()[0]
            policy = _Reacher(_goal(family, int(psi))[None], np.array([[n < reach_counts[i]]]))
            succeeded = False
            for _ in range(H):
                action = policy.act(torch.as_tensor(obs, dtype=torch.float32)[None, None], None)
                obs, _, _, _, info = env.step(action[0, 0].numpy())
                succeeded |= bool(info["success"])
            wins += succeeded
        hand.append(wins / N)
    assert hand == [0.75, 0.0, 0.25]  # the scripted policy succeeds exactly where told
    assert [t["success"] for t in result["tasks"]] == [[h] for h in hand]
    assert result["summary"]["success"] == [pytest.approx(np.mean(hand))]
    assert result["summary"]["success_by_type"] == {"reach-v3": [pytest.approx(np.mean(hand))]}
    assert [t["task_type"] for t in result["tasks"]] == ["reach-v3"] * 3
    assert result["benchmark"]["mujoco"] == mujoco.__version__
    table = format_table(result)
    assert "success" in table and f"{100 * np.mean(hand):.1f}%" in table


@needs_metaworld
@pytest.mark.parametrize("algo", ["maml", "pearl"])
def test_smoke_preset_trains_and_evaluates_end_to_end(algo, tmp_path):
    import json

    run = tmp_path / algo
    assert main(["train", algo, "mw-ml1-reach", "--preset", "smoke", "--out", str(run),
                 "--set", "iterations=1", "--no-progress"]) == 0
    assert main(["eval", str(run), "--num-tasks", "2", "--episodes", "2", "--steps", "0,1",
                 "--no-progress"]) == 0
    result = json.loads((run / "eval" / "test" / "eval.json").read_text())
    assert [t["params"][0] >= 50 for t in result["tasks"]] == [True, True]  # test goals
    assert len(result["summary"]["success"]) == 2
    assert "success" in (run / "eval" / "test" / "eval.md").read_text()


def test_families_without_success_record_none():
    family = get_family("point-nav")
    episodes = LocalSampler(family).sample(
        Scripted(lambda obs, g: torch.zeros(*obs.shape[:-1], 2)),
        family.sample(2, np.random.default_rng(0)), np.random.default_rng(0), 2)
    assert episodes.success is None and episodes.episode_success() is None
