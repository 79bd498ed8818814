"""Steps per second of adaptrl's Meta-World batch env (`adaptrl.envs.metaworld_env`) next to
Gymnasium's ``SyncVectorEnv`` of the same Meta-World environments (the benchmark's own classes
and tasks), in one process, with the same random actions: one reset, then ``--steps`` steps.

    .venv-mw/bin/python benchmarks/metaworld_vector.py                  # mw-ml10, 20 tasks × 1
    .venv-mw/bin/python benchmarks/metaworld_vector.py mw-ml1-reach --tasks 10 --episodes 4

Needs the Meta-World extra (``make install-metaworld`` builds .venv-mw). Both sides step the
environments one after the other in Python (Meta-World computes rewards per environment), so
the ratio measures the batch env's own overhead; building the environments and 5 warm-up steps
are not timed. The two sides alternate ``--rounds`` times and each keeps its best rate (the
first side timed on a busy machine otherwise loses). Prints one line per side and the ratio;
``--json`` prints them as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np

from adaptrl.envs import make_batch_env
from adaptrl.tasks import get_family

WARMUP = 5


def batch_rate(family, tasks, episodes: int, actions: np.ndarray) -> float:
    """Steps per second of the batch env: ``actions [steps, T, N, 4]`` after one reset (the
    first `WARMUP` steps not timed)."""
    env = make_batch_env(family, len(tasks), episodes)
    env.set_tasks(tasks)
    env.reset(np.random.default_rng(0))
    for action in actions[:WARMUP]:
        env.step(action)
    start = time.perf_counter()
    for action in actions[WARMUP:]:
        env.step(action)
    return (actions.shape[0] - WARMUP) * env.batch_size / (time.perf_counter() - start)


def sync_rate(family, tasks, episodes: int, actions: np.ndarray) -> float:
    """Steps per second of ``SyncVectorEnv`` over the same environments and actions."""
    classes, task_list = family.env_classes(), family.task_list()

    def factory(index):
        def make():
            task = task_list[int(index)]
            env = classes[task.env_name]()
            env.set_task(task)
            return env
        return make

    envs = gym.vector.SyncVectorEnv([factory(i) for i in tasks[:, 0] for _ in range(episodes)])
    envs.reset()
    flat = actions.reshape(actions.shape[0], -1, actions.shape[-1])
    for action in flat[:WARMUP]:
        envs.step(action)
    start = time.perf_counter()
    for action in flat[WARMUP:]:
        envs.step(action)
    rate = (flat.shape[0] - WARMUP) * envs.num_envs / (time.perf_counter() - start)
    envs.close()
    return rate


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", nargs="?", default="mw-ml10")
    parser.add_argument("--tasks", type=int, default=20, help="tasks T (20)")
    parser.add_argument("--episodes", type=int, default=1, help="environments per task N (1)")
    parser.add_argument("--steps", type=int, default=200, help="steps timed, at most 495 (200)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations, best kept (2)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    family = get_family(args.family)
    rng = np.random.default_rng(0)
    tasks = family.sample(args.tasks, rng)
    steps = min(args.steps, 500 - WARMUP)
    actions = rng.uniform(-1, 1, size=(steps + WARMUP, args.tasks, args.episodes, 4)
                          ).astype(np.float32)
    sync, batch = [], []
    for _ in range(max(1, args.rounds)):
        sync.append(sync_rate(family, tasks, args.episodes, actions))
        batch.append(batch_rate(family, tasks, args.episodes, actions))
    result = {"family": family.name, "envs": args.tasks * args.episodes, "steps": steps,
              "batch_steps_per_s": max(batch), "sync_vector_steps_per_s": max(sync)}
    result["ratio"] = result["batch_steps_per_s"] / result["sync_vector_steps_per_s"]
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{family.name}: {result['envs']} environments, {result['steps']} steps each")
        print(f"  adaptrl batch env     {result['batch_steps_per_s']:9.0f} steps/s")
        print(f"  gym SyncVectorEnv     {result['sync_vector_steps_per_s']:9.0f} steps/s")
        print(f"  ratio                 {result['ratio']:9.2f}x")
    return result


if __name__ == "__main__":
    main()
