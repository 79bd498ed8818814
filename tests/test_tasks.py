"""Tests for `adaptrl.tasks`: rewards r_ψ(s, a, s'), ∂r/∂ψ, splits of Ψ, termination rules,
errors, names and the shipped Cheetah-Highdim normalizer.

Expected rewards are computed by hand (plain Python / numpy) from the formulas documented in
`adaptrl/tasks/families.py` and the Gymnasium v5 observation layout listed at its top.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import zlib

import numpy as np
import pytest
import torch

from adaptrl.errors import AdaptrlError, UnknownNameError
from adaptrl.names import METAWORLD_FAMILIES
from adaptrl.tasks import (
    REGISTRY,
    BoxSplit,
    TaskFamily,
    family_names,
    get_family,
    gym_name,
    highdim_normalizer,
)
from adaptrl.tasks.base import MAX_GRID_POINTS
from adaptrl.tasks.families import (
    ACT_DIM,
    DYNAMICS_SIZES,
    HIGHDIM_NORMALIZER_FILE,
    OBS_DIM,
    register,
)

# Meta-World's families (ψ = a task index, rewards from its simulator) are tested in
# tests/test_metaworld.py
ALL = sorted(n for n, f in REGISTRY.items() if f.body != "metaworld")
MAZES = {"maze-small", "maze-large"}  # ψ is the maze (walls, start, goal cells)
# ψ changes the physics, not the reward
PSI_FREE = {"hopper-params", "walker-params", "cheetah-crippled",
            "cheetah-crippled-midway", "ant-crippled"} | MAZES
PSI_DEPENDENT = sorted(set(ALL) - PSI_FREE)
DISCRETE = {"cheetah-dir", "ant-dir"}
NEVER_TERMINATE = {
    "hopper-2d", "walker-2d", "ant-2d", "ant-3d",  # AdMRL: fixed-length episodes
    "cheetah-vel", "cheetah-vel-pearl", "cheetah-vel-hard", "cheetah-dir", "cheetah-highdim",
    "cheetah-crippled", "cheetah-crippled-midway",
    "tabular-mdp",  # RL²: T = 10 steps
}
BANDITS = {"bandit-k5", "bandit-k10", "bandit-k50"}
# r(s, a) of a tabular MDP reads the state the action is taken in; every other reward is a
# function of (a, s') (what model-based methods need)
READS_PREVIOUS_STATE = {"tabular-mdp"}
NO_BOUNDARY = {"tabular-mdp"} | MAZES  # probability tables / mazes, not points of a box


def t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def sq(a) -> float:
    return float(sum(float(v) ** 2 for v in a))


def _normalizer_lists():
    mean, std = highdim_normalizer()
    return mean.tolist(), std.tolist()


# ─── 1. rewards against hand computation ─────────────────────────────────────────────────────
def _hand_reward(name, s, a, s2, p) -> float:
    """r_ψ(s, a, s') by hand, for one transition (all arguments 1-D sequences)."""
    if name == "point-nav":
        return -math.sqrt((s2[0] - p[0]) ** 2 + (s2[1] - p[1]) ** 2)
    if name == "point-nav-sq":
        return -((s2[0] - p[0]) ** 2 + (s2[1] - p[1]) ** 2)
    if name in ("cheetah-vel", "cheetah-vel-pearl", "cheetah-vel-hard"):
        return -abs(s2[8] - p[0]) - 0.05 * sq(a)
    if name == "cheetah-dir":
        return p[0] * s2[8] - 0.05 * sq(a)
    if name == "ant-dir":
        return p[0] * s2[13] - 0.005 * sq(a) + 0.05
    if name == "ant-crippled":  # MAML's Ant reward; ψ changes the physics
        return s2[13] - 0.005 * sq(a) + 0.05
    if name == "ant-vel":
        return -abs(s2[13] - p[0]) - 0.005 * sq(a) + 0.05
    if name in ("ant-dir-2d", "ant-dir-2d-hard"):
        return 1.0 * (s2[13] * math.cos(p[0]) + s2[14] * math.sin(p[0])) - 0.5 * sq(a) + 1.0
    if name == "humanoid-dir":
        return 1.25 * (s2[22] * math.cos(p[0]) + s2[23] * math.sin(p[0])) - 0.1 * sq(a) + 5.0
    if name == "ant-goal":
        return -(abs(s2[0] - p[0]) + abs(s2[1] - p[1])) - 0.1 * sq(a)
    if name == "hopper-params":
        return s2[5] + 1.0 - 0.001 * sq(a)
    if name == "walker-params":
        return s2[8] + 1.0 - 0.001 * sq(a)
    if name in ("cheetah-crippled", "cheetah-crippled-midway"):  # GrBAL: vx - 0.1·0.5·Σa²
        return s2[8] - 0.05 * sq(a)
    if name == "hopper-2d":
        return -(abs(s2[5] - p[0]) + 5.0 * abs(s2[0] - p[1])) + 1.0 - 0.001 * sq(a)
    if name == "walker-2d":
        return -(abs(s2[8] - p[0]) + 5.0 * abs(s2[0] - p[1])) + 1.0 - 0.001 * sq(a)
    if name == "ant-2d":
        return -(abs(s2[13] - p[0]) + abs(s2[14] - p[1])) + 1.0 - 0.5 * sq(a)
    if name == "ant-3d":
        return (-(abs(s2[13] - p[0]) + abs(s2[14] - p[1]) + 30.0 * abs(s2[0] - p[2]))
                + 1.0 - 0.5 * sq(a))
    if name == "cheetah-highdim":
        mean, std = _normalizer_lists()
        return sum(p[i] * (s2[i] - mean[i]) / std[i] for i in range(18)) - 0.05 * sq(a)
    if name in BANDITS:  # the mean reward of the (one-hot) arm
        return sum(a[i] * p[i] for i in range(len(p)))
    if name == "tabular-mdp":  # μ(s, a) of one-hot s and a; μ follows P (10·5·10 numbers)
        return sum(s[i] * a[j] * p[500 + 5 * i + j] for i in range(10) for j in range(5))
    if name in MAZES:  # on_goal = s'[4], bumped = s'[5]: +1 at the goal, -0.01/step, -0.001/bump
        return s2[4] - 0.01 - 0.001 * s2[5]
    raise AssertionError(f"no hand formula for family '{name}': add one to this test file")


def test_every_registered_family_has_a_hand_formula():
    rng = np.random.default_rng(0)
    for name in ALL:
        fam = REGISTRY[name]
        _hand_reward(name, rng.normal(size=fam.obs_dim), rng.normal(size=fam.act_dim),
                     rng.normal(size=fam.obs_dim), rng.uniform(fam.low, fam.high))


def _random_transition(fam, rng, n=None):
    shape = () if n is None else (n,)
    s = rng.normal(size=shape + (fam.obs_dim,)) * 2
    a = rng.normal(size=shape + (fam.act_dim,))
    s2 = rng.normal(size=shape + (fam.obs_dim,)) * 2
    p = rng.uniform(fam.low, fam.high, size=shape + (fam.task_dim,))
    return s, a, s2, p


@pytest.mark.parametrize("name", ALL)
def test_reward_matches_hand_computation_on_random_transitions(name):
    fam = REGISTRY[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    s, a, s2, p = _random_transition(fam, rng, n=16)
    got = fam.reward(t(s), t(a), t(s2), t(p))
    assert got.shape == (16,)
    assert got.dtype == torch.float64
    expected = [_hand_reward(name, s[i], a[i], s2[i], p[i]) for i in range(16)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(set(ALL) - READS_PREVIOUS_STATE))
def test_reward_does_not_read_the_previous_observation(name):
    fam = REGISTRY[name]
    rng = np.random.default_rng(1)
    s, a, s2, p = _random_transition(fam, rng, n=4)
    r1 = fam.reward(t(s), t(a), t(s2), t(p))
    r2 = fam.reward(t(s * 10 + 3), t(a), t(s2), t(p))
    torch.testing.assert_close(r1, r2, rtol=0, atol=0)


def _concrete(fam, next_obs_entries, act, params, fill=0.0):
    s = np.full(fam.obs_dim, 7.0)  # the previous state is ignored by every reward
    s2 = np.full(fam.obs_dim, fill)
    for index, value in next_obs_entries.items():
        s2[index] = value
    return t(s), t(act), t(s2), t(params)


# (family, {index in next_obs: value}, action, ψ, expected reward worked out by hand)
HAND_PICKED = [
    # -|1.3 - 2.0| - 0.05 * (0.01 + 0.04 + 0.09) = -0.7 - 0.007
    ("cheetah-vel", {8: 1.3}, [0.1, 0.2, 0, 0, 0, -0.3], [2.0], -0.707),
    # the velocity is obs[8], not obs[9]: obs[9] = 100 is ignored
    ("cheetah-vel", {8: 2.5, 9: 100.0}, [0] * 6, [1.0], -1.5),
    ("cheetah-vel-pearl", {8: 0.0}, [1] * 6, [3.0], -3.0 - 0.3),
    ("cheetah-vel-hard", {8: 2.75}, [0] * 6, [2.75], 0.0),
    # ψ·vx - 0.05||a||²: -1 * 1.5 - 0.05 * 6 * 0.25
    ("cheetah-dir", {8: 1.5}, [0.5] * 6, [-1.0], -1.575),
    ("cheetah-dir", {8: 1.5}, [0] * 6, [1.0], 1.5),
    # 1 * 2 - 0.005 * 8 + 0.05
    ("ant-dir", {13: 2.0}, [1] * 8, [1.0], 2.01),
    ("ant-dir", {13: 2.0, 14: 9.0}, [0] * 8, [-1.0], -1.95),
    # -|1 - 2.5| - 0.005 * 4 + 0.05
    ("ant-vel", {13: 1.0}, [1, 1, 1, 1, 0, 0, 0, 0], [2.5], -1.47),
    # vx = obs[13] = 1.0: 1.0 - 0.005 * 8 + 0.05, whatever leg is crippled
    ("ant-crippled", {13: 1.0}, [1] * 8, [2.0, 0.0], 1.01),
    # θ = π: along = -vx = -0.8; 1.0 * -0.8 - 0.5 * 8 * 0.04 + 1
    ("ant-dir-2d", {13: 0.8, 14: 3.0}, [0.2] * 8, [math.pi], 0.04),
    # θ = π/2: along = vy = 1; 1.0 * 1 - 0 + 1
    ("ant-dir-2d", {13: 5.0, 14: 1.0}, [0] * 8, [math.pi / 2], 2.0),
    # θ = π/2: along = vy = 1; 1.25 * 1 + 5
    ("humanoid-dir", {22: 2.0, 23: 1.0}, [0] * 17, [math.pi / 2], 6.25),
    # θ = 0: along = vx = 2; 1.25 * 2 - 0.1 * 17 + 5
    ("humanoid-dir", {22: 2.0, 23: 1.0}, [1] * 17, [0.0], 5.8),
    # -(|1 - (-1)| + |2 - 0.5|) - 0.1 * 8 * 0.25; z = obs[2] = 0.55 is not a coordinate
    ("ant-goal", {0: 1.0, 1: 2.0, 2: 0.55}, [0.5] * 8, [-1.0, 0.5], -3.7),
    ("point-nav", {0: 0.1, 1: -0.2}, [0.05, 0.05], [0.4, 0.2], -0.5),
    ("point-nav", {0: 0.0, 1: 0.0}, [0.0, 0.0], [0.3, -0.4], -0.5),
    ("point-nav-sq", {0: 0.1, 1: -0.2}, [0.05, 0.05], [0.4, 0.2], -0.25),
    # vx = obs[5] = 0.7: 0.7 + 1 - 0.001 * 3
    ("hopper-params", {0: 1.25, 5: 0.7}, [1, 1, 1], [0.5] * 37, 1.697),
    # vx = obs[8] = -0.5: -0.5 + 1 - 0.001 * 6 * 4
    ("walker-params", {0: 1.25, 8: -0.5}, [2] * 6, [-1.0] * 61, 0.476),
    # vx = obs[8] = 1.5: 1.5 - 0.05 * 6 * 0.25, whatever joint is crippled
    ("cheetah-crippled", {0: 9.0, 8: 1.5}, [0.5] * 6, [0.0, 0.0], 1.425),
    ("cheetah-crippled-midway", {0: 9.0, 8: 1.5}, [0.5] * 6, [0.0, 0.0], 1.425),
    # vx = obs[5], z = obs[0]: -(|0.5 - 1| + 5|1.5 - 1.3|) + 1 - 0.001 * 3
    ("hopper-2d", {0: 1.5, 5: 0.5}, [1, 1, 1], [1.0, 1.3], -0.503),
    # vx = obs[8], z = obs[0]: -(|-1 - 1| + 5|1.2 - 1.4|) + 1 - 0
    ("walker-2d", {0: 1.2, 8: -1.0}, [0] * 6, [1.0, 1.4], -2.0),
    # -(|1 - 2| + |-1 - 0|) + 1 - 0.5 * 8 * 0.01
    ("ant-2d", {13: 1.0, 14: -1.0}, [0.1] * 8, [2.0, 0.0], -1.04),
    # -(|1 - 2| + |-1 - 0| + 30|0.5 - 0.55|) + 1 - 0.5 * 8 * 0.01
    ("ant-3d", {0: 0.5, 13: 1.0, 14: -1.0}, [0.1] * 8, [2.0, 0.0, 0.55], -2.54),
    # reaching the goal: 1 - 0.01; a step into a wall: -0.01 - 0.001; walls (s'[:4]) are ignored
    ("maze-small", {4: 1.0}, [1, 0, 0, 0], [0.0] * 44, 0.99),
    ("maze-large", {0: 1.0, 1: 1.0, 5: 1.0}, [0, 0, 0, 1], [1.0] * 148, -0.011),
]


@pytest.mark.parametrize("name, entries, act, params, expected", HAND_PICKED,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(HAND_PICKED)])
def test_reward_matches_hand_picked_values(name, entries, act, params, expected):
    fam = REGISTRY[name]
    got = fam.reward(*_concrete(fam, entries, act, params))
    assert got.shape == ()
    assert float(got) == pytest.approx(expected, abs=1e-12)


def test_cheetah_vel_reward_matches_hand_computation():
    fam = get_family("cheetah-vel")
    s2 = np.zeros((3, 17))
    s2[:, 8] = [0.0, 1.0, 3.0]
    a = np.zeros((3, 6))
    a[1, 0] = 2.0
    psi = np.array([[1.0], [1.0], [0.5]])
    got = fam.reward(t(np.zeros((3, 17))), t(a), t(s2), t(psi))
    np.testing.assert_allclose(got.numpy(), [-1.0, -0.2, -2.5], atol=1e-12)


def test_cheetah_highdim_reward_uses_shipped_normalizer():
    fam = get_family("cheetah-highdim")
    mean, std = _normalizer_lists()
    s2 = np.array(mean, dtype=np.float64)
    s2[3] += 2.0 * std[3]  # normalized state = 2 e₃
    s2[10] -= 1.0 * std[10]  # normalized state = 2 e₃ - e₁₀
    psi = np.zeros(18)
    psi[3], psi[10], psi[0] = 0.5, -1.0, 1.0  # ψ₀ multiplies a normalized 0
    act = [0.2] * 6  # 0.05 * 6 * 0.04 = 0.012
    got = fam.reward(t(np.zeros(18)), t(act), t(s2), t(psi))
    assert float(got) == pytest.approx(0.5 * 2.0 + (-1.0) * (-1.0) - 0.012, abs=1e-9)
    # at the mean state the reward is only the control cost, whatever ψ
    got = fam.reward(t(np.zeros(18)), t(act), t(mean), t(np.ones(18)))
    assert float(got) == pytest.approx(-0.012, abs=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_reward_broadcasts_task_batch_over_episode_batch(name):
    fam = REGISTRY[name]
    rng = np.random.default_rng(2)
    T, N = 3, 4
    s = rng.normal(size=(T, N, fam.obs_dim))
    a = rng.normal(size=(T, N, fam.act_dim))
    s2 = rng.normal(size=(T, N, fam.obs_dim))
    p = rng.uniform(fam.low, fam.high, size=(T, 1, fam.task_dim))
    got = fam.reward(t(s), t(a), t(s2), t(p))
    assert got.shape == (T, N)
    for i, j in itertools.product(range(T), range(N)):
        assert float(got[i, j]) == pytest.approx(
            _hand_reward(name, s[i, j], a[i, j], s2[i, j], p[i, 0]), abs=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_reward_of_shared_transitions_under_many_tasks_has_task_axis(name):
    """``params: [T, 1, k]`` with transitions ``[N, d]`` shared by all tasks → ``[T, N]``
    (the module docstring: rewards broadcast over leading dimensions, ψ included)."""
    fam = REGISTRY[name]
    rng = np.random.default_rng(3)
    T, N = 3, 4
    s, a, s2, _ = _random_transition(fam, rng, n=N)
    p = rng.uniform(fam.low, fam.high, size=(T, 1, fam.task_dim))
    got = fam.reward(t(s), t(a), t(s2), t(p))
    assert got.shape == (T, N)


@pytest.mark.parametrize("name", ALL)
def test_reward_keeps_float32_inputs_in_float32(name):
    fam = REGISTRY[name]
    rng = np.random.default_rng(4)
    s, a, s2, p = (torch.as_tensor(x, dtype=torch.float32) for x in _random_transition(fam, rng, 5))
    got = fam.reward(s, a, s2, p)
    assert got.dtype == torch.float32
    assert got.shape == (5,)
    assert torch.isfinite(got).all()


# ─── 2. ∂r/∂ψ ────────────────────────────────────────────────────────────────────────────────
def test_psi_free_families_are_exactly_the_dynamics_families():
    assert PSI_FREE == {n for n, f in REGISTRY.items() if f.dynamics is not None}


@pytest.mark.parametrize("name", PSI_DEPENDENT)
def test_reward_gradient_in_psi_passes_gradcheck(name):
    fam = REGISTRY[name]
    rng = np.random.default_rng(5)
    n = 4
    s = t(rng.normal(size=(n, fam.obs_dim)))
    a = t(rng.normal(size=(n, fam.act_dim)))
    # next-state entries of magnitude 4–6, Ψ inside [-3, 2π]: every |x - ψ| is at least 1 away
    # from its kink, and point-nav's distance from 0
    sign = rng.choice([-1.0, 1.0], size=(n, fam.obs_dim))
    s2 = t(sign * rng.uniform(4.0, 6.0, size=(n, fam.obs_dim)))
    p = t(rng.uniform(fam.low, fam.high, size=(n, fam.task_dim))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda psi: fam.reward(s, a, s2, psi), (p,))
    grad, = torch.autograd.grad(fam.reward(s, a, s2, p).sum(), p)
    assert grad.abs().sum() > 0


def test_cheetah_vel_gradient_is_sign_of_velocity_error():
    fam = get_family("cheetah-vel")
    s2 = torch.zeros(2, 17, dtype=torch.float64)
    s2[:, 8] = torch.tensor([0.5, 2.0])
    p = torch.tensor([[1.0], [1.0]], dtype=torch.float64, requires_grad=True)
    fam.reward(torch.zeros(2, 17), torch.zeros(2, 6), s2, p).sum().backward()
    torch.testing.assert_close(p.grad, torch.tensor([[-1.0], [1.0]], dtype=torch.float64))


@pytest.mark.parametrize("name", ["point-nav", "point-nav-sq"])
def test_point_nav_gradient_is_finite_at_the_goal(name):
    fam = get_family(name)
    goal = torch.tensor([0.2, -0.3], dtype=torch.float64, requires_grad=True)
    r = fam.reward(torch.zeros(2), torch.zeros(2), goal.detach().clone(), goal)
    r.backward()
    assert float(r.detach()) == pytest.approx(0.0, abs=1e-5)
    assert torch.isfinite(goal.grad).all()


@pytest.mark.parametrize("name", sorted(PSI_FREE))
def test_dynamics_family_reward_does_not_depend_on_psi(name):
    fam = REGISTRY[name]
    rng = np.random.default_rng(6)
    s, a, s2, _ = _random_transition(fam, rng, n=8)
    rewards = [fam.reward(t(s), t(a), t(s2), t(rng.uniform(fam.low, fam.high, (8, fam.task_dim))))
               for _ in range(3)]
    for r in rewards[1:]:
        torch.testing.assert_close(r, rewards[0], rtol=0, atol=0)
    p = t(rng.uniform(fam.low, fam.high, (8, fam.task_dim))).requires_grad_(True)
    r = fam.reward(t(s), t(a), t(s2), p)
    if r.requires_grad:  # ψ may enter the graph (e.g. to broadcast), but with zero gradient
        grad, = torch.autograd.grad(r.sum(), p, allow_unused=True)
        assert grad is None or bool((grad == 0).all())


# ─── 3. splits ───────────────────────────────────────────────────────────────────────────────
SPLITS = [(n, s) for n in ALL for s in REGISTRY[n].splits
          if not (n in NO_BOUNDARY and s == "boundary")]


@pytest.mark.parametrize("name", ALL)
def test_sample_has_shape_n_by_k_and_lies_in_the_box(name):
    fam = REGISTRY[name]
    for n in (1, 7):
        x = fam.sample(n, np.random.default_rng(0))
        assert x.shape == (n, fam.task_dim)
        assert x.dtype == np.float64
        assert fam.contains(x).all()
        assert np.all((x >= fam.low) & (x <= fam.high))


@pytest.mark.parametrize("name", ALL)
def test_train_and_test_splits_lie_in_the_box(name):
    fam = REGISTRY[name]
    for split in ("train", "test"):
        x = fam.split(split, 200, np.random.default_rng(1))
        assert x.shape == (200, fam.task_dim)
        assert np.all((x >= fam.low) & (x <= fam.high)), split


@pytest.mark.parametrize("name, split", SPLITS, ids=[f"{n}:{s}" for n, s in SPLITS])
def test_same_seed_gives_same_tasks_and_different_seed_different(name, split):
    fam = REGISTRY[name]
    a = fam.split(split, 30, np.random.default_rng(123))
    b = fam.split(split, 30, np.random.default_rng(123))
    c = fam.split(split, 30, np.random.default_rng(124))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_tabular_mdp_has_no_boundary_and_says_so():
    with pytest.raises(AdaptrlError, match="no boundary split"):
        REGISTRY["tabular-mdp"].boundary(3, np.random.default_rng(0))


@pytest.mark.parametrize("name", sorted(set(ALL) - NO_BOUNDARY))
def test_boundary_is_reproducible_from_the_seed(name):
    fam = REGISTRY[name]
    a = fam.boundary(30, np.random.default_rng(9))
    np.testing.assert_array_equal(a, fam.boundary(30, np.random.default_rng(9)))
    assert not np.array_equal(a, fam.boundary(30, np.random.default_rng(10)))


GRIDDABLE = [n for n in ALL if n not in DISCRETE and REGISTRY[n].task_dim <= 3]


@pytest.mark.parametrize("name", GRIDDABLE)
def test_grid_covers_box_with_corners(name):
    fam = REGISTRY[name]
    k = fam.task_dim
    for per_dim in (2, 3, 5):
        g = fam.grid(per_dim)
        assert g.shape == (per_dim**k, k)
        assert np.all((g >= fam.low) & (g <= fam.high))
        assert len({tuple(row) for row in g}) == per_dim**k
        rows = {tuple(row) for row in g}
        for corner in itertools.product(*zip(fam.low, fam.high)):
            assert tuple(corner) in rows, (per_dim, corner)
    if k == 1:
        np.testing.assert_allclose(fam.grid(3)[:, 0], [fam.low[0], (fam.low[0] + fam.high[0]) / 2,
                                                       fam.high[0]])


def test_grid_values_for_hopper_2d_are_linspace_per_dimension():
    g = get_family("hopper-2d").grid(3)
    np.testing.assert_allclose(np.unique(g[:, 0]), [-2.0, 0.0, 2.0])
    np.testing.assert_allclose(np.unique(g[:, 1]), [1.2, 1.6, 2.0])


@pytest.mark.parametrize("name", [n for n in ALL if n not in DISCRETE])
def test_grid_of_one_point_is_the_box_centre(name):
    fam = REGISTRY[name]
    np.testing.assert_allclose(fam.grid(1), ((fam.low + fam.high) / 2)[None])


@pytest.mark.parametrize("name", sorted(DISCRETE))
def test_discrete_family_grid_is_the_two_directions(name):
    fam = REGISTRY[name]
    for per_dim in (1, 2, 5):
        g = fam.grid(per_dim)
        assert g.shape == (2, 1)
        assert set(g[:, 0]) == {-1.0, 1.0}
    x = fam.sample(100, np.random.default_rng(0))
    assert set(x[:, 0]) == {-1.0, 1.0}
    assert set(fam.boundary(50, np.random.default_rng(0))[:, 0]) <= {-1.0, 1.0}
    # grid returns a copy: changing it does not change the family
    g[0, 0] = 99.0
    assert set(fam.grid(2)[:, 0]) == {-1.0, 1.0}


@pytest.mark.parametrize("name", [n for n in ALL if n not in DISCRETE | NO_BOUNDARY
                                  and n != "ant-goal"])
def test_boundary_points_lie_on_the_surface_of_the_box(name):
    fam = REGISTRY[name]
    x = fam.boundary(200, np.random.default_rng(0))
    assert x.shape == (200, fam.task_dim)
    assert np.all((x >= fam.low) & (x <= fam.high))
    on_face = (x == fam.low) | (x == fam.high)
    assert on_face.any(axis=1).all()


def test_ant_goal_samples_lie_in_disk_of_radius_3_and_boundary_on_the_circle():
    fam = get_family("ant-goal")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        x = fam.split(split, 4000, rng)
        r = np.linalg.norm(x, axis=1)
        assert np.all(r <= 3.0 + 1e-12)
        # uniform in area: a quarter of the goals within radius 1.5
        assert np.mean(r < 1.5) == pytest.approx(0.25, abs=0.03)
    b = fam.boundary(500, rng)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 3.0, rtol=1e-12)
    # all directions occur
    angles = np.arctan2(b[:, 1], b[:, 0])
    assert np.histogram(angles, bins=4, range=(-math.pi, math.pi))[0].min() > 80


def test_cheetah_vel_hard_trains_on_low_and_tests_on_high_velocities():
    fam = get_family("cheetah-vel-hard")
    rng = np.random.default_rng(0)
    train = fam.split("train", 500, rng)
    assert train.min() >= 0.0 and train.max() <= 1.5 and train.max() > 1.4
    for split in ("test", "ood"):
        x = fam.split(split, 500, rng)
        assert x.min() >= 2.5 and x.max() <= 3.0, split
        assert x.min() < 2.55 and x.max() > 2.95, split
    np.testing.assert_array_equal(fam.low, [0.0])
    np.testing.assert_array_equal(fam.high, [3.0])


@pytest.mark.parametrize("name, high", [("cheetah-vel", 2.0), ("cheetah-vel-pearl", 3.0)])
def test_cheetah_vel_target_ranges(name, high):
    fam = get_family(name)
    for split in ("train", "test"):
        x = fam.split(split, 500, np.random.default_rng(0))
        assert x.min() >= 0.0 and x.max() <= high
        assert x.min() < 0.05 * high and x.max() > 0.95 * high


def test_ant_2d_ood_split_is_the_boundary_of_the_larger_square():
    fam = get_family("ant-2d")
    x = fam.split("ood", 400, np.random.default_rng(0))
    assert np.all(np.abs(x) <= 5.0)
    np.testing.assert_array_equal(np.abs(x).max(axis=1), 5.0)
    assert not fam.contains(x).any()  # all outside Ψ = [-3, 3]²
    assert (np.abs(x) == 5.0).sum(axis=0).min() > 100  # both x- and y-faces are used


def test_cheetah_highdim_test_split_is_on_the_boundary_of_the_cube():
    fam = get_family("cheetah-highdim")
    x = fam.split("test", 300, np.random.default_rng(0))
    assert x.shape == (300, 18)
    assert np.all(np.abs(x) <= 1.0)
    np.testing.assert_array_equal(np.abs(x).max(axis=1), 1.0)
    # each point has exactly one coordinate on a face (the others are uniform inside)
    assert np.all((np.abs(x) == 1.0).sum(axis=1) == 1)
    train = fam.split("train", 300, np.random.default_rng(0))
    assert np.all(np.abs(train).max(axis=1) < 1.0)


def test_box_boundary_weights_faces_by_area():
    # hopper-2d: Ψ = [-2,2] × [1.2,2.0]; the vx-faces have area 0.8, the z-faces 4 → P = 1/6
    fam = get_family("hopper-2d")
    x = fam.boundary(6000, np.random.default_rng(0))
    on_vx_face = (x[:, 0] == -2.0) | (x[:, 0] == 2.0)
    assert on_vx_face.mean() == pytest.approx(1 / 6, abs=0.02)
    low_side = (x[:, 0] == -2.0) | (x[:, 1] == 1.2)
    assert low_side.mean() == pytest.approx(0.5, abs=0.03)


def test_one_dimensional_boundary_is_both_end_points():
    fam = get_family("cheetah-vel")
    x = fam.boundary(400, np.random.default_rng(0))
    assert set(x[:, 0]) == {0.0, 2.0}
    assert np.mean(x[:, 0] == 0.0) == pytest.approx(0.5, abs=0.08)


# ─── 4. termination ──────────────────────────────────────────────────────────────────────────
HEALTHY_Z = {"hopper": (0, 1.25), "walker2d": (0, 1.25), "ant": (0, 0.55), "ant_xy": (2, 0.55),
             "humanoid": (0, 1.4)}


def _healthy_obs(fam, **entries):
    obs = np.zeros(fam.obs_dim)
    if fam.body in HEALTHY_Z:
        index, z = HEALTHY_Z[fam.body]
        obs[index] = z
    for key, value in entries.items():
        obs[int(key[1:])] = value
    return t(obs)


def _ended(fam, obs, params=None):
    if params is None:
        params = t(fam.grid(1)[0] if fam.discrete is None else fam.discrete[0])
    out = fam.terminated(obs, params)
    assert out.dtype == torch.bool
    return bool(out)


@pytest.mark.parametrize("z, angle, ended", [
    (1.25, 0.0, False), (0.71, 0.19, False), (0.71, -0.19, False), (5.0, 0.0, False),
    (0.7, 0.0, True), (0.5, 0.0, True), (1.25, 0.2, True), (1.25, -0.2, True), (1.25, 0.5, True),
])
def test_hopper_params_health_rule(z, angle, ended):
    fam = get_family("hopper-params")
    assert _ended(fam, _healthy_obs(fam, i0=z, i1=angle)) is ended


def test_hopper_params_ends_on_large_or_nonfinite_state():
    fam = get_family("hopper-params")
    assert _ended(fam, _healthy_obs(fam, i3=150.0)) is True
    assert _ended(fam, _healthy_obs(fam, i3=99.0)) is False
    assert _ended(fam, _healthy_obs(fam, i7=float("nan"))) is True


@pytest.mark.parametrize("z, angle, ended", [
    (1.25, 0.0, False), (0.81, 0.99, False), (1.99, -0.99, False),
    (0.8, 0.0, True), (2.0, 0.0, True), (0.5, 0.0, True), (2.5, 0.0, True),
    (1.25, 1.0, True), (1.25, -1.0, True),
])
def test_walker_params_health_rule(z, angle, ended):
    fam = get_family("walker-params")
    assert _ended(fam, _healthy_obs(fam, i0=z, i1=angle)) is ended


ANT_RULES = [("ant-dir", 0), ("ant-vel", 0), ("ant-crippled", 0), ("ant-dir-2d", 0),
             ("ant-dir-2d-hard", 0), ("ant-goal", 2)]


@pytest.mark.parametrize("name, z_index", ANT_RULES)
@pytest.mark.parametrize("z, ended", [(0.55, False), (0.2, False), (1.0, False), (0.19, True),
                                      (1.01, True), (-1.0, True)])
def test_ant_health_rule_reads_torso_height(name, z_index, z, ended):
    fam = get_family(name)
    assert _ended(fam, _healthy_obs(fam, **{f"i{z_index}": z})) is ended


def test_ant_goal_health_rule_ignores_xy_position():
    fam = get_family("ant-goal")
    # x = obs[0], y = obs[1] far away: still healthy; only z = obs[2] matters
    assert _ended(fam, _healthy_obs(fam, i0=0.05, i1=50.0)) is False
    assert _ended(fam, _healthy_obs(fam, i0=0.5, i2=0.1)) is True


def test_all_ant_body_families_have_a_health_rule():
    ant = {n for n, f in REGISTRY.items() if f.body in ("ant", "ant_xy")}
    assert ant - NEVER_TERMINATE == {n for n, _ in ANT_RULES}


@pytest.mark.parametrize("z, ended", [(1.4, False), (1.01, False), (1.99, False), (1.0, True),
                                      (2.0, True), (0.5, True)])
def test_humanoid_dir_health_rule(z, ended):
    fam = get_family("humanoid-dir")
    assert _ended(fam, _healthy_obs(fam, i0=z)) is ended


@pytest.mark.parametrize("name", ["point-nav", "point-nav-sq"])
def test_point_nav_ends_within_001_of_goal(name):
    fam = get_family(name)
    goal = t([0.3, -0.2])
    assert _ended(fam, t([0.3, -0.2]), goal) is True
    assert _ended(fam, t([0.306, -0.2]), goal) is True
    assert _ended(fam, t([0.3, -0.209]), goal) is True
    assert _ended(fam, t([0.3, -0.212]), goal) is False
    assert _ended(fam, t([0.0, 0.0]), goal) is False
    # batched over tasks and episodes
    obs = t([[[0.3, -0.2], [0.0, 0.0]], [[0.3, -0.2], [0.1, 0.1]]])
    goals = t([[[0.3, -0.2]], [[0.1, 0.105]]])
    torch.testing.assert_close(fam.terminated(obs, goals),
                               torch.tensor([[True, False], [False, True]]))


@pytest.mark.parametrize("name", sorted(NEVER_TERMINATE))
def test_admrl_and_cheetah_families_never_terminate(name):
    fam = REGISTRY[name]
    assert fam.terminated_fn is None
    rng = np.random.default_rng(0)
    obs = t(rng.normal(size=(3, 5, fam.obs_dim)) * 50)
    obs[0, 0, 0] = 0.0  # fallen (z = 0)
    obs[0, 1, 0] = -3.0
    obs[0, 2, :2] = 10.0  # tall and rotated
    params = t(rng.uniform(fam.low, fam.high, size=(3, 1, fam.task_dim)))
    out = fam.terminated(obs, params)
    assert out.dtype == torch.bool
    assert out.shape == (3, 5)
    assert not out.any()


def test_every_family_is_covered_by_a_termination_test():
    with_rule = {"hopper-params", "walker-params", "humanoid-dir", "point-nav", "point-nav-sq"}
    with_rule |= {n for n, _ in ANT_RULES} | BANDITS | MAZES  # mazes: tests/test_mazes.py
    assert with_rule | NEVER_TERMINATE == set(ALL)
    assert not with_rule & NEVER_TERMINATE
    for name in with_rule:
        assert REGISTRY[name].terminated_fn is not None, name


@pytest.mark.parametrize("name", sorted(set(ALL) - NEVER_TERMINATE))
def test_terminated_is_batched_over_leading_dimensions(name):
    fam = REGISTRY[name]
    obs = torch.stack([_healthy_obs(fam)] * 6).reshape(2, 3, fam.obs_dim)
    params = t(np.broadcast_to(fam.grid(1)[0] if fam.discrete is None else fam.discrete[0],
                               (2, 1, fam.task_dim)).copy())
    out = fam.terminated(obs, params)
    assert out.shape == (2, 3)
    assert out.dtype == torch.bool


# ─── 5. errors ───────────────────────────────────────────────────────────────────────────────
def test_misspelt_family_name_suggests_the_right_one_and_lists_known():
    with pytest.raises(UnknownNameError) as info:
        get_family("cheeta-vel")
    message = str(info.value)
    assert "did you mean 'cheetah-vel'" in message
    assert "cheeta-vel" in message
    for name in ALL:
        assert name in message
    assert isinstance(info.value, AdaptrlError)
    assert isinstance(info.value, KeyError)
    assert not message.startswith(("'", '"'))  # not KeyError's quoted repr


def test_unknown_family_without_close_match_has_no_suggestion():
    with pytest.raises(UnknownNameError) as info:
        get_family("zzzzzzzz")
    assert "did you mean" not in str(info.value)
    assert "point-nav" in str(info.value)


def test_get_family_returns_registered_instance_and_accepts_a_family():
    fam = get_family("ant-goal")
    assert fam is REGISTRY["ant-goal"]
    assert get_family(fam) is fam
    assert family_names() == list(REGISTRY)


def test_unknown_split_names_the_known_splits():
    fam = get_family("cheetah-vel-hard")
    with pytest.raises(KeyError) as info:
        fam.split("nope", 3, np.random.default_rng(0))
    message = info.value.args[0]
    assert "nope" in message
    for split in ("train", "test", "ood"):
        assert split in message


def test_check_params_with_wrong_shape_mentions_parameter_count():
    fam = get_family("point-nav")
    with pytest.raises(ValueError, match=r"2 parameter\(s\) \(goal_x, goal_y\)"):
        fam.check_tasks(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="2 parameter"):
        fam.check_tasks(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="1 parameter"):
        get_family("cheetah-vel").check_tasks([[1.0, 2.0]])
    with pytest.raises(ValueError, match="37 parameter"):
        get_family("hopper-params").check_tasks(np.zeros((1, 36)))


def test_check_params_accepts_a_single_task_and_out_of_box_values():
    fam = get_family("point-nav")
    out = fam.check_tasks([0.1, 0.2])
    assert out.shape == (1, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(fam.check_tasks([[5.0, -5.0]]), [[5.0, -5.0]])  # OOD allowed


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_params_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="finite"):
        get_family("ant-2d").check_tasks([[0.0, bad]])


def test_too_large_grid_raises_clear_error():
    fam = get_family("cheetah-highdim")
    with pytest.raises(ValueError) as info:
        fam.grid(3)
    message = str(info.value)
    assert "3^18" in message and "too large" in message and "cheetah-highdim" in message
    assert str(MAX_GRID_POINTS) in message
    assert "boundary()" in message or "sample()" in message
    with pytest.raises(ValueError, match="too large"):
        get_family("hopper-params").grid(2)


def test_grid_needs_at_least_one_point_per_dimension():
    with pytest.raises(ValueError, match="at least 1"):
        get_family("point-nav").grid(0)


@pytest.mark.parametrize("n", [0, -1, 2.5, "3"])
def test_task_count_must_be_a_positive_integer(n):
    fam = get_family("ant-2d")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="positive integer"):
        fam.sample(n, rng)
    with pytest.raises(ValueError, match="positive integer"):
        fam.split("ood", n, rng)
    with pytest.raises(ValueError, match="positive integer"):
        fam.boundary(n, rng)
    with pytest.raises(ValueError, match="positive integer"):
        get_family("cheetah-dir").boundary(n, rng)


def test_task_count_accepts_numpy_integers():
    x = get_family("ant-2d").sample(np.int64(3), np.random.default_rng(0))
    assert x.shape == (3, 2)


def test_registering_a_name_twice_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register(REGISTRY["point-nav"])
    assert len(REGISTRY) == len(ALL) + len(METAWORLD_FAMILIES)


def test_family_construction_validates_bounds_and_splits():
    box = BoxSplit((0.0,), (1.0,))
    common = dict(name="x", body="point", task_names=("a",), horizon=10, obs_dim=2, act_dim=2,
                  source="", reward_doc="", reward_fn=lambda *args: None)
    with pytest.raises(ValueError, match="one entry per parameter"):
        TaskFamily(low=[0.0, 0.0], high=[1.0, 1.0], splits={"train": box, "test": box}, **common)
    with pytest.raises(ValueError, match="'train' and 'test'"):
        TaskFamily(low=[0.0], high=[1.0], splits={"train": box}, **common)


# ─── 6. names and description ────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("family, expected", [
    ("cheetah-vel-hard", "CheetahVelHard"), ("ant-dir-2d", "AntDir2d"), ("point-nav", "PointNav"),
    ("point-nav-sq", "PointNavSq"), ("cheetah-highdim", "CheetahHighdim"), ("ant-3d", "Ant3d"),
])
def test_gym_name_is_camel_case_of_family_name(family, expected):
    assert gym_name(family) == expected
    assert get_family(family).gym_id == f"adaptrl/{expected}-v0"


def test_cheetah_vel_hard_gym_id():
    assert get_family("cheetah-vel-hard").gym_id == "adaptrl/CheetahVelHard-v0"


def test_gym_ids_are_unique_and_well_formed():
    ids = [REGISTRY[n].gym_id for n in ALL]
    assert len(set(ids)) == len(ids)
    for gid in ids:
        assert re.fullmatch(r"adaptrl/[A-Z][A-Za-z0-9]*-v0", gid), gid


@pytest.mark.parametrize("name", ALL)
def test_describe_reports_the_family(name):
    fam = REGISTRY[name]
    d = fam.describe()
    for key in ("name", "gym_id", "param_low", "param_high", "horizon", "obs_dim", "act_dim"):
        assert key in d
    assert d["name"] == name
    assert d["gym_id"] == fam.gym_id
    assert d["param_low"] == fam.low.tolist()
    assert d["param_high"] == fam.high.tolist()
    assert d["horizon"] == fam.horizon
    assert (d["obs_dim"], d["act_dim"]) == (fam.obs_dim, fam.act_dim)
    assert list(d["splits"]) == list(fam.splits)
    assert d["reward"] == fam.reward_doc
    json.dumps(d)  # plain data only


@pytest.mark.parametrize("name", ALL)
def test_family_metadata_is_consistent(name):
    fam = REGISTRY[name]
    assert fam.name == name
    assert fam.obs_dim == OBS_DIM[fam.body]
    assert fam.act_dim == (fam.task_dim if fam.body == "bandit" else ACT_DIM[fam.body])
    assert len(set(fam.task_names)) == fam.task_dim == len(fam.low) == len(fam.high)
    assert np.all(fam.low <= fam.high)
    assert fam.horizon > 0
    if fam.dynamics in ("cripple", "cripple-leg"):  # GrBAL: ψ = (joint or leg, strength)
        assert fam.task_names == ("joint" if fam.dynamics == "cripple" else "leg", "strength")
    elif fam.dynamics is not None and fam.body != "maze":  # a maze's ψ: tests/test_mazes.py
        assert fam.task_dim == sum(DYNAMICS_SIZES[fam.dynamics].values())


# ─── 7. the shipped normalizer ───────────────────────────────────────────────────────────────
def test_highdim_normalizer_has_18_means_and_positive_stds():
    mean, std = highdim_normalizer()
    assert mean.shape == (18,) and std.shape == (18,)
    assert mean.dtype == torch.float64 and std.dtype == torch.float64
    assert torch.isfinite(mean).all() and torch.isfinite(std).all()
    assert bool((std > 0).all())


def test_shipped_normalizer_is_reproduced_by_its_command():
    from adaptrl.envs.normalizer import DEFAULT_PATH, compute_highdim_normalizer

    assert DEFAULT_PATH.name == HIGHDIM_NORMALIZER_FILE
    shipped = json.loads(DEFAULT_PATH.read_text())
    recomputed = compute_highdim_normalizer(episodes=100, seed=0)
    assert recomputed["mean"] == shipped["mean"]
    assert recomputed["std"] == shipped["std"]
    assert recomputed == shipped
    assert shipped["command"] == "adaptrl normalizer cheetah-highdim --episodes 100 --seed 0"
    mean, std = highdim_normalizer()
    assert mean.tolist() == shipped["mean"] and std.tolist() == shipped["std"]


def test_ant_dir_2d_hard_leaves_an_ood_arc_out_of_training():
    family = get_family("ant-dir-2d-hard")
    rng = np.random.default_rng(0)
    train, ood = family.split("train", 500, rng), family.split("ood", 500, rng)
    assert train.min() >= 0 and train.max() <= 1.5 * math.pi
    assert ood.min() >= 1.5 * math.pi and ood.max() <= 2 * math.pi
    full = get_family("ant-dir-2d").split("train", 500, rng)
    assert full.max() > 1.5 * math.pi  # PEARL's ant-dir-2d keeps the whole circle
