"""PEARL and FLAP: context networks, the linear-head actor, configs, checkpoints and resume."""

import copy
import math

import numpy as np
import pytest
import torch
from test_runner import assert_resume_is_exact

from adaptrl.algos import get_algorithm
from adaptrl.config import make_config
from adaptrl.errors import AdaptrlError
from adaptrl.nets.context import (
    AdapterNet,
    ContextEncoder,
    context_size,
    kl_to_unit_gaussian,
    product_of_gaussians,
    transition_features,
)
from adaptrl.nets.sac_nets import LinearHeadActor, tanh_gaussian_sample
from adaptrl.runner import train
from adaptrl.tasks import get_family


# ── product of Gaussians, encoder, adapter ────────────────────────────────────────────────────
def test_product_of_two_gaussians_by_hand():
    mean = torch.tensor([[[1.0], [3.0]]])          # [T=1, M=2, d=1]
    var = torch.tensor([[[1.0], [3.0]]])
    post_mean, post_var = product_of_gaussians(mean, var)
    # precisions 1 + 1/3 = 4/3; mean = (1/1 + 3/3) / (4/3) = 1.5
    torch.testing.assert_close(post_var, torch.tensor([[0.75]]))
    torch.testing.assert_close(post_mean, torch.tensor([[1.5]]))
    # a masked factor is ignored; no factor at all gives the unit prior
    m, v = product_of_gaussians(mean, var, torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close((m, v), (torch.tensor([[1.0]]), torch.tensor([[1.0]])))
    m, v = product_of_gaussians(mean, var, torch.zeros(1, 2))
    torch.testing.assert_close((m, v), (torch.zeros(1, 1), torch.ones(1, 1)))


def test_kl_to_unit_gaussian_matches_torch():
    mean, var = torch.randn(4, 3), torch.rand(4, 3) + 0.1
    q = torch.distributions.Normal(mean, var.sqrt())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(kl_to_unit_gaussian(mean, var),
                               torch.distributions.kl_divergence(q, p).sum(-1))


def test_encoder_is_permutation_invariant_and_its_variance_shrinks_with_context():
    torch.manual_seed(0)
    encoder = ContextEncoder(7, latent_dim=5, hidden_sizes=(16, 16))
    context = torch.randn(3, 40, 7)
    mean, var = encoder.posterior(context)
    perm = torch.randperm(40)
    torch.testing.assert_close(encoder.posterior(context[:, perm]), (mean, var))
    variances = [encoder.posterior(context[:, :m])[1] for m in (1, 5, 20, 40)]
    for fewer, more in zip(variances, variances[1:]):
        assert (more < fewer).all()
    empty_mean, empty_var = encoder.posterior(context[:, :0])
    assert torch.equal(empty_mean, torch.zeros(3, 5)) and torch.equal(empty_var, torch.ones(3, 5))
    with pytest.raises(ValueError, match=r"context must be \[T, M, 7\]"):
        encoder.posterior(torch.zeros(3, 4, 6))


def test_adapter_prediction_is_the_masked_mean_of_per_transition_predictions():
    torch.manual_seed(0)
    adapter = AdapterNet(5, (4, 9), hidden_sizes=(8,))  # no decoder layers: FLAP's rule
    context = torch.randn(2, 6, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    heads = adapter(context, mask)
    assert heads.shape == (2, 4, 9)
    torch.testing.assert_close(heads[0], adapter(context[:1, :3])[0])
    torch.testing.assert_close(heads[0], adapter.per_transition(context)[0, :3].mean(0))
    torch.testing.assert_close(heads[1], adapter.per_transition(context)[1].mean(0))
    with pytest.raises(ValueError, match="at least one transition"):
        adapter(context, torch.zeros(2, 6))
    # with decoder layers it stays permutation invariant and ignores masked transitions
    deep = AdapterNet(5, (4, 9), hidden_sizes=(8,), decoder_sizes=(16,))
    perm = torch.randperm(6)
    torch.testing.assert_close(deep(context[:, perm]), deep(context))
    torch.testing.assert_close(deep(context, mask)[0], deep(context[:1, :3])[0])


def test_transition_features_layout():
    obs, act = torch.ones(2, 3, 4), torch.full((2, 3, 2), 2.0)
    reward, next_obs = torch.full((2, 3), 3.0), torch.full((2, 3, 4), 4.0)
    feats = transition_features(obs, act, reward, next_obs)
    assert feats.shape == (2, 3, context_size(4, 2, True)) == (2, 3, 11)
    assert feats[0, 0].tolist() == [1] * 4 + [2] * 2 + [3] + [4] * 4
    assert transition_features(obs, act, reward).shape[-1] == context_size(4, 2, False) == 7


# ── FLAP's linear-head actor ──────────────────────────────────────────────────────────────────
def test_linear_head_actor_one_hot_path_equals_explicit_heads_and_per_sample_fallback():
    torch.manual_seed(0)
    actor = LinearHeadActor(3, 2, num_tasks=5, hidden_sizes=(8, 8))
    with torch.no_grad():
        actor.heads.normal_()
    obs = torch.randn(4, 6, 3)
    rows = torch.tensor([4, 0, 2, 2])
    one_hot = torch.eye(5)[rows][:, None].expand(-1, 6, -1)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a1, lp1 = actor.sample(torch.cat([obs, one_hot], -1), gen())
    a2, lp2 = actor.sample_with_heads(obs, actor.heads[rows], gen())
    torch.testing.assert_close((a1, lp1), (a2, lp2))
    # the head is a linear layer on φ(s): mean = W[:, :F] φ + W[:, F]
    mean, _ = actor.distribution(obs, actor.heads[rows])
    phi = actor.features(obs)
    w = actor.heads[rows[1]]
    torch.testing.assert_close(mean[1], (phi[1] @ w[:, :-1].T + w[:, -1])[:, :2])
    # mixed tasks inside one row fall back to a head per observation, same numbers
    mixed = torch.eye(5)[torch.tensor([[4, 1], [0, 0]])]
    obs2 = torch.randn(2, 2, 3)
    act, _ = actor.sample(torch.cat([obs2, mixed], -1), deterministic=True)
    for i in range(2):
        for j in range(2):
            k = int(mixed[i, j].argmax())
            expected, _ = tanh_gaussian_sample(*actor.distribution(obs2[i:i + 1, j:j + 1],
                                                                   actor.heads[k:k + 1]),
                                               deterministic=True)
            torch.testing.assert_close(act[i, j], expected[0, 0])
    with pytest.raises(ValueError, match="one-hot of 5 tasks"):
        actor.sample(torch.zeros(2, 3, 7))


# ── configs ───────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("algo,override,field", [
    ("pearl", "meta_batch=200", "meta_batch"),
    ("pearl", "latent_dim=0", "latent_dim"),
    ("pearl", "kl_lambda=-1", "kl_lambda"),
    ("pearl", "tau=0", "tau"),
    ("flap", "adapter_batch=0", "adapter_batch"),
    ("flap", "collect_episodes=0", "collect_episodes"),
    ("flap", "tasks_per_iteration=101", "tasks_per_iteration"),
    ("flap", "reward_scale=0", "reward_scale"),
    ("flap", "initial_episodes=0", "initial_episodes"),
])
def test_impossible_values_are_rejected_naming_the_field(algo, override, field):
    with pytest.raises(AdaptrlError, match=field):
        make_config(algo, None, [override])


def test_bad_choice_and_unknown_key_are_clear_errors():
    with pytest.raises(AdaptrlError, match="adapt_z expects one of mean, sample"):
        make_config("pearl", None, ["adapt_z=median"])
    with pytest.raises(AdaptrlError, match="adapter_hiden"):
        make_config("flap", None, ["adapter_hiden=3"])


def test_sac_fields_reach_the_sac_core():
    cfg = make_config("flap", "smoke", ["tau=0.01", "critic_lr=1e-3"])
    sac_cfg = cfg.sac_config()
    assert sac_cfg.tau == 0.01 and sac_cfg.critic_lr == 1e-3
    assert sac_cfg.hidden_sizes == [32, 32]


# ── methods end to end on tiny settings ───────────────────────────────────────────────────────
def _build(algo, family="point-nav", *overrides, seed=0):
    cls = get_algorithm(algo)
    torch.manual_seed(seed)
    return cls(get_family(family), make_config(cls, "smoke", list(overrides)))


def _actions(adapted, obs):
    return adapted.policy.act(obs, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("algo", ["pearl", "flap"])
def test_train_step_reports_metrics_and_fills_buffers(algo):
    method = _build(algo)
    rng = np.random.default_rng(0)
    metrics = method.train_step(rng)
    for key in ("return", "loss/critic", "loss/actor", "alpha"):
        assert math.isfinite(metrics[key]), key
    assert not any(key.startswith("time/") for key in metrics)  # the runner times phases
    assert method.clock.take()["sample"] > 0
    assert (method.replay.size > 0).all()
    assert ("kl" in metrics) == (algo == "pearl")
    assert ("loss/adapter" in metrics) == (algo == "flap")


@pytest.mark.parametrize("algo", ["pearl", "flap"])
def test_adapt_uses_the_budgeted_episodes(algo):
    method = _build(algo)
    method.train_step(np.random.default_rng(0))
    tasks = method.family.split("test", 3, np.random.default_rng(1))
    adapted = method.adapt(tasks, [0, 2, 1], np.random.default_rng(2))
    H = method.horizon
    assert [a.samples.tolist() for a in adapted] == [[0] * 3, [2 * H] * 3, [H] * 3]
    assert adapted[0].seconds <= adapted[2].seconds <= adapted[1].seconds
    obs = torch.zeros(3, 4, method.obs_dim)
    for a in adapted:
        act = _actions(a, obs)
        assert act.shape == (3, 4, 2) and (act.abs() <= 0.1 + 1e-6).all()  # point-nav's box


@pytest.mark.parametrize("algo", ["pearl", "flap"])
def test_checkpoint_round_trip_gives_identical_actions_and_updates(algo):
    method = _build(algo)
    method.train_step(np.random.default_rng(0))
    state = copy.deepcopy(method.state_dict())
    clone = _build(algo, seed=123)  # other initial weights, other training tasks
    clone.load_state_dict(state)
    np.testing.assert_array_equal(clone.train_tasks, method.train_tasks)
    tasks = method.family.split("test", 2, np.random.default_rng(1))
    obs = torch.randn(2, 3, method.obs_dim)
    for a, b in zip(method.adapt(tasks, [0, 1], np.random.default_rng(5)),
                    clone.adapt(tasks, [0, 1], np.random.default_rng(5))):
        assert torch.equal(_actions(a, obs), _actions(b, obs))
    m1 = method.train_step(np.random.default_rng(9))
    m2 = clone.train_step(np.random.default_rng(9))
    assert {k: v for k, v in m1.items() if not k.startswith("time/")} == \
        {k: v for k, v in m2.items() if not k.startswith("time/")}


def test_checkpoint_without_replay_refills_buffers_on_resume():
    method = _build("flap", "point-nav", "checkpoint_replay=false")
    method.train_step(np.random.default_rng(0))
    state = method.state_dict()
    assert state["replay"] is None
    clone = _build("flap", "point-nav", "checkpoint_replay=false")
    clone.load_state_dict(state)
    assert (clone.replay.size == 0).all()
    clone.train_step(np.random.default_rng(1))
    assert (clone.replay.size > 0).all()


def test_state_from_another_config_is_refused():
    method = _build("pearl")
    other = _build("pearl", "point-nav", "num_train_tasks=7")
    with pytest.raises(ValueError, match="training tasks"):
        other.load_state_dict(method.state_dict())


@pytest.mark.parametrize("algo", ["pearl", "flap"])
def test_resume_matches_uninterrupted_run(tmp_path, algo):
    assert_resume_is_exact(tmp_path, algo, "point-nav", first=2, total=4, checkpoint_every=2)


def test_smoke_preset_trains_and_evaluates_on_a_mujoco_family(tmp_path):
    from adaptrl.eval import evaluate
    from adaptrl.runner import load_run

    run_dir = train("flap", "cheetah-vel", preset="smoke", overrides=["iterations=1"],
                    out=tmp_path / "run", progress=False)
    method, _, _ = load_run(run_dir)
    tasks = method.family.split("test", 2, np.random.default_rng(0))
    result = evaluate(method, "cheetah-vel", tasks, [0, 1], 1, np.random.default_rng(1))
    assert result["algo"] == "flap" and len(result["summary"]["mean"]) == 2
    assert result["tasks"][0]["samples"] == [0, method.horizon]


def test_flap_adapter_learns_heads_from_exploration_contexts():
    """Heads that are a known smooth function of the goal: the adapter, trained by FLAP's own
    regression on contexts collected the meta-test way, predicts the heads of the training
    tasks with small error (R² > 0.9) from rewards alone (the exploring policy is the same for
    every task), and does better than the mean head on goals it never saw (R² > 0.2; with
    24 tasks × 8 context episodes it is ≈ 0.4, so generalisation needs many more tasks than
    fitting: a single context episode per task gave 0.0 with training R² still 0.9, the
    adapter having memorised each task's trajectory)."""
    torch.manual_seed(0)
    flap = _build("flap", "point-nav", "num_train_tasks=24", "meta_batch=12", "context_rounds=8",
                  "adapter_batch=100", "adapter_lr=3e-3", "adapter_hidden=64,64",
                  "adapter_decoder=64", "eval_deterministic=false", "horizon=30")
    rng = np.random.default_rng(0)
    M = flap.config.num_train_tasks
    with torch.no_grad():
        direction = torch.randn(2, *flap.actor.head_shape)
        psi = torch.as_tensor(flap.train_tasks, dtype=torch.float32)
        flap.actor.heads.copy_(flap.actor.heads[0] + torch.einsum("tk,kij->tij", psi, direction))
    flap.collect_contexts(np.arange(M), rng)
    for _ in range(400):
        rows = rng.choice(M, flap.config.meta_batch, replace=False)
        context = flap.context_batch(flap.context_buffer.sample(100, rng, rows))
        loss, _ = flap.adapter_loss(context, torch.as_tensor(rows))
        flap.adapter_optim.zero_grad()
        loss.backward()
        flap.adapter_optim.step()
    def r2(predicted, heads):
        return 1 - float(((predicted - heads) ** 2).sum() / ((heads - heads.mean(0)) ** 2).sum())

    with torch.no_grad():
        context = flap.context_batch(flap.context_buffer.sample(200, rng))
        train_r2 = r2(flap.predict_heads(context), flap.actor.heads)
        new_tasks = flap.family.split("test", 12, rng)
        episodes = flap.context_rounds(new_tasks, 1, rng)
        predicted = flap.predict_heads(*flap.context_of(episodes))
        truth = flap.actor.heads[0] + torch.einsum(
            "tk,kij->tij", torch.as_tensor(new_tasks, dtype=torch.float32), direction)
        # heads[0] is itself base + ψ₀·direction: subtract ψ₀'s part to get the base
        truth = truth - torch.einsum("k,kij->ij", psi[0], direction)
        test_r2 = r2(predicted, truth)
    print(f"adapter R²: training tasks {train_r2:.3f}, new goals {test_r2:.3f}")
    assert train_r2 > 0.9 and test_r2 > 0.2, (train_r2, test_r2)
