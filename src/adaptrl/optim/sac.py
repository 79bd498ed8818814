"""Soft actor-critic updates (Haarnoja et al. 2018, "SAC: Algorithms and Applications").

Shared machinery for the off-policy methods (PEARL, FLAP): one `SAC.update` is one gradient
step on the twin critics, the actor and (optionally) the temperature α, then Polyak averaging of
the target critics. Conditioning such as PEARL's latent z is concatenated onto the observations
by the caller, so ``obs_dim`` counts it. The critic loss back-propagates into ``batch["obs"]``
when that tensor requires grad (PEARL trains its encoder through the critic); the actor and
temperature losses see detached observations.

Actions are in [-1, 1]; the caller scales them to the environment's bounds.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..nets.sac_nets import TanhGaussianActor, TwinQ
from ..options import Activation, check_ranges, option


@dataclass
class SACConfig:
    """Hyper-parameters of the SAC update (defaults: the SAC paper's, as in PEARL)."""

    gamma: float = option(0.99, "discount", ge=0, le=1)
    tau: float = option(0.005, "Polyak rate of the target critics: θ' ← (1−τ)θ' + τθ", gt=0,
                        le=1)
    actor_lr: float = option(3e-4, "Adam learning rate of the actor", positive=True, le=1)
    critic_lr: float = option(3e-4, "Adam learning rate of the twin critics", positive=True, le=1)
    alpha_lr: float = option(3e-4, "Adam learning rate of log α (auto_entropy only)",
                             positive=True, le=1)
    batch_size: int = option(256, "transitions per task in one update (the caller samples)",
                             ge=1, le=10**6)
    hidden_sizes: list = option([256, 256], "hidden widths of the actor and the critics",
                                item_ge=1, nonempty=True)
    activation: Activation = option("relu", "activation: relu, tanh or elu")
    auto_entropy: bool = option(True, "tune α so that the policy entropy tracks target_entropy")
    target_entropy: float | None = option(None, "target entropy; None means −act_dim",
                                          ge=-1e4, le=0)
    init_alpha: float = option(1.0, "initial α with auto_entropy, the fixed α without",
                               positive=True, le=1e4)

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value (every field's declared range)."""
        check_ranges(self)


def soft_critic_target(reward: torch.Tensor, done: torch.Tensor, next_q1: torch.Tensor,
                       next_q2: torch.Tensor, next_log_prob: torch.Tensor, alpha: float,
                       gamma: float) -> torch.Tensor:
    """y = r + γ(1 − d)(min(Q1', Q2') − α log π(a'|s')), all ``[...]`` (SAC eq. 3 with the
    clipped double-Q of TD3)."""
    soft_value = torch.min(next_q1, next_q2) - alpha * next_log_prob
    return reward + gamma * (1.0 - done) * soft_value


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """θ' ← (1 − τ)θ' + τθ for every parameter pair."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, tau)


class SAC:
    """Actor, twin critics, target critics, Adam optimizers and log α, with one-step updates.

    Args:
        obs_dim: observation size, including any conditioning the caller concatenates.
        act_dim: action size (actions in [-1, 1]).
        config: `SACConfig`.
        seed: seeds the torch generator that draws the update's action noise (and `act`'s
            when no generator is passed); its state is part of ``state_dict``.
        device: where the networks live; batches are moved there.
        actor: another policy with `TanhGaussianActor`'s ``sample(obs, generator,
            deterministic) -> (action, log π)`` (FLAP's `LinearHeadActor`); default: a
            `TanhGaussianActor` with ``config``'s sizes.

    Network initialisation draws from torch's global RNG (the runner seeds it first).
    """

    def __init__(self, obs_dim: int, act_dim: int, config: SACConfig | None = None,
                 seed: int = 0, device: str | torch.device = "cpu",
                 actor: nn.Module | None = None):
        self.config = config = config if config is not None else SACConfig()
        config.validate()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.device = torch.device(device)
        if actor is None:
            actor = TanhGaussianActor(obs_dim, act_dim, config.hidden_sizes, config.activation)
        self.actor = actor.to(self.device)
        self.critic = TwinQ(obs_dim, act_dim, config.hidden_sizes,
                            config.activation).to(self.device)
        self.critic_target = TwinQ(obs_dim, act_dim, config.hidden_sizes,
                                   config.activation).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.target_entropy = (-float(act_dim) if config.target_entropy is None
                               else float(config.target_entropy))
        self.log_alpha = torch.tensor(math.log(config.init_alpha), device=self.device,
                                      requires_grad=config.auto_entropy)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.alpha_optim = (torch.optim.Adam([self.log_alpha], lr=config.alpha_lr)
                            if config.auto_entropy else None)
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.num_updates = 0

    @property
    def alpha(self) -> float:
        """The current temperature α = exp(log α)."""
        return float(self.log_alpha.detach().exp())

    # ── acting ──
    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator | None = None,
            deterministic: bool = False) -> torch.Tensor:
        """Actions ``[..., act_dim]`` in [-1, 1] for ``obs [..., obs_dim]`` (returned on the
        observations' device). ``generator=None`` uses the SAC's own generator."""
        generator = self.generator if generator is None else generator
        action, _ = self.actor.sample(obs.to(self.device, torch.float32), generator,
                                      deterministic)
        return action.to(obs.device)

    # ── losses ──
    def td_target(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The soft TD target y ``[...]`` of a batch, without gradient; a' ~ π(·|s')."""
        generator = self.generator if generator is None else generator
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(batch["next_obs"], generator)
            next_q1, next_q2 = self.critic_target(batch["next_obs"], next_action)
            return soft_critic_target(batch["reward"], batch["done"], next_q1, next_q2,
                                      next_log_prob, self.alpha, self.config.gamma)

    def critic_loss(self, batch: dict, generator: torch.Generator | None = None):
        """½·Σᵢ mean (Qᵢ(s, a) − y)² over both critics (SAC eq. 5); returns (loss, metrics)."""
        target = self.td_target(batch, generator)
        q1, q2 = self.critic(batch["obs"], batch["action"])
        loss = 0.5 * (((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean())
        metrics = {"q/mean": float(0.5 * (q1.mean() + q2.mean()).detach()),
                   "q/target_mean": float(target.mean())}
        return loss, metrics

    def actor_loss(self, obs: torch.Tensor, generator: torch.Generator | None = None):
        """mean(α log π(ã|s) − min Q(s, ã)), ã reparameterised (SAC eq. 7); returns
        (loss, log π ``[...]`` detached). Gradients reach the critics too: zero them before
        their next step."""
        generator = self.generator if generator is None else generator
        action, log_prob = self.actor.sample(obs, generator)
        q1, q2 = self.critic(obs, action)
        loss = (self.alpha * log_prob - torch.min(q1, q2)).mean()
        return loss, log_prob.detach()

    def alpha_loss(self, log_prob: torch.Tensor) -> torch.Tensor:
        """−mean(log α · (log π + H̄)) (SAC eq. 18): α grows while the entropy is below H̄."""
        return -(self.log_alpha * (log_prob + self.target_entropy)).mean()

    # ── one update ──
    def update(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, float]:
        """One gradient step on critics, actor and α, then Polyak-average the targets.

        batch: tensors ``obs [..., obs_dim]``, ``action [..., act_dim]`` (in [-1, 1]),
        ``reward [...]``, ``next_obs [..., obs_dim]``, ``done [...]`` (1 where the episode
        terminated; 0 on a horizon cut), with any common leading shape, e.g. ``[T, B]`` from
        `ReplayBuffer.sample`. All losses average over every leading axis.

        Metrics: ``loss/critic``, ``loss/actor``, ``loss/alpha`` (0 with a fixed α), ``alpha``
        (the α used in this step's losses), ``q/mean``, ``q/target_mean``, ``entropy``
        (−mean log π of the actor's samples).
        """
        batch = {k: v.to(self.device, torch.float32) for k, v in batch.items()}
        alpha = self.alpha

        # ── critic ──
        critic_loss, metrics = self.critic_loss(batch, generator)
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optim.step()

        # ── actor (observations detached: conditioning encoders learn from the critic) ──
        actor_loss, log_prob = self.actor_loss(batch["obs"].detach(), generator)
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optim.step()
        self.critic_optim.zero_grad(set_to_none=True)  # drop the actor loss's critic grads

        # ── temperature ──
        alpha_loss_value = 0.0
        if self.alpha_optim is not None:
            alpha_loss = self.alpha_loss(log_prob)
            self.alpha_optim.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optim.step()
            alpha_loss_value = alpha_loss.item()

        # ── target critics ──
        polyak_update(self.critic_target, self.critic, self.config.tau)
        self.num_updates += 1
        return {"loss/critic": critic_loss.item(), "loss/actor": actor_loss.item(),
                "loss/alpha": alpha_loss_value, "alpha": alpha, **metrics,
                "entropy": float(-log_prob.mean())}

    def trainables(self) -> dict[str, object]:
        """What `update` changes in place: networks, optimizers and log α (see
        `adaptrl.optim.guard`)."""
        found = {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target,
                 "actor_optim": self.actor_optim, "critic_optim": self.critic_optim,
                 "log_alpha": self.log_alpha}
        if self.alpha_optim is not None:
            found["alpha_optim"] = self.alpha_optim
        return found

    # ── checkpoints ──
    def state_dict(self) -> dict:
        """Networks, target networks, optimizer states, log α, the generator state and the
        update counter; ``config`` and sizes are included so a mismatch fails clearly.

        As with PyTorch modules, the tensors are live references: ``torch.save`` it or
        ``copy.deepcopy`` it to keep a snapshot while training goes on."""
        return {
            "obs_dim": self.obs_dim, "act_dim": self.act_dim,
            "config": dataclasses.asdict(self.config),
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optim": self.actor_optim.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "alpha_optim": None if self.alpha_optim is None else self.alpha_optim.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "generator": self.generator.get_state(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        ours = (self.obs_dim, self.act_dim, dataclasses.asdict(self.config))
        theirs = (state["obs_dim"], state["act_dim"], state["config"])
        if ours != theirs:
            raise ValueError(f"SAC state is for obs {theirs[0]} / act {theirs[1]} / config "
                             f"{theirs[2]}; this SAC has obs {ours[0]} / act {ours[1]} / config "
                             f"{ours[2]}")
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        # Optimizer.load_state_dict keeps the given moment tensors when dtype and device match;
        # copies keep this SAC from sharing (and mutating) the source's Adam state.
        self.actor_optim.load_state_dict(copy.deepcopy(state["actor_optim"]))
        self.critic_optim.load_state_dict(copy.deepcopy(state["critic_optim"]))
        if self.alpha_optim is not None:
            self.alpha_optim.load_state_dict(copy.deepcopy(state["alpha_optim"]))
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.generator.set_state(state["generator"])
        self.num_updates = int(state["num_updates"])
