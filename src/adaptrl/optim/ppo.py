"""The PPO update, shared by every method that trains a policy with it (RL², SNAIL, ...).

Schulman et al. 2017, "Proximal Policy Optimization Algorithms". With the probability ratio
r_t(θ) = π_θ(a_t | h_t) / π_old(a_t | h_t) and advantage estimates Â_t:

    L^CLIP(θ)  = Ê[ min(r_t Â_t, clip(r_t, 1 − ε, 1 + ε) Â_t) ]                      (Eq. 7)
    L^VF(θ)    = Ê[ (V_θ(h_t) − V_t^targ)² ]
    L(θ)       = Ê[ L^CLIP − c₁ L^VF + c₂ S[π_θ](h_t) ]   (maximised)                 (Eq. 9)

This module minimises −L: ``policy_loss + value_coef · value_loss − entropy_coef · entropy``,
several epochs of Adam steps over minibatches of the batch. Every expectation Ê is a mean over
the valid (mask > 0) steps of the minibatch.

The batch is a set of ROWS of L steps (``[T, N, L]`` flattened to ``[T·N, L]``): a row is one
trial (RL²: k episodes on one task) or one episode. Minibatches are sets of whole rows, never a
cut row, so a recurrent policy can re-unroll each selected trial from its start. The update
never touches the network: the caller's ``loss_terms_fn(rows)`` evaluates the current policy
(and value function) on the selected rows, so a GRU re-unrolls them and an MLP just indexes.

Guards: a minibatch whose loss or gradient is not finite is skipped (no optimiser step, so
parameters and optimiser state are untouched) and counted in ``ppo/skipped``; NaN never reaches
the parameters. Masked steps may hold anything (even NaN): they are replaced by 0 before any
arithmetic, so neither they nor their gradients reach the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch

from ..options import check_ranges, option

Tensor = torch.Tensor

# ``loss_terms_fn(rows [B]) -> (log_prob [B, L], values [B, L] or None, entropy or None)``
LossTermsFn = Callable[[Tensor], tuple[Tensor, Tensor | None, Tensor | None]]


@dataclass
class PPOOptions:
    """The settings of a PPO update, declared once for every config that trains with PPO (an
    RL² or SNAIL config inherits these fields; its ``validate()`` checks their ranges with
    `adaptrl.options.check_ranges`).

    Defaults: ε = 0.2, 10 epochs and Adam at 3e-4 are the PPO paper's MuJoCo settings
    (Schulman et al. 2017, Table 3; ε = 0.2 is also its best clipping value in Table 1).
    The paper's MuJoCo runs share no parameters between policy and value, so it gives no c₁ for
    them; c₁ = 0.5, c₂ = 0, 4 minibatches and a gradient-norm clip of 0.5 are the defaults of
    OpenAI Baselines' ``ppo2`` (the paper's Atari settings are c₁ = 1, c₂ = 0.01).
    """

    ppo_epochs: int = option(10, "PPO epochs (passes over the batch) per update", ge=1, le=10**4)
    minibatches: int = option(4, "minibatches per PPO epoch, each a set of whole trials "
                                 "(rows of [T, N]); at most the number of rows", ge=1, le=10**6)
    clip: float = option(0.2, "PPO clipping range ε: the ratio is clipped to [1 − ε, 1 + ε]",
                         gt=0, lt=1)
    lr: float = option(3e-4, "Adam learning rate of the PPO optimiser (`ppo_optimizer`)",
                       positive=True, le=1)
    lr_end: float = option(0.0, "with lr_schedule linear: the learning rate reached at the "
                                "last iteration", ge=0, le=1)
    lr_schedule: Literal["constant", "linear"] = option(
        "constant", "constant: lr throughout; linear: from lr at the first iteration to lr_end "
        "at the last (`ppo_lr`)")
    lr_anneal_start: int = option(0, "with lr_schedule linear: anneal only once this many "
                                     "iterations are done, from lr at the next one to lr_end "
                                     "at the last", ge=0, le=10**8)
    value_coef: float = option(0.5, "weight c₁ of the value loss (V − V_targ)²", ge=0, le=1e4)
    entropy_coef: float = option(0.0, "weight c₂ of the entropy bonus", ge=0, le=1e4)
    max_grad_norm: float = option(0.5, "clip the global gradient norm to this (0: no clipping)",
                                  ge=0, le=1e6)
    target_kl: float = option(0.0, "stop the PPO epochs early once the approximate KL of a "
                                   "minibatch exceeds this (0: never)", ge=0, le=1e3)
    normalize_advantages: bool = option(True, "centre and scale the advantages of each PPO "
                                              "minibatch over its valid steps")
    clip_value: bool = option(False, "clip the value change to ±ε around the old values "
                                     "(PPO2-style value clipping); needs old values")

    def validate(self) -> None:
        """Raise ValueError naming the first field outside its declared range, or lr_end set
        where no schedule reads it."""
        check_ranges(self)
        if self.lr_schedule == "constant" and self.lr_end != 0:
            raise ValueError(f"lr_end = {self.lr_end} has no effect with lr_schedule constant: "
                             f"set lr_schedule=linear to anneal lr to it")
        if self.lr_schedule == "constant" and self.lr_anneal_start != 0:
            raise ValueError(f"lr_anneal_start = {self.lr_anneal_start} has no effect with "
                             f"lr_schedule constant: set lr_schedule=linear to anneal lr")


# ── masked means ──────────────────────────────────────────────────────────────────────────────
def _valid(mask: Tensor) -> Tensor:
    return mask > 0


def _clean(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with every masked step replaced by 0 (so NaN or ±inf there cannot leak, in the
    value or in the gradient)."""
    return torch.where(_valid(mask), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Σ mask·x / Σ mask over all entries (0 when no step is valid); masked entries of ``x``
    may hold anything."""
    mask = mask.to(x.dtype)
    return (_clean(x, mask) * mask).sum() / mask.sum().clamp_min(1.0)


def normalize_masked(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """``x`` centred and scaled over its valid steps (population std; 0 on masked steps)."""
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()
    return _clean((x - mean) / (std + eps), mask)


# ── the losses ────────────────────────────────────────────────────────────────────────────────
def ppo_clipped_loss(log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, mask: Tensor,
                     clip: float) -> tuple[Tensor, Tensor, Tensor]:
    """The negated clipped surrogate −L^CLIP (Eq. 7), averaged over the valid steps.

    Args:
        log_prob: log π_θ(a_t | h_t), differentiable, any shape.
        old_log_prob: log π_old(a_t | h_t) (treated as a constant), same shape.
        advantages: Â_t (constants), same shape.
        mask: 1 on valid steps, 0 on the others (ignored entirely), same shape.
        clip: ε.

    Returns:
        ``(loss, clip_fraction, approx_kl)``: the scalar loss to minimise; the fraction of valid
        steps with |r_t − 1| > ε; and the estimate Ê[(r_t − 1) − log r_t] of KL(π_old ‖ π_θ)
        (non-negative, unbiased for samples of π_old). The last two are detached.
    """
    log_ratio = _clean(log_prob - old_log_prob.detach(), mask)
    advantages = _clean(advantages.detach(), mask)
    ratio = torch.exp(log_ratio)
    surrogate = torch.minimum(ratio * advantages,
                              torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages)
    loss = -masked_mean(surrogate, mask)
    with torch.no_grad():
        clipped = ((ratio - 1.0).abs() > clip).to(ratio.dtype)
        clip_fraction = masked_mean(clipped, mask)
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, clip_fraction, approx_kl


def ppo_value_loss(values: Tensor, returns: Tensor, mask: Tensor,
                   old_values: Tensor | None = None, clip: float | None = None) -> Tensor:
    """Ê[(V_θ − V^targ)²] over the valid steps (the L^VF of Eq. 9; no ½ factor).

    With ``old_values`` and ``clip``, the PPO2-style clipped variant
    Ê[max((V_θ − V^targ)², (V_old + clip(V_θ − V_old, −ε, ε) − V^targ)²)].
    """
    values = _clean(values, mask)
    returns = _clean(returns.detach(), mask)
    error = (values - returns) ** 2
    if old_values is not None and clip is not None:
        old_values = _clean(old_values.detach(), mask)
        clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        error = torch.maximum(error, (clipped - returns) ** 2)
    return masked_mean(error, mask)


# ── minibatches of whole rows ─────────────────────────────────────────────────────────────────
def minibatch_rows(num_rows: int, minibatches: int, generator: torch.Generator) -> list[Tensor]:
    """A random partition of the rows ``0 .. num_rows − 1`` into ``minibatches`` index tensors
    of sizes differing by at most one (one permutation drawn from ``generator``)."""
    if not 1 <= minibatches <= num_rows:
        raise ValueError(f"cannot split {num_rows} rows (trials) into {minibatches} minibatches "
                         f"of whole rows: need 1 ≤ minibatches ≤ rows")
    order = torch.randperm(num_rows, generator=generator)
    return list(torch.tensor_split(order, minibatches))


def select_rows(x: Tensor, rows: Tensor, lead: int = 2) -> Tensor:
    """The rows ``rows`` (indices into the flattened ``lead`` leading dimensions) of ``x``:
    ``[T, N, ...]`` → ``[B, ...]``. A helper for ``loss_terms_fn``."""
    return x.flatten(0, lead - 1)[rows.to(x.device)]


def ppo_optimizer(params: Iterable[Tensor], options: PPOOptions) -> torch.optim.Adam:
    """Adam over ``params`` at ``options.lr`` (PyTorch's other Adam defaults)."""
    return torch.optim.Adam(params, lr=options.lr)


def ppo_lr(options: PPOOptions, done: int, total: int) -> float:
    """The learning rate of the iteration that follows ``done`` of ``total`` iterations:
    ``options.lr`` throughout with the constant schedule; with the linear one, ``lr`` at the
    first iteration (done = 0), ``lr_end`` at the last (done = total − 1), linear in between;
    with ``lr_anneal_start`` = s > 0, ``lr`` up to done = s and linear from there to the last.
    A function of the iteration count only, so a resumed run continues the same schedule."""
    start = min(options.lr_anneal_start, total - 1)
    if options.lr_schedule == "constant" or total - 1 - start <= 0:
        return options.lr
    fraction = min(max((done - start) / (total - 1 - start), 0.0), 1.0)
    return options.lr + fraction * (options.lr_end - options.lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every param group of ``optimizer`` steps at ``lr`` from now on."""
    for group in optimizer.param_groups:
        group["lr"] = lr


# ── the update ────────────────────────────────────────────────────────────────────────────────
METRICS = ("ppo/policy_loss", "ppo/value_loss", "ppo/entropy", "ppo/approx_kl",
           "ppo/clip_fraction", "ppo/grad_norm")


def ppo_update(loss_terms_fn: LossTermsFn, optimizer: torch.optim.Optimizer, mask: Tensor,
               advantages: Tensor, *, generator: torch.Generator,
               options: PPOOptions | None = None, returns: Tensor | None = None,
               old_log_prob: Tensor | None = None,
               old_values: Tensor | None = None) -> dict[str, float]:
    """One PPO update: ``options.ppo_epochs`` passes over the batch, each a fresh random split
    of its rows into ``options.minibatches`` minibatches of whole rows, one optimiser step each.

    Args:
        loss_terms_fn: ``rows -> (log_prob, values, entropy)`` for the current parameters on the
            rows ``rows`` (int64 ``[B]``, indices into the flattened ``[T·N]`` rows; see
            `select_rows`): ``log_prob`` and ``values`` with B·L entries (``[B, L]``, or
            ``[1, B, L]`` as a network with a task dimension returns them), ``entropy`` with
            B·L entries or broadcastable to ``[B, L]`` (a state-independent Gaussian's scalar).
            ``values`` may be None (no value loss: e.g. a fitted baseline supplies the
            advantages); ``entropy`` may be None when ``entropy_coef`` is 0. It must evaluate
            every row on its own (no batch statistics), differentiably in the optimiser's
            parameters.
        optimizer: steps the parameters (its param groups are the ones whose gradient norm is
            clipped and checked); `ppo_optimizer` makes the default Adam at ``options.lr``.
        mask: ``[T, N, L]`` (or ``[R, L]``), 1 on the steps taken.
        advantages: Â, same shape; constants (detached here). Normalised per minibatch when
            ``options.normalize_advantages``.
        generator: draws the minibatch order (equal seeds give equal updates).
        options: `PPOOptions` (defaults when None); ranges are checked.
        returns: V^targ, same shape; required when ``loss_terms_fn`` returns values.
        old_log_prob: log π_old, same shape; None evaluates ``loss_terms_fn`` on every row
            (without gradient) before the first step, which matches the re-evaluation exactly.
        old_values: V_old for ``clip_value``; None evaluates them the same way.

    Returns:
        Floats: ``ppo/policy_loss``, ``ppo/value_loss`` (0 without values), ``ppo/entropy`` (0
        without entropy), ``ppo/approx_kl``, ``ppo/clip_fraction``, ``ppo/grad_norm`` (before
        clipping): means over the optimiser steps taken (NaN when none was); ``ppo/updates``
        (steps taken), ``ppo/skipped`` (minibatches with a non-finite loss or gradient),
        ``ppo/epochs`` (passes over the data: minibatches evaluated / minibatches per epoch,
        ``ppo_epochs`` unless stopped early), ``ppo/stopped_early`` (1.0 when ``target_kl``
        stopped it) and ``ppo/final_kl`` (the approximate KL of the last minibatch evaluated,
        the one that stopped it if any).
    """
    options = PPOOptions() if options is None else options
    check_ranges(options)
    L = mask.shape[-1]
    mask = mask.detach().reshape(-1, L)
    num_rows = mask.shape[0]

    def flat(x: Tensor | None, name: str) -> Tensor | None:
        if x is None:
            return None
        if x.numel() != mask.numel():
            raise ValueError(f"{name} has {x.numel()} entries, the mask {mask.numel()} "
                             f"({num_rows} rows × {L} steps)")
        return x.detach().reshape(num_rows, L)

    advantages = flat(advantages, "advantages")
    returns = flat(returns, "returns")
    old_log_prob = flat(old_log_prob, "old_log_prob")
    old_values = flat(old_values, "old_values")
    if not 1 <= options.minibatches <= num_rows:
        raise ValueError(f"minibatches ({options.minibatches}) must be at most the number of "
                         f"rows (trials) in the batch ({num_rows}): minibatches hold whole rows")
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def terms(rows: Tensor):
        log_prob, values, entropy = loss_terms_fn(rows)
        B = rows.numel()
        log_prob = _as_rows(log_prob, B, L, "log_prob")
        values = None if values is None else _as_rows(values, B, L, "values")
        if entropy is not None:
            entropy = (_as_rows(entropy, B, L, "entropy") if entropy.numel() == B * L
                       else torch.broadcast_to(entropy, (B, L)))
        return log_prob, values, entropy

    # π_old (and V_old) from the same evaluation path as the update, if not given
    need_old_values = options.clip_value and old_values is None
    if old_log_prob is None or need_old_values:
        chunks = []
        with torch.no_grad():
            for rows in torch.tensor_split(torch.arange(num_rows), options.minibatches):
                lp, v, _ = terms(rows)
                if need_old_values and v is None:
                    raise ValueError("clip_value needs values from loss_terms_fn")
                chunks.append((lp.detach(), None if v is None else v.detach()))
        if old_log_prob is None:
            old_log_prob = torch.cat([lp for lp, _ in chunks])  # the rows in order
        if need_old_values:
            old_values = torch.cat([v for _, v in chunks])

    sums = dict.fromkeys(METRICS, 0.0)
    updates = skipped = evaluated = 0
    stopped = False
    final_kl = math.nan
    for _ in range(options.ppo_epochs):
        for rows in minibatch_rows(num_rows, options.minibatches, generator):
            m = mask[rows]
            if not (m > 0).any():
                evaluated += 1  # nothing to learn from: no step
                continue
            log_prob, values, entropy = terms(rows)
            adv = advantages[rows]
            if options.normalize_advantages:
                adv = normalize_masked(adv, m)
            policy_loss, clip_fraction, approx_kl = ppo_clipped_loss(
                log_prob, old_log_prob[rows], adv, m, options.clip)
            final_kl = float(approx_kl)
            evaluated += 1
            if options.target_kl > 0 and final_kl > options.target_kl:
                stopped = True
                break
            loss = policy_loss
            value_loss = torch.zeros(())
            if values is not None:
                if returns is None:
                    raise ValueError("loss_terms_fn returns values, so ppo_update needs returns")
                value_loss = ppo_value_loss(
                    values, returns[rows], m,
                    old_values[rows] if options.clip_value else None,
                    options.clip if options.clip_value else None)
                loss = loss + options.value_coef * value_loss
            mean_entropy = torch.zeros(())
            if entropy is not None:
                mean_entropy = masked_mean(entropy, m)
                loss = loss - options.entropy_coef * mean_entropy
            elif options.entropy_coef > 0:
                raise ValueError("entropy_coef > 0 but loss_terms_fn returns no entropy")

            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                skipped += 1
                continue
            loss.backward()
            grad_norm = _grad_norm(params)
            if not math.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                continue
            if options.max_grad_norm > 0 and grad_norm > options.max_grad_norm:
                scale = options.max_grad_norm / (grad_norm + 1e-6)
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(scale)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            updates += 1
            for key, value in zip(METRICS, (policy_loss, value_loss, mean_entropy, approx_kl,
                                            clip_fraction, grad_norm)):
                sums[key] += float(value.detach() if torch.is_tensor(value) else value)
        if stopped:
            break

    info = {key: (total / updates if updates else math.nan) for key, total in sums.items()}
    info.update({"ppo/updates": float(updates), "ppo/skipped": float(skipped),
                 "ppo/epochs": evaluated / options.minibatches,
                 "ppo/stopped_early": float(stopped), "ppo/final_kl": final_kl})
    return info


def _as_rows(x: Tensor, B: int, L: int, name: str) -> Tensor:
    if x.numel() != B * L:
        raise ValueError(f"loss_terms_fn returned {name} of shape {tuple(x.shape)} for {B} "
                         f"rows of {L} steps")
    return x.reshape(B, L)


def _grad_norm(params: list[Tensor]) -> float:
    """‖∇‖₂ over all parameters that received a gradient (NaN or inf when any entry is)."""
    norms = [torch.linalg.vector_norm(p.grad.detach()) for p in params if p.grad is not None]
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(norms)))


__all__ = [
    "LossTermsFn", "PPOOptions", "masked_mean", "minibatch_rows", "normalize_masked",
    "ppo_clipped_loss", "ppo_optimizer", "ppo_update", "ppo_value_loss", "select_rows",
]
