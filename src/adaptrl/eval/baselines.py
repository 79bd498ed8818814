"""The classical baselines of the black-box families through the evaluation protocol's files.

`adaptrl baselines FAMILY` runs each baseline (`adaptrl.algos.classical`) on the split's tasks,
``episodes`` trials of ``trial_episodes`` episodes per task, and writes one eval.json per
baseline with the schema every method writes: budget n is the episode index inside the trial
(``budget_unit`` "episodes in the trial", as for RL²), the return of budget n is the mean
return of episode n + 1 of the trials, and ``samples`` counts the steps of the n episodes
before it. `adaptrl compare` then puts the baselines beside RL² on the same tasks (the same
``--seed`` draws the same tasks for `adaptrl eval` and `adaptrl baselines`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..algos.classical import (
    PSRL,
    UCB1,
    EpsilonGreedyArm,
    EpsilonGreedyMDP,
    GittinsIndex,
    GreedyArm,
    GreedyMDP,
    RandomArm,
    RandomMDPPolicy,
    RandomMoves,
    ShortestPathOracle,
    ThompsonSampling,
    WallFollower,
)
from ..errors import AdaptrlError
from ..sampling import LocalSampler, Policy
from ..tasks import TaskFamily, get_family
from .oracles import get_oracle, oracle_returns
from .protocol import summarize

BUDGET_UNIT = "episodes in the trial"


def classical_baselines(family: TaskFamily | str, trial_episodes: int, epsilon: float = 0.1,
                        ucb_c: float = 0.2, tasks=None) -> dict[str, Policy]:
    """The baselines of a family, by name. Bandits: random, greedy, ε-greedy, UCB1 (``ucb_c``;
    RL²'s numbers need c ≈ 0.05–0.2, classic UCB1 is 1), Thompson sampling and the Gittins
    index for a horizon of ``trial_episodes`` pulls. Tabular MDPs: random, greedy, ε-greedy and
    PSRL. Mazes: random moves, the right-hand wall follower and, when the ``tasks [T, k]`` it
    will run on are given, the shortest-path oracle (it knows ψ)."""
    family = get_family(family)
    if family.body == "bandit":
        k = family.act_dim
        return {"random": RandomArm(k), "greedy": GreedyArm(k),
                "epsilon-greedy": EpsilonGreedyArm(k, epsilon), "ucb1": UCB1(k, ucb_c),
                "thompson": ThompsonSampling(k), "gittins": GittinsIndex(k, trial_episodes)}
    if family.body == "tabular_mdp":
        return {"random": RandomMDPPolicy(family.act_dim), "greedy": GreedyMDP(),
                "epsilon-greedy": EpsilonGreedyMDP(epsilon), "psrl": PSRL()}
    if family.body == "maze":
        found = {"random": RandomMoves(family.act_dim), "wall-follower": WallFollower()}
        if tasks is not None:
            found["shortest-path"] = ShortestPathOracle(family.check_tasks(tasks))
        return found
    raise AdaptrlError(f"'{family.name}' has no classical baselines; they exist for the "
                       f"bandit-k*, tabular-mdp and maze-* families")


def evaluate_in_trials(policy: Policy, name: str, family: TaskFamily | str, tasks,
                       trial_episodes: int, episodes: int, rng: np.random.Generator, *,
                       split: str = "custom", seed: int | None = None) -> dict:
    """The eval dict (`adaptrl.eval.protocol`'s schema) of ``policy`` run in trials of
    ``trial_episodes`` episodes, ``episodes`` trials per task of ``tasks [T, k]``."""
    family = get_family(family)
    tasks = family.check_tasks(tasks)
    if trial_episodes < 1 or episodes < 1:
        raise AdaptrlError("trial episodes and episodes per task must be positive")
    with torch.no_grad():
        trials = LocalSampler(family).sample(policy, tasks, rng, episodes,
                                             trial_episodes=trial_episodes)
    returns = trials.trial_episode_returns().double().mean(1).numpy().T  # [k, T]
    steps_per_episode = trials.mask.reshape(*trials.mask.shape[:2], trial_episodes, -1).sum(-1)
    before = torch.cumsum(steps_per_episode, -1) - steps_per_episode  # steps before episode j
    samples = before.double().mean(1).numpy()  # [T, k]
    oracle = oracle_returns(family, tasks, family.horizon)
    info = get_oracle(family)
    budgets = list(range(trial_episodes))
    return {
        "algo": name, "family": family.name, "split": split, "steps": budgets,
        "budget_unit": BUDGET_UNIT, "episodes": int(episodes), "seed": seed,
        "horizon": family.horizon, "param_names": list(family.task_names),
        "oracle_kind": None if oracle is None or info is None else info.kind,
        "tasks": [{"params": tasks[i].tolist(), "returns": returns[:, i].tolist(),
                   "oracle": None if oracle is None else float(oracle[i]),
                   "adapt_ms": [0.0] * trial_episodes,
                   "samples": [int(round(s)) for s in samples[i]]}
                  for i in range(len(tasks))],
        "summary": summarize(returns, oracle),
    }
