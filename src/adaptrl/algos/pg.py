"""Shared machinery of the gradient-based methods (MAML, FOMAML, Reptile and their baselines).

Adaptation is a pure function over per-task parameter dicts: one REINFORCE step with the linear
feature baseline,

    θ'_i = θ_i − α ∇_θ L_i(θ_i),   L_i(θ) = −(1/M_i) Σ_{n,t} m_{nt} log π_θ(a_{nt}|s_{nt}) Â_{nt}

computed for all T tasks in one backward pass (the loss is a sum over tasks, each task's term
depends only on its own slice of the per-task parameters). Two implementations, tested equal:
``inner_update`` by autograd (``create_graph=True`` keeps the graph for a second-order
reference; any policy network) and ``inner_loss_curvature`` + ``gradient_step`` by hand on a
cached forward pass (`adaptrl.nets.curvature`, the Gaussian MLP only), which MAML's training uses
because the same pass then serves the inner loss's Hessian products.

The policy network is a Gaussian MLP (``policy: mlp``) or a GRU over the observations and the
previous action, reward and done flag (``policy: gru``, `adaptrl.nets.GaussianGRUPolicy`); both
take shared or per-task parameter dicts and read ``policy.inputs(obs, episodes)``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..errors import AdaptrlError
from ..nets import CategoricalGRUPolicy, GaussianGRUPolicy, GaussianMLPPolicy, Params
from ..nets.curvature import MLPTrace, neg_log_prob_curvature
from ..optim import TRPOOptions, estimate_advantages, masked_task_mean, step_weights
from ..sampling import AppendToObservation, Episodes, Policy
from .base import Adapted, BaseConfig, MetaAlgorithm, option, sorted_budgets


@dataclass
class PGConfig(TRPOOptions, BaseConfig):
    """Settings shared by the policy-gradient meta-learners (MAML defaults); the TRPO step's
    fields come from `TRPOOptions` (listed after `BaseConfig`'s); ``validate()`` is
    `BaseConfig`'s (every declared range)."""

    inner_lr: float = option(0.1, "inner (adaptation) step size α", ge=0, le=100)
    inner_steps: int = option(1, "adaptation steps during meta-training", ge=0, le=1000)
    normalize_advantages: bool = option(True, "centre and scale advantages per task")
    init_log_std: float = option(0.0, "initial log standard deviation of the policy", ge=-10, le=3)
    cg_subsample: float = option(1.0, "fraction of each task's episodes used for the curvature "
                                 "(Fisher/Hessian-vector) products of the TRPO step", gt=0, le=1)
    policy: Literal["mlp", "gru"] = option(
        "mlp", "policy network: 'mlp' (Gaussian MLP with hidden_sizes and activation) or 'gru' "
        "(a GRU of width hidden_sizes[0] reading the observation and the previous action, "
        "reward and done flag)")


class PolicyGradientMethod(MetaAlgorithm):
    """A Gaussian policy network adapted by REINFORCE steps; subclasses define meta-training.

    ``condition_on_task`` appends ψ to the observation (the task-conditioned oracle).
    """

    Config = PGConfig
    condition_on_task = False
    discrete_actions = (False, True)

    def __init__(self, family, config: PGConfig, sampler=None):
        super().__init__(family, config, sampler)
        obs_dim = family.obs_dim + (family.task_dim if self.condition_on_task else 0)
        if family.discrete_actions and config.policy != "gru":
            raise AdaptrlError(f"'{family.name}' has discrete actions: gradient methods need "
                               f"the categorical recurrent policy there (--set policy=gru)")
        hidden = int(config.hidden_sizes[0])
        if config.policy == "gru" and family.discrete_actions:
            self.policy = CategoricalGRUPolicy(obs_dim, family.act_dim, hidden)
        elif config.policy == "gru":
            self.policy = GaussianGRUPolicy(obs_dim, family.act_dim, hidden, config.init_log_std)
        else:
            self.policy = GaussianMLPPolicy(obs_dim, family.act_dim, tuple(config.hidden_sizes),
                                            config.activation, config.init_log_std)

    @property
    def hand_curvature(self) -> bool:
        """Whether the hand-written gradient and curvature products apply (the Gaussian MLP);
        otherwise every derivative is taken by autograd."""
        return isinstance(self.policy, GaussianMLPPolicy)

    # ── sampling ──
    def actor(self, params: Params | None, tasks: np.ndarray | None = None,
              deterministic: bool = False) -> Policy:
        """The sampler policy for ``params`` (shared or per task; None: the network's own)."""
        policy = self.policy.actor(params, deterministic)
        if not self.condition_on_task:
            return policy
        return AppendToObservation(policy, torch.as_tensor(tasks, dtype=torch.float32))

    def policy_obs(self, episodes: Episodes, next_obs: bool = False) -> torch.Tensor:
        """The observations the policy sees (with ψ appended for the oracle)."""
        obs = episodes.next_obs if next_obs else episodes.obs
        if not self.condition_on_task:
            return obs
        psi = torch.as_tensor(episodes.tasks, dtype=torch.float32)[:, None, None, :]
        return torch.cat([obs, psi.expand(*obs.shape[:-1], psi.shape[-1])], dim=-1)

    def policy_inputs(self, episodes: Episodes):
        """What the network reads over ``episodes`` (`policy_obs`, and the feedback for a
        recurrent network)."""
        return self.policy.inputs(self.policy_obs(episodes), episodes)

    # ── advantages and the adaptation step ──
    def advantages(self, episodes: Episodes) -> torch.Tensor:
        """Per-task baseline fit, GAE, optional per-task normalisation; ``[T, N, H]``."""
        cfg = self.config
        return estimate_advantages(episodes, cfg.gamma, cfg.gae_lambda,
                                   cfg.normalize_advantages).detach()

    def inner_loss(self, params: Params, episodes: Episodes, advantages: torch.Tensor
                   ) -> torch.Tensor:
        """REINFORCE loss per task ``[T]`` for per-task ``params``."""
        logp = self.policy.log_prob(self.policy_inputs(episodes), episodes.actions, params)
        return -masked_task_mean(logp * advantages, episodes.mask)

    def inner_loss_curvature(self, params: Params, episodes: Episodes, advantages: torch.Tensor,
                             products: bool = True):
        """The inner loss's gradient and (unless ``products=False``) Hessian products per task,
        by hand (`adaptrl.nets.curvature.neg_log_prob_curvature`; the Gaussian MLP only)."""
        weights = advantages * step_weights(episodes.mask)
        trace = MLPTrace(self.policy, self.policy_obs(episodes), params)
        return neg_log_prob_curvature(trace, episodes.actions, weights, products)

    def gradient_step(self, params: Params, curvature) -> Params:
        """θ' = θ − α ∇L_i(θ) from the loss's hand-computed gradient (``inner_loss_curvature``)."""
        grads = curvature.gradient()
        return {k: v - self.config.inner_lr * grads[k] for k, v in params.items()}

    def inner_update(self, params: Params, episodes: Episodes, advantages: torch.Tensor,
                     create_graph: bool = False) -> Params:
        """θ' = θ − α ∇L_i(θ) for every task at once (see the module docstring)."""
        with torch.enable_grad():
            # detached parameters (meta-test, Reptile) get leaf copies to differentiate
            wrt = {k: v if v.requires_grad else v.detach().requires_grad_()
                   for k, v in params.items()}
            loss = self.inner_loss(wrt, episodes, advantages).sum()
            grads = torch.autograd.grad(loss, list(wrt.values()), create_graph=create_graph)
        return {k: v - self.config.inner_lr * g for (k, v), g in zip(params.items(), grads)}

    # ── meta-test adaptation (shared by every gradient method and baseline) ──
    def adapt(self, tasks, budgets, rng):
        tasks = self.family.check_tasks(tasks)
        requested, budgets = sorted_budgets(budgets)
        if not budgets:
            return []
        T = len(tasks)
        params = {k: v.detach() for k, v in self.policy.expand_params(T).items()}
        results: dict[int, Adapted] = {}
        samples = np.zeros(T)
        start = time.perf_counter()
        for step in range(budgets[-1] + 1):
            if step in budgets:
                results[step] = Adapted(self.actor(params, tasks), samples.copy(),
                                        time.perf_counter() - start)
            if step == budgets[-1]:
                break
            episodes = self.rollout(self.actor(params, tasks), tasks, rng)
            samples += episodes.mask.sum((1, 2)).numpy()
            params = {k: v.detach() for k, v in
                      self.inner_update(params, episodes, self.advantages(episodes)).items()}
        return [results[b] for b in requested]

    def adapt_from(self, episodes, rng):
        """One meta-test step (the REINFORCE step of `adapt`) per task on recorded episodes."""
        tasks = episodes.tasks
        if self.condition_on_task:
            tasks = self.family.check_tasks(tasks)  # the oracle reads ψ: it must be known
        start = time.perf_counter()
        params = {k: v.detach() for k, v in self.policy.expand_params(episodes.num_tasks).items()}
        params = {k: v.detach() for k, v in
                  self.inner_update(params, episodes, self.advantages(episodes)).items()}
        return Adapted(self.actor(params, tasks), episodes.mask.sum((1, 2)).numpy(),
                       time.perf_counter() - start)

    # ── checkpoints ──
    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.iteration = int(state["iteration"])


def episode_metrics(prefix: str, episodes: Episodes) -> dict[str, float]:
    returns = episodes.episode_returns()
    return {f"{prefix}": float(returns.mean()),
            f"{prefix}_std": float(returns.std()) if returns.numel() > 1 else 0.0}


def trpo_metrics(info: dict) -> dict[str, float]:
    """TRPO diagnostics as floats under ``trpo/``; a refused update is logged as
    ``trpo/refused = 1`` and its reason is reported as a warning (metrics stay numeric)."""
    out = {f"trpo/{k}": float(v) for k, v in info.items() if isinstance(v, (int, float, bool))}
    out["trpo/refused"] = 0.0 if info.get("refused") is None else 1.0
    if info.get("refused") is not None:
        warnings.warn(f"TRPO refused the update: {info['refused']}", RuntimeWarning, stacklevel=2)
    return out
