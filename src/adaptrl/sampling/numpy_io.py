"""NumPy at the edge of the rollout contract: an adapted policy acting in ordinary (Gymnasium)
environments one step at a time, and episodes recorded there turned into `Episodes`.

The sampler drives policies on torch batches ``[T, N, obs_dim]``; a user holding one
``gym.make(...)`` environment has one NumPy observation. `NumpyPolicy` bridges the two: it keeps
the batch, the recurrent state and the previous action / reward / done flag a stateful policy
reads, so the same object serves MAML's MLP and RL²'s GRU.
"""

from __future__ import annotations

import numpy as np
import torch

from .episodes import Episodes
from .policy import Policy


class NumpyPolicy:
    """A sampler `Policy` adapted to T tasks, acting on NumPy observations (``act``).

    With one task (T = 1, or a policy from `for_task`): ``obs [obs_dim]`` (one environment)
    gives one action, ``obs [N, obs_dim]`` (N environments of the task) gives ``[N, ...]``.
    With T tasks: ``obs [T, obs_dim]`` (one environment per task) or ``[T, N, obs_dim]``.
    An action is ``[act_dim]`` float32 for a box, an ``int`` action index for discrete actions.

    Recurrent policies (RL², SNAIL, ``policy=gru``) remember the trial between calls: pass
    ``reward`` and ``done``, what the environment returned with ``obs`` (``done``: the previous
    episode ended and ``obs`` starts the next one of the same trial), and call `reset` to start
    a new trial. Memoryless policies ignore them. Policy noise comes from a torch generator
    seeded with ``seed``. ``info``: what produced the policy (the API puts the adaptation's
    ``samples`` per task and ``seconds`` there).
    """

    def __init__(self, policy: Policy, num_tasks: int, obs_dim: int, act_dim: int,
                 discrete: bool = False, seed: int = 0, task: int | None = None,
                 info: dict | None = None):
        if task is not None and not 0 <= task < num_tasks:
            raise IndexError(f"task {task} out of range: this policy is adapted to "
                             f"{num_tasks} task(s)")
        self.policy, self.num_tasks, self.task = policy, num_tasks, task
        self.obs_dim, self.act_dim, self.discrete = obs_dim, act_dim, discrete
        self.seed, self.info = seed, dict(info or {})
        self.generator = torch.Generator().manual_seed(seed)
        self.reset()

    def for_task(self, task: int) -> NumpyPolicy:
        """The policy of task ``task`` alone (its own memory and noise stream)."""
        return NumpyPolicy(self.policy, self.num_tasks, self.obs_dim, self.act_dim,
                           self.discrete, self.seed + 1 + task, task, self.info)

    def reset(self) -> None:
        """Forget the trial so far (the next `act` starts a new trial)."""
        self._num_envs = None
        self._state = None

    def act(self, obs, reward=None, done=None):
        """The action(s) for ``obs`` (see the class docstring for the shapes)."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim == 0 or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"an observation has {self.obs_dim} values; got an array of "
                             f"shape {obs.shape}")
        full, pick = self._batch(obs)
        T, N = full.shape[:2]
        if self._num_envs != (T, N):  # a new trial, or the caller changed the batch
            self._num_envs = (T, N)
            self._state = self.policy.initial_state((T, N))
            self._prev_action = torch.zeros(T, N, self.act_dim)
            self._prev_reward = torch.zeros(T, N)
            self._prev_done = torch.zeros(T, N)
        if reward is not None:
            self._prev_reward[pick] = torch.as_tensor(
                np.broadcast_to(np.asarray(reward, np.float32), obs.shape[:-1]).copy()
            ).reshape(self._prev_reward[pick].shape)
        if done is not None:
            self._prev_done[pick] = torch.as_tensor(
                np.broadcast_to(np.asarray(done, np.float32), obs.shape[:-1]).copy()
            ).reshape(self._prev_done[pick].shape)
        with torch.no_grad():
            actions, self._state = self.policy.step(
                full, self._state, self._prev_action, self._prev_reward, self._prev_done,
                self.generator)
        self._prev_action = actions.detach().to(torch.float32)
        chosen = actions[pick].reshape(*obs.shape[:-1], self.act_dim)
        if self.discrete:
            index = chosen.argmax(-1).numpy()
            return int(index) if index.ndim == 0 else index
        return chosen.numpy().astype(np.float32, copy=False)

    def _batch(self, obs: np.ndarray):
        """``obs`` as the policy's ``[T, N, obs_dim]`` batch, and the index of the caller's
        environments in it."""
        T, data = self.num_tasks, torch.from_numpy(obs)
        if self.task is not None or T == 1:
            if obs.ndim > 2:
                raise ValueError(f"a one-task policy acts on obs [obs_dim] or [N, obs_dim]; "
                                 f"got shape {obs.shape}")
            rows = data.reshape(1, -1, self.obs_dim)
            task = self.task or 0
            if T == 1:
                return rows, (slice(0, 1),)
            full = torch.zeros(T, rows.shape[1], self.obs_dim)
            full[task] = rows[0]
            return full, (slice(task, task + 1),)
        if obs.ndim == 1 or obs.shape[0] != T or obs.ndim > 3:
            raise ValueError(f"this policy is adapted to {T} tasks: pass obs [{T}, obs_dim] or "
                             f"[{T}, N, obs_dim], or act with for_task(i); got shape "
                             f"{obs.shape}")
        return data.reshape(T, -1, self.obs_dim), (slice(None),)


def episodes_from_records(per_task: list[list[dict]], obs_dim: int, act_dim: int,
                          discrete: bool, tasks: np.ndarray) -> Episodes:
    """`Episodes [T, N, H]` from recorded episodes: ``per_task[i]`` lists task i's episodes,
    each a dict of arrays over its H_j steps: ``obs [H_j, obs_dim]``, ``action [H_j, act_dim]``
    (``[H_j]`` action indices for discrete actions), ``reward [H_j]``, ``next_obs [H_j,
    obs_dim]`` and optionally ``terminated [H_j]`` (default False). Shorter episodes and tasks
    with fewer episodes are padded with masked steps. ``tasks``: ψ ``[T, k]``."""
    T = len(per_task)
    if T == 0 or any(len(episodes) == 0 for episodes in per_task):
        raise ValueError("every task needs at least one recorded episode")
    N = max(len(episodes) for episodes in per_task)
    H = max(len(np.asarray(e["reward"]).reshape(-1)) for eps in per_task for e in eps)
    obs = np.zeros((T, N, H, obs_dim), np.float32)
    next_obs = np.zeros((T, N, H, obs_dim), np.float32)
    actions = np.zeros((T, N, H, act_dim), np.float32)
    rewards = np.zeros((T, N, H), np.float32)
    mask = np.zeros((T, N, H), np.float32)
    terminated = np.zeros((T, N, H), bool)
    for i, episodes in enumerate(per_task):
        for j, record in enumerate(episodes):
            missing = {"obs", "action", "reward", "next_obs"} - set(record)
            if missing:
                raise ValueError(f"recorded episode {j} of task {i} lacks "
                                 f"{', '.join(sorted(missing))}")
            reward = np.asarray(record["reward"], np.float32).reshape(-1)
            steps = len(reward)
            action = np.asarray(record["action"])
            if discrete:
                action = np.eye(act_dim, dtype=np.float32)[action.reshape(-1).astype(int)]
            fields = {"obs": (record["obs"], (steps, obs_dim)),
                      "next_obs": (record["next_obs"], (steps, obs_dim)),
                      "action": (action, (steps, act_dim))}
            for name, (value, shape) in fields.items():
                if np.shape(value) != shape:
                    raise ValueError(f"recorded episode {j} of task {i}: {name} has shape "
                                     f"{np.shape(value)}, expected {shape} ({steps} rewards)")
            obs[i, j, :steps] = record["obs"]
            next_obs[i, j, :steps] = record["next_obs"]
            actions[i, j, :steps] = action
            rewards[i, j, :steps] = reward
            mask[i, j, :steps] = 1.0
            if "terminated" in record:
                terminated[i, j, :steps] = np.asarray(record["terminated"], bool).reshape(-1)
    return Episodes(torch.from_numpy(obs), torch.from_numpy(actions), torch.from_numpy(rewards),
                    torch.from_numpy(next_obs), torch.from_numpy(mask),
                    torch.from_numpy(terminated), np.asarray(tasks, np.float64))
