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

Two implementations of the meta-update, chosen automatically: by hand on cached forward passes
(`adaptrl.nets.curvature`, the Gaussian MLP: the fast path) and by autograd (any policy network
with per-task parameters, the GRU included: the loss through the inner steps, and the KL's
Hessian products by double backward through them). ``meta_update: autograd`` forces the second
on the MLP; the tests hold the two equal there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..nets.curvature import MLPTrace, kl_curvature, log_prob, neg_log_prob_curvature
from ..nets.policy import gaussian_kl, gaussian_log_prob
from ..optim import (
    flatten,
    make_hvp,
    masked_task_mean,
    per_task_vectors,
    step_weights,
    task_fisher,
    trpo_step,
)
from ..sampling import Episodes
from .base import option
from .pg import PGConfig, PolicyGradientMethod, episode_metrics, trpo_metrics


@dataclass
class MAMLConfig(PGConfig):
    inner_steps: int = option(1, "adaptation steps during meta-training", ge=1,
                              le=1000, message="{name} must be in [1, 1000] for MAML, got {value}")
    first_order: bool = option(False, "FOMAML: treat the inner update's Jacobian as identity")
    meta_update: Literal["auto", "autograd"] = option(
        "auto", "meta-update derivatives: 'auto' = by hand for the MLP policy, autograd for "
        "other networks; 'autograd' = autograd always (slower; a reference)")


class MAML(PolicyGradientMethod):
    name = "maml"
    Config = MAMLConfig

    @property
    def hand_curvature(self) -> bool:
        return super().hand_curvature and self.config.meta_update == "auto"

    def train_step(self, rng):
        cfg = self.config
        T = cfg.meta_batch
        tasks = self.family.sample(T, rng)

        # ── inner loop: adapt with episodes of the current policy ───────────────────────────
        params = {k: v.detach() for k, v in self.policy.expand_params(T).items()}
        inner = []  # (params before the step, episodes, advantages) for each inner step
        hessians = []  # each step's loss, kept for the meta-update's Hessian products
        for _ in range(cfg.inner_steps):
            episodes = self.rollout(self.actor(params, tasks), tasks, rng)
            advantages = self.advantages(episodes)
            inner.append((params, episodes, advantages))
            if self.hand_curvature:
                hessians.append(self.inner_loss_curvature(params, episodes, advantages,
                                                          products=not cfg.first_order))
                params = self.gradient_step(params, hessians[-1])
            else:
                params = {k: v.detach() for k, v in
                          self.inner_update(params, episodes, advantages).items()}

        # ── post-adaptation episodes ─────────────────────────────────────────────────────────
        post = self.rollout(self.actor(params, tasks), tasks, rng)
        metrics = episode_metrics("return", post)
        metrics.update(episode_metrics("return_pre", inner[0][1]))

        # ── outer loop: TRPO on the post-adaptation surrogate ───────────────────────────────
        info = self.meta_update(inner, params, post, self.advantages(post), hessians or None)
        metrics.update(trpo_metrics(info))
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
        params = self.policy.expand_params(len(inner[0][1].tasks))
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
        logp = self.policy.log_prob(self.policy_inputs(post), post.actions, params)
        return -masked_task_mean(torch.exp(logp - old_logp) * post_adv, post.mask).mean()

    def post_adaptation_kl(self, inner, post: Episodes, old_params, params=None) -> torch.Tensor:
        """(1/T) Σ_i E_t[KL(π_θ'_i,old ‖ π_θ'_i(θ))] on the post-adaptation states."""
        params = self.adapted_params(inner) if params is None else params
        kl = self.policy.kl(self.policy_inputs(post), old_params, params)
        return masked_task_mean(kl, post.mask).mean()

    def meta_update(self, inner, old_params, post: Episodes, post_adv, hessians=None) -> dict:
        """One TRPO step of θ on the post-adaptation surrogate (module docstring), by hand for
        the MLP (`meta_update_by_hand`), else by autograd (`meta_update_by_autograd`)."""
        if self.hand_curvature:
            return self.meta_update_by_hand(inner, old_params, post, post_adv, hessians)
        return self.meta_update_by_autograd(inner, old_params, post, post_adv)

    def meta_update_by_autograd(self, inner, old_params, post: Episodes, post_adv) -> dict:
        """The meta-update for any policy network: the surrogate and the KL through the inner
        steps (`post_adaptation_loss`, `post_adaptation_kl`), the KL's Hessian products by
        double backward (third order through a second-order inner step)."""
        cfg = self.config
        old_params = {k: v.detach() for k, v in old_params.items()}
        with torch.no_grad():
            old_logp = self.policy.log_prob(self.policy_inputs(post), post.actions, old_params)
        params = list(self.policy.parameters())

        def loss():
            return self.post_adaptation_loss(inner, post, post_adv, old_logp)

        def kl():
            return self.post_adaptation_kl(inner, post, old_params)

        fvp = None
        if cfg.cg_subsample < 1:
            sub_inner = [(p, *_subsample(ep, adv, cfg.cg_subsample)) for p, ep, adv in inner]
            sub_post = post.subsample(cfg.cg_subsample)
            fvp = make_hvp(lambda: self.post_adaptation_kl(sub_inner, sub_post, old_params),
                           params)
        return trpo_step(params, loss, kl, fvp=fvp, **cfg.trpo_kwargs())

    def meta_update_by_hand(self, inner, old_params, post: Episodes, post_adv, hessians=None
                            ) -> dict:
        """One TRPO step of θ on the post-adaptation surrogate (module docstring), the MLP's
        fast path.

        Every product is computed by hand on cached forward passes (`adaptrl.nets.curvature`):
        the gradient Jᵀ∇_θ'L, the curvature Jᵀ F J and the line search's values; the autograd
        definitions above (`post_adaptation_loss`, `post_adaptation_kl`) are the reference the
        tests hold them to. ``hessians``: the inner losses' `LossCurvature` at each step's
        parameters, if the caller already built them (``train_step`` does, for the inner step).
        """
        cfg = self.config
        old_params = {k: v.detach() for k, v in old_params.items()}
        T = post.num_tasks
        if hessians is None and not cfg.first_order:
            hessians = [self.inner_loss_curvature(*step) for step in inner]
        post_obs = self.policy_obs(post)
        post_trace = MLPTrace(self.policy, post_obs, old_params)
        old_logp = log_prob(post_trace, post.actions).reshape(post.mask.shape)
        old_mean = post_trace.mean.reshape(*post.mask.shape, -1)
        old_log_std = old_params["log_std"][:, None, None, :]

        loss_before, grad = self.meta_gradient(hessians, post, post_adv, post_trace)

        # the curvature, on a subsample of the episodes if asked (cg_subsample = 1: all of them)
        if cfg.cg_subsample < 1:
            fvp = self.kl_hessian_product(
                [(p, *_subsample(ep, adv, cfg.cg_subsample)) for p, ep, adv in inner],
                old_params, post.subsample(cfg.cg_subsample))
        else:
            fvp = self.kl_hessian_product(inner, old_params, post, hessians,
                                          kl_curvature(post_trace, step_weights(post.mask)))

        # the line search reads values only: the loss and the KL of one candidate θ share its
        # adapted parameters and one forward pass (keyed by the tensors' in-place versions)
        cache: dict = {}

        def candidate():
            key = tuple(p._version for p in self.policy.parameters())
            if cache.get("key") != key:
                with torch.no_grad():
                    params = {k: v.detach() for k, v in self.policy.expand_params(T).items()}
                    for _, episodes, advantages in inner:
                        params = self.gradient_step(params, self.inner_loss_curvature(
                            params, episodes, advantages, products=False))
                    mean, log_std = self.policy(post_obs, params)
                    logp = gaussian_log_prob(mean, log_std, post.actions)
                    loss = -masked_task_mean(torch.exp(logp - old_logp) * post_adv, post.mask)
                    kl = gaussian_kl(old_mean, old_log_std, mean, log_std)
                    cache.update(key=key, loss=loss.mean(),
                                 kl=masked_task_mean(kl, post.mask).mean())
            return cache

        return trpo_step(list(self.policy.parameters()), lambda: candidate()["loss"],
                         lambda: candidate()["kl"], **cfg.trpo_kwargs(), fvp=fvp,
                         gradient=(loss_before, grad))

    def meta_gradient(self, hessians, post: Episodes, post_adv, post_trace: MLPTrace):
        """(L(θ_old), ∇L(θ_old) [P]) of the post-adaptation surrogate, by hand: at θ_old every
        ratio is 1, so ∇_θ'L is a REINFORCE gradient per task; the chain rule through the inner
        steps applies Jᵀ = Π (I − α H_j) in reverse order (J = I for FOMAML).

        ``hessians``: the inner losses' `LossCurvature`; ``post_trace``: the adapted policies'
        forward pass on the post-adaptation observations.
        """
        cfg, names = self.config, post_trace.keys
        weights = post_adv * step_weights(post.mask) / post.num_tasks
        outer = neg_log_prob_curvature(post_trace, post.actions, weights)
        grad = [outer.gradient()[k] for k in names]
        if not cfg.first_order:
            grad = jacobian_product(grad, list(reversed(hessians)), names, cfg.inner_lr)
        return -float(weights.sum()), flatten([g.sum(0) for g in grad])

    def kl_hessian_product(self, inner, old_params, post: Episodes, hessians=None, fisher=None):
        """v ↦ (Jᵀ F J) v (see the module docstring), for flat vectors in θ-space.

        ``hessians`` / ``fisher``: the inner losses' and the KL's `LossCurvature`, if built
        already on the same data.
        """
        alpha = self.config.inner_lr
        names = list(old_params)
        T = next(iter(old_params.values())).shape[0]
        # Fisher of each adapted policy at θ'_old: the Hessian of its mean KL over the task's
        # valid post-adaptation steps (exact Gauss–Newton form)
        if fisher is None:
            fisher = task_fisher(self.policy, self.policy_obs(post), old_params, post.mask)
        # Hessians of the inner losses at the pre-step parameters, by hand on cached traces
        # (`adaptrl.nets.curvature`; the double backward through autograd was 2–3× slower)
        if self.config.first_order:
            hessians = []
        elif hessians is None:
            hessians = [self.inner_loss_curvature(*step) for step in inner]

        def product(v: torch.Tensor) -> torch.Tensor:
            vecs = per_task_vectors(v, old_params)
            vecs = jacobian_product(vecs, hessians, names, alpha)                 # J v
            fvecs = fisher(dict(zip(names, vecs)))
            vecs = [fvecs[k] / T for k in names]                                 # F J v
            vecs = jacobian_product(vecs, list(reversed(hessians)), names, alpha)  # Jᵀ F J v
            return flatten([w.sum(0) for w in vecs])

        return product


def jacobian_product(vecs, hessians, names, alpha):
    """Π_j (I − α H_j) applied to per-task vectors (a list in the order of ``names``), the
    factors taken in the order of ``hessians``; each H_j is symmetric, so the reversed order
    gives the transpose."""
    for hessian in hessians:
        hv = hessian(dict(zip(names, vecs)))
        vecs = [v - alpha * hv[k] for v, k in zip(vecs, names)]
    return vecs


def _subsample(episodes, advantages, fraction):
    sub = episodes.subsample(fraction)
    return sub, advantages[:, :sub.num_episodes]


@dataclass
class FOMAMLConfig(MAMLConfig):
    first_order: bool = option(True, "FOMAML: treat the inner update's Jacobian as identity")


class FOMAML(MAML):
    """First-order MAML: the same algorithm with ``first_order=True``."""

    name = "fomaml"
    Config = FOMAMLConfig
