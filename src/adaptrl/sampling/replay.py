"""A per-task replay buffer for off-policy methods (SAC, PEARL, FLAP).

Each of T tasks owns a ring of ``capacity`` transitions in preallocated arrays ``[T, capacity,
...]``; when a task's ring is full its oldest transitions are overwritten. Transitions come in
as `Episodes` (only the steps with mask 1 are stored) and go out as dicts of tensors
``[len(tasks), batch, ...]`` drawn with one vectorized index per call from the
``numpy.random.Generator`` the caller passes.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import NonFiniteError
from .episodes import Episodes

FIELDS = ("obs", "action", "reward", "next_obs", "done")


class ReplayBuffer:
    """Transitions of ``num_tasks`` tasks, ``capacity`` per task, stored as float32 NumPy arrays.

    obs, next_obs: ``[T, capacity, obs_dim]``; action: ``[T, capacity, act_dim]``;
    reward, done: ``[T, capacity]``. ``done`` is 1 where the episode ended by the family's rule
    (``Episodes.terminated``); an episode cut by the horizon is not done, so targets bootstrap
    through it.
    """

    def __init__(self, num_tasks: int, capacity: int, obs_dim: int, act_dim: int):
        if min(num_tasks, capacity, obs_dim, act_dim) < 1:
            raise ValueError(
                f"replay buffer sizes must be positive: tasks {num_tasks}, capacity {capacity}, "
                f"obs {obs_dim}, act {act_dim}"
            )
        self.num_tasks, self.capacity = int(num_tasks), int(capacity)
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        T, C = self.num_tasks, self.capacity
        self.obs = np.zeros((T, C, self.obs_dim), np.float32)
        self.action = np.zeros((T, C, self.act_dim), np.float32)
        self.reward = np.zeros((T, C), np.float32)
        self.next_obs = np.zeros((T, C, self.obs_dim), np.float32)
        self.done = np.zeros((T, C), np.float32)
        self._size = np.zeros(T, np.int64)   # valid transitions per task
        self._next = np.zeros(T, np.int64)   # slot the next transition of each task goes to

    @property
    def size(self) -> np.ndarray:
        """Stored transitions per task, ``[T]`` int64 (a copy)."""
        return self._size.copy()

    def clear(self, tasks=None) -> None:
        """Forget the transitions of ``tasks`` (all by default); the arrays are kept."""
        rows = np.arange(self.num_tasks) if tasks is None else self._rows(tasks)
        self._size[rows] = 0
        self._next[rows] = 0

    def _rows(self, tasks) -> np.ndarray:
        rows = np.asarray(tasks, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_tasks):
            raise IndexError(f"task index out of range [0, {self.num_tasks}): {rows.tolist()}")
        return rows

    def add_episodes(self, episodes: Episodes, tasks=None) -> None:
        """Store the valid (mask = 1) steps of every episode, task by task.

        episodes: ``[Te, N, H, ...]``; its actions must already be in the space the learner
        uses (e.g. SAC's [-1, 1] before scaling to the env's bounds).
        tasks: the buffer row of each of the Te episode tasks (default ``0..Te-1``, which then
        must equal ``num_tasks``). Steps are stored episode by episode in time order; if more
        than ``capacity`` arrive for one task, only the last ``capacity`` are kept.
        A batch holding a NaN or infinity is refused whole (`adaptrl.errors.NonFiniteError`).
        """
        Te = episodes.num_tasks
        if tasks is None:
            if Te != self.num_tasks:
                raise ValueError(f"episodes hold {Te} task(s), the buffer {self.num_tasks}; "
                                 f"pass tasks= to say which buffer rows they fill")
            rows = np.arange(Te)
        else:
            rows = self._rows(tasks)
            if rows.size != Te:
                raise ValueError(f"tasks= names {rows.size} rows for {Te} episode task(s)")
            if np.unique(rows).size != rows.size:
                raise ValueError(f"tasks= repeats a row: {rows.tolist()}")
        if episodes.obs.shape[-1] != self.obs_dim or episodes.actions.shape[-1] != self.act_dim:
            raise ValueError(
                f"buffer holds obs {self.obs_dim} / act {self.act_dim}, episodes have obs "
                f"{episodes.obs.shape[-1]} / act {episodes.actions.shape[-1]}"
            )

        def flat(x: torch.Tensor, *trailing) -> np.ndarray:  # [Te, N, H, ...] -> [Te, N·H, ...]
            return x.detach().cpu().reshape(Te, -1, *trailing).numpy()

        valid = flat(episodes.mask) > 0
        data = {"obs": flat(episodes.obs, self.obs_dim),
                "action": flat(episodes.actions, self.act_dim),
                "reward": flat(episodes.rewards),
                "next_obs": flat(episodes.next_obs, self.obs_dim),
                "done": flat(episodes.terminated)}
        for name, values in data.items():  # refuse the whole batch before writing any of it
            if not np.isfinite(values).all():
                raise NonFiniteError(name.replace("_", " "), "replay insert")
        for i, row in enumerate(rows):
            steps = np.flatnonzero(valid[i])[-self.capacity:]
            n = steps.size
            slots = (self._next[row] + np.arange(n)) % self.capacity
            for name in FIELDS:
                getattr(self, name)[row, slots] = data[name][i, steps]
            self._next[row] = (self._next[row] + n) % self.capacity
            self._size[row] = min(self._size[row] + n, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator, tasks=None) -> dict:
        """``batch_size`` transitions per task, uniformly with replacement from what is stored.

        Returns float32 tensors ``obs [K, B, obs_dim]``, ``action [K, B, act_dim]``,
        ``reward [K, B]``, ``next_obs [K, B, obs_dim]``, ``done [K, B]`` for the K ``tasks``
        (all by default, in the order given).
        """
        rows = np.arange(self.num_tasks) if tasks is None else self._rows(tasks)
        sizes = self._size[rows]
        if (sizes == 0).any():
            raise ValueError(f"cannot sample from empty task(s) {rows[sizes == 0].tolist()}; "
                             f"add episodes for them first")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        # slots 0..size-1 are the valid ones whether or not the ring has wrapped
        index = rng.integers(0, sizes[:, None], size=(rows.size, int(batch_size)))
        return {name: torch.from_numpy(getattr(self, name)[rows[:, None], index])
                for name in FIELDS}

    # ── checkpoints ──
    def state_dict(self) -> dict:
        """Everything needed to restore the buffer: sizes, write positions and the stored data
        (only the filled prefix of each array, so an early checkpoint stays small), as tensors
        (checkpoints hold no NumPy arrays; `load_state_dict` takes either)."""
        filled = int(self._size.max())
        state = {"num_tasks": self.num_tasks, "capacity": self.capacity,
                 "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                 "size": torch.from_numpy(self._size.copy()),
                 "next": torch.from_numpy(self._next.copy())}
        for name in FIELDS:
            state[name] = torch.from_numpy(getattr(self, name)[:, :filled].copy())
        return state

    def load_state_dict(self, state: dict) -> None:
        shape = {k: state[k] for k in ("num_tasks", "capacity", "obs_dim", "act_dim")}
        ours = {"num_tasks": self.num_tasks, "capacity": self.capacity,
                "obs_dim": self.obs_dim, "act_dim": self.act_dim}
        if shape != ours:
            raise ValueError(f"replay buffer state is for {shape}, this buffer is {ours}")
        size = np.asarray(state["size"])
        filled = int(size.max())
        for name in FIELDS:
            array = getattr(self, name)
            array[:] = 0
            array[:, :filled] = np.asarray(state[name])
        self._size[:] = size
        self._next[:] = np.asarray(state["next"])
