"""GrBAL (Nagabandi, Clavera et al. 2019, *Learning to Adapt in Dynamic, Real-World Environments
through Meta-Reinforcement Learning*) and its model-based baselines MB-MPC and MB-MPC + online
fine-tuning ("MB+DE" in the paper).

The task is the local dynamics. A dynamics model p̂_θ(s'|s, a) (an MLP on normalised inputs
predicting the normalised Δs, `adaptrl.nets.dynamics`) is meta-trained so that one SGD step on
the last M transitions adapts it to the dynamics at hand (paper §4, Alg. 1):

    min_θ  E_{τ(t−M, t+K) ~ D} [ L(τ(t, t+K), θ′) ],   θ′ = u(τ(t−M, t−1), θ)
                                                         = θ − α ∇_θ L(τ(t−M, t−1), θ)

with L the mean squared error on the normalised Δs (a fixed-variance Gaussian's negative
log-likelihood). Segments of 2·M (M = K) consecutive real steps of one trajectory play the role
of tasks. The outer gradient flows through the inner step (second order, as the official
``_adapt_sym``); ``first_order`` treats the inner gradient as a constant.

Alg. 1, one iteration:
    1. collect ``meta_batch × fast_batch`` episodes on training tasks with the MPC controller,
       which adapts online (the first iteration: uniform random actions);
    2. append them to D (data aggregation; D is never cleared);
    3. refit the normalisers on D and take ``model_steps`` Adam steps on batches of
       ``model_batch`` segments drawn from D.

Alg. 2 (the controller, `adaptrl.optim.mpc.MPCPolicy`): at every control step, adapt θ → θ′ on
the last M transitions of this environment (restarting from θ every time), plan with random
shooting or CEM on the adapted model with the task's reward r_ψ, execute the first action.

Baselines (same model, planner and data loop): ``mb-mpc`` fits θ to all data by plain
regression and never adapts; ``mb-mpc-finetune`` trains as ``mb-mpc`` and fine-tunes online at
test time by SGD on the last M transitions (dynamic evaluation), without meta-training.

Budgets at meta-test: n is the number of inner SGD steps the controller takes online at every
control step (0: the model as trained, no adaptation; GrBAL's Alg. 2 is n = ``inner_steps``).
No sample is spent before the evaluated episodes: the adaptation uses the episode's own past.

Simplifications, stated: a fixed number of model steps per iteration instead of the official
early stopping on 10 % held-out trajectories; the inner step size is fixed, as in the released
code, unless ``learn_inner_lr`` meta-learns it as the paper allows (ψ of u_ψ: one step size per
weight tensor, log-parameterised, trained by the outer Adam); each environment of the batch
adapts its own copy of the model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from ..envs import action_bounds
from ..errors import AdaptrlError
from ..nets.dynamics import DynamicsModel, load_model_training_state, model_training_state
from ..optim.mpc import MPCPolicy, PlannerOptions
from ..options import Activation
from ..resources import episode_bytes, mlp_parameters, transition_bytes
from ..sampling import Episodes, UniformPolicy
from .base import Adapted, BaseConfig, MetaAlgorithm, option, sorted_budgets

Planner = Literal["random", "cem"]


@dataclass
class GrBALConfig(BaseConfig):
    """GrBAL / MB-MPC settings (the official ``run_grbal.py`` defaults where sizes allow)."""

    unused_fields: ClassVar[dict[str, str]] = {
        "gamma": "MPC sums undiscounted model rewards over the planning horizon",
        "gae_lambda": "no policy gradient: the policy is the MPC planner"}

    iterations: int = option(50, "data-collection iterations (Alg. 1)")
    meta_batch: int = option(5, "training tasks (dynamics) drawn per iteration")
    fast_batch: int = option(1, "episodes collected per task per iteration")
    hidden_sizes: list = option([512, 512, 512], "dynamics model hidden layer widths")
    activation: Activation = option("relu", "dynamics model activation: relu, tanh or elu")
    model_lr: float = option(1e-3, "Adam learning rate of the (meta-)model", gt=0, le=1)
    model_steps: int = option(100, "model (meta-)gradient steps per iteration", ge=0,
                              le=10**7)
    model_batch: int = option(10, "segments of window + future steps per model step (the "
                                  "meta-batch of windows)", ge=1, le=10**6)
    model_clamp_margin: float = option(0.5, "predictions are clamped to the observed state "
                                            "range widened by this fraction of its width",
                                       ge=0, le=1e3)
    window: int = option(16, "M: past transitions the model adapts on", ge=1, le=10**5)
    future: int = option(16, "K: following transitions the adapted model is scored on",
                         ge=1, le=10**5)
    inner_lr: float = option(0.01, "α: inner SGD step size (online fine-tuning's step size "
                                   "for mb-mpc-finetune)", gt=0, le=1e3)
    inner_steps: int = option(1, "inner SGD steps (GrBAL: 1)", ge=1, le=100)
    first_order: bool = option(False, "treat the inner gradient as a constant (first-order "
                                      "MAML) instead of differentiating through it")
    learn_inner_lr: bool = option(False, "meta-learn the inner step size (the paper's u_ψ "
                                         "allows it; the released code keeps α fixed): one "
                                         "step size per weight tensor, starting at inner_lr, "
                                         "trained with the model by the outer Adam")
    adapt_every: int = option(1, "adapt the model online every k control steps", ge=1,
                              le=10**6)
    min_window: int = option(1, "adapt online only once the window holds this many "
                                "transitions (at most window); before, plan with the model "
                                "as trained. GrBAL meta-trains its update on full windows: "
                                "window keeps the online update to what it was trained for",
                             ge=1, le=10**5)
    planner: Planner = option("random", "MPC search: random (shooting) or cem")
    plan_horizon: int = option(10, "MPC planning horizon h", ge=1, le=1000)
    candidates: int = option(500, "candidate action sequences per control step", ge=1,
                             le=10**6)
    cem_iterations: int = option(5, "CEM rounds per control step", ge=1, le=100)
    elite_fraction: float = option(0.1, "CEM: fraction of candidates kept as elites", gt=0,
                                   le=1)

    def validate(self) -> None:
        super().validate()
        horizon = self.horizon or None
        if self.min_window > self.window:
            raise ValueError(f"min_window = {self.min_window} is larger than window = "
                             f"{self.window}: the window never holds that many transitions")
        if horizon is not None and self.window + self.future > horizon:
            raise ValueError(f"window + future = {self.window + self.future} steps do not fit "
                             f"in an episode of horizon {horizon}")

    def planner_options(self) -> PlannerOptions:
        return PlannerOptions(self.planner, self.plan_horizon, self.candidates,
                              self.cem_iterations, self.elite_fraction)


@dataclass
class MBMPCConfig(GrBALConfig):
    unused_fields: ClassVar[dict[str, str]] = {
        **GrBALConfig.unused_fields,
        "inner_lr": "MB-MPC never adapts its model", "inner_steps": "MB-MPC never adapts",
        "first_order": "MB-MPC is not meta-trained", "adapt_every": "MB-MPC never adapts",
        "min_window": "MB-MPC never adapts",
        "learn_inner_lr": "MB-MPC is not meta-trained"}


@dataclass
class FinetuneConfig(GrBALConfig):
    unused_fields: ClassVar[dict[str, str]] = {
        **GrBALConfig.unused_fields,
        "inner_steps": "online fine-tuning takes as many SGD steps as the budget says",
        "first_order": "the model is not meta-trained",
        "learn_inner_lr": "the model is not meta-trained: online fine-tuning steps by inner_lr"}


class TrajectoryData:
    """The aggregated dataset D: whole episodes ``[E, H, d]`` with their masks ``[E, H]``, so
    that training segments never cross a trajectory boundary. Plain tensors; not a trainable."""

    def __init__(self, obs_dim: int, act_dim: int, horizon: int):
        self.obs = torch.zeros(0, horizon, obs_dim)
        self.act = torch.zeros(0, horizon, act_dim)
        self.next_obs = torch.zeros(0, horizon, obs_dim)
        self.mask = torch.zeros(0, horizon)

    @property
    def episodes(self) -> int:
        return self.obs.shape[0]

    def add(self, episodes: Episodes, low: torch.Tensor, high: torch.Tensor) -> None:
        """Append ``[T, N, H]`` episodes (actions clipped as the environment applied them)."""
        T, N, H = episodes.mask.shape

        def rows(x):
            return x.reshape(T * N, H, *x.shape[3:]).float()

        actions = torch.maximum(torch.minimum(episodes.actions, high), low)
        self.obs = torch.cat([self.obs, rows(episodes.obs)])
        self.act = torch.cat([self.act, rows(actions)])
        self.next_obs = torch.cat([self.next_obs, rows(episodes.next_obs)])
        self.mask = torch.cat([self.mask, rows(episodes.mask)])

    def transitions(self):
        """All real transitions ``[n, d]`` (for the normalisers)."""
        keep = self.mask > 0
        return self.obs[keep], self.act[keep], self.next_obs[keep]

    def segment_starts(self, length: int) -> torch.Tensor:
        """``[V, 2]`` (episode, first step) of every segment of ``length`` real steps."""
        if length > self.mask.shape[1]:
            return torch.zeros(0, 2, dtype=torch.long)
        return (self.mask[:, length - 1:] > 0).nonzero()

    def segments(self, starts: torch.Tensor, length: int):
        """``obs, act, next_obs`` of the segments that begin at ``starts [W, 2]``:
        ``[W, length, d]`` each."""
        steps = starts[:, 1:] + torch.arange(length)  # [W, length]
        rows = starts[:, :1]
        return self.obs[rows, steps], self.act[rows, steps], self.next_obs[rows, steps]

    def state_dict(self) -> dict:
        return {"obs": self.obs, "act": self.act, "next_obs": self.next_obs, "mask": self.mask}

    def load_state_dict(self, state: dict) -> None:
        self.obs, self.act = state["obs"].clone(), state["act"].clone()
        self.next_obs, self.mask = state["next_obs"].clone(), state["mask"].clone()


# ─── the methods ───────────────────────────────────────────────────────────────────────────
class GrBAL(MetaAlgorithm):
    """Gradient-based adaptive learner: MAML on the dynamics model, MPC on the adapted one."""

    name = "grbal"
    Config = GrBALConfig
    budget_unit = "online adaptation steps"
    phases = ("model",)
    meta_trained = True  # the model's loss is the post-adaptation loss (MAML)
    online_adaptation = True  # the controller adapts while collecting training data
    needs_reward_function = True  # the planner scores candidate actions with r_ψ

    def __init__(self, family, config: GrBALConfig, sampler=None):
        super().__init__(family, config, sampler)
        cfg = config
        self.check_segments(cfg, family)
        self.model = DynamicsModel(family.obs_dim, family.act_dim, tuple(cfg.hidden_sizes),
                                   cfg.activation, 1, cfg.model_clamp_margin)
        # ψ, GrBAL's meta-learned step sizes: log α per weight tensor (empty: α = inner_lr)
        self.log_inner_lr = torch.nn.ParameterDict()
        if cfg.learn_inner_lr and self.meta_trained:
            for name in self.model.weights_dict():
                self.log_inner_lr[name] = torch.nn.Parameter(
                    torch.tensor(math.log(cfg.inner_lr)))
        self.model_opt = torch.optim.Adam([*self.model.parameters(),
                                           *self.log_inner_lr.values()], lr=cfg.model_lr)
        self.data = TrajectoryData(family.obs_dim, family.act_dim, self.horizon)
        self.real_samples = 0
        low, high = action_bounds(family)
        self.action_low, self.action_high = torch.from_numpy(low.copy()), \
            torch.from_numpy(high.copy())

    @staticmethod
    def check_segments(config, family) -> None:
        """A training segment (window + future steps) must fit in one episode."""
        H = config.horizon or family.horizon
        if H < config.window + config.future:
            raise AdaptrlError(f"window + future = {config.window + config.future} steps do "
                               f"not fit in an episode of '{family.name}' (horizon {H}): "
                               f"lower window or future")

    @classmethod
    def memory_estimate(cls, config, family) -> dict[str, int]:
        """Also refuses segments longer than an episode (checked before a run folder exists)."""
        cls.check_segments(config, family)
        H = config.horizon or family.horizon
        od, ad = family.obs_dim, family.act_dim
        n = config.iterations * config.meta_batch * config.fast_batch * H
        weights = mlp_parameters(od + ad, config.hidden_sizes, od)
        envs = config.meta_batch * config.fast_batch
        return {
            f"the aggregated data (iterations × meta_batch × fast_batch × horizon = {n} steps)":
                transition_bytes(n, od, ad),
            f"a collection of meta_batch × fast_batch × horizon = "
            f"{config.meta_batch}×{config.fast_batch}×{H} steps":
                episode_bytes(config.meta_batch, config.fast_batch, H, od, ad),
            f"the planner's candidates ({envs} environments × candidates {config.candidates} "
            f"× plan_horizon {config.plan_horizon})":
                4 * envs * config.candidates * (config.plan_horizon * ad + 2 * od
                                                + 2 * max(config.hidden_sizes)),
            f"the model per environment ({list(config.hidden_sizes)})": 4 * 3 * weights * envs}

    @property
    def default_budgets(self) -> tuple[int, ...]:
        return (0, self.config.inner_steps) if self.online_adaptation else (0,)

    def step_sizes(self, detach: bool = False) -> float | dict:
        """α of the inner step: ``inner_lr``, or with ``learn_inner_lr`` the meta-learned step
        size per weight tensor (scalar tensors in the graph; floats with ``detach``)."""
        if not len(self.log_inner_lr):
            return self.config.inner_lr
        if detach:
            return {k: float(v.detach().exp()) for k, v in self.log_inner_lr.items()}
        return {k: v.exp() for k, v in self.log_inner_lr.items()}

    # ── the controller ──
    def controller(self, tasks: np.ndarray, inner_steps: int, model: DynamicsModel | None = None
                   ) -> MPCPolicy:
        """The MPC policy for ``tasks [T, k]`` taking ``inner_steps`` online SGD steps on the
        last ``window`` transitions at every ``adapt_every``-th control step (0: none)."""
        cfg = self.config
        return MPCPolicy(model if model is not None else self.model, self.family, tasks,
                         self.action_low, self.action_high, cfg.planner_options(), cfg.window,
                         self.step_sizes(detach=True), inner_steps, cfg.adapt_every,
                         cfg.min_window)

    # ── the model's loss on segments ──
    def segment_loss(self, obs, act, next_obs) -> torch.Tensor:
        """The training loss on segments ``[W, M + K, d]``: GrBAL's post-adaptation loss on the
        last K steps after the inner step on the first M; MB-MPC's plain loss on all steps."""
        cfg = self.config
        theta = self.model.weights_dict()
        if not self.meta_trained:
            return self.model.loss_with(theta, obs, act, next_obs).mean()
        M = cfg.window
        adapted = self.model.adapt(theta, obs[:, :M], act[:, :M], next_obs[:, :M], None,
                                   self.step_sizes(), cfg.inner_steps, differentiable=True,
                                   first_order=cfg.first_order)  # θ′ = u(τ(t−M, t−1), θ)
        return self.model.loss_with(adapted, obs[:, M:], act[:, M:], next_obs[:, M:]).mean()

    def fit_model(self, rng: np.random.Generator) -> dict[str, float]:
        """Alg. 1 line 3: refit the normalisers on D, then ``model_steps`` Adam steps."""
        cfg = self.config
        length = cfg.window + cfg.future
        self.model.fit_normalizers(*self.data.transitions())
        starts = self.data.segment_starts(length)
        losses = []
        if len(starts) == 0:
            return {"loss": math.nan, "loss_unadapted": math.nan}
        for _ in range(cfg.model_steps):
            pick = starts[torch.from_numpy(rng.integers(0, len(starts), cfg.model_batch))]
            loss = self.segment_loss(*self.data.segments(pick, length))
            self.model_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.model_opt.step()
            losses.append(float(loss.detach()))
        # the model as it is now on one more batch: with and without adaptation
        pick = starts[torch.from_numpy(rng.integers(0, len(starts), cfg.model_batch))]
        obs, act, next_obs = self.data.segments(pick, length)
        M = cfg.window
        with torch.no_grad():
            unadapted = self.model.loss_with(self.model.weights_dict(), obs[:, M:], act[:, M:],
                                             next_obs[:, M:]).mean()
        adapted = self.model.adapt(self.model.weights_dict(), obs[:, :M], act[:, :M],
                                   next_obs[:, :M], None, self.step_sizes(detach=True),
                                   cfg.inner_steps)
        with torch.no_grad():
            after = self.model.loss_with(adapted, obs[:, M:], act[:, M:], next_obs[:, M:]).mean()
        return {"loss": losses[-1] if losses else math.nan, "loss_unadapted": float(unadapted),
                "loss_adapted": float(after)}

    # ── Alg. 1 ──
    def train_step(self, rng):
        cfg = self.config
        tasks = self.family.sample(cfg.meta_batch, rng)
        if self.data.episodes == 0:  # the first iteration acts uniformly at random
            policy = UniformPolicy(self.action_low, self.action_high)
        else:
            policy = self.controller(tasks, cfg.inner_steps if self.online_adaptation
                                     and self.meta_trained else 0)
        episodes = self.rollout(policy, tasks, rng)
        self.data.add(episodes, self.action_low, self.action_high)
        self.real_samples += episodes.num_steps
        with self.phase("model"):
            stats = self.fit_model(rng)
        return {"return": float(episodes.episode_returns().mean()),
                "model/loss": stats["loss"],
                "model/future_loss_unadapted": stats["loss_unadapted"],
                "model/future_loss_adapted": stats.get("loss_adapted", math.nan),
                "model/inner_lr": self.mean_step_size(),
                "samples/real": float(self.real_samples),
                "data/episodes": float(self.data.episodes)}

    def mean_step_size(self) -> float:
        """The inner step size, or the geometric mean of the meta-learned ones."""
        if not len(self.log_inner_lr):
            return float(self.config.inner_lr)
        return float(torch.stack(list(self.log_inner_lr.values())).detach().mean().exp())

    # ── Alg. 2: meta-test ──
    def adapt(self, tasks, budgets, rng):
        """One MPC controller per budget n: n online SGD steps per control step (0: none).
        Nothing is sampled beforehand, so ``samples`` are 0 and ``seconds`` ≈ 0."""
        tasks = self.family.check_tasks(tasks)
        requested, _ = sorted_budgets(budgets)
        model = copy.deepcopy(self.model)  # later training leaves handed-out policies alone
        zeros = np.zeros(len(tasks))
        return [Adapted(self.controller(tasks, n if self.online_adaptation else 0, model),
                        zeros.copy(), 0.0) for n in requested]

    def model_report(self, policies, batches: list[Episodes], max_windows: int = 4096
                     ) -> list[dict]:
        """What eval.json reports per budget beside the returns (``model``): the model's
        one-step prediction error (MSE of the normalised Δs, `DynamicsModel.loss_with`) on the
        evaluation episodes' transitions, before adaptation (θ) and after it (θ′ from the
        ``window`` transitions before each one, with the budget's inner steps, as the controller
        adapts), over up to ``max_windows`` transitions with a full window drawn with a fixed
        seed; and the controller's time per control step for the whole batch (median and p95 ms,
        None when it ran in another process)."""
        M = self.config.window
        model = policies[0].model
        report = []
        for policy, batch in zip(policies, batches):
            steps = policy.inner_steps if policy.adaptive else 0
            plain = batch.per_episode()
            obs, act, nxt, mask = plain.obs, plain.actions, plain.next_obs, plain.mask
            T, N, L, od = obs.shape
            windows = mask.unfold(2, M + 1, 1).sum(-1) == M + 1  # [T, N, L − M]: all real
            where = windows.nonzero()
            row = {"n_windows": int(len(where)), "error_before": None, "error_after": None}
            if len(where):
                pick = where[torch.randperm(len(where), generator=torch.Generator()
                                            .manual_seed(0))[:max_windows]]
                index = (pick[:, 0:1], pick[:, 1:2],
                         pick[:, 2:3] + torch.arange(M + 1))  # [W, M + 1] positions
                o, a, n = obs[index], act[index].to(torch.float32), nxt[index]
                theta = model.weights_dict()
                with torch.no_grad():
                    before = model.loss_with(theta, o[:, M:], a[:, M:], n[:, M:]).mean()
                after = before
                if steps > 0:
                    adapted = model.adapt(theta, o[:, :M], a[:, :M], n[:, :M], None,
                                          policy.inner_lr, steps)
                    with torch.no_grad():
                        after = model.loss_with(adapted, o[:, M:], a[:, M:], n[:, M:]).mean()
                row.update(error_before=float(before), error_after=float(after))
            times = np.asarray(getattr(policy, "step_ms", []), dtype=np.float64)
            row.update(plan_ms_median=float(np.median(times)) if len(times) else None,
                       plan_ms_p95=float(np.percentile(times, 95)) if len(times) else None,
                       envs=int(T * N))
            report.append(row)
        return report

    # ── checkpoints ──
    def state_dict(self) -> dict:
        return {**model_training_state(self.model, self.model_opt, self.data),
                "log_inner_lr": {k: v.detach().clone() for k, v in self.log_inner_lr.items()},
                "real_samples": self.real_samples, "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("log_inner_lr", {})
        if set(saved) != set(self.log_inner_lr):
            raise ValueError("checkpoint's meta-learned step sizes (learn_inner_lr) do not match "
                             "this config's")
        load_model_training_state(self.model, self.model_opt, self.data, state)
        with torch.no_grad():
            for k, v in saved.items():
                self.log_inner_lr[k].copy_(v)
        self.real_samples = int(state["real_samples"])
        self.iteration = int(state["iteration"])


class MBMPC(GrBAL):
    """The same model, planner and data loop, fitted by plain regression, never adapted."""

    name = "mb-mpc"
    Config = MBMPCConfig
    meta_trained = False
    online_adaptation = False


class MBMPCFinetune(GrBAL):
    """MB-MPC's model, fine-tuned online by SGD on the last M transitions at test time."""

    name = "mb-mpc-finetune"
    Config = FinetuneConfig
    meta_trained = False
    online_adaptation = True

    @property
    def default_budgets(self) -> tuple[int, ...]:
        return (0, 1)
