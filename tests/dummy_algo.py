"""A tiny method for runner tests: SGD with momentum on a linear model, fed by both RNGs.

Each step draws inputs from the handed NumPy generator and label noise from torch's global RNG,
so a resume that restored either RNG, the weights or the optimizer's momentum wrongly would
change every later metric. Importing this module registers it as ``dummy-test``; subprocess
tests import it by putting this folder on ``sys.path``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from adaptrl.algos import BaseConfig, MetaAlgorithm, option, register_algorithm

SLEEP_ENV = "ADAPTRL_DUMMY_SLEEP_S"
"""Seconds each step sleeps. This and `CRASH_ENV` are environment variables, not config fields,
so that the interrupted run and its resumption have the same config."""
CRASH_ENV = "ADAPTRL_DUMMY_CRASH_AT"
"""Raise inside this iteration (1-based)."""


@dataclass
class DummyConfig(BaseConfig):
    iterations: int = option(6, "meta-training iterations")
    checkpoint_every: int = option(2, "write a checkpoint every k iterations (and at the end)")
    lr: float = option(0.05, "SGD step size", gt=0)
    momentum: float = option(0.9, "SGD momentum")
    batch: int = option(16, "samples per step")
    shuffle: bool = option(False, "a boolean (unused)")
    extra_metric_from: int = option(0, "from this iteration on, also report 'late'; 0: never")
    tag: str = option("plain", "a free-form string")
    clip: float | None = option(None, "gradient clip norm; none: no clipping")
    widths: list[float] = option([0.5, 1.5], "a list of floats")


@register_algorithm
class DummyAlgo(MetaAlgorithm):
    name = "dummy-test"
    Config = DummyConfig

    def __init__(self, family, config, sampler=None):
        super().__init__(family, config, sampler)
        self.model = torch.nn.Linear(3, 1)  # initialised from torch's global RNG
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr,
                                         momentum=config.momentum)
        self.true_weights = torch.tensor([[1.0], [-2.0], [0.5]])

    def train_step(self, rng: np.random.Generator) -> dict[str, float]:
        step = self.iteration + 1
        if step == int(os.environ.get(CRASH_ENV, "0")):
            raise RuntimeError(f"dummy crash in iteration {step}")
        x = torch.as_tensor(rng.normal(size=(self.config.batch, 3)), dtype=torch.float32)
        y = x @ self.true_weights + 0.1 * torch.randn(self.config.batch, 1)
        loss = torch.nn.functional.mse_loss(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        if self.config.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        time.sleep(float(os.environ.get(SLEEP_ENV, "0")))
        metrics = {"loss": loss.item(), "return": -loss.item(),
                   "weight_norm": self.model.weight.norm().item()}
        if self.config.extra_metric_from and step >= self.config.extra_metric_from:
            metrics["late"] = float(step)
        return metrics

    def adapt(self, tasks, budgets, rng):
        raise NotImplementedError("the dummy method does not adapt")

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
