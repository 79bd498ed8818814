"""`adaptrl bench meta-step`: seconds per meta-iteration, split into sampling and meta-update."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..algos import get_algorithm
from ..config import make_config
from ..tasks import get_family


def bench_meta_step(family: str, algos=("maml", "fomaml", "reptile"), preset="locomotion",
                    overrides=(), iterations: int = 1, seed: int = 0) -> dict:
    """Time ``iterations`` meta-iterations of each method in this process (after building its
    environments, which are reused across iterations), using the methods' own
    ``time/sample_s`` / ``time/update_s`` split. Returns per method ``sample_s``, ``update_s``,
    ``total_s`` (means over iterations) and, when both ran, ``maml_over_fomaml_update``."""
    fam = get_family(family)
    results: dict = {"family": fam.name, "preset": preset, "iterations": iterations,
                     "torch_threads": torch.get_num_threads(), "methods": {}}
    for name in algos:
        cls = get_algorithm(name)
        config = make_config(cls, preset, overrides)
        torch.manual_seed(seed)
        algo = cls(fam, config)
        algo.sampler(config.meta_batch)  # build the environments outside the timed region
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(iterations):
            start = time.perf_counter()
            metrics = algo.train_step(rng)
            total = time.perf_counter() - start
            rows.append((metrics.get("time/sample_s", 0.0), total))
        sample_s = float(np.mean([r[0] for r in rows]))
        total_s = float(np.mean([r[1] for r in rows]))
        results["methods"][name] = {"sample_s": sample_s, "update_s": total_s - sample_s,
                                    "total_s": total_s,
                                    "return": float(metrics.get("return", float("nan")))}
    methods = results["methods"]
    if "maml" in methods and "fomaml" in methods and methods["fomaml"]["update_s"] > 0:
        results["maml_over_fomaml_update"] = (methods["maml"]["update_s"]
                                              / methods["fomaml"]["update_s"])
    return results


def format_meta_step(r: dict) -> str:
    lines = [f"meta-step  {r['family']}, preset {r['preset']}, mean of {r['iterations']} "
             f"iteration(s), torch threads {r['torch_threads']}",
             f"  {'method':10s} {'sample_s':>9s} {'update_s':>9s} {'total_s':>9s}"]
    for name, m in r["methods"].items():
        lines.append(f"  {name:10s} {m['sample_s']:9.2f} {m['update_s']:9.2f} {m['total_s']:9.2f}")
    if "maml_over_fomaml_update" in r:
        lines.append(f"  MAML / FOMAML meta-update time: {r['maml_over_fomaml_update']:.2f}x")
    return "\n".join(lines)
