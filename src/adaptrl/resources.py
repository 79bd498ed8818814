"""Up-front estimates of memory and work, so that a size no machine can serve (``--tasks
10000000``, ``replay_capacity=10**10``, ``--steps 99999999999999999999``) is refused in one line
before anything is allocated or written, instead of failing deep inside NumPy or torch, or
running for ever. Imports nothing from the package: callers turn a refusal into their error.

Estimates are lower bounds (the arrays a run cannot do without), so a refusal is never wrong;
a run that passes may still need more.
"""

from __future__ import annotations

import os

MAX_ENV_STEPS = 10**12
"""The most environment steps one evaluation-like command may plan (weeks of compute even at a
million steps a second): more is a typo, not a plan."""


def machine_memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(count: float) -> str:
    """``123 B``, ``4.0 KiB``, ..., ``2.5 PiB``, ``3e+06 EiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.3g} EiB"


def episode_bytes(tasks: int, episodes: int, horizon: int, obs_dim: int, act_dim: int) -> int:
    """The arrays of one sampled batch ``[tasks, episodes, horizon]``: float32 observations,
    actions, rewards and masks, and the termination flags."""
    return tasks * episodes * horizon * (4 * (obs_dim + act_dim + 2) + 1)


def transition_bytes(rows: int, obs_dim: int, act_dim: int) -> int:
    """``rows`` stored transitions (s, a, r, s', done) in float32, as a replay buffer holds."""
    return rows * 4 * (2 * obs_dim + act_dim + 2)


def mlp_parameters(in_dim: int, hidden, out_dim: int) -> int:
    """Weights and biases of an MLP ``in_dim → hidden... → out_dim``."""
    sizes = [in_dim, *hidden, out_dim]
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def memory_refusal(parts: dict[str, int]) -> str | None:
    """None when the estimated ``parts`` (what → bytes) fit in this machine's memory; else the
    reason, naming the largest part, the estimate and the machine's memory."""
    total = machine_memory_bytes()
    needed = sum(parts.values())
    if total is None or needed <= total:
        return None
    largest = max(parts, key=parts.get)
    alone, together = format_bytes(parts[largest]), format_bytes(needed)
    return (f"{largest} needs about {alone}"
            + (f" ({together} in all)" if together != alone else "")
            + f", more than this machine's {format_bytes(total)} of memory")


def work_refusal(what: str, env_steps: int) -> str | None:
    """None when ``env_steps`` is at most `MAX_ENV_STEPS`; else the reason."""
    if env_steps <= MAX_ENV_STEPS:
        return None
    return (f"{what} would take about {env_steps:.2g} environment steps, more than the "
            f"{MAX_ENV_STEPS:.0e} any single command may plan")
