"""Tests of the single-environment Gymnasium views, ``adaptrl/<Name>-v0``."""

from __future__ import annotations

import copy
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from conftest import family_params
from gymnasium.utils import seeding
from gymnasium.utils.env_checker import check_env

import adaptrl  # noqa: F401  (registers the views)
from adaptrl.envs import make_batch_env
from adaptrl.envs.gym_view import TaskEnv, register_all
from adaptrl.errors import AdaptrlError
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


@pytest.mark.parametrize("name", family_params(REGISTRY))
def test_check_env(name):
    env = gym.make(REGISTRY[name].gym_id).unwrapped
    with warnings.catch_warnings():
        # Box observation spaces with infinite bounds are intended
        warnings.filterwarnings("ignore", message=".*infinity.*")
        # the render check makes a renderer (about a second for MuJoCo): one body of each kind
        check_env(env, skip_render_check=name not in ("cheetah-vel", "point-nav", "maze-small"))
    family = REGISTRY[name]
    assert env.observation_space.shape == (family.obs_dim,)
    if family.discrete_actions:
        assert env.action_space.n == family.act_dim
    else:
        assert env.action_space.shape == (family.act_dim,)


# ─── rendering ───────────────────────────────────────────────────────────────────────────────
def _frame_differs_from_background(frame):
    return frame.std() > 5.0  # a picture, not a blank canvas


def _render_or_skip(env):
    """The frame; a skip only where no OpenGL backend exists at all (neither EGL nor OSMesa)."""
    try:
        return env.render()
    except AdaptrlError as err:
        if "MuJoCo cannot render" not in str(err):
            raise
        pytest.skip(f"no OpenGL backend for MuJoCo here: {err}")


@pytest.mark.parametrize("name", ["cheetah-vel", "hopper-params", "point-nav", "maze-small",
                                  "bandit-k5", "tabular-mdp"])
def test_rgb_array_renders_a_frame(name):
    """MuJoCo bodies through MuJoCo's renderer (headless: EGL, MUJOCO_GL=egl), the others
    drawn with NumPy; the frame follows the state."""
    env = gym.make(REGISTRY[name].gym_id, render_mode="rgb_array", width=96, height=64)
    try:
        assert env.render_mode == "rgb_array"
        assert "rgb_array" in env.unwrapped.metadata["render_modes"]
        env.reset(seed=0)
        first = _render_or_skip(env)
        assert first.shape == (64, 96, 3) and first.dtype == np.uint8
        assert _frame_differs_from_background(first)
        env.action_space.seed(0)
        obs, _ = env.reset(seed=0)
        for _ in range(5):
            # a maze move through an open side (walls are obs[:4]); elsewhere random actions
            action = int(np.argmin(obs[:4])) if name == "maze-small" else \
                env.action_space.sample()
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        if name not in ("bandit-k5",):  # a bandit's picture changes only with the arm pulled
            assert not np.array_equal(env.render(), first)
    finally:
        env.close()


def test_mujoco_frame_is_the_same_state_rendered_twice():
    env = gym.make("adaptrl/CheetahVel-v0", render_mode="rgb_array", width=64, height=64)
    try:
        env.reset(seed=1)
        np.testing.assert_array_equal(_render_or_skip(env), env.render())
    finally:
        env.close()


def test_human_mode_needs_a_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(AdaptrlError, match="needs a display"):
        TaskEnv("point-nav", render_mode="human")
    with pytest.raises(AdaptrlError, match="unknown render_mode 'rgb'"):
        TaskEnv("point-nav", render_mode="rgb")
    assert TaskEnv("point-nav").metadata["render_modes"] == ["rgb_array"]


# ─── pickling and copies ─────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("copier", [lambda env: pickle.loads(pickle.dumps(env)), copy.deepcopy],
                         ids=["pickle", "deepcopy"])
@pytest.mark.parametrize("name", ["hopper-params", "maze-small", "tabular-mdp"])
def test_copies_continue_the_same_episode(copier, name):
    """A copy taken mid-episode steps exactly as the original (physics, task, noise stream,
    generator), and the two are independent afterwards."""
    env = gym.make(REGISTRY[name].gym_id)
    env.reset(seed=2)
    env.action_space.seed(2)
    for _ in range(3):
        env.step(env.action_space.sample())
    twin = copier(env)
    for _ in range(4):
        action = env.action_space.sample()
        a, b = env.step(action), twin.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
        np.testing.assert_array_equal(a[4]["task"], b[4]["task"])
        if a[2] or a[3]:
            break
    np.testing.assert_array_equal(env.reset(seed=5)[0], twin.reset(seed=5)[0])


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
def test_time_limit_truncates_at_the_horizon(name, task):
    """Gymnasium's TimeLimit cuts episodes at the id's max_episode_steps, the family's H; the
    view itself never truncates."""
    family = REGISTRY[name]
    assert family.terminated_fn is None or name.startswith("point")
    env = gym.make(family.gym_id, task=task)
    assert env.spec.max_episode_steps == family.horizon
    env.reset(seed=0)
    zero = np.zeros(family.act_dim, np.float32)  # the point stays at the origin, far from goal
    for t in range(1, family.horizon + 1):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated
        assert truncated == (t == family.horizon)
    # the unwrapped view runs on past H
    _, _, terminated, truncated, _ = env.unwrapped.step(zero)
    assert not terminated and not truncated
    # a reset starts a new episode
    env.reset(seed=1)
    _, _, _, truncated, _ = env.step(zero)
    assert not truncated


def test_max_episode_steps_sets_the_episode_length():
    env = gym.make("adaptrl/CheetahVel-v0", max_episode_steps=300)
    env.reset(seed=0)
    zero = np.zeros(6, np.float32)
    truncated_at = [t for t in range(1, 301) if env.step(zero)[3]]
    assert truncated_at == [300]


def test_every_id_declares_its_horizon():
    for family in REGISTRY.values():
        assert gym.spec(family.gym_id).max_episode_steps == family.horizon, family.name


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
