"""The rollout contract: stateful policies, trials of several episodes, feedback, the Episodes
views of a trial, and one rollout loop for simulators and learned models."""

import numpy as np
import pytest
import torch

from adaptrl.nets import GaussianGRUPolicy, GaussianMLPPolicy
from adaptrl.sampling import Episodes, LocalSampler, ModelSampler, Policy, rollout
from adaptrl.sampling.model import ModelEnv

# point-nav: a goal at x = +0.3 is reached after 3 steps of +0.1 (the episode terminates), one
# at x = −0.3 never is when the policy only moves right
REACHED, NEVER = [0.3, 0.0], [-0.3, 0.0]
SCALE = 1e-6  # the count rides on the second action dimension, too small to move the point


class StepCounter(Policy):
    """Moves right and reports, in its second action dimension, how many steps it has taken
    in this trial (its state); the sampler holds the state while an episode is over."""

    def initial_state(self, num_envs):
        return torch.zeros(num_envs)

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        actions = torch.stack([torch.full_like(state, 0.1), state * SCALE], -1)
        return actions, state + 1


class FeedbackEcho(Policy):
    """Acts with the previous reward and done flag it was given (no state)."""

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        return torch.stack([prev_reward, prev_done], -1), state


def _counts(episodes):
    return torch.round(episodes.actions[..., 1] / SCALE).long()


def test_state_carries_across_episodes_and_is_held_after_an_early_end():
    sampler = LocalSampler("point-nav")
    H, k = 6, 3
    episodes = sampler.sample(StepCounter(), [REACHED, NEVER], np.random.default_rng(0), 2,
                              horizon=H, trial_episodes=k)
    assert episodes.obs.shape == (2, 2, k * H, 2) and episodes.trial_episodes == k
    counts = _counts(episodes)
    starts = torch.arange(k) * H
    # the task whose episodes end after 3 steps: the count grows by the steps taken only
    assert counts[0, :, starts].tolist() == [[0, 3, 6]] * 2
    assert episodes.mask[0, 0].reshape(k, H).sum(1).tolist() == [3, 3, 3]
    # the other runs its whole slots: the state carries straight across episode boundaries
    assert counts[1, :, starts].tolist() == [[0, 6, 12]] * 2
    assert counts[1, 0].tolist() == list(range(k * H))


def test_state_resets_between_trials():
    sampler = LocalSampler("point-nav")
    first = sampler.sample(StepCounter(), [NEVER], np.random.default_rng(0), 1, horizon=4,
                           trial_episodes=2)
    second = sampler.sample(StepCounter(), [NEVER], np.random.default_rng(1), 1, horizon=4,
                            trial_episodes=2)
    assert _counts(first)[0, 0].tolist() == _counts(second)[0, 0].tolist() == list(range(8))


def test_feedback_is_the_previous_step_of_the_same_environment():
    # the echo moves the point by (prev reward, prev done), clipped to ±0.1: towards a goal at
    # x = −0.2 (reached on the third step of the first episode), away from one at (0.5, −0.5)
    sampler = LocalSampler("point-nav")
    episodes = sampler.sample(FeedbackEcho(), [[-0.2, 0.0], [0.5, -0.5]],
                              np.random.default_rng(0), 1, horizon=5, trial_episodes=3)
    assert episodes.mask[0, 0, :5].tolist() == [1, 1, 1, 0, 0]  # an early end
    _, prev_reward, prev_done = episodes.feedback()
    mask = episodes.mask > 0
    # what the policy acted with is what `Episodes.feedback` reconstructs, on every step taken
    assert torch.equal(episodes.actions[..., 0][mask], prev_reward[mask])
    assert torch.equal(episodes.actions[..., 1][mask], prev_done[mask])
    # zeros at the start of the trial, done = 1 right after each episode boundary
    assert prev_done[1, 0].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert prev_reward[:, :, 0].abs().sum() == 0
    assert episodes.rewards[1, 0, 4] == prev_reward[1, 0, 5]


def test_a_gru_policy_in_the_sampler_equals_its_unrolled_network(one_torch_thread):
    torch.manual_seed(0)
    net = GaussianGRUPolicy(2, 2, hidden_size=8)
    sampler = LocalSampler("point-nav")
    tasks = [REACHED, [0.1, -0.4]]
    episodes = sampler.sample(net.actor(deterministic=True), tasks, np.random.default_rng(3),
                              2, horizon=5, trial_episodes=3)
    mean, _ = net(net.inputs(episodes.obs, episodes))
    mask = episodes.mask[..., None]
    torch.testing.assert_close(mean.detach() * mask, episodes.actions * mask,
                               atol=1e-6, rtol=1e-6)
    # per-task copies of the same weights act the same
    per_task = {k: v.detach() for k, v in net.expand_params(2).items()}
    again = sampler.sample(net.actor(per_task, deterministic=True), tasks,
                           np.random.default_rng(3), 2, horizon=5, trial_episodes=3)
    torch.testing.assert_close(again.actions * mask, episodes.actions * mask,
                               atol=1e-6, rtol=1e-6)
    # the memory matters: the same network restarted at every episode acts differently
    restarted = sampler.sample(net.actor(deterministic=True), tasks, np.random.default_rng(3),
                               2, horizon=5, trial_episodes=1)
    assert not torch.allclose(episodes.actions[:, :, 5:10], restarted.actions[:, :, :5])
    # and a new trial starts from h_0 again: the same draws give the same trial
    second = sampler.sample(net.actor(deterministic=True), tasks, np.random.default_rng(3),
                            2, horizon=5, trial_episodes=3)
    assert torch.equal(second.actions, episodes.actions)
    torch.testing.assert_close(restarted.actions[:, :, :5], episodes.actions[:, :, :5])


def test_per_episode_returns_inside_a_trial():
    sampler = LocalSampler("point-nav")
    policy = GaussianMLPPolicy(2, 2, (8,)).actor()
    episodes = sampler.sample(policy, [REACHED, NEVER], np.random.default_rng(5), 3,
                              horizon=7, trial_episodes=4)
    by_episode = episodes.trial_episode_returns()
    assert by_episode.shape == (2, 3, 4)
    manual = (episodes.rewards * episodes.mask).reshape(2, 3, 4, 7).sum(-1)
    torch.testing.assert_close(by_episode, manual)
    flat = episodes.per_episode()
    assert flat.obs.shape == (2, 12, 7, 2) and flat.trial_episodes == 1
    torch.testing.assert_close(flat.episode_returns(), by_episode.reshape(2, 12))
    torch.testing.assert_close(episodes.episode_returns(), by_episode.reshape(2, 12))
    assert episodes.episode_index.tolist() == [j for j in range(4) for _ in range(7)]


def test_a_trial_of_one_episode_is_a_plain_batch(one_torch_thread):
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (8,)).actor()
    sampler = LocalSampler("point-nav")
    a = sampler.sample(policy, [REACHED, NEVER], np.random.default_rng(2), 3, horizon=9)
    b = sampler.sample(policy, [REACHED, NEVER], np.random.default_rng(2), 3, horizon=9,
                       trial_episodes=1)
    assert a.trial_episodes == 1 and a.per_episode() is a
    for name in ("obs", "actions", "rewards", "mask"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def _reference_trial_gae(rewards, values, mask, gamma, lam):
    """GAE on the steps a row took, as one sequence (the trial is one episode)."""
    adv = torch.zeros_like(rewards)
    for row in np.ndindex(*rewards.shape[:-1]):
        steps = torch.nonzero(mask[row] > 0).flatten().tolist()
        running, next_value = 0.0, 0.0
        for t in reversed(steps):
            delta = rewards[row][t] + gamma * next_value - values[row][t]
            running = delta + gamma * lam * running
            adv[row][t] = running
            next_value = values[row][t]
    return adv


def test_gae_runs_across_the_episodes_of_a_trial():
    g = torch.Generator().manual_seed(0)
    T, N, k, H = 2, 3, 3, 5
    rewards = torch.randn(T, N, k * H, generator=g, dtype=torch.float64)
    values = torch.randn(T, N, k * H, generator=g, dtype=torch.float64)
    mask = torch.ones(T, N, k, H, dtype=torch.float64)
    mask[0, 1, 0, 3:] = 0  # an episode that ended early inside the trial
    mask[1, 2, 2, 1:] = 0
    mask = mask.reshape(T, N, k * H)
    rewards = rewards * mask
    episodes = Episodes(torch.zeros(T, N, k * H, 1), torch.zeros(T, N, k * H, 1), rewards,
                        torch.zeros(T, N, k * H, 1), mask, torch.zeros(T, N, k * H, dtype=bool),
                        np.zeros((T, 1)), trial_episodes=k)
    expected = _reference_trial_gae(rewards, values, mask, 0.9, 0.8)
    torch.testing.assert_close(episodes.gae(values, 0.9, 0.8), expected)
    # λ = 1 and V = 0: the reward-to-go along the trial
    torch.testing.assert_close(episodes.gae(torch.zeros_like(values), 0.9, 1.0),
                               episodes.discounted_returns(0.9))


def test_model_rollouts_use_the_same_loop_and_the_family_reward():
    """A learned model as an environment: the identity model keeps the start state, so the
    reward is r_ψ of that state at every step, and the model sees the clipped actions."""
    seen = []

    def model_step(obs, act, generator):
        seen.append(act.clone())
        return obs.clone()

    start = np.array([[0.2, 0.0], [0.0, 0.2]], np.float32)
    sampler = ModelSampler("point-nav", model_step, start, [-0.1, -0.1], [0.1, 0.1])
    policy = GaussianMLPPolicy(2, 2, (8,), init_log_std=2.0).actor()
    episodes = sampler.sample(policy, [NEVER], np.random.default_rng(0), 4, horizon=6)
    assert episodes.obs.shape == (1, 4, 6, 2)
    assert torch.equal(episodes.obs, episodes.next_obs)
    goal = torch.tensor(NEVER)
    torch.testing.assert_close(episodes.rewards, -(episodes.obs - goal).norm(dim=-1))
    assert all(float(a.abs().max()) <= np.float32(0.1) for a in seen)
    assert float(episodes.actions.abs().max()) > 0.1  # the policy's own actions are kept
    # and the env is a BatchEnv like any other: the loop is `rollout`
    env = ModelEnv("point-nav", 1, 4, model_step, start, [-0.1, -0.1], [0.1, 0.1])
    again = rollout(env, policy, [NEVER], np.random.default_rng(0), 6)
    assert torch.equal(again.actions, episodes.actions)


def test_bad_state_types_are_refused():
    class Bad(Policy):
        def initial_state(self, num_envs):
            return 3

        def step(self, obs, state, *feedback):
            return torch.full((*obs.shape[:-1], 2), 0.1), "not a tensor"

    with pytest.raises(TypeError, match="policy state"):
        LocalSampler("point-nav").sample(Bad(), [REACHED], np.random.default_rng(0), 1,
                                         horizon=5)


def test_a_trial_resumed_from_its_state_continues_as_the_whole_trial(one_torch_thread):
    """`ContinueTrial`: the state after episode 1 (from the network unrolled offline) and the
    feedback of its last step give the same episodes 2 and 3 as one uninterrupted trial."""
    from adaptrl.sampling import ContinueTrial

    torch.manual_seed(1)
    net = GaussianGRUPolicy(2, 2, hidden_size=8)
    sampler = LocalSampler("point-nav")
    tasks, H = [[0.1, -0.4], [-0.2, 0.3]], 6
    whole = sampler.sample(net.actor(deterministic=True), tasks, np.random.default_rng(0), 1,
                           horizon=H, trial_episodes=3)
    first = sampler.sample(net.actor(deterministic=True), tasks, np.random.default_rng(0), 1,
                           horizon=H, trial_episodes=1)
    states = net.unroll(net.inputs(first.obs, first)).detach()  # [T, 1, H, hidden]
    last = H - 1  # no early end here: the episode's last step is its slot's last
    assert first.mask.all()
    resumed = ContinueTrial(net.actor(deterministic=True), states[:, 0, last],
                            first.actions[:, 0, last], first.rewards[:, 0, last],
                            torch.ones(2))
    rest = sampler.sample(resumed, tasks, np.random.default_rng(0), 3, horizon=H,
                          trial_episodes=2)
    for n in range(3):  # every environment of a task resumes from the task's state
        torch.testing.assert_close(rest.actions[:, n], whole.actions[:, 0, H:], atol=1e-5,
                                   rtol=1e-5)
    rebuilt = resumed.snapshot().build()
    again = sampler.sample(rebuilt, tasks, np.random.default_rng(0), 3, horizon=H,
                           trial_episodes=2)
    assert torch.equal(again.actions, rest.actions)


def test_the_categorical_head_samples_its_softmax_and_scores_one_hot_actions():
    from adaptrl.nets import CategoricalGRUPolicy

    torch.manual_seed(0)
    net = CategoricalGRUPolicy(1, 4, hidden_size=8)
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([0.0, 1.0, 2.0, -1.0]))
    actor = net.actor()
    obs = torch.zeros(50, 100, 1)
    feedback = (torch.zeros(50, 100, 4), torch.zeros(50, 100), torch.zeros(50, 100))
    actions, _ = actor.step(obs, actor.initial_state((50, 100)), *feedback,
                            torch.Generator().manual_seed(0))
    assert set(actions.sum(-1).unique().tolist()) == {1.0}  # one-hot
    h = net.cell(net.step_inputs(obs[:1, :1], *[f[:1, :1] for f in feedback]),
                 torch.zeros(1, 1, 8), net.params())
    probs = torch.softmax(net.head_output(h, net.params()), -1)[0, 0]
    torch.testing.assert_close(actions.mean((0, 1)), probs.detach(), atol=0.01, rtol=0)
    # log-probabilities, entropies and KL of the head, against their definitions
    inputs = (obs[:2, :3, None].expand(2, 3, 4, 1), torch.zeros(2, 3, 4, 4),
              torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 3, 4))
    one_hot = torch.nn.functional.one_hot(torch.arange(4).repeat(6).reshape(2, 3, 4), 4).float()
    logits, _ = net(inputs)
    expected = torch.log_softmax(logits, -1).gather(-1, one_hot.argmax(-1, keepdim=True))[..., 0]
    torch.testing.assert_close(net.log_prob(inputs, one_hot), expected)
    logp, entropy, _ = net.evaluate(inputs, one_hot)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy, -(p * p.log()).sum(-1))
    with torch.no_grad():
        assert float(net.kl(inputs, net.params(), net.params()).abs().max()) < 1e-6


class ThreadSpy(Policy):
    """Records torch's thread count during its own steps, and the env's during the env step."""

    def __init__(self, parallel):
        self.parallel_step, self.seen = parallel, []

    def initial_state(self, num_envs):
        return torch.zeros(num_envs)

    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        self.seen.append(torch.get_num_threads())
        return torch.zeros(*obs.shape[:-1], 2), state


@pytest.mark.parametrize("parallel", [False, True])
def test_a_parallel_step_policy_gets_the_callers_threads_and_the_simulator_one(parallel):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sampler = LocalSampler("point-nav")
        env = sampler.environments(1, 2)
        env_threads, step = [], env.step
        env.step = lambda a: (env_threads.append(torch.get_num_threads()), step(a))[1]
        spy = ThreadSpy(parallel)
        sampler.sample(spy, [REACHED], np.random.default_rng(0), 2, horizon=3)
        assert set(env_threads) == {1}  # the simulator never runs beside torch's workers
        assert set(spy.seen) == ({2} if parallel else {1})
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("network", ["gru", "snail"])
def test_recurrent_rollouts_do_not_depend_on_the_policy_threads(network):
    """The GRU's and SNAIL's steps run on the caller's threads in the sampler: the episodes
    are the same bit for bit as on one thread (the Ray workers run on one)."""
    from adaptrl.algos import get_algorithm
    from adaptrl.config import make_config
    from adaptrl.tasks import get_family

    cls = get_algorithm("rl2")
    width = 256 if network == "gru" else 32  # sizes whose products torch splits over threads
    config = make_config(cls, None, [f"network={network}", f"hidden_sizes=[{width}]",
                                     "trial_episodes=2", "horizon=20"])
    torch.manual_seed(0)
    algo = cls(get_family("point-nav"), config, LocalSampler("point-nav"))
    tasks = algo.family.sample(6, np.random.default_rng(1))
    batches = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            batches.append(algo.sampler.sample(algo.policy.actor(), tasks,
                                               np.random.default_rng(2), 32, horizon=20,
                                               trial_episodes=2))
    finally:
        torch.set_num_threads(threads)
    one, two = batches
    assert torch.equal(one.actions, two.actions) and torch.equal(one.obs, two.obs)
