"""The shared PPO update: the clipped loss by hand and by finite differences, minibatches of whole
rows, reproducibility, learning a bandit and a 1-D Gaussian, the non-finite guard, early
stopping on the KL."""

import math

import pytest
import torch

from adaptrl.nets import GaussianGRUPolicy
from adaptrl.optim.ppo import (
    PPOOptions,
    minibatch_rows,
    ppo_clipped_loss,
    ppo_lr,
    ppo_optimizer,
    ppo_update,
    ppo_value_loss,
    select_rows,
    set_lr,
)
from adaptrl.sampling import Episodes

F64 = torch.float64


# ── the loss ──────────────────────────────────────────────────────────────────────────────────
# ratios inside and outside [0.8, 1.2], advantages of both signs, one masked step holding junk
RATIOS = [1.5, 1.5, 0.5, 0.5, 1.1, 100.0]
ADVANTAGES = [1.0, -1.0, 2.0, -2.0, 3.0, 5.0]
MASK = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def _hand_case():
    old = torch.tensor([-0.3, -1.0, -2.0, 0.4, -0.7, -1.1], dtype=F64)
    log_prob = (old + torch.log(torch.tensor(RATIOS, dtype=F64))).requires_grad_()
    return (log_prob, old, torch.tensor(ADVANTAGES, dtype=F64),
            torch.tensor(MASK, dtype=F64))


def test_clipped_loss_matches_a_hand_computation():
    log_prob, old, adv, mask = _hand_case()
    loss, clip_fraction, approx_kl = ppo_clipped_loss(log_prob, old, adv, mask, clip=0.2)
    # min(rA, clip(r)A): 1.5·1 → 1.2 (clipped); 1.5·−1 → −1.5; 0.5·2 → 1.0; 0.5·−2 → −1.6
    # (clipped); 1.1·3 → 3.3; the masked step is ignored: mean over 5 steps
    assert loss.item() == pytest.approx(-(1.2 - 1.5 + 1.0 - 1.6 + 3.3) / 5, abs=1e-12)
    assert clip_fraction.item() == pytest.approx(4 / 5, abs=1e-12)  # all but r = 1.1
    kl = sum((r - 1) - math.log(r) for r in RATIOS[:5]) / 5
    assert approx_kl.item() == pytest.approx(kl, abs=1e-12)
    loss.backward()
    # d/dlog π of −min(...)/5: −rA/5 where the unclipped term is the minimum, 0 where the
    # clipped one is (and on the masked step)
    expected = torch.tensor([0.0, 1.5 / 5, -1.0 / 5, 0.0, -3.3 / 5, 0.0], dtype=F64)
    torch.testing.assert_close(log_prob.grad, expected, rtol=0, atol=1e-12)


def test_masked_steps_may_hold_non_finite_numbers():
    log_prob, old, adv, mask = _hand_case()
    reference, _, _ = ppo_clipped_loss(log_prob, old, adv, mask, 0.2)
    junk_lp = log_prob.detach().clone()
    junk_lp[5] = math.nan
    junk_lp.requires_grad_()
    junk_adv = adv.clone()
    junk_adv[5] = math.inf
    loss, clip_fraction, approx_kl = ppo_clipped_loss(junk_lp, old, junk_adv, mask, 0.2)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-12)
    loss.backward()
    assert torch.isfinite(junk_lp.grad).all() and junk_lp.grad[5] == 0
    assert torch.isfinite(clip_fraction) and torch.isfinite(approx_kl)


def test_clipped_loss_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(0)
    old = torch.randn(4, 3, 5, generator=gen, dtype=F64)
    # log-ratios spread over ±0.6, kept away from the kinks at log(1 ± ε)
    log_ratio = (torch.rand(4, 3, 5, generator=gen, dtype=F64) - 0.5) * 1.2
    for kink in (math.log(0.8), math.log(1.2)):
        near = (log_ratio - kink).abs() < 0.02
        log_ratio = torch.where(near, log_ratio + 0.05, log_ratio)
    adv = torch.randn(4, 3, 5, generator=gen, dtype=F64)
    mask = (torch.rand(4, 3, 5, generator=gen) > 0.3).to(F64)
    log_prob = (old + log_ratio).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda lp: ppo_clipped_loss(lp, old, adv, mask, 0.2)[0], (log_prob,))
    values = torch.randn(4, 3, 5, generator=gen, dtype=F64, requires_grad=True)
    returns = torch.randn(4, 3, 5, generator=gen, dtype=F64)
    old_values = values.detach() + 0.5 * torch.randn(4, 3, 5, generator=gen, dtype=F64)
    assert torch.autograd.gradcheck(
        lambda v: ppo_value_loss(v, returns, mask, old_values, 0.2), (values,))


def test_value_loss_by_hand():
    values = torch.tensor([1.0, 0.0, 3.0, 7.0], dtype=F64)
    returns = torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=F64)
    old = torch.tensor([0.5, 0.0, 3.0, 0.0], dtype=F64)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=F64)
    assert ppo_value_loss(values, returns, mask).item() == pytest.approx((1 + 0 + 9) / 3)
    # clipped: V_old + clip(V − V_old, ±0.2) = 0.7, 0.0, 3.0 → max(1, 1.69), 0, max(9, 9)
    assert ppo_value_loss(values, returns, mask, old, 0.2).item() == \
        pytest.approx((1.69 + 0 + 9) / 3)


# ── minibatches ───────────────────────────────────────────────────────────────────────────────
def test_minibatch_rows_partition_the_rows():
    gen = torch.Generator().manual_seed(3)
    parts = minibatch_rows(10, 4, gen)
    assert len(parts) == 4 and sorted(len(p) for p in parts) == [2, 2, 3, 3]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="whole rows"):
        minibatch_rows(3, 4, gen)


class _Recorder:
    """A linear Gaussian policy and value over per-step features ``[T, N, L, 2]`` that records
    the rows each call evaluates."""

    def __init__(self, seed=0, T=3, N=4, L=5):
        gen = torch.Generator().manual_seed(seed)
        self.obs = torch.randn(T, N, L, 2, generator=gen)
        self.actions = torch.randn(T, N, L, generator=gen)
        self.mask = torch.ones(T, N, L)
        self.mask[0, 1, 3:] = 0  # an episode that ended early
        self.advantages = torch.randn(T, N, L, generator=gen)
        self.returns = torch.randn(T, N, L, generator=gen)
        torch.manual_seed(seed)
        self.policy = torch.nn.Linear(2, 1)
        self.value = torch.nn.Linear(2, 1)
        self.log_std = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def parameters(self):
        return [*self.policy.parameters(), *self.value.parameters(), self.log_std]

    def __call__(self, rows):
        self.calls.append(rows.clone())
        obs = select_rows(self.obs, rows)  # [B, L, 2]
        mean = self.policy(obs).squeeze(-1)
        std = self.log_std.exp()
        log_prob = torch.distributions.Normal(mean, std).log_prob(select_rows(self.actions, rows))
        entropy = 0.5 * math.log(2 * math.pi * math.e) + self.log_std  # a scalar: broadcast
        return log_prob, self.value(obs).squeeze(-1), entropy

    def update(self, options, seed):
        optimizer = ppo_optimizer(self.parameters(), options)
        return ppo_update(self, optimizer, self.mask, self.advantages, returns=self.returns,
                          options=options, generator=torch.Generator().manual_seed(seed))


def test_each_epoch_covers_every_row_once_in_whole_rows():
    rec = _Recorder()
    options = PPOOptions(ppo_epochs=3, minibatches=4, entropy_coef=0.01, clip_value=True)
    info = rec.update(options, seed=1)
    # the first 4 calls evaluate π_old and V_old (all rows, in order, no gradient)
    assert torch.equal(torch.cat(rec.calls[:4]), torch.arange(12))
    steps = rec.calls[4:]
    assert len(steps) == 3 * 4 and info["ppo/updates"] == 12 and info["ppo/epochs"] == 3
    for epoch in range(3):
        rows = torch.cat(steps[4 * epoch: 4 * epoch + 4])
        assert sorted(rows.tolist()) == list(range(12))
    assert not torch.equal(torch.cat(steps[:4]), torch.cat(steps[4:8]))  # reshuffled
    for key in ("ppo/policy_loss", "ppo/value_loss", "ppo/entropy", "ppo/approx_kl",
                "ppo/clip_fraction", "ppo/grad_norm"):
        assert math.isfinite(info[key]), key
    assert info["ppo/skipped"] == 0 and info["ppo/stopped_early"] == 0


def test_equal_seeds_give_equal_updates():
    options = PPOOptions(ppo_epochs=2, minibatches=3, lr=1e-2)
    a, b, c = _Recorder(), _Recorder(), _Recorder()
    info_a, info_b = a.update(options, seed=7), b.update(options, seed=7)
    c.update(options, seed=8)
    assert info_a == info_b
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


# ── learning ──────────────────────────────────────────────────────────────────────────────────
def test_learns_a_three_armed_bandit(one_torch_thread):
    """Rewards 0, 1, 0.5; 64 pulls per update, a learned scalar value as the baseline. Bar:
    within 40 updates the best arm has probability > 0.95 from uniform (8–9 updates over ten
    seeds)."""
    torch.manual_seed(0)
    rewards = torch.tensor([0.0, 1.0, 0.5])
    logits = torch.nn.Parameter(torch.zeros(3))
    value = torch.nn.Parameter(torch.zeros(()))
    options = PPOOptions(ppo_epochs=4, minibatches=4, lr=0.02)
    optimizer = ppo_optimizer([logits, value], options)
    sampler, shuffler = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    T, N = 4, 16  # rows of one step each
    updates = 0
    for _ in range(40):
        updates += 1
        with torch.no_grad():
            actions = torch.multinomial(torch.softmax(logits, 0), T * N, replacement=True,
                                        generator=sampler).reshape(T, N)
            ret = rewards[actions][..., None]  # [T, N, 1]
            adv = ret - value
        flat_actions = actions.reshape(-1)

        def loss_terms(rows, flat_actions=flat_actions):
            dist = torch.distributions.Categorical(logits=logits)
            log_prob = dist.log_prob(flat_actions[rows])[:, None]
            return log_prob, value.expand(len(rows), 1), dist.entropy()

        info = ppo_update(loss_terms, optimizer, torch.ones(T, N, 1), adv, returns=ret,
                          options=options, generator=shuffler)
        assert info["ppo/skipped"] == 0
        if torch.softmax(logits, 0)[1] > 0.95:
            break
    probs = torch.softmax(logits.detach(), 0)
    assert probs[1] > 0.95, (updates, probs)
    assert abs(value.item() - float(rewards @ probs)) < 0.1


def test_learns_a_one_dimensional_gaussian(one_torch_thread):
    """π = N(μ, σ²) from μ = 0, σ = 1; reward −(a − 2)²; advantages = normalised rewards (no
    value function). Bar: within 60 updates |μ − 2| < 0.1 (|μ − 2| < 0.05 after 9–13 updates
    over ten seeds)."""
    torch.manual_seed(0)
    mu = torch.nn.Parameter(torch.zeros(()))
    log_std = torch.nn.Parameter(torch.zeros(()))
    options = PPOOptions(lr=0.01)  # the defaults otherwise: 10 epochs, 4 minibatches
    optimizer = ppo_optimizer([mu, log_std], options)
    sampler, shuffler = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    updates = 0
    for _ in range(60):
        updates += 1
        with torch.no_grad():
            actions = mu + log_std.exp() * torch.randn(64, 1, generator=sampler)
            adv = -(actions - 2.0) ** 2

        def loss_terms(rows, actions=actions):
            dist = torch.distributions.Normal(mu, log_std.exp())
            return dist.log_prob(actions[rows]), None, None

        ppo_update(loss_terms, optimizer, torch.ones(64, 1), adv, options=options,
                   generator=shuffler)
        if abs(mu.item() - 2.0) < 0.05:
            break
    assert abs(mu.item() - 2.0) < 0.1, (updates, mu.item(), log_std.exp().item())


# ── guards ────────────────────────────────────────────────────────────────────────────────────
def _snapshot(rec):
    return [p.detach().clone() for p in rec.parameters()]


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_minibatches_are_skipped_and_counted(where):
    rec = _Recorder()
    before = _snapshot(rec)
    clean = rec.__call__

    def poisoned(rows):
        log_prob, values, entropy = clean(rows)
        if torch.is_grad_enabled():  # π_old is evaluated cleanly
            if where == "loss":
                log_prob = log_prob + math.nan
            else:  # finite value, NaN gradient: d/dx √(x − x) = ∞ − ∞
                w = rec.policy.weight
                log_prob = log_prob + torch.sqrt(w.sum() - w.sum())
        return log_prob, values, entropy

    options = PPOOptions(ppo_epochs=2, minibatches=3, lr=0.1)
    optimizer = ppo_optimizer(rec.parameters(), options)
    info = ppo_update(poisoned, optimizer, rec.mask, rec.advantages, returns=rec.returns,
                      options=options, generator=torch.Generator().manual_seed(0))
    assert info["ppo/skipped"] == 6 and info["ppo/updates"] == 0
    assert math.isnan(info["ppo/policy_loss"])
    for p, old in zip(rec.parameters(), before):
        assert torch.equal(p, old) and (p.grad is None)
    assert not optimizer.state  # Adam never stepped


def test_only_the_poisoned_minibatch_is_skipped():
    rec = _Recorder()
    clean = rec.__call__

    def poisoned(rows):  # NaN in the minibatch holding row 0, once per epoch
        log_prob, values, entropy = clean(rows)
        if torch.is_grad_enabled() and (rows == 0).any():
            log_prob = log_prob + math.nan
        return log_prob, values, entropy

    options = PPOOptions(ppo_epochs=3, minibatches=4, lr=0.1)
    optimizer = ppo_optimizer(rec.parameters(), options)
    info = ppo_update(poisoned, optimizer, rec.mask, rec.advantages, returns=rec.returns,
                      options=options, generator=torch.Generator().manual_seed(0))
    assert info["ppo/skipped"] == 3 and info["ppo/updates"] == 9
    assert all(torch.isfinite(p).all() for p in rec.parameters())
    assert math.isfinite(info["ppo/policy_loss"])


def test_target_kl_stops_the_epochs_early():
    base = PPOOptions(ppo_epochs=10, minibatches=4, lr=0.5)
    unlimited = _Recorder().update(base, seed=0)
    assert unlimited["ppo/epochs"] == 10 and unlimited["ppo/stopped_early"] == 0
    assert unlimited["ppo/final_kl"] > 1e-3
    stopped = _Recorder().update(PPOOptions(ppo_epochs=10, minibatches=4, lr=0.5,
                                            target_kl=1e-3), seed=0)
    assert stopped["ppo/stopped_early"] == 1
    assert stopped["ppo/final_kl"] > 1e-3  # the minibatch that stopped it
    assert stopped["ppo/approx_kl"] <= 1e-3  # every step taken was within the target
    assert 1 <= stopped["ppo/updates"] < 40 and stopped["ppo/epochs"] < 10
    # the stopping minibatch is evaluated but not stepped on
    assert stopped["ppo/epochs"] * 4 == stopped["ppo/updates"] + 1


def test_options_ranges_are_checked():
    for bad in ({"clip": 0.0}, {"clip": 1.0}, {"ppo_epochs": 0}, {"minibatches": 0},
                {"lr": 0.0}, {"max_grad_norm": -1.0}, {"target_kl": -0.1},
                {"value_coef": math.nan}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PPOOptions(**bad).validate()
    PPOOptions().validate()
    rec = _Recorder(T=1, N=3)
    with pytest.raises(ValueError, match="whole rows"):
        rec.update(PPOOptions(minibatches=4), seed=0)


def test_learning_rate_schedules():
    constant = PPOOptions(lr=1e-3, lr_end=1e-4)
    assert [ppo_lr(constant, done, 10) for done in (0, 5, 9)] == [1e-3] * 3
    linear = PPOOptions(lr=1e-3, lr_end=1e-4, lr_schedule="linear")
    assert [ppo_lr(linear, done, 10) for done in (0, 3, 9, 12)] == pytest.approx(
        [1e-3, 7e-4, 1e-4, 1e-4])
    assert ppo_lr(linear, 0, 1) == 1e-3  # a one-iteration run keeps lr
    held = PPOOptions(lr=1e-3, lr_end=1e-4, lr_schedule="linear", lr_anneal_start=4)
    assert [ppo_lr(held, done, 10) for done in (0, 3, 4, 7, 9, 12)] == pytest.approx(
        [1e-3, 1e-3, 1e-3, 4.6e-4, 1e-4, 1e-4])
    assert ppo_lr(held, 3, 4) == 1e-3  # annealing would start at or after the last iteration
    with pytest.raises(ValueError, match="lr_anneal_start"):
        PPOOptions(lr_anneal_start=5).validate()  # nothing anneals with the constant schedule
    optimizer = ppo_optimizer([torch.zeros(2, requires_grad=True)], linear)
    set_lr(optimizer, 5e-4)
    assert [group["lr"] for group in optimizer.param_groups] == [5e-4]
    with pytest.raises(ValueError, match="lr_end"):
        PPOOptions(lr_end=-1e-3, lr_schedule="linear").validate()
    with pytest.raises(ValueError, match="lr_schedule=linear"):
        PPOOptions(lr_end=1e-4).validate()  # an lr_end nothing would read


# ── a recurrent policy over trials ────────────────────────────────────────────────────────────
def test_a_gru_policy_trains_on_whole_trials(one_torch_thread):
    """RL²'s use: rows are trials of k = 2 episodes; ``loss_terms_fn`` re-unrolls the selected
    trials from h_0 (as ``[1, B, L]``), which gives exactly the full batch's numbers."""
    torch.manual_seed(0)
    T, N, k, H, obs_dim, act_dim = 2, 3, 2, 4, 3, 2
    gen = torch.Generator().manual_seed(5)
    mask = torch.ones(T, N, k * H)
    mask[1, 2, 2:4] = 0  # the first episode of a trial ended early; the second starts on time
    episodes = Episodes(obs=torch.randn(T, N, k * H, obs_dim, generator=gen),
                        actions=torch.randn(T, N, k * H, act_dim, generator=gen),
                        rewards=torch.randn(T, N, k * H, generator=gen) * mask,
                        next_obs=torch.randn(T, N, k * H, obs_dim, generator=gen), mask=mask,
                        terminated=torch.zeros(T, N, k * H, dtype=torch.bool),
                        tasks=torch.zeros(T, k, dtype=F64).numpy(), trial_episodes=k)
    policy = GaussianGRUPolicy(obs_dim, act_dim, hidden_size=8, value_head=True)
    inputs = policy.inputs(episodes.obs, episodes)

    def loss_terms(rows):
        trials = tuple(select_rows(x, rows).unsqueeze(0) for x in inputs)
        log_prob, entropy, values = policy.evaluate(
            trials, select_rows(episodes.actions, rows).unsqueeze(0))
        return log_prob, values, entropy

    with torch.no_grad():
        log_prob, entropy, values = policy.evaluate(inputs, episodes.actions)
        rows = torch.tensor([4, 1])
        sub_lp, sub_v, _ = loss_terms(rows)
        torch.testing.assert_close(sub_lp[0], select_rows(log_prob, rows))
        torch.testing.assert_close(sub_v[0], select_rows(values, rows))
    advantages = episodes.gae(values, gamma=0.99, lam=0.95)
    returns = advantages + values
    before = [p.detach().clone() for p in policy.parameters()]
    options = PPOOptions(ppo_epochs=2, minibatches=3, lr=1e-2, entropy_coef=0.01)
    info = ppo_update(loss_terms, ppo_optimizer(policy.parameters(), options), mask, advantages,
                      returns=returns, old_log_prob=log_prob, options=options,
                      generator=torch.Generator().manual_seed(0))
    assert info["ppo/updates"] == 6 and info["ppo/skipped"] == 0
    assert all(math.isfinite(info[key]) for key in info)
    assert all(not torch.equal(p, b) for p, b in zip(policy.parameters(), before))
