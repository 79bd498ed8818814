"""Confidence intervals over tasks: Student's t, so that the few-task evaluations (a handful of
grid cells, a short test split) get honest intervals; with many tasks t is close to 1.96.

    t_quantile(p, dof)     the p-quantile of Student's t with ``dof`` degrees of freedom
    ci95_half_width(x)     t_{0.975, n−1} · sd(x, ddof=1) / √n, None for fewer than two values
"""

from __future__ import annotations

import functools
import math

import numpy as np


def _t_cdf_above_zero(t: float, dof: int) -> float:
    """P(0 ≤ T ≤ t) for t ≥ 0: the density integrated by Simpson's rule (smooth and bounded,
    so 4000 intervals give ~1e-10 here, well below what a confidence interval needs)."""
    log_norm = (math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2)
                - 0.5 * math.log(dof * math.pi))
    x = np.linspace(0.0, t, 4001)
    density = np.exp(log_norm - (dof + 1) / 2 * np.log1p(x * x / dof))
    h = t / 4000
    return float(h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum()
                          + 2 * density[2:-1:2].sum()))


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, dof: int) -> float:
    """The ``p``-quantile of Student's t with ``dof`` ≥ 1 degrees of freedom, for 0.5 ≤ p < 1
    (e.g. t_quantile(0.975, 4) = 2.776), found by bisection on the CDF to ~1e-9."""
    if not 0.5 <= p < 1 or dof < 1:
        raise ValueError(f"t_quantile needs 0.5 ≤ p < 1 and dof ≥ 1, got p={p}, dof={dof}")
    target = p - 0.5
    low, high = 0.0, 1.0
    while _t_cdf_above_zero(high, dof) < target:
        low, high = high, 2 * high
    for _ in range(60):
        middle = (low + high) / 2
        if _t_cdf_above_zero(middle, dof) < target:
            low = middle
        else:
            high = middle
        if high - low < 1e-10 * high:
            break
    return (low + high) / 2


def ci95_half_width(values) -> float | None:
    """Half-width of the 95% confidence interval of the mean of ``values`` (t with n − 1
    degrees of freedom, sd with ddof 1); None for fewer than two values."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    n = len(values)
    if n < 2:
        return None
    return t_quantile(0.975, n - 1) * float(values.std(ddof=1)) / math.sqrt(n)
