"""The maze table (the shape of SNAIL Table 5 / RL² Table 3) for trained RL² or SNAIL runs on a
``maze-*`` family, beside the classical references on the SAME held-out mazes.

    python benchmarks/maze_table.py RUN_DIR [RUN_DIR ...] [--mazes 200] [--seed 0]

One trial of 2 episodes per test maze (the run's ``trial_episodes``), the same mazes and
rollout seed for every policy. Prints, per episode of the trial, the success rate and the mean
steps to the goal (a failed episode counts the whole cap) ± the 95% half-width, episode 2's steps
minus episode 1's trial by trial (± its 95% half-width: the paired test of "episode 2 is
shorter"), and the share of trials that reached the goal twice whose episode 2 was strictly
shorter. Random moves, the
right-hand wall follower and the shortest-path oracle (it knows ψ) are the references; none of
them remembers the maze across episodes. These top-down mazes are a CPU analogue of the papers'
first-person 3-D mazes: do not set the numbers beside those tables.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from adaptrl.eval.baselines import classical_baselines
from adaptrl.eval.maze import maze_metrics
from adaptrl.eval.stats import ci95_half_width
from adaptrl.runner import configure_threads, load_run
from adaptrl.sampling import LocalSampler


def _paired_difference(trials) -> str:
    """Episode 2's steps minus episode 1's, trial by trial: mean ± 95% half-width."""
    rows = trials.num_tasks * trials.num_episodes
    steps = trials.mask.reshape(rows, trials.trial_episodes, -1).sum(-1).double()
    difference = (steps[:, 1] - steps[:, 0]).numpy()
    return f"{difference.mean():+.1f} ± {ci95_half_width(difference) or 0.0:.1f}"


def _row(family: str, name: str, trials, extra: str = "") -> str:
    metrics = maze_metrics(trials)
    success = " / ".join(f"{100 * s:.1f}" for s in metrics["success"])
    steps = " / ".join(f"{m:.1f} ± {h:.1f}" for m, h in zip(metrics["steps"],
                                                            metrics["steps_ci95"]))
    strictly = metrics["improved_strictly"]
    shorter = "—" if strictly is None else f"{100 * strictly:.1f} % of {metrics['improved_trials']}"
    return (f"| {family} | {name} | {success} % | {steps} | {_paired_difference(trials)} | "
            f"{shorter} | {extra} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--mazes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    configure_threads()
    print("| family | policy | success ep 1 / ep 2 | steps to goal ep 1 / ep 2 | "
          "ep 2 − ep 1 (paired) | ep 2 strictly shorter | iterations, train s |")
    print("|---|---|---|---|---|---|---|")
    references_done = set()
    for run in args.runs:
        algo, config, info = load_run(run)
        family, k = algo.family, config.trial_episodes
        if family.body != "maze":
            raise SystemExit(f"{run}: a {family.name} run; this table is for maze-* families")
        tasks = family.split("test", args.mazes, np.random.default_rng(args.seed))
        seed = [args.seed, 5, k]
        if family.name not in references_done:
            references_done.add(family.name)
            for name, policy in classical_baselines(family, k, tasks=tasks).items():
                trials = LocalSampler(family).sample(policy, tasks, np.random.default_rng(seed),
                                                     1, trial_episodes=k)
                print(_row(family.name, name, trials))
        start = time.perf_counter()
        with torch.no_grad():
            trials = algo.sampler.sample(algo.policy.actor(), tasks, np.random.default_rng(seed),
                                         1, trial_episodes=k)
        print(_row(family.name, f"**{algo.name}**", trials,
                   f"{info['iteration']}, {info['elapsed_s']:.0f} "
                   f"(table {time.perf_counter() - start:.0f} s)"))


if __name__ == "__main__":
    main()
