"""The TRPO update: natural-gradient direction by conjugate gradient, then a guarded line search.

Schulman et al. 2015, "Trust Region Policy Optimization", §6 and Appendix C. With L(θ) the
surrogate loss to minimise, g = ∇L(θ_old) and F the Hessian of the mean KL D̄_KL(θ_old, θ) at
θ = θ_old (the Fisher information matrix):

1. Solve F s = −g approximately by conjugate gradient, using only products F v.
2. Scale s so the quadratic model of the KL equals the trust region δ = ``max_kl``:
   ½ (βs)ᵀF(βs) = δ  ⇒  β = √(2δ / sᵀFs), full step Δ = βs.
3. Backtracking line search: θ_k = θ_old + ρᵏΔ for k = 0, 1, ..., K−1; accept the first θ_k
   with L(θ_k) < L(θ_old) and D̄_KL(θ_old, θ_k) ≤ δ (both finite).

Every guard refuses rather than guesses: a non-finite loss or gradient, non-positive or
non-finite curvature sᵀFs, or a line search in which every step fails leaves the parameters
bit-for-bit unchanged, and ``info["refused"]`` says why. NaN never reaches the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..options import option
from .advantages import masked_task_mean, step_weights
from .cg import (
    STOP_NON_FINITE_CURVATURE,
    MatVec,
    conjugate_gradient,
    flat_dict,
    flat_grad,
    make_hvp,
    unflat_dict,
    unflatten_like,
)

Tensor = torch.Tensor

# refusal reasons (info["refused"]); stable strings, compared by tests and counted in logs
REFUSED_NON_FINITE_LOSS = "non-finite loss"
REFUSED_NON_FINITE_GRADIENT = "non-finite gradient"
REFUSED_ZERO_GRADIENT = "zero gradient"
REFUSED_NON_POSITIVE_CURVATURE = "non-positive curvature sᵀHs"
REFUSED_NON_FINITE_CURVATURE = "non-finite curvature sᵀHs"
REFUSED_NON_FINITE_STEP = "non-finite step"
REFUSED_LINE_SEARCH = "line search failed"


@dataclass
class TRPOOptions:
    """The settings of a TRPO step, declared once for every config that takes TRPO steps
    (`PGConfig`, `AdMRLConfig`, `OracleTrainingConfig` inherit these fields); their ranges are
    checked by the inheriting config's ``validate()`` (`adaptrl.options.check_ranges`)."""

    max_kl: float = option(0.01, "TRPO trust region δ (mean KL)", gt=0, le=10)
    cg_iters: int = option(10, "conjugate-gradient iterations of each TRPO step", ge=1, le=10**4)
    cg_damping: float = option(1e-5, "damping added to the Fisher-vector product", ge=0, le=1e6)
    ls_backtrack_ratio: float = option(0.8, "line-search shrink factor", gt=0, lt=1)
    ls_max_steps: int = option(15, "line-search trials before the step is refused", ge=1, le=1000)

    def trpo_kwargs(self) -> dict:
        """The keyword arguments of `trpo_step` (and of ``per_task_trpo_step``) that these
        options set: ``max_kl``, ``cg_iters``, ``cg_damping``, ``backtrack_ratio``,
        ``max_backtracks``."""
        return {"max_kl": self.max_kl, "cg_iters": self.cg_iters, "cg_damping": self.cg_damping,
                "backtrack_ratio": self.ls_backtrack_ratio, "max_backtracks": self.ls_max_steps}


# ── step 1–2: the natural-gradient direction and its length ───────────────────────────────────
def trpo_search_direction(grad: Tensor, fvp: MatVec, max_kl: float = 0.01, cg_iters: int = 10,
                          cg_damping: float = 1e-5,
                          cg_residual_tol: float = 1e-10) -> tuple[Tensor | None, dict]:
    """The full TRPO step Δ = βs with (F + λI) s = −g and β = √(2δ / sᵀ(F + λI)s).

    Args:
        grad: g = ∇L ``[P]`` (detached).
        fvp: ``v [P] -> F v [P]``, the undamped Fisher (KL-Hessian) product.
        max_kl: δ, the trust-region radius in nats.
        cg_iters, cg_residual_tol: conjugate-gradient budget (see `conjugate_gradient`).
        cg_damping: λ, absolute: the solver and the step length use F + λI.

    Returns:
        ``(full_step [P] or None, info)``; None when refused, with ``info["refused"]`` the reason.
        Info keys: ``grad_norm``, ``cg_iterations``, ``cg_residual``, ``cg_curvature_ok``,
        ``shs`` (sᵀ(F + λI)s), ``step_norm`` (‖Δ‖), ``expected_improvement`` (−gᵀΔ, the
        first-order predicted decrease of L) and ``refused``.
    """
    grad = grad.detach()
    info = {"grad_norm": float(torch.linalg.vector_norm(grad)), "cg_iterations": 0,
            "cg_residual": math.nan, "cg_curvature_ok": True, "shs": math.nan,
            "step_norm": 0.0, "expected_improvement": 0.0, "refused": None}
    if not torch.isfinite(grad).all():
        info["refused"] = REFUSED_NON_FINITE_GRADIENT
        return None, info
    if info["grad_norm"] == 0.0:
        info["refused"] = REFUSED_ZERO_GRADIENT
        return None, info

    def damped_fvp(v: Tensor) -> Tensor:
        return fvp(v) + cg_damping * v

    # CG stops (keeping its last good iterate) if it meets non-positive curvature; a partial
    # solution still has sᵀFs > 0 and is a descent direction, and the line search checks it.
    s, cg_info = conjugate_gradient(damped_fvp, -grad, cg_iters, cg_residual_tol)
    info.update(cg_iterations=cg_info["iterations"], cg_residual=cg_info["residual_norm"],
                cg_curvature_ok=cg_info["curvature_ok"])
    # sᵀ(F + λI)s from the products CG already made (one Fisher product fewer than computing
    # it afresh; equal up to rounding, see `conjugate_gradient`)
    shs = cg_info["xAx"]
    info["shs"] = float(shs)
    if cg_info["iterations"] == 0 and cg_info["stop_reason"] == STOP_NON_FINITE_CURVATURE:
        info["refused"] = REFUSED_NON_FINITE_CURVATURE  # s = 0, but the cause is a bad product
        return None, info
    if not torch.isfinite(shs):
        info["refused"] = REFUSED_NON_FINITE_CURVATURE
        return None, info
    if shs <= 0:  # never take the square root of a quantity that can be negative
        info["refused"] = REFUSED_NON_POSITIVE_CURVATURE
        return None, info
    beta = torch.sqrt(2.0 * max_kl / shs)  # ½ β² sᵀFs = δ  (Appendix C)
    full_step = beta * s
    if not torch.isfinite(full_step).all():  # e.g. sᵀFs so small that β overflows
        info["refused"] = REFUSED_NON_FINITE_STEP
        return None, info
    info["step_norm"] = float(torch.linalg.vector_norm(full_step))
    info["expected_improvement"] = float(-torch.dot(grad, full_step))
    return full_step, info


# ── step 3: backtracking line search ──────────────────────────────────────────────────────────
def backtracking_line_search(params: Sequence[Tensor], full_step: Tensor,
                             loss_fn: Callable[[], Tensor], kl_fn: Callable[[], Tensor],
                             loss_before: float, max_kl: float = 0.01,
                             backtrack_ratio: float = 0.8, max_backtracks: int = 15) -> dict:
    """Try θ_old + ρᵏΔ for k = 0..K−1 in place; keep the first that improves within the region.

    A candidate is accepted when ``loss_fn() < loss_before`` and ``kl_fn() ≤ max_kl``, both
    finite. If none is, the parameters are restored to the exact old values.

    ``loss_fn`` and ``kl_fn`` are called with autograd enabled, because a MAML meta-loss
    differentiates its inner adaptation step; their results are only read as floats.

    Args:
        params: leaf tensors updated in place, in the order of ``full_step``.
        full_step: Δ ``[P]``.
        loss_before: L(θ_old).

    Returns:
        info with ``accepted``, ``loss_after``, ``kl``, ``step_fraction`` (ρᵏ, 0 when
        refused), ``backtracks`` (k, or K when every step failed) and ``refused``.
    """
    old_values = [p.detach().clone() for p in params]
    steps = unflatten_like(full_step.detach(), params)
    for k in range(max_backtracks):
        fraction = backtrack_ratio ** k
        with torch.no_grad():
            for p, old, step in zip(params, old_values, steps):
                p.copy_(old + fraction * step)
        loss_new = float(loss_fn().detach())
        kl_new = float(kl_fn().detach())
        if math.isfinite(loss_new) and math.isfinite(kl_new) and loss_new < loss_before \
                and kl_new <= max_kl:
            return {"accepted": True, "loss_after": loss_new, "kl": kl_new,
                    "step_fraction": fraction, "backtracks": k, "refused": None}
    with torch.no_grad():
        for p, old in zip(params, old_values):
            p.copy_(old)
    return {"accepted": False, "loss_after": loss_before, "kl": 0.0, "step_fraction": 0.0,
            "backtracks": max_backtracks, "refused": REFUSED_LINE_SEARCH}


# ── the whole update ──────────────────────────────────────────────────────────────────────────
def trpo_step(params: Sequence[Tensor] | Mapping[str, Tensor], loss_fn: Callable[[], Tensor],
              kl_fn: Callable[[], Tensor], max_kl: float = 0.01, cg_iters: int = 10,
              cg_damping: float = 1e-5, backtrack_ratio: float = 0.8, max_backtracks: int = 15,
              fvp: MatVec | None = None, cg_residual_tol: float = 1e-10,
              gradient: tuple[float, Tensor] | None = None) -> dict:
    """One TRPO update of ``params`` in place (Schulman et al. 2015, Appendix C).

    Args:
        params: leaf tensors with ``requires_grad`` (a list, or a dict such as
            ``policy.params()``, in which case its values in insertion order). Any shapes,
            including a leading task dimension.
        loss_fn: ``() -> scalar`` surrogate loss L(θ) to MINIMISE at the current ``params``
            (e.g. −mean(π_θ(a|s)/π_old(a|s) · Â)), differentiable in ``params``.
        kl_fn: ``() -> scalar`` mean KL(π_old ‖ π_θ) at the current ``params``; zero, with zero
            gradient, at the start. Must be twice differentiable unless ``fvp`` is given.
        max_kl: δ, the trust-region radius in nats.
        cg_iters: conjugate-gradient iterations for F s = −g.
        cg_damping: λ, ABSOLUTE damping: CG solves (F + λI) s = −g and β uses sᵀ(F + λI)s.
            It is added to ``fvp`` as well, so ``fvp`` should return the undamped F v.
        backtrack_ratio: ρ in (0, 1), the step shrink factor.
        max_backtracks: K ≥ 1, the number of candidate steps ρ⁰Δ, ..., ρᴷ⁻¹Δ.
        fvp: optional ``v [P] -> F v [P]`` over the flattened ``params``; by default F v is a
            Hessian-vector product of ``kl_fn`` (one double-backward per CG iteration).
        cg_residual_tol: CG stops once ‖r‖² falls below it.
        gradient: optional ``(L(θ_old), ∇L(θ_old) [P])`` computed by the caller; then
            ``loss_fn`` is only called by the line search, and its result is read as a value.

    Returns:
        A dict of metrics (floats, ints, bools, and ``refused``: None or a reason string):
        ``loss_before``, ``loss_after``, ``kl``, ``step_fraction``, ``backtracks``,
        ``cg_iterations``, ``cg_residual``, ``cg_curvature_ok``, ``shs``, ``grad_norm``,
        ``step_norm``, ``expected_improvement``, ``refused``, ``accepted``. When refused the
        parameters are bit-for-bit what they were, ``loss_after == loss_before`` and ``kl == 0``.
    """
    params = list(params.values()) if isinstance(params, Mapping) else list(params)
    _check_arguments(params, max_kl, backtrack_ratio, max_backtracks)
    info = {"loss_before": math.nan, "loss_after": math.nan, "kl": 0.0, "step_fraction": 0.0,
            "backtracks": 0, "cg_iterations": 0, "cg_residual": math.nan,
            "cg_curvature_ok": True, "shs": math.nan, "grad_norm": math.nan, "step_norm": 0.0,
            "expected_improvement": 0.0, "refused": None, "accepted": False}

    # ── the gradient of the surrogate ──
    if gradient is None:
        loss = loss_fn()
        loss_before = float(loss.detach())
    else:
        loss_before, grad = float(gradient[0]), gradient[1].detach()
        if grad.shape != (sum(p.numel() for p in params),):
            raise ValueError(f"gradient has shape {tuple(grad.shape)}, the parameters have "
                             f"{sum(p.numel() for p in params)} entries")
    info.update(loss_before=loss_before, loss_after=loss_before)
    if not math.isfinite(loss_before):
        info["refused"] = REFUSED_NON_FINITE_LOSS
        return info
    if gradient is None:
        grad = flat_grad(loss, params).detach()

    # ── the natural-gradient direction, scaled to the trust region ──
    if fvp is None:
        fvp = make_hvp(kl_fn, params)
    full_step, direction_info = trpo_search_direction(grad, fvp, max_kl, cg_iters, cg_damping,
                                                      cg_residual_tol)
    info.update(direction_info)
    if full_step is None:
        return info
    del fvp  # frees the KL double-backward graph before the line search moves θ

    # ── backtracking line search ──
    info.update(backtracking_line_search(params, full_step, loss_fn, kl_fn, loss_before, max_kl,
                                         backtrack_ratio, max_backtracks))
    return info


# ── per-task TRPO: T independent policies under one trust region ─────────────────────────────
def task_fisher(policy, obs: Tensor, params, mask: Tensor):
    """The Fisher product of each task's policy over its valid steps (the Hessian of its mean
    KL), by hand for policies that have one (``policy.fisher_product``, the Gaussian MLP);
    None for others (callers then differentiate the KL twice by autograd)."""
    if not hasattr(policy, "fisher_product"):
        return None
    return policy.fisher_product(obs, params, step_weights(mask))


def per_task_trpo_step(policy, theta, episodes, advantages: Tensor, inputs=None, *,
                       max_kl: float, cg_iters: int, cg_damping: float, backtrack_ratio: float,
                       max_backtracks: int) -> dict:
    """One TRPO step of per-task parameters ``theta`` (leaves ``[T, ...]``, updated in place)
    on each task's own episodes ``[T, N, H]``: surrogate and KL are the mean over tasks of the
    per-task means, so the Fisher matrix is block-diagonal and each task's direction is its
    own natural gradient under one shared trust region. Returns `trpo_step`'s info.

    ``policy``: any network with ``log_prob(inputs, actions, params)`` and ``kl(inputs, old,
    new)`` over per-task parameter dicts; ``inputs``: what it reads (default: the episodes'
    observations). The Fisher product is the hand-written one when the policy has it.
    """
    inputs = episodes.obs if inputs is None else inputs
    actions, mask = episodes.actions, episodes.mask
    old = {k: v.detach().clone() for k, v in theta.items()}
    with torch.no_grad():
        old_logp = policy.log_prob(inputs, actions, old)

    def surrogate():
        ratio = torch.exp(policy.log_prob(inputs, actions, theta) - old_logp)
        return -masked_task_mean(ratio * advantages, mask).mean()

    def mean_kl():
        return masked_task_mean(policy.kl(inputs, old, theta), mask).mean()

    fisher = task_fisher(policy, inputs, old, mask)
    fvp = None
    if fisher is not None:
        T = episodes.num_tasks

        def fvp(v):
            return flat_dict(fisher(unflat_dict(v, old))) / T

    return trpo_step(theta, surrogate, mean_kl, max_kl=max_kl, cg_iters=cg_iters,
                     cg_damping=cg_damping, backtrack_ratio=backtrack_ratio,
                     max_backtracks=max_backtracks, fvp=fvp)


def _check_arguments(params: list[Tensor], max_kl: float, backtrack_ratio: float,
                     max_backtracks: int) -> None:
    if not params:
        raise ValueError("trpo_step needs at least one parameter tensor")
    for i, p in enumerate(params):
        if not (p.is_leaf and p.requires_grad):
            raise ValueError(
                f"trpo_step updates parameters in place, so each must be a leaf tensor with "
                f"requires_grad=True; parameter {i} (shape {tuple(p.shape)}) is not. Pass the "
                f"module's own parameters (or detached copies with .requires_grad_()), not "
                f"views or results of operations on them."
            )
    if not max_kl > 0:
        raise ValueError(f"max_kl must be > 0, got {max_kl}")
    if not 0 < backtrack_ratio < 1:
        raise ValueError(f"backtrack_ratio must be in (0, 1), got {backtrack_ratio}")
    if max_backtracks < 1:
        raise ValueError(f"max_backtracks must be ≥ 1, got {max_backtracks}")


__all__ = [
    "REFUSED_LINE_SEARCH", "REFUSED_NON_FINITE_CURVATURE", "REFUSED_NON_FINITE_GRADIENT",
    "REFUSED_NON_FINITE_LOSS", "REFUSED_NON_FINITE_STEP", "REFUSED_NON_POSITIVE_CURVATURE",
    "REFUSED_ZERO_GRADIENT", "TRPOOptions", "backtracking_line_search", "per_task_trpo_step",
    "task_fisher", "trpo_search_direction", "trpo_step",
]
