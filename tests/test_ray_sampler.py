"""The Ray sampling backend: the same episodes as the local backend for any number of workers,
workers that die are replaced without losing or repeating an episode, and Ray stays optional.

The tests that need Ray share one local Ray with 2 CPUs (started once for the module) and skip
when Ray is not installed (``pip install 'adaptrl[ray]'``)."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from adaptrl.errors import AdaptrlError
from adaptrl.nets import GaussianGRUPolicy, GaussianMLPPolicy
from adaptrl.sampling import LocalSampler, make_sampler

FIELDS = ("obs", "actions", "rewards", "next_obs", "mask", "terminated")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def two_workers(ray_cluster):
    from adaptrl.sampling.ray_backend import RaySampler

    sampler = RaySampler("point-nav", 2)
    yield sampler
    sampler.close()


def _assert_same(local, remote):
    for name in FIELDS:
        assert torch.equal(getattr(local, name), getattr(remote, name)), name
    assert np.array_equal(local.tasks, remote.tasks)
    assert local.trial_episodes == remote.trial_episodes


def _both(sampler, policy, tasks, episodes, **kwargs):
    """(local episodes, remote episodes), each from a generator seeded 7; the generators must
    be left in the same state."""
    local_rng, remote_rng = np.random.default_rng(7), np.random.default_rng(7)
    local = LocalSampler(sampler.family).sample(policy, tasks, local_rng, episodes, **kwargs)
    remote = sampler.sample(policy, tasks, remote_rng, episodes, **kwargs)
    assert local_rng.bit_generator.state == remote_rng.bit_generator.state
    return local, remote


def _walker(act_dim=2):
    """A point-nav policy that walks +x at full speed (tiny noise): goals on the x axis are
    reached after a known number of steps, and the others never."""
    torch.manual_seed(0)
    net = GaussianMLPPolicy(2, act_dim, (4,), init_log_std=-9.0)
    with torch.no_grad():
        net.layers[-1].weight.zero_()
        net.layers[-1].bias.copy_(torch.tensor([0.1, 0.0]))
    return net.actor()


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_episodes_equal_the_local_backends(ray_cluster, workers):
    from adaptrl.sampling.ray_backend import RaySampler

    sampler = RaySampler("cheetah-vel", workers)
    try:
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(17, 6, (16, 16)).actor()
        tasks = sampler.family.sample(3, np.random.default_rng(0))
        local, remote = _both(sampler, policy, tasks, 2, horizon=25)
        _assert_same(local, remote)
        assert sampler.last_call["passes"] == 1
    finally:
        sampler.close()


def test_trials_with_early_ends_follow_the_whole_batchs_schedule(two_workers):
    """Trials of 3 episodes of a GRU policy, where one worker's goals are all reached before
    the other's: its episodes are replayed with the batch's step counts, so the policy noise
    of the next episodes, and the padding, are the local backend's."""
    torch.manual_seed(1)
    gru = GaussianGRUPolicy(2, 2, hidden_size=8).actor()
    walker = _walker()
    # worker 0 owns goals reached after 3 and 2 steps, worker 1 goals after 1 and 4 steps
    tasks = np.array([[0.3, 0.0], [0.2, 0.0], [0.1, 0.0], [0.4, 0.0]])
    local, remote = _both(two_workers, walker, tasks, 2, horizon=10, trial_episodes=3)
    _assert_same(local, remote)
    assert two_workers.last_call["passes"] == 3  # episodes 0 and 1 disagreed, then replayed
    local, remote = _both(two_workers, gru, tasks, 3, horizon=10, trial_episodes=3)
    _assert_same(local, remote)


def test_a_worker_dying_mid_call_is_replaced_and_nothing_is_lost(two_workers, ray_cluster):
    ray = ray_cluster
    policy, tasks = _walker(), np.array([[0.3, 0.0], [0.5, 0.5], [0.2, 0.0]])
    before = two_workers.restarts
    two_workers.metrics()  # (counts from here)
    ray.get(two_workers.workers[1].fail_after_each_sample.remote())  # dies before answering
    local, remote = _both(two_workers, policy, tasks, 2, horizon=8)
    _assert_same(local, remote)
    assert two_workers.restarts == before + 1
    assert two_workers.metrics() == {"sampler/restarts": 1.0}
    # a worker process killed between calls is found dead at the next one and replaced
    os.kill(ray.get(two_workers.workers[0].pid.remote()), signal.SIGKILL)
    local, remote = _both(two_workers, policy, tasks, 2, horizon=8)
    _assert_same(local, remote)
    assert two_workers.restarts == before + 2


@pytest.mark.slow  # a worker started for it: ~5 s
def test_a_worker_that_keeps_dying_stops_the_call_naming_it(two_workers, ray_cluster, monkeypatch):
    ray = ray_cluster
    fresh = two_workers._new_worker

    def failing_worker():
        worker = fresh()
        ray.get(worker.fail_after_each_sample.remote())
        return worker

    monkeypatch.setattr(two_workers, "_new_worker", failing_worker)
    monkeypatch.setattr(two_workers, "max_restarts", 1)
    ray.get(two_workers.workers[1].fail_after_each_sample.remote())
    with pytest.raises(AdaptrlError, match=r"ray sampling worker 1 failed 2 times in one call"):
        two_workers.sample(_walker(), np.array([[0.3, 0.0], [0.2, 0.0]]),
                           np.random.default_rng(0), 1, horizon=5)
    monkeypatch.undo()  # (the next call replaces the dead worker with a healthy one)


@pytest.mark.slow  # a worker started for it: ~5 s
def test_a_worker_that_does_not_answer_in_time_is_an_error_not_a_hang(two_workers, monkeypatch):
    two_workers.workers[1] = two_workers._new_worker()  # the last test left it dead
    monkeypatch.setattr(two_workers, "timeout_s", 0.01)
    monkeypatch.setattr(two_workers, "max_restarts", 0)
    with pytest.raises(AdaptrlError, match=r"worker \d failed 1 times .*no answer within 0.01 s"):
        two_workers.sample(_walker(), np.array([[0.5, 0.5], [-0.5, 0.5]]),
                           np.random.default_rng(0), 50, horizon=100)


def test_without_ray_the_ray_backend_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.delitem(sys.modules, "adaptrl.sampling.ray_backend", raising=False)
    with pytest.raises(AdaptrlError, match=r"needs Ray.*pip install 'adaptrl\[ray\]'"):
        make_sampler("point-nav", "ray", workers=2)
    with pytest.raises(AdaptrlError, match="need --backend ray"):
        make_sampler("point-nav", "local", workers=2)
    with pytest.raises(AdaptrlError, match="unknown sampler backend 'rey'"):
        make_sampler("point-nav", "rey")


def test_the_local_backend_imports_no_ray():
    code = ("import sys, numpy as np; from adaptrl import cli, runner; "
            "from adaptrl.sampling import make_sampler, UniformPolicy; "
            "s = make_sampler('point-nav'); "
            "s.sample(UniformPolicy([-1, -1], [1, 1]), [[0.1, 0.2]], np.random.default_rng(0), 1); "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_cli_refuses_a_missing_ray_and_stray_ray_options_in_one_line(monkeypatch, capsys):
    from adaptrl.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "adaptrl.sampling.ray_backend", raising=False)
    assert main(["bench", "sampler", "point-nav", "--backend", "ray", "--workers", "1,2"]) == 2
    assert main(["bench", "sampler", "point-nav", "--workers", "2"]) == 2
    assert main(["train", "maml", "point-nav", "--backend", "ray", "--out", "unused"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors[0].startswith("adaptrl: error: --backend ray needs Ray") and \
        "pip install 'adaptrl[ray]'" in errors[0]
    assert errors[1] == "adaptrl: error: --workers and --ray-address need --backend ray"
    assert errors[2] == errors[0] and len(errors) == 3
