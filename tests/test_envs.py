"""Tests of the batched simulators (`adaptrl.envs.make_batch_env`).

Covers: agreement with Gymnasium's v5 MuJoCo environments (observation layout, reset noise,
dynamics, action bounds), seeding, the done-mask after termination, the random-dynamics
families, the point-nav math, input errors and a smoke test of every registered family.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import family_params
from gymnasium.utils import seeding

from adaptrl.envs import make_batch_env
from adaptrl.envs.mujoco_env import load_model
from adaptrl.tasks import REGISTRY
from adaptrl.tasks.families import DYNAMICS_SIZES


def _tasks(family, T, seed=0):
    return REGISTRY[family].sample(T, np.random.default_rng(seed))


def _random_actions(env, rng):
    return rng.uniform(env.action_low, env.action_high,
                       size=(env.num_tasks, env.num_episodes, env.act_dim)).astype(np.float32)


# ─── 1. agreement with Gymnasium v5 ──────────────────────────────────────────────────────────
HUMANOID_KW = dict(include_cinert_in_observation=False, include_cvel_in_observation=False,
                   include_qfrc_actuator_in_observation=False,
                   include_cfrc_ext_in_observation=False)

# (body, our family, Gymnasium id, Gymnasium kwargs, warm-up steps, obs atol, physics atol)
#
# Tolerances (measured on seeds 0..5 over 5 control steps after the warm-up, with the body in
# contact with the floor at the copy point):
# * Observations are float32 on our side and float64 in Gymnasium; float32 rounding of values of
#   order 10 alone is ~1e-6, so observations are compared at 1e-5. The measured gap was <= 5e-7
#   for every body except the humanoid.
# * The physics states (float64) of cheetah, hopper, walker and ant agreed to <= 3e-12 (the cold
#   solver warm start at each control step makes essentially no difference for them), so they
#   are compared at 1e-8.
# * The humanoid, with several simultaneous foot contacts and a soft-constraint solver that does
#   not converge fully in its iteration budget, is where the cold warm start shows: its physics
#   state drifted by up to 1.2e-6 in 5 steps (observations the same), so it is compared at 1e-4.
GYM_CASES = [
    ("half_cheetah", "cheetah-vel", "HalfCheetah-v5", {}, 5, 1e-5, 1e-8),
    ("hopper", "hopper-2d", "Hopper-v5", {}, 15, 1e-5, 1e-8),
    ("walker2d", "walker-2d", "Walker2d-v5", {}, 15, 1e-5, 1e-8),
    ("ant", "ant-vel", "Ant-v5", dict(include_cfrc_ext_in_observation=False), 15, 1e-5, 1e-8),
    ("ant_xy", "ant-goal", "Ant-v5",
     dict(include_cfrc_ext_in_observation=False, exclude_current_positions_from_observation=False),
     15, 1e-5, 1e-8),
    ("humanoid", "humanoid-dir", "Humanoid-v5", HUMANOID_KW, 15, 1e-4, 1e-4),
    ("half_cheetah_full", "cheetah-highdim", "HalfCheetah-v5",
     dict(exclude_current_positions_from_observation=False), 5, 1e-5, 1e-8),
]
GYM_IDS = [case[0] for case in GYM_CASES]


@pytest.mark.parametrize("body, family, gym_id, kwargs, warmup, obs_atol, phys_atol", GYM_CASES,
                         ids=GYM_IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_gymnasium_v5(body, family, gym_id, kwargs, warmup, obs_atol, phys_atol, seed):
    genv = gym.make(gym_id, **kwargs)
    try:
        gobs, _ = genv.reset(seed=seed)
        data = genv.unwrapped.data
        # let the body fall onto the floor so that contacts are part of the comparison
        for _ in range(warmup):
            gobs, *_ = genv.step(np.zeros(genv.action_space.shape, np.float32))
        assert data.ncon > 0, "the comparison should start with the body touching the floor"

        env = make_batch_env(family, 1, 1)
        assert env.family.body == body
        np.testing.assert_array_equal(env.action_low, genv.action_space.low)
        np.testing.assert_array_equal(env.action_high, genv.action_space.high)
        assert env.action_low.shape == env.action_high.shape == (env.act_dim,)

        env.set_tasks(_tasks(family, 1))
        obs = env.set_physics_state(data.qpos.copy()[None, None], data.qvel.copy()[None, None])
        assert obs.shape == (1, 1, gobs.shape[0])
        # same state → the same observation layout (exactly, up to the float32 cast)
        np.testing.assert_array_equal(obs[0, 0], gobs.astype(np.float32))

        rng = np.random.default_rng(100 + seed)
        for _ in range(5):
            action = rng.uniform(genv.action_space.low, genv.action_space.high).astype(np.float32)
            gobs, _, gterm, _, _ = genv.step(action)
            result = env.step(action[None, None])
            np.testing.assert_allclose(result.obs[0, 0], gobs, rtol=0, atol=obs_atol)
            state = env.physics_state()[0, 0]
            np.testing.assert_allclose(state[1:1 + env.nq], data.qpos, rtol=0, atol=phys_atol)
            np.testing.assert_allclose(state[1 + env.nq:], data.qvel, rtol=0, atol=phys_atol)
            if env.family.terminated_fn is not None:  # same health rule as Gymnasium
                assert bool(result.terminated[0, 0]) == gterm
            if gterm:
                break
    finally:
        genv.close()


@pytest.mark.parametrize("body, family, gym_id, kwargs, warmup, obs_atol, phys_atol", GYM_CASES,
                         ids=GYM_IDS)
def test_reset_noise_matches_gymnasium(body, family, gym_id, kwargs, warmup, obs_atol, phys_atol):
    """Reset draws the same noise, from the same distribution, as Gymnasium's reset."""
    genv = gym.make(gym_id, **kwargs)
    try:
        gobs, _ = genv.reset(seed=7)
    finally:
        genv.close()
    env = make_batch_env(family, 1, 1)
    env.set_tasks(_tasks(family, 1))
    obs = env.reset(seeding.np_random(7)[0])
    np.testing.assert_array_equal(obs[0, 0], gobs.astype(np.float32))


# ─── 2. seeding ──────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("family", ["cheetah-vel", "hopper-params"])
def test_same_seed_same_rollout(family):
    runs = []
    for _ in range(2):
        env = make_batch_env(family, 2, 2)
        env.set_tasks(_tasks(family, 2, seed=3))
        rng = np.random.default_rng(11)
        obs = [env.reset(rng)]
        rewards = []
        for _ in range(4):
            result = env.step(_random_actions(env, rng))
            obs.append(result.obs)
            rewards.append(result.reward)
        runs.append((np.stack(obs), np.stack(rewards)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_different_seed_different_start():
    env = make_batch_env("cheetah-vel", 2, 2)
    env.set_tasks(_tasks("cheetah-vel", 2))
    a = env.reset(np.random.default_rng(0))
    b = env.reset(np.random.default_rng(1))
    assert not np.allclose(a, b)
    # the episodes of one batch start from different states too
    assert not np.allclose(a[0, 0], a[0, 1])
    assert not np.allclose(a[0, 0], a[1, 0])


def test_thread_count_does_not_change_results():
    runs = []
    for threads in (1, 2):
        env = make_batch_env("walker-2d", 2, 3, threads=threads)
        env.set_tasks(_tasks("walker-2d", 2))
        rng = np.random.default_rng(5)
        env.reset(rng)
        runs.append(np.stack([env.step(_random_actions(env, rng)).obs for _ in range(3)]))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_batched_equals_single_envs():
    """Episodes in one batch are simulated independently of each other."""
    T, N = 2, 2
    env = make_batch_env("hopper-2d", T, N)
    params = _tasks("hopper-2d", T)
    env.set_tasks(params)
    rng = np.random.default_rng(2)
    env.reset(rng)
    start = env.physics_state()
    actions = [_random_actions(env, rng) for _ in range(4)]
    batched = np.stack([env.step(a).obs for a in actions])
    for t in range(T):
        for n in range(N):
            single = make_batch_env("hopper-2d", 1, 1)
            single.set_tasks(params[t:t + 1])
            single.set_physics_state(start[t, n, 1:1 + single.nq][None, None],
                                     start[t, n, 1 + single.nq:][None, None])
            obs = np.stack([single.step(a[t:t + 1, n:n + 1]).obs[0, 0] for a in actions])
            np.testing.assert_array_equal(obs, batched[:, t, n])


# ─── 3. masks after termination ──────────────────────────────────────────────────────────────
def _hopper_states(T, N, fallen):
    model = load_model("hopper.xml")
    qpos = np.tile(model.qpos0, (T, N, 1))
    qvel = np.zeros((T, N, model.nv))
    qvel[..., 0] = 0.3  # some forward motion so that running episodes change
    for t, n in fallen:
        qpos[t, n, 1] = 0.5  # torso height 0.5 < 0.7: unhealthy
    return qpos, qvel


def test_terminated_episodes_are_masked():
    T, N = 2, 3
    fallen = [(0, 1), (1, 2)]
    params = np.zeros((T, 37))
    env = make_batch_env("hopper-params", T, N)
    env.set_tasks(params)
    env.set_physics_state(*_hopper_states(T, N, fallen))
    assert env.active.all()
    # a reference batch in which every episode runs: the running ones must match it exactly
    ref = make_batch_env("hopper-params", T, N)
    ref.set_tasks(params)
    ref.set_physics_state(*_hopper_states(T, N, []))

    fallen_mask = np.zeros((T, N), bool)
    for t, n in fallen:
        fallen_mask[t, n] = True

    rng = np.random.default_rng(0)
    action = _random_actions(env, rng)
    first = env.step(action)
    ref.step(action)
    np.testing.assert_array_equal(first.terminated, fallen_mask)
    np.testing.assert_array_equal(env.active, ~fallen_mask)
    assert np.all(first.reward[fallen_mask] != 0.0)  # the terminating step is still rewarded
    frozen_obs = first.obs[fallen_mask].copy()
    frozen_state = env.physics_state()[fallen_mask].copy()

    terminations = first.terminated.astype(int)
    for _ in range(4):
        action = _random_actions(env, rng)
        result = env.step(action)
        ref_result = ref.step(action)
        terminations += result.terminated
        assert result.obs.shape == (T, N, env.obs_dim)
        assert result.reward.dtype == np.float32 and result.terminated.dtype == bool
        # finished: no reward, no new termination, frozen observation and physics
        assert np.all(result.reward[fallen_mask] == 0.0)
        assert not result.terminated[fallen_mask].any()
        np.testing.assert_array_equal(result.obs[fallen_mask], frozen_obs)
        np.testing.assert_array_equal(env.physics_state()[fallen_mask], frozen_state)
        # the others keep running, exactly as in a batch where nobody stopped
        assert not ref_result.terminated.any()
        np.testing.assert_array_equal(result.obs[~fallen_mask], ref_result.obs[~fallen_mask])
        np.testing.assert_array_equal(result.reward[~fallen_mask],
                                      ref_result.reward[~fallen_mask])
        assert np.all(result.reward[~fallen_mask] != 0.0)
    assert not np.allclose(result.obs[~fallen_mask], first.obs[~fallen_mask])
    np.testing.assert_array_equal(terminations, fallen_mask.astype(int))  # exactly once
    np.testing.assert_array_equal(env.active, ~fallen_mask)

    # reset starts every episode again
    env.reset(np.random.default_rng(0))
    assert env.active.all()


def test_step_when_all_episodes_over_raises():
    env = make_batch_env("hopper-params", 1, 2)
    env.set_tasks(np.zeros((1, 37)))
    env.set_physics_state(*_hopper_states(1, 2, [(0, 0), (0, 1)]))
    result = env.step(np.zeros((1, 2, 3)))
    assert result.terminated.all() and not env.active.any()
    with pytest.raises(RuntimeError):
        env.step(np.zeros((1, 2, 3)))


@pytest.mark.parametrize("family", ["point-nav", "point-nav-sq"])
def test_point_nav_terminates_at_goal(family):
    env = make_batch_env(family, 2, 2)
    env.set_tasks(np.array([[0.05, 0.05], [0.4, -0.4]]))
    env.reset(np.random.default_rng(0))
    action = np.full((2, 2, 2), 0.05, np.float32)
    action[0, 1] = [-0.05, 0.05]  # this one goes the wrong way
    result = env.step(action)
    np.testing.assert_array_equal(result.terminated, [[True, False], [False, False]])
    np.testing.assert_array_equal(env.active, [[False, True], [True, True]])
    assert result.reward[0, 0] == pytest.approx(0.0, abs=1e-5)
    result = env.step(action)
    assert result.reward[0, 0] == 0.0 and not result.terminated.any()
    np.testing.assert_allclose(result.obs[0, 0], [0.05, 0.05])
    np.testing.assert_allclose(result.obs[1, 0], [0.1, 0.1], rtol=1e-6)


# ─── 4. random-dynamics families ─────────────────────────────────────────────────────────────
@pytest.mark.parametrize("family, xml", [("hopper-params", "hopper.xml"),
                                         ("walker-params", "walker2d_v5.xml")])
def test_dynamics_parameters_scale_the_model(family, xml):
    body = REGISTRY[family].dynamics
    sizes = DYNAMICS_SIZES[body]
    k = sum(sizes.values())
    assert REGISTRY[family].task_dim == k
    base = load_model(xml)
    u = np.linspace(-3.0, 3.0, k)  # a different exponent for every entry
    T, N = 3, 2
    env = make_batch_env(family, T, N)
    env.set_tasks(np.stack([np.zeros(k), u, u]))
    assert len(env._models) == T * N
    for t in range(T):
        for n in range(N):
            assert env._models[t * N + n] is env.model_of(t)

    plain, scaled = env.model_of(0), env.model_of(1)
    for name in sizes:
        np.testing.assert_array_equal(getattr(plain, name), getattr(base, name))
    cursor = 0
    for name, size in sizes.items():
        factor = 1.5 ** u[cursor:cursor + size]
        cursor += size
        new, old = getattr(scaled, name), getattr(base, name)
        if name.startswith("body_"):
            np.testing.assert_array_equal(new[0], old[0])  # world body untouched
            new, old = new[1:], old[1:]
        assert new.size == size
        np.testing.assert_allclose(new.reshape(-1), old.reshape(-1) * factor, rtol=1e-12)
        assert not np.allclose(new, old) or not np.any(old)
    # the shared base model is not modified
    for name in sizes:
        np.testing.assert_array_equal(getattr(env.model, name), getattr(base, name))

    # trajectories: different ψ → different physics; equal ψ → identical physics
    qpos = np.tile(base.qpos0, (T, N, 1))
    qvel = np.zeros((T, N, base.nv))
    qvel[..., 0] = 0.5
    env.set_physics_state(qpos, qvel)
    rng = np.random.default_rng(1)
    obs = []
    for _ in range(6):
        a = np.broadcast_to(rng.uniform(env.action_low, env.action_high), env.active.shape + (
            env.act_dim,))
        obs.append(env.step(a).obs)
    obs = np.stack(obs)
    np.testing.assert_array_equal(obs[:, 1], obs[:, 2])
    np.testing.assert_array_equal(obs[:, :, 0], obs[:, :, 1])
    assert np.abs(obs[:, 0] - obs[:, 1]).max() > 1e-2

    # ψ = 0 is the unscaled Gymnasium body
    plain_env = make_batch_env("hopper-2d" if body == "hopper" else "walker-2d", 1, 1)
    plain_env.set_tasks(_tasks(plain_env.family.name, 1))
    plain_env.set_physics_state(qpos[:1, :1], qvel[:1, :1])
    rng = np.random.default_rng(1)
    for step in range(6):
        a = rng.uniform(env.action_low, env.action_high)[None, None]
        np.testing.assert_array_equal(plain_env.step(a).obs[0, 0], obs[step, 0, 0])


def test_dynamics_wrong_param_count_raises():
    env = make_batch_env("hopper-params", 1, 1)
    with pytest.raises(ValueError):
        env.set_tasks(np.zeros((1, 36)))


# ─── 5. point-nav math ───────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("family, squared", [("point-nav", False), ("point-nav-sq", True)])
def test_point_nav_is_exact_math(family, squared):
    T, N = 2, 3
    goals = np.array([[2.0, 2.0], [-2.0, 1.5]])  # out of reach: no termination in 6 steps
    env = make_batch_env(family, T, N)
    env.set_tasks(goals)
    np.testing.assert_array_equal(env.action_low, np.float32([-0.1, -0.1]))
    np.testing.assert_array_equal(env.action_high, np.float32([0.1, 0.1]))
    obs = env.reset(np.random.default_rng(0))
    assert obs.shape == (T, N, 2) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs, 0.0)
    rng = np.random.default_rng(3)
    pos = np.zeros((T, N, 2))
    for _ in range(6):
        action = rng.uniform(-0.3, 0.3, size=(T, N, 2))  # partly outside the bounds
        result = env.step(action)
        pos = pos + np.clip(action, -0.1, 0.1)
        dist2 = ((pos - goals[:, None, :]) ** 2).sum(-1)
        expected = -dist2 if squared else -np.sqrt(dist2)
        np.testing.assert_allclose(result.obs, pos, atol=1e-6)
        np.testing.assert_allclose(result.reward, expected, atol=1e-5)
        assert not result.terminated.any()
    # reset puts every point back at the origin
    np.testing.assert_array_equal(env.reset(np.random.default_rng(1)), 0.0)


# ─── 6. errors ───────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("family", ["point-nav", "cheetah-vel"])
def test_wrong_action_shape(family):
    env = make_batch_env(family, 2, 3)
    env.set_tasks(_tasks(family, 2))
    env.reset(np.random.default_rng(0))
    expected = f"{(2, 3, env.act_dim)}"
    for shape in [(2, 3, env.act_dim + 1), (3, 2, env.act_dim), (6, env.act_dim), (env.act_dim,)]:
        with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            env.step(np.zeros(shape))


@pytest.mark.parametrize("family", ["point-nav", "cheetah-vel"])
def test_set_tasks_errors(family):
    env = make_batch_env(family, 2, 2)
    k = REGISTRY[family].task_dim
    with pytest.raises(ValueError):
        env.set_tasks(np.zeros((3, k)))  # wrong number of tasks
    with pytest.raises(ValueError):
        env.set_tasks(np.zeros((1, k)))
    with pytest.raises(ValueError):
        env.set_tasks(np.zeros((2, k + 1)))  # wrong parameter dimension
    with pytest.raises(ValueError):
        env.set_tasks(np.full((2, k), np.nan))


@pytest.mark.parametrize("family", ["point-nav", "cheetah-vel"])
def test_step_or_reset_too_early(family):
    env = make_batch_env(family, 1, 2)
    act = np.zeros((1, 2, env.act_dim))
    with pytest.raises(RuntimeError):
        env.reset(np.random.default_rng(0))  # no tasks yet
    with pytest.raises(RuntimeError):
        env.step(act)
    env.set_tasks(_tasks(family, 1))
    with pytest.raises(RuntimeError):
        env.step(act)  # tasks but no reset
    env.reset(np.random.default_rng(0))
    env.step(act)


def test_set_physics_state_needs_tasks():
    env = make_batch_env("hopper-2d", 1, 1)
    with pytest.raises(RuntimeError):
        env.set_physics_state(np.zeros((1, 1, env.nq)), np.zeros((1, 1, env.nv)))


def test_unknown_family_lists_known_ones():
    with pytest.raises(KeyError) as info:
        make_batch_env("cheetah-velocity", 1, 1)
    message = str(info.value)
    assert "cheetah-velocity" in message
    for name in REGISTRY:
        assert name in message


@pytest.mark.parametrize("family", ["point-nav", "cheetah-vel"])
@pytest.mark.parametrize("T, N", [(0, 1), (1, 0), (-1, 2)])
def test_empty_batch_rejected(family, T, N):
    with pytest.raises(ValueError):
        make_batch_env(family, T, N)


# ─── 7. every registered family ──────────────────────────────────────────────────────────────
@pytest.mark.parametrize("name", family_params(REGISTRY))
def test_every_family_runs(name):
    family = REGISTRY[name]
    T, N = 2, 2
    env = make_batch_env(name, T, N)
    assert env.obs_dim == family.obs_dim and env.act_dim == family.act_dim
    assert env.action_low.shape == env.action_high.shape == (family.act_dim,)
    assert np.all(env.action_low < env.action_high)
    rng = np.random.default_rng(0)
    env.set_tasks(family.sample(T, rng))
    obs = env.reset(rng)
    assert obs.shape == (T, N, family.obs_dim) and obs.dtype == np.float32
    assert np.all(np.isfinite(obs))
    for _ in range(3):
        if not env.active.any():
            break
        result = env.step(_random_actions(env, rng))
        assert result.obs.shape == (T, N, family.obs_dim)
        assert result.reward.shape == (T, N) and result.reward.dtype == np.float32
        assert result.terminated.shape == (T, N) and result.terminated.dtype == bool
        assert np.all(np.isfinite(result.obs)) and np.all(np.isfinite(result.reward))
