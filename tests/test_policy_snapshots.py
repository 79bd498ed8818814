"""Every policy the library has turns into a snapshot that pickles on its own and is rebuilt in
another process, where it acts exactly as the original (what a remote sampler relies on)."""

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from adaptrl.algos import get_algorithm
from adaptrl.config import make_config
from adaptrl.envs import action_bounds
from adaptrl.nets import CategoricalGRUPolicy, GaussianGRUPolicy, GaussianMLPPolicy
from adaptrl.sampling import ContinueTrial, LocalSampler, PolicySnapshot, UniformPolicy
from adaptrl.tasks import get_family

H, N = 12, 2


def _method(name, family, *overrides):
    cls = get_algorithm(name)
    torch.manual_seed(0)
    return cls(get_family(family), make_config(cls, "smoke", list(overrides)))


def _adapted(name, family, budget, *overrides):
    method = _method(name, family, *overrides)
    tasks = method.family.split("test", 3, np.random.default_rng(1))
    return tasks, method.adapt(tasks, [budget], np.random.default_rng(2))[0].policy


def _every_policy():
    """(label, family, tasks, policy) for every kind of policy the methods hand out."""
    torch.manual_seed(0)
    mlp = GaussianMLPPolicy(2, 2, (8, 8), "tanh")
    gru = GaussianGRUPolicy(2, 2, 6)
    nav = get_family("point-nav")
    tasks = nav.split("test", 3, np.random.default_rng(0))
    per_task = {k: v.detach() + 0.01 * i for i, (k, v) in enumerate(mlp.expand_params(3).items())}
    cases = [
        ("mlp shared", "point-nav", tasks, mlp.actor()),
        ("mlp per task, deterministic", "point-nav", tasks, mlp.actor(per_task, True)),
        ("gru shared", "point-nav", tasks, gru.actor()),
        ("gru per task", "point-nav", tasks,
         gru.actor({k: v.detach() for k, v in gru.expand_params(3).items()})),
        ("uniform", "point-nav", tasks, UniformPolicy(*action_bounds(nav))),
        ("gru resumed in a trial", "point-nav", tasks,
         ContinueTrial(gru.actor(), torch.randn(3, 6), torch.randn(3, 2), torch.randn(3),
                       torch.ones(3))),
    ]
    bandit = get_family("bandit-k5")
    categorical = CategoricalGRUPolicy(1, 5, 6)
    cases.append(("categorical gru", "bandit-k5", bandit.sample(3, np.random.default_rng(0)),
                  categorical.actor()))
    for name, budget, extra in [("maml", 1, ()), ("reptile", 1, ()), ("oracle", 0, ()),
                                ("maml", 1, ("policy=gru",)), ("pearl", 1, ()),
                                ("pearl", 1, ("adapt_z=sample",)), ("flap", 1, ()),
                                ("grbal", 1, ("candidates=8", "plan_horizon=2"))]:
        label = f"{name} adapted" + (f" ({', '.join(extra)})" if extra else "")
        cases.append((label, "point-nav", *_adapted(name, "point-nav", budget, *extra)))
    cases.append(("admrl adapted", "hopper-2d", *_adapted("admrl", "hopper-2d", 0)))
    return cases


def _actions(family, tasks, policy, seed=5):
    episodes = LocalSampler(family).sample(policy, tasks, np.random.default_rng(seed), N,
                                           horizon=H, trial_episodes=2)
    return episodes.actions


CHILD = textwrap.dedent("""
    import pickle, sys
    import numpy as np, torch
    from adaptrl.sampling import LocalSampler
    cases = pickle.load(open(sys.argv[1], "rb"))
    bad = []
    for label, family, tasks, snapshot, expected in cases:
        policy = snapshot.build()
        episodes = LocalSampler(family).sample(policy, tasks, np.random.default_rng(5), {N},
                                               horizon={H}, trial_episodes=2)
        if not torch.equal(episodes.actions, expected):
            bad.append(label)
    loaded = sorted(m for m in sys.modules if m.startswith("adaptrl.algos")
                    or m.startswith("adaptrl.runner") or m.startswith("adaptrl.eval"))
    print("MISMATCH", bad)
    print("LOADED", loaded)
""").format(N=N, H=H)


def test_every_policy_rebuilds_in_another_process_with_identical_actions(tmp_path,
                                                                       one_torch_thread):
    cases = []
    for label, family, tasks, policy in _every_policy():
        snapshot = policy.snapshot()
        assert isinstance(snapshot, PolicySnapshot), label
        blob = pickle.dumps(snapshot)
        # data, not a method: no algorithm, sampler or buffer rides along
        for forbidden in (b"adaptrl.algos", b"ReplayBuffer", b"Sampler"):
            assert forbidden not in blob, (label, forbidden)
        assert len(blob) < 2_000_000, (label, len(blob))
        # rebuilt here too, it acts as the original
        assert torch.equal(_actions(family, tasks, snapshot.build()),
                           _actions(family, tasks, policy)), label
        cases.append((label, family, tasks, snapshot, _actions(family, tasks, policy)))
    path = tmp_path / "snapshots.pkl"
    path.write_bytes(pickle.dumps(cases))
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                         text=True, timeout=240,
                         env={"ADAPTRL_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
                              "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MISMATCH []" in out.stdout, out.stdout
    assert "LOADED []" in out.stdout, out.stdout  # the worker never imports a method


def test_a_snapshot_naming_something_else_is_refused():
    with pytest.raises(ValueError, match="cannot be imported"):
        PolicySnapshot("adaptrl.nets.policy:NoSuchPolicy").build()
    with pytest.raises(ValueError, match="not a Policy"):
        PolicySnapshot("adaptrl.nets.policy:GaussianMLPPolicy").build()
