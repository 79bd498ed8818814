"""RL² Tables 1–2 (Duan et al. 2016) for the classical baselines of `adaptrl.algos.classical`,
printed beside the paper's numbers (docs: /work/shared/references/blackbox.md §6).

    python benchmarks/classical_tables.py --quick            # n ≤ 100 only
    python benchmarks/classical_tables.py --tasks 1000       # the paper's full grid

Table 1: Bernoulli bandits, n ∈ {10, 100, 500} pulls × k ∈ {5, 10, 50} arms; Table 2: random
tabular MDPs, n ∈ {10, 25, 50, 75, 100} episodes of 10 steps. Every entry is the mean total reward
of one trial on each of ``--tasks`` tasks drawn from a fixed seed, ± the half-width of its 95 %
CI (1.96·sd/√tasks); every method of a cell sees the same tasks and the same rollout seed.

RL² grid-searched every tunable hyper-parameter per cell. Here UCB1's c, ε-greedy's ε and OTS's
number of draws are chosen per cell on ``--tune-tasks`` *other* tasks (another seed) from small
grids, then evaluated on the test tasks; the chosen value is printed. Gittins uses its default
discount γ = 1 − 2/n (`default_gittins_discount`). Two extra rows: UCB1 with the classic c = 1,
and Greedy breaking ties by the lowest arm index instead of at random. ``!`` marks an entry
whose difference from the paper exceeds √2 × our CI + 0.05 (two CIs of the same width, and the
paper's rounding).

Table 2 also lists the model-based learners with TabulaRL's default reward prior, N(0, 1) instead
of the generator's N(1, 1) (``μ0=0``): RL² took its MDP baselines from TabulaRL, and with that
prior Greedy, ε-greedy and PSRL land on the paper's numbers, while with the matched prior Greedy
scores far higher (unvisited actions look as good as the average one, so it explores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from adaptrl.algos.classical import (
    PSRL,
    UCB1,
    EpsilonGreedyArm,
    EpsilonGreedyMDP,
    GittinsIndex,
    GreedyArm,
    GreedyMDP,
    OptimisticThompson,
    RandomArm,
    RandomMDPPolicy,
    ThompsonSampling,
    run_baseline,
)
from adaptrl.tasks import get_family

# RL² Table 1: Random, Gittins, TS, OTS, UCB1, ε-Greedy, Greedy (RL² itself omitted)
TABLE1_COLUMNS = ("Random", "Gittins", "TS", "OTS", "UCB1", "eps-Greedy", "Greedy")
TABLE1 = {
    (10, 5): (5.0, 6.6, 5.7, 6.5, 6.7, 6.6, 6.6),
    (10, 10): (5.0, 6.6, 5.5, 6.2, 6.7, 6.6, 6.6),
    (10, 50): (5.1, 6.5, 5.2, 5.5, 6.6, 6.5, 6.5),
    (100, 5): (49.9, 78.3, 74.7, 77.9, 78.0, 75.4, 74.8),
    (100, 10): (49.9, 82.8, 76.7, 81.4, 82.4, 77.4, 77.1),
    (100, 50): (49.8, 85.2, 64.5, 67.7, 84.3, 78.3, 78.0),
    (500, 5): (249.8, 405.8, 402.0, 406.7, 405.8, 388.2, 380.6),
    (500, 10): (249.0, 437.8, 429.5, 438.9, 437.1, 408.0, 395.0),
    (500, 50): (249.6, 463.7, 427.2, 437.6, 457.6, 413.6, 402.8),
}
# RL² Table 2: Random, PSRL, ε-Greedy, Greedy (OPSRL, UCRL2, BEB and RL² omitted)
TABLE2_COLUMNS = ("Random", "PSRL", "eps-Greedy", "Greedy")
TABLE2 = {
    10: (100.1, 138.1, 132.8, 134.8),
    25: (250.2, 408.8, 377.3, 368.8),
    50: (499.7, 904.4, 823.3, 769.3),
    75: (749.9, 1417.1, 1293.9, 1172.9),
    100: (999.4, 1939.5, 1778.2, 1578.5),
}

UCB_C = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
BANDIT_EPSILON = (0.01, 0.02, 0.05, 0.1, 0.2)
OTS_SAMPLES = (2, 3, 5, 10)
MDP_EPSILON = (0.02, 0.05, 0.1, 0.2)


def _ci(totals: np.ndarray) -> float:
    return 1.96 * float(totals.std(ddof=1)) / np.sqrt(len(totals))


def _tune(make, grid, family, tasks, n, seed):
    """The grid value whose policy scores best on the tuning tasks."""
    scores = [run_baseline(make(v), family, tasks, n, np.random.default_rng(seed)).mean()
              for v in grid]
    return grid[int(np.argmax(scores))]


class Printer:
    def __init__(self):
        self.flagged = []

    def header(self, key_name):
        print(f"{key_name:>9}  {'method':<18}{'ours':>9} {'± CI':>6}  {'paper':>7} {'Δ':>7}   "
              f"setting")

    def row(self, key, method, totals, paper, setting=""):
        mean, ci = float(totals.mean()), _ci(totals)
        if paper is None:
            paper_text, delta_text, flag = "—", "", " "
        else:
            delta = mean - paper
            flag = "!" if abs(delta) > np.sqrt(2) * ci + 0.05 else " "
            if flag == "!":
                self.flagged.append(f"{key} {method}: {mean:.1f} vs {paper}")
            paper_text, delta_text = f"{paper:.1f}", f"{delta:+.1f}"
        print(f"{key:>9}  {method:<18}{mean:9.2f} {ci:6.2f}  {paper_text:>7} {delta_text:>7} "
              f"{flag} {setting}", flush=True)


def table1(ns, tasks_count, tune_count, seed, out: Printer):
    print(f"\nRL² Table 1 — Bernoulli bandits: total reward over n pulls, mean of {tasks_count} "
          f"tasks")
    out.header("n, k")
    for n in ns:
        for k in (5, 10, 50):
            start = time.perf_counter()
            family = get_family(f"bandit-k{k}")
            tasks = family.sample(tasks_count, np.random.default_rng([seed, n, k]))
            tune = family.sample(tune_count, np.random.default_rng([seed + 1, n, k]))
            tune_seed = [seed + 1, 7, n, k]
            c = _tune(lambda v, k=k: UCB1(k, v), UCB_C, family, tune, n, tune_seed)
            eps = _tune(lambda v, k=k: EpsilonGreedyArm(k, v), BANDIT_EPSILON, family, tune, n,
                        tune_seed)
            draws = _tune(lambda v, k=k: OptimisticThompson(k, v), OTS_SAMPLES, family, tune, n,
                          tune_seed)
            gittins = GittinsIndex(k, n)
            methods = [
                ("Random", RandomArm(k), ""),
                ("Gittins", gittins, f"γ={gittins.gamma:.4g}, depth {gittins.depth}"),
                ("TS", ThompsonSampling(k), ""),
                ("OTS", OptimisticThompson(k, draws), f"max of {draws} draws (tuned)"),
                ("UCB1", UCB1(k, c), f"c={c} (tuned)"),
                ("eps-Greedy", EpsilonGreedyArm(k, eps), f"ε={eps} (tuned)"),
                ("Greedy", GreedyArm(k), ""),
            ]
            paper = dict(zip(TABLE1_COLUMNS, TABLE1[(n, k)]))
            key = f"{n}, {k}"
            for name, policy, setting in methods:
                totals = run_baseline(policy, family, tasks, n,
                                      np.random.default_rng([seed, 7, n, k]))
                out.row(key, name, totals, paper[name], setting)
            extras = [("UCB1 (c=1)", UCB1(k, 1.0), "UCB1", "classic c, untuned"),
                      ("Greedy (first)", GreedyArm(k, ties="first"), "Greedy",
                       "ties to the lowest arm index")]
            for name, policy, column, setting in extras:
                totals = run_baseline(policy, family, tasks, n,
                                      np.random.default_rng([seed, 7, n, k]))
                out.row(key, name, totals, paper[column], setting)
            print(f"{'':>9}  ({time.perf_counter() - start:.1f} s with tuning)", flush=True)


def table2(ns, tasks_count, tune_count, seed, out: Printer):
    print(f"\nRL² Table 2 — random tabular MDPs: total reward over n episodes of 10 steps, mean "
          f"of {tasks_count} tasks")
    out.header("n")
    family = get_family("tabular-mdp")
    tasks = family.sample(tasks_count, np.random.default_rng([seed, 2]))
    tune = family.sample(tune_count, np.random.default_rng([seed + 1, 2]))
    for n in ns:
        start = time.perf_counter()
        tune_seed = [seed + 1, 7, n]
        eps = _tune(lambda v: EpsilonGreedyMDP(v), MDP_EPSILON, family, tune, n, tune_seed)
        eps0 = _tune(lambda v: EpsilonGreedyMDP(v, prior_mean=0.0), MDP_EPSILON, family, tune,
                     n, tune_seed)
        prior0 = "TabulaRL's prior N(0,1)"
        methods = [  # (row, paper column, policy, setting)
            ("Random", "Random", RandomMDPPolicy(), ""),
            ("PSRL", "PSRL", PSRL(), "prior N(1,1)"),
            ("eps-Greedy", "eps-Greedy", EpsilonGreedyMDP(eps), f"ε={eps} (tuned), prior N(1,1)"),
            ("Greedy", "Greedy", GreedyMDP(), "prior N(1,1)"),
            ("PSRL μ0=0", "PSRL", PSRL(prior_mean=0.0), prior0),
            ("eps-Greedy μ0=0", "eps-Greedy", EpsilonGreedyMDP(eps0, prior_mean=0.0),
             f"ε={eps0} (tuned), {prior0}"),
            ("Greedy μ0=0", "Greedy", GreedyMDP(prior_mean=0.0), prior0),
        ]
        paper = dict(zip(TABLE2_COLUMNS, TABLE2[n]))
        for name, column, policy, setting in methods:
            totals = run_baseline(policy, family, tasks, n, np.random.default_rng([seed, 7, n]))
            out.row(str(n), name, totals, paper[column], setting)
        print(f"{'':>9}  ({time.perf_counter() - start:.1f} s with tuning)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n ≤ 100 only (no n = 500 bandits)")
    parser.add_argument("--tasks", type=int, default=1000, help="test tasks per cell")
    parser.add_argument("--tune-tasks", type=int, default=300,
                        help="tuning tasks per cell (another seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("bandits", "mdps"), default=None)
    args = parser.parse_args(argv)
    out = Printer()
    start = time.perf_counter()
    if args.only in (None, "bandits"):
        table1((10, 100) if args.quick else (10, 100, 500), args.tasks, args.tune_tasks,
               args.seed, out)
    if args.only in (None, "mdps"):
        table2((10, 25, 50, 75, 100), args.tasks, args.tune_tasks, args.seed, out)
    print(f"\nwall time {time.perf_counter() - start:.1f} s")
    if out.flagged:
        print("clearly different from the paper (!):\n  " + "\n  ".join(out.flagged))


if __name__ == "__main__":
    main()
