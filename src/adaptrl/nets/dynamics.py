"""A learned dynamics model T̂_φ(s, a) → s' for model-based methods (AdMRL, MB-Unif, MB-Gauss,
GrBAL, MB-MPC).

An MLP (or a small ensemble of E MLPs evaluated in one batched call) predicts the *normalized
state change*: with input normalizers (μ_s, σ_s), (μ_a, σ_a) and an output normalizer
(μ_Δ, σ_Δ) fitted on data,

    ŝ' = s + μ_Δ + σ_Δ ⊙ f_φ((s − μ_s)/σ_s, (a − μ_a)/σ_a)

and f_φ is trained by supervised regression (mean squared error on the normalized Δs, each
member on its own minibatches, as in SLBO and MBPO). Predictions are clamped to the range of the
observed states widened by ``clamp_margin`` of its width, so that a model rollout that wanders off
the data cannot blow up.

Shapes: weights are ``[E, in, out]``; ``predict(obs [..., obs_dim], act [..., act_dim])`` returns
``[..., obs_dim]``. Randomness comes only from the numpy Generator handed to `fit` (minibatch
indices) and the torch Generator handed to `predict` (which ensemble member answers).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import AdaptrlError, UnknownNameError
from .policy import ACTIVATIONS


class DynamicsModel(nn.Module):
    """An ensemble of ``ensemble_size`` MLPs ``[obs, act] → normalized Δs``.

    Args:
        obs_dim, act_dim: sizes of observation and action.
        hidden_sizes: widths of the hidden layers (SLBO: 500×500; smaller is fine on CPU).
        activation: ``relu``, ``tanh`` or ``elu``.
        ensemble_size: E ≥ 1 independently initialised and trained members.
        clamp_margin: predictions are clamped to [low − m·w, high + m·w] of the fitted states
            (w = high − low per dimension); ``inf`` disables it.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes=(200, 200),
                 activation: str = "relu", ensemble_size: int = 1, clamp_margin: float = 0.5):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise UnknownNameError("activation", activation, ACTIVATIONS)
        if min(obs_dim, act_dim, ensemble_size) < 1 or any(int(h) < 1 for h in hidden_sizes):
            raise AdaptrlError(f"dynamics model sizes must be positive: obs {obs_dim}, act "
                               f"{act_dim}, hidden {tuple(hidden_sizes)}, ensemble {ensemble_size}")
        if not clamp_margin >= 0:
            raise AdaptrlError(f"clamp_margin must be ≥ 0, got {clamp_margin}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.ensemble_size = int(ensemble_size)
        self.clamp_margin = float(clamp_margin)
        sizes = (self.obs_dim + self.act_dim, *self.hidden_sizes, self.obs_dim)
        E = self.ensemble_size
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per member
            weight = torch.empty(E, fan_in, fan_out).uniform_(-bound, bound)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.empty(E, 1, fan_out).uniform_(-bound, bound)))
        for name, dim in (("obs", self.obs_dim), ("act", self.act_dim), ("delta", self.obs_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))
        self.register_buffer("obs_low", torch.full((self.obs_dim,), -math.inf))
        self.register_buffer("obs_high", torch.full((self.obs_dim,), math.inf))

    def config(self) -> dict:
        """Constructor arguments, so that a checkpoint can rebuild the network exactly."""
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "hidden_sizes": list(self.hidden_sizes), "activation": self.activation,
                "ensemble_size": self.ensemble_size, "clamp_margin": self.clamp_margin}

    # ── normalizers ──
    @torch.no_grad()
    def fit_normalizers(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor,
                        min_std: float = 1e-6) -> None:
        """Set the input/output normalizers and the clamp range from transitions ``[M, d]``."""
        obs, act, next_obs = (x.reshape(-1, x.shape[-1]).float() for x in (obs, act, next_obs))
        if obs.shape[0] < 2:
            raise ValueError("fitting normalizers needs at least 2 transitions")
        for name, x in (("obs", obs), ("act", act), ("delta", next_obs - obs)):
            getattr(self, f"{name}_mean").copy_(x.mean(0))
            getattr(self, f"{name}_std").copy_(x.std(0).clamp_min(min_std))
        states = torch.cat([obs, next_obs])
        self.obs_low.copy_(states.min(0).values)
        self.obs_high.copy_(states.max(0).values)

    # ── evaluation ──
    def _net(self, x: torch.Tensor) -> torch.Tensor:
        """``x [E, B, in]`` → ``[E, B, obs_dim]`` (normalized Δs)."""
        return self._forward(list(self.weights), list(self.biases), x)

    def _forward(self, weights: list, biases: list, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.activation]
        n = len(weights)
        for i, (w, b) in enumerate(zip(weights, biases)):
            x = torch.baddbmm(b, x, w)
            if i < n - 1:
                x = act(x)
        return x

    # ── functional use: weights passed in, one copy per row (online adaptation, GrBAL) ──
    def weights_dict(self) -> dict[str, torch.Tensor]:
        """The network's weights by name, ``w0, b0, w1, b1, …``: leaves ``[E, in, out]`` and
        ``[E, 1, out]`` (the module's own parameters, not copies)."""
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"w{i}"], out[f"b{i}"] = w, b
        return out

    def delta_with(self, weights: dict, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Normalized Δs ``[R, n, obs_dim]`` of ``obs [R, n, obs_dim]``, ``act [R, n, act_dim]``
        under ``weights`` (leaves with leading dim R: row r uses its own copy; or 1: shared)."""
        x = self._inputs(obs, act)
        R = x.shape[0]
        n = len(self.weights)
        ws = [weights[f"w{i}"].expand(R, -1, -1) for i in range(n)]
        bs = [weights[f"b{i}"].expand(R, -1, -1) for i in range(n)]
        return self._forward(ws, bs, x)

    def loss_with(self, weights: dict, obs, act, next_obs, mask=None) -> torch.Tensor:
        """Per-row mean squared error on the normalized Δs, ``[R]``, over the transitions
        ``[R, n, d]`` where ``mask [R, n]`` is 1 (a row without any gives 0)."""
        target = (next_obs - obs - self.delta_mean) / self.delta_std
        err = ((self.delta_with(weights, obs, act) - target) ** 2).mean(-1)  # [R, n]
        if mask is None:
            return err.mean(-1)
        return (err * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)

    def predict_with(self, weights: dict, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Next states ``[R, n, obs_dim]`` under ``weights`` (see `delta_with`), clamped as
        `predict` clamps. Ensembles are not supported here (one member, E = 1)."""
        out = obs + self.delta_with(weights, obs, act) * self.delta_std + self.delta_mean
        if math.isfinite(self.clamp_margin):
            width = (self.obs_high - self.obs_low).clamp_min(0.0)
            out = torch.maximum(torch.minimum(out, self.obs_high + self.clamp_margin * width),
                                self.obs_low - self.clamp_margin * width)
        return out

    def adapt(self, weights: dict, obs, act, next_obs, mask=None,
              lr: float | dict = 0.01, steps: int = 1, differentiable: bool = False,
              first_order: bool = False) -> dict:
        """GrBAL's update rule u_ψ: ``steps`` plain SGD steps per row r on that row's
        transitions ``[R, n, d]``, θ′_r = θ − lr·∇_θ L_r(θ) (`loss_with`); leaves ``[R, ...]``.
        ``lr`` is one step size, or one per weight tensor by name (``w0``, ``b0``, …; floats or
        scalar tensors, which may require grad: a meta-learned step size).

        ``differentiable``: θ′ stays a function of ``weights`` for an outer loss (MAML); with
        ``first_order`` the inner gradients are treated as constants (first-order MAML: the
        outer gradient is ∇L(θ′) itself), otherwise the outer gradient flows through them
        (second order). Not differentiable: θ′ is detached (online use).
        """
        if self.ensemble_size != 1:
            raise AdaptrlError("online adaptation needs a single dynamics model (ensemble 1)")
        R = obs.shape[0]
        keep_graph = differentiable and not first_order
        current = {k: v.expand(R, *v.shape[1:]) for k, v in weights.items()}
        if not differentiable:
            current = {k: v.detach() for k, v in current.items()}
        with torch.enable_grad():
            for _ in range(steps):
                leaves = current if keep_graph else \
                    {k: v.detach().requires_grad_() for k, v in current.items()}
                losses = self.loss_with(leaves, obs, act, next_obs, mask)
                grads = torch.autograd.grad(losses.sum(), list(leaves.values()),
                                            create_graph=keep_graph)
                current = {k: v - (lr[k] if isinstance(lr, dict) else lr) * g
                           for (k, v), g in zip(current.items(), grads)}
        return current

    def _inputs(self, obs, act):
        return torch.cat([(obs - self.obs_mean) / self.obs_std,
                          (act - self.act_mean) / self.act_std], dim=-1)

    def members(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Every member's prediction of s', ``[E, ..., obs_dim]`` (not clamped)."""
        lead = obs.shape[:-1]
        x = self._inputs(obs, act).reshape(1, -1, self.obs_dim + self.act_dim)
        delta = self._net(x.expand(self.ensemble_size, -1, -1)) * self.delta_std + self.delta_mean
        return obs.unsqueeze(0) + delta.reshape(self.ensemble_size, *lead, self.obs_dim)

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, act: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Next state ``[..., obs_dim]`` for ``obs [..., obs_dim]``, ``act [..., act_dim]``.

        With an ensemble, each sample is answered by a member drawn uniformly with ``generator``
        (as in MBPO); without a generator, by the ensemble mean.
        """
        preds = self.members(obs, act)  # [E, ..., obs_dim]
        if self.ensemble_size == 1:
            out = preds[0]
        elif generator is None:
            out = preds.mean(0)
        else:
            pick = torch.randint(0, self.ensemble_size, obs.shape[:-1], generator=generator)
            out = torch.gather(preds, 0, pick.unsqueeze(0).unsqueeze(-1).expand(
                1, *obs.shape[:-1], self.obs_dim)).squeeze(0)
        if math.isfinite(self.clamp_margin):
            width = (self.obs_high - self.obs_low).clamp_min(0.0)
            low, high = self.obs_low - self.clamp_margin * width, \
                self.obs_high + self.clamp_margin * width
            out = torch.maximum(torch.minimum(out, high), low)
        return out

    # ── training ──
    def loss(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """Mean squared error on the normalized Δs; inputs ``[E, B, d]`` (one batch per member)
        or ``[B, d]`` (the same batch for every member)."""
        if obs.dim() == 2:
            obs, act, next_obs = (x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
                                  for x in (obs, act, next_obs))
        target = (next_obs - obs - self.delta_mean) / self.delta_std
        return ((self._net(self._inputs(obs, act)) - target) ** 2).mean()

    def fit(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, steps: int,
            batch_size: int, rng: np.random.Generator,
            optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """``steps`` minibatch updates of every member on transitions ``[M, d]``.

        Each member draws its own ``batch_size`` indices (uniform, with replacement) from
        ``rng`` at every step. Returns ``loss_first`` and ``loss_last`` (minibatch losses).
        """
        M = obs.shape[0]
        if M < 1:
            raise ValueError("cannot fit a dynamics model without data")
        if steps < 0 or batch_size < 1:
            raise ValueError(f"fit needs steps ≥ 0 and batch_size ≥ 1, got {steps}, {batch_size}")
        losses = []
        for _ in range(steps):
            index = torch.from_numpy(rng.integers(0, M, size=(self.ensemble_size, batch_size)))
            loss = self.loss(obs[index], act[index], next_obs[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        if not losses:
            return {"loss_first": math.nan, "loss_last": math.nan}
        return {"loss_first": losses[0], "loss_last": losses[-1]}

    @torch.no_grad()
    def prediction_error(self, obs, act, next_obs) -> float:
        """Mean squared one-step error of ``predict`` on held-out transitions, in units of the
        normalized Δs (so dimensions count alike)."""
        pred = self.predict(obs, act)
        return float((((pred - next_obs) / self.delta_std) ** 2).mean())


def model_training_state(model: DynamicsModel, optimizer, data) -> dict:
    """A model-based method's checkpoint entries for its model, the model's optimizer and its
    transition data (``data``: anything with ``state_dict``)."""
    return {"model": model.state_dict(), "model_config": model.config(),
            "model_opt": optimizer.state_dict(), "data": data.state_dict()}


def load_model_training_state(model: DynamicsModel, optimizer, data, state: dict) -> None:
    """Restore what `model_training_state` saved; a model of another shape is a ValueError."""
    if state["model_config"] != model.config():
        raise ValueError(f"checkpoint's dynamics model {state['model_config']} does not "
                         f"match this config's {model.config()}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["model_opt"])
    data.load_state_dict(state["data"])
