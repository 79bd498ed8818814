"""Learning tests (slow group: ``make test-slow`` / ``pytest -m slow``).

MAML on point-nav with the demo preset (MAML's nav setting, curvature products on a fifth of
the episodes), seeded: after one adaptation step it closes at least 80% of the gap between the
random initialisation's return at step 0 and the analytic oracle, and beats the multi-task
pretrained baseline after one step. The same numbers are what `make demo` shows.

FLAP on cheetah-vel-hard (laptop preset): one context episode recovers most of what the
training tasks' own heads achieve, without a gradient step.
"""

import numpy as np
import pytest
import torch

from adaptrl.algos import get_algorithm
from adaptrl.config import make_config
from adaptrl.eval import evaluate, tasks_for_split
from adaptrl.tasks import get_family

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _trained(name, iterations):
    family = get_family("point-nav")
    cls = get_algorithm(name)
    config = make_config(cls, "demo", [f"iterations={iterations}"])
    torch.manual_seed(0)
    algo = cls(family, config)
    rng = np.random.default_rng(0)
    for _ in range(iterations):
        algo.train_step(rng)
    return algo


def _evaluate(algo, tasks):
    return evaluate(algo, algo.family, tasks, [0, 1], 20, np.random.default_rng(1))


def test_maml_closes_80_percent_of_the_gap_after_one_step_and_beats_pretraining():
    family = get_family("point-nav")
    tasks = tasks_for_split(family, "test", 40, np.random.default_rng(123))
    random_init = _evaluate(_trained("random", 1), tasks)  # no updates: the initial policy
    maml = _evaluate(_trained("maml", 60), tasks)
    pretrain = _evaluate(_trained("pretrain", 60), tasks)

    random_step0 = random_init["summary"]["mean"][0]
    oracle = random_init["summary"]["oracle_mean"]
    maml_step1 = maml["summary"]["mean"][1]
    closed = (maml_step1 - random_step0) / (oracle - random_step0)
    print(f"random@0 {random_step0:.2f}  maml@1 {maml_step1:.2f}  oracle {oracle:.2f}  "
          f"closed {closed:.1%}  pretrain@1 {pretrain['summary']['mean'][1]:.2f}")
    assert closed >= 0.80
    assert maml_step1 > pretrain["summary"]["mean"][1]
    # adaptation itself helps: the post-update return beats the pre-update one
    assert maml_step1 > maml["summary"]["mean"][0] + 5.0


def _own_head_returns(flap, rows, episodes, rng):
    """Mean return of each training task's own head (deterministic actions) ``[len(rows)]``."""
    heads = flap.actor.heads.detach()[rows]
    batch = flap.collect(flap.train_tasks[rows], episodes,
                         flap.head_actor(heads, deterministic=True), rng)
    return batch.episode_returns().double().mean(1).numpy()


def test_flap_adapter_recovers_most_of_the_head_policies_return_on_cheetah_vel():
    """FLAP on cheetah-vel-hard (laptop preset, 60 iterations; 16 minutes on 2 busy cores): on the
    training tasks, the policy adapted from one context episode (no gradient step) closes at
    least half of the gap between the mean head (no adaptation) and each task's own head, and
    the adapter explains most of the heads' variation across tasks (R² > 0.5)."""
    family = get_family("cheetah-vel-hard")
    cls = get_algorithm("flap")
    torch.manual_seed(0)
    flap = cls(family, make_config(cls, "cheetah-cpu", ["iterations=60"]))
    rng = np.random.default_rng(0)
    r2 = [flap.train_step(rng)["adapter/r2"] for _ in range(60)]
    assert np.mean(r2[-5:]) > 0.5, r2[-5:]

    rows = np.arange(0, flap.config.num_train_tasks, 4)  # 10 of the 40 training tasks
    tasks = flap.train_tasks[rows]
    result = evaluate(flap, family, tasks, [0, 1], 3, np.random.default_rng(1))
    mean_head = np.array([t["returns"][0] for t in result["tasks"]])
    adapted = np.array([t["returns"][1] for t in result["tasks"]])
    own = _own_head_returns(flap, rows, 3, np.random.default_rng(2))
    closed = (adapted.mean() - mean_head.mean()) / (own.mean() - mean_head.mean())
    print(f"mean head {mean_head.mean():.1f}, adapted {adapted.mean():.1f}, own heads "
          f"{own.mean():.1f}: {100 * closed:.0f}% of the gap closed")
    assert own.mean() > mean_head.mean() + 20  # the heads did specialise
    assert closed >= 0.5
