"""A quick learning curve of RL² (or SNAIL) on a black-box family, without a run folder.

    python benchmarks/rl2_learning_probe.py tabular-mdp --preset mdp-n10 --iterations 30 \
        [--set key=value ...] [--fixed-task] [--algo rl2|snail]

Prints the trial return, the first and last episodes' returns and the PPO entropy every few
iterations. ``--fixed-task`` trains on ONE task drawn once (every trial the same MDP): the
control that separates "the pipeline cannot learn" from "the meta-learning signal is too weak"
(docs/blackbox.md, tabular MDPs).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from adaptrl.algos import get_algorithm
from adaptrl.config import make_config
from adaptrl.runner import configure_threads
from adaptrl.sampling import LocalSampler
from adaptrl.tasks import get_family


class _OneTask:
    """The family with ``sample`` returning one fixed task (everything else delegated)."""

    def __init__(self, family, task):
        self._family, self._task = family, task

    def __getattr__(self, name):
        return getattr(self._family, name)

    def sample(self, n, rng):
        return np.repeat(self._task, n, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("--algo", default="rl2", choices=("rl2", "snail"))
    parser.add_argument("--preset", default=None)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--fixed-task", action="store_true")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    configure_threads()
    cls, family = get_algorithm(args.algo), get_family(args.family)
    config = make_config(cls, args.preset, args.overrides)
    torch.manual_seed(args.seed)
    algo = cls(family, config, LocalSampler(family))
    if args.fixed_task:
        algo.family = _OneTask(family, family.sample(1, np.random.default_rng(args.seed + 5)))
    rng, start = np.random.default_rng(args.seed), time.perf_counter()
    for i in range(args.iterations):
        m = algo.train_step(rng)
        if i % args.every == 0 or i == args.iterations - 1:
            print(f"{i:4d} {time.perf_counter() - start:6.0f}s  return {m['return']:8.2f}  "
                  f"first {m['return/first_episode']:7.2f}  last {m['return/last_episode']:7.2f}"
                  f"  entropy {m['ppo/entropy']:.3f}", flush=True)


if __name__ == "__main__":
    main()
