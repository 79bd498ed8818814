"""Hand-written gradient and curvature products (adaptrl.nets.curvature) against autograd."""

import pytest
import torch

from adaptrl.nets import GaussianMLPPolicy
from adaptrl.nets.curvature import MLPTrace, kl_curvature, log_prob, neg_log_prob_curvature


def _setup(activation, hidden=(7, 5), T=3, seed=0):
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(3, 2, hidden, activation, init_log_std=-0.4).double()
    gen = torch.Generator().manual_seed(seed + 1)
    # distinct per-task parameters, so that a mix-up between tasks would show
    params = {k: (v.detach().unsqueeze(0) + 0.3 * torch.randn((T, *v.shape), generator=gen,
                                                              dtype=torch.float64))
              for k, v in policy.params().items()}
    obs = torch.randn(T, 4, 6, 3, generator=gen, dtype=torch.float64)
    actions = torch.randn(T, 4, 6, 2, generator=gen, dtype=torch.float64)
    weights = torch.randn(T, 4, 6, generator=gen, dtype=torch.float64)  # advantages: any sign
    weights[0, 1, 3:] = 0.0  # masked steps
    return policy, params, obs, actions, weights, gen


def _autograd_hvps(scalar, at, gen, count=3):
    grads = torch.autograd.grad(scalar, list(at.values()), create_graph=True)
    out = []
    for _ in range(count):
        u = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in at.items()}
        dot = sum((g * u[k]).sum() for g, k in zip(grads, at))
        out.append((u, dict(zip(at, torch.autograd.grad(dot, list(at.values()),
                                                        retain_graph=True)))))
    return grads, out


@pytest.mark.parametrize("activation, hidden", [("relu", (7, 5)), ("tanh", (7, 5)),
                                                ("elu", (7, 5)), ("tanh", (4, 6, 3)),
                                                ("tanh", ())])
def test_reinforce_loss_gradient_and_hessian_products_match_autograd(activation, hidden):
    policy, params, obs, actions, weights, gen = _setup(activation, hidden)
    at = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss = -(policy.log_prob(obs, actions, at) * weights).sum()
    grads, products = _autograd_hvps(loss, at, gen)
    curvature = neg_log_prob_curvature(MLPTrace(policy, obs, params), actions, weights)
    for (k, _), g in zip(at.items(), grads):
        torch.testing.assert_close(curvature.gradient()[k], g, rtol=1e-10, atol=1e-12)
    for u, direct in products:
        fast = curvature(u)
        for k in at:
            torch.testing.assert_close(fast[k], direct[k], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_kl_curvature_is_the_kl_hessian(activation):
    policy, params, obs, _, weights, gen = _setup(activation, hidden=(6,), seed=3)
    weights = weights.abs()
    at = {k: v.clone().requires_grad_() for k, v in params.items()}
    kl = (policy.kl(obs, params, at) * weights).sum()
    _, products = _autograd_hvps(kl, at, gen)
    fisher = kl_curvature(MLPTrace(policy, obs, params), weights)
    for u, direct in products:
        fast = fisher(u)
        for k in at:
            torch.testing.assert_close(fast[k], direct[k], rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="first derivative"):
        fisher.gradient()


def test_trace_mean_and_log_prob_match_the_policy():
    policy, params, obs, actions, _, _ = _setup("tanh")
    trace = MLPTrace(policy, obs, params)
    mean, _ = policy(obs, params)
    torch.testing.assert_close(trace.mean, mean.reshape(3, -1, 2))
    torch.testing.assert_close(log_prob(trace, actions), policy.log_prob(obs, actions, params)
                               .reshape(3, -1))
    with pytest.raises(ValueError, match="per-task"):
        MLPTrace(policy, obs[0], policy.params())
