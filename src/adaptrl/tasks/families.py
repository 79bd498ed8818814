"""The task families of adaptrl.

Observation layouts follow Gymnasium's v5 MuJoCo environments (indices below). Rewards read the
velocity from the observation (``qvel`` at the end of the control step) rather than from the
finite difference of positions used by MAML/PEARL/Gymnasium: that keeps r_ψ a function of
(s, a, s') alone, which model-based methods need; averaged over an episode the two agree closely.

Where the papers disagree, the default and the named variant:
* ``point-nav`` uses the distance −‖s'−g‖ (MAML's code); ``point-nav-sq`` uses −‖s'−g‖²
  (MAML's text).
* ``cheetah-vel`` draws target velocities from U[0,2] (MAML); ``cheetah-vel-pearl`` from U[0,3]
  (PEARL); ``cheetah-vel-hard`` trains on U[0,1.5] and tests on U[2.5,3.0] (OOD literature).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from .base import (
    BoundarySplit,
    BoxSplit,
    CircleSplit,
    DiscreteSplit,
    DiskSplit,
    Split,
    TaskFamily,
    UnavailableSplit,
)

# ─── observation layouts (Gymnasium v5) ──────────────────────────────────────────────────────
# half_cheetah: qpos[1:] (8) + qvel (9) = 17;           vx = obs[8]
# half_cheetah_full: qpos (9) + qvel (9) = 18 (x kept);  vx = obs[9]
# hopper: qpos[1:] (5) + clip(qvel, ±10) (6) = 11;       z = obs[0], angle = obs[1], vx = obs[5]
# walker2d: qpos[1:] (8) + clip(qvel, ±10) (9) = 17;     z = obs[0], angle = obs[1], vx = obs[8]
# ant: qpos[2:] (13) + qvel (14) = 27 (no contact forces); z = obs[0], vx,vy = obs[13:15]
# ant_xy: qpos (15) + qvel (14) = 29;                    x,y = obs[0:2], z = obs[2]
# humanoid: qpos[2:] (22) + qvel (23) = 45 (no cinert/cvel/actuator/contact terms);
#           z = obs[0], vx,vy = obs[22:24] (torso velocity)
OBS_DIM = {"point": 2, "half_cheetah": 17, "half_cheetah_full": 18, "hopper": 11,
           "walker2d": 17, "ant": 27, "ant_xy": 29, "humanoid": 45, "bandit": 1,
           "tabular_mdp": 10}
ACT_DIM = {"point": 2, "half_cheetah": 6, "half_cheetah_full": 6, "hopper": 3, "walker2d": 6,
           "ant": 8, "ant_xy": 8, "humanoid": 17, "tabular_mdp": 5}  # bandits: k arms
VX_INDEX = {"half_cheetah": 8, "half_cheetah_full": 9, "hopper": 5, "walker2d": 8, "ant": 13,
            "humanoid": 22}

# Sizes of the physics arrays that the random-dynamics families scale (world body excluded).
DYNAMICS_SIZES = {
    "hopper": {"body_mass": 4, "body_inertia": 12, "dof_damping": 6, "geom_friction": 15},
    "walker2d": {"body_mass": 7, "body_inertia": 21, "dof_damping": 9, "geom_friction": 24},
}

MAML = "Finn et al. 2017 (MAML)"
PEARL = "Rakelly et al. 2019 (PEARL)"
ADMRL = "Lin et al. 2020 (AdMRL)"


def _ctrl(act, weight):
    return weight * (act**2).sum(-1)


# ─── termination rules (Gymnasium v5 health checks, on the observation) ─────────────────────
def _hopper_unhealthy(obs, psi):
    # Gymnasium also bounds the unclipped qvel by 100; the observation clips velocities to ±10,
    # so here only the positions' bound can trip (a hopper faster than 100 m/s is not a concern)
    z, angle = obs[..., 0], obs[..., 1]
    state_ok = (obs[..., 1:].abs() < 100.0).all(-1)
    healthy = (z > 0.7) & (angle.abs() < 0.2) & state_ok & torch.isfinite(obs).all(-1)
    return ~healthy


def _walker_unhealthy(obs, psi):
    z, angle = obs[..., 0], obs[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0) & torch.isfinite(obs).all(-1)
    return ~healthy


def _ant_unhealthy(z_index):
    def rule(obs, psi):
        z = obs[..., z_index]
        return ~((z >= 0.2) & (z <= 1.0) & torch.isfinite(obs).all(-1))

    return rule


def _humanoid_unhealthy(obs, psi):
    z = obs[..., 0]
    return ~((z > 1.0) & (z < 2.0) & torch.isfinite(obs).all(-1))


# ─── families ────────────────────────────────────────────────────────────────────────────────
REGISTRY: dict[str, TaskFamily] = {}


def register(family: TaskFamily) -> TaskFamily:
    if family.name in REGISTRY:
        raise ValueError(f"task family '{family.name}' is already registered")
    REGISTRY[family.name] = family
    return family


def _point_nav(name, squared):
    def reward(obs, act, next_obs, psi):
        dist2 = ((next_obs - psi) ** 2).sum(-1)
        # the square root's gradient at 0 is infinite; the clamp keeps it finite at the goal
        return -dist2 if squared else -torch.sqrt(dist2.clamp_min(1e-12))

    def reached(next_obs, psi):
        return ((next_obs - psi) ** 2).sum(-1) < 0.01**2

    box = BoxSplit((-0.5, -0.5), (0.5, 0.5))
    return TaskFamily(
        name=name, body="point", task_names=("goal_x", "goal_y"),
        low=[-0.5, -0.5], high=[0.5, 0.5], horizon=100, obs_dim=2, act_dim=2, source=MAML,
        reward_doc="-||s'-g||²" if squared else "-||s'-g||",
        reward_fn=reward, terminated_fn=reached,
        splits={"train": box, "test": box, "boundary": BoundarySplit(box.low, box.high)},
        notes="starts at the origin; s' = s + clip(a, ±0.1); ends within 0.01 of the goal",
    )


register(_point_nav("point-nav", squared=False))
register(_point_nav("point-nav-sq", squared=True))


def _cheetah_vel(name, train, test, ood=None, source=MAML):
    vx = VX_INDEX["half_cheetah"]

    def reward(obs, act, next_obs, psi):
        return -(next_obs[..., vx] - psi[..., 0]).abs() - _ctrl(act, 0.05)

    splits = {"train": BoxSplit((train[0],), (train[1],)), "test": BoxSplit((test[0],), (test[1],))}
    if ood is not None:
        splits["ood"] = BoxSplit((ood[0],), (ood[1],))
    lo, hi = min(train[0], test[0]), max(train[1], test[1])
    return TaskFamily(
        name=name, body="half_cheetah", task_names=("target_vx",), low=[lo], high=[hi],
        horizon=200, obs_dim=17, act_dim=6, source=source,
        reward_doc="-|vx-ψ| - 0.05||a||²", reward_fn=reward, splits=splits,
    )


register(_cheetah_vel("cheetah-vel", (0.0, 2.0), (0.0, 2.0)))
register(_cheetah_vel("cheetah-vel-pearl", (0.0, 3.0), (0.0, 3.0), source=PEARL))
register(_cheetah_vel("cheetah-vel-hard", (0.0, 1.5), (2.5, 3.0), ood=(2.5, 3.0),
                      source="OOD meta-RL benchmarks (train U[0,1.5], test U[2.5,3.0])"))


def _direction_family(name, body, ctrl_weight, alive, source, terminated_fn, act_dim, obs_dim):
    vx = VX_INDEX[body]

    def reward(obs, act, next_obs, psi):
        return psi[..., 0] * next_obs[..., vx] - _ctrl(act, ctrl_weight) + alive

    both = DiscreteSplit(((-1.0,), (1.0,)))
    doc = f"ψ·vx - {ctrl_weight:g}||a||²" + (f" + {alive:g}" if alive else "")
    return TaskFamily(
        name=name, body=body, task_names=("direction",), low=[-1.0], high=[1.0], horizon=200,
        obs_dim=obs_dim, act_dim=act_dim, source=source, reward_doc=doc, reward_fn=reward,
        terminated_fn=terminated_fn, splits={"train": both, "test": both},
        discrete=np.array([[-1.0], [1.0]]),
    )


register(_direction_family("cheetah-dir", "half_cheetah", 0.05, 0.0, MAML, None, 6, 17))
register(_direction_family("ant-dir", "ant", 0.005, 0.05, MAML, _ant_unhealthy(0), 8, 27))


def _ant_vel():
    vx = VX_INDEX["ant"]

    def reward(obs, act, next_obs, psi):
        return -(next_obs[..., vx] - psi[..., 0]).abs() - _ctrl(act, 0.005) + 0.05

    box = BoxSplit((0.0,), (3.0,))
    return TaskFamily(
        name="ant-vel", body="ant", task_names=("target_vx",), low=[0.0], high=[3.0],
        horizon=200, obs_dim=27, act_dim=8, source=MAML,
        reward_doc="-|vx-ψ| - 0.005||a||² + 0.05", reward_fn=reward,
        terminated_fn=_ant_unhealthy(0), splits={"train": box, "test": box},
    )


register(_ant_vel())


def _angle_direction(name, body, forward_weight, ctrl_weight, alive, terminated_fn, obs_dim,
                     act_dim, ood_arc=None):
    """Run in direction ψ ∈ [0, 2π) (PEARL). ``ood_arc=(a, b)``: training and test directions
    leave out the arc [a, b], which becomes the ``ood`` split."""
    vx = VX_INDEX[body]

    def reward(obs, act, next_obs, psi):
        theta = psi[..., 0]
        along = next_obs[..., vx] * torch.cos(theta) + next_obs[..., vx + 1] * torch.sin(theta)
        return forward_weight * along - _ctrl(act, ctrl_weight) + alive

    circle = BoxSplit((0.0,), (2 * math.pi,))
    splits = {"train": circle, "test": circle}
    notes = ""
    if ood_arc is not None:
        seen = BoxSplit((0.0,), (ood_arc[0],))
        splits = {"train": seen, "test": seen, "ood": BoxSplit((ood_arc[0],), (ood_arc[1],))}
        notes = (f"train/test directions U[0, {ood_arc[0]:.4g}], ood arc "
                 f"U[{ood_arc[0]:.4g}, {ood_arc[1]:.4g}]")
    return TaskFamily(
        name=name, body=body, task_names=("theta",), low=[0.0], high=[2 * math.pi],
        horizon=200, obs_dim=obs_dim, act_dim=act_dim, source=PEARL,
        reward_doc=f"{forward_weight:g}·v_xy·(cosψ,sinψ) - {ctrl_weight:g}||a||² + {alive:g}",
        reward_fn=reward, terminated_fn=terminated_fn, splits=splits, notes=notes,
    )


register(_angle_direction("ant-dir-2d", "ant", 1.0, 0.5, 1.0, _ant_unhealthy(0), 27, 8))
# the OOD variant: train on three quarters of the circle, evaluate on the last quarter
register(_angle_direction("ant-dir-2d-hard", "ant", 1.0, 0.5, 1.0, _ant_unhealthy(0), 27, 8,
                          ood_arc=(1.5 * math.pi, 2 * math.pi)))
register(_angle_direction("humanoid-dir", "humanoid", 1.25, 0.1, 5.0, _humanoid_unhealthy, 45, 17))


def _ant_goal():
    def reward(obs, act, next_obs, psi):
        return -(next_obs[..., 0:2] - psi).abs().sum(-1) - _ctrl(act, 0.1)

    disk = DiskSplit(3.0)
    return TaskFamily(
        name="ant-goal", body="ant_xy", task_names=("goal_x", "goal_y"), low=[-3.0, -3.0],
        high=[3.0, 3.0], horizon=200, obs_dim=29, act_dim=8, source=PEARL,
        reward_doc="-||xy-g||₁ - 0.1||a||²", reward_fn=reward, terminated_fn=_ant_unhealthy(2),
        splits={"train": disk, "test": disk, "boundary": CircleSplit(3.0)},
        notes="goals uniform in the disk of radius 3",
    )


register(_ant_goal())


def _rand_params(name, body, terminated_fn, obs_dim, act_dim):
    vx = VX_INDEX[body]

    def reward(obs, act, next_obs, psi):
        r = next_obs[..., vx] + 1.0 - _ctrl(act, 1e-3)
        # ψ changes the physics, not the reward; still broadcast over the task axis
        return r.expand(torch.broadcast_shapes(r.shape, psi.shape[:-1]))

    names = tuple(
        f"log1.5_{array}[{i}]" for array, size in DYNAMICS_SIZES[body].items() for i in range(size)
    )
    k = len(names)
    box = BoxSplit((-3.0,) * k, (3.0,) * k)
    return TaskFamily(
        name=name, body=body, task_names=names, low=[-3.0] * k, high=[3.0] * k, horizon=200,
        obs_dim=obs_dim, act_dim=act_dim, source=PEARL + " rand-param envs",
        reward_doc="vx + 1 - 0.001||a||² (ψ scales physics by 1.5^ψ)", reward_fn=reward,
        terminated_fn=terminated_fn, splits={"train": box, "test": box}, dynamics=body,
        notes="ψ = exponents u: body masses, inertias, joint damping, geom friction × 1.5^u",
    )


register(_rand_params("hopper-params", "hopper", _hopper_unhealthy, 11, 3))
register(_rand_params("walker-params", "walker2d", _walker_unhealthy, 17, 6))


# ─── GrBAL's crippled HalfCheetah ────────────────────────────────────────────────────────────
GRBAL = "Nagabandi, Clavera et al. 2019 (GrBAL)"
CHEETAH_JOINTS = ("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")  # actuator order
CRIPPLE_HELD_OUT = 0  # GrBAL trains on joints 1–5 (``randint(1, 6)``); joint 0 is never seen


@dataclass(frozen=True)
class CrippleSplit(Split):
    """ψ = (joint, strength): the joint uniform over ``joints``, the strength uniform on
    [low, high] (an actuator's force is multiplied by the strength; 0 disables it)."""

    joints: tuple[int, ...]
    low: float
    high: float

    def sample(self, n, rng):
        joint = np.asarray(self.joints, dtype=np.float64)[rng.integers(0, len(self.joints), n)]
        return np.stack([joint, rng.uniform(self.low, self.high, size=n)], axis=1)

    @property
    def description(self):
        strength = f"{self.low:g}" if self.low == self.high else f"[{self.low:g},{self.high:g}]"
        return "joint {" + ",".join(map(str, self.joints)) + "} × strength " + strength


def _cheetah_crippled():
    vx = VX_INDEX["half_cheetah"]

    def reward(obs, act, next_obs, psi):
        r = next_obs[..., vx] - _ctrl(act, 0.05)
        # ψ changes the physics, not the reward; still broadcast over the task axis
        return r.expand(torch.broadcast_shapes(r.shape, psi.shape[:-1]))

    train = tuple(j for j in range(6) if j != CRIPPLE_HELD_OUT)
    return TaskFamily(
        name="cheetah-crippled", body="half_cheetah", task_names=("joint", "strength"),
        low=[0.0, 0.0], high=[5.0, 1.0], horizon=200, obs_dim=17, act_dim=6, source=GRBAL,
        reward_doc="vx - 0.05||a||² (ψ = joint, strength: that actuator's force × strength)",
        reward_fn=reward, dynamics="cripple",
        splits={"train": CrippleSplit(train, 0.0, 0.5),
                "test": CrippleSplit((CRIPPLE_HELD_OUT,), 0.0, 0.5),
                "ood": CrippleSplit((CRIPPLE_HELD_OUT,), 0.0, 0.1)},
        notes="train: joints 1–5, strength U[0,0.5]; test: the held-out joint 0 (bthigh), "
              "strength U[0,0.5]; ood: joint 0 (nearly) disabled, strength U[0,0.1] (GrBAL's test "
              "condition is strength 0). The joint "
              "is ψ[0] rounded to the nearest of 0–5",
    )


register(_cheetah_crippled())

CRIPPLE_CHANGE_STEP = 100
"""`cheetah-crippled-midway`: the control step (of 200) at which the joint is crippled."""


def _cheetah_crippled_midway():
    """GrBAL's crippled joint, but the damage happens halfway through the episode: the body is
    intact for the first 100 control steps (5 s), then ψ's joint loses strength. The dynamics
    change *within* the episode, so only a method that adapts online can follow them (GrBAL's
    motivation: "a leg is damaged while the robot runs"; its Fig. 4 changes the dynamics during
    an episode in the same spirit). Same ψ, splits and reward as ``cheetah-crippled``."""
    family = _cheetah_crippled()
    family.name = "cheetah-crippled-midway"
    family.change_step = CRIPPLE_CHANGE_STEP
    family.notes = (f"as cheetah-crippled, but the joint is crippled from control step "
                    f"{CRIPPLE_CHANGE_STEP} of {family.horizon} on (intact before); "
                    + family.notes)
    return family


register(_cheetah_crippled_midway())

ANT_LEG_HELD_OUT = 0  # trained on legs 1–3, tested on leg 0


def _ant_crippled():
    """GrBAL's crippled Ant: ψ = (leg, strength) multiplies both actuators of one leg (hip and
    ankle) by the strength (0 disables the leg). Train on legs 1–3, test and OOD on the held-out
    leg 0, as ``cheetah-crippled`` holds out a joint. Reward and termination are MAML's Ant
    (forward velocity − 0.005‖a‖² + 0.05; unhealthy torso heights end the episode)."""
    vx = VX_INDEX["ant"]

    def reward(obs, act, next_obs, psi):
        r = next_obs[..., vx] - _ctrl(act, 0.005) + 0.05
        return r.expand(torch.broadcast_shapes(r.shape, psi.shape[:-1]))

    train = tuple(leg for leg in range(4) if leg != ANT_LEG_HELD_OUT)
    return TaskFamily(
        name="ant-crippled", body="ant", task_names=("leg", "strength"),
        low=[0.0, 0.0], high=[3.0, 1.0], horizon=200, obs_dim=27, act_dim=8, source=GRBAL,
        reward_doc="vx - 0.005||a||² + 0.05 (ψ = leg, strength: its hip and ankle force × "
                   "strength)",
        reward_fn=reward, terminated_fn=_ant_unhealthy(0), dynamics="cripple-leg",
        splits={"train": CrippleSplit(train, 0.0, 0.5),
                "test": CrippleSplit((ANT_LEG_HELD_OUT,), 0.0, 0.5),
                "ood": CrippleSplit((ANT_LEG_HELD_OUT,), 0.0, 0.1)},
        notes="train: legs 1–3, strength U[0,0.5]; test: the held-out leg 0, strength "
              "U[0,0.5]; ood: leg 0 (nearly) disabled, strength U[0,0.1]. The leg is ψ[0] "
              "rounded to the nearest of 0–3",
    )


register(_ant_crippled())


def _admrl(name, body, low, high, coef, dims, ctrl_weight, obs_dim, act_dim, ood=None,
           grid_shape=()):
    """AdMRL's velocity/height families: r = -(c₁|vx-ψx| + c₂|vy-ψy| + c₃|z-ψz|) + alive - ctrl.

    ``coef`` lists (index into obs, coefficient) for each dimension of ψ in order; ``dims`` names
    them (0 = x-velocity, 1 = y-velocity, 2 = height).
    """
    index = torch.tensor([i for i, _ in coef])
    weight = torch.tensor([c for _, c in coef])

    def reward(obs, act, next_obs, psi):
        w = weight.to(dtype=psi.dtype, device=psi.device)
        target = next_obs[..., index.to(next_obs.device)].to(psi.dtype)
        return -((target - psi).abs() * w).sum(-1) + 1.0 - _ctrl(act, ctrl_weight)

    splits = {"train": BoxSplit(tuple(low), tuple(high)), "test": BoxSplit(tuple(low), tuple(high))}
    if ood is not None:
        splits["ood"] = BoundarySplit(tuple(ood[0]), tuple(ood[1]))
    names = {0: "target_vx", 1: "target_vy", 2: "target_z"}
    task_names = tuple(names[j] for j in dims)
    terms = " + ".join(f"{c:g}|{names[j][7:]}-ψ{names[j][7:]}|" for j, (_, c) in zip(dims, coef))
    return TaskFamily(
        name=name, body=body, task_names=task_names, low=low, high=high, horizon=200,
        obs_dim=obs_dim, act_dim=act_dim, source=ADMRL,
        reward_doc=f"-({terms}) + 1 - {ctrl_weight:g}||a||²", reward_fn=reward, splits=splits,
        notes="no early termination (fixed-length episodes, as model-based rollouts need)",
        weights={names[j]: c for j, (_, c) in zip(dims, coef)}, grid_shape=grid_shape,
    )


register(_admrl("hopper-2d", "hopper", [-2.0, 1.2], [2.0, 2.0], [(5, 1.0), (0, 5.0)], (0, 2),
                1e-3, 11, 3))
register(_admrl("walker-2d", "walker2d", [-2.0, 1.0], [2.0, 1.8], [(8, 1.0), (0, 5.0)], (0, 2),
                1e-3, 17, 6))
register(_admrl("ant-2d", "ant", [-3.0, -3.0], [3.0, 3.0], [(13, 1.0), (14, 1.0)], (0, 1),
                0.5, 27, 8, ood=([-5.0, -5.0], [5.0, 5.0])))
register(_admrl("ant-3d", "ant", [-3.0, -3.0, 0.4], [3.0, 3.0, 0.6],
                [(13, 1.0), (14, 1.0), (0, 30.0)], (0, 1, 2), 0.5, 27, 8, grid_shape=(4, 4, 3)))


# ─── Cheetah-Highdim ─────────────────────────────────────────────────────────────────────────
HIGHDIM_NORMALIZER_FILE = "cheetah_highdim_norm.json"


@functools.cache
def highdim_normalizer() -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of HalfCheetah states (18-d, x kept) under a uniform random policy, shipped
    with the package; `adaptrl normalizer` recomputes it."""
    text = resources.files("adaptrl.tasks").joinpath("data", HIGHDIM_NORMALIZER_FILE).read_text()
    data = json.loads(text)
    mean = torch.tensor(data["mean"], dtype=torch.float64)
    std = torch.tensor(data["std"], dtype=torch.float64)
    if mean.shape != (18,) or std.shape != (18,) or not bool((std > 0).all()):
        raise ValueError(f"corrupt {HIGHDIM_NORMALIZER_FILE}: need 18 means and 18 positive stds")
    return mean, std


def _cheetah_highdim():
    def reward(obs, act, next_obs, psi):
        mean, std = highdim_normalizer()
        normalized = (next_obs - mean.to(next_obs)) / std.to(next_obs)
        return (psi * normalized.to(psi.dtype)).sum(-1) - _ctrl(act, 0.05)

    k = 18
    box = BoxSplit((-1.0,) * k, (1.0,) * k)
    return TaskFamily(
        name="cheetah-highdim", body="half_cheetah_full",
        task_names=tuple(f"w{i}" for i in range(k)), low=[-1.0] * k, high=[1.0] * k,
        horizon=200, obs_dim=18, act_dim=6, source=ADMRL,
        reward_doc="ψᵀ normalize(s') - 0.05||a||²", reward_fn=reward,
        splits={"train": box, "test": BoundarySplit(box.low, box.high),
                "boundary": BoundarySplit(box.low, box.high)},
        notes="test split: uniform on the boundary of [-1,1]^18, as in AdMRL's evaluation",
    )


register(_cheetah_highdim())


# ─── black-box meta-RL families: bandits and tabular MDPs (discrete actions) ─────────────────
RL2 = "Duan et al. 2016 (RL²)"
NO_BOUNDARY = ("'{name}' has no boundary split: its tasks are probability tables, not points "
               "of a box; use --split test")


def _bandit(k: int) -> TaskFamily:
    """k Bernoulli arms, ψ = (p_1, ..., p_k) ~ U[0, 1]^k (RL² §3.1; SNAIL §5.2.1).

    Each pull is an episode of one step; a trial is n pulls (``trial_episodes`` = n; the papers
    use n = 10, 100, 500). The observation is a constant 0 (RL² App. A.1): the policy learns
    from the previous action, reward and done flag that the rollout contract feeds it. The
    environment draws each reward from Bernoulli(p_a); ``reward`` is its mean p_a, which is
    what is differentiable in ψ."""

    def reward(obs, act, next_obs, psi):
        return (act.to(psi.dtype) * psi).sum(-1)

    def one_pull(next_obs, psi):  # every pull ends its episode
        return torch.ones(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)

    box = BoxSplit((0.0,) * k, (1.0,) * k)
    return TaskFamily(
        name=f"bandit-k{k}", body="bandit", task_names=tuple(f"p{i}" for i in range(k)),
        low=[0.0] * k, high=[1.0] * k, horizon=1, obs_dim=1, act_dim=k, source=RL2,
        reward_doc="Bernoulli(p_a) (mean p_a)", reward_fn=reward, terminated_fn=one_pull,
        splits={"train": box, "test": box, "boundary": BoundarySplit(box.low, box.high)},
        discrete_actions=True,
        notes="one pull per episode; trials of n pulls; observation constant 0",
    )


for _k in (5, 10, 50):
    register(_bandit(_k))

MDP_STATES, MDP_ACTIONS, MDP_HORIZON = 10, 5, 10


class TabularMDPSplit(Split):
    """Random MDPs as in RL² §3.2: for every (s, a), P(·|s, a) ~ Dirichlet(1, ..., 1) and a mean
    reward μ(s, a) ~ N(1, 1); ψ = [P flattened (s, a, s'), μ flattened (s, a)]."""

    description = "P(·|s,a) ~ Dirichlet(1), μ(s,a) ~ N(1,1)"

    def __init__(self, states: int, actions: int):
        self.states, self.actions = states, actions

    def sample(self, n, rng):
        S, A = self.states, self.actions
        transitions = rng.dirichlet(np.ones(S), size=(n, S, A))
        means = rng.normal(1.0, 1.0, size=(n, S, A))
        return np.concatenate([transitions.reshape(n, -1), means.reshape(n, -1)], axis=1)


def tabular_mdp_parts(psi, states: int = MDP_STATES, actions: int = MDP_ACTIONS):
    """``(P [..., S, A, S], μ [..., S, A])`` from ψ ``[..., S·A·S + S·A]`` (numpy or torch)."""
    split = states * actions * states
    lead = psi.shape[:-1]
    return (psi[..., :split].reshape(*lead, states, actions, states),
            psi[..., split:].reshape(*lead, states, actions))


def _tabular_mdp() -> TaskFamily:
    """|S| = 10, |A| = 5, episodes of T = 10 steps, every episode starting in state 0 (RL² §3.2;
    SNAIL §5.2.2): ψ holds the transition table P(s'|s, a) and the mean rewards μ(s, a), drawn
    per task as `TabularMDPSplit` says. Observations are one-hot states; a trial is n episodes
    (the papers use n = 10, 25, 50, 75, 100). The environment draws s' ~ P(·|s, a) and the
    reward ~ N(μ(s, a), 1); ``reward`` is its mean μ(s, a), differentiable in ψ."""
    S, A = MDP_STATES, MDP_ACTIONS

    def reward(obs, act, next_obs, psi):
        _, means = tabular_mdp_parts(psi, S, A)
        return torch.einsum("...s,...a,...sa->...", obs.to(psi.dtype), act.to(psi.dtype), means)

    names = tuple(f"P{s}_{a}_{t}" for s in range(S) for a in range(A) for t in range(S)) + \
        tuple(f"mu{s}_{a}" for s in range(S) for a in range(A))
    split = TabularMDPSplit(S, A)
    dim = S * A * S
    return TaskFamily(
        name="tabular-mdp", body="tabular_mdp", task_names=names,
        low=[0.0] * dim + [-5.0] * (S * A), high=[1.0] * dim + [7.0] * (S * A),
        horizon=MDP_HORIZON, obs_dim=S, act_dim=A, source=RL2,
        reward_doc="N(μ(s,a), 1) (mean μ(s,a)); s' ~ P(·|s,a)", reward_fn=reward,
        splits={"train": split, "test": split,
                "boundary": UnavailableSplit(NO_BOUNDARY.format(name="tabular-mdp"))},
        discrete_actions=True,
        notes="|S|=10, |A|=5, T=10, start in state 0; one-hot states; the box over μ is "
              "N(1,1)'s ±6σ, only a hull",
    )


register(_tabular_mdp())


# ─── mazes: a top-down grid analogue of the visual mazes (RL² §3.3; SNAIL §5.2.4) ────────────
SNAIL = "Mishra et al. 2018 (SNAIL)"
MAZE_SIDES = {"maze-small": 5, "maze-large": 9}  # cells along each side
MAZE_HORIZONS = {"maze-small": 250, "maze-large": 1000}  # SNAIL's per-episode caps
MAZE_TRAIN_POOL = 1000  # training configurations, as RL² §3.3 and SNAIL §5.2.4
MAZE_POOL_SEED = 0
# the four moves, in action order: N, E, S, W as (Δrow, Δcol); row 0 is the northern edge
MAZE_MOVES = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)], dtype=np.int64)
_MOVES = tuple(map(tuple, MAZE_MOVES.tolist()))
MAZE_OBSERVATION = ("wall_n", "wall_e", "wall_s", "wall_w", "on_goal", "bumped")
MAZE_STEP_COST, MAZE_BUMP_COST = 0.01, 0.001
OBS_DIM["maze"] = len(MAZE_OBSERVATION)
ACT_DIM["maze"] = len(MAZE_MOVES)


def maze_task_dim(side: int) -> int:
    """Length of ψ for a ``side × side`` maze: its 2·side·(side − 1) interior walls, then the
    start and goal cells (row, col)."""
    return 2 * side * (side - 1) + 4


def maze_side(task_dim: int) -> int:
    """The side of the square maze whose ψ has ``task_dim`` numbers (`maze_task_dim` inverted)."""
    root = math.isqrt(max(2 * (int(task_dim) - 4) + 1, 0))
    side = (1 + root) // 2
    if side < 2 or maze_task_dim(side) != task_dim:
        raise ValueError(f"{task_dim} numbers are not the ψ of a square maze (2·n·(n−1) + 4)")
    return side


def maze_parts(psi, side: int | None = None):
    """``(open [..., n, n, 4] bool, start [..., 2], goal [..., 2])`` from ψ ``[..., k]`` (numpy):
    ``open[..., r, c, d]`` says whether the move d (N, E, S, W) from cell (r, c) passes (the
    outer border is always closed); start and goal are int64 (row, col) cells.

    ψ layout (n = side): ``east_r_c`` for r < n, c < n − 1 (1 = open passage between (r, c)
    and (r, c + 1)), then ``south_r_c`` for r < n − 1, c < n (between (r, c) and (r + 1, c)),
    then start_row, start_col, goal_row, goal_col. Values above 0.5 count as open; cells are
    rounded."""
    psi = np.asarray(psi, dtype=np.float64)
    n = side or maze_side(psi.shape[-1])
    lead = psi.shape[:-1]
    walls = n * (n - 1)
    east = psi[..., :walls].reshape(*lead, n, n - 1) > 0.5
    south = psi[..., walls:2 * walls].reshape(*lead, n - 1, n) > 0.5
    passable = np.zeros((*lead, n, n, 4), dtype=bool)
    passable[..., 1:, :, 0] = south
    passable[..., :, :-1, 1] = east
    passable[..., :-1, :, 2] = south
    passable[..., :, 1:, 3] = east
    cells = np.rint(psi[..., 2 * walls:]).astype(np.int64)
    return passable, cells[..., :2], cells[..., 2:]


def check_maze_tasks(tasks, side: int | None = None):
    """`maze_parts` of ``tasks [T, k]`` after checking that the start and goal cells lie in the
    maze and differ (a maze whose walls do not connect them is allowed: its goal is
    unreachable)."""
    passable, start, goal = maze_parts(tasks, side)
    n = passable.shape[-2]
    for name, cells in (("start", start), ("goal", goal)):
        if np.any((cells < 0) | (cells >= n)):
            raise ValueError(f"maze {name} cells must lie in the {n}×{n} grid")
    if np.any((start == goal).all(-1)):
        raise ValueError("a maze's start and goal cells must differ")
    return passable, start, goal


def generate_maze(side: int, rng: np.random.Generator) -> np.ndarray:
    """ψ of a random perfect maze (a spanning tree of the ``side × side`` grid, carved by a
    randomized depth-first search from a uniform cell) with a start and a goal cell drawn
    uniformly, distinct. All randomness comes from ``rng``: ``side²`` uniforms (the root, then
    one per carved passage), then the two cells."""
    n = side
    walls = n * (n - 1)
    psi = np.zeros(2 * walls + 4)  # east_r_c at r·(n − 1) + c, south_r_c at walls + r·n + c
    u = rng.random(n * n).tolist()
    visited = [[False] * n for _ in range(n)]
    root = divmod(int(u[0] * n * n), n)
    visited[root[0]][root[1]] = True
    stack, draw = [root], 1
    while stack:
        r, c = stack[-1]
        options = [(r + dr, c + dc) for dr, dc in _MOVES
                   if 0 <= r + dr < n and 0 <= c + dc < n and not visited[r + dr][c + dc]]
        if not options:
            stack.pop()
            continue
        nr, nc = options[int(u[draw] * len(options))]
        draw += 1
        if nr == r:
            psi[r * (n - 1) + min(c, nc)] = 1.0
        else:
            psi[walls + min(r, nr) * n + c] = 1.0
        visited[nr][nc] = True
        stack.append((nr, nc))
    start, goal = rng.choice(n * n, size=2, replace=False)
    psi[2 * walls:] = (start // n, start % n, goal // n, goal % n)
    return psi


@functools.cache
def _maze_pool(side: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pool = np.stack([generate_maze(side, rng) for _ in range(size)])
    pool.setflags(write=False)
    return pool


class MazeSplit(Split):
    """Random perfect ``side × side`` mazes with a start and a goal cell (`generate_maze`).
    ``pool``: draw uniformly from a fixed pool of that many mazes, generated once from
    ``pool_seed`` (the papers' 1000 training configurations); None: a fresh maze per task from
    the split's generator."""

    def __init__(self, side: int, pool: int | None = None, pool_seed: int = MAZE_POOL_SEED):
        self.side, self.pool, self.pool_seed = int(side), pool, int(pool_seed)

    @property
    def description(self):
        kind = (f"one of {self.pool} fixed mazes (pool seed {self.pool_seed})" if self.pool
                else "a fresh maze per task")
        return f"random perfect {self.side}×{self.side} mazes, {kind}"

    def sample(self, n, rng):
        if self.pool is None:
            return np.stack([generate_maze(self.side, rng) for _ in range(n)])
        return _maze_pool(self.side, self.pool, self.pool_seed)[rng.integers(0, self.pool, n)]


def _maze(name: str) -> TaskFamily:
    """A random perfect maze on a square grid of cells, seen from above through local
    observations only — a CPU analogue of the visual mazes of RL² §3.3 and SNAIL §5.2.4, NOT
    those first-person 3-D (ViZDoom) mazes: its numbers measure a different task and must not be
    compared with RL² Table 3 or SNAIL Table 5.

    ψ (`maze_parts`): the open/closed state of every interior wall, then the start and the goal
    cells. The agent sees ``[wall_n, wall_e, wall_s, wall_w, on_goal, bumped]`` (0/1 floats):
    the four walls of its cell (1 = closed; the border is closed), whether it stands on the goal
    and whether its last move hit a wall; never its position or the goal's. Actions: the moves
    N, E, S, W (one-hot; a move into a wall keeps the agent in place). Rewards as SNAIL's:
    +1 on reaching the goal, which ends the episode, −0.01 per step and −0.001 per wall hit,
    i.e. r = on_goal − 0.01 − 0.001·bumped of the next observation. Episode caps 250 (5×5) and
    1000 (9×9) steps, SNAIL's. A trial is 2 episodes in the papers: the maze, start and goal
    stay fixed within it and each episode restarts at the start cell. Training tasks come from
    a fixed pool of 1000 mazes, test tasks are fresh mazes (RL² §3.3; SNAIL §5.2.4)."""
    side, horizon = MAZE_SIDES[name], MAZE_HORIZONS[name]

    def reward(obs, act, next_obs, psi):
        r = next_obs[..., 4] - MAZE_STEP_COST - MAZE_BUMP_COST * next_obs[..., 5]
        # ψ shapes the maze (the dynamics), not the reward; still broadcast over the task axis
        return r.expand(torch.broadcast_shapes(r.shape, psi.shape[:-1]))

    def reached(next_obs, psi):
        return next_obs[..., 4] > 0.5

    names = tuple(f"east_{r}_{c}" for r in range(side) for c in range(side - 1)) + \
        tuple(f"south_{r}_{c}" for r in range(side - 1) for c in range(side)) + \
        ("start_row", "start_col", "goal_row", "goal_col")
    walls = 2 * side * (side - 1)
    reason = (f"'{name}' has no boundary split: its tasks are mazes (walls, start and goal "
              f"cells), not points of a box; use --split test")
    return TaskFamily(
        name=name, body="maze", task_names=names, low=[0.0] * (walls + 4),
        high=[1.0] * walls + [side - 1.0] * 4, horizon=horizon, obs_dim=OBS_DIM["maze"],
        act_dim=ACT_DIM["maze"], source=SNAIL + " §5.2.4 / " + RL2 + " §3.3, top-down analogue",
        reward_doc="on_goal − 0.01 − 0.001·bumped (+1 at the goal, which ends the episode)",
        reward_fn=reward, terminated_fn=reached,
        splits={"train": MazeSplit(side, MAZE_TRAIN_POOL), "test": MazeSplit(side),
                "boundary": UnavailableSplit(reason)},
        dynamics="maze", discrete_actions=True,
        notes=f"top-down {side}×{side} grid maze with local observations (walls of the cell, "
              f"on-goal and bumped bits), not the papers' first-person 3-D mazes: do not "
              f"compare with RL² Table 3 / SNAIL Table 5; trials of 2 episodes",
    )


for _name in MAZE_SIDES:
    register(_maze(_name))


# ─── Meta-World (optional extra; see adaptrl.tasks.metaworld) ──────────────────────────────
def _register_metaworld():
    from .metaworld import metaworld_families

    for family in metaworld_families():
        register(family)


_register_metaworld()
