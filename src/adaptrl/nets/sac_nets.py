"""Networks for soft actor-critic: a tanh-squashed Gaussian actor and (twin) Q-functions.

Actions live in [-1, 1]; callers scale them to the environment's bounds. Observations may carry
any extra conditioning (PEARL's latent z, a task embedding) concatenated onto the last axis:
the networks only see ``obs_dim`` numbers. All networks accept any leading shape ``[..., dim]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import AdaptrlError, UnknownNameError
from .policy import ACTIVATIONS

LOG_2 = math.log(2.0)


def _check_sizes(kind: str, obs_dim: int, act_dim: int, hidden_sizes) -> tuple[int, ...]:
    hidden = tuple(int(h) for h in hidden_sizes)
    if obs_dim < 1 or act_dim < 1 or any(h < 1 for h in hidden):
        raise AdaptrlError(f"{kind} sizes must be positive: obs {obs_dim}, act {act_dim}, "
                           f"hidden {hidden}")
    return hidden


class MLP(nn.Module):
    """Linear layers with an activation between them (none after the last)."""

    def __init__(self, sizes, activation: str):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise UnknownNameError("activation", activation, ACTIVATIONS)
        self.act = ACTIVATIONS[activation]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


def tanh_log_det_jacobian(pre_tanh: torch.Tensor) -> torch.Tensor:
    """log |d tanh(u)/du| = log(1 − tanh(u)²) = 2·(log 2 − u − softplus(−2u)), elementwise.

    The right-hand form stays finite where ``1 − tanh(u)²`` rounds to 0 (|u| ≳ 9 in float32).
    """
    return 2.0 * (LOG_2 - pre_tanh - nn.functional.softplus(-2.0 * pre_tanh))


class TanhGaussianActor(nn.Module):
    """π(a|s): a = tanh(u), u ~ N(μ(s), diag σ(s)²), with state-dependent μ and log σ.

    Args:
        obs_dim, act_dim: sizes of observation (including any conditioning) and action.
        hidden_sizes: widths of the hidden layers.
        activation: ``relu``, ``tanh`` or ``elu``.
        log_std_bounds: log σ is clamped into this interval.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes=(256, 256),
                 activation: str = "relu", log_std_bounds=(-20.0, 2.0)):
        super().__init__()
        self.hidden_sizes = _check_sizes("actor", obs_dim, act_dim, hidden_sizes)
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.activation = activation
        low, high = (float(b) for b in log_std_bounds)
        if not low < high:
            raise AdaptrlError(f"log_std_bounds must be increasing, got {tuple(log_std_bounds)}")
        self.log_std_bounds = (low, high)
        self.net = MLP((self.obs_dim, *self.hidden_sizes, 2 * self.act_dim), activation)

    def config(self) -> dict:
        """Constructor arguments, so that a checkpoint can rebuild the network exactly."""
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "hidden_sizes": list(self.hidden_sizes), "activation": self.activation,
                "log_std_bounds": list(self.log_std_bounds)}

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clamped log-std of the pre-tanh Gaussian, each ``[..., act_dim]``."""
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"actor expects observations of size {self.obs_dim}, "
                             f"got shape {tuple(obs.shape)}")
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(*self.log_std_bounds)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None,
               deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action ``[..., act_dim]`` in [-1, 1] and its log π(a|s) ``[...]``.

        Differentiable in the network parameters (wrap in ``torch.no_grad`` to only act).
        ``deterministic`` returns tanh(μ) and the density at that point. ``generator=None``
        draws from torch's global RNG; pass one to keep runs reproducible.
        """
        mean, log_std = self(obs)
        if deterministic:
            pre_tanh = mean
        else:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype,
                                device=mean.device)
            pre_tanh = mean + noise * log_std.exp()
        # log N(u; μ, σ) − log|det ∂tanh(u)/∂u|  (change of variables, SAC paper appendix C)
        z = (pre_tanh - mean) * torch.exp(-log_std)
        gaussian = -0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)
        log_prob = (gaussian - tanh_log_det_jacobian(pre_tanh)).sum(-1)
        return torch.tanh(pre_tanh), log_prob


class QNetwork(nn.Module):
    """Q(s, a): an MLP on the concatenation [obs, action] → ``[...]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes=(256, 256),
                 activation: str = "relu"):
        super().__init__()
        self.hidden_sizes = _check_sizes("Q-network", obs_dim, act_dim, hidden_sizes)
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.activation = activation
        self.net = MLP((self.obs_dim + self.act_dim, *self.hidden_sizes, 1), activation)

    def config(self) -> dict:
        """Constructor arguments, so that a checkpoint can rebuild the network exactly."""
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "hidden_sizes": list(self.hidden_sizes), "activation": self.activation}

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """obs ``[..., obs_dim]``, action ``[..., act_dim]`` → Q ``[...]``."""
        if obs.shape[-1] != self.obs_dim or action.shape[-1] != self.act_dim:
            raise ValueError(f"Q-network expects obs {self.obs_dim} / act {self.act_dim}, got "
                             f"shapes {tuple(obs.shape)} / {tuple(action.shape)}")
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


class TwinQ(nn.Module):
    """Two independent Q-networks (clipped double-Q, Fujimoto et al. 2018); returns both."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes=(256, 256),
                 activation: str = "relu"):
        super().__init__()
        self.q1 = QNetwork(obs_dim, act_dim, hidden_sizes, activation)
        self.q2 = QNetwork(obs_dim, act_dim, hidden_sizes, activation)

    def config(self) -> dict:
        """Constructor arguments, so that a checkpoint can rebuild the network exactly."""
        return self.q1.config()

    def forward(self, obs: torch.Tensor, action: torch.Tensor):
        """``(Q1, Q2)``, each ``[...]``."""
        return self.q1(obs, action), self.q2(obs, action)
