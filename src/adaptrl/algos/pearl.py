"""PEARL (Rakelly et al. 2019): SAC conditioned on a latent task variable z inferred from context.

* Inference network q_φ(z|c) = Π_m N(μ_φ(c_m), σ²_φ(c_m)) over the transitions c_m = (s, a, r,
  s') of a task (`adaptrl.nets.context.ContextEncoder`), latent size 5, pulled towards the unit
  prior by β·KL(q(z|c) ‖ N(0, I)) (PEARL eq. 3, β = ``kl_lambda``).
* Actor and twin critics see [s, z]. The critic loss trains the encoder (the gradient flows
  through z = μ + σ·ε); the actor sees z detached (PEARL §4.3).
* Data collection (PEARL Alg. 1): each iteration a few training tasks collect
  ``prior_episodes`` with z drawn from the prior — these also refill the task's context buffer,
  which is cleared first, so that contexts come from the most recent data — and
  ``extra_rl_episodes`` with z drawn from the posterior of that context (replay only; the
  encoder never sees data collected by a posterior policy, as in PEARL's locomotion settings).
  ``posterior_episodes`` go to both buffers.
* Meta-test `adapt`: round 0 acts with z from the prior; after each round the posterior is
  recomputed from all context so far; the evaluated policy acts with the posterior mean (or a
  sample, ``adapt_z: sample``).

SAC here is the twin-Q variant with target critics and a tuned temperature (PEARL's code used
SAC v1 with a state-value network); the encoder is trained by the same critic loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..nets.context import ContextEncoder, kl_to_unit_gaussian
from ..nets.sac_nets import TanhGaussianRollout
from ..sampling import AppendToObservation, Policy, ReplayBuffer
from .base import option
from .offpolicy import OffPolicyConfig, OffPolicyMethod


@dataclass
class PEARLConfig(OffPolicyConfig):
    latent_dim: int = option(5, "size of the latent task variable z", positive=True, le=10**4)
    encoder_hidden: list = option([200, 200, 200], "hidden widths of the context encoder",
                                  item_ge=1, nonempty=True)
    encoder_lr: float = option(3e-4, "Adam learning rate of the context encoder",
                               positive=True, le=1)
    kl_lambda: float = option(0.1, "β: weight of KL(q(z|c) ‖ N(0, I)), summed over tasks",
                              ge=0, le=1e6)
    embedding_batch: int = option(100, "context transitions per task in each gradient step",
                                  positive=True, le=10**6)
    context_capacity: int = option(10_000, "transitions kept per task in the context buffer",
                                   positive=True, le=10**10)
    prior_episodes: int = option(2, "episodes per collecting task with z from the prior",
                                 ge=0, le=10**6)
    posterior_episodes: int = option(0, "episodes with z from the posterior, to both buffers",
                                     ge=0, le=10**6)
    extra_rl_episodes: int = option(3, "episodes with z from the posterior, replay only",
                                    ge=0, le=10**6)
    adapt_z: Literal["mean", "sample"] = option(
        "mean", "meta-test policy: act with the posterior mean of z, or with a sample")

    def validate(self) -> None:
        super().validate()
        if self.prior_episodes + self.posterior_episodes + self.extra_rl_episodes < 1:
            raise ValueError("collect at least one episode per iteration (prior_episodes, "
                             "posterior_episodes or extra_rl_episodes)")


class PEARL(OffPolicyMethod):
    name = "pearl"
    Config = PEARLConfig

    def __init__(self, family, config: PEARLConfig, sampler=None):
        super().__init__(family, config, sampler)
        cfg = config
        self.encoder = ContextEncoder(self.context_dim, cfg.latent_dim, cfg.encoder_hidden,
                                      cfg.activation)
        self.encoder_optim = torch.optim.Adam(self.encoder.parameters(), lr=cfg.encoder_lr)
        self.sac = self.build_sac(self.obs_dim + cfg.latent_dim)
        self.context_buffer = ReplayBuffer(cfg.num_train_tasks, cfg.context_capacity,
                                           self.obs_dim, self.act_dim)
        # posterior samples while adapting; `adapt` reseeds it from its rng
        self._adapt_generator = torch.Generator().manual_seed(0)

    # ── z ──
    def sample_z(self, mean: torch.Tensor, var: torch.Tensor, episodes: int,
                 generator: torch.Generator) -> torch.Tensor:
        """z ~ N(mean, var) for every episode: ``[T, N, latent]`` from ``[T, latent]``."""
        noise = torch.randn(mean.shape[0], episodes, mean.shape[1], generator=generator)
        return mean[:, None] + var.sqrt()[:, None] * noise

    def z_actor(self, z: torch.Tensor, deterministic: bool) -> Policy:
        """[-1, 1] policy for fixed latents ``z [T, N, latent]`` (or ``[T, latent]``): the SAC
        actor on [s, z]."""
        return AppendToObservation(TanhGaussianRollout(self.sac.actor, deterministic), z)

    def posterior_from_buffer(self, rows: np.ndarray, rng) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.context_buffer.sample(self.config.embedding_batch, rng, rows)
        return self.encoder.posterior(self.context_batch(batch))

    def _collecting_actor(self, mean, var, episodes, rng):
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        return self.z_actor(self.sample_z(mean, var, episodes, generator), deterministic=False)

    def _prior_actor_for(self, rng):
        def for_rows(rows):
            zeros = torch.zeros(len(rows), self.config.latent_dim)
            return self._collecting_actor(zeros, torch.ones_like(zeros),
                                          self.config.initial_episodes, rng)

        return for_rows

    def store(self, batch, rows, context: bool = True) -> None:
        super().store(batch, rows)
        if context:
            self.context_buffer.add_episodes(batch, tasks=rows)

    # ── one meta-iteration (PEARL Algorithm 1) ──
    def train_step(self, rng):
        cfg = self.config
        self.ensure_initial_data(self._prior_actor_for(rng), rng)

        # ── data collection ──
        rows = np.sort(rng.choice(cfg.num_train_tasks, cfg.tasks_per_iteration, replace=False))
        tasks = self.train_tasks[rows]
        latent = cfg.latent_dim
        returns = []
        if cfg.prior_episodes:
            zeros = torch.zeros(len(rows), latent)
            batch = self.collect(tasks, cfg.prior_episodes,
                                 self._collecting_actor(zeros, torch.ones_like(zeros),
                                                        cfg.prior_episodes, rng), rng)
            # contexts come from the most recent data (cleared only once it has come: a
            # refused batch leaves the old contexts)
            self.context_buffer.clear(rows)
            self.store(batch, rows)
            returns.append(batch.episode_returns().mean())
        for episodes, to_context in ((cfg.posterior_episodes, True),
                                     (cfg.extra_rl_episodes, False)):
            if episodes:
                with torch.no_grad():
                    mean, var = self.posterior_from_buffer(rows, rng)
                batch = self.collect(tasks, episodes,
                                     self._collecting_actor(mean, var, episodes, rng), rng)
                self.store(batch, rows, context=to_context)
                returns.append(batch.episode_returns().mean())

        # ── gradient steps ──
        totals: dict[str, float] = {}
        for _ in range(cfg.updates_per_iteration):
            metrics = self.update(rng)
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v
        n = max(cfg.updates_per_iteration, 1)
        out = {k: v / n for k, v in totals.items()}
        out["return"] = float(torch.stack(returns).mean())
        out["env_steps"] = float(self.env_steps)
        return out

    def update(self, rng) -> dict[str, float]:
        """One gradient step on a meta-batch of training tasks: encoder (KL + critic loss),
        critics, actor and α."""
        cfg = self.config
        rows = rng.choice(cfg.num_train_tasks, cfg.meta_batch, replace=False)
        mean, var = self.posterior_from_buffer(rows, rng)
        z = mean + var.sqrt() * torch.randn(mean.shape, generator=self.sac.generator)
        kl = kl_to_unit_gaussian(mean, var).sum()  # PEARL sums the tasks' KL terms

        batch = self.sac_batch(self.replay.sample(cfg.batch_size, rng, rows))
        zz = z[:, None].expand(-1, cfg.batch_size, -1)
        batch["obs"] = torch.cat([batch["obs"], zz], -1)
        batch["next_obs"] = torch.cat([batch["next_obs"], zz.detach()], -1)

        self.encoder_optim.zero_grad(set_to_none=True)
        (cfg.kl_lambda * kl).backward(retain_graph=True)  # the critic loss reuses the graph
        metrics = self.sac.update(batch)  # the critic loss back-propagates into the encoder
        self.encoder_optim.step()
        metrics["kl"] = float(kl.detach()) / len(rows)
        metrics["z/posterior_var"] = float(var.detach().mean())
        return metrics

    # ── meta-test ──
    def read_context(self, context, mask):
        return self.encoder.posterior(context, mask)

    def context_actor(self, belief, final: bool):
        mean, var = belief
        if final and self.config.adapt_z == "mean":
            z = mean
        else:  # posterior sampling: one z per task for the whole round
            z = mean + var.sqrt() * torch.randn(mean.shape, generator=self._adapt_generator)
        return self.z_actor(z, self.config.eval_deterministic)

    def adapt(self, tasks, budgets, rng):
        self._adapt_generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        return super().adapt(tasks, budgets, rng)

    def adapt_from(self, episodes, rng):
        self._adapt_generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        return super().adapt_from(episodes, rng)

    # ── checkpoints ──
    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(encoder=self.encoder.state_dict(),
                     encoder_optim=self.encoder_optim.state_dict(),
                     context_buffer=(self.context_buffer.state_dict()
                                     if self.config.checkpoint_replay else None))
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.encoder.load_state_dict(state["encoder"])
        self.encoder_optim.load_state_dict(copy.deepcopy(state["encoder_optim"]))
        if state.get("context_buffer") is not None:
            self.context_buffer.load_state_dict(state["context_buffer"])
        else:
            self.context_buffer.clear()
