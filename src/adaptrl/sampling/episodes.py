"""The `Episodes` container ``[T, N, H, …]``, returns, GAE and the linear feature baseline."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import NonFiniteError


@dataclass
class Episodes:
    """Episodes of T tasks × N rows × L steps, each row one trial of ``trial_episodes`` (k)
    consecutive episodes of H = L / k steps on its task (k = 1: plain episodes, L = H).

    obs, next_obs: ``[T, N, L, obs_dim]``; actions: ``[T, N, L, act_dim]``;
    rewards: ``[T, N, L]`` (0 after an episode ended); mask: ``[T, N, L]`` float, 1 where the
    step happened; terminated: ``[T, N, L]`` bool, True on the step that ended an episode by the
    family's rule (not by the horizon); tasks: ``[T, k]`` the tasks' ψ (float64);
    success: ``[T, N, L]`` bool where the environment reports a success flag at each step
    (Meta-World's ``info["success"]``; False on masked steps), None where it reports none.

    Episode j of a trial occupies steps ``[j·H, (j+1)·H)`` of its row (`episode_index`,
    `episode_starts`); an episode that ends early leaves the rest of its slot masked, and the
    next episode of the trial starts on time. `per_episode` views the same data as
    ``[T, N·k, H]`` episodes; `gae` and `discounted_returns` run along the whole trial, across
    episode boundaries, as the trial is one episode of the meta-problem (RL²).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    mask: torch.Tensor
    terminated: torch.Tensor
    tasks: np.ndarray
    trial_episodes: int = 1
    success: torch.Tensor | None = None

    def __post_init__(self):
        if self.trial_episodes < 1 or self.obs.shape[2] % self.trial_episodes:
            raise ValueError(f"a row of {self.obs.shape[2]} steps cannot hold "
                             f"{self.trial_episodes} equal episodes")

    @property
    def num_tasks(self) -> int:
        return self.obs.shape[0]

    @property
    def num_episodes(self) -> int:
        """Rows per task: episodes, or trials when ``trial_episodes`` > 1."""
        return self.obs.shape[1]

    @property
    def horizon(self) -> int:
        """Steps per row (L = k·H for trials)."""
        return self.obs.shape[2]

    @property
    def episode_horizon(self) -> int:
        """H, the steps of one episode slot."""
        return self.obs.shape[2] // self.trial_episodes

    @property
    def episode_index(self) -> torch.Tensor:
        """Which episode of its trial each step belongs to, ``[L]`` (broadcasts over T, N)."""
        return torch.arange(self.horizon) // self.episode_horizon

    @property
    def episode_starts(self) -> torch.Tensor:
        """True on the first step of each episode, ``[L]`` (broadcasts over T, N)."""
        return torch.arange(self.horizon) % self.episode_horizon == 0

    def check_finite(self, where: str) -> Episodes:
        """Itself, if its observations, rewards and actions are all finite (one
        ``isfinite(...).all()`` per tensor); otherwise raise `adaptrl.errors.NonFiniteError`
        naming the earliest non-finite value, ``where``, its task and step. Earliest, because
        a policy fed a NaN reward or observation then acts NaN and the environment follows:
        the first one is the cause. Order within step t: its observation, its action, then
        the next observation and the reward."""
        fields = (("observation", self.obs, 0), ("action", self.actions, 1),
                  ("observation", self.next_obs, 2), ("reward", self.rewards, 3))
        if all(torch.isfinite(values).all() for _, values, _ in fields):
            return self
        T, N, L = self.mask.shape
        first = []
        for what, values, order in fields:
            bad = ~torch.isfinite(values.reshape(T, N, L, -1)).all(-1)  # [T, N, L]
            if bad.any():
                task, _, step = (int(i) for i in bad.nonzero()[bad.nonzero()[:, 2].argmin()])
                first.append((step, order, what, task))
        step, _, what, task = min(first)
        raise NonFiniteError(what, f"{where} (task {task}, step {step})")

    @property
    def num_steps(self) -> int:
        """Environment steps actually taken (masked steps excluded)."""
        return int(self.mask.sum().item())

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, ``[T, N·k]`` (``[T, N]`` without trials;
        episodes of a trial are consecutive)."""
        if self.trial_episodes == 1:
            return (self.rewards * self.mask).sum(-1)
        return self.trial_episode_returns().reshape(self.num_tasks, -1)

    def trial_episode_returns(self) -> torch.Tensor:
        """Undiscounted return of episode j of each trial, ``[T, N, k]``."""
        T, N, k = self.num_tasks, self.num_episodes, self.trial_episodes
        return (self.rewards * self.mask).reshape(T, N, k, -1).sum(-1)

    def episode_success(self) -> torch.Tensor | None:
        """Whether each episode succeeded, ``[T, N·k]`` bool: the environment reported success
        at any step it took (Meta-World's definition); None when it reports no success."""
        if self.success is None:
            return None
        T, N, k = self.num_tasks, self.num_episodes, self.trial_episodes
        took = (self.success & (self.mask > 0)).reshape(T, N, k, -1)
        return took.any(-1).reshape(T, N * k)

    def per_episode(self) -> Episodes:
        """The same steps as ``[T, N·k, H]`` plain episodes (itself without trials)."""
        if self.trial_episodes == 1:
            return self
        T, N, k = self.num_tasks, self.num_episodes, self.trial_episodes

        def split(x):
            return x.reshape(T, N * k, -1, *x.shape[3:])

        return Episodes(split(self.obs), split(self.actions), split(self.rewards),
                        split(self.next_obs), split(self.mask), split(self.terminated),
                        self.tasks,
                        success=None if self.success is None else split(self.success))

    def feedback(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the sampler fed a policy at each step as the previous step's action, reward and
        done flag: ``[T, N, L, act_dim]``, ``[T, N, L]``, ``[T, N, L]`` (float). Zeros at the
        start of a trial; masked steps repeat the last step taken; done is 1 after the last step
        of an episode (termination or the end of its slot)."""
        T, N, L = self.mask.shape
        prev_action = torch.zeros_like(self.actions)
        prev_reward = torch.zeros_like(self.rewards)
        prev_done = torch.zeros_like(self.rewards)
        last_action = torch.zeros_like(self.actions[:, :, 0])
        last_reward = torch.zeros_like(self.rewards[:, :, 0])
        last_done = torch.zeros_like(self.rewards[:, :, 0])
        H = self.episode_horizon
        for t in range(L):
            prev_action[:, :, t], prev_reward[:, :, t], prev_done[:, :, t] = (
                last_action, last_reward, last_done)
            took = self.mask[:, :, t] > 0
            ends = self.terminated[:, :, t] | ((t + 1) % H == 0)
            last_action = torch.where(took[..., None], self.actions[:, :, t], last_action)
            last_reward = torch.where(took, self.rewards[:, :, t], last_reward)
            last_done = torch.where(took, ends.to(last_done.dtype), last_done)
        return prev_action, prev_reward, prev_done

    def discounted_returns(self, gamma: float) -> torch.Tensor:
        """Reward-to-go Σ_{l≥0} γ^l r_{t+l} within each episode (within each trial: discounting
        runs over the steps taken, across its episodes), ``[T, N, L]``."""
        rewards = self.rewards * self.mask
        if self.trial_episodes > 1:
            return _masked_reverse_scan(rewards, torch.zeros_like(rewards), gamma, self.mask)
        out = torch.zeros_like(rewards)
        running = torch.zeros_like(rewards[..., 0])
        for t in range(self.horizon - 1, -1, -1):
            running = rewards[..., t] + gamma * running
            out[..., t] = running
        return out * self.mask

    def gae(self, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
        """Generalized advantage estimates ``[T, N, L]`` (Schulman et al. 2016).

        δ_t = r_t + γ V(s_{t+1}) − V(s_t) with V(s_{t+1}) = 0 after the last step of an episode
        (termination or horizon: no bootstrapping, as in MAML's sampler);
        A_t = Σ_l (γλ)^l δ_{t+l}. ``values``: ``[T, N, L]``. In a trial of several episodes
        the next step is the next one taken in the trial (the first of the next episode after
        an episode's last step) and only the trial's end stops bootstrapping.
        """
        if values.shape != self.rewards.shape:
            raise ValueError(f"values must have shape {tuple(self.rewards.shape)}, "
                             f"got {tuple(values.shape)}")
        if self.trial_episodes > 1:
            return _masked_reverse_scan(self.rewards * self.mask, values * self.mask,
                                        gamma, self.mask, lam)
        values = values * self.mask
        next_values = torch.zeros_like(values)
        next_values[..., :-1] = values[..., 1:]  # masked (0) after the episode ended
        deltas = (self.rewards + gamma * next_values - values) * self.mask
        adv = torch.zeros_like(deltas)
        running = torch.zeros_like(deltas[..., 0])
        for t in range(self.horizon - 1, -1, -1):
            running = deltas[..., t] + gamma * lam * running
            adv[..., t] = running
        return adv * self.mask

    def subsample(self, fraction: float) -> Episodes:
        """The first ⌈fraction·N⌉ rows of every task (rows are i.i.d., so a prefix is an
        unbiased subsample and needs no random draw); used for cheaper curvature products, as
        in rllab's conjugate-gradient optimizer."""
        if fraction >= 1.0:
            return self
        keep = max(1, int(np.ceil(fraction * self.num_episodes)))
        return dataclasses.replace(
            self, obs=self.obs[:, :keep], actions=self.actions[:, :keep],
            rewards=self.rewards[:, :keep], next_obs=self.next_obs[:, :keep],
            mask=self.mask[:, :keep], terminated=self.terminated[:, :keep],
            success=None if self.success is None else self.success[:, :keep])

    def task(self, i: int) -> Episodes:
        """The episodes of task ``i`` as a one-task container."""
        return self.select([i])

    def select(self, tasks) -> Episodes:
        index = torch.as_tensor(tasks, dtype=torch.long)
        return Episodes(self.obs[index], self.actions[index], self.rewards[index],
                        self.next_obs[index], self.mask[index], self.terminated[index],
                        self.tasks[np.asarray(tasks)], self.trial_episodes,
                        None if self.success is None else self.success[index])


def _masked_reverse_scan(rewards, values, gamma, mask, lam=None):
    """Backward recursions along rows whose masked steps are skipped (carried through):
    with ``lam`` None, the reward-to-go G_t = r_t + γ G_next; otherwise GAE with
    δ_t = r_t + γ V_next − V_t and A_t = δ_t + γλ A_next, where "next" is the next step taken
    in the row (V_next = 0 after the row's last step). ``[T, N, L]`` each."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    next_value = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        took = mask[..., t] > 0
        if lam is None:
            new = rewards[..., t] + gamma * running
        else:
            new = rewards[..., t] + gamma * next_value - values[..., t] + gamma * lam * running
            next_value = torch.where(took, values[..., t], next_value)
        running = torch.where(took, new, running)
        out[..., t] = torch.where(took, new, torch.zeros_like(new))
    return out


class LinearFeatureBaseline:
    """Per-task linear value baseline (Duan et al. 2016, as in MAML).

    Features of step t: [clip(s, ±10), clip(s, ±10)², t/100, (t/100)², (t/100)³, 1]. One
    ridge regression per task on the discounted returns, solved for all tasks in one batched
    call; the ridge coefficient grows ×10 until the solution is finite.
    """

    def __init__(self, reg_coeff: float = 1e-5):
        self.reg_coeff = reg_coeff
        self.coeffs: torch.Tensor | None = None  # [T, F]

    @staticmethod
    def features(obs: torch.Tensor) -> torch.Tensor:
        """``obs [T, N, H, d]`` → ``[T, N, H, 2d + 4]`` (float64)."""
        o = obs.to(torch.float64).clamp(-10, 10)
        H = obs.shape[-2]
        t = (torch.arange(H, dtype=torch.float64) / 100.0).reshape(
            *([1] * (obs.dim() - 2)), H, 1).expand(*obs.shape[:-1], 1)
        return torch.cat([o, o**2, t, t**2, t**3, torch.ones_like(t)], dim=-1)

    def fit(self, episodes: Episodes, gamma: float = 0.99) -> "LinearFeatureBaseline":
        feats = self.features(episodes.obs)  # [T, N, H, F]
        T, F = feats.shape[0], feats.shape[-1]
        mask = episodes.mask.to(torch.float64).reshape(T, -1, 1)
        X = feats.reshape(T, -1, F) * mask
        y = episodes.discounted_returns(gamma).to(torch.float64).reshape(T, -1, 1) * mask
        XtX = X.transpose(1, 2) @ X
        Xty = X.transpose(1, 2) @ y
        eye = torch.eye(F, dtype=torch.float64)
        reg = self.reg_coeff
        for _ in range(6):
            coeffs = torch.linalg.solve(XtX + reg * eye, Xty)
            if torch.isfinite(coeffs).all():
                break
            reg *= 10
        else:  # finite data (the sampler checks it) whose features overflow the solve
            raise NonFiniteError("linear baseline solution", "the baseline regression")
        self.coeffs = coeffs.squeeze(-1)
        return self

    def predict(self, episodes: Episodes) -> torch.Tensor:
        """Values ``[T, N, H]`` (float32, 0 on masked steps)."""
        if self.coeffs is None:
            return torch.zeros_like(episodes.rewards)
        feats = self.features(episodes.obs)
        values = torch.einsum("tnhf,tf->tnh", feats, self.coeffs)
        return (values * episodes.mask).to(episodes.rewards.dtype)

    def state_dict(self) -> dict:
        return {"reg_coeff": self.reg_coeff, "coeffs": self.coeffs}

    def load_state_dict(self, state: dict) -> None:
        self.reg_coeff = state["reg_coeff"]
        self.coeffs = state["coeffs"]
