"""The Python API for trained runs: ``adaptrl.load_run``, ``method.adapt`` (collecting or from
recorded episodes) and NumPy policies for single environments and batches; the README's
example runs verbatim."""

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import adaptrl
from adaptrl.errors import AdaptrlError
from adaptrl.runner import train

README = Path(__file__).parent.parent / "README.md"
TINY_NAV = ["iterations=1", "meta_batch=2", "fast_batch=2", "horizon=10", "hidden_sizes=[8, 8]"]


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory):
    """A one-iteration MAML point-nav run where `make demo` puts the demo's: runs/demo/maml."""
    root = tmp_path_factory.mktemp("api")
    train("maml", "point-nav", preset="smoke", overrides=TINY_NAV,
          out=root / "runs" / "demo" / "maml", progress=False)
    return root


def readme_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    found = [block for block in blocks if "adaptrl.load_run(" in block]
    assert found, "README.md has no Python example calling adaptrl.load_run"
    return found[0]


def test_readme_example_runs_verbatim_on_the_demo_maml_run(maml_run, monkeypatch, capsys,
                                                          one_torch_thread):
    monkeypatch.chdir(maml_run)
    namespace = {}
    exec(compile(readme_snippet(), str(README), "exec"), namespace)
    assert "return after one adaptation step" in capsys.readouterr().out
    assert namespace["policy"].info["samples"].shape == (1,)


def test_load_run_gives_the_method_its_config_and_the_run(maml_run):
    method = adaptrl.load_run(maml_run / "runs" / "demo" / "maml")
    assert isinstance(method, adaptrl.TrainedMethod)
    assert method.name == "maml" and method.family.name == "point-nav"
    assert method.config.fast_batch == 2 and method.info["iteration"] == 1


def test_policy_acts_on_one_observation_and_on_batches(maml_run, one_torch_thread):
    method = adaptrl.load_run(maml_run / "runs" / "demo" / "maml")
    one = method.adapt([0.3, -0.4], budget=1, seed=3)
    action = one.act(np.zeros(2))
    assert action.shape == (2,) and action.dtype == np.float32
    assert one.act(np.zeros((5, 2))).shape == (5, 2)
    again = method.adapt([0.3, -0.4], budget=1, seed=3)
    assert np.array_equal(again.act(np.zeros(2)), action)  # the seed fixes data and noise

    many = method.adapt(np.array([[0.3, -0.4], [-0.2, 0.1], [0.0, 0.5]]), budget=0)
    assert many.act(np.zeros((3, 2))).shape == (3, 2)
    assert many.act(np.zeros((3, 4, 2))).shape == (3, 4, 2)
    assert many.for_task(2).act(np.zeros(2)).shape == (2,)
    with pytest.raises(ValueError, match="adapted to 3 tasks"):
        many.act(np.zeros(2))
    with pytest.raises(ValueError, match="observation has 2 values"):
        one.act(np.zeros(3))


def test_adapt_from_recorded_episodes(maml_run, one_torch_thread):
    method = adaptrl.load_run(maml_run / "runs" / "demo" / "maml")
    rng = np.random.default_rng(0)
    record = {"obs": rng.normal(size=(7, 2)), "action": rng.normal(size=(7, 2)),
              "reward": rng.normal(size=7), "next_obs": rng.normal(size=(7, 2))}
    short = {k: v[:4] for k, v in record.items()}
    policy = method.adapt(episodes=[record, short])
    assert policy.info["samples"].tolist() == [11.0]
    assert policy.act(np.zeros(2)).shape == (2,)
    two = method.adapt(episodes=[[record], [short, record]])  # two tasks
    assert two.info["samples"].tolist() == [7.0, 11.0]
    with pytest.raises(AdaptrlError, match="either a budget"):
        method.adapt([0.3, 0.1], budget=1, episodes=[record])
    with pytest.raises(AdaptrlError, match="next_obs"):
        method.adapt(episodes=[{k: v for k, v in record.items() if k != "next_obs"}])
    with pytest.raises(AdaptrlError, match="tasks have 2 parameter"):
        method.adapt([0.3], budget=1)


def test_context_method_adapts_from_recorded_episodes(tmp_path, one_torch_thread):
    run_dir = train("flap", "point-nav", preset="smoke",
                    overrides=["iterations=1", "horizon=5", "num_train_tasks=2", "meta_batch=2",
                               "tasks_per_iteration=1", "initial_episodes=1",
                               "updates_per_iteration=1", "batch_size=8", "adapter_batch=8"],
                    out=tmp_path / "flap", progress=False)
    method = adaptrl.load_run(run_dir)
    env = gym.make("adaptrl/PointNav-v0")
    obs, _ = env.reset(seed=0, options={"task": [0.2, 0.2]})
    steps = {"obs": [], "action": [], "reward": [], "next_obs": []}
    for _ in range(5):
        action = env.action_space.sample()
        next_obs, reward, *_ = env.step(action)
        for key, value in zip(steps, (obs, action, reward, next_obs)):
            steps[key].append(value)
        obs = next_obs
    policy = method.adapt(episodes=[{k: np.array(v) for k, v in steps.items()}])
    assert env.action_space.contains(policy.act(obs))


def test_recurrent_policy_carries_its_memory_and_resets(tmp_path, one_torch_thread):
    run_dir = train("rl2", "bandit-k5", preset="smoke",
                    overrides=["iterations=1", "meta_batch=2", "fast_batch=1",
                               "trial_episodes=2"], out=tmp_path / "rl2", progress=False)
    method = adaptrl.load_run(run_dir)
    policy = method.adapt(np.full(5, 0.5), budget=0)
    env = gym.make("adaptrl/BanditK5-v0")
    obs, _ = env.reset(seed=0, options={"task": np.full(5, 0.5)})
    action = policy.act(obs)
    assert isinstance(action, int) and env.action_space.contains(action)
    memory = policy._state
    obs, reward, terminated, truncated, _ = env.step(action)
    policy.act(obs, reward=reward, done=terminated or truncated)
    assert policy._state is not memory
    policy.reset()
    assert policy._state is None
    with pytest.raises(AdaptrlError, match="adapts only from episodes it collects"):
        method.adapt(episodes=[{"obs": np.zeros((1, method.family.obs_dim)),
                                "action": np.zeros(1, int), "reward": np.zeros(1),
                                "next_obs": np.zeros((1, method.family.obs_dim))}])
