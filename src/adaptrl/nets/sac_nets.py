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
from ..sampling.policy import MemorylessPolicy, PolicySnapshot, class_path, snapshot_tensors
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
        return tanh_gaussian_sample(mean, log_std, generator, deterministic)


class TanhGaussianRollout(MemorylessPolicy):
    """A `TanhGaussianActor` as a sampler policy acting in [-1, 1] (wrap it in
    `adaptrl.sampling.ScaleActions` for the environment's box); the mean action when
    ``deterministic``."""

    def __init__(self, net: TanhGaussianActor, deterministic: bool = False):
        self.net, self.deterministic = net, bool(deterministic)

    def act(self, obs, generator=None):
        with torch.no_grad():
            return self.net.sample(obs.to(torch.float32), generator, self.deterministic)[0]

    def snapshot(self) -> PolicySnapshot:
        return PolicySnapshot(class_path(type(self)),
                              {"net": self.net.config(), "deterministic": self.deterministic},
                              snapshot_tensors(self.net.state_dict()))

    @classmethod
    def from_snapshot(cls, snapshot: PolicySnapshot) -> TanhGaussianRollout:
        with torch.random.fork_rng(devices=[]):
            net = TanhGaussianActor(**snapshot.spec["net"])
        net.load_state_dict(snapshot.tensors)
        return cls(net, snapshot.spec["deterministic"])


def tanh_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor,
                         generator: torch.Generator | None = None,
                         deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """a = tanh(u), u ~ N(mean, exp(log_std)²): the action ``[..., act_dim]`` and log π(a)
    ``[...]`` by the change of variables (SAC paper, appendix C). ``deterministic`` takes u =
    mean. Reparameterised, so differentiable in ``mean`` and ``log_std``."""
    if deterministic:
        pre_tanh = mean
    else:
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype,
                            device=mean.device)
        pre_tanh = mean + noise * log_std.exp()
    z = (pre_tanh - mean) * torch.exp(-log_std)
    gaussian = -0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)
    log_prob = (gaussian - tanh_log_det_jacobian(pre_tanh)).sum(-1)
    return torch.tanh(pre_tanh), log_prob


class LinearHeadActor(nn.Module):
    """FLAP's policy: shared layers φ(s) ``[..., F]``, then a task-specific linear output layer.

    The output layer of task i is a matrix ``W_i [2·act_dim, F + 1]`` (last column: bias) giving
    the pre-tanh mean and log σ: ``[μ, log σ] = W_i [φ(s); 1]``. During meta-training the heads
    of the ``num_tasks`` training tasks are parameters (``self.heads [num_tasks, 2·act_dim,
    F + 1]``); at meta-test time a head comes from elsewhere (FLAP's adapter) and is passed to
    `sample_with_heads`.

    `sample(obs, ...)` follows the `TanhGaussianActor` interface used by `adaptrl.optim.SAC`:
    the last ``num_tasks`` numbers of ``obs`` are the one-hot index of the training task, which
    selects the head (the critics see the same one-hot, so they are task-conditioned).
    """

    def __init__(self, obs_dim: int, act_dim: int, num_tasks: int, hidden_sizes=(256, 256),
                 activation: str = "relu", log_std_bounds=(-20.0, 2.0)):
        super().__init__()
        self.hidden_sizes = _check_sizes("actor", obs_dim, act_dim, hidden_sizes)
        if num_tasks < 1:
            raise AdaptrlError(f"FLAP needs at least one training task, got {num_tasks}")
        self.obs_dim, self.act_dim, self.num_tasks = int(obs_dim), int(act_dim), int(num_tasks)
        self.activation = activation
        low, high = (float(b) for b in log_std_bounds)
        if not low < high:
            raise AdaptrlError(f"log_std_bounds must be increasing, got {tuple(log_std_bounds)}")
        self.log_std_bounds = (low, high)
        self.trunk = MLP((self.obs_dim, *self.hidden_sizes), activation)
        features = self.hidden_sizes[-1]
        # every head starts as the same small layer (nn.Linear's initialisation, shrunk), so
        # all tasks begin from one policy
        first = nn.Linear(features, 2 * self.act_dim)
        with torch.no_grad():
            w = torch.cat([first.weight, first.bias[:, None]], dim=1) * 0.1
        self.heads = nn.Parameter(w.expand(self.num_tasks, -1, -1).clone())

    @property
    def head_shape(self) -> tuple[int, int]:
        """``(2·act_dim, F + 1)``: one task's output layer, bias in the last column."""
        return tuple(self.heads.shape[1:])

    def config(self) -> dict:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "num_tasks": self.num_tasks,
                "hidden_sizes": list(self.hidden_sizes), "activation": self.activation,
                "log_std_bounds": list(self.log_std_bounds)}

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """φ(s) ``[..., F]``: the shared layers with the activation after the last one."""
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"actor expects observations of size {self.obs_dim}, "
                             f"got shape {tuple(obs.shape)}")
        return self.trunk.act(self.trunk(obs))

    def distribution(self, obs: torch.Tensor, heads: torch.Tensor):
        """Mean and clamped log σ ``[K, ..., act_dim]`` for ``obs [K, ..., obs_dim]`` and one
        head per leading index, ``heads [K, 2·act_dim, F + 1]`` (one batched matrix product)."""
        if heads.dim() != 3 or heads.shape[1:] != self.heads.shape[1:] \
                or heads.shape[0] != obs.shape[0]:
            raise ValueError(f"heads must be [{obs.shape[0]}, {self.heads.shape[1]}, "
                             f"{self.heads.shape[2]}] for observations {tuple(obs.shape)}, "
                             f"got {tuple(heads.shape)}")
        phi = self.features(obs)
        flat = phi.reshape(phi.shape[0], -1, phi.shape[-1])            # [K, M, F]
        out = torch.baddbmm(heads[:, None, :, -1], flat, heads[..., :-1].transpose(1, 2))
        mean, log_std = out.reshape(*phi.shape[:-1], -1).chunk(2, dim=-1)
        return mean, log_std.clamp(*self.log_std_bounds)

    def sample_with_heads(self, obs: torch.Tensor, heads: torch.Tensor,
                          generator: torch.Generator | None = None,
                          deterministic: bool = False):
        """Action and log π for ``obs [K, ..., obs_dim]`` with ``heads [K, 2·act_dim, F+1]``."""
        return tanh_gaussian_sample(*self.distribution(obs, heads), generator, deterministic)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None,
               deterministic: bool = False):
        """``obs [..., obs_dim + num_tasks]``: state and one-hot training-task index (the SAC
        interface). A batch ``[K, B, ...]`` whose rows each hold one task (as
        `ReplayBuffer.sample` gives) takes one batched product; any other layout evaluates
        each observation with its own head."""
        state, one_hot = obs[..., :self.obs_dim], obs[..., self.obs_dim:]
        if one_hot.shape[-1] != self.num_tasks:
            raise ValueError(f"expected {self.obs_dim} observation numbers and a one-hot of "
                             f"{self.num_tasks} tasks, got shape {tuple(obs.shape)}")
        index = one_hot.argmax(-1)
        rows = index.reshape(index.shape[0], -1) if index.dim() else index.reshape(1, 1)
        if index.dim() >= 1 and bool((rows == rows[:, :1]).all()):
            return self.sample_with_heads(state, self.heads[rows[:, 0]], generator,
                                          deterministic)
        flat = state.reshape(-1, 1, self.obs_dim)
        action, log_prob = self.sample_with_heads(flat, self.heads[index.reshape(-1)],
                                                  generator, deterministic)
        return (action.reshape(*state.shape[:-1], self.act_dim),
                log_prob.reshape(state.shape[:-1]))


class HeadRollout(MemorylessPolicy):
    """FLAP's policy with one given head per task, ``heads [T, 2·act_dim, F + 1]``, as a
    sampler policy acting in [-1, 1]."""

    def __init__(self, net: LinearHeadActor, heads: torch.Tensor, deterministic: bool = False):
        self.net, self.heads, self.deterministic = net, heads, bool(deterministic)

    def act(self, obs, generator=None):
        with torch.no_grad():
            return self.net.sample_with_heads(obs, self.heads, generator, self.deterministic)[0]

    def snapshot(self) -> PolicySnapshot:
        # the shared layers travel; the training tasks' own heads stay behind
        shared = {k: v for k, v in self.net.state_dict().items() if k != "heads"}
        return PolicySnapshot(class_path(type(self)),
                              {"net": self.net.config(), "deterministic": self.deterministic},
                              snapshot_tensors({**shared, "task_heads": self.heads}))

    @classmethod
    def from_snapshot(cls, snapshot: PolicySnapshot) -> HeadRollout:
        with torch.random.fork_rng(devices=[]):
            net = LinearHeadActor(**snapshot.spec["net"])
        tensors = dict(snapshot.tensors)
        heads = tensors.pop("task_heads")
        net.load_state_dict({**tensors, "heads": net.heads.detach()})
        return cls(net, heads, snapshot.spec["deterministic"])


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
