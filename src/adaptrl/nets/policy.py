"""Gaussian MLP policies that run shared or per-task parameters in one batched call.

Parameters are plain dicts of tensors (``policy.params()``). A dict whose tensors carry a leading
task dimension T (``policy.expand_params(T)`` or an adapted copy) evaluates every task's network
on its own observations ``[T, ..., obs_dim]`` with batched matrix products, which is what
`torch.func.vmap` over `torch.func.functional_call` computes (a test pins the two together), but
without its per-call overhead and with plain second-order autograd for MAML.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import AdaptrlError, UnknownNameError

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "elu": nn.functional.elu}

Params = dict[str, torch.Tensor]


def _activation_slope(name: str, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """d act(z)/dz from the pre-activation ``z`` and the activation ``out``."""
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "tanh":
        return 1 - out**2
    return torch.where(z > 0, torch.ones_like(z), out + 1)  # elu (α = 1)


class GaussianMLPPolicy(nn.Module):
    """π(a|s) = N(MLP(s), diag(exp(log_std))²) with a state-independent log-std.

    Args:
        obs_dim, act_dim: sizes of observation and action.
        hidden_sizes: widths of the hidden layers (MAML's default: 100×100).
        activation: ``relu`` (MAML), ``tanh`` or ``elu``.
        init_log_std: initial log standard deviation of every action dimension.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes=(100, 100),
                 activation: str = "relu", init_log_std: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise UnknownNameError("activation", activation, ACTIVATIONS)
        if obs_dim < 1 or act_dim < 1 or any(int(h) < 1 for h in hidden_sizes):
            raise AdaptrlError(
                f"policy sizes must be positive: obs {obs_dim}, act {act_dim}, "
                f"hidden {tuple(hidden_sizes)}"
            )
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.init_log_std = float(init_log_std)
        sizes = (self.obs_dim, *self.hidden_sizes, self.act_dim)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.log_std = nn.Parameter(torch.full((self.act_dim,), self.init_log_std))
        for layer in self.layers[:-1]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        # a small output layer starts the policy near zero mean, the usual choice for PG methods
        nn.init.xavier_uniform_(self.layers[-1].weight, gain=0.1)
        nn.init.zeros_(self.layers[-1].bias)

    def config(self) -> dict:
        """Constructor arguments, so that a checkpoint can rebuild the network exactly."""
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "hidden_sizes": list(self.hidden_sizes), "activation": self.activation,
                "init_log_std": self.init_log_std}

    # ── parameter dicts ──
    def params(self) -> Params:
        """The module's own parameters as a dict (shared by all tasks)."""
        return dict(self.named_parameters())

    def expand_params(self, num_tasks: int, params: Params | None = None) -> Params:
        """Per-task copies (views with a leading task dim) of shared parameters."""
        params = self.params() if params is None else params
        return {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}

    def _per_task(self, params: Params) -> bool:
        return params["log_std"].dim() == 2

    # ── evaluation ──
    def forward(self, obs: torch.Tensor, params: Params | None = None):
        """Mean ``[..., act_dim]`` and log-std (broadcastable to it).

        With shared parameters ``obs`` may have any leading shape. With per-task parameters
        (leading dim T) ``obs`` must be ``[T, ..., obs_dim]``.
        """
        params = self.params() if params is None else params
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"policy expects observations of size {self.obs_dim}, "
                             f"got shape {tuple(obs.shape)}")
        act = ACTIVATIONS[self.activation]
        n = len(self.layers)
        if not self._per_task(params):
            x = obs
            for i in range(n):
                x = nn.functional.linear(x, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
                if i < n - 1:
                    x = act(x)
            return x, params["log_std"]
        T = params["log_std"].shape[0]
        if obs.shape[0] != T:
            raise ValueError(f"per-task parameters for {T} tasks, observations for {obs.shape[0]}")
        lead = obs.shape[1:-1]
        x = obs.reshape(T, -1, self.obs_dim)
        for i in range(n):
            w, b = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            if i < n - 1:
                x = act(x)
        mean = x.reshape(T, *lead, self.act_dim)
        log_std = params["log_std"].reshape(T, *([1] * len(lead)), self.act_dim)
        return mean, log_std

    def fisher_product(self, obs: torch.Tensor, params: Params, weights: torch.Tensor):
        """u ↦ F u for per-task parameters (leading dim T): the Hessian of the weighted KL
        Σ_s w_s KL(π_params(·|s) ‖ π_θ(·|s)) at θ = params, i.e. the Fisher information.

        For this Gaussian it is exact in Gauss–Newton form: F u = Σ_s w_s J_μ(s)ᵀ Σ⁻¹ J_μ(s) u
        for the mean's parameters and 2 (Σ_s w_s) u for the log-std (cross terms vanish at
        θ = params). J_μ u is propagated forward through the layers by hand from activations
        cached once; J_μᵀ(·) is one backward pass through the cached graph. That is about
        four matrix products per layer, against six or more for a double-backward HVP.

        obs: ``[T, ..., obs_dim]``; weights: ``[T, ...]`` (e.g. mask / valid steps of the task).
        Returns a callable mapping a dict of tangents (shapes of ``params``) to a dict.
        """
        if not self._per_task(params):
            raise ValueError("fisher_product takes per-task parameters (see expand_params)")
        T, n = params["log_std"].shape[0], len(self.layers)
        x = obs.reshape(T, -1, self.obs_dim)
        w = weights.reshape(T, -1, 1).to(x.dtype)
        names = [f"layers.{i}.{kind}" for i in range(n) for kind in ("weight", "bias")]
        leaves = {k: params[k].detach().requires_grad_() for k in names}
        inputs, slopes = [], []  # layer inputs and activation derivatives, for the tangent pass
        with torch.enable_grad():
            for i in range(n):
                inputs.append(x)
                z = torch.baddbmm(leaves[f"layers.{i}.bias"].unsqueeze(1), x,
                                  leaves[f"layers.{i}.weight"].transpose(1, 2))
                if i < n - 1:
                    x = ACTIVATIONS[self.activation](z)
                    slopes.append(_activation_slope(self.activation, z.detach(), x.detach()))
                else:
                    mean = z
        precision = torch.exp(-2 * params["log_std"].detach()).unsqueeze(1)  # [T, 1, act]
        total_weight = w.sum(1)  # [T, 1]

        def product(tangent: Params) -> Params:
            dx = None
            for i in range(n):
                dw, db = tangent[f"layers.{i}.weight"], tangent[f"layers.{i}.bias"]
                dz = torch.baddbmm(db.unsqueeze(1), inputs[i], dw.transpose(1, 2))
                if dx is not None:
                    dz = dz + torch.bmm(dx, leaves[f"layers.{i}.weight"].detach().transpose(1, 2))
                dx = dz * slopes[i] if i < n - 1 else dz
            grads = torch.autograd.grad(mean, [leaves[k] for k in names],
                                        grad_outputs=dx * precision * w, retain_graph=True)
            out = dict(zip(names, grads))
            out["log_std"] = 2 * total_weight * tangent["log_std"]
            return {k: out[k] for k in params}

        return product

    def log_prob(self, obs, actions, params: Params | None = None) -> torch.Tensor:
        """log π(a|s) summed over action dims, ``[...]``."""
        mean, log_std = self(obs, params)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self, params: Params | None = None) -> torch.Tensor:
        params = self.params() if params is None else params
        return (params["log_std"] + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)

    def kl(self, obs, params_old: Params, params_new: Params) -> torch.Tensor:
        """KL(π_old(·|s) ‖ π_new(·|s)) per state, ``[...]``."""
        mean0, log_std0 = self(obs, params_old)
        mean1, log_std1 = self(obs, params_new)
        var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
        return (log_std1 - log_std0 + (var0 + (mean0 - mean1) ** 2) / (2 * var1) - 0.5).sum(-1)

    @torch.no_grad()
    def sample(self, obs, params: Params | None = None, generator: torch.Generator | None = None,
               deterministic: bool = False) -> torch.Tensor:
        """Actions ``[..., act_dim]`` (the mean when ``deterministic``)."""
        mean, log_std = self(obs, params)
        if deterministic:
            return mean
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + noise * torch.exp(log_std)

    def actor(self, params: Params | None = None, deterministic: bool = False):
        """A callable ``(obs [T, N, obs_dim], generator) -> actions`` for the sampler."""
        return lambda obs, generator: self.sample(obs, params, generator, deterministic)
