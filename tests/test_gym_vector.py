"""Gymnasium's vector API over the batched simulator (``vectorization_mode=
"vector_entry_point"``), and the views under Stable-Baselines3."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode

import adaptrl  # noqa: F401  (registers the ids)
from adaptrl.envs import make_batch_env
from adaptrl.envs.gym_vector import TaskVectorEnv
from adaptrl.errors import AdaptrlError
from adaptrl.tasks import REGISTRY


def _vector(name, num_envs=4, **kwargs):
    return gym.make_vec(REGISTRY[name].gym_id, num_envs=num_envs,
                        vectorization_mode="vector_entry_point", **kwargs)


def test_make_vec_returns_the_batched_env():
    envs = _vector("cheetah-vel", num_envs=64)
    assert isinstance(envs.unwrapped, TaskVectorEnv) and envs.num_envs == 64
    assert envs.action_space.shape == (64, 6) and envs.observation_space.shape == (64, 17)
    assert envs.single_action_space.shape == (6,)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.unwrapped.max_episode_steps == REGISTRY["cheetah-vel"].horizon
    discrete = _vector("maze-small", num_envs=3)
    assert isinstance(discrete.action_space, gym.spaces.MultiDiscrete)


@pytest.mark.parametrize("name", ["cheetah-vel", "hopper-params", "point-nav", "maze-small"])
def test_equals_sync_vector_env_of_the_views_step_for_step(name):
    """Same seeds → the same tasks, starts, rewards, ends and autoresets as SyncVectorEnv of
    gym.make views (episodes cut at 25 steps to cross several autoresets; hopper also
    terminates by its health rule)."""
    kwargs = dict(num_envs=3, max_episode_steps=25)
    gym_id = REGISTRY[name].gym_id
    envs = gym.make_vec(gym_id, vectorization_mode="vector_entry_point", **kwargs)
    sync = gym.make_vec(gym_id, vectorization_mode="sync", **kwargs)
    obs, info = envs.reset(seed=3)
    sync_obs, sync_info = sync.reset(seed=3)
    np.testing.assert_array_equal(obs, sync_obs)
    np.testing.assert_array_equal(info["task"], sync_info["task"])
    envs.action_space.seed(0)
    ends = 0
    for t in range(60):
        actions = envs.action_space.sample()
        ours, theirs = envs.step(actions), sync.step(actions)
        for a, b in zip(ours[:4], theirs[:4]):
            np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
        assert ours[4].keys() == theirs[4].keys()
        np.testing.assert_array_equal(ours[4]["task"], theirs[4]["task"])
        ends += int((ours[2] | ours[3]).sum())
    assert ends >= 3
    sync.close()


def test_equals_the_batched_simulator_step_for_step():
    family = REGISTRY["ant-goal"]
    tasks = family.sample(5, np.random.default_rng(0))
    envs = _vector("ant-goal", num_envs=5)
    envs.unwrapped.set_tasks(tasks)
    obs, info = envs.reset(seed=11)
    np.testing.assert_array_equal(info["task"], tasks)

    batch = make_batch_env(family, 5, 1)
    batch.set_tasks(tasks)
    batch_obs = batch.reset_envs(np.arange(5), [seeding.np_random(11 + i)[0] for i in range(5)])
    np.testing.assert_array_equal(obs, batch_obs.astype(np.float64))
    rng = np.random.default_rng(1)
    for _ in range(20):  # until an episode ends (then the vector env restarts it)
        actions = rng.uniform(-0.5, 0.5, (5, family.act_dim)).astype(np.float32)
        obs, reward, terminated, truncated, _ = envs.step(actions)
        result = batch.step(actions[:, None])
        np.testing.assert_array_equal(obs, result.obs[:, 0].astype(np.float64))
        np.testing.assert_array_equal(reward, result.reward[:, 0].astype(np.float64))
        np.testing.assert_array_equal(terminated, result.terminated[:, 0])
        assert not truncated.any()
        if terminated.any():
            break


def test_per_env_tasks_take_effect_at_their_next_reset():
    envs = _vector("point-nav", num_envs=3, max_episode_steps=2)
    vec = envs.unwrapped
    vec.set_tasks([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]])
    _, info = envs.reset(seed=0)
    np.testing.assert_array_equal(info["task"][:, 0], [0.1, 0.2, 0.3])
    vec.set_task(1, [-0.4, 0.0])
    zero = np.zeros((3, 2), np.float32)
    _, reward, _, truncated, info = envs.step(zero)
    assert reward[1] == pytest.approx(-np.hypot(0.2, 0.2), rel=1e-5)  # still the old task
    _, _, _, truncated, _ = envs.step(zero)
    assert truncated.all()
    _, reward, _, _, info = envs.step(zero)  # next-step autoreset: the new task starts
    np.testing.assert_array_equal(reward, 0.0)
    np.testing.assert_array_equal(info["task"][1], [-0.4, 0.0])
    np.testing.assert_array_equal(vec.tasks[1], [-0.4, 0.0])
    with pytest.raises(AdaptrlError, match="one task per environment"):
        vec.set_tasks([[0.1, 0.1]])


def test_same_step_and_disabled_autoreset():
    envs = _vector("point-nav", num_envs=2, max_episode_steps=2, autoreset_mode="SameStep",
                   task=[0.3, 0.0])
    envs.reset(seed=0)
    step = np.full((2, 2), 0.1, np.float32)
    envs.step(step)
    obs, _, _, truncated, info = envs.step(step)
    assert truncated.all()
    np.testing.assert_array_equal(obs, 0.0)  # already restarted
    np.testing.assert_allclose(info["final_obs"][0], [0.2, 0.2], rtol=1e-6)

    envs = _vector("point-nav", num_envs=2, max_episode_steps=1, autoreset_mode="Disabled")
    envs.reset(seed=0)
    envs.step(step)
    with pytest.raises(RuntimeError, match="reset them"):
        envs.step(step)
    obs, _ = envs.reset(options={"reset_mask": np.array([True, True])})
    envs.step(step)


def test_vector_env_pickles_and_renders():
    envs = _vector("point-nav", num_envs=2, render_mode="rgb_array", width=32, height=32)
    envs.reset(seed=0)
    frames = envs.render()
    assert len(frames) == 2 and frames[0].shape == (32, 32, 3)
    twin = pickle.loads(pickle.dumps(envs.unwrapped))
    action = np.full((2, 2), 0.05, np.float32)
    np.testing.assert_array_equal(envs.step(action)[0], twin.step(action)[0])


# ─── Stable-Baselines3 ───────────────────────────────────────────────────────────────────────
def test_sb3_ppo_learns_on_a_fixed_task_view(one_torch_thread):
    """SB3's make_vec_env passes render_mode='rgb_array' and wraps the views unchanged; a few
    thousand PPO steps take a point most of the way to its goal."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    envs = make_vec_env("adaptrl/PointNav-v0", n_envs=4, seed=0,
                        env_kwargs={"task": [0.4, -0.3]})
    assert envs.render_mode == "rgb_array"
    model = PPO("MlpPolicy", envs, n_steps=128, batch_size=128, n_epochs=5, learning_rate=3e-3,
                seed=0, device="cpu")
    before, _ = evaluate_policy(model, envs, n_eval_episodes=4, deterministic=True)
    model.learn(total_timesteps=4096)
    after, _ = evaluate_policy(model, envs, n_eval_episodes=4, deterministic=True)
    assert before == pytest.approx(-50.0, abs=1.0)  # 100 steps at distance 0.5
    assert after > -20.0
    assert envs.render().ndim == 3  # SB3 tiles the views' frames
