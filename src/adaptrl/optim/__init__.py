"""Shared optimisation math: conjugate gradient, Hessian-vector products, the TRPO step.

Parameters travel as lists or dicts of tensors; the solvers work on flat vectors ``[P]``
(`flatten`, `unflatten_like`, `flat_dict`, `unflat_dict` convert).
"""

from .cg import (
    conjugate_gradient,
    conjugate_gradient_normal,
    flat_dict,
    flat_grad,
    flatten,
    hessian_vector_product,
    make_hvp,
    unflat_dict,
    unflatten_like,
)
from .trpo import (
    REFUSED_LINE_SEARCH,
    REFUSED_NON_FINITE_CURVATURE,
    REFUSED_NON_FINITE_GRADIENT,
    REFUSED_NON_FINITE_LOSS,
    REFUSED_NON_FINITE_STEP,
    REFUSED_NON_POSITIVE_CURVATURE,
    REFUSED_ZERO_GRADIENT,
    TRPOOptions,
    backtracking_line_search,
    trpo_search_direction,
    trpo_step,
)

__all__ = [
    "REFUSED_LINE_SEARCH", "REFUSED_NON_FINITE_CURVATURE", "REFUSED_NON_FINITE_GRADIENT",
    "REFUSED_NON_FINITE_LOSS", "REFUSED_NON_FINITE_STEP", "REFUSED_NON_POSITIVE_CURVATURE",
    "REFUSED_ZERO_GRADIENT", "TRPOOptions", "backtracking_line_search", "conjugate_gradient",
    "conjugate_gradient_normal", "flat_dict", "flat_grad", "flatten", "hessian_vector_product",
    "make_hvp", "trpo_search_direction", "trpo_step", "unflat_dict", "unflatten_like",
]
