"""Model-predictive control on a learned dynamics model (GrBAL, MB-MPC): batched random
shooting and the cross-entropy method, and the MPC controller as a stateful sampler policy that
adapts its model online from its most recent transitions.

Planning (GrBAL's ``policies/mpc_controller.py``): at every control step, score C candidate
action sequences of ``horizon`` steps by the sum of the task's reward r_ψ(s, a, s') along the
model's predicted trajectory (discount 1), and execute the first action of the best one.

* random shooting: candidates uniform in the action box; one round.
* CEM: candidates from N(μ, σ²) per time step and action dimension, clipped to the box;
  μ starts at the centre of the box and σ at its half-width; after each round μ ← m·μ +
  (1 − m)·mean(elites), σ ← std(elites) (elites: the best ``elite_fraction``); the action
  executed is the first of the best candidate of the last round, as the official code does.

Batching: all B environments and all C candidates go through the model together, so a control
step costs ``iterations × horizon`` model calls whatever B and C are (each call one batched
matrix product per layer), plus ``inner_steps`` gradient steps for the online adaptation.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from ..errors import AdaptrlError
from ..nets.dynamics import DynamicsModel
from ..sampling.policy import Policy, PolicySnapshot, class_path, snapshot_tensors
from ..tasks import TaskFamily, get_family

PLANNERS = ("random", "cem")


@dataclass(frozen=True)
class PlannerOptions:
    """How the MPC planner searches (see the module docstring)."""

    method: str = "random"
    horizon: int = 10
    candidates: int = 500
    iterations: int = 5
    elite_fraction: float = 0.1
    mean_momentum: float = 0.1

    def __post_init__(self):
        if self.method not in PLANNERS:
            raise AdaptrlError(f"unknown planner '{self.method}'; known: {', '.join(PLANNERS)}")
        if min(self.horizon, self.candidates, self.iterations) < 1:
            raise AdaptrlError("planner horizon, candidates and iterations must be ≥ 1")
        if not 0 < self.elite_fraction <= 1 or not 0 <= self.mean_momentum < 1:
            raise AdaptrlError("planner elite_fraction must be in (0, 1] and mean_momentum in "
                               "[0, 1)")

    @property
    def rounds(self) -> int:
        """Sampling rounds per control step (random shooting: one)."""
        return 1 if self.method == "random" else self.iterations


# (obs [B, C, obs_dim], act [B, C, act_dim]) -> next_obs [B, C, obs_dim]
Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (obs, act, next_obs), each [B, C, d] -> rewards [B, C]
Reward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sequence_returns(predict: Predict, reward: Reward, obs: torch.Tensor,
                     sequences: torch.Tensor) -> torch.Tensor:
    """Σ_t r(s_t, a_t, ŝ_{t+1}) along the predicted trajectories of ``sequences [B, C, h, ad]``
    from ``obs [B, obs_dim]``: ``[B, C]`` (h model calls, each for all B·C candidates). A
    candidate whose prediction is not finite scores −inf."""
    B, C, h, _ = sequences.shape
    state = obs[:, None, :].expand(B, C, obs.shape[-1])
    total = torch.zeros(B, C, dtype=obs.dtype)
    for t in range(h):
        action = sequences[:, :, t]
        next_state = predict(state, action)
        total = total + reward(state, action, next_state).to(obs.dtype)
        state = next_state
    return torch.nan_to_num(total, nan=-math.inf)


@torch.no_grad()
def plan(predict: Predict, reward: Reward, obs: torch.Tensor, low: torch.Tensor,
         high: torch.Tensor, generator: torch.Generator | None,
         options: PlannerOptions) -> torch.Tensor:
    """The first action ``[B, act_dim]`` of the best action sequence found for each of the B
    states ``obs [B, obs_dim]``, within the box ``[low, high]`` (``[act_dim]`` each)."""
    B, ad = obs.shape[0], low.shape[0]
    C, h = options.candidates, options.horizon
    if options.method == "random":
        u = torch.rand(B, C, h, ad, generator=generator, dtype=obs.dtype)
        sequences = low + u * (high - low)
        returns = sequence_returns(predict, reward, obs, sequences)
        return sequences[torch.arange(B), returns.argmax(1), 0]
    mean = ((low + high) / 2).expand(B, h, ad).clone()
    std = ((high - low) / 2).expand(B, h, ad).clone()
    elites = max(1, int(math.ceil(options.elite_fraction * C)))
    m = options.mean_momentum
    for _ in range(options.iterations):
        noise = torch.randn(B, C, h, ad, generator=generator, dtype=obs.dtype)
        sequences = torch.maximum(torch.minimum(mean[:, None] + std[:, None] * noise, high), low)
        returns = sequence_returns(predict, reward, obs, sequences)
        top = returns.topk(elites, dim=1).indices  # [B, elites]
        chosen = sequences[torch.arange(B)[:, None], top]  # [B, elites, h, ad]
        mean = m * mean + (1 - m) * chosen.mean(1)
        std = chosen.std(1, unbiased=False)
    return sequences[torch.arange(B), returns.argmax(1), 0]


class MPCPolicy(Policy):
    """MPC on a learned model for ``[T, N]`` environments of the tasks ``tasks [T, k]``, with
    GrBAL's online adaptation (Alg. 2) when ``inner_steps`` > 0 and ``inner_lr`` > 0.

    State (per environment): the window of its last ``window`` (M) transitions (s, a, s'), with
    a mask of the filled slots, its previous observation, and the model weights θ′ adapted at
    the last adaptation. Every ``adapt_every`` control steps the model is adapted **from the
    meta-learned θ** (not from the previous θ′, as the official sampler does) by ``inner_steps``
    SGD steps of size ``inner_lr`` (one float, or one per weight tensor by name as GrBAL's
    meta-learned step sizes) on the window, which holds past transitions only: the
    transition that led to the current observation is the newest. A transition across an
    episode boundary of a trial is not added (the window itself is kept: same task). An
    environment whose window holds fewer than ``min_window`` transitions plans with θ itself
    (GrBAL meta-trains its update on full windows of M; ``min_window = window`` keeps the
    online update to what it was trained for).
    """

    def __init__(self, model: DynamicsModel, family: TaskFamily | str, tasks, low, high,
                 planner: PlannerOptions, window: int = 16, inner_lr: float | dict = 0.0,
                 inner_steps: int = 0, adapt_every: int = 1, min_window: int = 1):
        self.model = model
        self.family = get_family(family)
        self.tasks = torch.as_tensor(tasks, dtype=torch.float32).reshape(-1, self.family.task_dim)
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)
        self.planner = planner
        self.window = int(window)
        self.inner_lr = {k: float(v) for k, v in inner_lr.items()} \
            if isinstance(inner_lr, dict) else float(inner_lr)
        self.inner_steps, self.adapt_every = int(inner_steps), int(adapt_every)
        self.min_window = int(min_window)
        if self.window < 1 or self.adapt_every < 1 or self.inner_steps < 0:
            raise AdaptrlError("MPC policy needs window ≥ 1, adapt_every ≥ 1, inner_steps ≥ 0")
        if not 1 <= self.min_window <= self.window:
            raise AdaptrlError(f"MPC policy needs 1 ≤ min_window ≤ window = {self.window}, "
                               f"got {self.min_window}")
        self.step_ms: list[float] = []
        """Wall time of each `step` call in this process (adaptation and planning for the whole
        batch of environments), in ms; a policy rebuilt from a snapshot starts empty."""

    parallel_step = True  # N × candidates model passes per step: worth every torch thread

    @property
    def adaptive(self) -> bool:
        rates = self.inner_lr.values() if isinstance(self.inner_lr, dict) else [self.inner_lr]
        return self.inner_steps > 0 and max(rates) > 0

    @property
    def uses_feedback(self):
        return self.adaptive

    def initial_state(self, num_envs):
        if not self.adaptive:
            return None
        T, N = num_envs
        M, od, ad = self.window, self.model.obs_dim, self.model.act_dim
        state = {"obs": torch.zeros(T, N, M, od), "act": torch.zeros(T, N, M, ad),
                 "next_obs": torch.zeros(T, N, M, od), "mask": torch.zeros(T, N, M),
                 "last_obs": torch.zeros(T, N, od), "clock": torch.zeros(T, N)}
        if self.adapt_every > 1:
            for name, w in self.model.weights_dict().items():
                state[f"w.{name}"] = w.detach()[0].expand(T, N, *w.shape[1:]).clone()
        return state

    def _reward(self, T: int, N: int):
        psi = self.tasks[:, None, None, :].expand(T, N, 1, -1).reshape(T * N, 1, -1)

        def reward(obs, act, next_obs):
            return self.family.reward(obs, act, next_obs, psi)

        return reward

    def _push(self, state, obs, prev_action, prev_done):
        """The window with the transition (last_obs, prev_action, obs) added where it is one."""
        new = (state["clock"] > 0) & (prev_done < 0.5)  # [T, N]

        def shift(buf, item):
            rolled = torch.cat([buf[:, :, 1:], item[:, :, None]], dim=2)
            return torch.where(new.reshape(*new.shape, *([1] * (buf.dim() - 2))), rolled, buf)

        out = dict(state)
        out["obs"] = shift(state["obs"], state["last_obs"])
        out["act"] = shift(state["act"], prev_action.to(torch.float32))
        out["next_obs"] = shift(state["next_obs"], obs)
        out["mask"] = shift(state["mask"], torch.ones_like(state["clock"]))
        return out

    def adapted_weights(self, state) -> dict:
        """θ′ for every environment from its window, leaves ``[T·N, ...]`` (θ itself where the
        window holds fewer than ``min_window`` transitions)."""
        T, N = state["clock"].shape
        M = self.window

        def flat(x):
            return x.reshape(T * N, M, -1)

        mask = state["mask"].reshape(T * N, M)
        adapted = self.model.adapt(self.model.weights_dict(), flat(state["obs"]),
                                   flat(state["act"]), flat(state["next_obs"]), mask,
                                   self.inner_lr, self.inner_steps)
        if self.min_window <= 1:
            return adapted
        short = mask.sum(-1) < self.min_window  # [T·N]
        theta = self.model.weights_dict()
        return {k: torch.where(short.reshape(-1, *([1] * (w.dim() - 1))),
                               theta[k].detach().expand_as(w), w) for k, w in adapted.items()}

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        start = time.perf_counter()
        actions, state = self._step(obs, state, prev_action, prev_done, generator)
        self.step_ms.append((time.perf_counter() - start) * 1000.0)
        return actions, state

    def _step(self, obs, state, prev_action, prev_done, generator):
        T, N, od = obs.shape
        B = T * N
        obs = obs.to(torch.float32)
        model = self.model
        if self.adaptive:
            state = self._push(state, obs, prev_action, prev_done)
            weights = self.adapted_weights(state)
            if self.adapt_every > 1:
                due = (state["clock"].reshape(B) % self.adapt_every) == 0
                weights = {k: torch.where(due.reshape(B, *([1] * (w.dim() - 1))), w,
                                          state[f"w.{k}"].reshape(w.shape))
                           for k, w in weights.items()}
                for k, w in weights.items():
                    state[f"w.{k}"] = w.reshape(T, N, *w.shape[1:])

            def predict(o, a):
                return model.predict_with(weights, o, a)
        else:
            shared = {k: v.detach() for k, v in model.weights_dict().items()}

            def predict(o, a):
                C = o.shape[1]
                return model.predict_with(shared, o.reshape(1, B * C, od),
                                          a.reshape(1, B * C, -1)).reshape(B, C, od)

        with torch.no_grad():
            actions = plan(predict, self._reward(T, N), obs.reshape(B, od), self.low,
                           self.high, generator, self.planner).reshape(T, N, -1)
        if self.adaptive:
            state["last_obs"] = obs
            state["clock"] = state["clock"] + 1
        return actions, state

    # ── snapshots ──
    def snapshot(self):
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(tasks=self.tasks, low=self.low, high=self.high)
        spec = {"family": self.family.name, "model": self.model.config(),
                "planner": asdict(self.planner), "window": self.window,
                "inner_lr": self.inner_lr, "inner_steps": self.inner_steps,
                "adapt_every": self.adapt_every, "min_window": self.min_window}
        return PolicySnapshot(class_path(type(self)), spec, snapshot_tensors(tensors))

    @classmethod
    def from_snapshot(cls, snapshot):
        spec, t = snapshot.spec, snapshot.tensors
        config = dict(spec["model"])
        model = DynamicsModel(config.pop("obs_dim"), config.pop("act_dim"), **config)
        model.load_state_dict({k[len("model."):]: v for k, v in t.items()
                               if k.startswith("model.")})
        return cls(model, spec["family"], t["tasks"], t["low"], t["high"],
                   PlannerOptions(**spec["planner"]), spec["window"], spec["inner_lr"],
                   spec["inner_steps"], spec["adapt_every"], spec.get("min_window", 1))
