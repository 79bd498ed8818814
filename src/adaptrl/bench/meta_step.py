"""`adaptrl bench meta-step`: seconds per meta-iteration, split into sampling and meta-update."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..algos import get_algorithm
from ..config import make_config
from ..envs import make_batch_env
from ..progress import progress_bar
from ..tasks import get_family


def bench_meta_step(family: str, algos=("maml", "fomaml", "reptile"), preset="locomotion",
                    overrides=(), iterations: int = 1, seed: int = 0,
                    progress: bool = False) -> dict:
    """Time ``iterations`` meta-iterations of each method in this process (after building its
    environments, which are reused across iterations), split into the time spent in the method's
    sampler (its ``sample`` phase) and the rest (the meta-update). Returns per method
    ``sample_s``, ``update_s``, ``total_s`` (means over iterations), ``raw_sim_s``
    (`raw_simulation_seconds` for the method's batch, measured here) and ``total_over_raw_sim``
    (None where the simulator's share is under 1%); when both ran, ``maml_over_fomaml_update``.
    ``progress``: a bar over the methods' iterations on stderr.
    """
    fam = get_family(family)
    results: dict = {"family": fam.name, "preset": preset, "iterations": iterations,
                     "torch_threads": torch.get_num_threads(), "methods": {}}
    bar = progress_bar(len(algos) * iterations, f"bench meta-step {fam.name}", progress)
    for name in algos:
        bar.set_postfix_str(name, refresh=True)
        cls = get_algorithm(name)
        config = make_config(cls, preset, overrides)
        torch.manual_seed(seed)
        algo = cls(fam, config)
        # build the environments outside the timed region
        algo.sampler.environments(config.meta_batch, config.fast_batch)
        # the bare simulator on the same batch, for the control steps of MAML's sampling,
        # measured next to the method (the machine's speed drifts)
        raw_sim_s = raw_simulation_seconds(fam, config.meta_batch, config.fast_batch,
                                           config.horizon, getattr(config, "inner_steps", 0) + 1,
                                           seed=seed)
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(iterations):
            algo.clock.take()
            start = time.perf_counter()
            metrics = algo.train_step(rng)
            total = time.perf_counter() - start
            rows.append((algo.clock.take().get("sample", 0.0), total))
            bar.update(1)
        sample_s = float(np.mean([r[0] for r in rows]))
        total_s = float(np.mean([r[1] for r in rows]))
        results["methods"][name] = {"sample_s": sample_s, "update_s": total_s - sample_s,
                                    "total_s": total_s,
                                    "raw_sim_s": raw_sim_s,
                                    # None where the simulator costs next to nothing (point
                                    # masses): the ratio would only measure Python overhead
                                    "total_over_raw_sim": (total_s / raw_sim_s
                                                           if raw_sim_s >= 0.01 * total_s
                                                           else None),
                                    "return": float(metrics.get("return", float("nan")))}
    bar.close()
    methods = results["methods"]
    if "maml" in methods and "fomaml" in methods and methods["fomaml"]["update_s"] > 0:
        results["maml_over_fomaml_update"] = (methods["maml"]["update_s"]
                                              / methods["fomaml"]["update_s"])
    return results


def raw_simulation_seconds(family, tasks: int, episodes: int, horizon: int, phases: int,
                           seed: int = 0) -> float:
    """Seconds the bare batched simulator takes for ``phases`` × ``horizon`` control steps of
    ``tasks × episodes`` environments (no policy, no reward, no bookkeeping; actions like an
    untrained policy's, N(0, 1) clipped to the bounds), measured in this process.

    Machines differ by up to 2× in MuJoCo speed, and one machine from run to run; a
    meta-iteration's time divided by this is comparable across machines (MAML's iteration
    samples ``inner_steps + 1`` phases).
    """
    env = make_batch_env(get_family(family), tasks, episodes)
    rng = np.random.default_rng(seed)
    env.set_tasks(env.family.sample(tasks, rng))
    actions = np.clip(rng.standard_normal((horizon, env.batch_size, env.act_dim)),
                      env.action_low, env.action_high).astype(np.float32)
    start = time.perf_counter()
    for _ in range(phases):
        env._reset_state(rng)
        for t in range(horizon):
            env._simulate(None, actions[t])
    return time.perf_counter() - start


def format_meta_step(r: dict) -> str:
    lines = [f"meta-step  {r['family']}, preset {r['preset']}, mean of {r['iterations']} "
             f"iteration(s), torch threads {r['torch_threads']}",
             f"  {'method':10s} {'sample_s':>9s} {'update_s':>9s} {'total_s':>9s} "
             f"{'raw_sim_s':>9s} {'total/raw':>9s}"]
    for name, m in r["methods"].items():
        ratio = m["total_over_raw_sim"]
        lines.append(f"  {name:10s} {m['sample_s']:9.2f} {m['update_s']:9.2f} {m['total_s']:9.2f} "
                     f"{m['raw_sim_s']:9.2f} {'-' if ratio is None else f'{ratio:.2f}':>9s}")
    if "maml_over_fomaml_update" in r:
        lines.append(f"  MAML / FOMAML meta-update time: {r['maml_over_fomaml_update']:.2f}x")
    return "\n".join(lines)
