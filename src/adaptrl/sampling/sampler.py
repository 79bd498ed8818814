"""Rollouts of many tasks at once: one policy call per time step for all T·N environments.

`rollout` is the one rollout loop of the library: it drives a `Policy` (see
`adaptrl.sampling.policy`) on any `BatchEnv` — a simulator, or a learned model
(`adaptrl.sampling.model.ModelEnv`) — for trials of k consecutive episodes per environment.
`Sampler` is the interface methods receive; `LocalSampler` (this process, lock-step batch) and
`ModelSampler` (rollouts on a learned model) are its backends. A remote backend is another
subclass: it implements `Sampler.sample` and returns the same `Episodes`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..envs import BatchEnv, make_batch_env
from ..tasks import TaskFamily, get_family
from .episodes import Episodes
from .policy import MemorylessPolicy, Policy, check_state, hold_state


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch on ``n`` threads inside the block (the previous count restored after)."""
    threads = torch.get_num_threads()
    if threads == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def single_torch_thread():
    """Run torch on one thread inside the block (restored after); yields the caller's thread
    count, which `rollout` gives back to the steps of a policy with ``parallel_step``.

    During rollouts a memoryless policy's per-step forward passes are tiny, while the simulator
    runs its own native threads; torch's OpenMP workers, which spin for a while after every
    parallel region, would take cores from the simulator (measured: 2.9–3.3 s → 2.3–2.5 s for
    80k HalfCheetah steps on 2 cores).
    """
    threads = torch.get_num_threads()
    with torch_threads(1):
        yield threads


def _uses_feedback(policy: Policy) -> bool:
    return getattr(policy, "uses_feedback", True)


def rollout(env: BatchEnv, policy: Policy, tasks, rng: np.random.Generator, horizon: int,
            trial_episodes: int = 1, *, simulated: np.ndarray | None = None,
            episode_steps=(), policy_threads: int = 1) -> Episodes:
    """Run one trial of ``trial_episodes`` episodes of ``horizon`` steps in each of the env's
    T × N environments, on the tasks ``tasks [T, k]`` (ψ); returns `Episodes` ``[T, N, k·H]``.

    The policy's state starts as ``policy.initial_state((T, N))``, is held while an
    environment's episode is over, and carries across the episodes of the trial; the previous
    action, reward and done flag start at zero and follow the steps each environment took.
    Randomness comes only from ``rng``: a torch generator for the policy (and a learned model's
    noise) is drawn from it first, then each episode's resets.

    A remote worker's share of the batch (`adaptrl.sampling.ray_backend`): ``simulated``
    (bool ``[T]``) names the tasks whose environments are stepped; the others start every
    episode already over, while the policy still acts for all T × N environments and every random
    number is drawn as for the whole batch, so the simulated tasks' episodes are the whole
    batch's. ``episode_steps`` gives the number of steps of each of the first episodes (the
    whole batch's, for a replay); any other episode but the last stops when the share's
    environments are over, and a share's last one runs the full horizon (the caller cuts it).

    ``policy_threads``: torch threads for the steps of a policy whose ``parallel_step`` is set
    (a GRU-256 or an MPC planner: large matrix products while the simulator's threads wait);
    everything else runs on the caller's threads. Results do not depend on it.
    """
    H, k = int(horizon), int(trial_episodes)
    if H < 1 or k < 1:
        raise ValueError(f"horizon and trial_episodes must be positive, got {H} and {k}")
    T, N, od, ad = env.num_tasks, env.num_episodes, env.obs_dim, env.act_dim
    env.set_tasks(tasks)
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    obs_buf = np.zeros((k, H + 1, T, N, od), np.float32)
    act_buf = np.zeros((k, H, T, N, ad), np.float32)
    rew_buf = np.zeros((k, H, T, N), np.float32)
    mask_buf = np.zeros((k, H, T, N), np.float32)
    term_buf = np.zeros((k, H, T, N), bool)
    success_buf = None  # made by the first step that reports success (Meta-World)
    # the previous step of each environment; the torch views share the arrays' memory
    prev_action = np.zeros((T, N, ad), np.float32)
    prev_reward = np.zeros((T, N), np.float32)
    prev_done = np.zeros((T, N), np.float32)
    feedback = (torch.from_numpy(prev_action), torch.from_numpy(prev_reward),
                torch.from_numpy(prev_done))
    track_feedback = _uses_feedback(policy)
    state = policy.initial_state((T, N))
    check_state(state)
    stateful = state is not None
    # a memoryless policy is called straight (the per-step cost of the old closure contract)
    act = policy.act if isinstance(policy, MemorylessPolicy) else None
    step_threads = int(policy_threads) if getattr(policy, "parallel_step", False) else None
    new_state = None
    for j in range(k):
        obs_buf[j, 0] = env.reset(rng, generator)
        # the steps episode j takes at least and at most (1 and H: until all are over)
        if j < len(episode_steps):
            fewest = most = int(episode_steps[j])
        else:
            fewest, most = (H if simulated is not None and j == k - 1 else 1), H
        if simulated is not None:
            env.active[~simulated] = False
        live = bool(env.active.any())
        for t in range(most):
            mask_buf[j, t] = env.active
            if act is not None:
                actions = act(torch.from_numpy(obs_buf[j, t]), generator)
            elif step_threads is not None:
                with torch_threads(step_threads):
                    actions, new_state = policy.step(torch.from_numpy(obs_buf[j, t]), state,
                                                     *feedback, generator)
            else:
                actions, new_state = policy.step(torch.from_numpy(obs_buf[j, t]), state,
                                                 *feedback, generator)
            act_buf[j, t] = actions.numpy() if isinstance(actions, torch.Tensor) else actions
            if live:
                step = env.step(act_buf[j, t])
                obs_buf[j, t + 1], rew_buf[j, t], term_buf[j, t] = (step.obs, step.reward,
                                                                    step.terminated)
                if step.success is not None:
                    if success_buf is None:
                        success_buf = np.zeros((k, H, T, N), bool)
                    success_buf[j, t] = step.success
            else:  # a share whose environments are over: the policy acts on (for its noise)
                obs_buf[j, t + 1] = obs_buf[j, t]
            if stateful or track_feedback:  # memoryless policies skip this bookkeeping
                was_active = mask_buf[j, t] > 0
            if stateful and not was_active.all():
                new_state = hold_state(torch.from_numpy(was_active), new_state, state)
            state = new_state
            if track_feedback:
                np.copyto(prev_action, act_buf[j, t], where=was_active[..., None])
                np.copyto(prev_reward, rew_buf[j, t], where=was_active)
                ended = term_buf[j, t] | (t == H - 1)
                np.copyto(prev_done, ended.astype(np.float32), where=was_active)
            live = bool(env.active.any())
            if not live and t + 1 >= fewest:
                break

    def tnl(a):  # slot-major [k, H, T, N, ...] → [T, N, k·H, ...]
        return torch.from_numpy(np.ascontiguousarray(
            np.moveaxis(a, (0, 1), (2, 3)).reshape(T, N, k * H, *a.shape[4:])))

    return Episodes(obs=tnl(obs_buf[:, :-1]), actions=tnl(act_buf), rewards=tnl(rew_buf),
                    next_obs=tnl(obs_buf[:, 1:]), mask=tnl(mask_buf), terminated=tnl(term_buf),
                    tasks=np.array(env.tasks), trial_episodes=k,
                    success=None if success_buf is None else tnl(success_buf))


class Sampler:
    """What a method samples through (it receives one; it never builds its own).

    ``sample(policy, tasks, rng, episodes, horizon=None, trial_episodes=1)`` runs ``episodes``
    environments per task of the tasks ``tasks [T, k]`` (ψ), each one trial of
    ``trial_episodes`` consecutive episodes of ``horizon`` steps (default: the family's), and
    returns `Episodes` ``[T, episodes, trial_episodes·horizon]``. Equal ``rng`` states give
    equal episodes, on every backend.
    """

    family: TaskFamily

    def sample(self, policy: Policy, tasks, rng: np.random.Generator, episodes: int, *,
               horizon: int | None = None, trial_episodes: int = 1) -> Episodes:
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """The backend's own numbers since the previous call, for a metrics.csv row (the Ray
        backend: ``sampler/restarts``); none for an in-process backend."""
        return {}

    def close(self) -> None:
        """Free the backend's workers (nothing for an in-process backend)."""


class LocalSampler(Sampler):
    """The default backend: the family's batched simulator in this process, T·N environments in
    lock-step. Environments are built once per (T, N) shape and reused."""

    def __init__(self, family: TaskFamily | str, threads: int | None = None):
        self.family = get_family(family)
        self.threads = threads
        self._envs: dict[tuple[int, int], BatchEnv] = {}

    def environments(self, num_tasks: int, num_episodes: int) -> BatchEnv:
        """The (cached) batched simulator for ``num_tasks`` × ``num_episodes``."""
        key = (int(num_tasks), int(num_episodes))
        if key not in self._envs:
            self._envs[key] = make_batch_env(self.family, *key, threads=self.threads)
        return self._envs[key]

    def sample(self, policy, tasks, rng, episodes, *, horizon=None, trial_episodes=1):
        tasks = self.family.check_tasks(tasks)
        env = self.environments(len(tasks), episodes)
        with single_torch_thread() as threads:
            return rollout(env, policy, tasks, rng, horizon or self.family.horizon,
                           trial_episodes, policy_threads=threads)
