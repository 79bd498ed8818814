"""The action heads shared by the sequence policies (`GRUPolicy`, `SNAILPolicy`): a Gaussian
over continuous actions (mean from the network, a state-independent log-std parameter) or a
categorical over one-hot actions (logits from the network).

A network using `ActionHead` sets ``self.head`` ("gaussian" or "categorical") and
``self.act_dim``, and its ``forward(inputs, params)`` returns the head's output ``[..., act_dim]``
(mean or logits) with the log-std (broadcastable; None for the categorical head).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .policy import Params, gaussian_kl, gaussian_log_prob

HEADS = ("gaussian", "categorical")


class ActionHead:
    """Mixin: log-probabilities, entropies, KL and sampling of the head (see the module)."""

    head: str
    act_dim: int

    def _log_prob(self, out, log_std, actions):
        if self.head == "categorical":
            return (actions * torch.log_softmax(out, -1)).sum(-1)
        return gaussian_log_prob(out, log_std, actions)

    def _entropy(self, out, log_std):
        if self.head == "categorical":
            logp = torch.log_softmax(out, -1)
            return -(logp.exp() * logp).sum(-1)
        return (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).expand(out.shape[:-1])

    def log_prob(self, inputs, actions, params: Params | None = None) -> torch.Tensor:
        """log π(a_t | history) ``[T, N, L]``."""
        return self._log_prob(*self(inputs, params), actions)

    def kl(self, inputs, params_old: Params, params_new: Params) -> torch.Tensor:
        """KL(π_old ‖ π_new) at every step of the histories, ``[T, N, L]``."""
        old, log_std_old = self(inputs, params_old)
        new, log_std_new = self(inputs, params_new)
        if self.head == "categorical":
            lp_old, lp_new = torch.log_softmax(old, -1), torch.log_softmax(new, -1)
            return (lp_old.exp() * (lp_old - lp_new)).sum(-1)
        return gaussian_kl(old, log_std_old, new, log_std_new)

    def entropy(self, params: Params | None = None) -> torch.Tensor:
        """The Gaussian head's entropy (state-independent); ``evaluate`` gives per-step
        entropies of either head."""
        params = self.params() if params is None else params
        return (params["log_std"] + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)

    def sample_actions(self, out: torch.Tensor, log_std, generator, deterministic: bool
                       ) -> torch.Tensor:
        """Actions from the head's output ``out [..., act_dim]``: one-hot of a draw from the
        softmax (its argmax when ``deterministic``), or mean + noise·σ (the mean)."""
        if self.head == "categorical":
            if deterministic:
                index = out.argmax(-1)
            else:
                probs = torch.softmax(out, -1).reshape(-1, self.act_dim)
                index = torch.multinomial(probs, 1, generator=generator).reshape(out.shape[:-1])
            return nn.functional.one_hot(index, self.act_dim).to(out.dtype)
        if deterministic:
            return out
        noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
        return out + noise * torch.exp(log_std)
