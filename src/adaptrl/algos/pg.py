"""Shared machinery of the gradient-based methods (MAML, FOMAML, Reptile and their baselines).

Adaptation is a pure function over per-task parameter dicts: one REINFORCE step with the linear
feature baseline,

    θ'_i = θ_i − α ∇_θ L_i(θ_i),   L_i(θ) = −(1/M_i) Σ_{n,t} m_{nt} log π_θ(a_{nt}|s_{nt}) Â_{nt}

computed for all T tasks in one backward pass (the loss is a sum over tasks, each task's term
depends only on its own slice of the per-task parameters). Two implementations, tested equal:
``inner_update`` by autograd (``create_graph=True`` keeps the graph for a second-order
reference) and ``inner_loss_curvature`` + ``gradient_step`` by hand on a cached forward pass
(`adaptrl.nets.curvature`), which MAML's training uses because the same pass then serves the
inner loss's Hessian products.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..nets import GaussianMLPPolicy, Params
from ..nets.curvature import MLPTrace, neg_log_prob_curvature
from ..optim import TRPOOptions, flat_dict, trpo_step, unflat_dict
from ..sampling import Episodes, LinearFeatureBaseline
from .base import Adapted, BaseConfig, MetaAlgorithm, option, sorted_budgets


@dataclass
class PGConfig(TRPOOptions, BaseConfig):
    """Settings shared by the policy-gradient meta-learners (MAML defaults); the TRPO step's
    fields come from `TRPOOptions` (listed after `BaseConfig`'s); ``validate()`` is
    `BaseConfig`'s (every declared range)."""

    inner_lr: float = option(0.1, "inner (adaptation) step size α", ge=0)
    inner_steps: int = option(1, "adaptation steps during meta-training", ge=0)
    normalize_advantages: bool = option(True, "centre and scale advantages per task")
    init_log_std: float = option(0.0, "initial log standard deviation of the policy")
    cg_subsample: float = option(1.0, "fraction of each task's episodes used for the curvature "
                                 "(Fisher/Hessian-vector) products of the TRPO step", gt=0, le=1)


def subsample_episodes(episodes: Episodes, fraction: float) -> Episodes:
    """The first ⌈fraction·N⌉ episodes of every task (episodes are i.i.d., so a prefix is an
    unbiased subsample and needs no random draw); used for cheaper curvature products, as in
    rllab's conjugate-gradient optimizer."""
    if fraction >= 1.0:
        return episodes
    keep = max(1, int(np.ceil(fraction * episodes.num_episodes)))
    return dataclasses.replace(
        episodes, obs=episodes.obs[:, :keep], actions=episodes.actions[:, :keep],
        rewards=episodes.rewards[:, :keep], next_obs=episodes.next_obs[:, :keep],
        mask=episodes.mask[:, :keep], terminated=episodes.terminated[:, :keep])


def per_task_vectors(v: torch.Tensor, like: Params) -> list[torch.Tensor]:
    """A flat θ-space vector ``[P]`` as per-task views shaped like ``like`` (leading dim T)."""
    T = next(iter(like.values())).shape[0]
    shapes = [p.shape[1:] for p in like.values()]
    parts = torch.split(v, [s.numel() for s in shapes])
    return [p.reshape(s).unsqueeze(0).expand(T, *s) for p, s in zip(parts, shapes)]


def step_weights(mask: torch.Tensor) -> torch.Tensor:
    """``mask [T, N, H]`` divided by each task's number of valid steps: the weights of a
    per-task mean over valid steps."""
    return mask / mask.sum((1, 2), keepdim=True).clamp_min(1.0)


def task_fisher(policy, episodes: Episodes, obs: torch.Tensor, params: Params):
    """The Fisher product of each task's policy over its valid steps (mean KL per task)."""
    return policy.fisher_product(obs, params, step_weights(episodes.mask))


def masked_task_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each task's valid steps: ``x, mask [T, N, H]`` → ``[T]``."""
    return (x * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1.0)


def normalize_per_task(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Advantages ``[T, N, H]`` centred and scaled over each task's valid steps (0 elsewhere)."""
    mean = masked_task_mean(adv, mask)[:, None, None]
    var = masked_task_mean((adv - mean) ** 2, mask)[:, None, None]
    return (adv - mean) / (var.sqrt() + 1e-8) * mask


def per_task_trpo_step(policy, theta: Params, episodes: Episodes, advantages: torch.Tensor,
                       *, max_kl: float, cg_iters: int, cg_damping: float,
                       backtrack_ratio: float, max_backtracks: int) -> dict:
    """One TRPO step of per-task parameters ``theta`` (leaves ``[T, ...]``, updated in place)
    on each task's own episodes ``[T, N, H]``: surrogate and KL are the mean over tasks of the
    per-task means, so the Fisher matrix is block-diagonal and each task's direction is its
    own natural gradient under one shared trust region. Returns `trpo_step`'s info."""
    obs, actions, mask = episodes.obs, episodes.actions, episodes.mask
    old = {k: v.detach().clone() for k, v in theta.items()}
    with torch.no_grad():
        old_logp = policy.log_prob(obs, actions, old)

    def surrogate():
        ratio = torch.exp(policy.log_prob(obs, actions, theta) - old_logp)
        return -masked_task_mean(ratio * advantages, mask).mean()

    def mean_kl():
        return masked_task_mean(policy.kl(obs, old, theta), mask).mean()

    fisher = task_fisher(policy, episodes, obs, old)
    T = episodes.num_tasks

    def fvp(v):
        return flat_dict(fisher(unflat_dict(v, old))) / T

    return trpo_step(theta, surrogate, mean_kl, max_kl=max_kl, cg_iters=cg_iters,
                     cg_damping=cg_damping, backtrack_ratio=backtrack_ratio,
                     max_backtracks=max_backtracks, fvp=fvp)


class PolicyGradientMethod(MetaAlgorithm):
    """A Gaussian MLP policy adapted by REINFORCE steps; subclasses define meta-training.

    ``condition_on_task`` appends ψ to the observation (the task-conditioned oracle).
    """

    Config = PGConfig
    condition_on_task = False

    def __init__(self, family, config: PGConfig):
        super().__init__(family, config)
        obs_dim = family.obs_dim + (family.task_dim if self.condition_on_task else 0)
        self.policy = GaussianMLPPolicy(obs_dim, family.act_dim, tuple(config.hidden_sizes),
                                        config.activation, config.init_log_std)

    # ── sampling ──
    def actor(self, params: Params | None, tasks: np.ndarray | None = None,
              deterministic: bool = False):
        """Sampler callable for ``params`` (shared or per task)."""
        if not self.condition_on_task:
            return self.policy.actor(params, deterministic)
        psi = torch.as_tensor(tasks, dtype=torch.float32)[:, None, :]

        def act(obs, generator):
            full = torch.cat([obs, psi.expand(*obs.shape[:-1], psi.shape[-1])], dim=-1)
            return self.policy.sample(full, params, generator, deterministic)

        return act

    def policy_obs(self, episodes: Episodes, next_obs: bool = False) -> torch.Tensor:
        """The observations the policy sees (with ψ appended for the oracle)."""
        obs = episodes.next_obs if next_obs else episodes.obs
        if not self.condition_on_task:
            return obs
        psi = torch.as_tensor(episodes.tasks, dtype=torch.float32)[:, None, None, :]
        return torch.cat([obs, psi.expand(*obs.shape[:-1], psi.shape[-1])], dim=-1)

    # ── advantages and the adaptation step ──
    def advantages(self, episodes: Episodes) -> torch.Tensor:
        """Per-task baseline fit, GAE, optional per-task normalisation; ``[T, N, H]``."""
        cfg = self.config
        # refitted on every batch, one regression per task: the baseline carries no state
        baseline = LinearFeatureBaseline().fit(episodes, cfg.gamma)
        adv = episodes.gae(baseline.predict(episodes), cfg.gamma, cfg.gae_lambda)
        if cfg.normalize_advantages:
            adv = normalize_per_task(adv, episodes.mask)
        return adv.detach()

    def inner_loss(self, params: Params, episodes: Episodes, advantages: torch.Tensor
                   ) -> torch.Tensor:
        """REINFORCE loss per task ``[T]`` for per-task ``params``."""
        logp = self.policy.log_prob(self.policy_obs(episodes), episodes.actions, params)
        return -masked_task_mean(logp * advantages, episodes.mask)

    def inner_loss_curvature(self, params: Params, episodes: Episodes, advantages: torch.Tensor,
                             products: bool = True):
        """The inner loss's gradient and (unless ``products=False``) Hessian products per task,
        by hand (`adaptrl.nets.curvature.neg_log_prob_curvature`)."""
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
        sampler = self.sampler(T)
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
            episodes = sampler.sample(self.actor(params, tasks), tasks, rng)
            samples += episodes.mask.sum((1, 2)).numpy()
            params = {k: v.detach() for k, v in
                      self.inner_update(params, episodes, self.advantages(episodes)).items()}
        return [results[b] for b in requested]

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
