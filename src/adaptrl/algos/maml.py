"""MAML for RL (Finn et al. 2017) with a TRPO outer loop, and FOMAML as a flag.

One meta-iteration (Algorithm 1 of the first-order paper, ../shared/papers/002):
  1. sample T tasks ψ_i ~ p(ψ)
  2. collect N episodes per task with θ, fit the baseline, REINFORCE step: θ'_i = θ − α∇L_i(θ)
     (repeated ``inner_steps`` times, with fresh episodes after each step)
  3. collect N episodes per task with θ'_i
  4. TRPO on the post-adaptation surrogate  L(θ) = −(1/T) Σ_i E[π_θ'_i(θ)/π_θ'_i,old · Â']
     subject to  (1/T) Σ_i E[KL(π_θ'_i,old ‖ π_θ'_i(θ))] ≤ δ.
     The meta-gradient flows through the inner update (second order) unless ``first_order``.

The trust-region metric. At θ_old the gradient of the KL vanishes, so its Hessian is exactly
Jᵀ F J with J = ∂θ'/∂θ = Π_j (I − α H_j) (H_j the Hessian of the j-th inner loss) and F the
Fisher of the adapted policy. We compute the Fisher-vector product that way — two inner-loss
Hessian-vector products and one Fisher product per CG iteration — instead of differentiating the
KL gradient through the inner step (third-order graph); a test pins it to the direct product.
For FOMAML, J = I.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..optim import flatten, trpo_step
from ..sampling import Episodes
from .base import option, register_algorithm
from .pg import (PGConfig, PolicyGradientMethod, episode_metrics, masked_task_mean,
                 per_task_vectors, subsample_episodes, task_fisher, trpo_metrics)


@dataclass
class MAMLConfig(PGConfig):
    first_order: bool = option(False, "FOMAML: treat the inner update's Jacobian as identity")

    def validate(self) -> None:
        super().validate()
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be ≥ 1 for MAML, got {self.inner_steps}")


@register_algorithm
class MAML(PolicyGradientMethod):
    name = "maml"
    Config = MAMLConfig

    def train_step(self, rng):
        cfg = self.config
        T = cfg.meta_batch
        sampler = self.sampler(T)
        tasks = self.family.sample(T, rng)
        sample_s = 0.0
        start = time.perf_counter()

        # ── inner loop: adapt with episodes of the current policy ───────────────────────────
        params = {k: v.detach() for k, v in self.policy.expand_params(T).items()}
        inner = []  # (params before the step, episodes, advantages) for each inner step
        for _ in range(cfg.inner_steps):
            t0 = time.perf_counter()
            episodes = sampler.sample(self.actor(params, tasks), tasks, rng)
            sample_s += time.perf_counter() - t0
            advantages = self.advantages(episodes)
            inner.append((params, episodes, advantages))
            params = {k: v.detach() for k, v in
                      self.inner_update(params, episodes, advantages).items()}

        # ── post-adaptation episodes ─────────────────────────────────────────────────────────
        t0 = time.perf_counter()
        post = sampler.sample(self.actor(params, tasks), tasks, rng)
        sample_s += time.perf_counter() - t0
        metrics = episode_metrics("return", post)
        metrics.update(episode_metrics("return_pre", inner[0][1]))

        # ── outer loop: TRPO on the post-adaptation surrogate ───────────────────────────────
        info = self.meta_update(inner, params, post, self.advantages(post))
        metrics.update(trpo_metrics(info))
        metrics["time/sample_s"] = sample_s
        metrics["time/update_s"] = time.perf_counter() - start - sample_s
        self.iteration += 1
        return metrics

    # ── the meta-update ──────────────────────────────────────────────────────────────────────
    def adapted_params(self, inner):
        """θ'(θ) for the current policy parameters, replaying the inner steps on their data.

        With autograd recording and second order, the graph runs through the inner gradients.
        """
        recording = torch.is_grad_enabled()
        second_order = recording and not self.config.first_order
        if not inner:
            raise ValueError("MAML needs inner_steps ≥ 1 (use 'pretrain' for no inner loop)")
        params = self.policy.expand_params(len(inner[0][1].params))
        if not recording:  # values only: plain tensors (views made under no_grad can't be
            params = {k: v.detach() for k, v in params.items()}  # differentiated)
        for _, episodes, advantages in inner:
            params = self.inner_update(params, episodes, advantages, create_graph=second_order)
        return params

    def post_adaptation_loss(self, inner, post: Episodes, post_adv, old_logp, params=None
                             ) -> torch.Tensor:
        """L(θ) = −(1/T) Σ_i E_t[π_θ'_i(θ)(a|s) / π_old(a|s) · Â'] on the post-adaptation data
        (``params``: θ'(θ) if already computed)."""
        params = self.adapted_params(inner) if params is None else params
        logp = self.policy.log_prob(self.policy_obs(post), post.actions, params)
        return -masked_task_mean(torch.exp(logp - old_logp) * post_adv, post.mask).mean()

    def post_adaptation_kl(self, inner, post: Episodes, old_params, params=None) -> torch.Tensor:
        """(1/T) Σ_i E_t[KL(π_θ'_i,old ‖ π_θ'_i(θ))] on the post-adaptation states."""
        params = self.adapted_params(inner) if params is None else params
        kl = self.policy.kl(self.policy_obs(post), old_params, params)
        return masked_task_mean(kl, post.mask).mean()

    def meta_update(self, inner, old_params, post: Episodes, post_adv) -> dict:
        old_params = {k: v.detach() for k, v in old_params.items()}
        with torch.no_grad():
            old_logp = self.policy.log_prob(self.policy_obs(post), post.actions, old_params)
        # TRPO differentiates the first surrogate evaluation only; the line search just reads
        # values, so later evaluations skip the second-order graph, and the loss and the KL of
        # one candidate θ share its adapted parameters (keyed by the tensors' in-place versions)
        differentiate = [True]
        cache: dict = {}

        def adapted_values():
            key = tuple(p._version for p in self.policy.parameters())
            if cache.get("key") != key:
                with torch.no_grad():
                    cache.update(key=key, params=self.adapted_params(inner))
            return cache["params"]

        def surrogate():
            if differentiate[0]:
                differentiate[0] = False
                return self.post_adaptation_loss(inner, post, post_adv, old_logp)
            with torch.no_grad():
                return self.post_adaptation_loss(inner, post, post_adv, old_logp,
                                                 adapted_values())

        def mean_kl():  # read as a value only: the trust-region metric is `fvp`
            with torch.no_grad():
                return self.post_adaptation_kl(inner, post, old_params, adapted_values())

        # curvature products on a subsample of the episodes (cg_subsample = 1: all of them)
        fraction = self.config.cg_subsample

        def subsample(episodes, advantages):
            sub = subsample_episodes(episodes, fraction)
            return sub, advantages[:, :sub.num_episodes]

        curvature_inner = [(p, *subsample(ep, adv)) for p, ep, adv in inner]
        curvature_post = subsample_episodes(post, fraction)
        fvp = self.kl_hessian_product(curvature_inner, old_params, curvature_post)
        cfg = self.config
        return trpo_step(list(self.policy.parameters()), surrogate, mean_kl, max_kl=cfg.max_kl,
                         cg_iters=cfg.cg_iters, cg_damping=cfg.cg_damping,
                         backtrack_ratio=cfg.ls_backtrack_ratio,
                         max_backtracks=cfg.ls_max_steps, fvp=fvp)

    def kl_hessian_product(self, inner, old_params, post: Episodes):
        """v ↦ (Jᵀ F J) v (see the module docstring), for flat vectors in θ-space."""
        policy, alpha = self.policy, self.config.inner_lr
        names = list(old_params)
        T = next(iter(old_params.values())).shape[0]

        # Fisher of each adapted policy at θ'_old: the Hessian of its mean KL over the task's
        # valid post-adaptation steps (exact Gauss–Newton form, see GaussianMLPPolicy)
        fisher = task_fisher(policy, post, self.policy_obs(post), old_params)

        # Hessians of the inner losses, one leaf copy of the pre-step parameters per step; each
        # product is a double backward through the kept inner-gradient graph (a hand-written
        # R-operator pass was measured slower: 0.14 s vs 0.11 s per product on point-nav)
        inner_grads = []
        if not self.config.first_order:
            for params, episodes, advantages in inner:
                at = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
                loss = self.inner_loss(at, episodes, advantages).sum()
                grads = torch.autograd.grad(loss, list(at.values()), create_graph=True)
                inner_grads.append((list(at.values()), grads))

        def jacobian_product(vecs, order):  # Π (I − α H_j) applied to per-task vectors
            for wrt, grads in order:
                dot = sum((g * v).sum() for g, v in zip(grads, vecs))
                hv = torch.autograd.grad(dot, wrt, retain_graph=True)
                vecs = [v - alpha * h for v, h in zip(vecs, hv)]
            return vecs

        def product(v: torch.Tensor) -> torch.Tensor:
            vecs = per_task_vectors(v, old_params)
            vecs = jacobian_product(vecs, inner_grads)                       # J v
            fvecs = fisher(dict(zip(names, vecs)))
            vecs = [fvecs[k] / T for k in names]                            # F J v
            vecs = jacobian_product(vecs, list(reversed(inner_grads)))       # Jᵀ F J v
            return flatten([w.sum(0) for w in vecs])

        return product


@dataclass
class FOMAMLConfig(MAMLConfig):
    first_order: bool = option(True, "FOMAML: treat the inner update's Jacobian as identity")


@register_algorithm
class FOMAML(MAML):
    """First-order MAML: the same algorithm with ``first_order=True``."""

    name = "fomaml"
    Config = FOMAMLConfig
