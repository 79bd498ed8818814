"""Networks that read a task from its transitions: PEARL's context encoder, FLAP's adapter.

A context is a set of transitions c = (s, a, r, s') of one task, laid out ``[T, M, dim]`` (T
tasks, M transitions each, see `transition_features`) with an optional ``mask [T, M]`` (1 for a
real transition). Both networks are permutation invariant over the M transitions: each
transition is mapped on its own by an MLP, and the per-transition outputs are combined by a
symmetric operation (a product of Gaussians for PEARL, a mean for FLAP).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import AdaptrlError
from .sac_nets import MLP


def transition_features(obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                        next_obs: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., obs_dim + act_dim + 1 (+ obs_dim)]``: s, a, r (and s' when given) side by side.

    obs, next_obs: ``[..., obs_dim]``; action: ``[..., act_dim]``; reward: ``[...]``.
    """
    parts = [obs, action, reward.unsqueeze(-1)]
    if next_obs is not None:
        parts.append(next_obs)
    return torch.cat(parts, dim=-1)


def context_size(obs_dim: int, act_dim: int, use_next_obs: bool) -> int:
    """Numbers per transition in `transition_features`."""
    return obs_dim + act_dim + 1 + (obs_dim if use_next_obs else 0)


def _check_context(context: torch.Tensor, mask: torch.Tensor | None, in_dim: int):
    if context.dim() != 3 or context.shape[-1] != in_dim:
        raise ValueError(f"context must be [T, M, {in_dim}], got {tuple(context.shape)}")
    if mask is None:
        return torch.ones(context.shape[:2], dtype=context.dtype, device=context.device)
    if mask.shape != context.shape[:2]:
        raise ValueError(f"context mask must be {tuple(context.shape[:2])}, got "
                         f"{tuple(mask.shape)}")
    return mask.to(context.dtype)


def product_of_gaussians(mean: torch.Tensor, var: torch.Tensor,
                         mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised product of Gaussian factors N(μ_m, σ²_m) over axis -2 (PEARL, §4.2).

    mean, var: ``[T, M, d]``; mask: ``[T, M]`` (0 drops a factor). Returns ``(μ, σ²)`` of
    shape ``[T, d]``: 1/σ² = Σ_m 1/σ²_m, μ = σ² Σ_m μ_m/σ²_m. A task without any factor gets
    the unit prior N(0, I), which is also what the encoder is pulled towards.
    """
    weight = (1.0 if mask is None else mask.unsqueeze(-1).to(var.dtype))
    precision = (weight / var).sum(-2)
    weighted = (weight * mean / var).sum(-2)
    empty = precision == 0
    precision = torch.where(empty, torch.ones_like(precision), precision)
    post_var = 1.0 / precision
    post_mean = torch.where(empty, torch.zeros_like(weighted), weighted * post_var)
    return post_mean, post_var


class ContextEncoder(nn.Module):
    """PEARL's inference network q_φ(z|c) = Π_m Ψ_φ(z|c_m), with Ψ_φ(z|c_m) = N(μ(c_m), σ²(c_m)).

    Args:
        in_dim: numbers per transition (`context_size`).
        latent_dim: size of z (PEARL: 5).
        hidden_sizes, activation: of the per-transition MLP (PEARL: 200×200×200 ReLU).
        min_var: floor added to the softplus variance, so no factor is infinitely certain.
    """

    def __init__(self, in_dim: int, latent_dim: int = 5, hidden_sizes=(200, 200, 200),
                 activation: str = "relu", min_var: float = 1e-7):
        super().__init__()
        if in_dim < 1 or latent_dim < 1 or any(int(h) < 1 for h in hidden_sizes):
            raise AdaptrlError(f"context encoder sizes must be positive: in {in_dim}, latent "
                               f"{latent_dim}, hidden {tuple(hidden_sizes)}")
        self.in_dim, self.latent_dim = int(in_dim), int(latent_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation, self.min_var = activation, float(min_var)
        self.net = MLP((self.in_dim, *self.hidden_sizes, 2 * self.latent_dim), activation)

    def config(self) -> dict:
        return {"in_dim": self.in_dim, "latent_dim": self.latent_dim,
                "hidden_sizes": list(self.hidden_sizes), "activation": self.activation,
                "min_var": self.min_var}

    def factors(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-transition Gaussian factors: μ, σ² ``[T, M, latent_dim]``."""
        mean, raw_var = self.net(context).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw_var) + self.min_var

    def posterior(self, context: torch.Tensor, mask: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|c): mean and variance ``[T, latent_dim]`` for ``context [T, M, in_dim]``."""
        mask = _check_context(context, mask, self.in_dim)
        if context.shape[1] == 0:
            shape = (context.shape[0], self.latent_dim)
            return context.new_zeros(shape), context.new_ones(shape)
        return product_of_gaussians(*self.factors(context), mask)


def kl_to_unit_gaussian(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per row ``[...]`` for ``mean, var [..., d]``."""
    return 0.5 * (var + mean**2 - 1.0 - torch.log(var)).sum(-1)


class AdapterNet(nn.Module):
    """FLAP's adapter: predicts a task's output layer from its transitions.

    Each transition c_m is embedded by an MLP e(c_m); the embeddings are averaged over the
    context, and a decoder maps the average to the head. With no decoder layers
    (``decoder_sizes=()``) the decoder is one linear layer, and the prediction is exactly the
    mean of per-transition predictions, FLAP's rule (the mean of a linear layer's outputs is its
    output at the mean input, so averaging first is the cheap way to compute it). Decoder layers
    let the prediction combine what different transitions say (a transition of 2-D navigation
    only tells the distance to the goal, not its direction); the prediction still sharpens as
    transitions arrive and stays one feed-forward pass.

    Args:
        in_dim: numbers per transition (`context_size`).
        head_shape: shape of one output layer, ``(2·act_dim, F + 1)``.
        hidden_sizes: widths of the per-transition MLP (its last width is the embedding size).
        activation: between layers.
        decoder_sizes: hidden widths of the decoder after averaging.
    """

    def __init__(self, in_dim: int, head_shape, hidden_sizes=(256, 256),
                 activation: str = "relu", decoder_sizes=()):
        super().__init__()
        head_shape = tuple(int(s) for s in head_shape)
        hidden = tuple(int(h) for h in hidden_sizes)
        decoder = tuple(int(h) for h in decoder_sizes)
        if in_dim < 1 or len(head_shape) != 2 or min(head_shape) < 1 or not hidden \
                or any(h < 1 for h in hidden + decoder):
            raise AdaptrlError(f"adapter sizes must be positive: in {in_dim}, head "
                               f"{head_shape}, hidden {hidden}, decoder {decoder}")
        self.in_dim, self.head_shape = int(in_dim), head_shape
        self.hidden_sizes, self.decoder_sizes = hidden, decoder
        self.activation = activation
        self.embed = MLP((self.in_dim, *hidden), activation)
        self.decode = MLP((hidden[-1], *decoder, head_shape[0] * head_shape[1]), activation)

    def config(self) -> dict:
        return {"in_dim": self.in_dim, "head_shape": list(self.head_shape),
                "hidden_sizes": list(self.hidden_sizes), "activation": self.activation,
                "decoder_sizes": list(self.decoder_sizes)}

    def embeddings(self, context: torch.Tensor) -> torch.Tensor:
        """e(c_m) ``[T, M, hidden_sizes[-1]]``, activation included."""
        return self.embed.act(self.embed(context))

    def forward(self, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted heads ``[T, *head_shape]`` from ``context [T, M, in_dim]`` (M ≥ 1 valid
        transitions per task)."""
        mask = _check_context(context, mask, self.in_dim)
        count = mask.sum(1, keepdim=True)
        if bool((count == 0).any()):
            raise ValueError("the adapter needs at least one transition per task")
        pooled = (self.embeddings(context) * mask.unsqueeze(-1)).sum(1) / count   # [T, h]
        return self.decode(pooled).reshape(context.shape[0], *self.head_shape)

    def per_transition(self, context: torch.Tensor) -> torch.Tensor:
        """Each transition's own prediction ``[T, M, *head_shape]`` (what the mean of
        predictions averages when there are no decoder layers)."""
        return self.decode(self.embeddings(context)).reshape(*context.shape[:2],
                                                             *self.head_shape)
