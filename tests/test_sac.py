"""SAC core: tanh-Gaussian actor, twin critics, the SAC update and the per-task replay buffer."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from adaptrl.nets import TanhGaussianRollout
from adaptrl.nets.sac_nets import QNetwork, TanhGaussianActor, TwinQ, tanh_log_det_jacobian
from adaptrl.optim.sac import SAC, SACConfig, polyak_update, soft_critic_target
from adaptrl.sampling import Episodes, LocalSampler, ScaleActions
from adaptrl.sampling.replay import ReplayBuffer


# ── tanh-Gaussian actor ───────────────────────────────────────────────────────────────────────
def test_tanh_gaussian_log_prob_matches_torch_transformed_distribution():
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, (16, 16)).double()
    obs = torch.randn(5, 7, 3, dtype=torch.float64)
    action, log_prob = actor.sample(obs, torch.Generator().manual_seed(1))
    assert action.shape == (5, 7, 2) and log_prob.shape == (5, 7)
    assert action.abs().max() < 1
    # the same pre-tanh sample, rebuilt from the same generator seed
    mean, log_std = actor(obs)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    pre_tanh = mean + noise * log_std.exp()
    tanh = TanhTransform(cache_size=1)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [tanh])
    squashed = tanh(pre_tanh)  # cached, so log_prob inverts it exactly to pre_tanh
    torch.testing.assert_close(action, squashed)
    torch.testing.assert_close(log_prob, reference.log_prob(squashed).sum(-1))


def test_tanh_log_det_jacobian_is_stable_where_the_naive_form_underflows():
    u = torch.tensor([-30.0, -5.0, 0.0, 0.5, 5.0, 30.0])
    stable = tanh_log_det_jacobian(u)
    naive = torch.log(1 - torch.tanh(u) ** 2)
    torch.testing.assert_close(stable[1:-1], naive[1:-1], rtol=1e-4, atol=1e-4)
    assert torch.isinf(naive[[0, -1]]).all()  # float32 rounds tanh(±30)² to 1
    torch.testing.assert_close(stable[[0, -1]], torch.full((2,), 2 * (math.log(2) - 30.0)))


def test_tanh_gaussian_density_integrates_to_one_in_1d():
    torch.manual_seed(0)
    actor = TanhGaussianActor(1, 1, (8,)).double()
    obs = torch.tensor([[0.3]], dtype=torch.float64)
    with torch.no_grad():
        mean, log_std = actor(obs)
    # log π(a) at a = tanh(u) for a fine grid of u, then ∫ π(a) da = ∫ π(tanh u) tanh'(u) du
    u = torch.linspace(-12, 12, 200_001, dtype=torch.float64)[:, None]
    gaussian = Normal(mean[0], log_std.exp()[0]).log_prob(u)
    log_pi = (gaussian - tanh_log_det_jacobian(u)).squeeze(-1)
    integral = torch.trapezoid(torch.exp(log_pi) * (1 - torch.tanh(u[:, 0]) ** 2), u[:, 0])
    assert abs(float(integral) - 1.0) < 1e-6


def test_deterministic_sample_is_tanh_of_mean_and_networks_remember_config():
    torch.manual_seed(0)
    actor = TanhGaussianActor(4, 3, (8, 8), activation="tanh", log_std_bounds=(-5, 1))
    obs = torch.randn(6, 4)
    action, _ = actor.sample(obs, deterministic=True)
    torch.testing.assert_close(action, torch.tanh(actor(obs)[0]))
    assert TanhGaussianActor(**actor.config()).config() == actor.config()
    twin = TwinQ(4, 3, (8,))
    assert TwinQ(**twin.config()).config() == twin.config()
    q1, q2 = twin(obs, action)
    assert q1.shape == q2.shape == (6,) and not torch.equal(q1, q2)
    with pytest.raises(ValueError, match="observations of size 4"):
        actor(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="obs 4 / act 3"):
        QNetwork(4, 3, (8,))(obs, torch.zeros(6, 2))


# ── replay buffer ─────────────────────────────────────────────────────────────────────────────
def _numbered_episodes(T, N, H, lengths, terminated_at_end=True, start=0.0):
    """Episodes whose obs of task t, episode n, step h is start + 1000t + 100n + h, so every
    stored transition says where it came from. ``lengths [T][N]``: valid steps per episode."""
    t, n, h = np.meshgrid(np.arange(T), np.arange(N), np.arange(H), indexing="ij")
    code = torch.as_tensor(start + 1000 * t + 100 * n + h, dtype=torch.float32)
    mask = torch.as_tensor(h < np.asarray(lengths)[:, :, None], dtype=torch.float32)
    terminated = torch.zeros(T, N, H, dtype=torch.bool)
    if terminated_at_end:
        for ti in range(T):
            for ni in range(N):
                if lengths[ti][ni] < H:
                    terminated[ti, ni, lengths[ti][ni] - 1] = True
    return Episodes(obs=code[..., None], actions=torch.stack([code, -code], -1),
                    rewards=code * mask, next_obs=code[..., None] + 0.5, mask=mask,
                    terminated=terminated, tasks=np.zeros((T, 1)))


def test_replay_stores_only_valid_steps_per_task():
    episodes = _numbered_episodes(2, 3, 5, lengths=[[5, 2, 0], [3, 5, 1]])
    buffer = ReplayBuffer(2, 100, 1, 2)
    buffer.add_episodes(episodes)
    np.testing.assert_array_equal(buffer.size, [7, 9])
    expected0 = [0, 1, 2, 3, 4, 100, 101]
    expected1 = [1000, 1001, 1002, 1100, 1101, 1102, 1103, 1104, 1200]
    np.testing.assert_array_equal(buffer.obs[0, :7, 0], expected0)
    np.testing.assert_array_equal(buffer.obs[1, :9, 0], expected1)
    np.testing.assert_array_equal(buffer.action[1, :9, 1], -np.array(expected1))
    np.testing.assert_array_equal(buffer.next_obs[0, :7, 0], np.array(expected0) + 0.5)
    np.testing.assert_array_equal(buffer.reward[0, :7], expected0)
    # done only on the last step of the episodes that ended early
    np.testing.assert_array_equal(buffer.done[0, :7], [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(buffer.done[1, :9], [0, 0, 1, 0, 0, 0, 0, 0, 1])
    # episodes for a subset of tasks go to the rows named
    buffer.add_episodes(episodes.task(0), tasks=[1])
    np.testing.assert_array_equal(buffer.size, [7, 16])
    np.testing.assert_array_equal(buffer.obs[1, 9:16, 0], expected0)
    with pytest.raises(ValueError, match="pass tasks="):
        buffer.add_episodes(episodes.task(0))


def test_replay_ring_overwrites_oldest_transitions():
    buffer = ReplayBuffer(1, 4, 1, 2)
    buffer.add_episodes(_numbered_episodes(1, 1, 3, lengths=[[3]]))               # 0 1 2
    buffer.add_episodes(_numbered_episodes(1, 1, 3, lengths=[[3]], start=10))     # 10 11 12
    assert buffer.size.tolist() == [4]
    # 10 filled slot 3, then 11 and 12 overwrote the oldest (0 and 1); 2 is now the oldest
    np.testing.assert_array_equal(buffer.obs[0, :, 0], [11, 12, 2, 10])
    # more than capacity at once: only the last `capacity` survive
    buffer.add_episodes(_numbered_episodes(1, 2, 3, lengths=[[3, 3]], start=50))
    assert sorted(buffer.obs[0, :, 0].tolist()) == [52, 150, 151, 152]


def test_replay_sampling_shapes_and_determinism():
    buffer = ReplayBuffer(3, 50, 1, 2)
    buffer.add_episodes(_numbered_episodes(3, 2, 6, lengths=[[6, 6], [4, 1], [2, 0]]))
    batch = buffer.sample(32, np.random.default_rng(0), tasks=[2, 0])
    assert batch["obs"].shape == (2, 32, 1) and batch["next_obs"].shape == (2, 32, 1)
    assert batch["action"].shape == (2, 32, 2)
    assert batch["reward"].shape == batch["done"].shape == (2, 32)
    assert all(v.dtype == torch.float32 for v in batch.values())
    # every sample comes from its own task's stored transitions
    assert set(batch["obs"][0, :, 0].tolist()) <= {2000.0, 2001.0}
    assert set(batch["obs"][1, :, 0].tolist()) <= {float(x) for x in [*range(6), *range(100, 106)]}
    again = buffer.sample(32, np.random.default_rng(0), tasks=[2, 0])
    other = buffer.sample(32, np.random.default_rng(1), tasks=[2, 0])
    for name in batch:
        assert torch.equal(batch[name], again[name])
    assert not torch.equal(batch["obs"], other["obs"])
    assert buffer.sample(4, np.random.default_rng(0))["obs"].shape == (3, 4, 1)
    empty = ReplayBuffer(2, 10, 1, 2)
    empty.add_episodes(_numbered_episodes(1, 1, 3, lengths=[[3]]), tasks=[0])
    with pytest.raises(ValueError, match=r"empty task\(s\) \[1\]"):
        empty.sample(4, np.random.default_rng(0))


def test_replay_state_dict_round_trip():
    buffer = ReplayBuffer(2, 5, 1, 2)
    buffer.add_episodes(_numbered_episodes(2, 2, 4, lengths=[[4, 3], [1, 0]]))
    restored = ReplayBuffer(2, 5, 1, 2)
    restored.load_state_dict(buffer.state_dict())
    np.testing.assert_array_equal(restored.size, buffer.size)
    for name in ("obs", "action", "reward", "next_obs", "done"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(buffer, name))
    a = buffer.sample(16, np.random.default_rng(3))
    b = restored.sample(16, np.random.default_rng(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the write position is restored too: the next episode lands in the same slots
    more = _numbered_episodes(2, 1, 2, lengths=[[2], [2]], start=7000)
    buffer.add_episodes(more)
    restored.add_episodes(more)
    np.testing.assert_array_equal(restored.obs, buffer.obs)
    with pytest.raises(ValueError, match="replay buffer state is for"):
        ReplayBuffer(2, 6, 1, 2).load_state_dict(buffer.state_dict())


# ── SAC update ────────────────────────────────────────────────────────────────────────────────
def test_soft_critic_target_by_hand():
    # y = r + γ(1−d)(min(Q1', Q2') − α log π')
    y = soft_critic_target(reward=torch.tensor([1.0, 1.0, -2.0]),
                           done=torch.tensor([0.0, 1.0, 0.0]),
                           next_q1=torch.tensor([3.0, 3.0, 5.0]),
                           next_q2=torch.tensor([4.0, 4.0, 2.0]),
                           next_log_prob=torch.tensor([-1.0, -1.0, 0.5]), alpha=0.2, gamma=0.9)
    # 1 + 0.9·(3 + 0.2) = 3.88;  done: 1;  −2 + 0.9·(2 − 0.1) = −0.29
    torch.testing.assert_close(y, torch.tensor([3.88, 1.0, -0.29]))


def _constant_q(twin: TwinQ, q1: float, q2: float) -> None:
    with torch.no_grad():
        for q, value in ((twin.q1, q1), (twin.q2, q2)):
            last = q.net.layers[-1]
            last.weight.zero_()
            last.bias.fill_(value)


def test_sac_td_target_uses_min_target_q_and_current_actor_log_prob():
    torch.manual_seed(0)
    sac = SAC(2, 2, SACConfig(hidden_sizes=[8], gamma=0.9, init_alpha=0.5))
    _constant_q(sac.critic_target, 1.0, 2.0)
    batch = {"obs": torch.randn(4, 2), "action": torch.zeros(4, 2),
             "reward": torch.tensor([1.0, 0.0, -1.0, 2.0]), "next_obs": torch.randn(4, 2),
             "done": torch.tensor([0.0, 0.0, 1.0, 0.0])}
    y = sac.td_target(batch, torch.Generator().manual_seed(5))
    _, log_prob = sac.actor.sample(batch["next_obs"], torch.Generator().manual_seed(5))
    expected = batch["reward"] + 0.9 * (1 - batch["done"]) * (1.0 - 0.5 * log_prob.detach())
    torch.testing.assert_close(y, expected)


def test_update_moves_target_critics_by_tau_and_reports_metrics():
    torch.manual_seed(0)
    sac = SAC(3, 2, SACConfig(hidden_sizes=[16], tau=0.1))
    rng = np.random.default_rng(0)
    batch = {"obs": torch.randn(2, 8, 3), "action": torch.rand(2, 8, 2) * 2 - 1,
             "reward": torch.randn(2, 8), "next_obs": torch.randn(2, 8, 3),
             "done": torch.as_tensor(rng.random((2, 8)) < 0.2, dtype=torch.float32)}
    # make the targets differ from the online critics first
    with torch.no_grad():
        for p in sac.critic_target.parameters():
            p.add_(0.3)
    target_before = [p.clone() for p in sac.critic_target.parameters()]
    online_before = [p.clone() for p in sac.critic.parameters()]
    actor_before = [p.clone() for p in sac.actor.parameters()]
    log_alpha_before = sac.log_alpha.item()
    metrics = sac.update(batch)
    assert set(metrics) >= {"loss/critic", "loss/actor", "loss/alpha", "alpha", "q/mean",
                            "entropy"}
    assert all(math.isfinite(v) for v in metrics.values())
    for before, online_after, target_after, online_old in zip(
            target_before, sac.critic.parameters(), sac.critic_target.parameters(),
            online_before):
        assert not torch.equal(online_after, online_old)  # the critic took a step
        torch.testing.assert_close(target_after, 0.9 * before + 0.1 * online_after)
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, sac.actor.parameters()))
    assert sac.log_alpha.item() != log_alpha_before
    assert metrics["alpha"] == pytest.approx(1.0)  # the α used in this step: init_alpha


def test_only_the_critic_loss_reaches_conditioning_in_obs():
    """PEARL trains its encoder through the critic: obs that require grad get exactly the
    critic loss's gradient; the actor and α losses see detached observations."""
    torch.manual_seed(0)
    sac = SAC(3, 2, SACConfig(hidden_sizes=[16]))
    twin = copy.deepcopy(sac)
    data = {"obs": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
            "reward": torch.randn(8), "next_obs": torch.randn(8, 3), "done": torch.zeros(8)}
    obs = data["obs"].clone().requires_grad_(True)
    sac.update({**data, "obs": obs})
    obs_twin = data["obs"].clone().requires_grad_(True)
    loss, _ = twin.critic_loss({**data, "obs": obs_twin})
    loss.backward()
    assert obs.grad is not None and obs.grad.abs().sum() > 0
    torch.testing.assert_close(obs.grad, obs_twin.grad)


def test_fixed_alpha_stays_fixed():
    torch.manual_seed(0)
    sac = SAC(2, 1, SACConfig(hidden_sizes=[8], auto_entropy=False, init_alpha=0.3))
    batch = {"obs": torch.randn(8, 2), "action": torch.zeros(8, 1), "reward": torch.ones(8),
             "next_obs": torch.randn(8, 2), "done": torch.zeros(8)}
    metrics = sac.update(batch)
    assert sac.alpha == pytest.approx(0.3) and metrics["loss/alpha"] == 0.0


def test_polyak_update_interpolates():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    polyak_update(a, b, 0.25)
    torch.testing.assert_close(a.weight, 0.75 * wa + 0.25 * wb)


def test_state_dict_round_trip_gives_identical_actions_and_updates():
    torch.manual_seed(0)
    config = SACConfig(hidden_sizes=[16, 16])
    sac = SAC(3, 2, config, seed=1)
    batch = {"obs": torch.randn(16, 3), "action": torch.rand(16, 2) * 2 - 1,
             "reward": torch.randn(16), "next_obs": torch.randn(16, 3), "done": torch.zeros(16)}
    for _ in range(3):
        sac.update(batch)
    torch.manual_seed(99)  # a different initialisation, overwritten by the load
    restored = SAC(3, 2, config, seed=2)
    restored.load_state_dict(sac.state_dict())
    obs = torch.randn(5, 3)
    torch.testing.assert_close(restored.act(obs, deterministic=True),
                               sac.act(obs, deterministic=True), rtol=0, atol=0)
    torch.testing.assert_close(restored.act(obs, torch.Generator().manual_seed(4)),
                               sac.act(obs, torch.Generator().manual_seed(4)), rtol=0, atol=0)
    # optimizer states, log α and the generator came along: the next update is identical
    assert restored.update(batch) == sac.update(batch)
    for a, b in zip(restored.actor.parameters(), sac.actor.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="SAC state is for"):
        SAC(3, 1, config).load_state_dict(sac.state_dict())


# ── learning ──────────────────────────────────────────────────────────────────────────────────
def test_sac_learns_to_reach_a_fixed_point_nav_goal():
    """One point-nav task (goal (0.3, −0.2), H = 100), 4 parallel episodes per round, 100
    updates per round (400 new transitions), 10 rounds. Deterministic evaluation returns
    measured after round 10 for seeds 0–4: −2.0, −0.5, −0.4, −0.5, −2.2 (reaching the goal
    takes 4 steps, so about −0.5 is optimal); the untrained actor scores −84 to −89. The bar,
    −10, leaves a wide margin. About 10 s on 2 cores."""
    seed, scale, goal = 0, 0.1, np.array([[0.3, -0.2]])
    torch.manual_seed(seed)
    config = SACConfig(hidden_sizes=[64, 64], batch_size=128, init_alpha=0.1,
                       actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
    sac = SAC(2, 2, config, seed=seed)
    sampler = LocalSampler("point-nav")
    buffer = ReplayBuffer(1, 10_000, 2, 2)
    rng = np.random.default_rng(seed)

    def actor(deterministic):  # [-1, 1] → the point's action box [-0.1, 0.1]
        return ScaleActions(TanhGaussianRollout(sac.actor, deterministic), [-scale] * 2,
                            [scale] * 2)

    def evaluate():
        episodes = sampler.sample(actor(True), goal, np.random.default_rng(123), 4, horizon=100)
        return float(episodes.episode_returns().mean())

    initial = evaluate()
    for _ in range(10):
        episodes = sampler.sample(actor(False), goal, rng, 4, horizon=100)
        buffer.add_episodes(dataclasses.replace(episodes, actions=episodes.actions / scale))
        for _ in range(100):
            metrics = sac.update(buffer.sample(config.batch_size, rng))
    final = evaluate()
    assert initial < -30, f"the untrained actor already scores {initial:.1f}"
    assert final > -10, f"SAC reached only {final:.1f} (initially {initial:.1f}; {metrics})"
