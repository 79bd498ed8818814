"""What existing methods compute does not change under refactors of the machinery around them.

`fixtures/smoke_metrics/<algo>.csv` holds the reproducible columns of metrics.csv written by
``adaptrl train ALGO point-nav --preset smoke --seed 3`` (hopper-2d for admrl) with one torch
thread, recorded before the rollout contract (stateful policies, trials, sampler backends)
replaced the closure-based sampler. Every value must come out bit for bit the same.

Bit equality is only defined for the same kernels: the recording's torch version, CPU
capability (AVX2, AVX512, ...) and MuJoCo version are stored beside it, and on a machine that
differs in any of them the test is skipped with the reason.
"""

import csv
import json
from pathlib import Path

import mujoco
import pytest
import torch

from adaptrl.runner import is_timing_column, train

FIXTURES = Path(__file__).parent / "fixtures" / "smoke_metrics"
CASES = [("maml", "point-nav"), ("fomaml", "point-nav"), ("reptile", "point-nav"),
         ("pretrain", "point-nav"), ("oracle", "point-nav"), ("pearl", "point-nav"),
         ("flap", "point-nav"), ("admrl", "hopper-2d")]


def _same_kernels() -> str | None:
    recorded = json.loads((FIXTURES / "environment.json").read_text())
    here = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mujoco": mujoco.__version__}
    differ = [f"{k} {recorded[k]} there, {v} here" for k, v in here.items() if recorded[k] != v]
    return "; ".join(differ) or None


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if not is_timing_column(k)}
                for row in csv.DictReader(handle)]


@pytest.mark.parametrize("algo,family", CASES, ids=[c[0] for c in CASES])
def test_smoke_run_writes_the_recorded_metrics(tmp_path, one_torch_thread, algo, family):
    reason = _same_kernels()
    if reason:
        pytest.skip(f"recorded with other kernels ({reason})")
    run_dir = train(algo, family, preset="smoke", seed=3, out=tmp_path / algo, progress=False)
    assert _rows(run_dir / "metrics.csv") == _rows(FIXTURES / f"{algo}.csv")
