"""Gradient correctness of MAML/FOMAML and sanity of Reptile and the baselines."""

import dataclasses

import numpy as np
import pytest
import torch

from adaptrl.algos import get_algorithm
from adaptrl.optim import flatten
from adaptrl.sampling import Episodes
from adaptrl.tasks import get_family


def _double(ep: Episodes) -> Episodes:
    return dataclasses.replace(
        ep, obs=ep.obs.double(), actions=ep.actions.double(), rewards=ep.rewards.double(),
        next_obs=ep.next_obs.double(), mask=ep.mask.double())


def _setup(first_order=False, inner_steps=1, seed=0, family="point-nav"):
    """A tiny fixed MAML batch in float64: (algo, inner data, adapted params, post data)."""
    torch.manual_seed(seed)
    cls = get_algorithm("fomaml" if first_order else "maml")
    cfg = cls.Config(meta_batch=3, fast_batch=2, horizon=6, hidden_sizes=[5],
                     activation="tanh", inner_lr=0.5, inner_steps=inner_steps,
                     init_log_std=-0.5)
    algo = cls(get_family(family), cfg)
    algo.policy.double()
    rng = np.random.default_rng(seed)
    T = cfg.meta_batch
    tasks = algo.family.sample(T, rng)
    params = {k: v.detach() for k, v in algo.policy.expand_params(T).items()}
    inner = []
    for _ in range(inner_steps):
        ep = _double(algo.rollout(algo.actor({k: v.float() for k, v in params.items()}),
                                  tasks, rng))
        adv = algo.advantages(ep)
        inner.append((params, ep, adv))
        params = {k: v.detach() for k, v in algo.inner_update(params, ep, adv).items()}
    post = _double(algo.rollout(algo.actor({k: v.float() for k, v in params.items()}),
                                tasks, rng))
    post_adv = algo.advantages(post)
    with torch.no_grad():
        old_logp = algo.policy.log_prob(post.obs, post.actions, params)
    return algo, inner, params, post, post_adv, old_logp


def _flat_params(algo):
    return flatten([p.detach() for p in algo.policy.parameters()])


def _set_flat(algo, vec):
    with torch.no_grad():
        offset = 0
        for p in algo.policy.parameters():
            p.copy_(vec[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(inner_steps):
    algo, inner, _, post, post_adv, old_logp = _setup(inner_steps=inner_steps)
    params = list(algo.policy.parameters())
    loss = algo.post_adaptation_loss(inner, post, post_adv, old_logp)
    grad = flatten(torch.autograd.grad(loss, params))
    theta = _flat_params(algo)
    gen = torch.Generator().manual_seed(1)
    eps = 1e-6
    for _ in range(3):
        direction = torch.randn(theta.shape, generator=gen, dtype=torch.float64)
        values = []
        for sign in (1, -1):
            _set_flat(algo, theta + sign * eps * direction)
            with torch.no_grad():
                values.append(float(algo.post_adaptation_loss(inner, post, post_adv, old_logp)))
        _set_flat(algo, theta)
        fd = (values[0] - values[1]) / (2 * eps)
        assert float(grad @ direction) == pytest.approx(fd, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("first_order, inner_steps", [(False, 1), (False, 2), (True, 1)])
def test_hand_meta_gradient_equals_autograd_of_the_post_adaptation_loss(first_order,
                                                                          inner_steps):
    from adaptrl.nets.curvature import MLPTrace
    algo, inner, adapted, post, post_adv, old_logp = _setup(first_order, inner_steps)
    params = list(algo.policy.parameters())
    loss = algo.post_adaptation_loss(inner, post, post_adv, old_logp)
    reference = flatten(torch.autograd.grad(loss, params))
    hessians = [algo.inner_loss_curvature(*step) for step in inner]
    value, grad = algo.meta_gradient(hessians, post, post_adv,
                                     MLPTrace(algo.policy, post.obs, adapted))
    assert value == pytest.approx(float(loss.detach()), rel=1e-12)
    torch.testing.assert_close(grad, reference, rtol=1e-9, atol=1e-12)
    # the hand inner step is the autograd one
    for (p, ep, adv), h in zip(inner, hessians):
        by_autograd = algo.inner_update(p, ep, adv)
        for k, v in algo.gradient_step(p, h).items():
            torch.testing.assert_close(v, by_autograd[k], rtol=1e-12, atol=1e-14)


def test_first_order_gradient_is_the_second_order_gradient_without_inner_jacobian():
    algo, inner, adapted, post, post_adv, old_logp = _setup(first_order=True)
    params = list(algo.policy.parameters())
    fo = flatten(torch.autograd.grad(
        algo.post_adaptation_loss(inner, post, post_adv, old_logp), params))
    # by hand: the gradient w.r.t. each task's adapted parameters, summed over tasks (J = I)
    at = {k: v.detach().clone().requires_grad_() for k, v in adapted.items()}
    logp = algo.policy.log_prob(post.obs, post.actions, at)
    mask = post.mask
    per_task = -((torch.exp(logp - old_logp) * post_adv * mask).sum((1, 2))
                 / mask.sum((1, 2))).mean()
    by_hand = flatten([g.sum(0) for g in torch.autograd.grad(per_task, list(at.values()))])
    torch.testing.assert_close(fo, by_hand)
    # and it differs from the second-order gradient (the inner Jacobian matters here)
    algo.config.first_order = False
    so = flatten(torch.autograd.grad(
        algo.post_adaptation_loss(inner, post, post_adv, old_logp), params))
    assert not torch.allclose(fo, so, rtol=1e-3)


@pytest.mark.parametrize("first_order, inner_steps", [(False, 1), (False, 2), (True, 1)])
def test_jtfj_product_equals_direct_kl_hessian_vector_product(first_order, inner_steps):
    algo, inner, adapted, post, _, _ = _setup(first_order=first_order, inner_steps=inner_steps)
    params = list(algo.policy.parameters())
    fast = algo.kl_hessian_product(inner, adapted, post)
    # direct: differentiate the KL gradient through the inner update (third-order graph)
    kl = algo.post_adaptation_kl(inner, post, adapted)
    g = torch.autograd.grad(kl, params, create_graph=True)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        v = torch.randn(sum(p.numel() for p in params), generator=gen, dtype=torch.float64)
        direct = flatten(torch.autograd.grad(flatten(g) @ v, params, retain_graph=True))
        torch.testing.assert_close(fast(v), direct, rtol=1e-7, atol=1e-10)


def test_maml_meta_update_respects_trust_region():
    algo, inner, adapted, post, post_adv, old_logp = _setup()
    algo.config.max_kl = 1e-3
    info = algo.meta_update(inner, adapted, post, post_adv)
    with torch.no_grad():
        kl = float(algo.post_adaptation_kl(inner, post, adapted))
        loss = float(algo.post_adaptation_loss(inner, post, post_adv, old_logp))
    if info["accepted"]:
        assert kl <= 1e-3 + 1e-12
        assert info["loss_after"] < info["loss_before"]
        # the line search's values (by hand) are the reference definitions' values
        assert info["kl"] == pytest.approx(kl, rel=1e-9)
        assert info["loss_after"] == pytest.approx(loss, rel=1e-9)
    else:
        assert kl == 0.0


def _train(name, family="point-nav", iterations=2, **overrides):
    torch.manual_seed(0)
    cls = get_algorithm(name)
    cfg = cls.Config(meta_batch=4, fast_batch=3, horizon=20, hidden_sizes=[16, 16],
                     **overrides)
    algo = cls(get_family(family), cfg)
    rng = np.random.default_rng(0)
    metrics = []
    for i in range(iterations):
        metrics.append(algo.train_step(rng))
        algo.iteration = i + 1  # the runner counts iterations
    return algo, metrics


@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile", "pretrain", "oracle", "random"])
def test_every_method_trains_and_adapts(name):
    algo, metrics = _train(name)
    assert all(np.isfinite(m["return"]) for m in metrics)
    assert algo.iteration == 2
    tasks = algo.family.sample(3, np.random.default_rng(5))
    adapted = algo.adapt(tasks, [0, 2, 1], np.random.default_rng(6))
    assert len(adapted) == 3
    obs = torch.zeros(3, 2, algo.family.obs_dim)
    for a in adapted:
        assert a.policy.act(obs, torch.Generator().manual_seed(0)).shape == (3, 2, 2)
    if name != "oracle":  # more budget, more samples; the oracle needs none
        assert adapted[0].samples.sum() == 0 and (adapted[1].samples > adapted[2].samples).all()


def test_maml_state_dict_round_trip_gives_identical_actions():
    algo, _ = _train("maml", iterations=1)
    clone, _ = _train("maml", iterations=0)
    clone.load_state_dict(algo.state_dict())
    obs = torch.randn(5, 2)
    torch.testing.assert_close(clone.policy.sample(obs, deterministic=True),
                               algo.policy.sample(obs, deterministic=True))
    assert clone.iteration == 1


def test_reptile_moves_toward_adapted_parameters():
    algo, _ = _train("reptile", iterations=0)
    before = _flat_params(algo).clone()
    algo.train_step(np.random.default_rng(1))
    assert not torch.equal(before, _flat_params(algo))


def test_maml_rejects_zero_inner_steps():
    cls = get_algorithm("maml")
    with pytest.raises(ValueError, match="inner_steps"):
        cls.Config(inner_steps=0).validate()


@pytest.mark.parametrize("name", ["pretrain", "oracle"])
def test_pretrain_fisher_product_equals_kl_hessian_vector_product(name):
    from adaptrl.optim import make_hvp, masked_task_mean

    algo, _ = _train(name, iterations=0)
    T = 3
    tasks = algo.family.sample(T, np.random.default_rng(3))
    ep = _double(algo.rollout(algo.actor(None, tasks), tasks, np.random.default_rng(4)))
    algo.policy.double()
    obs = algo.policy_obs(ep).double()
    old = {k: v.detach().clone() for k, v in algo.policy.params().items()}
    params = list(algo.policy.parameters())
    direct = make_hvp(lambda: masked_task_mean(algo.policy.kl(obs, old, algo.policy.params()),
                                               ep.mask).mean(), params)
    fast = algo.fisher_vector_product(ep)
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64)
    torch.testing.assert_close(fast(v), direct(v), rtol=1e-7, atol=1e-10)


# ── the general path: autograd for any policy network ─────────────────────────────────────────
@pytest.mark.parametrize("first_order, inner_steps", [(False, 1), (False, 2), (True, 1)])
def test_autograd_meta_update_equals_the_hand_written_one_on_the_mlp(first_order, inner_steps):
    """The same TRPO step, derivatives by hand (the MLP's fast path) or by autograd (the path
    every other network takes), from the same θ on the same data, in float64. CG runs to
    convergence: truncated after a few iterations on an ill-conditioned system it amplifies
    rounding-level differences of the products (both are equal to 1e-15 here) into per-mille
    differences of the step; converged, the two agree to CG's tolerance (1e-6 here)."""
    algo, inner, adapted, post, post_adv, _ = _setup(first_order, inner_steps)
    algo.config.cg_iters, algo.config.cg_damping = 200, 1e-3
    assert algo.hand_curvature
    start = _flat_params(algo).clone()
    by_hand = algo.meta_update(inner, adapted, post, post_adv)
    after_hand = _flat_params(algo).clone()
    _set_flat(algo, start)
    algo.config.meta_update = "autograd"
    assert not algo.hand_curvature
    by_autograd = algo.meta_update(inner, adapted, post, post_adv)
    after_autograd = _flat_params(algo).clone()
    assert by_hand["accepted"] and by_autograd["accepted"]
    assert by_autograd["backtracks"] == by_hand["backtracks"]
    assert by_autograd["grad_norm"] == pytest.approx(by_hand["grad_norm"], rel=1e-12)
    for key in ("loss_after", "kl", "shs", "step_norm"):
        assert by_autograd[key] == pytest.approx(by_hand[key], rel=1e-4), key
    step = (after_hand - start).abs().max()
    assert (after_autograd - after_hand).abs().max() < 1e-4 * step


def test_maml_with_a_recurrent_policy_takes_the_autograd_path_and_meta_learns_its_state():
    """MAML on the GRU policy (RL²'s inputs): the meta-update is autograd's, its gradient
    matches finite differences of the post-adaptation loss, and training runs end to end."""
    torch.manual_seed(0)
    cls = get_algorithm("maml")
    cfg = cls.Config(meta_batch=3, fast_batch=2, horizon=6, hidden_sizes=[5], inner_lr=0.5,
                     init_log_std=-0.5, policy="gru")
    algo = cls(get_family("point-nav"), cfg)
    assert not algo.hand_curvature
    algo.policy.double()
    rng = np.random.default_rng(0)
    tasks = algo.family.sample(3, rng)
    params = {k: v.detach() for k, v in algo.policy.expand_params(3).items()}
    pre = _double(algo.rollout(algo.actor({k: v.float() for k, v in params.items()}), tasks,
                               rng))
    inner = [(params, pre, algo.advantages(pre))]
    adapted = {k: v.detach() for k, v in algo.inner_update(params, pre, inner[0][2]).items()}
    post = _double(algo.rollout(algo.actor({k: v.float() for k, v in adapted.items()}), tasks,
                                rng))
    post_adv = algo.advantages(post)
    with torch.no_grad():
        old_logp = algo.policy.log_prob(algo.policy_inputs(post), post.actions, adapted)
    params_list = list(algo.policy.parameters())
    grad = flatten(torch.autograd.grad(
        algo.post_adaptation_loss(inner, post, post_adv, old_logp), params_list))
    theta = _flat_params(algo)
    direction = torch.randn(theta.shape, generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)
    values = []
    for sign in (1, -1):
        _set_flat(algo, theta + sign * 1e-6 * direction)
        with torch.no_grad():
            values.append(float(algo.post_adaptation_loss(inner, post, post_adv, old_logp)))
    _set_flat(algo, theta)
    fd = (values[0] - values[1]) / 2e-6
    assert float(grad @ direction) == pytest.approx(fd, rel=1e-5, abs=1e-8)
    info = algo.meta_update(inner, adapted, post, post_adv)
    assert info["refused"] is None and info["kl"] <= cfg.max_kl
    assert not torch.equal(_flat_params(algo), theta)

    # end to end in float32, as the runner trains it
    algo, metrics = _train("maml", policy="gru")
    assert all(np.isfinite(m["return"]) and m["trpo/refused"] == 0 for m in metrics)
    adapted = algo.adapt(tasks, [0, 1], np.random.default_rng(3))
    assert adapted[1].samples.sum() > 0 and adapted[1].policy.initial_state((3, 2)).shape == \
        (3, 2, 16)
