"""Implicit differentiation through an inner optimisation: the task gradient of AdMRL
(Lin et al. 2020, Eqs. 2–7), generic over callables so that each estimator is tested alone.

L(ψ) = η*(θ*, ψ) − η*(θ̂(ψ), ψ) where θ̂(ψ) maximises the (model-based) return η̂(θ, ψ). By the
implicit function theorem, ∂θ̂/∂ψᵀ = −A⁻¹B with A = ∂²η̂/∂θ∂θᵀ and B = ∂²η̂/∂θ∂ψᵀ (Eq. 5), so

    ∂L/∂ψ = ∂η*/∂ψ|θ* − ( ∂θ̂ᵀ/∂ψ · ∂η*/∂θ|θ̂ + ∂η*/∂ψ|θ̂ )            (Eq. 2, Algorithm 1)

A is symmetric, so ∂θ̂ᵀ/∂ψ · g = −Bᵀ(A⁻¹g): one linear solve per step whatever the dimension of
ψ. A sampled A is indefinite, so the solve is CG on the normal equations
(`conjugate_gradient_normal`), A never formed.
"""

from __future__ import annotations

import torch

from .cg import conjugate_gradient_normal, flat_grad


def reward_gradient(reward_fn, obs, actions, next_obs, mask, psi, gamma: float) -> torch.Tensor:
    """Eq. (3): ∂η/∂ψ = E_τ[Σ_t γᵗ ∂r_ψ(s_t, a_t, s_t+1)/∂ψ] by autograd through r_ψ.

    reward_fn: ``(obs, act, next_obs, psi) -> rewards``, differentiable in ψ (a task family's
    ``reward``).
    obs, next_obs: ``[T, N, H, obs_dim]``; actions ``[T, N, H, act_dim]``; mask ``[T, N, H]``;
    psi: ``[T, k]``. Returns ``[T, k]`` (float64), the mean over the N episodes.
    """
    psi = torch.as_tensor(psi, dtype=torch.float64).detach().requires_grad_()
    with torch.enable_grad():
        rewards = reward_fn(obs, actions, next_obs, psi[:, None, None, :])
        H = rewards.shape[-1]
        weights = gamma ** torch.arange(H, dtype=torch.float64) * mask.to(torch.float64)
        eta = (rewards.to(torch.float64) * weights).sum(-1).mean(-1).sum()
        (grad,) = torch.autograd.grad(eta, psi)
    return grad


def policy_hessian_product(log_prob_fn, returns: torch.Tensor, params: dict):
    """The Eq. (7) estimator of A = ∂²η/∂θ∂θᵀ as a matvec, by Appendix B's parameter copies.

    With three copies θ₁, θ₂, θ₃ of θ and (Eq. 20)

        η_h = E_τ[(log π_θ₁(τ)·log π_θ₂(τ) + log π_θ₃(τ)) R(τ)],

    ∂/∂θ₁(∂η_h/∂θ₂ · x) = E[∇log π (∇log π · x) R] (Eq. 21) and ∂/∂θ₃(∂η_h/∂θ₃ · x) =
    E[∇²log π x R] (Eq. 22), so A x is their sum, one backward pass per product.

    log_prob_fn: ``params -> log π_θ(τ) [T, N]`` (per-trajectory sums of log π(a_t|s_t)).
    returns: R(τ) ``[T, N]``; any baseline constant in θ may be subtracted (unbiased, since
    E[∇log π ∇log πᵀ + ∇²log π] = 0). The expectation is the mean over N; tasks are summed
    (with per-task θ the matrix is block-diagonal). Returns ``x [P] -> A x [P]`` over
    ``flat_dict(params)``.
    """
    copies = [{k: v.detach().clone().requires_grad_() for k, v in params.items()}
              for _ in range(3)]
    returns = returns.detach()
    with torch.enable_grad():
        lp1, lp2, lp3 = (log_prob_fn(c) for c in copies)
        eta_h = ((lp1 * lp2 + lp3) * returns).mean(-1).sum()  # Eq. (20)
        p1, p2, p3 = (list(c.values()) for c in copies)
        g2 = flat_grad(eta_h, p2, create_graph=True, retain_graph=True)
        g3 = flat_grad(eta_h, p3, create_graph=True, retain_graph=True)

    def matvec(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to(g2.dtype)
        with torch.enable_grad():
            h = torch.dot(g2, x) + torch.dot(g3, x)
            both = flat_grad(h, p1 + p3, retain_graph=True)  # [∂/∂θ₁ (Eq. 21), ∂/∂θ₃ (Eq. 22)]
        return both[:len(g2)] + both[len(g2):]

    return matvec


def mixed_derivative_vjp(surrogate_fn, params: dict, psi: torch.Tensor):
    """Products with B = ∂²η/∂θ∂ψᵀ (Eq. 6): ``y [P] -> Bᵀ y [T, k]``.

    surrogate_fn: ``(params, psi) -> scalar`` whose θ-gradient is the policy gradient, i.e.
    E[Σ_t γᵗ log π_θ(a_t|s_t) A_ψ(s_t, a_t)] with the advantages differentiable in ψ; then
    ∂/∂ψ (∇_θ S · y) = Bᵀ y.
    """
    leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    psi = psi.detach().clone().requires_grad_()
    with torch.enable_grad():
        grad_theta = flat_grad(surrogate_fn(leaves, psi), list(leaves.values()),
                               create_graph=True, retain_graph=True)

    def vjp(y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            (out,) = torch.autograd.grad(torch.dot(grad_theta, y.detach().to(grad_theta.dtype)),
                                         psi, retain_graph=True, allow_unused=True)
        return torch.zeros_like(psi) if out is None else out

    return vjp


def implicit_task_gradient(d_eta_dpsi_star, d_eta_dpsi_hat, d_eta_dtheta_hat, hessian_matvec,
                           mixed_vjp, cg_iters: int = 200, damping: float = 0.0,
                           residual_tol: float = 1e-12):
    """Eq. (2): ∂L/∂ψ = ∂η*/∂ψ|θ* − (∂θ̂ᵀ/∂ψ · ∂η*/∂θ|θ̂ + ∂η*/∂ψ|θ̂).

    With ∂θ̂/∂ψᵀ = −A⁻¹B (Eq. 5) and A symmetric, ∂θ̂ᵀ/∂ψ · g = −Bᵀy where A y = g; y solves
    the normal equations (AᵀA + λI) y = Aᵀg by CGLS, so an indefinite A is fine.

    Args:
        d_eta_dpsi_star, d_eta_dpsi_hat: ``[k]`` (Eq. 3 at θ* and θ̂).
        d_eta_dtheta_hat: g ``[P]`` (Eq. 4).
        hessian_matvec: ``x [P] -> A x [P]`` (Eq. 7).
        mixed_vjp: ``y [P] -> Bᵀ y [k]`` (Eq. 6).

    Returns ``(grad [k], info)``; info holds the CG diagnostics and the three terms' norms.
    """
    g = d_eta_dtheta_hat.detach()
    y, cg_info = conjugate_gradient_normal(hessian_matvec, hessian_matvec, g, iters=cg_iters,
                                           residual_tol=residual_tol, damping=damping)
    chain = -mixed_vjp(y).reshape(d_eta_dpsi_hat.shape)  # ∂θ̂ᵀ/∂ψ · ∂η*/∂θ|θ̂
    grad = d_eta_dpsi_star - (chain + d_eta_dpsi_hat)
    info = {"cg_iterations": cg_info["iterations"], "cg_residual": cg_info["residual_norm"],
            "cg_normal_residual": cg_info["normal_residual_norm"],
            "cg_ok": cg_info["curvature_ok"],
            "norm_star": float(torch.linalg.vector_norm(d_eta_dpsi_star)),
            "norm_hat": float(torch.linalg.vector_norm(d_eta_dpsi_hat)),
            "norm_chain": float(torch.linalg.vector_norm(chain)),
            "norm_policy_grad": float(torch.linalg.vector_norm(g))}
    return grad, info
