"""Sampler, Episodes, GAE and the linear feature baseline."""

import numpy as np
import pytest
import torch
from scripted import Scripted

from adaptrl.nets import GaussianMLPPolicy
from adaptrl.sampling import Episodes, LinearFeatureBaseline, LocalSampler


def _episodes_from(rewards, mask, obs=None):
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    mask = torch.as_tensor(mask, dtype=torch.float32)
    T, N, H = rewards.shape
    obs = torch.zeros(T, N, H, 1) if obs is None else torch.as_tensor(obs, dtype=torch.float32)
    return Episodes(obs=obs, actions=torch.zeros(T, N, H, 1), rewards=rewards * mask,
                    next_obs=obs.clone(), mask=mask, terminated=torch.zeros(T, N, H, dtype=bool),
                    tasks=np.zeros((T, 1)))


def _sample(seed, family="cheetah-vel", T=2, N=3, H=20):
    sampler = LocalSampler(family)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(sampler.family.obs_dim, sampler.family.act_dim, (16, 16))
    rng = np.random.default_rng(seed)
    tasks = sampler.family.sample(T, rng)
    return sampler.sample(policy.actor(), tasks, rng, N, horizon=H)


def test_sampler_shapes_and_layout():
    ep = _sample(0)
    assert ep.obs.shape == (2, 3, 20, 17) and ep.next_obs.shape == (2, 3, 20, 17)
    assert ep.actions.shape == (2, 3, 20, 6) and ep.rewards.shape == (2, 3, 20)
    assert ep.mask.shape == (2, 3, 20) and ep.tasks.shape == (2, 1)
    # next_obs of step t is obs of step t+1
    assert torch.equal(ep.next_obs[:, :, :-1], ep.obs[:, :, 1:])
    assert ep.num_steps == 2 * 3 * 20


def test_same_seed_identical_episodes_different_seed_different():
    a, b, c = _sample(7), _sample(7), _sample(8)
    for field in ("obs", "actions", "rewards", "mask"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.obs, c.obs)
    assert not torch.equal(a.actions, c.actions)


def test_rewards_recomputed_from_episode_match_env_rewards():
    ep = _sample(1)
    from adaptrl.tasks import get_family

    family = get_family("cheetah-vel")
    psi = torch.as_tensor(ep.tasks, dtype=torch.float32)[:, None, None, :]
    actions = ep.actions.clamp(-1, 1)
    expected = family.reward(ep.obs, actions, ep.next_obs, psi) * ep.mask
    torch.testing.assert_close(ep.rewards, expected, rtol=1e-5, atol=1e-5)


def test_masks_after_termination_in_sampled_episodes():
    # a hopper with a random wide policy falls: every step after termination is masked out
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(11, 3, (8,), init_log_std=0.5)
    rng = np.random.default_rng(0)
    ep = LocalSampler("hopper-params").sample(policy.actor(), np.zeros((2, 37)), rng, 4,
                                              horizon=200)
    lengths = ep.mask.sum(-1)
    assert (lengths < 200).any(), "expected some hopper episodes to end early"
    for t in range(2):
        for n in range(4):
            L = int(lengths[t, n])
            assert torch.all(ep.mask[t, n, :L] == 1) and torch.all(ep.mask[t, n, L:] == 0)
            assert torch.all(ep.rewards[t, n, L:] == 0)
            if L < 200:
                assert bool(ep.terminated[t, n, L - 1]) and int(ep.terminated[t, n].sum()) == 1


def test_point_nav_episode_ends_at_goal():
    goal = np.array([[0.25, -0.15]])

    def go_to_goal(obs, generator):  # maximal speed straight at the goal
        return torch.as_tensor(goal, dtype=torch.float32)[:, None, :] - obs

    ep = LocalSampler("point-nav").sample(Scripted(go_to_goal), goal, np.random.default_rng(0), 1)
    steps = int(ep.mask.sum())
    assert steps == 3  # 0.25 / 0.1 → three steps at the speed limit
    assert bool(ep.terminated[0, 0, steps - 1])


def test_discounted_returns_and_episode_returns_by_hand():
    ep = _episodes_from([[[1.0, 2.0, 3.0, 4.0]]], [[[1, 1, 1, 0]]])
    gamma = 0.5
    expected = [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 0]
    torch.testing.assert_close(ep.discounted_returns(gamma)[0, 0], torch.tensor(expected))
    assert float(ep.episode_returns()[0, 0]) == 6.0


def test_gae_matches_hand_computation():
    rewards = [[[1.0, 0.0, 2.0, 5.0]]]
    mask = [[[1, 1, 1, 0]]]  # the episode ended after 3 steps
    ep = _episodes_from(rewards, mask)
    values = torch.tensor([[[0.5, 1.0, 1.5, 9.0]]])  # the value after the end must be ignored
    gamma, lam = 0.9, 0.8
    v = [0.5, 1.0, 1.5, 0.0]
    r = [1.0, 0.0, 2.0]
    deltas = [r[t] + gamma * v[t + 1] - v[t] for t in range(3)]
    adv2 = deltas[2]
    adv1 = deltas[1] + gamma * lam * adv2
    adv0 = deltas[0] + gamma * lam * adv1
    got = ep.gae(values, gamma, lam)[0, 0]
    torch.testing.assert_close(got, torch.tensor([adv0, adv1, adv2, 0.0]))
    # λ = 1 with zero values gives the discounted return
    torch.testing.assert_close(ep.gae(torch.zeros(1, 1, 4), gamma, 1.0),
                               ep.discounted_returns(gamma))


def test_gae_rejects_wrong_value_shape():
    ep = _episodes_from([[[1.0, 2.0]]], [[[1, 1]]])
    with pytest.raises(ValueError, match="shape"):
        ep.gae(torch.zeros(2, 2), 0.99, 0.95)


def test_linear_baseline_features_by_hand():
    obs = torch.tensor([[[[2.0, -20.0], [0.5, 3.0]]]])  # [1,1,2,2]
    f = LinearFeatureBaseline.features(obs)[0, 0]
    expected = torch.tensor([
        [2.0, -10.0, 4.0, 100.0, 0.0, 0.0, 0.0, 1.0],
        [0.5, 3.0, 0.25, 9.0, 0.01, 1e-4, 1e-6, 1.0],
    ], dtype=torch.float64)
    torch.testing.assert_close(f, expected)


def test_linear_baseline_matches_least_squares_per_task():
    gen = torch.Generator().manual_seed(0)
    T, N, H, d = 3, 4, 6, 2
    obs = torch.randn(T, N, H, d, generator=gen)
    rewards = torch.randn(T, N, H, generator=gen)
    mask = torch.ones(T, N, H)
    mask[1, 2, 4:] = 0
    ep = _episodes_from(rewards, mask, obs)
    gamma = 0.9
    base = LinearFeatureBaseline(reg_coeff=1e-5).fit(ep, gamma)
    returns = ep.discounted_returns(gamma).double()
    for t in range(T):  # one regression per task, on the steps that happened, by numpy
        feats = LinearFeatureBaseline.features(obs[t:t + 1])[0].reshape(-1, 2 * d + 4).numpy()
        m = mask[t].reshape(-1).numpy() > 0
        X, y = feats[m], returns[t].reshape(-1).numpy()[m]
        coef = np.linalg.solve(X.T @ X + 1e-5 * np.eye(X.shape[1]), X.T @ y)
        np.testing.assert_allclose(base.coeffs[t].numpy(), coef, rtol=1e-6, atol=1e-8)
    values = base.predict(ep)
    assert values.shape == (T, N, H) and torch.all(values[1, 2, 4:] == 0)


def test_linear_baseline_reduces_return_variance_on_real_episodes():
    ep = _sample(3, T=2, N=6, H=50)
    returns = ep.discounted_returns(0.99)
    values = LinearFeatureBaseline().fit(ep, 0.99).predict(ep)
    assert float((returns - values).var()) < 0.5 * float(returns.var())
