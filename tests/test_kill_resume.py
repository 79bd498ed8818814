"""Kill anywhere, resume exactly (issue 16): a training process of every registered method is
SIGKILLed at a random moment (during an iteration, a metrics row or a checkpoint write), the run
is resumed (or started again when no checkpoint was written yet), and its metrics.csv,
config.yaml and checkpoints equal those of an uninterrupted run, with no temporary file of an
interrupted write left behind. 3 kills per method here, 10 in the slow group.

The trainer runs in a forked child of the test process (the same code path as `adaptrl train`,
without paying a fresh interpreter's imports per kill). A moment is a library event: a call into
or a return from the package's own code, or a call of a builtin from it (``sys.setprofile``
events whose frame is in ``src/adaptrl``); the child SIGKILLs itself at the n-th one. The
uninterrupted reference run counts them, so n is drawn (from a seeded `random.Random`) over the
whole run, and a failure names n and the code it stopped in: the same seed kills at the same
moment on any machine, however loaded. Uniform draws seldom land in a file write (a few hundred
of some 10⁴–10⁵ events), so every other kill is drawn among the events of the writing code only
(`adaptrl.atomic`, `write_run_checkpoint`, `MetricsLog`): between a temporary's creation and its
rename, between a checkpoint and its ``latest.pt`` link, in a metrics row. Every third trial
also kills the session that resumes the run, anywhere in it.
"""

from __future__ import annotations

import csv
import functools
import inspect
import os
import random
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import adaptrl
import adaptrl.atomic
from adaptrl.algos import ALGORITHMS
from adaptrl.checkpoint import (
    LATEST_NAME,
    latest_checkpoint,
    load_checkpoint,
    numbered_checkpoints,
    write_run_checkpoint,
)
from adaptrl.runner import MetricsLog, is_timing_column, train

# The smoke preset cut down to a few iterations of a few short episodes on tiny networks, each
# iteration checkpointed: the cheapest settings that still run every phase of each method.
POLICY_GRADIENT = ["iterations=4", "checkpoint_every=1", "horizon=5", "hidden_sizes=8",
                   "meta_batch=2", "fast_batch=2"]
OFF_POLICY = ["iterations=4", "checkpoint_every=1", "horizon=5", "hidden_sizes=8",
              "num_train_tasks=3", "meta_batch=2", "tasks_per_iteration=2", "initial_episodes=1",
              "updates_per_iteration=2", "batch_size=8", "replay_capacity=100",
              "context_capacity=100"]
MODEL_BASED = ["iterations=3", "checkpoint_every=1", "horizon=5", "hidden_sizes=8",
               "fast_batch=2", "n_zeroshot=1", "n_slbo=1", "n_slbo_first=1", "n_inner=1",
               "n_model=2", "n_policy=1", "virtual_episodes=2", "task_cg_iters=2",
               "model_hidden_sizes=8", "model_batch=8"]
MPC = ["iterations=3", "checkpoint_every=1", "horizon=6", "hidden_sizes=8", "meta_batch=2",
       "window=2", "future=2", "model_steps=2", "model_batch=4", "plan_horizon=2",
       "candidates=4"]
RECURRENT = ["iterations=4", "checkpoint_every=1", "meta_batch=2", "fast_batch=2",
             "trial_episodes=3", "hidden_sizes=8", "minibatches=1", "ppo_epochs=1"]
METHODS = {  # name: (family, overrides of its smoke preset)
    "maml": ("point-nav", POLICY_GRADIENT),
    "fomaml": ("point-nav", POLICY_GRADIENT),
    "reptile": ("point-nav", [*POLICY_GRADIENT, "reptile_steps=2"]),
    "random": ("point-nav", POLICY_GRADIENT),
    "pretrain": ("point-nav", POLICY_GRADIENT),
    "oracle": ("point-nav", POLICY_GRADIENT),
    "pearl": ("point-nav", [*OFF_POLICY, "encoder_hidden=8", "embedding_batch=8"]),
    "flap": ("point-nav", [*OFF_POLICY, "collect_episodes=1", "adapter_hidden=8",
                           "adapter_batch=8"]),
    "admrl": ("hopper-2d", MODEL_BASED),
    "mb-unif": ("hopper-2d", MODEL_BASED),
    "mb-gauss": ("hopper-2d", MODEL_BASED),
    "rl2": ("bandit-k5", RECURRENT),
    "snail": ("bandit-k5", RECURRENT),
    "grbal": ("cheetah-crippled", [*MPC, "learn_inner_lr=true"]),  # ψ resumes too
    "mb-mpc": ("cheetah-crippled", MPC),
    "mb-mpc-finetune": ("cheetah-crippled", MPC),
}
# the library's own methods (tests register plug-ins too): each must have settings above
REGISTERED = sorted(name for name, cls in ALGORITHMS.items()
                    if cls.__module__.startswith("adaptrl."))


def test_every_registered_method_is_killed_and_resumed():
    assert sorted(METHODS) == REGISTERED


# ─── library events ─────────────────────────────────────────────────────────────────────────
PACKAGE = os.path.dirname(adaptrl.__file__) + os.sep  # as the code objects name their files
ATOMIC = adaptrl.atomic.__file__
WRITERS = {write_run_checkpoint.__code__,
           *(getattr(f, "__func__", f).__code__ for f in vars(MetricsLog).values()
             if inspect.isfunction(getattr(f, "__func__", f)))}
OTHER, LIBRARY, WRITING = 0, 1, 2


def _kind(code, kinds: dict) -> int:
    """OTHER, LIBRARY or WRITING; ``kinds`` caches it by code object."""
    kind = kinds.get(code)
    if kind is None:
        name = code.co_filename
        kind = kinds[code] = (WRITING if name == ATOMIC or code in WRITERS
                              else LIBRARY if name.startswith(PACKAGE) else OTHER)
    return kind


@dataclass
class Reference:
    run: Path
    events: list  # (event, code) of every library event, in order
    writing: list[int]  # the (1-based) numbers of the events of the writing code

    def where(self, n: int) -> str:
        event, code = self.events[n - 1]
        return (f"library event {n} of {len(self.events)}: {event} in {code.co_name} "
                f"({Path(code.co_filename).name}:{code.co_firstlineno})")


def _train(algo, out, resume=False, extra=()):
    family, overrides = METHODS[algo]
    return train(algo, family, preset="smoke", overrides=[*overrides, *extra], out=out,
                 resume=resume, progress=False)


_references: dict[str, Reference] = {}


def _reference(algo, root: Path) -> Reference:
    """The uninterrupted run of ``algo`` and its library events (once per session)."""
    if algo not in _references:
        # a first run fills per-process caches and imports modules (a few dozen events), as
        # the test process's forked children find them
        _train(algo, root / f"{algo}-warm-up", extra=["iterations=1"])
        events, writing, kinds = [], [], {}

        def count(frame, event, arg):
            code = frame.f_code
            kind = _kind(code, kinds)
            if kind:
                events.append((event, code))
                if kind == WRITING:
                    writing.append(len(events))

        sys.setprofile(count)
        try:
            run = _train(algo, root / f"{algo}-whole")
        finally:
            sys.setprofile(None)
        assert writing, f"no library events counted: is {PACKAGE} where adaptrl runs from?"
        _references[algo] = Reference(run, events, writing)
    return _references[algo]


def _train_until_killed(algo, out: Path, at: int, resume=False) -> bool:
    """Train in a forked child that SIGKILLs itself at its ``at``-th library event; whether it
    was killed (False: it finished first)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            kinds, seen = {}, [0]

            def kill_at(frame, event, arg):
                if _kind(frame.f_code, kinds):
                    seen[0] += 1
                    if seen[0] == at:
                        os.kill(os.getpid(), signal.SIGKILL)

            sys.setprofile(kill_at)
            _train(algo, out, resume=resume)
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return True
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, \
        f"the training child failed (wait status {status})"
    return False


# ─── comparing two runs ─────────────────────────────────────────────────────────────────────
def _reproducible_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if not is_timing_column(k)}
                for row in csv.DictReader(handle)]


def _leaves(state, prefix=""):
    """Every leaf of a nested checkpoint payload, by key path."""
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return {prefix: state}
    found = {}
    for key, value in items:
        found.update(_leaves(value, f"{prefix}/{key}"))
    return found


@functools.cache
def _checkpoint_leaves(path: Path) -> dict:
    """A reference checkpoint's leaves (the elapsed time aside), read once."""
    leaves = _leaves(load_checkpoint(path))
    del leaves["/elapsed_s"]
    return leaves


def _checkpoint_difference(path: Path, reference: Path) -> str | None:
    """The first entry where a checkpoint differs from a reference one (the elapsed time
    aside), or None."""
    ours, theirs = _leaves(load_checkpoint(path)), _checkpoint_leaves(reference)
    del ours["/elapsed_s"]
    if ours.keys() != theirs.keys():
        return f"entries {sorted(ours.keys() ^ theirs.keys())}"
    for key, value in ours.items():
        other = theirs[key]
        if isinstance(value, torch.Tensor):
            same = (isinstance(other, torch.Tensor) and value.dtype == other.dtype
                    and torch.equal(value, other))
        else:
            same = type(value) is type(other) and value == other
        if not same:
            return key
    return None


def _check_equal_runs(out: Path, whole: Path, context: str) -> None:
    assert not _temporaries(out), f"{context}: stale {_temporaries(out)}"
    assert _reproducible_rows(out) == _reproducible_rows(whole), f"{context}: metrics.csv"
    assert (out / "config.yaml").read_text() == (whole / "config.yaml").read_text(), context
    ours, theirs = out / "checkpoints", whole / "checkpoints"
    assert latest_checkpoint(ours) == ours / LATEST_NAME, context
    pairs = [(ours / LATEST_NAME, theirs / LATEST_NAME)]
    kept = dict(numbered_checkpoints(ours))
    for iteration, path in numbered_checkpoints(theirs):
        assert iteration in kept, f"{context}: no {path.name}"
        pairs.append((kept.pop(iteration), path))
    # a kill between the last checkpoint and the pruning of older ones leaves those (nothing
    # is left to checkpoint when resuming): they are older than every one the reference keeps
    assert all(i < min(dict(numbered_checkpoints(theirs))) for i in kept), context
    for path, reference in pairs:
        difference = _checkpoint_difference(path, reference)
        assert difference is None, f"{context}: {path.name} differs at {difference}"


def _temporaries(run: Path) -> list[Path]:
    return list(run.rglob(".tmp-*"))


# ─── the kills ──────────────────────────────────────────────────────────────────────────────
def _kill_at_random_and_resume(algo, root: Path, trial: int, rng: random.Random) -> None:
    """Kill a run at a random library event (odd trials: one of the writing code), and every
    third trial the session that resumes (or restarts) it too; resume it; compare it with the
    uninterrupted reference."""
    reference = _reference(algo, root)
    out = root / f"{algo}-killed-{trial}"
    at = (rng.choice(reference.writing) if trial % 2 else
          rng.randint(1, len(reference.events)))
    context = f"{algo} trial {trial}, killed at {reference.where(at)}"
    assert _train_until_killed(algo, out, at), f"{context}: the run was not killed"
    if trial % 3 == 2:  # kill the next session too (it may finish first: fine)
        again = rng.randint(1, len(reference.events))
        resume = latest_checkpoint(out / "checkpoints") is not None
        if _train_until_killed(algo, out, again, resume=resume):
            context += f", then its {'resumed' if resume else 'restarted'} session at its " \
                       f"library event {again}"
    resume = latest_checkpoint(out / "checkpoints") is not None
    _train(algo, out, resume=resume)
    _check_equal_runs(out, reference.run, context)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("kills")


@pytest.mark.parametrize("algo", REGISTERED)
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_result(algo, root, one_torch_thread):
    rng = random.Random(f"{algo}-default")
    for trial in range(3):
        _kill_at_random_and_resume(algo, root, trial, rng)


@pytest.mark.slow
@pytest.mark.parametrize("algo", REGISTERED)
def test_ten_random_kills_per_method_resume_exactly(algo, root, one_torch_thread):
    rng = random.Random(f"{algo}-slow")
    for trial in range(10, 20):
        _kill_at_random_and_resume(algo, root, trial, rng)


def test_a_resume_removes_the_stale_temporaries_of_its_run(root, one_torch_thread):
    reference = _reference("maml", root)
    out = root / "maml-stale"
    _train("maml", out)
    stale = [out / "checkpoints" / ".tmp-latest.pt.999.deadbeef", out / ".tmp-metrics.csv.9.ab"]
    for path in stale:
        path.write_bytes(b"partial")
    _train("maml", out, resume=True)
    _check_equal_runs(out, reference.run, "maml, resumed with stale temporaries")
