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
from ..sampling.policy import MemorylessPolicy, PolicySnapshot, class_path, snapshot_tensors
from .curvature import MLPTrace, kl_curvature

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "elu": nn.functional.elu}

Params = dict[str, torch.Tensor]


def gaussian_log_prob(mean, log_std, actions) -> torch.Tensor:
    """log N(a; mean, diag(exp(log_std))²) summed over the last dim."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mean0, log_std0, mean1, log_std1) -> torch.Tensor:
    """KL(N(mean0, σ0²) ‖ N(mean1, σ1²)) for diagonal Gaussians, summed over the last dim."""
    var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1) ** 2) / (2 * var1) - 0.5).sum(-1)


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

    def init_params(self, num_tasks: int, generator: torch.Generator) -> Params:
        """Fresh per-task parameters ``[T, ...]`` (leaf tensors requiring grad) drawn from
        ``generator`` with this network's initialisation scheme: Xavier-uniform weights (gain
        0.1 on the output layer), zero biases, log-std ``init_log_std``."""
        last = f"layers.{len(self.layers) - 1}.weight"
        out = {}
        for name, p in self.named_parameters():
            shape = (num_tasks, *p.shape)
            if name == "log_std":
                value = torch.full(shape, self.init_log_std)
            elif name.endswith("bias"):
                value = torch.zeros(shape)
            else:
                fan_out, fan_in = p.shape
                bound = (0.1 if name == last else 1.0) * math.sqrt(6.0 / (fan_in + fan_out))
                value = (torch.rand(shape, generator=generator) * 2 - 1) * bound
            out[name] = value.requires_grad_()
        return out

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
                x = nn.functional.linear(x, params[f"layers.{i}.weight"],
                                         params[f"layers.{i}.bias"])
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

        Exact in Gauss–Newton form: F u = Σ_s w_s J_μ(s)ᵀ Σ⁻¹ J_μ(s) u for the mean's parameters
        and 2 (Σ_s w_s) u for the log-std (cross terms vanish at θ = params); one forward
        tangent pass and one backward pass by hand from activations cached once
        (`adaptrl.nets.curvature`).

        obs: ``[T, ..., obs_dim]``; weights: ``[T, ...]`` (e.g. mask / valid steps of the task).
        Returns a callable mapping a dict of tangents (shapes of ``params``) to a dict.
        """
        if not self._per_task(params):
            raise ValueError("fisher_product takes per-task parameters (see expand_params)")
        return kl_curvature(MLPTrace(self, obs, params), weights)

    def log_prob(self, obs, actions, params: Params | None = None) -> torch.Tensor:
        """log π(a|s) summed over action dims, ``[...]``."""
        mean, log_std = self(obs, params)
        return gaussian_log_prob(mean, log_std, actions)

    def entropy(self, params: Params | None = None) -> torch.Tensor:
        params = self.params() if params is None else params
        return (params["log_std"] + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)

    def kl(self, obs, params_old: Params, params_new: Params) -> torch.Tensor:
        """KL(π_old(·|s) ‖ π_new(·|s)) per state, ``[...]``."""
        return gaussian_kl(*self(obs, params_old), *self(obs, params_new))

    @torch.no_grad()
    def sample(self, obs, params: Params | None = None, generator: torch.Generator | None = None,
               deterministic: bool = False) -> torch.Tensor:
        """Actions ``[..., act_dim]`` (the mean when ``deterministic``)."""
        mean, log_std = self(obs, params)
        if deterministic:
            return mean
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + noise * torch.exp(log_std)

    def actor(self, params: Params | None = None, deterministic: bool = False
              ) -> GaussianMLPActor:
        """The policy the sampler drives, acting with ``params`` (shared or per task; None:
        the module's own parameters as they are when it acts)."""
        return GaussianMLPActor(self, params, deterministic)

    def inputs(self, obs: torch.Tensor, episodes=None) -> torch.Tensor:
        """What the network reads over a batch of episodes: the observations ``[T, N, H, d]``
        (a recurrent policy also reads the episodes' feedback, see `GaussianGRUPolicy`)."""
        return obs


class NetworkActor:
    """Mixin of the sampler policies that are a network with parameters θ (shared or per
    task): the snapshot is the network's constructor arguments, θ and the deterministic flag.
    Subclasses name the network class in ``network``."""

    network: type

    def __init__(self, net, params: Params | None = None, deterministic: bool = False):
        self.net, self.params, self.deterministic = net, params, bool(deterministic)

    def current_params(self) -> Params:
        """θ: the given parameters, or the network's own as they are now."""
        return self.net.params() if self.params is None else self.params

    def snapshot(self) -> PolicySnapshot:
        return PolicySnapshot(class_path(type(self)),
                              {"net": self.net.config(), "deterministic": self.deterministic},
                              snapshot_tensors(self.current_params()))

    @classmethod
    def from_snapshot(cls, snapshot: PolicySnapshot):
        with torch.random.fork_rng(devices=[]):  # the throwaway initialisation draws
            net = cls.network(**snapshot.spec["net"])
        return cls(net, dict(snapshot.tensors), snapshot.spec["deterministic"])


class GaussianMLPActor(NetworkActor, MemorylessPolicy):
    """A `GaussianMLPPolicy` with parameters θ as a sampler policy: one batched forward pass
    per step, noise from the rollout's generator (the mean when ``deterministic``)."""

    network = GaussianMLPPolicy

    def act(self, obs, generator=None):
        return self.net.sample(obs, self.params, generator, self.deterministic)
