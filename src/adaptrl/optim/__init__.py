"""Shared optimisation math: conjugate gradient, Hessian-vector products, the TRPO step (also
per task), advantages, implicit differentiation (AdMRL's task gradient), SAC.

Parameters travel as lists or dicts of tensors; the solvers work on flat vectors ``[P]``
(`flatten`, `unflatten_like`, `flat_dict`, `unflat_dict` convert).
"""

from .advantages import (
    estimate_advantages,
    masked_task_mean,
    normalize_per_task,
    step_weights,
)
from .cg import (
    conjugate_gradient,
    conjugate_gradient_normal,
    flat_dict,
    flat_grad,
    flatten,
    hessian_vector_product,
    make_hvp,
    per_task_vectors,
    unflat_dict,
    unflatten_like,
)
from .guard import TrainableSnapshot, first_nonfinite
from .implicit import (
    implicit_task_gradient,
    mixed_derivative_vjp,
    policy_hessian_product,
    reward_gradient,
)
from .ppo import (
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
    per_task_trpo_step,
    task_fisher,
    trpo_search_direction,
    trpo_step,
)

__all__ = [
    "PPOOptions", "REFUSED_LINE_SEARCH", "REFUSED_NON_FINITE_CURVATURE",
    "REFUSED_NON_FINITE_GRADIENT", "REFUSED_NON_FINITE_LOSS", "REFUSED_NON_FINITE_STEP",
    "REFUSED_NON_POSITIVE_CURVATURE", "REFUSED_ZERO_GRADIENT", "TRPOOptions",
    "backtracking_line_search", "conjugate_gradient", "conjugate_gradient_normal",
    "TrainableSnapshot", "estimate_advantages", "first_nonfinite", "flat_dict",
    "flat_grad", "flatten", "hessian_vector_product",
    "implicit_task_gradient", "make_hvp", "masked_task_mean", "minibatch_rows",
    "mixed_derivative_vjp", "normalize_per_task", "per_task_trpo_step", "per_task_vectors",
    "policy_hessian_product", "ppo_clipped_loss", "ppo_lr", "ppo_optimizer", "ppo_update",
    "ppo_value_loss", "reward_gradient", "select_rows", "set_lr", "step_weights", "task_fisher",
    "trpo_search_direction", "trpo_step", "unflat_dict", "unflatten_like",
]
