"""GrBAL's cost per control step for 40 environments at the paper's planner settings (random
shooting: 500 candidates × horizon 10; CEM: 5 iterations of those), with one online SGD step
on the last 16 transitions (GrBAL) or none (MB-MPC), split into adaptation and planning, next
to one batched MuJoCo control step of the same 40 HalfCheetahs, in one process:

    python benchmarks/grbal_latency.py [--envs 40] [--steps 20] [--json]

The model is GrBAL's (`nets.dynamics.DynamicsModel`, 256×256, normalisers fitted on random
transitions; its weights do not change the cost). Times are medians over ``--steps`` control
steps after 3 warm-up steps; the MuJoCo step is the batched simulator's `step` (physics and
reward, frame skip 5) with random actions.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from adaptrl.envs import action_bounds, make_batch_env
from adaptrl.nets.dynamics import DynamicsModel
from adaptrl.optim.mpc import MPCPolicy, PlannerOptions
from adaptrl.tasks import get_family

FAMILY = "cheetah-crippled"
WINDOW = 16


def mujoco_step_ms(envs: int, steps: int) -> float:
    env = make_batch_env(get_family(FAMILY), envs, 1)
    env.set_tasks(np.tile([[0.0, 0.5]], (envs, 1)))
    rng = np.random.default_rng(0)
    env.reset(rng, None)
    low, high = env.action_low, env.action_high
    times = []
    for t in range(steps + 3):
        action = rng.uniform(low, high, size=(envs, 1, env.act_dim)).astype(np.float32)
        start = time.perf_counter()
        env.step(action)
        if t >= 3:
            times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def controller_ms(envs: int, steps: int, planner: PlannerOptions, inner_steps: int) -> dict:
    family = get_family(FAMILY)
    torch.manual_seed(0)
    model = DynamicsModel(family.obs_dim, family.act_dim, (256, 256), "relu", 1, 0.5)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(4096, family.obs_dim, generator=gen)
    act = torch.rand(4096, family.act_dim, generator=gen) * 2 - 1
    model.fit_normalizers(obs, act, obs + 0.1 * torch.randn(obs.shape, generator=gen))
    low, high = action_bounds(family)
    policy = MPCPolicy(model, family, np.tile([[0.0, 0.5]], (envs, 1)), low, high, planner,
                       WINDOW, 0.01 if inner_steps else 0.0, inner_steps)
    state = policy.initial_state((envs, 1))
    prev_action = torch.zeros(envs, 1, family.act_dim)
    prev_reward, prev_done = torch.zeros(envs, 1), torch.zeros(envs, 1)
    totals, adapts = [], []
    for t in range(steps + WINDOW + 3):
        o = torch.randn(envs, 1, family.obs_dim, generator=gen)
        start = time.perf_counter()
        action, state = policy.step(o, state, prev_action, prev_reward, prev_done, gen)
        total = (time.perf_counter() - start) * 1000
        if policy.adaptive:  # the adaptation alone, on the same (full) window
            start = time.perf_counter()
            policy.adapted_weights(state)
            adapt = (time.perf_counter() - start) * 1000
        else:
            adapt = 0.0
        prev_action = action
        if t >= WINDOW + 3:  # the window is full: the steady state
            totals.append(total)
            adapts.append(adapt)
    total, adapt = float(np.median(totals)), float(np.median(adapts))
    return {"total_ms": total, "adapt_ms": adapt, "plan_ms": total - adapt,
            "p95_ms": float(np.percentile(totals, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    physics = mujoco_step_ms(args.envs, 200)
    for name, planner in (("random 500×10", PlannerOptions("random", 10, 500)),
                          ("cem 5×500×10", PlannerOptions("cem", 10, 500, 5))):
        for inner in (0, 1):
            r = controller_ms(args.envs, args.steps, planner, inner)
            rows.append({"planner": name, "inner_steps": inner, **r, "mujoco_step_ms": physics,
                         "ratio_to_mujoco_step": r["total_ms"] / physics})
    if args.json:
        print(json.dumps({"envs": args.envs, "torch_threads": torch.get_num_threads(),
                          "rows": rows}, indent=1))
        return
    print(f"{FAMILY}, {args.envs} environments, 256×256 model, window {WINDOW}, torch threads "
          f"{torch.get_num_threads()}; one batched MuJoCo control step: {physics:.2f} ms")
    print(f"  {'planner':15s} {'inner':>5s} {'adapt ms':>9s} {'plan ms':>8s} {'total ms':>9s} "
          f"{'p95 ms':>7s} {'× MuJoCo step':>14s}")
    for r in rows:
        print(f"  {r['planner']:15s} {r['inner_steps']:>5d} {r['adapt_ms']:>9.1f} "
              f"{r['plan_ms']:>8.1f} {r['total_ms']:>9.1f} {r['p95_ms']:>7.1f} "
              f"{r['ratio_to_mujoco_step']:>14.0f}")


if __name__ == "__main__":
    main()
