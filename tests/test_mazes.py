"""The top-down maze families (``maze-small``, ``maze-large``): random perfect mazes, the batched
environment, the maze baselines, the analytic oracle and the papers' maze metrics.

Walls, cells and shortest paths are checked against a reading of ψ's layout written here by
hand (sets of open passages and a plain breadth-first search), not against the library's own
`maze_parts` / `maze_distances`."""

from __future__ import annotations

import collections
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import adaptrl  # noqa: F401  (registers the views)
from adaptrl.algos.classical import RandomMoves, ShortestPathOracle, WallFollower
from adaptrl.cli import main
from adaptrl.envs import make_batch_env
from adaptrl.errors import AdaptrlError
from adaptrl.eval.baselines import classical_baselines
from adaptrl.eval.maze import maze_metrics
from adaptrl.eval.oracles import get_oracle, oracle_returns
from adaptrl.sampling import Episodes, LocalSampler
from adaptrl.tasks import get_family
from adaptrl.tasks.families import MAZE_TRAIN_POOL, maze_side, maze_task_dim

SIDES = {"maze-small": 5, "maze-large": 9}
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # N, E, S, W


def _rng(seed):
    return np.random.default_rng(seed)


def _passages(psi, n) -> set:
    """The open passages of ψ as a set of cell pairs: east_r_c (r < n, c < n−1), then south_r_c
    (r < n−1, c < n), 1 = open."""
    edges = set()
    for r in range(n):
        for c in range(n - 1):
            if psi[r * (n - 1) + c] == 1.0:
                edges.add(frozenset({(r, c), (r, c + 1)}))
    for r in range(n - 1):
        for c in range(n):
            if psi[n * (n - 1) + r * n + c] == 1.0:
                edges.add(frozenset({(r, c), (r + 1, c)}))
    return edges


def _cells(psi):
    start_row, start_col, goal_row, goal_col = (int(v) for v in psi[-4:])
    return (start_row, start_col), (goal_row, goal_col)


def _bfs(edges, n, source) -> dict:
    dist, queue = {source: 0}, collections.deque([source])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES:
            nxt = (r + dr, c + dc)
            if nxt not in dist and frozenset({(r, c), nxt}) in edges:
                dist[nxt] = dist[(r, c)] + 1
                queue.append(nxt)
    return dist


def _path(edges, n, start, goal) -> list[int]:
    """The moves of a shortest path from start to goal."""
    dist = _bfs(edges, n, goal)
    moves, here = [], start
    while here != goal:
        for m, (dr, dc) in enumerate(MOVES):
            nxt = (here[0] + dr, here[1] + dc)
            if frozenset({here, nxt}) in edges and dist[nxt] == dist[here] - 1:
                moves.append(m)
                here = nxt
                break
    return moves


def _observation(edges, cell, goal, bumped):
    walls = [float(frozenset({cell, (cell[0] + dr, cell[1] + dc)}) not in edges)
             for dr, dc in MOVES]
    return np.array(walls + [float(cell == goal), float(bumped)], np.float32)


def _root(parent, cell):
    while parent[cell] != cell:
        cell = parent[cell]
    return cell


def _one_hot(moves):
    return np.eye(4, dtype=np.float32)[moves]


# ─── the mazes ───────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("name", list(SIDES))
def test_mazes_are_perfect_with_distinct_start_and_goal(name, split):
    """Connected, n² − 1 open passages and no cycle: a spanning tree of the grid."""
    family, n = get_family(name), SIDES[name]
    tasks = family.split(split, 40, _rng(0))
    assert tasks.shape == (40, maze_task_dim(n)) and maze_side(tasks.shape[1]) == n
    assert set(np.unique(tasks[:, :-4]).tolist()) <= {0.0, 1.0}
    for psi in tasks:
        edges = _passages(psi, n)
        assert len(edges) == n * n - 1
        assert len(_bfs(edges, n, (0, 0))) == n * n  # connected
        parent = {(r, c): (r, c) for r in range(n) for c in range(n)}
        for a, b in map(tuple, edges):  # no passage closes a cycle (union-find)
            assert _root(parent, a) != _root(parent, b)
            parent[_root(parent, a)] = _root(parent, b)
        start, goal = _cells(psi)
        assert start != goal and all(0 <= v < n for v in start + goal)
    np.testing.assert_array_equal(family.split(split, 5, _rng(7)), family.split(split, 5, _rng(7)))
    assert not np.array_equal(family.split(split, 5, _rng(7)), family.split(split, 5, _rng(8)))


def test_train_mazes_come_from_a_fixed_pool_and_test_mazes_are_fresh():
    family = get_family("maze-small")
    a, b = (family.split("train", 3000, _rng(seed)) for seed in (1, 2))
    seen_a, seen_b = ({row.tobytes() for row in x} for x in (a, b))
    assert len(seen_a | seen_b) <= MAZE_TRAIN_POOL
    assert len(seen_a) > 900 and len(seen_a & seen_b) > 850  # the same pool, ~95 % drawn
    test = family.split("test", 200, _rng(1))
    assert not any(row.tobytes() in seen_a | seen_b for row in test)


@pytest.mark.parametrize("name", list(SIDES))
def test_mazes_have_no_boundary_split_and_say_so(name):
    with pytest.raises(AdaptrlError, match="no boundary split"):
        get_family(name).boundary(3, _rng(0))


def test_termination_and_reward_read_the_goal_and_bumped_bits():
    family = get_family("maze-small")
    obs = torch.zeros(2, 3, 6)
    obs[0, 1, 4] = 1.0  # on the goal
    obs[1, 2, 5] = 1.0  # bumped
    obs[1, 0, :4] = 1.0  # walls do not matter
    psi = torch.zeros(2, 1, family.task_dim)
    torch.testing.assert_close(family.terminated(obs, psi),
                               torch.tensor([[False, True, False], [False, False, False]]))
    torch.testing.assert_close(family.reward(obs, torch.zeros(2, 3, 4), obs, psi),
                               torch.tensor([[-0.01, 0.99, -0.01], [-0.01, -0.01, -0.011]]))


# ─── the environment ─────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("name", list(SIDES))
def test_moves_follow_open_passages_and_walls_keep_the_agent_in_place(name):
    family, n = get_family(name), SIDES[name]
    T, N = 6, 3
    tasks = family.split("test", T, _rng(3))
    env = make_batch_env(family, T, N)
    env.set_tasks(tasks)
    obs = env.reset(_rng(0))
    edges = [_passages(psi, n) for psi in tasks]
    cells = [_cells(psi) for psi in tasks]
    pos = {(i, j): cells[i][0] for i in range(T) for j in range(N)}
    for (i, j), cell in pos.items():
        np.testing.assert_array_equal(obs[i, j], _observation(edges[i], cell, cells[i][1], False))
    rng, bumps, moves = _rng(1), 0, 0
    for _ in range(80):
        if not env.active.any():
            break
        action = rng.integers(0, 4, size=(T, N))
        active = env.active.copy()
        result = env.step(_one_hot(action))
        for (i, j), cell in pos.items():
            if not active[i, j]:
                assert result.reward[i, j] == 0.0
                continue
            dr, dc = MOVES[action[i, j]]
            target = (cell[0] + dr, cell[1] + dc)
            passes = frozenset({cell, target}) in edges[i]
            pos[i, j] = target if passes else cell
            bumps, moves = bumps + (not passes), moves + passes
            goal = cells[i][1]
            np.testing.assert_array_equal(result.obs[i, j],
                                          _observation(edges[i], pos[i, j], goal, not passes))
            assert tuple(env.positions[i, j]) == pos[i, j]
            assert result.terminated[i, j] == (pos[i, j] == goal)
            expected = float(pos[i, j] == goal) - 0.01 - 0.001 * (not passes)
            assert result.reward[i, j] == pytest.approx(expected, abs=1e-6)
    assert bumps > 50 and moves > 50


@pytest.mark.parametrize("name", list(SIDES))
def test_reaching_the_goal_pays_one_and_ends_the_episode_in_the_gym_view(name):
    family, n = get_family(name), SIDES[name]
    psi = family.split("test", 1, _rng(11))[0]
    edges, (start, goal) = _passages(psi, n), _cells(psi)
    env = gym.make(family.gym_id).unwrapped
    assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n == 4
    env.set_task(psi)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, _observation(edges, start, goal, False))
    wall = int(np.flatnonzero(obs[:4])[0])  # a perfect maze's cell has a wall or three
    obs, reward, terminated, truncated, _ = env.step(wall)
    assert obs[5] == 1.0 and reward == pytest.approx(-0.011, abs=1e-6)
    np.testing.assert_array_equal(obs[:5], _observation(edges, start, goal, True)[:5])
    path = _path(edges, n, start, goal)
    for t, move in enumerate(path):
        obs, reward, terminated, truncated, _ = env.step(move)
        last = t == len(path) - 1
        assert terminated == last and not truncated and obs[4] == float(last)
        assert reward == pytest.approx(0.99 if last else -0.01, abs=1e-6)
    with pytest.raises(RuntimeError):
        env.step(0)


def test_environment_rejects_a_goal_on_the_start_or_off_the_grid():
    family = get_family("maze-small")
    env = make_batch_env(family, 1, 1)
    psi = family.split("test", 1, _rng(0))
    same = psi.copy()
    same[0, -2:] = same[0, -4:-2]
    with pytest.raises(ValueError, match="differ"):
        env.set_tasks(same)
    off = psi.copy()
    off[0, -1] = 5.0
    with pytest.raises(ValueError, match="5×5"):
        env.set_tasks(off)


# ─── baselines, the oracle and the metrics ───────────────────────────────────────────────────
@pytest.mark.parametrize("name", list(SIDES))
def test_shortest_path_oracle_takes_the_bfs_length_and_earns_the_analytic_oracle(name):
    family, n = get_family(name), SIDES[name]
    tasks = family.split("test", 60, _rng(5))
    lengths = np.array([_bfs(_passages(psi, n), n, _cells(psi)[1])[_cells(psi)[0]]
                        for psi in tasks])
    episodes = LocalSampler(family).sample(ShortestPathOracle(tasks), tasks, _rng(6), 2,
                                           trial_episodes=2)
    H = family.horizon
    steps = episodes.mask.reshape(60, 2, 2, H).sum(-1)
    assert (steps.numpy() == lengths[:, None, None]).all()  # every trial, both episodes
    assert bool(episodes.terminated.reshape(60, 2, 2, H).any(-1).all())
    assert bool((episodes.obs[..., 5][episodes.mask > 0] == 0).all())  # never hits a wall
    assert get_oracle(family).kind == "analytic"
    oracle = oracle_returns(family, tasks)
    np.testing.assert_allclose(oracle, 1.0 - 0.01 * lengths, atol=1e-5)
    returns = episodes.trial_episode_returns().double().numpy()
    np.testing.assert_array_equal(returns, np.broadcast_to(oracle[:, None, None], returns.shape))


@pytest.mark.parametrize("name", list(SIDES))
def test_each_episode_of_a_trial_restarts_at_the_start_of_the_same_maze(name):
    family, n = get_family(name), SIDES[name]
    tasks = family.split("test", 8, _rng(9))
    H = family.horizon
    optimal = LocalSampler(family).sample(ShortestPathOracle(tasks), tasks, _rng(1), 1,
                                          trial_episodes=2)
    torch.testing.assert_close(optimal.actions[:, :, :H], optimal.actions[:, :, H:])
    episodes = LocalSampler(family).sample(RandomMoves(), tasks, _rng(2), 2, trial_episodes=2)
    obs, next_obs, mask = (x.numpy() for x in (episodes.obs, episodes.next_obs, episodes.mask))
    moves = episodes.actions.argmax(-1).numpy()
    for i, psi in enumerate(tasks):  # replay each episode from the start cell of ψ's maze
        edges, (start, goal) = _passages(psi, n), _cells(psi)
        for row in range(2):
            for j in range(2):
                cell = start
                np.testing.assert_array_equal(obs[i, row, j * H],
                                              _observation(edges, start, goal, False))
                for t in range(j * H, (j + 1) * H):
                    if mask[i, row, t] == 0:
                        break
                    dr, dc = MOVES[moves[i, row, t]]
                    target = (cell[0] + dr, cell[1] + dc)
                    passes = frozenset({cell, target}) in edges
                    cell = target if passes else cell
                    np.testing.assert_array_equal(next_obs[i, row, t],
                                                  _observation(edges, cell, goal, not passes))


def test_random_moves_often_miss_the_goal_of_large_mazes_and_the_metrics_say_so():
    family = get_family("maze-large")
    tasks = family.split("test", 100, _rng(4))
    sampler = LocalSampler(family)
    random = maze_metrics(sampler.sample(RandomMoves(), tasks, _rng(0), 1, trial_episodes=2))
    best = maze_metrics(sampler.sample(ShortestPathOracle(tasks), tasks, _rng(0), 1,
                                       trial_episodes=2))
    assert random["trials"] == best["trials"] == 100 and random["episodes"] == 2
    assert best["success"] == [1.0, 1.0] and best["improved"] == 1.0
    assert best["improved_strictly"] == 0.0  # it repeats its path: ties count as improved
    assert best["steps"] == best["steps_successful"] and best["steps"][0] == best["steps"][1]
    for j in range(2):
        assert 0.2 < random["success"][j] < 0.7  # within the cap of 1000 steps
        assert random["steps"][j] > 20 * best["steps"][j]
        # a failed episode counts the whole cap
        assert random["steps"][j] == pytest.approx(
            random["success"][j] * random["steps_successful"][j]
            + (1 - random["success"][j]) * family.horizon)
        assert random["return"][j] < 0 < best["return"][j]
    assert 0.2 < random["improved"] < 0.8 and random["improved_trials"] < 60


@pytest.mark.parametrize("name", list(SIDES))
def test_wall_follower_finds_every_goal_and_learns_nothing_between_episodes(name):
    family, n = get_family(name), SIDES[name]
    tasks = family.split("test", 100, _rng(12))
    episodes = LocalSampler(family).sample(WallFollower(), tasks, _rng(3), 1, trial_episodes=2)
    metrics = maze_metrics(episodes)
    assert metrics["success"] == [1.0, 1.0]
    assert episodes.mask.reshape(100, 2, -1).sum(-1).max() <= 2 * (n * n - 1)
    assert bool((episodes.obs[..., 5][episodes.mask > 0] == 0).all())  # never hits a wall
    first, second = metrics["steps"]
    assert second > 0.8 * first  # no memory: the second episode is no shorter
    best = oracle_returns(family, tasks)
    assert metrics["return"][1] < best.mean() - 0.05


def test_maze_metrics_of_hand_made_trials():
    """Three trials of 2 episodes of 4 steps: (3, 2 steps), (2, 4 steps), (failed, 1 step)."""
    T, N, H = 1, 3, 4
    lengths = [(3, 2), (2, 4), (4, 1)]
    reached = [(True, True), (True, True), (False, True)]
    mask = torch.zeros(T, N, 2 * H)
    terminated = torch.zeros(T, N, 2 * H, dtype=torch.bool)
    rewards = torch.zeros(T, N, 2 * H)
    for row, (steps, ok) in enumerate(zip(lengths, reached)):
        for j in range(2):
            mask[0, row, j * H:j * H + steps[j]] = 1.0
            rewards[0, row, j * H:j * H + steps[j]] = -0.01
            if ok[j]:
                terminated[0, row, j * H + steps[j] - 1] = True
                rewards[0, row, j * H + steps[j] - 1] = 0.99
    zeros = torch.zeros(T, N, 2 * H, 6)
    episodes = Episodes(zeros, torch.zeros(T, N, 2 * H, 4), rewards, zeros, mask, terminated,
                        np.zeros((1, 44)), trial_episodes=2)
    m = maze_metrics(episodes)
    assert (m["trials"], m["episodes"]) == (3, 2)
    assert m["success"] == pytest.approx([2 / 3, 1.0])
    assert m["steps"] == pytest.approx([3.0, 7 / 3])
    assert m["steps_successful"] == pytest.approx([2.5, 7 / 3])
    assert m["return"] == pytest.approx([(0.97 + 0.98 - 0.04) / 3, (0.98 + 0.96 + 0.99) / 3])
    assert m["improved_trials"] == 2 and m["improved"] == 0.5 and m["improved_strictly"] == 0.5
    assert m["steps_ci95"][0] == pytest.approx(4.302653 * 1.0 / np.sqrt(3))  # t_{0.975, 2}
    one = maze_metrics(episodes.per_episode())  # one-episode trials: no improvement measure
    assert one["improved"] is None and one["improved_strictly"] is None
    assert one["improved_trials"] == 0 and one["trials"] == 6


def test_maze_baselines_through_the_cli_beside_the_oracle(tmp_path):
    assert set(classical_baselines("maze-large", 2)) == {"random", "wall-follower"}
    out = tmp_path / "baselines"
    assert main(["baselines", "maze-small", "--trial-episodes", "2", "--num-tasks", "5",
                 "--episodes", "2", "--out", str(out)]) == 0
    results = {name: json.loads((out / name / "eval" / "test" / "eval.json").read_text())
               for name in ("random", "wall-follower", "shortest-path")}
    for name, result in results.items():
        assert result["algo"] == name and result["steps"] == [0, 1]
        assert result["oracle_kind"] == "analytic"
    for task in results["shortest-path"]["tasks"]:
        assert task["returns"] == [task["oracle"]] * 2
    tasks = [t["params"] for t in results["random"]["tasks"]]
    assert tasks == [t["params"] for t in results["shortest-path"]["tasks"]]


@pytest.mark.parametrize("make", [RandomMoves, WallFollower, ShortestPathOracle])
def test_maze_baselines_rebuild_from_their_snapshots(make):
    family = get_family("maze-small")
    tasks = family.split("test", 4, _rng(2))
    policy = make(tasks) if make is ShortestPathOracle else make()
    twin = policy.snapshot().build()
    a, b = (LocalSampler(family).sample(p, tasks, _rng(8), 2, trial_episodes=2)
            for p in (policy, twin))
    torch.testing.assert_close(a.actions, b.actions)
    with pytest.raises(ValueError, match="knows 4 task"):
        ShortestPathOracle(tasks).initial_state((3, 1))
