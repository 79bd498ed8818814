"""Seconds per piece of MAML's TRPO step, by hand (what adaptrl runs) against autograd.

    .venv/bin/python benchmarks/curvature_products.py [--family point-nav] [--preset nav-public]

On one fixed batch of a preset, in this process, so the ratios are meaningful:

* the post-adaptation loss's second-order meta-gradient: autograd through the inner step,
  against `MAML.meta_gradient` (hand backward passes + one inner-loss Hessian product);
* one inner-loss Hessian-vector product: autograd's double backward through the inner gradient,
  against `LossCurvature` (a tangent pass + the R-operator backward, `adaptrl.nets.curvature`);
* one Fisher product: the double-backward KL Hessian-vector product, against the hand
  Gauss–Newton product;
* one KL-Hessian product through the inner step: the textbook third-order double backward of
  the KL (what public implementations do), against adaptrl's Jᵀ F J by hand;
* one line-search trial (the candidate's inner step, loss and KL): autograd, against by hand.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from adaptrl.algos import get_algorithm
from adaptrl.bench import timed
from adaptrl.cli import configure_threads
from adaptrl.config import make_config
from adaptrl.nets.curvature import MLPTrace
from adaptrl.optim import flatten, make_hvp
from adaptrl.tasks import get_family


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="point-nav")
    parser.add_argument("--preset", default="nav-public")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    configure_threads()
    torch.manual_seed(0)
    family = get_family(args.family)
    cls = get_algorithm("maml")
    algo = cls(family, make_config(cls, args.preset))
    rng = np.random.default_rng(0)
    T = algo.config.meta_batch
    tasks = family.sample(T, rng)
    params = {k: v.detach() for k, v in algo.policy.expand_params(T).items()}
    pre = algo.rollout(algo.actor(params), tasks, rng)
    pre_adv = algo.advantages(pre)
    adapted = {k: v.detach() for k, v in algo.inner_update(params, pre, pre_adv).items()}
    post = algo.rollout(algo.actor(adapted), tasks, rng)
    post_adv = algo.advantages(post)
    inner = [(params, pre, pre_adv)]
    with torch.no_grad():
        old_logp = algo.policy.log_prob(post.obs, post.actions, adapted)
    theta = list(algo.policy.parameters())
    names = list(params)

    # ── the meta-gradient ──
    def grad_autograd():
        loss = algo.post_adaptation_loss(inner, post, post_adv, old_logp)
        return flatten(torch.autograd.grad(loss, theta))

    hessian = algo.inner_loss_curvature(params, pre, pre_adv)

    def grad_hand():
        return algo.meta_gradient([hessian], post, post_adv, MLPTrace(algo.policy, post.obs,
                                                                      adapted))[1]

    g = grad_autograd()
    error = float((grad_hand() - g).norm() / g.norm())

    # ── one inner-loss Hessian product ──
    at = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    inner_grads = torch.autograd.grad(algo.inner_loss(at, pre, pre_adv).sum(), list(at.values()),
                                      create_graph=True)
    tangent = {k: torch.randn_like(v) for k, v in params.items()}

    def inner_hvp_autograd():
        dot = sum((gr * tangent[k]).sum() for gr, k in zip(inner_grads, names))
        return torch.autograd.grad(dot, list(at.values()), retain_graph=True)

    # ── Fisher and KL-Hessian products ──
    algo.config.first_order = True
    fisher = algo.kl_hessian_product(inner, adapted, post)
    fisher_autograd = make_hvp(lambda: algo.post_adaptation_kl(inner, post, adapted), theta)
    algo.config.first_order = False
    jtfj = algo.kl_hessian_product(inner, adapted, post, [hessian])
    jtfj_autograd = make_hvp(lambda: algo.post_adaptation_kl(inner, post, adapted), theta)

    # ── a line-search trial ──
    def trial_autograd():
        with torch.no_grad():
            candidate = algo.adapted_params(inner)
            algo.post_adaptation_loss(inner, post, post_adv, old_logp, candidate)
            algo.post_adaptation_kl(inner, post, adapted, candidate)

    def trial_hand():  # as in MAML.meta_update's candidate()
        with torch.no_grad():
            p = {k: v.detach() for k, v in algo.policy.expand_params(T).items()}
            p = algo.gradient_step(p, algo.inner_loss_curvature(p, pre, pre_adv, products=False))
            algo.policy(post.obs, p)

    samples = int(pre.mask.sum())
    print(f"{family.name}, preset {args.preset}: {T} tasks, {samples:,} samples per phase, "
          f"policy {algo.config.hidden_sizes} {algo.config.activation}, "
          f"{torch.get_num_threads()} threads; hand meta-gradient relative error {error:.1e}")
    rows = [("second-order meta-gradient", grad_autograd, grad_hand),
            ("inner-loss Hessian product", inner_hvp_autograd, lambda: hessian(tangent)),
            ("Fisher product", lambda: fisher_autograd(g), lambda: fisher(g)),
            ("KL Hessian through the inner step (JᵀFJ)", lambda: jtfj_autograd(g),
             lambda: jtfj(g)),
            ("line-search trial", trial_autograd, trial_hand)]
    print(f"  {'':44s} {'autograd s':>10s} {'hand s':>8s} {'speed-up':>8s}")
    for label, reference, ours in rows:
        a, b = timed(reference, args.repeats), timed(ours, args.repeats)
        print(f"  {label:44s} {a:10.3f} {b:8.3f} {a / b:7.1f}x")


if __name__ == "__main__":
    main()
