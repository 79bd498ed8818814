"""Recompute the Cheetah-Highdim state normalizer that ships with the package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..tasks.families import HIGHDIM_NORMALIZER_FILE

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "tasks" / "data" / HIGHDIM_NORMALIZER_FILE


def compute_highdim_normalizer(episodes: int = 100, seed: int = 0) -> dict:
    """Mean and std of HalfCheetah's 18-d state (x kept) under a uniform random policy,
    over ``episodes`` episodes of 200 steps (AdMRL §5: "computed from all states collected by
    random policy from real environments")."""
    from .mujoco_env import random_policy_states

    states = random_policy_states("cheetah-highdim", episodes, seed)
    std = np.maximum(states.std(axis=0), 1e-6)
    return {
        "mean": states.mean(axis=0).round(8).tolist(),
        "std": std.round(8).tolist(),
        "episodes": episodes,
        "seed": seed,
        "states": int(states.shape[0]),
        "command": f"adaptrl normalizer cheetah-highdim --episodes {episodes} --seed {seed}",
    }


def write_highdim_normalizer(path: Path = DEFAULT_PATH, episodes: int = 100, seed: int = 0) -> dict:
    data = compute_highdim_normalizer(episodes, seed)
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return data
