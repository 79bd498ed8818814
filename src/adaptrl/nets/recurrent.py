"""Recurrent policies: a GRU over the history of a trial, usable with per-task parameters.

At step t the network reads x_t = [s_t, a_{t−1}, r_{t−1}, d_{t−1}] (RL²'s inputs: the previous
action, reward and done flag, zeros at the start of a trial), updates its hidden state

    h_t = GRU(x_t, h_{t−1})          (PyTorch's GRU cell equations, h_0 = 0)

and acts with a head on h_t: Gaussian, π(a_t | history) = N(W h_t + b, diag(exp(log_std))²)
(`GaussianGRUPolicy`), or categorical over one-hot actions, π = softmax(W h_t + b)
(`CategoricalGRUPolicy`, discrete families); optionally a value head V(h_t) = wᵀh_t + c for
actor-critic training (RL² with PPO). The hidden state carries across the episodes of a trial, so
the policy can remember what earlier episodes taught it.

Parameters are plain dicts like `GaussianMLPPolicy`'s: shared, or with a leading task dimension T
(``expand_params``), evaluated in one batched call with ``baddbmm``, so the gradient-based
methods adapt and differentiate it through the same `log_prob` / `kl` interface (by autograd:
the hand-written curvature of `adaptrl.nets.curvature` covers the MLP only). Over a batch of
episodes the network reads `inputs(obs, episodes)`: the observations and the feedback the
sampler fed it (`Episodes.feedback`), and the step mask, which holds the state where an episode
is over, exactly as the sampler does.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import AdaptrlError
from ..sampling.policy import Policy
from .heads import HEADS, ActionHead
from .policy import NetworkActor, Params


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x Wᵀ + b for shared (``weight [o, i]``) or per-task (``weight [T, o, i]``, ``x
    [T, ..., i]``) parameters."""
    if weight.dim() == 2:
        return nn.functional.linear(x, weight, bias)
    T = weight.shape[0]
    flat = x.reshape(T, -1, x.shape[-1])
    out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.reshape(*x.shape[:-1], weight.shape[1])


class GRUPolicy(ActionHead, nn.Module):
    """See the module docstring. ``hidden_size``: width of the GRU state; ``head``: gaussian or
    categorical; ``value_head``: also a state-value output (``values`` / `evaluate`)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_size: int = 64,
                 init_log_std: float = 0.0, head: str = "gaussian", value_head: bool = False):
        super().__init__()
        if min(obs_dim, act_dim, hidden_size) < 1:
            raise AdaptrlError(f"policy sizes must be positive: obs {obs_dim}, act {act_dim}, "
                               f"hidden {hidden_size}")
        if head not in HEADS:
            raise AdaptrlError(f"unknown policy head '{head}'; known: {', '.join(HEADS)}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_size = int(hidden_size)
        self.init_log_std = float(init_log_std)
        self.head, self.value_head = head, bool(value_head)
        self.input_dim = self.obs_dim + self.act_dim + 2
        self.gru = nn.GRUCell(self.input_dim, self.hidden_size)
        self.out = nn.Linear(self.hidden_size, self.act_dim)
        if head == "gaussian":
            self.log_std = nn.Parameter(torch.full((self.act_dim,), self.init_log_std))
        if self.value_head:
            self.value = nn.Linear(self.hidden_size, 1)
        with torch.no_grad():  # start near zero mean / uniform logits, like the MLP policy
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def config(self) -> dict:
        """`GRUPolicy`'s constructor arguments (the subclasses too: the general class rebuilds
        every variant)."""
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "hidden_size": self.hidden_size, "init_log_std": self.init_log_std,
                "head": self.head, "value_head": self.value_head}

    # ── parameter dicts ──
    def params(self) -> Params:
        return dict(self.named_parameters())

    def expand_params(self, num_tasks: int, params: Params | None = None) -> Params:
        params = self.params() if params is None else params
        return {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}

    # ── one step ──
    def cell(self, x: torch.Tensor, h: torch.Tensor, params: Params) -> torch.Tensor:
        """h' for inputs ``x [T, B, input_dim]`` and state ``h [T, B, hidden]``."""
        gi = _linear(x, params["gru.weight_ih"], params["gru.bias_ih"])
        gh = _linear(h, params["gru.weight_hh"], params["gru.bias_hh"])
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h

    def head_output(self, h: torch.Tensor, params: Params) -> torch.Tensor:
        """The Gaussian mean or the categorical logits, ``[..., act_dim]``."""
        return _linear(h, params["out.weight"], params["out.bias"])

    def step_inputs(self, obs, prev_action, prev_reward, prev_done) -> torch.Tensor:
        return torch.cat([obs, prev_action, prev_reward[..., None], prev_done[..., None]], -1)

    def _log_std(self, params: Params, lead: int) -> torch.Tensor:
        log_std = params["log_std"]
        if log_std.dim() == 2:  # per task: [T, 1, ..., 1, act_dim]
            return log_std.reshape(log_std.shape[0], *([1] * lead), self.act_dim)
        return log_std

    def act_from(self, h: torch.Tensor, params: Params, generator, deterministic: bool
                 ) -> torch.Tensor:
        """Actions ``[T, N, act_dim]`` from states ``h [T, N, hidden]`` (one-hot for the
        categorical head)."""
        log_std = self._log_std(params, 1) if self.head == "gaussian" else None
        return self.sample_actions(self.head_output(h, params), log_std, generator,
                                   deterministic)

    # ── a batch of episodes (or trials) ──
    def inputs(self, obs: torch.Tensor, episodes) -> tuple:
        """What the network reads over ``episodes`` (``obs``: their observations, possibly
        with extra conditioning): observations, the sampler's feedback and the step mask."""
        return (obs, *episodes.feedback(), episodes.mask)

    def unroll(self, inputs: tuple, params: Params | None = None) -> torch.Tensor:
        """The state after each step, ``[T, N, L, hidden]``, from h_0 = 0 with the state held
        on masked steps (as the sampler holds it)."""
        params = self.params() if params is None else params
        obs, prev_action, prev_reward, prev_done, mask = inputs
        x = self.step_inputs(obs, prev_action, prev_reward, prev_done)
        h = x.new_zeros(*x.shape[:2], self.hidden_size)
        states = []
        for t in range(x.shape[2]):
            new = self.cell(x[:, :, t], h, params)
            states.append(new)
            h = torch.where(mask[:, :, t, None] > 0, new, h)
        return torch.stack(states, 2)

    def state_after(self, inputs: tuple, last: torch.Tensor, params: Params | None = None):
        """The actor's state ``[T, hidden]`` after step ``last[i]`` of row ``(i, 0)`` of a batch
        of trials (its first row per task), as the sampler would have carried it."""
        return self.states_after(inputs, [last], params)[0]

    def states_after(self, inputs: tuple, lasts: list, params: Params | None = None) -> list:
        """`state_after` for several ``last`` vectors from one unroll."""
        states = self.unroll(inputs, params)[:, 0]
        rows = torch.arange(states.shape[0])
        return [states[rows, last] for last in lasts]

    def forward(self, inputs: tuple, params: Params | None = None):
        """The head's output ``[T, N, L, act_dim]`` (mean or logits) and the log-std
        (broadcastable; None for the categorical head)."""
        params = self.params() if params is None else params
        out = self.head_output(self.unroll(inputs, params), params)
        return out, (self._log_std(params, 2) if self.head == "gaussian" else None)

    def evaluate(self, inputs, actions, params: Params | None = None):
        """One unroll for actor-critic training: log π(a_t | history), the entropy of π at each
        step and V(h_t), each ``[T, N, L]`` (values need ``value_head``)."""
        params = self.params() if params is None else params
        states = self.unroll(inputs, params)
        out = self.head_output(states, params)
        log_std = self._log_std(params, 2) if self.head == "gaussian" else None
        values = (_linear(states, params["value.weight"], params["value.bias"]).squeeze(-1)
                  if self.value_head else None)
        return self._log_prob(out, log_std, actions), self._entropy(out, log_std), values

    def values(self, inputs, params: Params | None = None) -> torch.Tensor:
        """V(h_t) ``[T, N, L]`` alone, one unroll (needs ``value_head``; a separate critic)."""
        params = self.params() if params is None else params
        states = self.unroll(inputs, params)
        return _linear(states, params["value.weight"], params["value.bias"]).squeeze(-1)

    def actor(self, params: Params | None = None, deterministic: bool = False) -> GRUActor:
        """The policy the sampler drives (one GRU step per time step, state ``[T, N, hidden]``)."""
        return GRUActor(self, params, deterministic)


class GaussianGRUPolicy(GRUPolicy):
    """The GRU with a Gaussian head (continuous actions)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_size: int = 64,
                 init_log_std: float = 0.0, value_head: bool = False):
        super().__init__(obs_dim, act_dim, hidden_size, init_log_std, "gaussian", value_head)


class CategoricalGRUPolicy(GRUPolicy):
    """The GRU with a categorical head over one-hot actions (discrete families)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_size: int = 64,
                 value_head: bool = False):
        super().__init__(obs_dim, act_dim, hidden_size, 0.0, "categorical", value_head)


class GRUActor(NetworkActor, Policy):
    """A `GRUPolicy` with parameters θ (shared or per task) as a stateful sampler policy."""

    parallel_step = True  # [T·N, in] × [in, 3·hidden] products: worth every thread

    network = GRUPolicy

    def initial_state(self, num_envs):
        return torch.zeros(*num_envs, self.net.hidden_size)

    @torch.no_grad()
    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        params = self.current_params()
        x = self.net.step_inputs(obs, prev_action, prev_reward, prev_done)
        h = self.net.cell(x, state, params)
        return self.net.act_from(h, params, generator, self.deterministic), h
