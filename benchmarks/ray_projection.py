"""Project a MAML `locomotion` meta-iteration's time on 4, 16 and 64 Ray sampling workers from
figures measured here, in one process, on one core each (ADAPTRL_TORCH_THREADS=1,
ADAPTRL_MUJOCO_THREADS=1):

    physics_s   the bare batched simulator for one sampling phase (40 tasks × 20 episodes ×
                H = 200: `raw_simulation_seconds`)
    phase_s     the local sampler's phase on the same batch (physics + policy + bookkeeping)
    policy_s    phase_s − physics_s: what every Ray worker pays whole, because each worker
                replays the whole batch's policy on [T, N] to stay bit-identical with the local
                backend (docs/ray.md)
    overhead_s  a Ray call's wall time minus its slowest worker's rollout (transfer, scheduling,
                stitching), measured with 1 and 2 workers
    update_s    MAML's meta-update (adaptation step, TRPO, line search) in the driver

Model, per meta-iteration (MAML samples 2 phases: before and after the inner step):

    T(W) = 2 · (physics_s / W + policy_s + overhead_s) + update_s

and, for comparison, the same with per-task random streams (workers would run the policy on
their own share only): 2 · ((physics_s + policy_s) / W + overhead_s) + update_s. The model is
checked against the Ray backend's measured phase time with 1 and 2 workers.

    ADAPTRL_TORCH_THREADS=1 ADAPTRL_MUJOCO_THREADS=1 python benchmarks/ray_projection.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from adaptrl.bench.meta_step import bench_meta_step, raw_simulation_seconds
from adaptrl.bench.sampler import bench_ray_sampler
from adaptrl.nets import GaussianMLPPolicy
from adaptrl.sampling import LocalSampler
from adaptrl.tasks import get_family

FAMILY, TASKS, EPISODES, HORIZON = "cheetah-vel", 40, 20, 200


def measure(repeats: int) -> dict:
    fam = get_family(FAMILY)
    torch.manual_seed(0)
    actor = GaussianMLPPolicy(fam.obs_dim, fam.act_dim, (100, 100)).actor()
    tasks = fam.sample(TASKS, np.random.default_rng(0))
    sampler = LocalSampler(fam, threads=1)
    rng = np.random.default_rng(0)
    sampler.sample(actor, tasks, rng, EPISODES, horizon=HORIZON)  # warm-up
    physics, phase = [], []
    for _ in range(repeats):  # alternated, so drift hits both alike
        physics.append(raw_simulation_seconds(fam, TASKS, EPISODES, HORIZON, 1))
        start = time.perf_counter()
        sampler.sample(actor, tasks, rng, EPISODES, horizon=HORIZON)
        phase.append(time.perf_counter() - start)
    ray = bench_ray_sampler(FAMILY, workers=(1, 2), tasks=TASKS, episodes=EPISODES,
                            horizon=HORIZON, repeats=repeats)
    steps = TASKS * EPISODES * HORIZON
    meta = bench_meta_step(FAMILY, ("maml",), "locomotion", iterations=1)["methods"]["maml"]
    return {"physics_s": float(np.median(physics)), "phase_s": float(np.median(phase)),
            "ray": [{"workers": r["workers"], "phase_s": steps / r["steps_per_s"],
                     "overhead_s": r["overhead_s"], "bytes_received": r["bytes_received"]}
                    for r in ray["results"]],
            "maml_sample_s": meta["sample_s"], "update_s": meta["update_s"]}


def project(m: dict, workers=(1, 2, 4, 16, 64)) -> dict:
    policy_s = m["phase_s"] - m["physics_s"]
    overhead_s = max(r["overhead_s"] for r in m["ray"])
    check = [{"workers": r["workers"], "measured_phase_s": r["phase_s"],
              "model_phase_s": m["physics_s"] / r["workers"] + policy_s + overhead_s}
             for r in m["ray"]]
    local_iteration = 2 * m["phase_s"] + m["update_s"]
    rows = []
    for w in workers:
        replay = 2 * (m["physics_s"] / w + policy_s + overhead_s) + m["update_s"]
        split = 2 * ((m["physics_s"] + policy_s) / w + overhead_s) + m["update_s"]
        rows.append({"workers": w, "iteration_s": replay, "speedup": local_iteration / replay,
                     "per_task_streams_iteration_s": split,
                     "per_task_streams_speedup": local_iteration / split})
    return {"policy_s": policy_s, "overhead_s": overhead_s, "check": check,
            "local_iteration_s": local_iteration, "projection": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    m = measure(args.repeats)
    p = project(m)
    if args.json:
        print(json.dumps({"measured": m, **p}, indent=1))
        return
    print(f"{FAMILY}: {TASKS} tasks × {EPISODES} episodes × H={HORIZON} per phase, 1 thread, "
          f"torch {torch.__version__}, {os.cpu_count()} cpus")
    print(f"  physics {m['physics_s']:.2f} s/phase, local phase {m['phase_s']:.2f} s "
          f"(policy + bookkeeping {p['policy_s']:.2f} s), Ray overhead {p['overhead_s']:.3f} "
          f"s/call, {m['ray'][0]['bytes_received'] / 1e6:.1f} MB back/call")
    print(f"  MAML locomotion meta-iteration here: sample {m['maml_sample_s']:.1f} s, update "
          f"{m['update_s']:.1f} s")
    for c in p["check"]:
        print(f"  check, {c['workers']} Ray worker(s): phase measured {c['measured_phase_s']:.2f}"
              f" s, model {c['model_phase_s']:.2f} s")
    print(f"  {'workers':>8} {'iteration s':>12} {'speedup':>8} {'per-task streams s':>19} "
          f"{'speedup':>8}")
    for r in p["projection"]:
        print(f"  {r['workers']:>8} {r['iteration_s']:>12.1f} {r['speedup']:>8.2f} "
              f"{r['per_task_streams_iteration_s']:>19.1f} {r['per_task_streams_speedup']:>8.2f}")


if __name__ == "__main__":
    main()
