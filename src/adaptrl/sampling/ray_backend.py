"""The Ray sampling backend: `RaySampler` spreads a batch's tasks over Ray actors.

Imported only when ``--backend ray`` is asked for (`adaptrl.sampling.make_sampler`); the local
backend never imports Ray.

One call, ``sample(policy, tasks, rng, N)``:
  1. the policy's snapshot goes into the object store once (one ``ray.put`` per call); every
     worker receives the same reference;
  2. worker w owns whole tasks, a contiguous share ``[first, stop)`` of the T tasks, and runs
     `rollout` with ``simulated`` set to its share: it steps only its tasks' environments, but
     the policy acts for all T × N environments and every random number (resets, policy noise)
     is drawn as for the whole batch, from a copy of the caller's ``rng``. So its tasks'
     episodes are exactly the local backend's, whatever the number of workers;
  3. the shares come back as NumPy arrays and are stitched into one `Episodes` in task order,
     and the caller's ``rng`` is left where the local backend leaves it.

Where episodes end early, the whole batch's schedule is only known once every share is back:
an episode of a trial stops when all its environments are over, and the next episode's
policy noise continues from there. A worker stops its share's episode when its own
environments are over; when shares disagree on an episode before the last, the call is run
again with the whole batch's step counts so far (``episode_steps``); at most
``trial_episodes`` passes, one when episodes never end early or all end together (bandits).
The last episode runs the full horizon on every worker and is cut where the batch's ends.

Faults: a worker that dies mid-call (or gives no answer within ``timeout_s``) is replaced and
its share sampled again from the same copy of ``rng``, so nothing is lost or duplicated; each
restart is counted (`metrics`: ``sampler/restarts``) and reported on stderr, and a worker that
dies more than ``max_restarts`` times in one call stops the call with an `AdaptrlError` naming it.
"""

from __future__ import annotations

import os
import pickle
import sys
import time

import numpy as np
import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError

from ..errors import AdaptrlError
from ..tasks import TaskFamily, get_family
from .episodes import Episodes
from .policy import Policy
from .sampler import LocalSampler, Sampler, rollout, single_torch_thread

FIELDS = ("obs", "actions", "rewards", "next_obs", "mask", "terminated")
SENT = ("obs", "actions", "rewards", "mask", "terminated", "final_obs")  # what a worker returns
START_TIMEOUT_S = 120.0  # new workers: Ray starts a process and imports adaptrl in it


@ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)
class SamplerWorker:
    """One share of the tasks: the family's simulator for whole tasks, one thread."""

    def __init__(self, family_name: str):
        torch.set_num_threads(1)
        self.local = LocalSampler(family_name, threads=1)
        self.exit_after_sample = False  # a fault for tests: die before answering

    def pid(self) -> int:
        return os.getpid()

    def fail_after_each_sample(self) -> None:
        """Tests: from now on, exit the process after sampling, before answering."""
        self.exit_after_sample = True

    def sample(self, snapshot, tasks: np.ndarray, rng: np.random.Generator, episodes: int,
               horizon: int, trial_episodes: int, first: int, stop: int, episode_steps):
        """Tasks ``[first, stop)`` of the batch: ``(arrays, rng state after, rollout_s)``;
        ``arrays``: `Episodes` fields ``[stop − first, N, k·H, ...]`` but ``next_obs``, which
        repeats ``obs`` one step on: only each episode's last ``final_obs [stop − first, N, k,
        obs_dim]`` travels."""
        start = time.perf_counter()
        tasks = np.array(tasks)  # the object store's copy is read-only
        policy = snapshot.build()
        env = self.local.environments(len(tasks), episodes)
        simulated = np.zeros(len(tasks), bool)
        simulated[first:stop] = True
        with single_torch_thread():
            batch = rollout(env, policy, tasks, rng, horizon, trial_episodes,
                            simulated=simulated, episode_steps=episode_steps)
        arrays = {name: np.ascontiguousarray(getattr(batch, name)[first:stop].numpy())
                  for name in FIELDS if name != "next_obs"}
        arrays["final_obs"] = np.ascontiguousarray(
            batch.next_obs[first:stop, :, horizon - 1::horizon].numpy())
        if batch.success is not None:  # families that report success (Meta-World)
            arrays["success"] = np.ascontiguousarray(batch.success[first:stop].numpy())
        if self.exit_after_sample:
            os._exit(1)
        return arrays, rng.bit_generator.state, time.perf_counter() - start


def shares(num_tasks: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous whole-task shares ``[(first, stop), ...]``, at most one per task."""
    bounds = np.linspace(0, num_tasks, min(workers, num_tasks) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _episode_lengths(mask: np.ndarray, trial_episodes: int) -> list[int]:
    """The steps each episode slot of a share took: its last active step + 1."""
    slots = mask.reshape(*mask.shape[:2], trial_episodes, -1).any(axis=(0, 1))  # [k, H]
    return [int(np.flatnonzero(row)[-1]) + 1 if row.any() else 0 for row in slots]


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def start_ray(address: str | None = None, workers: int = 1) -> bool:
    """Connect to the Ray cluster at ``address``, or start a local one with a CPU per core (at
    least ``workers``; ``ADAPTRL_RAY_CPUS`` sets another count), unless Ray is already
    initialised; whether this call started it."""
    if ray.is_initialized():
        return False
    cpus = os.environ.get("ADAPTRL_RAY_CPUS", "")
    cpus = int(cpus) if cpus.isdigit() and int(cpus) > 0 else os.cpu_count() or 1
    try:
        if address is None:
            ray.init(num_cpus=max(workers, cpus), include_dashboard=False,
                     log_to_driver=True)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=True)
    except ConnectionError as err:
        raise AdaptrlError(f"cannot reach the Ray cluster at --ray-address {address}: "
                           f"{_one_line(err)}") from None
    return True


class RaySampler(Sampler):
    """Sampling on ``workers`` Ray actors (one CPU each), equal to `LocalSampler`'s episodes.

    address: a running Ray cluster (``ray.init(address=...)``); None starts a local one unless
    Ray is already initialised in this process. timeout_s: how long a call waits for a worker
    before it counts it as hung and replaces it. max_restarts: replacements of one worker in
    one call before the call fails.
    """

    def __init__(self, family: TaskFamily | str, workers: int = 2, *, address: str | None = None,
                 timeout_s: float = 600.0, max_restarts: int = 3):
        self.family = get_family(family)
        if int(workers) < 1:
            raise AdaptrlError(f"--workers must be at least 1, got {workers}")
        if self.family.body == "tabular_mdp":  # its steps draw one number per running env
            raise AdaptrlError(f"the ray backend cannot reproduce {self.family.name}'s "
                               "per-step transition noise; use --backend local")
        self.timeout_s, self.max_restarts = float(timeout_s), int(max_restarts)
        self.started_ray = start_ray(address, int(workers))
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < int(workers):
            raise AdaptrlError(f"--workers {workers} needs {workers} CPUs; the Ray cluster has "
                               f"{cpus:g}")
        self.workers = [self._new_worker() for _ in range(int(workers))]
        self._await_start()
        self.restarts = 0  # workers replaced, all calls together
        self._reported = 0  # ... of which `metrics` has reported
        self.last_call: dict = {}

    # ── workers ──
    def _new_worker(self):
        return SamplerWorker.remote(self.family.name)

    def _await_start(self) -> None:
        pings = [w.pid.remote() for w in self.workers]
        try:
            ray.get(pings, timeout=START_TIMEOUT_S)
        except GetTimeoutError:
            raise AdaptrlError(f"{len(self.workers)} Ray sampling workers did not start within "
                               f"{START_TIMEOUT_S:g} s (each needs 1 free CPU of the cluster); "
                               "use fewer --workers") from None

    def _replace(self, index: int, cause: str, deaths: list[int]) -> None:
        deaths[index] += 1
        ray.kill(self.workers[index], no_restart=True)  # dead already, or hung
        if deaths[index] > self.max_restarts:  # (the next call replaces it)
            raise AdaptrlError(f"ray sampling worker {index} failed {deaths[index]} times in "
                               f"one call (max_restarts={self.max_restarts}); last: {cause}")
        self.restarts += 1
        print(f"ray sampler: worker {index} restarted ({cause})", file=sys.stderr, flush=True)
        self.workers[index] = self._new_worker()

    def close(self) -> None:
        """Stop the workers (and Ray, if this sampler started it)."""
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []
        if self.started_ray and ray.is_initialized():
            ray.shutdown()

    def metrics(self) -> dict[str, float]:
        """``sampler/restarts``: workers replaced since the previous call."""
        new, self._reported = self.restarts - self._reported, self.restarts
        return {"sampler/restarts": float(new)}

    # ── sampling ──
    def sample(self, policy: Policy, tasks, rng, episodes, *, horizon=None, trial_episodes=1):
        tasks = self.family.check_tasks(tasks)
        H, k = int(horizon or self.family.horizon), int(trial_episodes)
        start = time.perf_counter()
        try:
            snapshot = policy.snapshot()
        except NotImplementedError as err:
            raise AdaptrlError(f"the ray backend sends policies as snapshots: {err}; use "
                               "--backend local") from None
        snapshot_ref = ray.put(snapshot)  # once per call; every worker gets the reference
        parts = shares(len(tasks), len(self.workers))
        schedule: list[int] = []
        passes = 0
        while True:
            passes += 1
            results = self._run(parts, snapshot_ref, tasks, rng, episodes, H, k, schedule)
            lengths = [_episode_lengths(arrays["mask"], k) for arrays, _, _ in results]
            known, agree = list(schedule), True
            for j in range(len(schedule), k - 1):
                known.append(max(steps[j] for steps in lengths))
                if any(steps[j] != known[j] for steps in lengths):
                    agree = False
                    break
            if agree:
                break
            schedule = known
        fields = FIELDS + (("success",) if "success" in results[0][0] else ())
        arrays = {name: np.concatenate([r[0][name] for r in results])
                  for name in SENT + fields[len(FIELDS):]}
        obs, next_obs = arrays["obs"], np.empty_like(arrays["obs"])
        next_obs[:, :, :-1] = obs[:, :, 1:]
        next_obs[:, :, H - 1::H] = arrays.pop("final_obs")
        arrays["next_obs"] = next_obs
        last = max(steps[k - 1] for steps in lengths)
        for name in fields:  # the batch's last episode took `last` steps: the rest is padding
            view = arrays[name].reshape(*arrays[name].shape[:2], k, H, *arrays[name].shape[3:])
            view[:, :, k - 1, last + (name == "obs"):] = 0  # obs: the last next_obs comes after
        rng.bit_generator.state = results[0][1]
        received = sum(a.nbytes for r in results for a in r[0].values())
        self.last_call = {"bytes_sent": len(pickle.dumps(snapshot)) + tasks.nbytes * len(parts),
                          "bytes_received": received, "passes": passes,
                          "call_s": time.perf_counter() - start,
                          "worker_rollout_s": max(r[2] for r in results)}
        return Episodes(**{name: torch.from_numpy(arrays[name]) for name in fields},
                        tasks=tasks.copy(), trial_episodes=k)

    def _run(self, parts, snapshot_ref, tasks, rng, episodes, H, k, schedule) -> list:
        """Every share sampled once (a dead or hung worker is replaced and its share sampled
        again, from the same copy of ``rng``); results in task order."""
        deaths = [0] * len(self.workers)

        def submit(i):
            first, stop = parts[i]
            return self.workers[i].sample.remote(snapshot_ref, tasks, rng, episodes, H, k,
                                                 first, stop, list(schedule))

        pending = {submit(i): i for i in range(len(parts))}
        results = [None] * len(parts)
        deadline = time.monotonic() + self.timeout_s
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1,
                                timeout=max(0.0, deadline - time.monotonic()))
            if not ready:  # past the deadline: the workers still at it count as hung
                for ref, i in list(pending.items()):
                    del pending[ref]
                    self._replace(i, f"no answer within {self.timeout_s:g} s", deaths)
                    pending[submit(i)] = i
                deadline = time.monotonic() + self.timeout_s
                continue
            i = pending.pop(ready[0])
            try:
                results[i] = ray.get(ready[0])
            except RayActorError as err:
                self._replace(i, _one_line(err), deaths)
                pending[submit(i)] = i
        return results
