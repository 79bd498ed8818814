"""Oracle returns A*(ψ): the best return a policy that knows ψ can reach, per task.

The suboptimality gap of a meta-learned policy is ``G_n(ψ) = A*(ψ) − A_n(ψ)``. Where a family
allows it the oracle is analytic (computed exactly, no sampling); the other families get a
trained oracle (per-task policies trained and cached by `adaptrl oracle`, see
`adaptrl.eval.trained_oracle`). Both plug in the same way: an `Oracle` registered
under the family's name with `register_oracle`, whose ``returns(family, tasks, horizon)`` gives
one return per task.

Analytic oracles replay the environment's own arithmetic (float32 positions and rewards, the
family's reward function, the same summation), so that an environment rollout of the oracle
policy returns exactly the same numbers; `tests/test_eval.py` pins this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..tasks import TaskFamily, get_family

# (family, tasks [T, k] float64, horizon) -> returns [T] float64
OracleFn = Callable[[TaskFamily, np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Oracle:
    """How to get A*(ψ) for one family.

    kind: ``analytic`` (exact, computed) or ``trained`` (trained policies' measured returns;
    their training is recorded where the oracle is stored).
    description: one line for reports, e.g. the optimal policy in words.
    returns: ``(family, tasks [T, k], horizon) -> [T]`` undiscounted returns, or None when the
    oracle has no value for these tasks (a trained oracle without a cached entry; see
    `adaptrl.eval.trained_oracle`).
    """

    kind: str
    description: str
    returns: OracleFn


ORACLES: dict[str, Oracle] = {}


def register_oracle(family_name: str, oracle: Oracle) -> Oracle:
    """Make ``oracle`` the oracle of the family called ``family_name``."""
    if oracle.kind not in ("analytic", "trained"):
        raise ValueError(f"oracle kind must be 'analytic' or 'trained', got '{oracle.kind}'")
    ORACLES[family_name] = oracle
    return oracle


def get_oracle(family: TaskFamily | str) -> Oracle | None:
    """The oracle registered for ``family``, or None when the family has none (yet)."""
    return ORACLES.get(get_family(family).name)


def oracle_returns(family: TaskFamily | str, tasks, horizon: int | None = None
                   ) -> np.ndarray | None:
    """A*(ψ) for each task: ``tasks [T, k]`` → ``[T]`` float64, or None without an oracle.

    ``horizon``: episode length (None: the family's horizon); it must be the one the evaluated
    policy is rolled out with, since returns are sums over the episode.
    """
    family = get_family(family)
    oracle = ORACLES.get(family.name)
    if oracle is None:
        return None
    tasks = family.check_tasks(tasks)
    horizon = int(horizon or family.horizon)
    if horizon < 1:
        raise ValueError(f"horizon must be positive, got {horizon}")
    raw = oracle.returns(family, tasks, horizon)
    if raw is None:  # a trained oracle with no cached entry for exactly these tasks
        return None
    returns = np.asarray(raw, dtype=np.float64)
    if returns.shape != (len(tasks),):
        raise RuntimeError(f"the oracle of '{family.name}' returned shape {returns.shape}, "
                           f"expected ({len(tasks)},)")
    return returns


# ─── point navigation: the greedy straight-line policy is optimal ────────────────────────────
POINT_MAX_STEP = 0.1  # per-coordinate action bound of `adaptrl.envs.PointEnv`


def greedy_point_action(obs: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
    """The optimal point-nav action: each coordinate moves toward the goal by
    min(0.1, remaining). ``obs [..., 2]``, ``goals [..., 2]`` (same dtype) → ``[..., 2]``.

    Each coordinate's distance to the goal is as small as the action bound allows after every
    step, so the Euclidean distance (and its square) is minimal at every step at once, and so
    is any return that sums a decreasing function of the distance.
    """
    return torch.clamp(goals - obs, -POINT_MAX_STEP, POINT_MAX_STEP)


def _point_nav_returns(family: TaskFamily, tasks: np.ndarray, horizon: int) -> np.ndarray:
    """Return of `greedy_point_action` from the origin, replaying `PointEnv` exactly.

    The environment keeps positions in float32, evaluates ``family.reward`` and
    ``family.terminated`` on float32 tensors shaped ``[T, N, ·]`` with ψ cast to float32, zeroes
    rewards after an episode ended, and `Episodes.episode_returns` sums ``[T, N, H]`` over the
    last axis; the same operations in the same order here give bit-identical returns.
    """
    T = len(tasks)
    goals = torch.as_tensor(tasks, dtype=torch.float32)[:, None, :]  # [T, 1, 2]
    pos = torch.zeros(T, 1, 2, dtype=torch.float32)
    active = torch.ones(T, 1, dtype=torch.bool)
    rewards = torch.zeros(T, 1, horizon, dtype=torch.float32)
    mask = torch.zeros(T, 1, horizon, dtype=torch.float32)
    with torch.no_grad():
        for t in range(horizon):
            mask[..., t] = active.to(torch.float32)
            action = greedy_point_action(pos, goals)
            new_pos = torch.where(active[..., None], pos + action, pos)
            reward = family.reward(pos, action, new_pos, goals).to(torch.float32)
            rewards[..., t] = torch.where(active, reward, torch.zeros_like(reward))
            active = active & ~family.terminated(new_pos, goals)
            pos = new_pos
            if not bool(active.any()):
                break
        return (rewards * mask).sum(-1)[:, 0].to(torch.float64).numpy()


for _name in ("point-nav", "point-nav-sq"):
    register_oracle(_name, Oracle(
        kind="analytic",
        description="greedy straight line: each coordinate moves min(0.1, remaining) per step",
        returns=_point_nav_returns,
    ))


def _bandit_returns(family: TaskFamily, tasks: np.ndarray, horizon: int) -> np.ndarray:
    """The expected return of the best arm: each episode is one pull, so A*(ψ) = max_i p_i."""
    return np.asarray(tasks, dtype=np.float64).max(-1)


for _name in ("bandit-k5", "bandit-k10", "bandit-k50"):
    register_oracle(_name, Oracle(
        kind="analytic", description="the best arm's mean, max_i p_i (expected, per pull)",
        returns=_bandit_returns,
    ))


def _tabular_mdp_returns(family: TaskFamily, tasks: np.ndarray, horizon: int) -> np.ndarray:
    """The expected return of the optimal finite-horizon policy from state 0: backward value
    iteration over ``horizon`` steps on the true MDP (SNAIL normalises by this)."""
    from ..tasks.families import MDP_ACTIONS, MDP_STATES, tabular_mdp_parts

    transitions, means = tabular_mdp_parts(np.asarray(tasks, dtype=np.float64), MDP_STATES,
                                           MDP_ACTIONS)
    value = np.zeros((len(tasks), MDP_STATES))
    for _ in range(horizon):
        q = means + np.einsum("tsan,tn->tsa", transitions, value)
        value = q.max(-1)
    return value[:, 0]


register_oracle("tabular-mdp", Oracle(
    kind="analytic", description="value iteration on the true MDP, T steps from state 0",
    returns=_tabular_mdp_returns,
))


def _maze_returns(family: TaskFamily, tasks: np.ndarray, horizon: int) -> np.ndarray:
    """The return of the shortest path: L moves to a goal L moves away (breadth-first search)
    earn 1 − 0.01·L; a goal out of reach within ``horizon`` steps (or not connected) leaves
    −0.01 per step (−0.011 from a closed cell, where every move hits a wall). Replays the
    environment's arithmetic: the family's reward on float32 observations, summed over the
    ``[T, 1, H]`` rewards as `Episodes` sums them."""
    from ..envs.maze import maze_distances
    from ..tasks.families import check_maze_tasks

    passable, start, goal = check_maze_tasks(tasks)
    rows = np.arange(len(tasks))
    moves = maze_distances(passable, goal)[rows, start[:, 0], start[:, 1]]
    closed = ~passable[rows, start[:, 0], start[:, 1]].any(-1)
    obs = torch.zeros(3, family.obs_dim, dtype=torch.float32)
    obs[1, 4] = 1.0  # on the goal
    obs[2, 5] = 1.0  # bumped
    with torch.no_grad():
        step, arrive, bump = family.reward(obs, torch.zeros(3, family.act_dim), obs,
                                           torch.zeros(1, family.task_dim)).tolist()
    t = torch.arange(horizon)[None, None, :]
    length = torch.as_tensor(moves)[:, None, None]
    reached = (length >= 1) & (length <= horizon)
    idle = torch.where(torch.as_tensor(closed)[:, None, None], bump, step)
    rewards = torch.where(reached, torch.where(t < length - 1, step,
                                               torch.where(t == length - 1, arrive, 0.0)),
                          idle).to(torch.float32)
    return rewards.sum(-1)[:, 0].to(torch.float64).numpy()


for _name in ("maze-small", "maze-large"):
    register_oracle(_name, Oracle(
        kind="analytic", description="shortest path (breadth-first search): 1 − 0.01·L for a "
                                     "goal L moves away",
        returns=_maze_returns,
    ))
