"""Tests of the single-environment Gymnasium views, ``adaptrl/<Name>-v0``."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.utils.env_checker import check_env

import adaptrl  # noqa: F401  (registers the views)
from adaptrl.envs import make_batch_env
from adaptrl.envs.gym_view import TaskEnv, register_all
from adaptrl.tasks import REGISTRY


def _view(name, **kwargs) -> TaskEnv:
    env = gym.make(REGISTRY[name].gym_id, **kwargs).unwrapped
    assert isinstance(env, TaskEnv)
    return env


# ─── registration and the env checker ────────────────────────────────────────────────────────
def test_every_family_is_registered():
    ids = register_all()  # idempotent
    assert ids == [family.gym_id for family in REGISTRY.values()]
    for family in REGISTRY.values():
        assert family.gym_id.startswith("adaptrl/") and family.gym_id.endswith("-v0")
        assert family.gym_id in gym.registry
    assert REGISTRY["cheetah-vel"].gym_id == "adaptrl/CheetahVel-v0"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_check_env(name):
    env = gym.make(REGISTRY[name].gym_id).unwrapped
    with warnings.catch_warnings():
        # Box observation spaces with infinite bounds are intended
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env)
    family = REGISTRY[name]
    assert env.observation_space.shape == (family.obs_dim,)
    if family.discrete_actions:
        assert env.action_space.n == family.act_dim
    else:
        assert env.action_space.shape == (family.act_dim,)


def test_render_mode_rejected():
    with pytest.raises(ValueError):
        TaskEnv("point-nav", render_mode="human")


# ─── tasks ───────────────────────────────────────────────────────────────────────────────────
def test_set_task_used_by_next_reset():
    env = _view("point-nav")
    goal = np.array([0.3, -0.2])
    env.set_task(goal)
    np.testing.assert_array_equal(env.task, goal)
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(info["task"], goal)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    obs, reward, terminated, truncated, info = env.step(np.array([0.1, 0.0], np.float32))
    np.testing.assert_allclose(obs, [0.1, 0.0], rtol=1e-6)
    assert reward == pytest.approx(-np.hypot(0.1 - 0.3, 0.0 + 0.2), rel=1e-5)
    np.testing.assert_array_equal(info["task"], goal)
    assert not terminated and not truncated

    # a task given through reset's options, kept for the following resets
    other = np.array([-0.4, 0.1])
    _, info = env.reset(options={"task": other})
    np.testing.assert_array_equal(info["task"], other)
    _, reward, *_ = env.step(np.array([0.0, 0.1], np.float32))
    assert reward == pytest.approx(-np.hypot(0.4, 0.0), rel=1e-5)
    _, info = env.reset(seed=3)
    np.testing.assert_array_equal(info["task"], other)


def test_task_given_at_make():
    env = _view("cheetah-vel", task=[1.5])
    _, info = env.reset(seed=0)
    np.testing.assert_array_equal(info["task"], [1.5])


def test_set_task_mid_episode_waits_for_reset():
    """set_task takes effect at the next reset: the running episode keeps its task, in its
    reward and in the task its step infos report."""
    env = _view("point-nav")
    env.set_task([0.3, 0.0])
    env.reset(seed=0)
    env.set_task([-0.3, 0.0])
    _, reward, _, _, info = env.step(np.array([0.1, 0.0], np.float32))
    assert reward == pytest.approx(-0.2, rel=1e-5)  # still the first goal
    np.testing.assert_array_equal(info["task"], [0.3, 0.0])
    _, info = env.reset(seed=0)
    np.testing.assert_array_equal(info["task"], [-0.3, 0.0])
    _, reward, *_ = env.step(np.array([0.1, 0.0], np.float32))
    assert reward == pytest.approx(-0.4, rel=1e-5)


@pytest.mark.parametrize("name, bad", [("point-nav", [0.1]), ("point-nav", [0.1, 0.2, 0.3]),
                                       ("cheetah-vel", [[1.0, 2.0]]),
                                       ("hopper-params", np.zeros(36))])
def test_wrong_task_shape_raises(name, bad):
    env = _view(name)
    with pytest.raises(ValueError):
        env.set_task(bad)
    with pytest.raises(ValueError):
        env.reset(seed=0, options={"task": bad})
    with pytest.raises(ValueError):
        TaskEnv(name, task=bad)


def test_default_task_is_a_training_task_from_the_seed():
    family = REGISTRY["cheetah-vel"]
    env = _view("cheetah-vel")
    assert env.task is None
    _, info = env.reset(seed=12)
    expected = family.sample(1, seeding.np_random(12)[0])[0]
    np.testing.assert_array_equal(info["task"], expected)
    assert family.splits["train"].low[0] <= info["task"][0] <= family.splits["train"].high[0]


@pytest.mark.parametrize("name", ["cheetah-vel", "ant-goal", "point-nav"])
def test_reset_with_same_seed_is_reproducible(name):
    """Gymnasium's contract: reset(seed=s) gives the same start whatever happened before."""
    env = _view(name)
    obs1, info1 = env.reset(seed=5)
    env.step(env.action_space.sample())
    obs2, info2 = env.reset(seed=5)
    np.testing.assert_array_equal(info1["task"], info2["task"])
    np.testing.assert_array_equal(obs1, obs2)


# ─── the view is the batch env with T = N = 1 ────────────────────────────────────────────────
@pytest.mark.parametrize("name", ["point-nav", "cheetah-vel", "hopper-params", "ant-goal"])
def test_view_equals_batch_env(name):
    family = REGISTRY[name]
    task = family.sample(1, np.random.default_rng(4))[0]
    seed = 21
    view = _view(name)
    view.set_task(task)
    obs, info = view.reset(seed=seed)
    assert obs.dtype == np.float64 and obs.shape == (family.obs_dim,)
    assert view.observation_space.contains(obs)

    batch = make_batch_env(name, 1, 1)
    batch.set_tasks(task[None])
    batch_obs = batch.reset(seeding.np_random(seed)[0])
    np.testing.assert_array_equal(obs, batch_obs[0, 0].astype(np.float64))
    np.testing.assert_array_equal(view.action_space.low, batch.action_low)
    np.testing.assert_array_equal(view.action_space.high, batch.action_high)

    rng = np.random.default_rng(0)
    for _ in range(8):
        action = rng.uniform(batch.action_low, batch.action_high).astype(np.float32)
        obs, reward, terminated, truncated, info = view.step(action)
        result = batch.step(action[None, None])
        np.testing.assert_array_equal(obs, result.obs[0, 0].astype(np.float64))
        assert isinstance(reward, float) and reward == float(result.reward[0, 0])
        assert terminated == bool(result.terminated[0, 0])
        assert not truncated
        np.testing.assert_array_equal(info["task"], task)
        if terminated:
            break


# ─── episode ends ────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("name, task", [("point-nav-sq", [0.5, 0.5]), ("cheetah-vel", [1.0])])
def test_truncated_at_horizon_then_step_raises(name, task):
    family = REGISTRY[name]
    assert family.terminated_fn is None or name.startswith("point")
    env = _view(name)
    env.set_task(task)
    env.reset(seed=0)
    zero = np.zeros(family.act_dim, np.float32)  # the point stays at the origin, far from goal
    for t in range(1, family.horizon + 1):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated
        assert truncated == (t == family.horizon)
    with pytest.raises(RuntimeError):
        env.step(zero)
    # a reset starts a new episode
    env.reset(seed=1)
    _, _, _, truncated, _ = env.step(zero)
    assert not truncated


def test_terminated_then_step_raises():
    env = _view("point-nav")
    env.set_task([0.05, 0.05])
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(np.array([0.05, 0.05], np.float32))
    assert terminated and not truncated
    with pytest.raises(RuntimeError):
        env.step(np.array([0.05, 0.05], np.float32))
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))


def test_step_before_reset_raises():
    env = _view("cheetah-vel")
    with pytest.raises(RuntimeError):
        env.step(np.zeros(6, np.float32))
