"""Instructions per rollout batch, for callgrind: a machine-independent measure of the rollout
loop's own per-step cost (the smallest policy, point masses: the loop's overhead weighs most).

    valgrind --tool=callgrind python benchmarks/rollout_instructions.py 0
    valgrind --tool=callgrind python benchmarks/rollout_instructions.py 20

One batch costs (I(20) − I(0)) / 20 instructions: 8 tasks × 4 episodes × 50 steps of point-nav
with a 32×32 MLP, one torch thread. Also runs against the tree before the rollout contract
(its `Sampler(family, T, N, horizon)` API), so both can be counted alike (docs/rollout-contract.md).
"""

import sys

import numpy as np
import torch

import adaptrl.sampling as sampling
from adaptrl.nets import GaussianMLPPolicy
from adaptrl.tasks import get_family


def main(batches: int) -> None:
    torch.set_num_threads(1)
    policy = GaussianMLPPolicy(2, 2, (32, 32))
    rng = np.random.default_rng(0)
    tasks = get_family("point-nav").sample(8, rng)
    if hasattr(sampling, "LocalSampler"):
        sampler = sampling.LocalSampler("point-nav")

        def run():
            sampler.sample(policy.actor(), tasks, rng, 4, horizon=50)
    else:  # the closure contract of the tree before
        sampler = sampling.Sampler("point-nav", 8, 4, horizon=50)

        def run():
            sampler.sample(policy.actor(), tasks, rng)
    run()  # first-call costs (environments, allocations) stay out of the difference
    for _ in range(batches):
        run()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
