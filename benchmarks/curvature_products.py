"""Seconds per curvature product of MAML's TRPO step, on one fixed batch of a preset.

    .venv/bin/python benchmarks/curvature_products.py [--family point-nav] [--preset nav]

Prints the cost of: the post-adaptation loss and its (second-order) gradient; one Gauss–Newton
Fisher product (what MAML/FOMAML use); one double-backward KL Hessian-vector product (the
textbook way, for reference); one full MAML JᵀFJ product; one line-search trial. All in this
process, on the same data, so the ratios are meaningful.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from adaptrl.algos import get_algorithm
from adaptrl.bench import timed
from adaptrl.cli import configure_threads
from adaptrl.config import make_config
from adaptrl.optim import flatten, make_hvp
from adaptrl.tasks import get_family


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="point-nav")
    parser.add_argument("--preset", default="nav")
    args = parser.parse_args(argv)
    configure_threads()
    torch.manual_seed(0)
    family = get_family(args.family)
    cls = get_algorithm("maml")
    algo = cls(family, make_config(cls, args.preset))
    rng = np.random.default_rng(0)
    T = algo.config.meta_batch
    sampler, tasks = algo.sampler(T), family.sample(T, rng)
    params = {k: v.detach() for k, v in algo.policy.expand_params(T).items()}
    pre = sampler.sample(algo.actor(params), tasks, rng)
    pre_adv = algo.advantages(pre)
    adapted = {k: v.detach() for k, v in algo.inner_update(params, pre, pre_adv).items()}
    post = sampler.sample(algo.actor(adapted), tasks, rng)
    post_adv = algo.advantages(post)
    inner = [(params, pre, pre_adv)]
    with torch.no_grad():
        old_logp = algo.policy.log_prob(post.obs, post.actions, adapted)
    theta = list(algo.policy.parameters())

    def loss_and_grad():
        loss = algo.post_adaptation_loss(inner, post, post_adv, old_logp)
        return flatten(torch.autograd.grad(loss, theta))

    g = loss_and_grad()
    algo.config.first_order = True
    fisher = algo.kl_hessian_product(inner, adapted, post)
    double_backward = make_hvp(lambda: algo.post_adaptation_kl(inner, post, adapted), theta)
    algo.config.first_order = False
    jtfj = algo.kl_hessian_product(inner, adapted, post)

    def line_search_trial():  # as in MAML.meta_update: loss and KL share θ'(θ)
        with torch.no_grad():
            candidate = algo.adapted_params(inner)
            algo.post_adaptation_loss(inner, post, post_adv, old_logp, candidate)
            algo.post_adaptation_kl(inner, post, adapted, candidate)

    samples = int(pre.mask.sum())
    print(f"{family.name}, preset {args.preset}: {T} tasks, {samples:,} samples per phase, "
          f"policy {algo.config.hidden_sizes} {algo.config.activation}")
    rows = [("loss + second-order meta-gradient", timed(loss_and_grad)),
            ("Fisher product, Gauss-Newton (used)", timed(lambda: fisher(g))),
            ("Fisher product, double-backward KL HVP", timed(lambda: double_backward(g))),
            ("MAML JᵀFJ product (2 inner HVPs + Fisher)", timed(lambda: jtfj(g))),
            ("line-search trial (loss + KL)", timed(line_search_trial))]
    for label, seconds in rows:
        print(f"  {label:44s} {seconds:7.3f} s")


if __name__ == "__main__":
    main()
