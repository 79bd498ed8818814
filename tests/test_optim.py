"""Conjugate gradient, Hessian-vector products and the guarded TRPO step."""

import math

import pytest
import torch

from adaptrl.nets import GaussianMLPPolicy
from adaptrl.optim import (
    REFUSED_LINE_SEARCH,
    REFUSED_NON_FINITE_GRADIENT,
    REFUSED_NON_POSITIVE_CURVATURE,
    conjugate_gradient,
    conjugate_gradient_normal,
    flat_dict,
    flat_grad,
    flatten,
    hessian_vector_product,
    make_hvp,
    trpo_search_direction,
    trpo_step,
    unflat_dict,
    unflatten_like,
)

F64 = torch.float64


def _random_orthogonal(n, gen):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    return q


def _relative_error(x, x_true):
    return float(torch.linalg.vector_norm(x - x_true) / torch.linalg.vector_norm(x_true))


# ── conjugate gradient ────────────────────────────────────────────────────────────────────────
def test_cg_solves_random_spd_system():
    gen = torch.Generator().manual_seed(0)
    n = 20
    q = _random_orthogonal(n, gen)
    eigenvalues = torch.linspace(1.0, 50.0, n, dtype=F64)
    A = q @ torch.diag(eigenvalues) @ q.T
    x_true = torch.randn(n, generator=gen, dtype=F64)
    x, info = conjugate_gradient(lambda v: A @ v, A @ x_true, iters=60, residual_tol=1e-24)
    assert _relative_error(x, x_true) < 1e-6
    assert info["curvature_ok"] and info["converged"]
    assert 0 < info["iterations"] <= 60
    assert info["residual_norm"] < 1e-10


@pytest.mark.parametrize("iters", [1, 3, 8])
def test_cg_reports_the_curvature_of_its_solution_without_another_product(iters):
    gen = torch.Generator().manual_seed(4)
    n = 30
    q = _random_orthogonal(n, gen)
    A = q @ torch.diag(torch.logspace(0, 3, n, dtype=F64)) @ q.T  # ill-conditioned: CG stops early
    b = torch.randn(n, generator=gen, dtype=F64)
    calls = []
    x, info = conjugate_gradient(lambda v: calls.append(1) or A @ v, b, iters=iters)
    assert len(calls) == iters
    assert float(info["xAx"]) == pytest.approx(float(x @ A @ x), rel=1e-10)
    # in float32, as TRPO runs, it still agrees to rounding
    x32, info32 = conjugate_gradient(lambda v: A.float() @ v, b.float(), iters=iters)
    assert float(info32["xAx"]) == pytest.approx(float(x32 @ A.float() @ x32), rel=1e-4)


def test_cg_reports_non_positive_curvature_instead_of_dividing_by_zero():
    gen = torch.Generator().manual_seed(1)
    n = 20
    q = _random_orthogonal(n, gen)
    eigenvalues = torch.cat([torch.linspace(1.0, 5.0, n // 2), -torch.linspace(1.0, 5.0, n // 2)])
    A = q @ torch.diag(eigenvalues.to(F64)) @ q.T
    b = torch.randn(n, generator=gen, dtype=F64)
    x, info = conjugate_gradient(lambda v: A @ v, b, iters=100)
    assert not info["curvature_ok"]
    assert info["stop_reason"] == "non-positive curvature"
    assert torch.isfinite(x).all()

    # zero curvature at once: x stays 0, no 0/0
    x, info = conjugate_gradient(torch.zeros_like, b, iters=10)
    assert not info["curvature_ok"] and info["iterations"] == 0
    assert torch.equal(x, torch.zeros_like(b))

    # a matvec that returns NaN is caught as well
    x, info = conjugate_gradient(lambda v: torch.full_like(v, math.nan), b, iters=10)
    assert info["stop_reason"] == "non-finite curvature" and torch.isfinite(x).all()


@pytest.mark.parametrize("symmetric", [False, True])
def test_cg_normal_equations_solve_indefinite_system(symmetric):
    gen = torch.Generator().manual_seed(2)
    n = 20
    singular_values = torch.linspace(1.0, 2.0, n, dtype=F64)
    u = _random_orthogonal(n, gen)
    if symmetric:  # symmetric indefinite: eigenvalues ±[1, 2], and rmatvec is matvec itself
        signs = torch.tensor([1.0, -1.0], dtype=F64).repeat(n // 2)
        A = u @ torch.diag(signs * singular_values) @ u.T
    else:
        A = u @ torch.diag(singular_values) @ _random_orthogonal(n, gen).T
    symmetric_part_eigenvalues = torch.linalg.eigvalsh(0.5 * (A + A.T))
    assert symmetric_part_eigenvalues.min() < 0 < symmetric_part_eigenvalues.max()
    x_true = torch.randn(n, generator=gen, dtype=F64)
    matvec = lambda v: A @ v  # noqa: E731
    rmatvec = matvec if symmetric else (lambda u_: A.T @ u_)
    x, info = conjugate_gradient_normal(matvec, rmatvec, A @ x_true, iters=60,
                                        residual_tol=1e-24)
    assert _relative_error(x, x_true) < 1e-6
    assert info["curvature_ok"] and info["residual_norm"] < 1e-6


# ── flat vectors and Hessian-vector products ──────────────────────────────────────────────────
def test_flatten_round_trips_lists_and_per_task_dicts():
    gen = torch.Generator().manual_seed(3)
    params = {"w": torch.randn(4, 3, 2, generator=gen), "b": torch.randn(4, 2, generator=gen)}
    vec = flat_dict(params)
    assert vec.shape == (4 * 3 * 2 + 4 * 2,)
    back = unflat_dict(vec, params)
    assert list(back) == ["w", "b"]
    for key in params:
        assert torch.equal(back[key], params[key])
    assert all(torch.equal(a, b) for a, b in zip(unflatten_like(flatten(params.values()),
                                                                params.values()), params.values()))
    with pytest.raises(ValueError, match="cannot unflatten"):
        unflatten_like(vec[:-1], params.values())


def _tiny_mlp_problem():
    """A 3→5→2 tanh MLP (32 parameters) with a squared-error loss, float64."""
    gen = torch.Generator().manual_seed(4)
    params = [torch.randn(5, 3, generator=gen, dtype=F64), torch.randn(5, generator=gen, dtype=F64),
              torch.randn(2, 5, generator=gen, dtype=F64), torch.randn(2, generator=gen, dtype=F64)]
    x = torch.randn(16, 3, generator=gen, dtype=F64)
    y = torch.randn(16, 2, generator=gen, dtype=F64)

    def loss(w1, b1, w2, b2):
        return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()

    return params, loss, gen


def test_hvp_matches_explicit_hessian_of_tiny_mlp():
    params, loss, gen = _tiny_mlp_problem()
    flat0 = flatten(params)
    H = torch.autograd.functional.hessian(lambda f: loss(*unflatten_like(f, params)), flat0,
                                         vectorize=True)
    assert H.shape == (32, 32)
    leaves = [p.clone().requires_grad_() for p in params]
    grad = flat_grad(loss(*leaves), leaves, create_graph=True)
    hvp = make_hvp(lambda: loss(*leaves), leaves, damping=0.1)
    for _ in range(3):  # the same gradient graph serves repeated products
        v = torch.randn(32, generator=gen, dtype=F64)
        torch.testing.assert_close(hessian_vector_product(grad, leaves, v), H @ v)
        torch.testing.assert_close(hvp(v), H @ v + 0.1 * v)


# ── TRPO ──────────────────────────────────────────────────────────────────────────────────────
class _GaussianPolicyBatch:
    """A tiny Gaussian policy with a fixed synthetic batch (obs, actions, advantages)."""

    def __init__(self, seed=0, batch=256):
        torch.manual_seed(seed)
        self.policy = GaussianMLPPolicy(3, 2, (8,), "tanh").double()
        gen = torch.Generator().manual_seed(seed)
        self.obs = torch.randn(batch, 3, generator=gen, dtype=F64)
        self.old = {k: v.detach().clone() for k, v in self.policy.params().items()}
        self.actions = self.policy.sample(self.obs, self.old, gen)
        self.advantages = torch.randn(batch, generator=gen, dtype=F64)
        self.logp_old = self.policy.log_prob(self.obs, self.actions, self.old).detach()

    def params(self):
        return self.policy.params()

    def surrogate(self, params=None):
        """−E[π_θ(a|s)/π_old(a|s) · Â], the loss TRPO minimises."""
        logp = self.policy.log_prob(self.obs, self.actions, params)
        return -(torch.exp(logp - self.logp_old) * self.advantages).mean()

    def kl(self, params=None):
        params = self.policy.params() if params is None else params
        return self.policy.kl(self.obs, self.old, params).mean()

    def kl_hessian(self):
        """The explicit Fisher matrix ∇²KL at θ_old ``[P, P]``."""
        return torch.autograd.functional.hessian(
            lambda flat: self.kl(unflat_dict(flat, self.old)), flat_dict(self.old), vectorize=True)

    def snapshot(self):
        return [p.detach().clone() for p in self.params().values()]

    def unchanged_since(self, snapshot):
        return all(torch.equal(a, b) for a, b in zip(snapshot, self.params().values()))


def test_trpo_step_stays_in_trust_region_and_decreases_surrogate():
    problem = _GaussianPolicyBatch()
    max_kl = 0.01
    info = trpo_step(problem.params(), problem.surrogate, problem.kl, max_kl=max_kl)
    assert info["accepted"] and info["refused"] is None
    with torch.no_grad():
        kl_after = float(problem.kl())
        surrogate_after = float(problem.surrogate())
    assert 0 < kl_after <= max_kl
    assert surrogate_after < info["loss_before"]
    assert surrogate_after == pytest.approx(info["loss_after"], abs=1e-12)
    assert kl_after == pytest.approx(info["kl"], abs=1e-12)
    assert 0 < info["step_fraction"] <= 1 and info["cg_iterations"] > 0
    for key in ("loss_before", "loss_after", "kl", "step_fraction", "backtracks",
                "cg_iterations", "cg_residual", "shs", "grad_norm", "refused", "accepted"):
        assert key in info


def test_trpo_full_step_fills_quadratic_trust_region():
    problem = _GaussianPolicyBatch()
    max_kl = 0.01
    params = list(problem.params().values())
    grad = flat_grad(problem.surrogate(), params)
    H = problem.kl_hessian()
    for damping in (0.0, 1e-3):
        full_step, info = trpo_search_direction(grad, lambda v: H @ v, max_kl=max_kl,
                                                cg_iters=10, cg_damping=damping)
        assert info["refused"] is None and info["shs"] > 0
        assert info["expected_improvement"] > 0
        # ½ ΔᵀFΔ = ½ β² sᵀFs = δ, where F carries the (absolute) damping λI
        F = H + damping * torch.eye(len(H), dtype=F64)
        assert 0.5 * float(full_step @ F @ full_step) == pytest.approx(max_kl, rel=1e-9)


def test_trpo_step_moves_by_step_fraction_of_the_full_step():
    problem = _GaussianPolicyBatch()
    params = list(problem.params().values())
    before = flatten(problem.snapshot())
    grad = flat_grad(problem.surrogate(), params)
    full_step, _ = trpo_search_direction(grad, make_hvp(problem.kl, params))
    info = trpo_step(params, problem.surrogate, problem.kl)
    moved = flatten(problem.snapshot()) - before
    torch.testing.assert_close(moved, info["step_fraction"] * full_step)


def test_supplied_fvp_gives_the_same_step_as_kl_hessian():
    default, supplied = _GaussianPolicyBatch(), _GaussianPolicyBatch()
    H = supplied.kl_hessian()
    info_default = trpo_step(default.params(), default.surrogate, default.kl)
    info_supplied = trpo_step(supplied.params(), supplied.surrogate, supplied.kl,
                              fvp=lambda v: H @ v)
    assert info_default["accepted"] and info_supplied["accepted"]
    torch.testing.assert_close(flatten(default.snapshot()), flatten(supplied.snapshot()))


def test_line_search_shrinks_a_step_that_overshoots_the_trust_region():
    problem = _GaussianPolicyBatch()
    H = problem.kl_hessian()
    # a Fisher product that underestimates curvature 4×: the full step is twice too long
    info = trpo_step(problem.params(), problem.surrogate, problem.kl, max_kl=0.01,
                     fvp=lambda v: 0.25 * (H @ v))
    assert info["accepted"] and info["backtracks"] > 0
    assert info["step_fraction"] == pytest.approx(0.8 ** info["backtracks"])
    with torch.no_grad():
        assert float(problem.kl()) <= 0.01


# ── TRPO guards: refuse, say why, leave the parameters bit-for-bit unchanged ──────────────────
def test_trpo_refuses_non_finite_gradient():
    problem = _GaussianPolicyBatch()
    before = problem.snapshot()
    theta0 = [p.clone() for p in before]

    def loss_with_nan_gradient():
        # √(u²) at u = 0 is finite (0), but its gradient is ∞ · 0 = NaN
        kink = sum(torch.sqrt(((p - p0) ** 2).sum())
                   for p, p0 in zip(problem.params().values(), theta0))
        return problem.surrogate() + kink

    info = trpo_step(problem.params(), loss_with_nan_gradient, problem.kl)
    assert math.isfinite(info["loss_before"])
    assert info["refused"] == REFUSED_NON_FINITE_GRADIENT and not info["accepted"]
    assert problem.unchanged_since(before)
    assert all(torch.isfinite(p).all() for p in problem.params().values())


def test_trpo_refuses_non_positive_curvature():
    problem = _GaussianPolicyBatch()
    before = problem.snapshot()
    theta0 = flatten(before)

    def concave_kl():
        return -((flat_dict(problem.params()) - theta0) ** 2).sum()

    info = trpo_step(problem.params(), problem.surrogate, concave_kl)
    assert info["refused"] == REFUSED_NON_POSITIVE_CURVATURE and not info["accepted"]
    assert not info["cg_curvature_ok"]
    assert problem.unchanged_since(before)


@pytest.mark.parametrize("failure", ["loss_worse_after_moving", "loss_nan_after_moving",
                                     "kl_too_large_after_moving"])
def test_trpo_refuses_when_line_search_fails(failure):
    problem = _GaussianPolicyBatch()
    before = problem.snapshot()

    def moved():
        return not problem.unchanged_since(before)

    def loss_fn():
        loss = problem.surrogate()
        if moved() and failure == "loss_worse_after_moving":
            return loss.detach() + 1.0
        if moved() and failure == "loss_nan_after_moving":
            return loss * math.nan
        return loss

    def kl_fn():
        kl = problem.kl()
        return kl + 1.0 if moved() and failure == "kl_too_large_after_moving" else kl

    info = trpo_step(problem.params(), loss_fn, kl_fn, max_backtracks=5)
    assert info["refused"] == REFUSED_LINE_SEARCH and not info["accepted"]
    assert info["backtracks"] == 5 and info["step_fraction"] == 0.0
    assert info["loss_after"] == info["loss_before"]
    assert problem.unchanged_since(before)


def test_trpo_rejects_parameters_it_cannot_update_in_place():
    problem = _GaussianPolicyBatch()
    views = list(problem.policy.expand_params(2).values())
    with pytest.raises(ValueError, match="leaf tensor"):
        trpo_step(views, problem.surrogate, problem.kl)
