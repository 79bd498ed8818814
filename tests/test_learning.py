"""Learning tests (slow group: ``make test-slow`` / ``pytest -m slow``).

MAML on point-nav with the demo preset (MAML's nav setting, curvature products on a fifth of
the episodes), seeded: after one adaptation step it closes at least 80% of the gap between the
random initialisation's return at step 0 and the analytic oracle, and beats the multi-task
pretrained baseline after one step. The same numbers are what `make demo` shows.
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
