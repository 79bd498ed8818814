"""RL²'s (or SNAIL's) row of RL² Table 1 (or Table 2) from a trained run, beside our classical
baselines on the SAME tasks.

    python benchmarks/rl2_bandit_table.py RUN_DIR [RUN_DIR ...] [--tasks 1000]

A run on ``tabular-mdp`` gets RL² Table 2's row instead: the tasks and rollout seed of
``classical_tables.py``'s Table 2 (seed 0), beside Random, PSRL and greedy with the generator's
prior N(1, 1) and with TabulaRL's N(0, 1) (the paper's columns), all run here again.

Each run folder holds an `rl2` or `snail` run on a ``bandit-kK`` family whose
``trial_episodes`` is n. The tasks and the rollout seed of cell (n, k) are those of
``benchmarks/classical_tables.py`` (seed 0), so the rows line up with its table; Random, Greedy,
Thompson sampling and the Gittins index (no tuning needed) are run here again on those tasks.
Prints mean total reward ± the 95% CI half-width, the paper's value in brackets (RL² Table 1;
SNAIL Table 3 for a SNAIL run), the training time of the run (its checkpoint's elapsed_s) and
the time this table took.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from adaptrl.algos.classical import (
    PSRL,
    GittinsIndex,
    GreedyArm,
    GreedyMDP,
    RandomArm,
    RandomMDPPolicy,
    ThompsonSampling,
    run_baseline,
)
from adaptrl.runner import configure_threads, load_run

PAPER = {  # RL² Table 1: (n, k) → Random, Gittins, TS, Greedy, RL²
    (10, 5): (5.0, 6.6, 5.7, 6.6, 6.7), (10, 10): (5.0, 6.6, 5.5, 6.6, 6.7),
    (10, 50): (5.1, 6.5, 5.2, 6.5, 6.8), (100, 5): (49.9, 78.3, 74.7, 74.8, 78.7),
    (100, 10): (49.9, 82.8, 76.7, 77.1, 83.5), (100, 50): (49.8, 85.2, 64.5, 78.0, 84.9),
}
SNAIL_PAPER = {  # SNAIL Table 3 (Mishra et al. 2018): (n, k) → SNAIL
    (10, 5): 6.6, (10, 10): 6.7, (10, 50): 6.7, (100, 5): 79.1, (100, 10): 83.5, (100, 50): 85.1,
}


def _cell(totals: np.ndarray, paper: float) -> str:
    ci = 1.96 * totals.std(ddof=1) / np.sqrt(len(totals))
    return f"{totals.mean():.2f} ± {ci:.2f} ({paper})"


TABLE2 = {  # RL² Table 2: n → Random, PSRL, Greedy, RL²
    10: (100.1, 138.1, 134.8, 156.2), 25: (250.2, 408.8, 368.8, 445.7),
    50: (499.7, 904.4, 769.3, 936.1), 75: (749.9, 1417.1, 1172.9, 1428.8),
    100: (999.4, 1939.5, 1578.5, 1913.7),
}


def _learned_totals(algo, tasks, n: int, seed) -> np.ndarray:
    with torch.no_grad():
        trials = algo.sampler.sample(algo.policy.actor(), tasks, np.random.default_rng(seed),
                                     1, trial_episodes=n)
    return trials.trial_episode_returns().sum(-1).flatten().double().numpy()


def mdp_row(algo, n: int, count: int) -> str:
    """RL² Table 2's row n: Random | PSRL | Greedy | Greedy μ₀=0 | method | ours."""
    family = algo.family
    tasks = family.sample(count, np.random.default_rng([0, 2]))
    seed = [0, 7, n]
    random_, psrl, greedy, learned = TABLE2.get(n, (float("nan"),) * 4)
    row = [run_baseline(policy, family, tasks, n, np.random.default_rng(seed))
           for policy in (RandomMDPPolicy(), PSRL(), GreedyMDP(), GreedyMDP(prior_mean=0.0))]
    cells = [_cell(t, p) for t, p in zip(row, (random_, psrl, greedy, greedy))]
    return (f"| {n} | " + " | ".join(cells) + f" | {algo.name} | "
            f"{_cell(_learned_totals(algo, tasks, n, seed), learned)} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args(argv)
    configure_threads()
    print("| n, k | Random | Greedy | TS | Gittins | method | ours | iterations | train s | "
          "table s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        start = time.perf_counter()
        algo, config, info = load_run(run)
        family, n = algo.family, config.trial_episodes
        if family.name == "tabular-mdp":
            print("\n| n | Random | PSRL | Greedy | Greedy, prior N(0,1) | method | ours |\n"
                  "|---|---|---|---|---|---|---|")
            print(mdp_row(algo, n, args.tasks))
            print(f"(iteration {info['iteration']}, trained {info['elapsed_s']:.0f} s, table "
                  f"{time.perf_counter() - start:.0f} s)\n")
            continue
        k = family.act_dim
        tasks = family.sample(args.tasks, np.random.default_rng([0, n, k]))
        seed = [0, 7, n, k]
        random_, gittins, ts, greedy, learned = PAPER.get((n, k), (float("nan"),) * 5)
        paper = [random_, greedy, ts, gittins, learned]  # the order of the columns
        if algo.name == "snail":
            paper[4] = SNAIL_PAPER.get((n, k), float("nan"))
        row = [run_baseline(policy, family, tasks, n, np.random.default_rng(seed))
               for policy in (RandomArm(k), GreedyArm(k), ThompsonSampling(k),
                              GittinsIndex(k, horizon=n))]
        rl2 = _learned_totals(algo, tasks, n, seed)
        cells = ([_cell(t, p) for t, p in zip(row, paper[:4])]
                 + [algo.name, _cell(rl2, paper[4])])
        print(f"| {n}, {k} | " + " | ".join(cells) +
              f" | {info['iteration']} | {info['elapsed_s']:.0f} | "
              f"{time.perf_counter() - start:.0f} |")


if __name__ == "__main__":
    main()
