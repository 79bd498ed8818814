"""The maze metrics of RL² Table 3 and SNAIL Table 5, for the top-down ``maze-*`` families.

Those tables report, per episode index of 2-episode trials, the steps taken to reach the goal
(SNAIL: "average time to find the goal"; RL²: the mean length of successful episodes), the
success rate, and (RL²) the share of trials whose second episode was no longer than the first
among those that reached the goal twice. `maze_metrics` computes all of them from sampled
trials. Numbers of the top-down mazes are not comparable with those first-person mazes' tables.
"""

from __future__ import annotations

import torch

from ..sampling import Episodes
from .stats import ci95_half_width


def _mean_ci(values: torch.Tensor) -> tuple[float | None, float | None]:
    """Mean and half-width of its 95 % interval (Student's t; 0 for one value, None for
    none)."""
    if values.numel() == 0:
        return None, None
    values = values.double()
    return float(values.mean()), ci95_half_width(values.numpy()) or 0.0


def maze_metrics(episodes: Episodes) -> dict:
    """The papers' maze metrics of ``episodes`` (`Episodes` of trials, ``trial_episodes`` ≥ 1
    episodes each), one list entry per episode index j of the trial:

    * ``success``: the share of trials whose episode j reached the goal (ended by the family's
      rule rather than the cap);
    * ``steps`` / ``steps_ci95``: the mean steps of episode j (time to the goal; an episode that
      failed counts the whole cap, as a time-to-goal table must) and its 95 % half-width;
    * ``steps_successful`` / ``steps_successful_ci95``: the mean steps of the successful
      episodes only (RL² Table 3 (a)); None where none succeeded;
    * ``return``: the mean return of episode j;

    and ``improved``: among the trials that reached the goal in episodes 1 and 2, the share whose
    episode 2 took no more steps than episode 1 (RL² Table 3 (c)); None without such trials or
    with one-episode trials (``improved_trials`` counts them). Equal lengths count as improved,
    so a policy that repeats itself scores 100 %: ``improved_strictly`` is the share whose
    episode 2 was strictly shorter. ``trials``: how many trials."""
    k = episodes.trial_episodes
    rows = episodes.num_tasks * episodes.num_episodes
    shape = (rows, k, episodes.episode_horizon)
    steps = episodes.mask.reshape(shape).sum(-1)
    success = episodes.terminated.reshape(shape).any(-1)
    returns = episodes.trial_episode_returns().reshape(rows, k)
    out = {"trials": rows, "episodes": k, "success": [], "steps": [], "steps_ci95": [],
           "steps_successful": [], "steps_successful_ci95": [], "return": []}
    for j in range(k):
        mean, half = _mean_ci(steps[:, j])
        ok_mean, ok_half = _mean_ci(steps[success[:, j], j])
        out["success"].append(float(success[:, j].double().mean()))
        out["steps"].append(mean)
        out["steps_ci95"].append(half)
        out["steps_successful"].append(ok_mean)
        out["steps_successful_ci95"].append(ok_half)
        out["return"].append(float(returns[:, j].double().mean()))
    twice = success[:, 0] & success[:, 1] if k > 1 else torch.zeros(rows, dtype=torch.bool)
    out["improved_trials"] = int(twice.sum())
    out["improved"] = (float((steps[twice, 1] <= steps[twice, 0]).double().mean())
                       if bool(twice.any()) else None)
    out["improved_strictly"] = (float((steps[twice, 1] < steps[twice, 0]).double().mean())
                                if bool(twice.any()) else None)
    return out
