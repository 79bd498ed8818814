"""The classical baselines of the black-box meta-RL tables (RL² §§3.1–3.2, Tables 1–2) as sampler
policies: they implement the rollout contract (`adaptrl.sampling.policy`) and run through the
library's sampler exactly like a learned recurrent policy, batched over all T × N environments,
one call per step, with all their randomness drawn from the rollout's torch generator (equal
rollout RNGs give equal results).

**Bandits** (``bandit-k*`` families: each pull is an episode of one step, a trial is n pulls).
The state of a policy holds, per environment and arm, the successes and failures it has seen,
``{"successes", "failures"}`` ``[T, N, k]``, updated at each step from the previous one-hot
action and 0/1 reward (all zeros at the start of a trial: a no-op). Every statistic starts from a
Beta(1, 1) prior (one pseudo-success and one pseudo-failure per arm), as in RL² §3.1.

* `RandomArm`: a uniform arm.
* `EpsilonGreedyArm` / `GreedyArm`: the best posterior mean (1 + s) / (2 + s + f); with
  probability ε a uniform arm (greedy: ε = 0). With random ties greedy scores 0.7–3 above RL²'s
  greedy column at n = 100; lowest-index ties (``ties="first"``) come closer to it.
* `UCB1`: argmax μ̂ᵢ + c·√(2 ln t / nᵢ) with μ̂ᵢ the posterior mean, nᵢ = 2 + sᵢ + fᵢ (the prior
  counts as two pseudo-pulls, so no initial round robin) and t = Σᵢ nᵢ (all pulls so far
  including the 2k pseudo-pulls, so ln t > 0 from the first pull). ``c`` = 1 is classic UCB1;
  RL² tuned c per (n, k), and its numbers need c ≈ 0.05–0.2 (see benchmarks/classical_tables.py).
* `ThompsonSampling`: θᵢ ~ Beta(1 + sᵢ, 1 + fᵢ), pull the argmax.
* `OptimisticThompson`: May et al. 2012 as RL² describes it, in the form "per-arm maximum of
  ``samples`` posterior draws" (not max(draw, posterior mean)). It explores more than TS and
  scores below RL²'s OTS column, which is close to greedy (see benchmarks/classical_tables.py).
* `GittinsIndex`: Gittins indices of the Beta posteriors, looked up in a table precomputed once
  per (γ, depth) by calibration (`gittins_table`); see the class for the finite-horizon choice.

**Tabular MDPs** (``tabular-mdp``: |S| = 10, |A| = 5, T = 10 steps per episode, one-hot states,
every episode starting in state 0). The state of a policy holds the transition counts
``[T, N, S, A, S]``, reward sums and counts ``[T, N, S, A]``, the previous state (one-hot; the
policy sees the current observation and the *previous* action and reward, so it remembers where
that action was taken), the step within the episode and the current episode's plan
``[T, N, H, S]`` (an action per step and state). At each episode start (the previous step ended
an episode, or the step count reached the horizon) the policy re-plans by finite-horizon
backward value iteration over H steps, batched over all environments. The last transition of an
episode is counted for its reward only: its next state is never observed (the next observation
is the new episode's start state), so transition counts see H − 1 of each episode's H steps.

* `RandomMDPPolicy`: uniform actions.
* `EpsilonGreedyMDP` / `GreedyMDP`: optimal for the posterior-mean MDP (Dirichlet(1) transitions,
  N(1, 1) prior on each mean reward with known noise variance 1), re-planned once per episode;
  with probability ε per step a uniform action.
* `PSRL` (Strens 2000; Osband et al. 2013): at each episode start one MDP drawn from the
  posterior — P(·|s, a) ~ Dirichlet(1 + counts), μ(s, a) ~ its Normal posterior — and its optimal
  finite-horizon policy followed for the whole episode.

RL² took its MDP baselines from TabulaRL, whose default reward prior is N(0, 1), not the
generator's N(1, 1). With ``prior_mean=0.0`` greedy, ε-greedy and PSRL land on RL² Table 2; with
the matched prior (the default here) greedy values unvisited actions at the average reward,
keeps exploring, and scores far above RL²'s greedy column (benchmarks/classical_tables.py).

**Mazes** (``maze-small`` / ``maze-large``: local observations [wall_n, wall_e, wall_s, wall_w,
on_goal, bumped], one-hot moves N, E, S, W, trials of 2 episodes). `RandomMoves`: uniform moves.
`WallFollower`: the right-hand rule from a random heading, no memory across episodes.
`ShortestPathOracle`: knows ψ and walks a shortest path (an oracle, not a learner).

Ties between equal best scores are broken uniformly at random with a draw from the generator,
in every policy (bandit policies can take the lowest index instead, ``ties="first"``).
`run_baseline` rolls a baseline out through `LocalSampler` and returns each trial's total reward.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..sampling import (
    LocalSampler,
    MemorylessPolicy,
    Policy,
    PolicySnapshot,
    class_path,
    snapshot_tensors,
)
from ..tasks import TaskFamily, get_family
from ..tasks.families import MDP_ACTIONS, MDP_HORIZON, MDP_STATES

__all__ = ["PSRL", "UCB1", "BanditPolicy", "EpsilonGreedyArm", "EpsilonGreedyMDP", "GittinsIndex",
           "GreedyArm", "GreedyMDP", "OptimisticThompson", "RandomArm", "RandomMDPPolicy",
           "RandomMoves", "ShortestPathOracle", "TabularMDPPolicy", "ThompsonSampling",
           "WallFollower", "argmax_random_ties", "default_gittins_discount",
           "finite_horizon_plan", "gittins_index", "gittins_table", "run_baseline", "sample_beta",
           "sample_dirichlet", "sample_gamma"]


# ── random draws from the rollout's generator ─────────────────────────────────────────────────
def argmax_random_ties(scores: torch.Tensor, generator: torch.Generator,
                       tol: float = 0.0) -> torch.Tensor:
    """Index of the largest entry along the last dim; among entries within ``tol`` of the largest,
    a uniform pick (one uniform key per entry from ``generator``, drawn whether or not there is a
    tie, so that the number of draws never depends on the data)."""
    best = scores.max(-1, keepdim=True).values
    keys = torch.rand(scores.shape, generator=generator, dtype=torch.float64)
    return torch.where(scores >= best - tol, keys, -1.0).argmax(-1)


def _uniform_index(shape, k: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, k, tuple(shape), generator=generator)


def _one_hot(index: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(index, k).to(torch.float32)


def sample_gamma(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma(α, 1) draws (float64, same shape as ``alpha``) from ``generator`` (torch's own gamma
    sampler takes no generator): Marsaglia & Tsang (2000) squeeze-rejection for α ≥ 1, redrawing
    only the rejected entries, and Gamma(α) = Gamma(α + 1)·U^(1/α) for α < 1."""
    alpha = torch.as_tensor(alpha, dtype=torch.float64)
    boost = alpha < 1
    a = torch.where(boost, alpha + 1, alpha).reshape(-1)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    pending = torch.arange(a.numel())
    while pending.numel():
        dp, cp = d[pending], c[pending]
        x = torch.randn(pending.shape, generator=generator, dtype=torch.float64)
        u = torch.rand(pending.shape, generator=generator, dtype=torch.float64)
        v = (1.0 + cp * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + dp - dp * v
                        + dp * torch.log(v.clamp_min(1e-300)))
        out[pending[ok]] = (dp * v)[ok]
        pending = pending[~ok]
    out = out.reshape(alpha.shape)
    if bool(boost.any()):
        u = torch.rand(alpha.shape, generator=generator, dtype=torch.float64)
        out = torch.where(boost, out * u ** (1.0 / alpha.clamp_min(1e-300)), out)
    return out


def sample_beta(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Beta(a, b) draws (float64) as X / (X + Y), X ~ Gamma(a), Y ~ Gamma(b)."""
    x = sample_gamma(a, generator)
    y = sample_gamma(b, generator)
    return x / (x + y)


def sample_dirichlet(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dirichlet(α) draws along the last dim (float64), as normalised Gamma(αᵢ) draws."""
    g = sample_gamma(alpha, generator)
    return g / g.sum(-1, keepdim=True)


# ── policies as data ──────────────────────────────────────────────────────────────────────────
class _Snapshotted:
    """A snapshot is the constructor's settings (``settings``) and tensors (``tensors``)."""

    def settings(self) -> dict:
        raise NotImplementedError

    def tensors(self) -> dict:
        return {}

    def snapshot(self) -> PolicySnapshot:
        return PolicySnapshot(class_path(type(self)), dict(self.settings()),
                              snapshot_tensors(self.tensors()))

    @classmethod
    def from_snapshot(cls, snapshot: PolicySnapshot):
        return cls(**snapshot.spec, **snapshot.tensors)


# ── bandits ───────────────────────────────────────────────────────────────────────────────────
class RandomArm(_Snapshotted, MemorylessPolicy):
    """A uniform arm at every pull (RL² Table 1 'Random': n/2 in expectation)."""

    def __init__(self, arms: int):
        self.arms = int(arms)

    def settings(self):
        return {"arms": self.arms}

    def act(self, obs, generator=None):
        return _one_hot(_uniform_index(obs.shape[:-1], self.arms, generator), self.arms)


class BanditPolicy(_Snapshotted, Policy):
    """A k-armed bandit policy whose state is the per-arm successes and failures ``[T, N, k]``
    it has seen in the trial (the Beta(1, 1) prior's pseudo-counts are not stored: the posterior
    of arm i is Beta(1 + sᵢ, 1 + fᵢ)). Subclasses implement ``choose(successes, failures,
    generator) -> arm [T, N]``, usually through ``pick``. ``ties``: ``"random"`` (a uniform pick
    among equal best scores, from the generator) or ``"first"`` (the lowest arm index, as
    ``numpy.argmax`` does)."""

    def __init__(self, arms: int, ties: str = "random"):
        self.arms = int(arms)
        if ties not in ("random", "first"):
            raise ValueError(f"ties must be 'random' or 'first', got {ties!r}")
        self.ties = ties

    def settings(self):
        return {"arms": self.arms, "ties": self.ties}

    def pick(self, scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The arm of the best score ``[..., k]`` with this policy's tie-breaking."""
        if self.ties == "first":
            return scores.argmax(-1)  # torch returns the first of equal maxima
        return argmax_random_ties(scores, generator)

    def initial_state(self, num_envs):
        T, N = num_envs
        return {"successes": torch.zeros(T, N, self.arms),
                "failures": torch.zeros(T, N, self.arms)}

    @staticmethod
    def observe(state: dict, prev_action: torch.Tensor, prev_reward: torch.Tensor) -> dict:
        """The counts after the previous pull: the pulled arm (one-hot ``prev_action``; zeros at
        the start of a trial, which changes nothing) gains r successes and 1 − r failures."""
        pulled = prev_action.to(torch.float32)
        r = prev_reward.to(torch.float32)[..., None]
        return {"successes": state["successes"] + pulled * r,
                "failures": state["failures"] + pulled * (1.0 - r)}

    def choose(self, successes: torch.Tensor, failures: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        state = self.observe(state, prev_action, prev_reward)
        arm = self.choose(state["successes"], state["failures"], generator)
        return _one_hot(arm, self.arms), state


def _posterior_mean(successes, failures):
    return (1.0 + successes.double()) / (2.0 + successes.double() + failures.double())


class EpsilonGreedyArm(BanditPolicy):
    """The best posterior mean (1 + s)/(2 + s + f) (random among ties); with probability
    ``epsilon`` a uniform arm instead."""

    def __init__(self, arms: int, epsilon: float = 0.1, ties: str = "random"):
        super().__init__(arms, ties)
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)

    def settings(self):
        return {**super().settings(), "epsilon": self.epsilon}

    def choose(self, successes, failures, generator):
        arm = self.pick(_posterior_mean(successes, failures), generator)
        if self.epsilon > 0:
            explore = torch.rand(arm.shape, generator=generator) < self.epsilon
            arm = torch.where(explore, _uniform_index(arm.shape, self.arms, generator), arm)
        return arm


class GreedyArm(EpsilonGreedyArm):
    """ε-greedy with ε = 0."""

    def __init__(self, arms: int, ties: str = "random"):
        super().__init__(arms, 0.0, ties)

    def settings(self):
        spec = super().settings()
        del spec["epsilon"]
        return spec


class UCB1(BanditPolicy):
    """argmaxᵢ μ̂ᵢ + c·√(2 ln t / nᵢ) (Auer et al. 2002) from the Beta(1, 1) pseudo-counts:
    μ̂ᵢ = (1 + sᵢ)/(2 + sᵢ + fᵢ), nᵢ = 2 + sᵢ + fᵢ and t = Σᵢ nᵢ (pulls so far plus the 2k
    pseudo-pulls). ``c`` = 1 is classic UCB1."""

    def __init__(self, arms: int, c: float = 1.0, ties: str = "random"):
        super().__init__(arms, ties)
        self.c = float(c)

    def settings(self):
        return {**super().settings(), "c": self.c}

    def choose(self, successes, failures, generator):
        n = 2.0 + successes.double() + failures.double()
        t = n.sum(-1, keepdim=True)
        score = _posterior_mean(successes, failures) + self.c * torch.sqrt(2.0 * torch.log(t) / n)
        return self.pick(score, generator)


class ThompsonSampling(BanditPolicy):
    """θᵢ ~ Beta(1 + sᵢ, 1 + fᵢ) for every arm; pull the argmax."""

    def choose(self, successes, failures, generator):
        return self.pick(sample_beta(1.0 + successes, 1.0 + failures, generator), generator)


class OptimisticThompson(BanditPolicy):
    """Optimistic Thompson sampling (May et al. 2012, as RL² describes it): per arm, the maximum
    of ``samples`` independent posterior draws; pull the argmax. (The other common form,
    max(draw, posterior mean), is not this one.)"""

    def __init__(self, arms: int, samples: int = 5, ties: str = "random"):
        super().__init__(arms, ties)
        if int(samples) < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        self.samples = int(samples)

    def settings(self):
        return {**super().settings(), "samples": self.samples}

    def choose(self, successes, failures, generator):
        shape = (self.samples, *successes.shape)
        draws = sample_beta((1.0 + successes).expand(shape), (1.0 + failures).expand(shape),
                            generator)
        return self.pick(draws.max(0).values, generator)


# ── Gittins indices ───────────────────────────────────────────────────────────────────────────
def _continue_values(p, v_next, gamma, dv_next=None):
    """One pull from states of success probability ``p`` whose success / failure successors have
    values ``v_next[..., 1:]`` / ``v_next[..., :-1]`` (and λ-derivatives ``dv_next``)."""
    q = p * (1.0 + gamma * v_next[..., 1:]) + (1.0 - p) * gamma * v_next[..., :-1]
    if dv_next is None:
        return q, None
    return q, gamma * (p * dv_next[..., 1:] + (1.0 - p) * dv_next[..., :-1])


def gittins_index(alpha: float, beta: float, gamma: float, depth: int,
                  tol: float = 1e-10) -> float:
    """The Gittins index of one Bernoulli arm with posterior Beta(α, β) and discount γ, by
    calibration (Whittle's retirement form): the retirement reward λ (per step, so λ/(1 − γ) in
    all) at which retiring now and "pull once more, then act optimally" are equally good,
    found by bisection on λ in [α/(α + β), 1]. "Act optimally" is backward induction on the
    lattice of posteriors (α + s, β + f), s + f ≤ ``depth``; at the cut-off a state is worth
    max(posterior mean, λ)/(1 − γ) (no further learning). Slow (one lattice per bisection step):
    for tables use `gittins_table`; this is the reference it is tested against."""
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"the discount must lie in (0, 1), got {gamma}")
    if int(depth) < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    depth = int(depth)
    scale = 1.0 / (1.0 - gamma)

    def advantage(lam):  # (1 − γ)·Q_λ(root) − λ: positive while continuing beats retiring
        s = np.arange(depth + 1)
        v = np.maximum((alpha + s) / (alpha + beta + depth), lam) * scale
        for d in range(depth - 1, -1, -1):
            s = np.arange(d + 1)
            q, _ = _continue_values((alpha + s) / (alpha + beta + d), v, gamma)
            v = np.maximum(q, lam * scale)
        return q[0] / scale - lam

    lo, hi = alpha / (alpha + beta), 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if advantage(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def gittins_table(gamma: float, max_pulls: int, depth: int, grid: int = 512,
                  return_width: bool = False):
    """Gittins indices GI(1 + s, 1 + f; γ) of Beta(1, 1)-prior arms for every s + f ≤
    ``max_pulls``, as a float64 tensor ``[max_pulls + 1, max_pulls + 1]`` indexed [s, f] (NaN
    where s + f > max_pulls).

    Calibration as in `gittins_index`, computed for all states at once: one backward induction
    over the lattice of posteriors (1 + s, 1 + f), s + f ≤ max_pulls + ``depth`` (so every
    tabulated state sees at least ``depth`` pulls ahead; cut-off value max(posterior mean,
    λ)/(1 − γ)), run for a grid of ``grid`` retirement rewards λ on [0, 1] (cosine-spaced) side
    by side, with the λ-derivative of every value. For each state, g(λ) = (1 − γ)·Q_λ − λ is
    convex and decreasing in λ (the value functions are maxima of functions linear in λ), so on
    the grid cell where g changes sign the secant root bounds the index from above and the
    tangents at the cell's ends bound it from below; the table holds the middle of that
    bracket. (Bisection
    on λ per state, `gittins_index`, would cost one lattice per state and step.) Against that
    reference, at γ = 0.98, 100 pulls, depth 150, the default grid of 512 is off by 1e-5
    (median) and 1.3e-4 (largest of 60 states). With ``return_width`` also the largest bracket
    width (a bound on the error on top of the truncation; loose: the middle is much closer).
    """
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"the discount must lie in (0, 1), got {gamma}")
    n, D = int(max_pulls), int(depth)
    if n < 0 or D < 1 or grid < 3:
        raise ValueError("need max_pulls ≥ 0, depth ≥ 1 and a grid of at least 3 points")
    scale = 1.0 / (1.0 - gamma)
    # denser near 0 and 1, where the indices of lopsided posteriors bend most
    lam = (0.5 - 0.5 * np.cos(np.pi * np.linspace(0.0, 1.0, int(grid))))[:, None]  # [G, 1]
    retire = lam * scale
    top = n + D
    p = (1.0 + np.arange(top + 1)) / (top + 2.0)
    v = np.maximum(p, lam) * scale
    dv = np.where(lam > p, scale, 0.0)
    table = np.full((n + 1, n + 1), np.nan)
    width = 0.0
    for d in range(top - 1, -1, -1):
        s = np.arange(d + 1)
        q, dq = _continue_values((1.0 + s) / (d + 2.0), v, gamma, dv)
        if d <= n:
            g = q / scale - lam  # [G, d + 1], decreasing in λ
            dg = dq / scale - 1.0
            j = np.clip((g >= 0).sum(0) - 1, 0, len(lam) - 2)
            cols = np.arange(d + 1)
            l0, l1 = lam[j, 0], lam[j + 1, 0]
            g0, g1 = g[j, cols], g[j + 1, cols]
            d0, d1 = dg[j, cols], dg[j + 1, cols]
            upper = l0 + g0 * (l1 - l0) / np.maximum(g0 - g1, 1e-300)
            lower = np.maximum(l0 - g0 / np.minimum(d0, -1e-300),
                               l1 - g1 / np.minimum(d1, -1e-300))
            upper = np.clip(upper, l0, l1)
            lower = np.clip(lower, l0, upper)
            table[s, d - s] = 0.5 * (lower + upper)
            width = max(width, float((upper - lower).max()))
        go_on = q > retire
        v = np.where(go_on, q, retire)
        dv = np.where(go_on, dq, scale)
    table = torch.from_numpy(table)
    return (table, width) if return_width else table


GITTINS_HORIZON_FACTOR = 0.5
"""c in `GittinsIndex`'s default discount γ = 1 − 1/(c·n): an effective horizon 1/(1 − γ) of half
the trial. On RL²'s grid (1000 tasks, fixed seeds) c ∈ {0.25, 0.5, 1, 2} scored within each
other's 95 % CI (n = 10: 6.56–6.61; n = 100, k = 5: 78.3–78.6; n = 500, k = 50: 461.6–463.8),
with c = 0.5 at or near the top everywhere."""


def default_gittins_discount(horizon: int) -> float:
    """The discount `GittinsIndex` uses for trials of ``horizon`` pulls when none is given:
    γ = 1 − 1/(c·n), c = ``GITTINS_HORIZON_FACTOR`` (γ = 0.8, 0.98, 0.996 for n = 10, 100,
    500)."""
    return 1.0 - 1.0 / (GITTINS_HORIZON_FACTOR * max(int(horizon), 1))


@functools.lru_cache(maxsize=8)
def _shared_table(gamma: float, max_pulls: int, depth: int, grid: int) -> torch.Tensor:
    return gittins_table(gamma, max_pulls, depth, grid)


class GittinsIndex(BanditPolicy):
    """Pull the arm with the largest Gittins index of its posterior Beta(1 + s, 1 + f), looked up
    in a table (`gittins_table`) precomputed once per (γ, depth) for trials of up to
    ``horizon`` pulls.

    Finite horizon: the Gittins index is Bayes-optimal for the discounted infinite-horizon
    problem, while RL²'s trials are n undiscounted pulls. This policy uses one fixed discount
    per trial length n, γ = 1 − 1/(c·n) with c = 0.5 (`default_gittins_discount`,
    ``GITTINS_HORIZON_FACTOR``: a discount tuned per horizon on RL²'s grid), unless ``gamma`` is
    given; it does not re-discount by the remaining horizon (that would take a table per
    remaining horizon). ``horizon``: the trial length n, which the table covers (an arm pulled
    more often is an error). ``depth``: pulls looked ahead beyond the last tabulated state
    (default max(50, ⌈3/(1 − γ)⌉): `gittins_index` of Beta(1, 1) and Beta(20, 30) moves by
    < 1e-4 beyond that at γ = 0.99 and 0.998). ``grid``: the λ grid of `gittins_table`.
    ``table``: a precomputed table (from a snapshot); tables are otherwise computed once per
    (γ, horizon, depth, grid) in a process and shared. Ties are broken at random.
    """

    def __init__(self, arms: int, horizon: int, gamma: float | None = None,
                 depth: int | None = None, grid: int = 512, table: torch.Tensor | None = None,
                 ties: str = "random"):
        super().__init__(arms, ties)
        self.horizon = int(horizon)
        self.gamma = float(gamma) if gamma is not None else default_gittins_discount(horizon)
        self.depth = int(depth) if depth is not None else \
            max(50, math.ceil(3.0 / (1.0 - self.gamma)))
        self.grid = int(grid)
        if table is None:
            table = _shared_table(self.gamma, self.horizon, self.depth, self.grid)
        self.table = torch.as_tensor(table, dtype=torch.float64)
        if tuple(self.table.shape) != (self.horizon + 1, self.horizon + 1):
            raise ValueError(f"a Gittins table for {self.horizon} pulls has shape "
                             f"{(self.horizon + 1,) * 2}, got {tuple(self.table.shape)}")
        self._flat = torch.nan_to_num(self.table, nan=-1.0).reshape(-1)

    def settings(self):
        return {**super().settings(), "horizon": self.horizon, "gamma": self.gamma,
                "depth": self.depth, "grid": self.grid}

    def tensors(self):
        return {"table": self.table}

    def indices(self, successes: torch.Tensor, failures: torch.Tensor) -> torch.Tensor:
        """The Gittins index of every arm (float64, shape of the counts)."""
        s, f = successes.long(), failures.long()
        if bool(((s + f) > self.horizon).any()):
            raise ValueError(f"an arm was pulled more than the {self.horizon} pulls this "
                             f"Gittins table covers")
        return self._flat[s * (self.horizon + 1) + f]

    def choose(self, successes, failures, generator):
        return self.pick(self.indices(successes, failures), generator)


# ── tabular MDPs ──────────────────────────────────────────────────────────────────────────────
def finite_horizon_plan(transitions: torch.Tensor, rewards: torch.Tensor, horizon: int,
                        generator: torch.Generator, tol: float = 1e-9) -> torch.Tensor:
    """Optimal finite-horizon actions ``[..., H, S]`` (long) of the MDPs ``transitions
    [..., S, A, S]`` and ``rewards [..., S, A]`` by backward value iteration:
    Q_h = R + P V_{h+1}, V_H = 0, a_h(s) = argmax_a Q_h(s, a) (ties within ``tol`` broken at
    random)."""
    P = transitions.to(torch.float64)
    R = rewards.to(torch.float64)
    value = torch.zeros(R.shape[:-1], dtype=torch.float64)
    plan = []
    for _ in range(int(horizon)):
        q = R + torch.einsum("...sax,...x->...sa", P, value)
        plan.append(argmax_random_ties(q, generator, tol))
        value = q.max(-1).values
    return torch.stack(plan[::-1], dim=-2)


class RandomMDPPolicy(_Snapshotted, MemorylessPolicy):
    """Uniform actions (RL² Table 2 'Random': about 10 per episode)."""

    def __init__(self, actions: int = MDP_ACTIONS):
        self.actions = int(actions)

    def settings(self):
        return {"actions": self.actions}

    def act(self, obs, generator=None):
        return _one_hot(_uniform_index(obs.shape[:-1], self.actions, generator), self.actions)


class TabularMDPPolicy(_Snapshotted, Policy):
    """A model-based tabular learner that re-plans once per episode (see the module docstring
    for its state). Priors: Dirichlet(``dirichlet_prior``) on every P(·|s, a); N(``prior_mean``,
    1/``prior_precision``) on every mean reward, observed with noise precision
    ``noise_precision`` — the generator of ``tabular-mdp`` by default. Subclasses implement
    ``model(counts, reward_sum, reward_count, generator) -> (P, R)`` (the MDP to plan for) and
    may override ``explore``."""

    def __init__(self, states: int = MDP_STATES, actions: int = MDP_ACTIONS,
                 horizon: int = MDP_HORIZON, dirichlet_prior: float = 1.0,
                 prior_mean: float = 1.0, prior_precision: float = 1.0,
                 noise_precision: float = 1.0):
        self.states, self.actions, self.horizon = int(states), int(actions), int(horizon)
        self.dirichlet_prior = float(dirichlet_prior)
        self.prior_mean = float(prior_mean)
        self.prior_precision = float(prior_precision)
        self.noise_precision = float(noise_precision)

    def settings(self):
        return {"states": self.states, "actions": self.actions, "horizon": self.horizon,
                "dirichlet_prior": self.dirichlet_prior, "prior_mean": self.prior_mean,
                "prior_precision": self.prior_precision, "noise_precision": self.noise_precision}

    def initial_state(self, num_envs):
        T, N = num_envs
        S, A, H = self.states, self.actions, self.horizon
        return {"counts": torch.zeros(T, N, S, A, S),
                "reward_sum": torch.zeros(T, N, S, A, dtype=torch.float64),
                "reward_count": torch.zeros(T, N, S, A),
                "last_state": torch.zeros(T, N, S),
                "step": torch.full((T, N), H, dtype=torch.long),  # H: no episode running
                "plan": torch.zeros(T, N, H, S, dtype=torch.long)}

    # posteriors
    def posterior_transitions(self, counts: torch.Tensor) -> torch.Tensor:
        """Dirichlet parameters of every P(·|s, a), ``[..., S, A, S]`` (float64)."""
        return self.dirichlet_prior + counts.double()

    def posterior_rewards(self, reward_sum, reward_count):
        """Mean and precision of the Normal posterior of every μ(s, a) (float64)."""
        precision = self.prior_precision + self.noise_precision * reward_count.double()
        mean = (self.prior_precision * self.prior_mean
                + self.noise_precision * reward_sum.double()) / precision
        return mean, precision

    def model(self, counts, reward_sum, reward_count, generator):
        raise NotImplementedError

    def explore(self, action: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return action

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        H = self.horizon
        here = obs.to(torch.float32)
        taken = state["last_state"][..., :, None] * prev_action.to(torch.float32)[..., None, :]
        start = (prev_done > 0) | (state["step"] + 1 >= H)
        # the previous step's next state is this observation, unless that step ended its episode
        kept = (~start).to(torch.float32)[..., None, None, None]
        moved = taken[..., None] * here[..., None, None, :] * kept
        counts = state["counts"] + moved
        reward_sum = state["reward_sum"] + taken.double() * prev_reward.double()[..., None, None]
        reward_count = state["reward_count"] + taken
        step = torch.where(start, 0, state["step"] + 1)
        plan = state["plan"]
        if bool(start.any()):
            P, R = self.model(counts, reward_sum, reward_count, generator)
            fresh = finite_horizon_plan(P, R, H, generator)
            plan = torch.where(start[..., None, None], fresh, plan)
        where = here.argmax(-1)
        S = self.states
        row = plan.gather(2, step[..., None, None].expand(*step.shape, 1, S)).squeeze(2)
        action = self.explore(row.gather(-1, where[..., None]).squeeze(-1), generator)
        return _one_hot(action, self.actions), {
            "counts": counts, "reward_sum": reward_sum, "reward_count": reward_count,
            "last_state": here, "step": step, "plan": plan}


class EpsilonGreedyMDP(TabularMDPPolicy):
    """Optimal for the posterior-mean MDP (re-planned at each episode start); with probability
    ``epsilon`` per step a uniform action."""

    def __init__(self, epsilon: float = 0.1, **settings):
        super().__init__(**settings)
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)

    def settings(self):
        return {**super().settings(), "epsilon": self.epsilon}

    def model(self, counts, reward_sum, reward_count, generator):
        alpha = self.posterior_transitions(counts)
        mean, _ = self.posterior_rewards(reward_sum, reward_count)
        return alpha / alpha.sum(-1, keepdim=True), mean

    def explore(self, action, generator):
        if self.epsilon <= 0:
            return action
        u = torch.rand(action.shape, generator=generator)
        return torch.where(u < self.epsilon,
                           _uniform_index(action.shape, self.actions, generator), action)


class GreedyMDP(EpsilonGreedyMDP):
    """ε-greedy with ε = 0: always optimal for the posterior-mean MDP."""

    def __init__(self, **settings):
        super().__init__(0.0, **settings)

    def settings(self):
        spec = super().settings()
        del spec["epsilon"]
        return spec


class PSRL(TabularMDPPolicy):
    """Posterior sampling (Strens 2000; Osband et al. 2013): at each episode start one MDP drawn
    from the posterior, P(·|s, a) ~ Dirichlet(1 + counts) and μ(s, a) ~ N(posterior mean,
    1/posterior precision), whose optimal finite-horizon policy is followed all episode."""

    def model(self, counts, reward_sum, reward_count, generator):
        P = sample_dirichlet(self.posterior_transitions(counts), generator)
        mean, precision = self.posterior_rewards(reward_sum, reward_count)
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float64)
        return P, mean + noise / torch.sqrt(precision)


# ── evaluation ────────────────────────────────────────────────────────────────────────────────
def run_baseline(policy: Policy, family: TaskFamily | str, tasks, trial_episodes: int,
                 rng: np.random.Generator, episodes: int = 1) -> np.ndarray:
    """Total reward of each trial, ``[T·episodes]`` (task-major): ``episodes`` trials per task of
    ``tasks [T, k]`` (ψ), each ``trial_episodes`` consecutive episodes, through `LocalSampler`."""
    batch = LocalSampler(get_family(family)).sample(policy, tasks, rng, episodes,
                                                    trial_episodes=trial_episodes)
    return batch.trial_episode_returns().sum(-1).reshape(-1).double().numpy()


# ── mazes ─────────────────────────────────────────────────────────────────────────────────────
# (``maze-small`` / ``maze-large``: observations [wall_n, wall_e, wall_s, wall_w, on_goal,
# bumped], one-hot moves N, E, S, W; see `adaptrl.tasks.families._maze`)
class RandomMoves(RandomMDPPolicy):
    """A uniform move (N, E, S, W) at every step (SNAIL Table 5 'Random')."""

    def __init__(self, actions: int = 4):
        super().__init__(actions)


class WallFollower(_Snapshotted, Policy):
    """The right-hand rule (``hand="left"``: the left-hand one): keep a wall on that hand —
    turn towards it if open, else go straight, else turn away, else go back — from a heading
    drawn uniformly at each episode start. In a perfect maze it reaches every cell within
    2·(cells − 1) moves and never hits a wall; it remembers nothing across episodes, so
    episode 2 is no better than episode 1. Its state is the heading ``[T, N]`` (0 N … 3 W)."""

    def __init__(self, hand: str = "right"):
        if hand not in ("right", "left"):
            raise ValueError(f"hand must be 'right' or 'left', got {hand!r}")
        self.hand = hand
        self._turns = torch.tensor([1, 0, 3, 2] if hand == "right" else [3, 0, 1, 2])

    def settings(self):
        return {"hand": self.hand}

    def initial_state(self, num_envs):
        return {"heading": torch.zeros(tuple(num_envs), dtype=torch.long)}

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        fresh = _uniform_index(obs.shape[:-1], 4, generator)  # drawn at every step
        start = (prev_done > 0) | (prev_action.sum(-1) == 0)  # a new episode or trial
        heading = torch.where(start, fresh, state["heading"])
        order = (heading[..., None] + self._turns) % 4  # [T, N, 4] moves by preference
        passes = obs[..., :4].gather(-1, order) < 0.5
        move = order.gather(-1, passes.to(torch.uint8).argmax(-1, keepdim=True)).squeeze(-1)
        return _one_hot(move, 4), {"heading": move}


class ShortestPathOracle(_Snapshotted, Policy):
    """Knows ψ: built with the tasks ``[T, k]`` it will run on, it moves along a shortest path
    (breadth-first search, `adaptrl.envs.maze.maze_plan`) from its cell to the goal, so every
    episode takes exactly the goal's distance in moves. Its state is its cell ``[T, N]`` (row ·
    n + col): the start cell at each episode start, then moved by its previous action unless
    the observation's bumped bit says that move hit a wall."""

    def __init__(self, tasks):
        from ..envs.maze import maze_distances, maze_plan
        from ..tasks.families import check_maze_tasks

        self.tasks = torch.as_tensor(np.asarray(tasks, dtype=np.float64))
        passable, start, goal = check_maze_tasks(self.tasks.numpy())
        n = passable.shape[-2]
        self.side = n
        self._plan = torch.from_numpy(maze_plan(passable, maze_distances(passable, goal))
                                      ).reshape(len(passable), n * n)
        self._start = torch.from_numpy(start[:, 0] * n + start[:, 1])
        self._offsets = torch.tensor([-n, 1, n, -1])

    def settings(self):
        return {}

    def tensors(self):
        return {"tasks": self.tasks}

    def initial_state(self, num_envs):
        T, N = num_envs
        if T != len(self._start):
            raise ValueError(f"this oracle knows {len(self._start)} task(s); the batch runs {T}")
        return {"cell": self._start[:, None].expand(T, N).clone()}

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        moved = (prev_action.sum(-1) > 0) & (obs[..., 5] < 0.5)
        cell = state["cell"] + torch.where(moved, self._offsets[prev_action.argmax(-1)], 0)
        cell = torch.where(prev_done > 0, self._start[:, None], cell)
        move = self._plan.gather(1, cell)
        return _one_hot(move, 4), {"cell": cell}
