"""`adaptrl bench sampler`: the sampler's env-steps/s against a raw `mujoco.mj_step` loop."""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from ..algos import get_algorithm
from ..config import make_config
from ..nets import GaussianMLPPolicy
from ..progress import progress_bar
from ..sampling import LocalSampler
from ..tasks import get_family


def raw_mj_step_rate(family, steps: int, seed: int = 0) -> float:
    """Env-steps/s of a plain single-thread loop: set ``ctrl``, ``mj_step`` ``frame_skip`` times,
    on one ``MjData`` of the family's model, with controls drawn beforehand (no policy, no
    observation assembly: the physics alone)."""
    import mujoco

    from ..envs.mujoco_env import BODIES, load_model

    spec = BODIES[get_family(family).body]
    model = load_model(spec.xml)
    data = mujoco.MjData(model)
    rng = np.random.default_rng(seed)
    lo, hi = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    controls = rng.uniform(lo, hi, size=(steps, model.nu))
    mujoco.mj_step(model, data, nstep=spec.frame_skip)  # warm-up
    start = time.perf_counter()
    for i in range(steps):
        data.ctrl[:] = controls[i]
        mujoco.mj_step(model, data, nstep=spec.frame_skip)
        if i % 1000 == 999:  # keep the body in the typical regime (a fallen walker is cheaper)
            mujoco.mj_resetData(model, data)
    return steps / (time.perf_counter() - start)


def bench_sampler(family: str, tasks: int = 40, episodes: int = 20, horizon: int | None = None,
                  hidden=(100, 100), repeats: int = 1, seed: int = 0,
                  threads: int | None = None, recurrent: int = 0,
                  progress: bool = False, trial_episodes: int = 1) -> dict:
    """Time ``repeats`` full sampler batches (policy inference and rewards included) and a raw
    single-thread physics loop on the same model, in this process. ``recurrent`` > 0 also times
    the same batches with a recurrent policy (a GRU of that width, RL²'s inputs: its state and
    the previous action/reward/done bookkeeping), alternating with the memoryless one.
    ``progress``: a bar over the timed batches on stderr. ``trial_episodes`` > 1: each of the
    ``episodes`` rows is a trial of that many episodes (the recurrent state spans it)."""
    fam = get_family(family)
    horizon = int(horizon or fam.horizon)
    sampler = LocalSampler(fam, threads=threads)
    policy = GaussianMLPPolicy(fam.obs_dim, fam.act_dim, hidden)
    rng = np.random.default_rng(seed)
    task_set = fam.sample(tasks, rng)
    actor = policy.actor()
    # warm-up: a short batch so that first-call costs (thread pools, allocations) are not timed
    sampler.sample(actor, fam.sample(2, rng), rng, 2, horizon=2)
    env = sampler.environments(tasks, episodes)  # built outside the timed region
    gru = rl2 = None
    if recurrent:  # RL²'s network (GRU + value head) and its PPO update
        cls = get_algorithm("rl2")
        rl2 = cls(fam, make_config(cls, None, [f"hidden_sizes=[{recurrent}]",
                                               f"trial_episodes={trial_episodes}",
                                               f"horizon={horizon}"]), sampler)
        gru = rl2.policy.actor()
        sampler.sample(gru, fam.sample(2, rng), rng, 2, horizon=2)
    steps, seconds, gru_steps, gru_seconds = 0, 0.0, 0, 0.0
    bar = progress_bar(repeats, f"bench sampler {fam.name}", progress, unit="batch")
    for _ in range(repeats):
        start = time.perf_counter()
        episodes_ = sampler.sample(actor, task_set, rng, episodes, horizon=horizon,
                                   trial_episodes=trial_episodes)
        seconds += time.perf_counter() - start
        steps += episodes_.num_steps
        if gru is not None:
            start = time.perf_counter()
            episodes_ = sampler.sample(gru, task_set, rng, episodes, horizon=horizon,
                                       trial_episodes=trial_episodes)
            gru_seconds += time.perf_counter() - start
            gru_steps += episodes_.num_steps
        bar.update(1)
    bar.close()
    ppo_s = None
    if rl2 is not None:  # one PPO update (RL²'s epochs × minibatches) on the last GRU batch
        start = time.perf_counter()
        rl2.update(episodes_, rng)
        ppo_s = (time.perf_counter() - start) * 100_000 / episodes_.num_steps
    rate = steps / seconds
    result = {
        "family": fam.name, "tasks": tasks, "episodes": episodes, "horizon": horizon,
        "trial_episodes": trial_episodes,
        "policy": f"{'x'.join(map(str, hidden))} relu", "steps": steps, "seconds": seconds,
        "steps_per_s": rate, "raw_steps_per_s": None, "ratio": None,
        "mujoco_threads": getattr(env, "threads", None),
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "recurrent_policy": f"GRU {recurrent}" if recurrent else None,
        "recurrent_steps_per_s": gru_steps / gru_seconds if recurrent else None,
        "recurrent_over_memoryless": gru_steps / gru_seconds / rate if recurrent else None,
        "ppo_update_s_per_100k_steps": ppo_s,
        "ppo_update": (f"{rl2.config.ppo_epochs} epochs x {rl2.config.minibatches} minibatches"
                       if rl2 is not None else None),
    }
    if env.__class__.__name__ == "MujocoBatchEnv":
        raw = raw_mj_step_rate(fam, min(steps, 20_000), seed)
        result["raw_steps_per_s"] = raw
        result["ratio"] = rate / raw
    return result


def format_result(r: dict) -> str:
    lines = [
        f"sampler  {r['family']}: {r['tasks']} tasks x {r['episodes']} "
        + (f"trials of {r['trial_episodes']} episodes" if r.get("trial_episodes", 1) > 1
           else "episodes") + f" x H={r['horizon']}, "
        f"policy {r['policy']}, mujoco threads {r['mujoco_threads']}, "
        f"torch threads {r['torch_threads']}",
        f"  sampler (policy + rewards included): {r['steps_per_s']:>10,.0f} env-steps/s "
        f"({r['steps']:,} steps in {r['seconds']:.2f} s)",
    ]
    if r["raw_steps_per_s"] is None:
        lines.append("  raw mj_step loop: n/a (this family is not a MuJoCo body)")
    else:
        lines.append(f"  raw mj_step loop (1 thread):          {r['raw_steps_per_s']:>10,.0f} "
                     "env-steps/s")
        lines.append(f"  ratio sampler / raw:                  {r['ratio']:>10.2f}x")
    if r.get("recurrent_steps_per_s") is not None:
        lines.append(f"  sampler, {r['recurrent_policy']} policy:       "
                     f"{r['recurrent_steps_per_s']:>10,.0f} env-steps/s "
                     f"({r['recurrent_over_memoryless']:.2f}x the memoryless policy's)")
    if r.get("ppo_update_s_per_100k_steps") is not None:
        lines.append(f"  RL² PPO update ({r['ppo_update']}):  "
                     f"{r['ppo_update_s_per_100k_steps']:>10.2f} s per 100k env-steps")
    return "\n".join(lines)


def bench_ray_sampler(family: str, workers=(1, 2), tasks: int = 40, episodes: int = 20,
                      horizon: int | None = None, hidden=(100, 100), repeats: int = 1,
                      seed: int = 0, address: str | None = None,
                      progress: bool = False) -> dict:
    """The Ray backend's env-steps/s for each worker count in ``workers``, next to the local
    backend's on the same batches in the same process, with what one call moves and costs:
    ``bytes_sent`` (the policy snapshot, put once, and the tasks), ``bytes_received`` (the
    episodes), ``overhead_s`` (a call's wall time minus its slowest worker's rollout: transfer,
    scheduling, stitching). Each sampler has one untimed warm-up call of the full batch."""
    from ..sampling import make_sampler
    from ..sampling.ray_backend import start_ray

    fam = get_family(family)
    horizon = int(horizon or fam.horizon)
    torch.manual_seed(seed)
    actor = GaussianMLPPolicy(fam.obs_dim, fam.act_dim, hidden).actor()
    task_set = fam.sample(tasks, np.random.default_rng(seed))

    def timed(sampler, ray_calls=None):
        rng = np.random.default_rng(seed)
        sampler.sample(actor, task_set, rng, episodes, horizon=horizon)  # warm-up
        steps, seconds = 0, 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            batch = sampler.sample(actor, task_set, rng, episodes, horizon=horizon)
            seconds += time.perf_counter() - start
            steps += batch.num_steps
            if ray_calls is not None:
                ray_calls.append(dict(sampler.last_call))
            bar.update(1)
        return steps / seconds

    bar = progress_bar(repeats * (1 + len(workers)), f"bench sampler {fam.name} (ray)",
                       progress, unit="batch")
    started = start_ray(address, max(workers))
    rows = []
    try:
        for count in workers:
            local_rate = timed(LocalSampler(fam))  # next to each worker count: the noise
            calls: list[dict] = []
            sampler = make_sampler(fam, "ray", count, address)
            try:
                rate = timed(sampler, calls)
            finally:
                sampler.close()
            rows.append({
                "workers": count, "steps_per_s": rate, "local_steps_per_s": local_rate,
                "ratio_to_local": rate / local_rate,
                "bytes_sent": calls[-1]["bytes_sent"],
                "bytes_received": calls[-1]["bytes_received"],
                "overhead_s": float(np.mean([c["call_s"] - c["worker_rollout_s"]
                                             for c in calls])),
            })
    finally:
        bar.close()
        if started:
            import ray

            ray.shutdown()
    return {"family": fam.name, "backend": "ray", "tasks": tasks, "episodes": episodes,
            "horizon": horizon, "policy": f"{'x'.join(map(str, hidden))} relu",
            "repeats": repeats, "cpus": os.cpu_count(), "address": address, "results": rows}


def format_ray_result(r: dict) -> str:
    lines = [f"sampler  {r['family']}: {r['tasks']} tasks x {r['episodes']} episodes x "
             f"H={r['horizon']}, policy {r['policy']}, {r['repeats']} timed batch(es), "
             f"{r['cpus']} cpus, ray {'at ' + r['address'] if r['address'] else 'local'}",
             f"{'workers':>8} {'steps/s':>10} {'local steps/s':>14} {'ratio':>6} "
             f"{'MB sent/call':>13} {'MB back/call':>13} {'overhead/call':>14}"]
    for row in r["results"]:
        lines.append(f"{row['workers']:>8} {row['steps_per_s']:>10,.0f} "
                     f"{row['local_steps_per_s']:>14,.0f} {row['ratio_to_local']:>6.2f} "
                     f"{row['bytes_sent'] / 1e6:>13.3f} {row['bytes_received'] / 1e6:>13.1f} "
                     f"{row['overhead_s'] * 1e3:>11.0f} ms")
    return "\n".join(lines)
