"""Where one AdMRL outer iteration spends its time: real samples, virtual training, task gradient.

    .venv/bin/python benchmarks/admrl_time_split.py [--family hopper-2d] [--preset paper]
                                                    [--set key=value ...]

1. Times each piece once at the preset's sizes, on one process: a real SLBO collection
   (fast_batch × horizon steps), a model step, a model rollout of virtual_episodes × horizon
   steps, a TRPO step on it, and the whole task gradient (Eqs. 2–7 with task_cg_iters CG
   iterations). From these it extrapolates one outer iteration of the preset's schedule:
       real    = n_slbo · t_collect
       virtual = (n_zeroshot + n_slbo·n_inner) · (n_model·t_model + n_policy·(t_rollout + t_trpo))
       task    = task_steps · t_task_grad
2. Runs two real outer iterations with a shortened schedule (--short) and prints the
   ``time/*`` metrics that train_step logs.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from adaptrl.algos import get_algorithm
from adaptrl.bench import timed
from adaptrl.cli import configure_threads
from adaptrl.config import make_config
from adaptrl.tasks import get_family

SHORT = ["n_zeroshot=1", "n_slbo_first=1", "n_slbo=2", "n_inner=1", "n_policy=2", "n_model=20"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="hopper-2d")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    threads = configure_threads()
    torch.manual_seed(0)
    cls = get_algorithm("admrl")
    cfg = make_config(cls, args.preset, args.overrides)
    family = get_family(args.family)
    algo = cls(family, cfg)
    rng = np.random.default_rng(0)
    psi = family.sample(1, rng)
    theta = algo.init_policy(1, rng)

    # ── pieces ──
    t_collect = timed(lambda: algo.add_data(algo.data, algo.collect(theta, psi, rng)), 2)
    obs, act, next_obs = algo._arrays(algo.data)
    algo.model.fit_normalizers(obs, act, next_obs)
    t_model = timed(lambda: algo.model.fit(obs, act, next_obs, 1, cfg.model_batch, rng,
                                           algo.model_opt), 10)
    batch = {}

    def rollout():
        batch["episodes"] = algo.virtual_rollout(theta, psi, rng, algo.model, algo.data)

    t_rollout = timed(rollout, 2)
    t_trpo = timed(lambda: algo.trpo_update(theta, batch["episodes"]), 2)
    hat_real = algo.collect(theta, psi, rng)
    star_real = algo.collect(theta, psi, rng)
    t_task = timed(lambda: algo.task_gradient(theta, hat_real, star_real, psi[0], rng), 1)

    n_virtual = cfg.n_zeroshot + cfg.n_slbo * cfg.n_inner
    real = cfg.n_slbo * t_collect
    virtual = n_virtual * (cfg.n_model * t_model + cfg.n_policy * (t_rollout + t_trpo))
    task = cfg.task_steps * t_task
    total = real + virtual + task
    print(f"{family.name}, preset {args.preset}, torch threads {threads}")
    print(f"  real collection ({cfg.fast_batch}×{algo.horizon} steps): {t_collect:.3f} s")
    print(f"  model step (batch {cfg.model_batch}): {t_model * 1e3:.2f} ms")
    print(f"  model rollout ({cfg.virtual_episodes}×{algo.virtual_horizon} steps): "
          f"{t_rollout:.3f} s")
    print(f"  TRPO step on it: {t_trpo:.3f} s")
    print(f"  task gradient ({cfg.task_cg_iters} CG iterations): {t_task:.3f} s")
    print(f"one outer iteration of the schedule (extrapolated): {total:.0f} s = "
          f"real {real:.1f} s ({100 * real / total:.2f}%), virtual {virtual:.0f} s "
          f"({100 * virtual / total:.2f}%), task gradient {task:.2f} s "
          f"({100 * task / total:.3f}%)")

    # ── two real outer iterations with a short schedule, as logged ──
    torch.manual_seed(0)
    short = make_config(cls, args.preset, [*args.overrides, *SHORT])
    algo = cls(family, short)
    rng = np.random.default_rng(1)
    for i in range(2):
        algo.train_step(rng)
        m = algo.clock.take()  # seconds per phase, as the runner logs them
        print(f"short schedule ({', '.join(SHORT)}), iteration {i + 1}: "
              f"real sampling {m.get('sample', 0.0):.2f} s, virtual training "
              f"{m.get('virtual', 0.0):.2f} s, task gradient {m.get('task_grad', 0.0):.2f} s")


if __name__ == "__main__":
    main()
