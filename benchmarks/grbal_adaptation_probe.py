"""Does GrBAL's online step help the planner? One trained grbal (or mb-mpc-finetune) run, its
controller four ways on the same test tasks, rollout seed and candidates:

    python benchmarks/grbal_adaptation_probe.py RUN_DIR [--tasks 10] [--episodes 2] [--seed 0]
        [--planner random|cem]

- ``unadapted``: the model as trained (budget n = 0);
- ``adapting, alpha ~ 0``: the adapting controller with a step size of 1e-12. It must score the
  unadapted return to the last digit: the windows, the environments and the per-environment
  weights line up (a check of the controller, not of the method);
- ``adapting``: one online step per control step with the run's step size(s) (n = 1);
- ``adapting on full windows only``: the same with ``min_window = window``: the model stays
  unadapted until M transitions are in the window, as in meta-training (the first M − 1 steps
  of an episode otherwise adapt on shorter windows).

``--planner cem`` plans with the cross-entropy method instead of the run's planner (same
candidates per round, the config's rounds): its candidates gather near the actions it ends up
executing, where the adapted model was fitted. Prints the mean return per episode and the
spread over tasks. docs/results.md (issue 12) has
what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from adaptrl.optim.mpc import MPCPolicy
from adaptrl.runner import configure_threads, load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--planner", choices=("random", "cem"), default=None,
                        help="the planner (default: the run's)")
    args = parser.parse_args()
    configure_threads()
    algo, config, _ = load_run(args.run)
    family = algo.family
    tasks = family.splits["test"].sample(args.tasks, np.random.default_rng([args.seed, 1]))
    rates = algo.step_sizes(detach=True)
    tiny = {k: 1e-12 for k in rates} if isinstance(rates, dict) else 1e-12

    planner = config.planner_options()
    if args.planner:
        planner = dataclasses.replace(planner, method=args.planner)

    def controller(step_sizes, steps, min_window=1):
        return MPCPolicy(algo.model, family, tasks, algo.action_low, algo.action_high, planner,
                         config.window, step_sizes, steps, config.adapt_every, min_window)

    print(f"{args.run}: {args.tasks} test tasks × {args.episodes} episodes, step size(s) "
          f"{rates if not isinstance(rates, dict) else {k: round(v, 4) for k, v in rates.items()}}"
          f", planner {planner.method}")
    for name, policy in [("unadapted", controller(rates, 0)),
                         ("adapting, alpha ~ 0", controller(tiny, 1)),
                         ("adapting", controller(rates, 1)),
                         ("adapting on full windows only",
                          controller(rates, 1, config.window))]:
        start = time.perf_counter()
        episodes = algo.sampler.sample(policy, tasks, np.random.default_rng([args.seed, 2]),
                                       args.episodes)
        returns = episodes.episode_returns()  # [tasks, episodes]
        print(f"  {name:30s} return {float(returns.mean()):7.2f}   sd over tasks "
              f"{float(returns.mean(1).std()):5.2f}   {time.perf_counter() - start:4.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
