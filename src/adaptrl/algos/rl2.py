"""RL² (Duan et al. 2016, "Fast Reinforcement Learning via Slow Reinforcement Learning"): a
recurrent policy whose memory, carried across the episodes of a trial, does the adapting.

One meta-iteration:
  1. sample T tasks ψ_i ~ p(ψ)
  2. run N trials per task, each ``trial_episodes`` consecutive episodes on the task, with the
     GRU policy reading (s_t, a_{t−1}, r_{t−1}, d_{t−1}) (RL² §2.2) and its hidden state kept
     across the trial's episode boundaries (reset between trials)
  3. GAE over the whole trial (the done flag is an input, not a cut in bootstrapping: the
     objective is the trial's total discounted reward, RL² §2.2) with the network's value head
  4. PPO on minibatches of whole trials (`adaptrl.optim.ppo`), each re-unrolling its trials
     from h_0, so no truncated backpropagation through time is needed.

The paper trained with TRPO; PPO is what RL² is trained with today (Meta-World, garage, varibad;
../shared/references/blackbox.md §2). By default policy and value share the GRU (two linear
heads); ``value_network=separate`` gives the value function its own network of the same shape,
as RL²'s baseline was. Discrete families get a categorical head
over one-hot actions, continuous ones a Gaussian head.

Meta-test (`adapt`): a budget n is the number of episodes already in the trial. One trial of
max(n) episodes per task runs with the trained policy; the policy adapted by n episodes is the
network resumed from its state after the n-th episode (`adaptrl.sampling.ContinueTrial`), so the
evaluation protocol's fresh episodes are episode n + 1 of the trial and the budgets trace the
black-box adaptation curve.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from ..nets import CategoricalGRUPolicy, GaussianGRUPolicy
from ..nets.snail import SNAILPolicy
from ..optim.ppo import PPOOptions, ppo_lr, ppo_optimizer, ppo_update, select_rows, set_lr
from ..resources import episode_bytes
from ..sampling import ContinueTrial, Episodes
from .base import Adapted, BaseConfig, MetaAlgorithm, option, sorted_budgets


@dataclass
class RL2Config(PPOOptions, BaseConfig):
    """RL² settings; the PPO fields come from `PPOOptions`."""

    unused_fields: ClassVar[dict[str, str]] = {
        "activation": "the GRU and SNAIL networks have their own nonlinearities"}

    iterations: int = option(500, "meta-training iterations")
    meta_batch: int = option(32, "tasks per meta-iteration")
    fast_batch: int = option(4, "trials per task per meta-iteration")
    trial_episodes: int = option(2, "episodes per trial (the memory spans them)", ge=1, le=10**5)
    network: Literal["gru", "snail"] = option(
        "gru", "the policy network: a GRU (RL²) or SNAIL's temporal convolutions and attention "
        "over the trial (Mishra et al. 2018; adaptrl.nets.snail)")
    hidden_sizes: list = option([256], "GRU width, or SNAIL's filters (hidden_sizes[0]; RL² "
                                "used 256)")
    gamma: float = option(0.99, "discount over the whole trial", gt=0, le=1)
    gae_lambda: float = option(0.3, "GAE λ over the trial (RL²'s bandit setting)", ge=0, le=1)
    init_log_std: float = option(0.0, "initial log-std of a Gaussian head", ge=-10, le=3)
    minibatches: int = option(4, "PPO minibatches of whole trials per epoch", ge=1, le=10**6)
    ppo_epochs: int = option(4, "PPO epochs per meta-iteration", ge=1, le=10**4)
    entropy_coef: float = option(0.01, "PPO entropy bonus weight", ge=0, le=1e4)
    value_network: Literal["shared", "separate"] = option(
        "shared", "shared: the value head sits on the policy's network; separate: the value "
        "function has its own network of the same shape (RL² App. A), so the value loss no "
        "longer shapes the policy's memory")
    value_time: bool = option(
        False, "with value_network separate: the value network also reads the step's place in "
        "the trial, t / (trial_episodes × horizon), a baseline feature the policy never sees "
        "(as rllab's time-feature baselines); the value of a long trial depends mostly on the "
        "steps left, which a recurrent net otherwise has to count")
    reward_scale: float = option(1.0, "rewards are multiplied by this for the value targets and "
                                      "advantages (the policy still reads the raw reward); "
                                      "keeps the value loss from swamping the shared network "
                                      "when trial returns are large", gt=0, le=1e6)

    def validate(self) -> None:
        super().validate()
        if self.value_time and self.value_network != "separate":
            raise ValueError("value_time needs value_network=separate: on the shared network "
                             "the policy would read the time too")


class RL2(MetaAlgorithm):
    name = "rl2"
    Config = RL2Config
    budget_unit = "episodes in the trial"
    discrete_actions = (False, True)

    @classmethod
    def memory_estimate(cls, config, family) -> dict[str, int]:
        """A batch of meta_batch × fast_batch trials of trial_episodes episodes."""
        T, N, k = config.meta_batch, config.fast_batch, config.trial_episodes
        H = config.horizon or family.horizon
        return {f"a batch of meta_batch × fast_batch × trial_episodes × horizon = "
                f"{T}×{N}×{k}×{H} steps":
                    episode_bytes(T, N, k * H, family.obs_dim, family.act_dim)}

    @property
    def default_budgets(self) -> tuple[int, ...]:
        """Every episode index of a training trial: 0 (a fresh trial) to trial_episodes − 1."""
        return tuple(range(self.config.trial_episodes))

    def __init__(self, family, config: RL2Config, sampler=None):
        super().__init__(family, config, sampler)
        separate = config.value_network == "separate"
        self.policy = self._network(value_head=not separate)
        # RL² App. A: a baseline network of the policy's shape, trained on the value loss only
        self.critic = (self._network(value_head=True, extra_obs=int(config.value_time))
                       if separate else None)
        parameters = list(self.policy.parameters())
        if self.critic is not None:
            parameters += list(self.critic.parameters())
        self.optimizer = ppo_optimizer(parameters, config)

    def _network(self, value_head: bool, extra_obs: int = 0):
        """The configured network (GRU or SNAIL, the family's action head), reading
        ``extra_obs`` features after the observation."""
        config, family = self.config, self.family
        hidden, obs_dim = int(config.hidden_sizes[0]), family.obs_dim + extra_obs
        if config.network == "snail":  # its context spans the whole trial
            return SNAILPolicy(
                obs_dim, family.act_dim, max_length=config.trial_episodes * self.horizon,
                head="categorical" if family.discrete_actions else "gaussian",
                value_head=value_head, init_log_std=config.init_log_std, filters=hidden)
        if family.discrete_actions:
            return CategoricalGRUPolicy(obs_dim, family.act_dim, hidden, value_head=value_head)
        return GaussianGRUPolicy(obs_dim, family.act_dim, hidden, config.init_log_std,
                                 value_head=value_head)

    def _evaluate(self, inputs, actions):
        """log π, entropy and V on ``inputs`` (V from the separate critic when there is one)."""
        log_prob, entropy, values = self.policy.evaluate(inputs, actions)
        if self.critic is not None:
            values = self.critic.values(self.critic_inputs(inputs))
        return log_prob, entropy, values

    def critic_inputs(self, inputs: tuple) -> tuple:
        """The policy's ``inputs`` (observations first, the step mask last), with the step's
        place in the trial, t / (trial_episodes × horizon), after the observation when
        ``value_time`` is set (t counts the unmasked steps before it)."""
        if not self.config.value_time:
            return inputs
        obs, *rest, mask = inputs
        length = self.config.trial_episodes * self.horizon
        t = (mask.cumsum(-1) - mask) / length  # unmasked steps before this one
        return (torch.cat([obs, t[..., None].to(obs.dtype)], -1), *rest, mask)

    # ── one meta-iteration ──
    def train_step(self, rng):
        cfg = self.config
        tasks = self.family.sample(cfg.meta_batch, rng)
        trials = self.rollout(self.policy.actor(), tasks, rng, cfg.fast_batch,
                              trial_episodes=cfg.trial_episodes)
        metrics = self.update(trials, rng)
        metrics.update(trial_metrics(trials))
        return metrics

    def update(self, trials: Episodes, rng) -> dict[str, float]:
        """PPO on a batch of trials sampled with the current policy (GAE over each trial)."""
        cfg = self.config
        inputs = self.policy.inputs(trials.obs, trials)
        with torch.no_grad():
            old_log_prob, _, values = self._evaluate(inputs, trials.actions)
        values = values * trials.mask
        scaled = dataclasses.replace(trials, rewards=trials.rewards * cfg.reward_scale)
        advantages = scaled.gae(values, cfg.gamma, cfg.gae_lambda)  # across the whole trial
        returns = (advantages + values) * trials.mask
        by_row = [x.flatten(0, 1) for x in (*inputs, trials.actions)]

        def loss_terms(rows):  # re-unroll the selected trials from h_0
            *row_inputs, actions = (select_rows(x, rows, lead=1)[None] for x in by_row)
            log_prob, entropy, row_values = self._evaluate(tuple(row_inputs), actions)
            return log_prob, row_values, entropy

        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        lr = ppo_lr(cfg, self.iteration, cfg.iterations)
        set_lr(self.optimizer, lr)
        metrics = ppo_update(loss_terms, self.optimizer, trials.mask, advantages,
                             generator=generator, options=cfg, returns=returns,
                             old_log_prob=old_log_prob)
        metrics["ppo/lr"] = lr
        return metrics

    # ── meta-test: the memory adapts ──
    def adapt(self, tasks, budgets, rng):
        tasks = self.family.check_tasks(tasks)
        requested, budgets = sorted_budgets(budgets)
        if not budgets:
            return []
        T, start = len(tasks), time.perf_counter()
        actor = self.policy.actor()
        results = {0: Adapted(actor, np.zeros(T), 0.0)}
        if budgets[-1] > 0:
            trial = self.rollout(actor, tasks, rng, 1, trial_episodes=budgets[-1])
            inputs = self.policy.inputs(trial.obs, trial)
            mask, H, rows = trial.mask[:, 0], trial.episode_horizon, torch.arange(T)
            positive = [b for b in budgets if b > 0]
            # the last step taken in episode n (an episode that ended early holds it)
            lasts = [(n - 1) * H + (mask[:, (n - 1) * H:n * H] * torch.arange(H)).argmax(-1)
                     for n in positive]
            with torch.no_grad():  # one pass over the trial serves every budget
                states = self.policy.states_after(inputs, lasts)
            seconds = time.perf_counter() - start
            for n, last, state in zip(positive, lasts, states):
                policy = ContinueTrial(actor, state, trial.actions[rows, 0, last],
                                       trial.rewards[rows, 0, last], torch.ones(T))
                results[n] = Adapted(policy, mask[:, :n * H].sum(-1).numpy(), seconds)
        return [results[b] for b in requested]

    # ── checkpoints ──
    def state_dict(self) -> dict:
        state = {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "iteration": self.iteration}
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])


@dataclass
class SNAILConfig(RL2Config):
    """RL²'s settings with SNAIL as the default network."""

    network: Literal["gru", "snail"] = option(
        "snail", "the policy network: SNAIL (Mishra et al. 2018; adaptrl.nets.snail) or a GRU")


class SNAIL(RL2):
    """RL²'s trainer with SNAIL's network (``rl2 --set network=snail`` under its own name)."""

    name = "snail"
    Config = SNAILConfig


def trial_metrics(trials: Episodes) -> dict[str, float]:
    """The trial's total return, and the returns of its first and last episodes (the
    adaptation inside the trial), means over tasks and trials."""
    per_episode = trials.trial_episode_returns().double()  # [T, N, k]
    return {"return": float(per_episode.sum(-1).mean()),
            "return/first_episode": float(per_episode[..., 0].mean()),
            "return/last_episode": float(per_episode[..., -1].mean())}
