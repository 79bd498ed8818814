"""The black-box families: Bernoulli bandits and random tabular MDPs (RL² §§3.1–3.2), batched,
with one-hot actions, random rewards drawn from each reset's generator, and Gymnasium views."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from scripted import Scripted

import adaptrl  # noqa: F401  (registers the views)
from adaptrl.envs import make_batch_env
from adaptrl.sampling import LocalSampler, UniformPolicy
from adaptrl.tasks import get_family
from adaptrl.tasks.families import tabular_mdp_parts


def _always(arm, k):
    return Scripted(lambda obs, g: torch.nn.functional.one_hot(
        torch.full(obs.shape[:-1], arm), k).float())


def test_bandit_rewards_are_bernoulli_draws_of_the_pulled_arm():
    family = get_family("bandit-k5")
    tasks = np.array([[0.1, 0.9, 0.5, 0.0, 1.0]] * 2)
    sampler = LocalSampler(family)
    for arm, p in enumerate(tasks[0]):
        episodes = sampler.sample(_always(arm, 5), tasks, np.random.default_rng(arm), 50,
                                  trial_episodes=40)
        rewards = episodes.rewards[episodes.mask > 0]
        assert set(rewards.unique().tolist()) <= {0.0, 1.0}
        assert float(rewards.mean()) == pytest.approx(p, abs=0.03)  # 4000 pulls
    assert episodes.obs.abs().sum() == 0  # the observation is a constant 0
    assert bool(episodes.terminated.all())  # every pull ends its episode


def test_random_play_scores_half_a_point_per_pull_as_in_the_papers():
    family = get_family("bandit-k10")
    rng = np.random.default_rng(0)
    tasks = family.sample(500, rng)
    episodes = LocalSampler(family).sample(UniformPolicy(np.zeros(10), np.ones(10)), tasks, rng,
                                           1, trial_episodes=100)
    totals = episodes.trial_episode_returns().sum(-1).flatten()
    assert float(totals.mean()) == pytest.approx(50.0, abs=1.0)  # RL² Table 1: 49.9


def test_tabular_mdp_transitions_and_rewards_follow_the_task():
    family = get_family("tabular-mdp")
    task = family.sample(1, np.random.default_rng(3))
    transitions, means = tabular_mdp_parts(task[0])
    assert np.allclose(transitions.sum(-1), 1.0) and transitions.shape == (10, 5, 10)
    env = make_batch_env(family, 1, 4000)
    env.set_tasks(task)
    obs = env.reset(np.random.default_rng(0))
    assert np.all(obs[..., 0] == 1.0) and obs.sum() == 4000  # every episode starts in state 0
    action = np.zeros((1, 4000, 5), np.float32)
    action[..., 2] = 1.0
    step = env.step(action)
    visited = step.obs[0].argmax(-1)
    frequencies = np.bincount(visited, minlength=10) / 4000
    np.testing.assert_allclose(frequencies, transitions[0, 2], atol=0.03)
    assert float(step.reward.mean()) == pytest.approx(means[0, 2], abs=0.06)
    assert float(step.reward.std()) == pytest.approx(1.0, abs=0.05)


def test_random_play_on_tabular_mdps_scores_about_ten_per_episode():
    family = get_family("tabular-mdp")
    rng = np.random.default_rng(1)
    tasks = family.sample(300, rng)
    episodes = LocalSampler(family).sample(UniformPolicy(np.zeros(5), np.ones(5)), tasks, rng, 1,
                                           trial_episodes=10)
    assert episodes.obs.shape == (300, 1, 100, 10)
    totals = episodes.trial_episode_returns().sum(-1).flatten()
    assert float(totals.mean()) == pytest.approx(100.0, abs=3.0)  # RL² Table 2: 100.1


def test_discrete_rollouts_are_reproducible_from_the_seed():
    for name in ("bandit-k5", "tabular-mdp"):
        family = get_family(name)
        tasks = family.sample(3, np.random.default_rng(0))
        policy = UniformPolicy(np.zeros(family.act_dim), np.ones(family.act_dim))
        a, b, c = (LocalSampler(family).sample(policy, tasks, np.random.default_rng(seed), 2,
                                               trial_episodes=3) for seed in (5, 5, 6))
        assert torch.equal(a.rewards, b.rewards) and torch.equal(a.obs, b.obs)
        assert not torch.equal(a.rewards, c.rewards)


@pytest.mark.parametrize("name", ["bandit-k5", "tabular-mdp"])
def test_gym_views_take_action_indices(name):
    family = get_family(name)
    env = gym.make(family.gym_id)
    assert isinstance(env.action_space, gym.spaces.Discrete)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.n - 1)
    assert obs.shape == (family.obs_dim,) and np.isfinite(reward)
    assert terminated == (name == "bandit-k5")
