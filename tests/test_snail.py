"""SNAIL's policy network: the cached step-by-step actor the sampler drives and the one-pass
causal evaluation over whole trials compute the same thing (held steps included), the state
after a step resumes a trial exactly, snapshots rebuild it, and RL²'s trainer runs it."""

import numpy as np
import pytest
import torch

from adaptrl.errors import AdaptrlError
from adaptrl.eval import evaluate
from adaptrl.nets import GaussianGRUPolicy
from adaptrl.nets.snail import SNAILActor, SNAILPolicy, tc_depth
from adaptrl.runner import load_run, train
from adaptrl.sampling import ContinueTrial, LocalSampler
from adaptrl.sampling.policy import hold_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"filters": 8, "key_size": 8, "value_size": 6, "embed": 8}


def _net(obs_dim, act_dim, max_length, head="gaussian", seed=0, **sizes):
    torch.manual_seed(seed)
    return SNAILPolicy(obs_dim, act_dim, max_length, head=head, value_head=True,
                       init_log_std=-0.5, **{**SMALL, **sizes})


class Recorder(SNAILActor):
    """The SNAIL actor, logging the head's output and the value at every step it is called;
    ``script`` (an action ``[act_dim]``) replaces its actions (the network still steps)."""

    def __init__(self, net, script=None):
        super().__init__(net, None, deterministic=True)
        self.script, self.outputs, self.values = script, [], []

    @torch.no_grad()
    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        params = self.current_params()
        x = self.net.step_inputs(obs, prev_action, prev_reward, prev_done)
        f, state = self.net.cached_step(x, state, params)
        self.outputs.append(self.net.head_output(f, params))
        self.values.append(self.net.value_output(f, params))
        if self.script is not None:
            return self.script.expand(*obs.shape[:2], -1).clone(), state
        return self.net.act_from(f, params, generator, True), state


def _full_pass(net, episodes):
    inputs = net.inputs(episodes.obs, episodes)
    with torch.no_grad():
        out, _ = net(inputs)
        _, _, values = net.evaluate(inputs, episodes.actions)
    return out, values


def _assert_steps_match_full_pass(net, actor, episodes):
    out, values = _full_pass(net, episodes)
    assert len(actor.outputs) == episodes.mask.shape[-1]  # the sampler called every step
    torch.testing.assert_close(torch.stack(actor.outputs, 2), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(actor.values, 2), values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family, head, horizon, trial_episodes", [
    ("point-nav", "gaussian", 7, 3),
    ("bandit-k5", "categorical", None, 20),
])
def test_cached_steps_through_the_sampler_equal_the_full_sequence_pass(
        family, head, horizon, trial_episodes):
    sampler = LocalSampler(family)
    fam = sampler.family
    H = horizon or fam.horizon
    net = _net(fam.obs_dim, fam.act_dim, trial_episodes * H, head)
    actor = Recorder(net)
    tasks = fam.sample(3, np.random.default_rng(0))
    episodes = sampler.sample(actor, tasks, np.random.default_rng(1), 2, horizon=H,
                              trial_episodes=trial_episodes)
    _assert_steps_match_full_pass(net, actor, episodes)
    out, _ = _full_pass(net, episodes)
    if head == "gaussian":  # the deterministic actor acts with the mean
        torch.testing.assert_close(episodes.actions, out, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(episodes.actions.argmax(-1), out.argmax(-1))


def test_episodes_ended_early_leave_no_trace_in_the_context():
    """point-nav: moving right reaches a goal at x = +0.3 after 3 steps (the episode ends and
    the sampler holds the state for the rest of its slot), never one at x = −0.3. The network
    steps under the sampler's holds exactly as the full pass over the masked trial computes."""
    sampler = LocalSampler("point-nav")
    H, k = 6, 3
    net = _net(2, 2, k * H)
    actor = Recorder(net, script=torch.tensor([0.1, 0.0]))
    episodes = sampler.sample(actor, [[0.3, 0.0], [-0.3, 0.0]], np.random.default_rng(0), 2,
                              horizon=H, trial_episodes=k)
    assert episodes.mask[0].sum(-1).tolist() == [3 * k] * 2  # 3 steps taken per slot
    assert episodes.mask[1].all()
    _assert_steps_match_full_pass(net, actor, episodes)


def _random_inputs(T, N, L, obs_dim, act_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, L, obs_dim, generator=g)
    prev_action = torch.randn(T, N, L, act_dim, generator=g)
    prev_reward = torch.randn(T, N, L, generator=g)
    prev_done = (torch.rand(T, N, L, generator=g) < 0.2).float()
    mask = torch.ones(T, N, L)
    mask[0, 1, 5:9] = 0  # a gap in the middle
    mask[1, 2, 10:] = 0  # the rest of the trial
    mask[1, 0, 3] = 0
    mask[0, 0, 0] = 0  # a trial whose first step is held
    return obs, prev_action, prev_reward, prev_done, mask


def _manual_loop(net, inputs, states_at=()):
    """The actor's cached steps over ``inputs`` with the state held on masked steps, as the
    sampler does; the head outputs, values ``[T, N, L]`` and the states after ``states_at``."""
    obs, prev_action, prev_reward, prev_done, mask = inputs
    T, N, L = mask.shape
    params = net.params()
    state = net.actor().initial_state((T, N))
    outs, values, states = [], [], {}
    with torch.no_grad():
        for t in range(L):
            x = net.step_inputs(obs[:, :, t], prev_action[:, :, t], prev_reward[:, :, t],
                                prev_done[:, :, t])
            f, new = net.cached_step(x, state, params)
            outs.append(net.head_output(f, params))
            values.append(net.value_output(f, params))
            state = hold_state(mask[:, :, t] > 0, new, state)
            if t in states_at:
                states[t] = {k: v.clone() for k, v in state.items()}
    return torch.stack(outs, 2), torch.stack(values, 2), states


@pytest.mark.parametrize("head", ["gaussian", "categorical"])
def test_masked_steps_full_pass_equals_the_held_cached_steps(head):
    T, N, L = 2, 3, 24
    net = _net(3, 4, L, head)
    inputs = _random_inputs(T, N, L, 3, 4)
    outs, values, states = _manual_loop(net, inputs, states_at=(4, 12))
    actions = torch.nn.functional.one_hot(torch.arange(T * N * L) % 4, 4).float()
    with torch.no_grad():
        out, _ = net(inputs)
        _, _, full_values = net.evaluate(inputs, actions.reshape(T, N, L, 4))
    torch.testing.assert_close(outs, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values, full_values, atol=1e-5, rtol=1e-5)
    # state_after gives the cache the sampler carried (row 0 of each task), held steps left out
    for t, carried in states.items():
        with torch.no_grad():
            state = net.state_after(inputs, torch.full((T,), t))
        count = carried["count"][:, 0]
        assert torch.equal(state["count"], count)
        for i in range(T):
            c = int(count[i])
            torch.testing.assert_close(state["features"][i, :c], carried["features"][i, 0, :c],
                                       atol=1e-5, rtol=1e-5)
            for key in ("keys", "values"):
                torch.testing.assert_close(state[key][i, :, :c], carried[key][i, 0, :, :c],
                                           atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("network", ["snail", "gru"])
def test_states_after_several_budgets_equal_one_state_after_each(network):
    T, N, L = 2, 3, 24
    inputs = _random_inputs(T, N, L, 3, 4)
    torch.manual_seed(0)
    net = _net(3, 4, L) if network == "snail" else GaussianGRUPolicy(3, 4, 16)
    lasts = [torch.tensor([3, 7]), torch.tensor([11, 2]), torch.tensor([23, 23])]
    with torch.no_grad():
        together = net.states_after(inputs, lasts)
        alone = [net.state_after(inputs, last) for last in lasts]
    for a, b in zip(together, alone):
        for x, y in zip(*(s.values() if isinstance(s, dict) else [s] for s in (a, b))):
            assert torch.equal(x, y)


def test_inputs_at_held_steps_change_no_other_output():
    net = _net(3, 2, 24)
    inputs = _random_inputs(2, 3, 24, 3, 2)
    mask = inputs[-1]
    changed = [x.clone() for x in inputs[:-1]]
    for x in changed:
        x[mask == 0] += 5.0
    with torch.no_grad():
        before, _ = net(inputs)
        after, _ = net((*changed, mask))
    taken = mask > 0
    torch.testing.assert_close(after[taken], before[taken], atol=1e-6, rtol=0)
    assert not torch.allclose(after[~taken], before[~taken])


def test_causality_changing_step_t_changes_no_earlier_output():
    net = _net(3, 2, 40)
    inputs = _random_inputs(2, 3, 40, 3, 2)
    with torch.no_grad():
        before, _ = net(inputs)
        for t in (0, 7, 23, 39):
            changed = [x.clone() for x in inputs[:-1]]
            for x in changed:
                x[:, :, t] += 3.0
            after, _ = net((*changed, inputs[-1]))
            torch.testing.assert_close(after[:, :, :t], before[:, :, :t], atol=1e-6, rtol=0)
            assert not torch.allclose(after[:, :, t], before[:, :, t])


def test_tc_depth_and_channel_growth_follow_the_paper():
    assert [tc_depth(n) for n in (1, 2, 3, 4, 5, 100, 128, 129, 4000)] == [
        1, 1, 2, 2, 3, 7, 7, 8, 12]
    net = SNAILPolicy(2, 3, 100, filters=5, key_size=4, value_size=6, embed=7)
    assert net.dilations == (2, 4, 8, 16, 32, 64, 128)  # receptive field 255 ≥ 100
    assert net.channels == 7 + 2 * (7 * 5 + 6)
    assert sorted(net.config()) == sorted(["obs_dim", "act_dim", "max_length", "head",
                                           "value_head", "init_log_std", "filters",
                                           "key_size", "value_size", "embed"])


def test_a_trial_resumed_from_its_state_continues_as_the_whole_trial():
    net = _net(2, 2, 18)
    sampler = LocalSampler("point-nav")
    tasks, H = [[0.1, -0.4], [-0.2, 0.3]], 6
    whole = sampler.sample(net.actor(deterministic=True), tasks, np.random.default_rng(0), 1,
                           horizon=H, trial_episodes=3)
    first = sampler.sample(net.actor(deterministic=True), tasks, np.random.default_rng(0), 1,
                           horizon=H, trial_episodes=1)
    assert first.mask.all()
    with torch.no_grad():
        state = net.state_after(net.inputs(first.obs, first), torch.full((2,), H - 1))
    assert state["count"].tolist() == [H, H] and state["features"].shape[:2] == (2, 19)
    resumed = ContinueTrial(net.actor(deterministic=True), state, first.actions[:, 0, H - 1],
                            first.rewards[:, 0, H - 1], torch.ones(2))
    rest = sampler.sample(resumed, tasks, np.random.default_rng(0), 3, horizon=H,
                          trial_episodes=2)
    for n in range(3):  # every environment of a task resumes from the task's state
        torch.testing.assert_close(rest.actions[:, n], whole.actions[:, 0, H:], atol=1e-5,
                                   rtol=1e-5)
    rebuilt = resumed.snapshot().build()
    again = sampler.sample(rebuilt, tasks, np.random.default_rng(0), 3, horizon=H,
                           trial_episodes=2)
    assert torch.equal(again.actions, rest.actions)


@pytest.mark.parametrize("family, head", [("point-nav", "gaussian"),
                                          ("bandit-k5", "categorical")])
def test_snapshot_round_trip_gives_identical_actions(family, head):
    sampler = LocalSampler(family)
    fam = sampler.family
    H = 5 if family == "point-nav" else 1
    net = _net(fam.obs_dim, fam.act_dim, 4 * H, head)
    actor = net.actor()  # stochastic: the noise comes from the rollout's generator
    rebuilt = actor.snapshot().build()
    assert isinstance(rebuilt, SNAILActor) and rebuilt.net.config() == net.config()
    tasks = fam.sample(3, np.random.default_rng(0))
    a = sampler.sample(actor, tasks, np.random.default_rng(5), 2, horizon=H, trial_episodes=4)
    b = sampler.sample(rebuilt, tasks, np.random.default_rng(5), 2, horizon=H, trial_episodes=4)
    assert torch.equal(a.actions, b.actions)


def test_the_gradient_of_the_log_likelihood_is_finite_and_reaches_every_layer():
    net = _net(3, 2, 24)
    inputs = _random_inputs(2, 3, 24, 3, 2)
    actions = torch.randn(2, 3, 24, 2, generator=torch.Generator().manual_seed(3))
    log_prob, entropy, values = net.evaluate(inputs, actions)
    assert log_prob.shape == entropy.shape == values.shape == (2, 3, 24)
    (log_prob * inputs[-1]).sum().backward()
    for name, p in net.named_parameters():
        if name.startswith("value."):
            assert p.grad is None
            continue
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_a_trial_longer_than_max_length_is_an_error():
    net = _net(2, 2, 4)
    actor = net.actor()
    state = actor.initial_state((1, 2))
    args = (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2), torch.zeros(1, 2),
            torch.Generator().manual_seed(0))
    for _ in range(4):
        _, state = actor.step(args[0], state, *args[1:])
    with pytest.raises(AdaptrlError, match="max_length"):
        actor.step(args[0], state, *args[1:])


def test_snail_trains_with_rl2s_trainer_and_evaluates_episode_by_episode(tmp_path):
    run_dir = train("snail", "bandit-k5", preset="smoke", out=tmp_path / "run", progress=False)
    algo, _, info = load_run(run_dir)
    assert info["iteration"] == 3 and isinstance(algo.policy, SNAILPolicy)
    assert algo.policy.max_length == 10 and algo.policy.filters == 16
    tasks = algo.family.split("test", 6, np.random.default_rng(0))
    result = evaluate(algo, algo.family, tasks, [0, 1, 5], 4, np.random.default_rng(1))
    assert result["budget_unit"] == "episodes in the trial"
    assert [t["samples"] for t in result["tasks"]][0] == [0, 1, 5]
    returns = np.array([t["returns"] for t in result["tasks"]])
    assert returns.shape == (6, 3) and set(np.unique(returns)) <= {0.0, 0.25, 0.5, 0.75, 1.0}


def test_rl2_builds_snail_on_request_and_trains_a_gaussian_head():
    from adaptrl.algos import get_algorithm
    from adaptrl.config import make_config
    from adaptrl.tasks import get_family

    cls = get_algorithm("rl2")
    torch.manual_seed(0)
    algo = cls(get_family("point-nav"), make_config(
        cls, "smoke", ["network=snail", "trial_episodes=2", "horizon=10"]))
    assert isinstance(algo.policy, SNAILPolicy) and algo.policy.head == "gaussian"
    assert algo.policy.max_length == 20
    metrics = algo.train_step(np.random.default_rng(0))
    assert np.isfinite(metrics["return"]) and metrics["ppo/updates"] > 0
    tasks = algo.family.split("test", 2, np.random.default_rng(0))
    adapted = algo.adapt(tasks, [0, 1], np.random.default_rng(1))[1]
    state, _ = adapted.policy.initial_state((2, 3))
    assert state["count"].tolist() == [[10] * 3] * 2
