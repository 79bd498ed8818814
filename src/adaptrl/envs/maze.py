"""Batched top-down grid mazes (``maze-small``, ``maze-large``): a CPU analogue of the visual
mazes of RL² §3.3 and SNAIL §5.2.4, not those first-person 3-D mazes (see
`adaptrl.tasks.families._maze`).

All T·N environments move at once with array operations: `MazeEnv._apply_tasks` turns each
task's ψ into a table ``[T, n, n, 4]`` of open passages, and a step looks the chosen move up in
it. The observation of a cell is ``[wall_n, wall_e, wall_s, wall_w, on_goal, bumped]``.
`maze_distances` and `maze_plan` give the shortest paths (breadth-first search, batched over
mazes) that the shortest-path oracle and the analytic oracle use.
"""

from __future__ import annotations

import numpy as np

from ..tasks.families import MAZE_MOVES, check_maze_tasks, maze_side
from .base import BatchEnv
from .render import draw_maze


def maze_distances(passable: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Moves from every cell to the goal along open passages, ``[..., n, n]`` int64 (−1 where
    the goal cannot be reached), by breadth-first search batched over the mazes
    ``passable [..., n, n, 4]`` (`maze_parts`) with goals ``goal [..., 2]``."""
    passable = np.asarray(passable, dtype=bool)
    lead, n = passable.shape[:-3], passable.shape[-2]
    ways = passable.reshape(-1, n, n, 4)
    goal = np.asarray(goal, dtype=np.int64).reshape(-1, 2)
    unknown = n * n  # larger than any distance
    dist = np.full(ways.shape[:-1], unknown, dtype=np.int64)
    dist[np.arange(len(dist)), goal[:, 0], goal[:, 1]] = 0
    for _ in range(n * n):
        new = dist.copy()
        # a cell is one move further than the neighbour its open side leads to
        new[:, 1:, :] = np.where(ways[:, 1:, :, 0], np.minimum(new[:, 1:, :], dist[:, :-1, :] + 1),
                                 new[:, 1:, :])
        new[:, :, :-1] = np.where(ways[:, :, :-1, 1],
                                  np.minimum(new[:, :, :-1], dist[:, :, 1:] + 1), new[:, :, :-1])
        new[:, :-1, :] = np.where(ways[:, :-1, :, 2],
                                  np.minimum(new[:, :-1, :], dist[:, 1:, :] + 1), new[:, :-1, :])
        new[:, :, 1:] = np.where(ways[:, :, 1:, 3], np.minimum(new[:, :, 1:], dist[:, :, :-1] + 1),
                                 new[:, :, 1:])
        if np.array_equal(new, dist):
            break
        dist = new
    dist[dist >= unknown] = -1
    return dist.reshape(*lead, n, n)


def maze_plan(passable: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """A shortest-path move from every cell, ``[..., n, n]`` int64 (0 N, 1 E, 2 S, 3 W): the
    first open move to a neighbour one step closer to the goal (`maze_distances`); on the goal
    and where it is unreachable, the first open move (0 in a closed cell)."""
    passable = np.asarray(passable, dtype=bool)
    n = passable.shape[-2]
    big = n * n + 1
    padded = np.pad(np.where(dist < 0, big, dist), [(0, 0)] * (dist.ndim - 2) + [(1, 1), (1, 1)],
                    constant_values=big)
    # the distance of the neighbour behind each side, [..., n, n, 4]
    behind = np.stack([padded[..., 0:n, 1:n + 1], padded[..., 1:n + 1, 2:n + 2],
                       padded[..., 2:n + 2, 1:n + 1], padded[..., 1:n + 1, 0:n]], axis=-1)
    closer = passable & (behind == dist[..., None] - 1) & (dist[..., None] > 0)
    return np.where(closer.any(-1), closer.argmax(-1), passable.argmax(-1))


class MazeEnv(BatchEnv):
    """Random perfect mazes, T tasks × N episodes: every episode starts on its task's start
    cell; a move through an open side changes the cell, a move into a wall keeps it (and sets
    the bumped bit). Deterministic: ``reset``'s generator is not used."""

    def __init__(self, family, num_tasks, num_episodes):
        super().__init__(family, num_tasks, num_episodes)
        self.side = maze_side(self.family.task_dim)
        n = self.side
        self.action_low = np.zeros(self.act_dim, np.float32)
        self.action_high = np.ones(self.act_dim, np.float32)
        self._task_of = np.arange(self.batch_size) // self.num_episodes
        self._pos = np.zeros((self.batch_size, 2), np.int64)
        self._open = np.zeros((self.num_tasks, n, n, 4), dtype=bool)
        self._start = np.zeros((self.num_tasks, 2), np.int64)
        self._goal = np.zeros((self.num_tasks, 2), np.int64)

    def _apply_tasks(self, tasks):
        self._open, self._start, self._goal = check_maze_tasks(tasks, self.side)

    @property
    def positions(self) -> np.ndarray:
        """The cell (row, col) of every environment, ``[T, N, 2]`` int64 (a copy)."""
        return self._pos.reshape(self.num_tasks, self.num_episodes, 2).copy()

    def _observe(self, rows: np.ndarray, pos: np.ndarray, bumped: np.ndarray) -> np.ndarray:
        task = self._task_of[rows]
        walls = ~self._open[task, pos[:, 0], pos[:, 1]]
        on_goal = (pos == self._goal[task]).all(-1)
        return np.concatenate([walls, on_goal[:, None], bumped[:, None]], axis=1).astype(
            np.float32)

    def _reset_state(self, rng):
        self._pos[:] = self._start[self._task_of]
        rows = np.arange(self.batch_size)
        return self._observe(rows, self._pos, np.zeros(self.batch_size, dtype=bool))

    def _reset_envs(self, index, rngs):
        self._pos[index] = self._start[self._task_of[index]]
        return self._observe(index, self._pos[index], np.zeros(len(index), dtype=bool))

    def _render(self, row, width, height):
        task = self._task_of[row]
        return draw_maze(self._open[task], self._pos[row], self._goal[task], width, height)

    def _simulate(self, index, action):
        rows = np.arange(self.batch_size) if index is None else index
        pos = self._pos[rows]
        move = action.argmax(-1)
        passes = self._open[self._task_of[rows], pos[:, 0], pos[:, 1], move]
        pos = pos + MAZE_MOVES[move] * passes[:, None]
        self._pos[rows] = pos
        return self._observe(rows, pos, ~passes)
