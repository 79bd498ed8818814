"""Matrix-free linear algebra: conjugate gradient, flat parameter vectors, Hessian-vector products.

Everything here works on flat 1-D tensors ``[P]`` where P is the total number of parameter
entries. Parameters themselves stay as they are elsewhere in adaptrl (lists or dicts of tensors,
possibly with a leading task dimension ``[T, ...]``); `flatten` / `unflatten_like` and
`flat_dict` / `unflat_dict` move between the two views in a fixed order (list order, or the
dict's insertion order).

The solvers never divide by a quantity they have not checked: when the curvature pᵀAp along a
search direction is non-positive or non-finite they stop, keep the last good iterate and say so
in their ``info`` dict, instead of returning NaN or a step in a direction of negative curvature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch

Tensor = torch.Tensor
MatVec = Callable[[Tensor], Tensor]

# stop reasons reported by the solvers (info["stop_reason"])
STOP_CONVERGED = "converged"
STOP_MAX_ITERS = "max iterations"
STOP_NON_POSITIVE_CURVATURE = "non-positive curvature"
STOP_NON_FINITE_CURVATURE = "non-finite curvature"
STOP_NON_FINITE_RHS = "non-finite right-hand side"


# ── flat vectors ──────────────────────────────────────────────────────────────────────────────
def flatten(tensors: Iterable[Tensor]) -> Tensor:
    """Concatenate tensors of any shapes into one 1-D tensor ``[P]`` (P = Σ numel)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("flatten needs at least one tensor")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_like(vec: Tensor, tensors: Iterable[Tensor]) -> list[Tensor]:
    """Split ``vec [P]`` into views shaped like ``tensors`` (the inverse of `flatten`)."""
    tensors = list(tensors)
    sizes = [t.numel() for t in tensors]
    if vec.dim() != 1 or vec.numel() != sum(sizes):
        raise ValueError(f"cannot unflatten a vector of shape {tuple(vec.shape)} into tensors "
                         f"with {sum(sizes)} entries in all")
    return [chunk.view(t.shape) for chunk, t in zip(torch.split(vec, sizes), tensors)]


def flat_dict(params: Mapping[str, Tensor]) -> Tensor:
    """`flatten` of a parameter dict's values, in insertion order: ``[P]``."""
    return flatten(params.values())


def unflat_dict(vec: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A dict with the keys and shapes of ``like`` whose values are views into ``vec [P]``."""
    return dict(zip(like.keys(), unflatten_like(vec, like.values())))


def per_task_vectors(v: Tensor, like: Mapping[str, Tensor]) -> list[Tensor]:
    """A flat θ-space vector ``[P]`` of shared parameters as per-task views shaped like the
    per-task dict ``like`` (every value with a leading task dim T), in its order."""
    T = next(iter(like.values())).shape[0]
    shapes = [p.shape[1:] for p in like.values()]
    parts = torch.split(v, [s.numel() for s in shapes])
    return [p.reshape(s).unsqueeze(0).expand(T, *s) for p, s in zip(parts, shapes)]


def flat_grad(output: Tensor, params: Iterable[Tensor], create_graph: bool = False,
              retain_graph: bool | None = None) -> Tensor:
    """∇_θ output as one flat vector ``[P]``; parameters ``output`` does not use get zeros."""
    params = list(params)
    grads = torch.autograd.grad(output, params, create_graph=create_graph,
                                retain_graph=retain_graph, allow_unused=True)
    return flatten(torch.zeros_like(p) if g is None else g for g, p in zip(grads, params))


# ── Hessian-vector products ───────────────────────────────────────────────────────────────────
def hessian_vector_product(grad_flat: Tensor, params: Iterable[Tensor], v: Tensor,
                           damping: float = 0.0) -> Tensor:
    """(∇²f + damping·I) v by a second backward pass through a gradient.

    Args:
        grad_flat: ∇f ``[P]``, computed with ``create_graph=True`` w.r.t. ``params``
            (e.g. ``flat_grad(f, params, create_graph=True)``).
        params: the tensors the gradient was taken with respect to, in the same order.
        v: the vector ``[P]``; it is treated as a constant.
        damping: λ ≥ 0 of the Tikhonov term λv (absolute, not scaled by the Hessian).

    Returns:
        ``[P]``: H v + λ v, where H v = ∇_θ (∇f · v). The graph of ``grad_flat`` is retained,
        so the same gradient serves any number of products.
    """
    params = list(params)
    v = v.detach()
    if not grad_flat.requires_grad:  # the gradient does not depend on θ: H = 0
        hv = torch.zeros_like(v)
    else:
        hv = flat_grad(torch.dot(grad_flat, v), params, retain_graph=True)
    return hv + damping * v if damping else hv


def make_hvp(scalar_fn: Callable[[], Tensor], params: Iterable[Tensor],
             damping: float = 0.0) -> MatVec:
    """A matvec ``v [P] -> (∇²f + damping·I) v [P]`` for f = ``scalar_fn()`` at the current θ.

    ``scalar_fn`` is called once, here; its gradient (built with ``create_graph=True``) is kept
    by the closure and differentiated again on every call, so each product costs one backward
    pass. The closure describes θ as it is now: create a new one after changing θ.
    """
    params = list(params)
    grad_flat = flat_grad(scalar_fn(), params, create_graph=True)
    return lambda v: hessian_vector_product(grad_flat, params, v, damping)


# ── conjugate gradient ────────────────────────────────────────────────────────────────────────
def _curvature_problem(curvature: Tensor) -> str | None:
    if not torch.isfinite(curvature):
        return STOP_NON_FINITE_CURVATURE
    if curvature <= 0:
        return STOP_NON_POSITIVE_CURVATURE
    return None


def conjugate_gradient(matvec: MatVec, b: Tensor, iters: int = 10,
                       residual_tol: float = 1e-10) -> tuple[Tensor, dict]:
    """Solve A x = b for symmetric positive-definite A, given only ``matvec(v) = A v``.

    Standard CG from x₀ = 0 (Nocedal & Wright, Alg. 5.2)::

        r₀ = p₀ = b
        αₖ = rₖᵀrₖ / pₖᵀApₖ,  xₖ₊₁ = xₖ + αₖpₖ,  rₖ₊₁ = rₖ − αₖApₖ
        pₖ₊₁ = rₖ₊₁ + (rₖ₊₁ᵀrₖ₊₁ / rₖᵀrₖ) pₖ

    It stops after ``iters`` iterations, or once ‖r‖² < ``residual_tol`` (the squared norm, as in
    rllab's TRPO), or, without dividing, when pₖᵀApₖ is ≤ 0 or not finite: A is then not
    positive definite along pₖ, and x is the last iterate before that step (0 if it happens
    at once).

    Args:
        matvec: ``v [P] -> A v [P]``.
        b: right-hand side ``[P]``.

    Returns:
        ``(x [P], info)`` with info keys ``iterations`` (completed updates of x),
        ``residual_norm`` (‖r‖ = ‖b − A x‖ by the recurrence), ``curvature_ok`` (False when a
        non-positive or non-finite pᵀAp stopped it), ``converged``, ``stop_reason`` and
        ``xAx``: xᵀAx as a 0-d tensor. Because x = Σ αₖpₖ, A x = Σ αₖ(Apₖ) is accumulated
        from products already computed, so xᵀAx costs no further matvec (TRPO needs it for the
        step length); this holds by linearity alone, whether or not conjugacy was kept.
    """
    if iters < 0:
        raise ValueError(f"conjugate gradient needs iters ≥ 0, got {iters}")
    x = torch.zeros_like(b)
    Ax = torch.zeros_like(b)
    info = {"iterations": 0, "curvature_ok": True, "converged": False,
            "stop_reason": STOP_MAX_ITERS, "xAx": torch.zeros((), dtype=b.dtype)}
    if not torch.isfinite(b).all():
        info.update(residual_norm=math.inf, stop_reason=STOP_NON_FINITE_RHS)
        return x, info
    r = b.clone()
    p = b.clone()
    rr = torch.dot(r, r)
    for _ in range(iters):
        if rr < residual_tol:
            break
        Ap = matvec(p)
        pAp = torch.dot(p, Ap)
        problem = _curvature_problem(pAp)
        if problem:
            info.update(curvature_ok=False, stop_reason=problem)
            break
        alpha = rr / pAp
        x = x + alpha * p
        Ax = Ax + alpha * Ap
        r = r - alpha * Ap
        rr_new = torch.dot(r, r)
        info["iterations"] += 1
        p = r + (rr_new / rr) * p
        rr = rr_new
    if info["curvature_ok"] and rr < residual_tol:
        info.update(converged=True, stop_reason=STOP_CONVERGED)
    info["residual_norm"] = float(rr.sqrt())
    info["xAx"] = torch.dot(x, Ax)
    return x, info


def conjugate_gradient_normal(matvec: MatVec, rmatvec: MatVec, b: Tensor, iters: int = 10,
                              residual_tol: float = 1e-10,
                              damping: float = 0.0) -> tuple[Tensor, dict]:
    """Solve the normal equations (AᵀA + λI) x = Aᵀb for any square or rectangular A.

    A may be indefinite and non-symmetric; it is never formed. This is CGLS (Björck, *Numerical
    Methods for Least Squares Problems*, §7.4), i.e. CG on AᵀA + λI with the residual of the
    original system carried along, which loses less precision than applying CG to AᵀA::

        r₀ = b,  s₀ = p₀ = Aᵀr₀,  γₖ = ‖sₖ‖²
        qₖ = A pₖ,  αₖ = γₖ / (‖qₖ‖² + λ‖pₖ‖²)
        xₖ₊₁ = xₖ + αₖpₖ,  rₖ₊₁ = rₖ − αₖqₖ,  sₖ₊₁ = Aᵀrₖ₊₁ − λxₖ₊₁
        pₖ₊₁ = sₖ₊₁ + (γₖ₊₁/γₖ) pₖ

    For an invertible A with λ = 0 the solution is A⁻¹b; the convergence rate is that of CG
    with condition number cond(A)², so this suits well-conditioned A or λ > 0.

    Args:
        matvec: ``v [P] -> A v [M]``.
        rmatvec: ``u [M] -> Aᵀ u [P]`` (for symmetric A, pass ``matvec`` again).
        b: right-hand side ``[M]``.
        iters: CG iterations (each costs one ``matvec`` and one ``rmatvec``).
        residual_tol: stop once the normal-equation residual ‖sₖ‖² < residual_tol.
        damping: λ ≥ 0 (absolute) of the Tikhonov term.

    Returns:
        ``(x [P], info)`` with ``iterations``, ``residual_norm`` (‖b − A x‖),
        ``normal_residual_norm`` (‖Aᵀ(b − A x) − λx‖), ``curvature_ok`` (False when
        ‖qₖ‖² + λ‖pₖ‖² was 0 or not finite), ``converged`` and ``stop_reason``.
    """
    if iters < 0:
        raise ValueError(f"conjugate gradient needs iters ≥ 0, got {iters}")
    if damping < 0:
        raise ValueError(f"damping must be ≥ 0, got {damping}")
    info = {"iterations": 0, "curvature_ok": True, "converged": False,
            "stop_reason": STOP_MAX_ITERS}
    r = b.clone()
    s = rmatvec(r)
    x = torch.zeros_like(s)
    if not (torch.isfinite(b).all() and torch.isfinite(s).all()):
        info.update(residual_norm=math.inf, normal_residual_norm=math.inf,
                    stop_reason=STOP_NON_FINITE_RHS)
        return x, info
    p = s.clone()
    gamma = torch.dot(s, s)
    for _ in range(iters):
        if gamma < residual_tol:
            break
        q = matvec(p)
        curvature = torch.dot(q, q) + damping * torch.dot(p, p)
        problem = _curvature_problem(curvature)
        if problem:
            info.update(curvature_ok=False, stop_reason=problem)
            break
        alpha = gamma / curvature
        x_new = x + alpha * p
        r_new = r - alpha * q
        s = rmatvec(r_new) - damping * x_new
        gamma_new = torch.dot(s, s)
        if not torch.isfinite(gamma_new):  # a bad rmatvec: keep the last good iterate
            info.update(curvature_ok=False, stop_reason=STOP_NON_FINITE_CURVATURE)
            break
        x, r = x_new, r_new
        info["iterations"] += 1
        p = s + (gamma_new / gamma) * p
        gamma = gamma_new
    if info["curvature_ok"] and gamma < residual_tol:
        info.update(converged=True, stop_reason=STOP_CONVERGED)
    info["residual_norm"] = float(torch.linalg.vector_norm(r))
    info["normal_residual_norm"] = float(gamma.sqrt())  # γ is only updated with x
    return x, info
