"""Steps per second of Gymnasium's vector API over one family: the vector entry point (the
batched simulator, `adaptrl.envs.gym_vector`) against ``SyncVectorEnv`` of the same views, in
one process, with the same random actions and NextStep autoreset.

    python benchmarks/vector_env.py                        # cheetah-vel, 64 envs
    python benchmarks/vector_env.py hopper-params --num-envs 16 --steps 200

The vector entry point is timed with a one-thread MuJoCo pool (the views' own setting, so the
ratio measures batching alone) and with the default pool. Prints one line per setting and the
ratios; ``--json`` prints them as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np

import adaptrl  # noqa: F401  (registers the ids)
from adaptrl.tasks import get_family


def steps_per_second(envs, steps: int, seed: int = 0) -> float:
    """Environment steps per second (``num_envs`` per call) over ``steps`` calls, after a
    reset and a few warm-up steps."""
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    actions = [envs.action_space.sample() for _ in range(steps + 5)]
    for action in actions[:5]:
        envs.step(action)
    start = time.perf_counter()
    for action in actions[5:]:
        envs.step(action)
    return steps * envs.num_envs / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", nargs="?", default="cheetah-vel")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300, help="vector steps timed (300)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    gym_id = get_family(args.family).gym_id
    n = args.num_envs

    results = {}
    sync = gym.make_vec(gym_id, num_envs=n, vectorization_mode="sync")
    results["sync"] = steps_per_second(sync, args.steps)
    sync.close()
    for label, threads in (("vector_entry_point (1 thread)", 1),
                           ("vector_entry_point (default threads)", None)):
        envs = gym.make_vec(gym_id, num_envs=n, vectorization_mode="vector_entry_point",
                            threads=threads)
        results[label] = steps_per_second(envs, args.steps)
        envs.close()
    report = {"family": args.family, "num_envs": n, "steps": args.steps,
              "steps_per_s": {k: round(v) for k, v in results.items()},
              "ratio_vs_sync": {k: round(v / results["sync"], 2) for k, v in results.items()
                                if k != "sync"}}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{args.family}, {n} envs, {args.steps} vector steps, random actions")
        for label, value in results.items():
            ratio = "" if label == "sync" else f"  ×{value / results['sync']:.1f} vs sync"
            print(f"  {label:38s} {value:10.0f} env steps/s{ratio}")
    return report


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
