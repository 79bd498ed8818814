"""Model-based adversarial meta-RL (AdMRL; Lin et al. 2020) and its distributional variants.

The shared structure is a learned dynamics model T̂_φ. Adapting to a task ψ means training a
policy on the model for r_ψ ("zero-shot", no real samples), then optionally running SLBO: collect
real samples, refit the model, train on the model again. Meta-training (Algorithm 1) visits one
task per iteration:

    θ̂  ← VirtualTraining(θ_random, φ, ψ, D, n_zeroshot)          (skipped for the first task)
    repeat n_slbo times:  D ← D ∪ real samples of π_θ;  θ* ← VirtualTraining(θ, φ, ψ, D, n_inner)
    ψ ← Π_Ψ(ψ + α ∂L/∂ψ)                                          (AdMRL; a random ψ after task 1)

where VirtualTraining is Algorithm 2 (n times: n_model model steps on D, then n_policy TRPO
steps on model rollouts with reward r_ψ) and L(φ, ψ) = max_θ η*(θ, ψ) − η*(θ̂(ψ), ψ) is the
sub-optimality gap of Eq. (1). Its task gradient, Eq. (2),

    ∂L/∂ψ = ∂η*/∂ψ|θ* − ( ∂θ̂ᵀ/∂ψ · ∂η*/∂θ|θ̂ + ∂η*/∂ψ|θ̂ ),   ∂θ̂/∂ψᵀ = −A⁻¹B   (Eq. 5)

with A = ∂²η̂/∂θ∂θᵀ (Eq. 7, REINFORCE form, products by the parameter-copy trick of Appendix B)
and B = ∂²η̂/∂θ∂ψᵀ (Eq. 6). Because A is symmetric, ∂θ̂ᵀ/∂ψ · g = −Bᵀ(A⁻¹g): one linear solve
A y = g per step whatever the dimension of ψ (the paper solves Eq. 5 once per dimension; the
result is the same). A sampled A is indefinite, so y comes from CG on the normal equations
(AᵀA + λI) y = Aᵀg (`conjugate_gradient_normal`, A never formed), as in §4.3.

``mb-unif`` and ``mb-gauss`` run the same loop with the same task and sample counts, but draw
each task uniformly from Ψ, or from N(centre of Ψ, task_std²·I) clipped to Ψ.

Eq. (2) as printed in the paper lost its chain-rule product; the form above is Algorithm 1,
line 11. Eq. (7) is used at the trajectory level (log π_θ(τ) = Σ_t log π_θ(a_t|s_t), R_ψ(τ) the
discounted return) with the batch-mean return subtracted, which keeps it unbiased because
E[∇log π ∇log πᵀ + ∇²log π] = 0. A and B are estimated on model rollouts of π_θ̂ under the model
as it is after the task's SLBO phase; Eqs. (3)–(4) on real rollouts.

Real-sample accounting: every SLBO collection uses ``fast_batch`` episodes of ``horizon`` steps.
The task gradient reuses the first collection of a task (π_θ̂) and, unless ``task_grad_fresh``,
the last one (π_θ* before its final virtual training) — no extra samples, as §4.3 suggests.
With n_slbo = 1 the only collection is π_θ̂'s, so π_θ* is rolled out afresh (and counted).

Simplifications, stated: the dynamics loss is SLBO's one-step version (mean squared error on the
normalized Δs, no multi-step loss); when several tasks are adapted at once (meta-test), their
per-task policies take TRPO steps jointly (one trust region on the mean KL over tasks; the Fisher
matrix is block-diagonal, so each task's direction is its own natural gradient); at meta-test
the zero-shot phase trains on the meta-trained model without refitting it, and each task's SLBO
phase refits its own copy of the model on D plus that task's samples.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..envs import action_bounds
from ..errors import NonFiniteError
from ..nets import GaussianMLPPolicy, Params
from ..nets.dynamics import DynamicsModel, load_model_training_state, model_training_state
from ..optim import (
    TRPOOptions,
    estimate_advantages,
    flat_grad,
    implicit_task_gradient,
    mixed_derivative_vjp,
    per_task_trpo_step,
    policy_hessian_product,
    reward_gradient,
)
from ..options import Activation
from ..resources import episode_bytes, mlp_parameters, transition_bytes
from ..sampling import Episodes, ModelSampler, ReplayBuffer
from .base import Adapted, BaseConfig, MetaAlgorithm, option


@dataclass
class AdMRLConfig(TRPOOptions, BaseConfig):
    """AdMRL / MB-Unif / MB-Gauss settings (names of Appendix C where it has one); the TRPO
    steps on model rollouts take `TRPOOptions`' fields (listed after `BaseConfig`'s)."""

    iterations: int = option(10, "training tasks n_tasks (Algorithm 1 trains one task per "
                                 "iteration)")
    meta_batch: int = option(1, "tasks per iteration; Algorithm 1 trains one task at a time, "
                                "so it must be 1")
    fast_batch: int = option(10, "real episodes per SLBO collection (n_collect = fast_batch × "
                                 "horizon); an adaptation budget of n samples runs "
                                 "n // n_collect SLBO iterations")
    hidden_sizes: list = option([64, 64], "policy hidden layer widths")
    activation: Activation = option("tanh", "policy activation: relu, tanh or elu")
    init_log_std: float = option(0.0, "initial log standard deviation of each new policy",
                                 ge=-10, le=3)
    # ── the dynamics model T̂_φ ──
    model_hidden_sizes: list = option([200, 200], "dynamics model hidden layer widths",
                                      item_ge=1, nonempty=True)
    model_activation: Activation = option("relu", "dynamics model activation: relu, tanh or elu")
    model_ensemble: int = option(1, "dynamics ensemble size (each rollout step is answered by "
                                    "a random member)", ge=1, le=1000)
    model_lr: float = option(1e-3, "Adam learning rate of the dynamics model", gt=0, le=1)
    model_batch: int = option(128, "minibatch size of each model step", ge=1, le=10**6)
    model_buffer: int = option(200_000, "real transitions kept in D (oldest dropped)",
                               ge=1, le=10**10)
    model_clamp_margin: float = option(0.5, "model predictions are clamped to the observed "
                                            "state range widened by this fraction of its width",
                                       ge=0, le=1e3)
    # ── Algorithm 1 and 2 schedules ──
    n_zeroshot: int = option(40, "virtual-training iterations of zero-shot adaptation",
                             ge=0, le=10**6)
    n_slbo: int = option(3, "SLBO iterations per training task (real collections)", ge=1, le=10**6)
    n_slbo_first: int = option(10, "SLBO iterations for the first training task", ge=1, le=10**6)
    n_inner: int = option(20, "virtual-training iterations after each real collection",
                          ge=1, le=10**6)
    n_model: int = option(100, "model steps per virtual-training iteration", ge=0, le=10**6)
    n_policy: int = option(20, "TRPO steps per virtual-training iteration", ge=1, le=10**6)
    virtual_episodes: int = option(50, "virtual episodes per task per TRPO step (n_trpo = "
                                       "virtual_episodes × virtual_horizon)", ge=1, le=10**6)
    virtual_horizon: int = option(0, "length of model rollouts; 0 means the episode horizon",
                                  ge=0, le=10**7)
    # ── TRPO on model rollouts (max_kl, cg_iters, ... come from TRPOOptions) ──
    normalize_advantages: bool = option(True, "centre and scale advantages per task for TRPO")
    # ── task search ──
    task_lr: float = option(2.0, "AdMRL: step size α of projected gradient ascent on ψ",
                            ge=0, le=1e6)
    task_steps: int = option(1, "AdMRL: ascent steps on ψ per training task (later steps "
                                "relabel the same real rollouts with the moved ψ and draw new "
                                "model rollouts)", ge=1, le=10**4)
    task_cg_iters: int = option(200, "AdMRL: CG iterations on the normal equations AᵀAy = Aᵀg",
                                ge=1, le=10**5)
    task_cg_damping: float = option(1e-4, "AdMRL: Tikhonov λ of the normal equations "
                                          "(AᵀA + λI)y = Aᵀg", ge=0, le=1e6)
    task_grad_per_step: bool = option(True, "AdMRL: measure the gap L per time step (the "
                                            "gradient divided by the horizon)")
    task_grad_fresh: bool = option(False, "AdMRL: roll π_θ* out afresh for ∂η*/∂ψ|θ* (costs "
                                          "fast_batch extra episodes per task) instead of "
                                          "reusing the last SLBO collection")
    task_std: float = option(1.0, "MB-Gauss: standard deviation of the task Gaussian around "
                                  "the centre of Ψ", gt=0, le=1e6)

    def validate(self) -> None:
        super().validate()
        if self.meta_batch != 1:
            raise ValueError(f"meta_batch must be 1 for model-based methods (one task per "
                             f"iteration, Algorithm 1), got {self.meta_batch}")


def project_to_box(psi: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Π_Ψ for a box Ψ = [low, high] (Euclidean projection: clip each coordinate)."""
    return np.minimum(np.maximum(np.asarray(psi, dtype=np.float64), low), high)


# ─── the method ────────────────────────────────────────────────────────────────────────────
class ModelBasedMeta(MetaAlgorithm):
    """Algorithm 1 with a task-selection rule chosen by the subclass (see module docstring)."""

    Config = AdMRLConfig
    needs_reward_function = True  # virtual training and the task gradient evaluate r_ψ
    task_search = "uniform"
    budget_unit = "real samples"
    phases = ("virtual", "task_grad")

    @classmethod
    def memory_estimate(cls, config, family) -> dict[str, int]:
        """The model's data buffer, a batch of virtual episodes, a real collection, and the
        dynamics ensemble."""
        od, ad = family.obs_dim, family.act_dim
        H = config.horizon or family.horizon
        V = config.virtual_horizon or H
        model = mlp_parameters(od + ad, config.model_hidden_sizes, od)
        return {
            f"the model's data (model_buffer = {config.model_buffer} transitions)":
                transition_bytes(config.model_buffer, od, ad),
            f"a virtual batch of virtual_episodes × virtual_horizon = "
            f"{config.virtual_episodes}×{V} steps":
                episode_bytes(config.meta_batch, config.virtual_episodes, V, od, ad),
            f"a real collection of fast_batch × horizon = {config.fast_batch}×{H} steps":
                episode_bytes(config.meta_batch, config.fast_batch, H, od, ad),
            f"the dynamics ensemble (model_ensemble × model_hidden_sizes = "
            f"{config.model_ensemble}×{list(config.model_hidden_sizes)})":
                4 * 4 * model * config.model_ensemble}

    @property
    def default_budgets(self) -> tuple[int, ...]:
        """Adaptation budgets are real environment steps per task, not gradient steps: zero-shot
        and one to three SLBO collections of ``fast_batch × horizon`` samples (the paper's
        setting gives n = 0, 2000, 4000, 6000)."""
        n = self.config.fast_batch * self.horizon
        return (0, n, 2 * n, 3 * n)

    def __init__(self, family, config: AdMRLConfig, sampler=None):
        super().__init__(family, config, sampler)
        cfg = config
        self.policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, tuple(cfg.hidden_sizes),
                                        cfg.activation, cfg.init_log_std)
        self.model = DynamicsModel(family.obs_dim, family.act_dim, tuple(cfg.model_hidden_sizes),
                                   cfg.model_activation, cfg.model_ensemble,
                                   cfg.model_clamp_margin)
        self.model_opt = torch.optim.Adam(self.model.parameters(), lr=cfg.model_lr)
        self.data = ReplayBuffer(1, cfg.model_buffer, family.obs_dim, family.act_dim)
        self.psi: np.ndarray | None = None  # the task of the next iteration [k]
        self.visited: list[list[float]] = []  # the task of each finished iteration
        self.real_samples = 0
        low, high = action_bounds(family)
        self.action_low, self.action_high = low.copy(), high.copy()

    # ── helpers: samplers, fresh policies, data ──
    @property
    def virtual_horizon(self) -> int:
        return self.config.virtual_horizon or self.horizon

    def model_sampler(self, model: DynamicsModel, data: ReplayBuffer) -> ModelSampler:
        """Rollouts on ``model`` from the real states in ``data`` (the sampler backend whose
        environment is the learned model)."""
        return ModelSampler(self.family, model.predict, self._arrays(data)[0], self.action_low,
                            self.action_high)

    def virtual_rollout(self, theta: Params, tasks: np.ndarray, rng, model, data) -> Episodes:
        """``virtual_episodes`` model rollouts of π_θ per task, ``[T, N, virtual_horizon]``."""
        return self.model_sampler(model, data).sample(
            self.policy.actor(theta), tasks, rng, self.config.virtual_episodes,
            horizon=self.virtual_horizon).check_finite("model rollouts")

    def init_policy(self, num_tasks: int, rng: np.random.Generator) -> Params:
        """Fresh per-task policy parameters ``[T, ...]`` (leaf tensors), drawn from ``rng`` with
        the policy's own scheme (`GaussianMLPPolicy.init_params`)."""
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        return self.policy.init_params(num_tasks, gen)

    def add_data(self, data: ReplayBuffer, episodes: Episodes) -> None:
        """Store real transitions (actions clipped as the environment applied them)."""
        T, N, H = episodes.mask.shape
        low, high = torch.from_numpy(self.action_low), torch.from_numpy(self.action_high)
        flat = Episodes(episodes.obs.reshape(1, T * N, H, -1),
                        torch.maximum(torch.minimum(episodes.actions, high), low).reshape(
                            1, T * N, H, -1),
                        episodes.rewards.reshape(1, T * N, H),
                        episodes.next_obs.reshape(1, T * N, H, -1),
                        episodes.mask.reshape(1, T * N, H),
                        episodes.terminated.reshape(1, T * N, H), episodes.tasks[:1])
        data.add_episodes(flat)

    @staticmethod
    def _arrays(data: ReplayBuffer):
        n = int(data.size[0])
        return (torch.from_numpy(data.obs[0, :n]), torch.from_numpy(data.action[0, :n]),
                torch.from_numpy(data.next_obs[0, :n]))

    def fit_model(self, model, optimizer, data, rng) -> dict[str, float]:
        """Algorithm 2 line 3: refit the normalizers, then n_model steps on D."""
        obs, act, next_obs = self._arrays(data)
        model.fit_normalizers(obs, act, next_obs)
        return model.fit(obs, act, next_obs, self.config.n_model, self.config.model_batch, rng,
                         optimizer)

    # ── advantages and TRPO on (virtual) episodes ──
    def advantages(self, episodes: Episodes, normalize: bool) -> torch.Tensor:
        """GAE with a per-task linear baseline, ``[T, N, H]`` (differentiable in the rewards)."""
        return estimate_advantages(episodes, self.config.gamma, self.config.gae_lambda, normalize)

    def trpo_update(self, theta: Params, episodes: Episodes) -> dict:
        """One TRPO step of the per-task parameters ``theta`` (leaves ``[T, ...]``) in place."""
        cfg = self.config
        adv = self.advantages(episodes, cfg.normalize_advantages).detach()
        return per_task_trpo_step(self.policy, theta, episodes, adv, **cfg.trpo_kwargs())

    def virtual_training(self, theta: Params, tasks: np.ndarray, n: int, rng, model, optimizer,
                         data, fit_model: bool) -> dict[str, float]:
        """Algorithm 2: n × (n_model model steps on D; n_policy TRPO steps on model rollouts).

        theta: per-task leaves ``[T, ...]`` updated in place; tasks ``[T, k]``.
        """
        with self.phase("virtual"):
            return self._virtual_training(theta, tasks, n, rng, model, optimizer, data,
                                          fit_model)

    def _virtual_training(self, theta, tasks, n, rng, model, optimizer, data, fit_model):
        cfg = self.config
        stats = {"model_loss": math.nan, "virtual_return": math.nan, "trpo_refused": 0.0,
                 "trpo_steps": 0.0}
        for _ in range(n):
            if fit_model and cfg.n_model > 0:
                stats["model_loss"] = self.fit_model(model, optimizer, data, rng)["loss_last"]
            for _ in range(cfg.n_policy):
                episodes = self.virtual_rollout(theta, tasks, rng, model, data)
                info = self.trpo_update(theta, episodes)
                stats["virtual_return"] = float(episodes.episode_returns().mean())
                stats["trpo_refused"] += info.get("refused") is not None
                stats["trpo_steps"] += 1
        return stats

    def collect(self, theta: Params, tasks: np.ndarray, rng, episodes: int | None = None
                ) -> Episodes:
        """Real episodes of π_θ (the policy's own Gaussian noise explores), ``[T, N, H]``."""
        return self.rollout(self.policy.actor({k: v.detach() for k, v in theta.items()}),
                            tasks, rng, episodes)

    # ── task selection ──
    def draw_task(self, rng: np.random.Generator) -> np.ndarray:
        """A task for MB-Unif (uniform on Ψ) or MB-Gauss (clipped Gaussian around the centre)."""
        low, high = self.family.low, self.family.high
        if self.task_search == "gauss":
            centre = (low + high) / 2
            return project_to_box(rng.normal(centre, self.config.task_std), low, high)
        return rng.uniform(low, high)

    def task_gradient(self, theta_hat: Params, hat_real: Episodes, star_real: Episodes,
                      psi: np.ndarray, rng) -> tuple[np.ndarray, dict]:
        """∂L/∂ψ of Eq. (2) for one task: ``psi [k]`` → ``([k], info)``."""
        cfg, policy, family = self.config, self.policy, self.family
        psi_t = torch.as_tensor(psi[None], dtype=torch.float64)  # [1, k]
        low, high = torch.from_numpy(self.action_low), torch.from_numpy(self.action_high)

        def clip(a):
            return torch.maximum(torch.minimum(a, high), low)

        # Eq. (3) at θ* and θ̂, from real rollouts
        star = reward_gradient(family.reward, star_real.obs, clip(star_real.actions),
                               star_real.next_obs, star_real.mask, psi_t, cfg.gamma)[0]
        hat = reward_gradient(family.reward, hat_real.obs, clip(hat_real.actions),
                              hat_real.next_obs, hat_real.mask, psi_t, cfg.gamma)[0]
        discount = cfg.gamma ** torch.arange(self.horizon, dtype=torch.float32)

        # Eq. (4): ∂η*/∂θ at θ̂ from the real rollouts of π_θ̂ (advantages not normalised),
        # their rewards relabelled with ψ (a later ascent step moves ψ; the states stay valid)
        with torch.no_grad():
            rewards = family.reward(hat_real.obs, clip(hat_real.actions), hat_real.next_obs,
                                    psi_t[:, None, None, :]).float() * hat_real.mask
        relabelled = Episodes(hat_real.obs, hat_real.actions, rewards, hat_real.next_obs,
                              hat_real.mask, hat_real.terminated, psi[None])
        real_adv = self.advantages(relabelled, normalize=False).detach()

        def real_surrogate(params):
            logp = policy.log_prob(hat_real.obs, hat_real.actions, params)
            return (logp * real_adv * discount * hat_real.mask).sum(-1).mean(-1).sum()

        leaves = {k: v.detach().clone().requires_grad_() for k, v in theta_hat.items()}
        with torch.enable_grad():
            g = flat_grad(real_surrogate(leaves), list(leaves.values())).to(torch.float64)

        # virtual rollouts of π_θ̂ on T̂_φ for A (Eq. 7) and B (Eq. 6)
        virtual = self.virtual_rollout({k: v.detach() for k, v in theta_hat.items()}, psi[None],
                                       rng, self.model, self.data)
        vdiscount = cfg.gamma ** torch.arange(virtual.horizon, dtype=torch.float32)
        v_clipped = clip(virtual.actions)

        def log_prob_traj(params):
            logp = policy.log_prob(virtual.obs, virtual.actions, params)
            return (logp * virtual.mask).sum(-1)  # log π_θ(τ) [T, N]

        returns = (virtual.rewards * vdiscount * virtual.mask).sum(-1)
        returns = returns - returns.mean(-1, keepdim=True)  # a constant baseline (unbiased)
        hessian = policy_hessian_product(log_prob_traj, returns, theta_hat)

        def hessian64(x):
            return hessian(x.float()).to(torch.float64)

        def virtual_surrogate(params, psi_var):
            rewards = family.reward(virtual.obs, v_clipped, virtual.next_obs,
                                    psi_var[:, None, None, :]).float() * virtual.mask
            relabelled = Episodes(virtual.obs, virtual.actions, rewards, virtual.next_obs,
                                  virtual.mask, virtual.terminated, virtual.tasks)
            adv = self.advantages(relabelled, normalize=False)  # differentiable in ψ
            logp = policy.log_prob(virtual.obs, virtual.actions, params)
            return (logp * adv * vdiscount * virtual.mask).sum(-1).mean(-1).sum()

        mixed = mixed_derivative_vjp(virtual_surrogate, theta_hat, psi_t)

        def mixed64(y):
            return mixed(y.float())[0].to(torch.float64)

        grad, info = implicit_task_gradient(star, hat, g, hessian64, mixed64, cfg.task_cg_iters,
                                            cfg.task_cg_damping)
        if cfg.task_grad_per_step:
            grad = grad / self.horizon
        return grad.numpy(), info

    # ── Algorithm 1: one training task per iteration ──
    def train_step(self, rng):
        cfg = self.config
        first = int(self.data.size[0]) == 0
        if self.psi is None:
            self.psi = self.draw_task(rng)
        psi = np.array(self.psi, dtype=np.float64)
        tasks = psi[None]
        theta = self.init_policy(1, rng)
        stats: dict[str, float] = {}

        # ── zero-shot adaptation (line 4) ──
        if not first and cfg.n_zeroshot > 0:
            stats = self.virtual_training(theta, tasks, cfg.n_zeroshot, rng, self.model,
                                          self.model_opt, self.data, fit_model=True)
        theta_hat = {k: v.detach().clone() for k, v in theta.items()}

        # ── SLBO (lines 5–7) ──
        collections = []
        for _ in range(cfg.n_slbo_first if first else cfg.n_slbo):
            episodes = self.collect(theta, tasks, rng)
            self.add_data(self.data, episodes)
            self.real_samples += episodes.num_steps
            collections.append(episodes)
            stats = self.virtual_training(theta, tasks, cfg.n_inner, rng, self.model,
                                          self.model_opt, self.data, fit_model=True)

        # ── the next task (lines 8–12) ──
        grad_info: dict = {}
        grad = np.full(self.family.task_dim, np.nan)
        if self.task_search != "adversarial":
            self.psi = self.draw_task(rng)
        elif first:
            self.psi = self.family.low + rng.random(self.family.task_dim) * (
                self.family.high - self.family.low)
        else:
            star_real = collections[-1]
            if cfg.task_grad_fresh or len(collections) < 2:  # one collection: it is π_θ̂'s
                star_real = self.collect(theta, tasks, rng)
                self.real_samples += star_real.num_steps
            new_psi = psi
            with self.phase("task_grad"):
                for _ in range(cfg.task_steps):
                    grad, grad_info = self.task_gradient(theta_hat, collections[0], star_real,
                                                         new_psi, rng)
                    if not np.all(np.isfinite(grad)):  # the next task must be a task
                        raise NonFiniteError("task gradient ∂L/∂ψ", "AdMRL's task update")
                    new_psi = project_to_box(new_psi + cfg.task_lr * grad, self.family.low,
                                             self.family.high)  # line 12
            self.psi = new_psi
        self.visited.append(psi.tolist())
        return self._metrics(psi, grad, grad_info, stats, collections, first)

    def _metrics(self, psi, grad, grad_info, stats, collections, first):
        """The same keys every iteration (NaN where a quantity does not apply)."""
        nan = math.nan
        real_returns = [float(c.episode_returns().mean()) for c in collections]
        metrics = {"return": real_returns[-1],
                   "return/zeroshot": nan if first else real_returns[0],
                   "virtual/return": stats.get("virtual_return", nan),
                   "model/loss": stats.get("model_loss", nan),
                   "trpo/refused_fraction": stats.get("trpo_refused", 0.0)
                   / max(stats.get("trpo_steps", 0.0), 1.0),
                   "samples/real": float(self.real_samples),
                   "samples/buffer": float(self.data.size[0])}
        for i, name in enumerate(self.family.task_names):
            metrics[f"task/{name}"] = float(psi[i])
            metrics[f"task/next_{name}"] = float(self.psi[i])
            metrics[f"task_grad/{name}"] = float(grad[i])
        for key in ("cg_iterations", "cg_residual", "norm_star", "norm_hat", "norm_chain",
                    "norm_policy_grad"):
            metrics[f"task_grad/{key}"] = float(grad_info.get(key, nan))
        return metrics

    # ── meta-test adaptation ──
    def adapt(self, tasks, budgets, rng):
        """Budgets are REAL samples per task: 0 is zero-shot (model only); n > 0 is zero-shot,
        then n // (fast_batch·horizon) SLBO iterations on that task's own copy of the model."""
        cfg = self.config
        tasks = self.family.check_tasks(tasks)
        requested = [int(b) for b in budgets]
        if any(b < 0 for b in requested):
            raise ValueError(f"adaptation budgets must be ≥ 0 real samples, got {requested}")
        if not requested:
            return []
        T = len(tasks)
        per_iteration = cfg.fast_batch * self.horizon
        slbo_iterations = {b: b // per_iteration for b in requested}
        needed = sorted(set(slbo_iterations.values()))

        start = time.perf_counter()
        theta = self.init_policy(T, rng)
        if int(self.data.size[0]) > 0 and cfg.n_zeroshot > 0:
            self.virtual_training(theta, tasks, cfg.n_zeroshot, rng, self.model, None, self.data,
                                  fit_model=False)
        zero_seconds = time.perf_counter() - start
        snapshots = {0: [{k: v[i:i + 1].detach().clone() for k, v in theta.items()}
                         for i in range(T)]}
        seconds = {0: zero_seconds}
        samples = {0: np.zeros(T)}
        if needed[-1] > 0:
            for j in needed:
                if j > 0:
                    snapshots[j], seconds[j], samples[j] = [], zero_seconds, np.zeros(T)
            for i in range(T):
                task_start = time.perf_counter()
                model = copy.deepcopy(self.model)
                optimizer = torch.optim.Adam(model.parameters(), lr=cfg.model_lr)
                optimizer.load_state_dict(self.model_opt.state_dict())
                data = copy.deepcopy(self.data)
                theta_i = {k: v.detach().clone().requires_grad_()
                           for k, v in snapshots[0][i].items()}
                used = 0
                for it in range(1, needed[-1] + 1):
                    episodes = self.collect(theta_i, tasks[i:i + 1], rng)
                    used += episodes.num_steps
                    self.add_data(data, episodes)
                    self.virtual_training(theta_i, tasks[i:i + 1], cfg.n_inner, rng, model,
                                          optimizer, data, fit_model=True)
                    if it in snapshots:
                        snapshots[it].append({k: v.detach().clone() for k, v in theta_i.items()})
                        seconds[it] += time.perf_counter() - task_start
                        samples[it][i] = used
        results = {}
        for j in needed:
            params = {k: torch.cat([s[k] for s in snapshots[j]]) for k in snapshots[j][0]}
            results[j] = Adapted(self.policy.actor(params), samples[j].copy(), seconds[j])
        return [results[slbo_iterations[b]] for b in requested]

    # ── checkpoints ──
    def state_dict(self) -> dict:
        return {**model_training_state(self.model, self.model_opt, self.data),
                "psi": None if self.psi is None else self.psi.tolist(),
                "visited": [list(v) for v in self.visited], "real_samples": self.real_samples,
                "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        load_model_training_state(self.model, self.model_opt, self.data, state)
        self.psi = None if state["psi"] is None else np.asarray(state["psi"], dtype=np.float64)
        self.visited = [list(v) for v in state["visited"]]
        self.real_samples = int(state["real_samples"])
        self.iteration = int(state["iteration"])


class AdMRL(ModelBasedMeta):
    """Tasks chosen by projected gradient ascent on the sub-optimality gap (Eqs. 2–7)."""

    name = "admrl"
    task_search = "adversarial"


class MBUniform(ModelBasedMeta):
    """The same model-based loop with tasks drawn uniformly from Ψ."""

    name = "mb-unif"
    task_search = "uniform"


class MBGauss(ModelBasedMeta):
    """The same model-based loop with tasks from N(centre of Ψ, task_std²) clipped to Ψ."""

    name = "mb-gauss"
    task_search = "gauss"
