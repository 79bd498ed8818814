"""Gaussian MLP policy: per-task parameters in one batched call."""

import math

import pytest
import torch
from torch.func import functional_call, vmap

from adaptrl.errors import AdaptrlError
from adaptrl.nets import GaussianMLPPolicy


def _perturbed_task_params(policy, T, scale=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    base = policy.params()
    return {k: v.detach().unsqueeze(0) + scale * torch.randn(T, *v.shape, generator=gen)
            for k, v in base.items()}


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_per_task_forward_equals_torch_func_vmap(activation):
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(5, 3, (16, 8), activation)
    T = 4
    params = _perturbed_task_params(policy, T)
    obs = torch.randn(T, 7, 2, 5)
    mean, log_std = policy(obs, params)

    def one_task(p, o):
        return functional_call(policy, (p,), (o,))

    ref_mean, ref_log_std = vmap(one_task)(params, obs)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(log_std.expand_as(mean),
                               ref_log_std[:, None, None, :].expand_as(mean))


def test_shared_params_equal_expanded_params():
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(4, 2)
    obs = torch.randn(3, 5, 4)
    mean_shared, _ = policy(obs)
    mean_tasks, _ = policy(obs, policy.expand_params(3))
    torch.testing.assert_close(mean_shared, mean_tasks)


def test_log_prob_matches_torch_normal():
    torch.manual_seed(2)
    policy = GaussianMLPPolicy(3, 2, (8,), init_log_std=-0.3)
    obs, act = torch.randn(10, 3), torch.randn(10, 2)
    mean, log_std = policy(obs)
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(act).sum(-1)
    torch.testing.assert_close(policy.log_prob(obs, act), ref)
    assert math.isclose(float(policy.entropy().detach()),
                        float(torch.distributions.Normal(0, math.exp(-0.3)).entropy()) * 2,
                        rel_tol=1e-6)


def test_kl_is_zero_for_equal_params_and_matches_torch():
    torch.manual_seed(3)
    policy = GaussianMLPPolicy(3, 2, (8,))
    obs = torch.randn(6, 3)
    p0 = policy.params()
    p1 = {k: v.detach() + 0.05 * torch.randn_like(v) for k, v in p0.items()}
    assert torch.allclose(policy.kl(obs, p0, p0), torch.zeros(6), atol=1e-7)
    m0, s0 = policy(obs, p0)
    m1, s1 = policy(obs, p1)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m0, s0.exp()), torch.distributions.Normal(m1, s1.exp())
    ).sum(-1)
    torch.testing.assert_close(policy.kl(obs, p0, p1), ref)


def test_per_task_params_support_second_order_gradients():
    torch.manual_seed(4)
    policy = GaussianMLPPolicy(3, 2, (8,))
    params = policy.expand_params(2)
    obs, act = torch.randn(2, 5, 3), torch.randn(2, 5, 2)
    loss = -policy.log_prob(obs, act, params).mean()
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    adapted = {k: v - 0.1 * g for (k, v), g in zip(params.items(), grads)}
    outer = policy.log_prob(obs, act, adapted).mean()
    outer_grads = torch.autograd.grad(outer, list(policy.parameters()))
    assert all(torch.isfinite(g).all() for g in outer_grads)


def test_sampling_is_reproducible_with_a_generator():
    policy = GaussianMLPPolicy(3, 2, (8,))
    obs = torch.randn(4, 3)
    a = policy.sample(obs, generator=torch.Generator().manual_seed(5))
    b = policy.sample(obs, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    torch.testing.assert_close(policy.sample(obs, deterministic=True), policy(obs)[0])


def test_bad_shapes_and_names_are_clear_errors():
    policy = GaussianMLPPolicy(3, 2, (8,))
    with pytest.raises(ValueError, match="size 3"):
        policy(torch.randn(4, 5))
    with pytest.raises(ValueError, match="2 tasks"):
        policy(torch.randn(3, 4, 3), policy.expand_params(2))
    with pytest.raises(AdaptrlError, match="unknown activation 'rleu'.*relu"):
        GaussianMLPPolicy(3, 2, activation="rleu")
    with pytest.raises(AdaptrlError, match="positive"):
        GaussianMLPPolicy(3, 2, hidden_sizes=(0,))


@pytest.mark.parametrize("activation", ["relu", "tanh", "elu"])
def test_fisher_product_equals_kl_hessian_vector_product(activation):
    torch.manual_seed(6)
    policy = GaussianMLPPolicy(3, 2, (7, 5), activation, init_log_std=-0.4).double()
    T = 3
    params = _perturbed_task_params(policy, T, scale=0.3)
    params = {k: v.double() for k, v in params.items()}
    obs = torch.randn(T, 4, 6, 3, dtype=torch.float64)
    weights = torch.rand(T, 4, 6, dtype=torch.float64)
    at = {k: v.clone().requires_grad_() for k, v in params.items()}
    kl = (policy.kl(obs, params, at) * weights).sum()
    grads = torch.autograd.grad(kl, list(at.values()), create_graph=True)
    fisher = policy.fisher_product(obs, params, weights)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        u = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items()}
        dot = sum((g * u[k]).sum() for g, k in zip(grads, at))
        direct = torch.autograd.grad(dot, list(at.values()), retain_graph=True)
        fast = fisher(u)
        for (k, _), d in zip(at.items(), direct):
            torch.testing.assert_close(fast[k], d, rtol=1e-9, atol=1e-11)

