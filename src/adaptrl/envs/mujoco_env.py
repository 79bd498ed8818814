"""MuJoCo bodies stepped in batches through the official `mujoco` bindings.

All running environments advance in one call per control step: ``mujoco.rollout`` takes the
batch of physics states and one step's controls, runs ``frame_skip`` physics steps for each on a
persistent pool of native threads (``mj_step`` releases the GIL), and returns the new states.
Observations are sliced out of the state array with array operations, laid out as Gymnasium's
v5 environments (see `adaptrl.tasks.families` for the indices).

Models are Gymnasium's own XML assets, so the bodies are the ones everybody benchmarks on.
The solver's warm start is not carried from one control step to the next (``rollout`` starts each
call cold); this changes contact solutions at the level of solver tolerance only.
"""

from __future__ import annotations

import copy
import os
import re
import weakref
from dataclasses import dataclass

import mujoco
import numpy as np
from mujoco import rollout as mj_rollout

from ..tasks.families import DYNAMICS_SIZES
from .base import BatchEnv

STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS


def gymnasium_asset(filename: str) -> str:
    """Path of one of Gymnasium's MuJoCo XML files (installed with the package; no download)."""
    import gymnasium  # the assets ship with the package; gymnasium.envs.mujoco is not imported

    path = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", filename)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Gymnasium's MuJoCo asset {filename} is missing ({path})")
    return path


@dataclass(frozen=True)
class BodySpec:
    """How a Gymnasium v5 body is simulated and observed.

    qpos_start: first qpos entry in the observation (v5 excludes the x or x,y position).
    qvel_clip: v5 Hopper/Walker clip velocities to ±10 in the observation.
    qpos_noise / qvel_noise: reset noise scale; ``qvel_normal`` draws qvel noise from a normal
        distribution (HalfCheetah, Ant) instead of a uniform one.
    """

    xml: str
    frame_skip: int
    qpos_start: int
    qvel_clip: float | None
    qpos_noise: float
    qvel_noise: float
    qvel_normal: bool


BODIES: dict[str, BodySpec] = {
    "half_cheetah": BodySpec("half_cheetah.xml", 5, 1, None, 0.1, 0.1, True),
    "half_cheetah_full": BodySpec("half_cheetah.xml", 5, 0, None, 0.1, 0.1, True),
    "hopper": BodySpec("hopper.xml", 4, 1, 10.0, 5e-3, 5e-3, False),
    "walker2d": BodySpec("walker2d_v5.xml", 4, 1, 10.0, 5e-3, 5e-3, False),
    "ant": BodySpec("ant.xml", 5, 2, None, 0.1, 0.1, True),
    "ant_xy": BodySpec("ant.xml", 5, 0, None, 0.1, 0.1, True),
    "humanoid": BodySpec("humanoid.xml", 5, 2, None, 1e-2, 1e-2, False),
}

_MODEL_CACHE: dict[str, mujoco.MjModel] = {}


def load_model(xml: str) -> mujoco.MjModel:
    """A fresh copy of a Gymnasium model (parsed once per process).

    HalfCheetah's XML asks the compiler to rescale its masses to 14 kg (``settotalmass``), an
    attribute MuJoCo has deprecated; we strip it and rescale on the compiled model instead
    (``mj_setTotalmass`` + ``mj_setConst``), which gives identical masses and inertias and keeps
    working once the attribute is gone.
    """
    if xml not in _MODEL_CACHE:
        with open(gymnasium_asset(xml)) as f:
            text = f.read()
        match = re.search(r'\s*settotalmass="([0-9.eE+-]+)"', text)
        if match is None:
            model = mujoco.MjModel.from_xml_path(gymnasium_asset(xml))
        else:
            model = mujoco.MjModel.from_xml_string(text.replace(match.group(0), ""))
            mujoco.mj_setTotalmass(model, float(match.group(1)))
            mujoco.mj_setConst(model, mujoco.MjData(model))
        _MODEL_CACHE[xml] = model
    return copy.copy(_MODEL_CACHE[xml])


def scale_dynamics(model: mujoco.MjModel, exponents: np.ndarray, body: str) -> mujoco.MjModel:
    """PEARL's rand-param scaling: every body mass, inertia, joint damping and geom friction
    coefficient (world body excluded) is multiplied by 1.5^u, with one u per entry of ψ."""
    sizes = DYNAMICS_SIZES[body]
    if exponents.shape != (sum(sizes.values()),):
        raise ValueError(f"{body} dynamics take {sum(sizes.values())} exponents")
    scale = 1.5 ** np.asarray(exponents, dtype=np.float64)
    out = copy.copy(model)
    cursor = 0
    for name, size in sizes.items():
        array = getattr(out, name)
        target = array[1:] if name.startswith("body_") else array  # skip the world body
        if target.size != size:
            raise ValueError(f"{body}: model has {target.size} {name} entries, expected {size}")
        target.reshape(-1)[:] = target.reshape(-1) * scale[cursor:cursor + size]
        cursor += size
    return out


def cripple_actuator(model: mujoco.MjModel, psi: np.ndarray) -> mujoco.MjModel:
    """GrBAL's crippled joint: ψ = (joint, strength) multiplies actuator ``round(joint)``'s
    gear (its force per unit of control) by ``strength`` (0 disables it). The joint is ψ[0]
    rounded to the nearest actuator."""
    joint = int(np.clip(np.rint(psi[0]), 0, model.nu - 1))
    out = copy.copy(model)
    out.actuator_gear[joint, 0] = model.actuator_gear[joint, 0] * float(psi[1])
    return out


def cripple_leg(model: mujoco.MjModel, psi: np.ndarray) -> mujoco.MjModel:
    """GrBAL's crippled Ant leg: ψ = (leg, strength) multiplies the gears of both actuators of
    leg ``round(leg)`` (hip ``2·leg`` and ankle ``2·leg + 1`` in the Ant's actuator order) by
    ``strength`` (0 disables the leg)."""
    leg = int(np.clip(np.rint(psi[0]), 0, model.nu // 2 - 1))
    out = copy.copy(model)
    for actuator in (2 * leg, 2 * leg + 1):
        out.actuator_gear[actuator, 0] = model.actuator_gear[actuator, 0] * float(psi[1])
    return out


def apply_dynamics(model: mujoco.MjModel, psi: np.ndarray, dynamics: str) -> mujoco.MjModel:
    """The model of task ψ for a family whose ψ changes the physics (``family.dynamics``)."""
    if dynamics == "cripple":
        return cripple_actuator(model, np.asarray(psi, dtype=np.float64))
    if dynamics == "cripple-leg":
        return cripple_leg(model, np.asarray(psi, dtype=np.float64))
    return scale_dynamics(model, psi, dynamics)


class MujocoBatchEnv(BatchEnv):
    """T·N copies of one MuJoCo body (per-task models where ψ changes the physics)."""

    def __init__(self, family, num_tasks, num_episodes, threads: int | None = None):
        super().__init__(family, num_tasks, num_episodes)
        self.spec = BODIES[self.family.body]
        self.model = load_model(self.spec.xml)
        m = self.model
        self.nq, self.nv, self.nu = m.nq, m.nv, m.nu
        self.nstate = mujoco.mj_stateSize(m, STATE_SPEC)
        if self.nstate != 1 + self.nq + self.nv:
            raise RuntimeError(f"unexpected physics state layout for {self.spec.xml}")
        expected_obs = self.nq - self.spec.qpos_start + self.nv
        if expected_obs != self.obs_dim or self.nu != self.act_dim:
            raise RuntimeError(
                f"family '{self.family.name}' declares obs/act dims {self.obs_dim}/{self.act_dim},"
                f" the model gives {expected_obs}/{self.nu}"
            )
        self.action_low = m.actuator_ctrlrange[:, 0].astype(np.float32)
        self.action_high = m.actuator_ctrlrange[:, 1].astype(np.float32)
        self.render_fps = int(round(1.0 / (m.opt.timestep * self.spec.frame_skip)))  # real time
        # ADAPTRL_MUJOCO_THREADS caps the pool when several trainings share one machine
        self.threads = int(threads or os.environ.get("ADAPTRL_MUJOCO_THREADS", 0)
                           or min(os.cpu_count() or 1, 8))
        # one model per environment, as the rollout takes them (per-task copies when ψ changes
        # the physics), and the ψ each task's model was built for
        self._models: list[mujoco.MjModel] = [m] * self.batch_size
        self._model_tasks: np.ndarray | None = None
        self._start_threads()
        B, fs = self.batch_size, self.spec.frame_skip
        self._state = np.zeros((B, self.nstate))
        self._rollout_out = np.zeros((B, fs, self.nstate))
        self._sensor_out = np.zeros((B, fs, m.nsensordata))
        self._ctrl = np.zeros((B, fs, self.nu))
        self._obs_buf = np.zeros((B, self.obs_dim), np.float32)

    def _start_threads(self) -> None:
        """The native parts, which neither pickle nor copy: per-thread MjData and the pool."""
        self._datas = [mujoco.MjData(self.model) for _ in range(self.threads)]
        self._rollout = mj_rollout.Rollout(nthread=self.threads)
        weakref.finalize(self, self._rollout.close)
        self._frames = None  # a MujocoFrames, made by the first render

    def __getstate__(self):
        state = super().__getstate__()
        for name in ("_datas", "_rollout", "_frames"):
            del state[name]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._start_threads()

    def _apply_tasks(self, tasks):
        if self.family.dynamics is None:
            return
        # only the tasks whose ψ changed get a new model (vector envs change one at a time)
        old = self._model_tasks
        for i, psi in enumerate(tasks):
            if old is None or not np.array_equal(old[i], psi):
                model = apply_dynamics(self.model, psi, self.family.dynamics)
                start = i * self.num_episodes
                self._models[start:start + self.num_episodes] = [model] * self.num_episodes
        self._model_tasks = np.array(tasks, copy=True)

    def model_of(self, task: int) -> mujoco.MjModel:
        """The (possibly ψ-scaled) model that task ``task`` runs on."""
        return self._models[task * self.num_episodes]

    def _initial_states(self, rng, n: int) -> np.ndarray:
        """``n`` start states ``[n, nstate]``: Gymnasium's reset noise around ``qpos0``."""
        m, spec = self.model, self.spec
        qpos = m.qpos0 + rng.uniform(-spec.qpos_noise, spec.qpos_noise, size=(n, self.nq))
        if spec.qvel_normal:
            qvel = spec.qvel_noise * rng.standard_normal(size=(n, self.nv))
        else:
            qvel = rng.uniform(-spec.qvel_noise, spec.qvel_noise, size=(n, self.nv))
        return np.concatenate([np.zeros((n, 1)), qpos, qvel], axis=1)

    def _reset_state(self, rng):
        self._state[:] = self._initial_states(rng, self.batch_size)
        return self._observe(self._state)

    def _reset_envs(self, index, rngs):
        for row, rng in zip(index, rngs):
            self._state[row] = self._initial_states(rng, 1)[0]
        return self._observe(self._state[index])

    def _render(self, row, width, height):
        # kinematics and geometry are those of the shared model (ψ scales only masses,
        # inertias, damping and friction), so one renderer serves every task
        if self._frames is None:
            from .render import MujocoFrames

            self._frames = MujocoFrames(self.model)
        return self._frames.frame(self._state[row], STATE_SPEC, width, height)

    def close(self):
        if self._frames is not None:
            self._frames.close()

    def _observe(self, state):
        """Observation rows from physics states ``[n, nstate]`` (array slicing, no loops)."""
        n = state.shape[0]
        out = self._obs_buf[:n]
        nq_obs = self.nq - self.spec.qpos_start
        out[:, :nq_obs] = state[:, 1 + self.spec.qpos_start:1 + self.nq]
        qvel = state[:, 1 + self.nq:]
        if self.spec.qvel_clip is not None:
            np.clip(qvel, -self.spec.qvel_clip, self.spec.qvel_clip, out=out[:, nq_obs:])
        else:
            out[:, nq_obs:] = qvel
        return out

    def _simulate(self, index, action):
        if index is None:
            n, models, start = self.batch_size, self._models, self._state
        else:
            n, models, start = len(index), [self._models[i] for i in index], self._state[index]
        if self.family.change_step is not None:  # ψ's dynamics from the change step on
            change_time = (self.family.change_step * self.spec.frame_skip
                           * self.model.opt.timestep)
            changed = start[:, 0] >= change_time - 0.5 * self.model.opt.timestep
            models = [m if c else self.model for m, c in zip(models, changed)]
        ctrl = self._ctrl[:n]
        ctrl[:] = action[:, None, :]  # the control is held for frame_skip physics steps
        out = self._rollout_out[:n]
        # shapes are exact here, so the wrapper's per-call checks and tiling are skipped
        self._rollout.rollout(
            models, self._datas, start, ctrl, nstep=self.spec.frame_skip, state=out,
            sensordata=self._sensor_out[:n], skip_checks=True,
        )
        if index is None:
            self._state[:] = out[:, -1]
        else:
            self._state[index] = out[:, -1]
        return self._observe(out[:, -1])

    def set_physics_state(self, qpos, qvel) -> np.ndarray:
        """Put every environment in the given state (``qpos [T, N, nq]``, ``qvel [T, N, nv]``),
        mark all episodes running, and return the observations ``[T, N, obs_dim]``."""
        if self.tasks is None:
            raise RuntimeError("call set_tasks(tasks) before set_physics_state()")
        B = self.batch_size
        self._state[:, 0] = 0.0
        self._state[:, 1:1 + self.nq] = np.asarray(qpos, np.float64).reshape(B, self.nq)
        self._state[:, 1 + self.nq:] = np.asarray(qvel, np.float64).reshape(B, self.nv)
        self._obs[:] = self._observe(self._state).reshape(self._obs.shape)
        self.active[:] = True
        return self._obs.copy()

    def physics_state(self) -> np.ndarray:
        """Copy of the full physics states ``[T, N, nstate]`` (time, qpos, qvel)."""
        return self._state.reshape(self.num_tasks, self.num_episodes, -1).copy()


def random_policy_states(family, episodes: int, seed: int) -> np.ndarray:
    """Observations visited by a uniform random policy, ``[episodes * H, obs_dim]`` (float64).

    Used to compute Cheetah-Highdim's state normalizer; the reward is never evaluated here, so
    the family's own normalizer need not exist yet.
    """
    env = MujocoBatchEnv(family, 1, episodes)
    env.set_tasks(np.zeros((1, env.family.task_dim)))
    rng = np.random.default_rng(seed)
    env._reset_state(rng)
    states = []
    for _ in range(env.horizon):
        action = rng.uniform(env.action_low, env.action_high, size=(episodes, env.act_dim))
        states.append(env._simulate(None, action).astype(np.float64))
    return np.concatenate(states, axis=0)
