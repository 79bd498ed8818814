"""GrBAL and MB-MPC (issue 12): the meta-gradient of the model loss, the batched MPC planner,
the online adaptation's window, and an end-to-end smoke run on cheetah-crippled."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaptrl.algos import get_algorithm
from adaptrl.cli import main
from adaptrl.config import make_config
from adaptrl.errors import AdaptrlError
from adaptrl.nets.dynamics import DynamicsModel
from adaptrl.optim.mpc import MPCPolicy, PlannerOptions, plan
from adaptrl.sampling import LocalSampler
from adaptrl.tasks import get_family


def _grbal(family="point-nav", *overrides):
    cls = get_algorithm("grbal")
    torch.manual_seed(0)
    return cls(get_family(family), make_config(cls, "smoke", list(overrides)))


def _segments(method, W, rng):
    L = method.config.window + method.config.future
    od, ad = method.family.obs_dim, method.family.act_dim
    obs = torch.as_tensor(rng.normal(size=(W, L, od)))
    act = torch.as_tensor(rng.uniform(-1, 1, size=(W, L, ad)))
    next_obs = obs + 0.3 * torch.as_tensor(rng.normal(size=(W, L, od)))
    return obs, act, next_obs


# ─── the family ─────────────────────────────────────────────────────────────────────────────
def test_crippled_joint_acts_as_its_action_scaled_by_the_strength():
    """Joint j at strength s moves the cheetah exactly as the intact one whose action j is
    multiplied by s (0: that actuator is disabled); the splits hold joint 0 out of training."""
    from adaptrl.envs import make_batch_env

    family = get_family("cheetah-crippled")
    rng = np.random.default_rng(0)
    assert set(family.split("train", 200, rng)[:, 0]) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert set(family.split("test", 50, rng)[:, 0]) == set(family.split("ood", 50, rng)[:, 0]) \
        == {0.0}
    tasks = np.array([[0.0, 0.0], [3.0, 0.4], [5.0, 1.0]])
    crippled = make_batch_env(family, 3, 2)
    intact = make_batch_env("cheetah-vel", 3, 2)
    crippled.set_tasks(tasks)
    intact.set_tasks(np.ones((3, 1)))
    crippled.reset(np.random.default_rng(1), None)
    intact.reset(np.random.default_rng(1), None)
    scale = np.ones((3, 1, 6), np.float32)
    scale[0, 0, 0], scale[1, 0, 3] = 0.0, 0.4
    for _ in range(15):
        action = rng.uniform(-1, 1, size=(3, 2, 6)).astype(np.float32)
        got, expected = crippled.step(action), intact.step(action * scale)
        np.testing.assert_array_equal(got.obs[0], expected.obs[0])  # disabled: exactly
        # weakened: gear·s·u against gear·(s·u) in float32, equal up to rounding
        np.testing.assert_allclose(got.obs, expected.obs, rtol=1e-4, atol=1e-4)


def test_crippled_ant_leg_acts_as_its_two_actions_scaled_by_the_strength():
    """Leg l at strength s moves the Ant exactly as the intact one whose hip and ankle actions
    (actuators 2l and 2l + 1) are multiplied by s; leg 0 is held out of training."""
    from adaptrl.envs import make_batch_env

    family = get_family("ant-crippled")
    rng = np.random.default_rng(0)
    assert set(family.split("train", 100, rng)[:, 0]) == {1.0, 2.0, 3.0}
    assert set(family.split("test", 20, rng)[:, 0]) == {0.0}
    tasks = np.array([[0.0, 0.0], [2.0, 0.5]])
    crippled, intact = make_batch_env(family, 2, 1), make_batch_env("ant-vel", 2, 1)
    crippled.set_tasks(tasks)
    intact.set_tasks(np.ones((2, 1)))
    crippled.reset(np.random.default_rng(1), None)
    intact.reset(np.random.default_rng(1), None)
    scale = np.ones((2, 1, 8), np.float32)
    scale[0, 0, 0:2], scale[1, 0, 4:6] = 0.0, 0.5
    for _ in range(10):
        action = rng.uniform(-1, 1, size=(2, 1, 8)).astype(np.float32)
        got, expected = crippled.step(action), intact.step(action * scale)
        np.testing.assert_allclose(got.obs, expected.obs, rtol=1e-4, atol=1e-4)


def test_midway_family_cripples_the_joint_from_its_change_step_on():
    """`cheetah-crippled-midway` runs the intact body for its first `change_step` control
    steps and the crippled one after: it equals cheetah-vel's body before the change and
    cheetah-crippled's model after it (from the same state), and reset starts intact again."""
    from adaptrl.envs import make_batch_env

    family = get_family("cheetah-crippled-midway")
    c = family.change_step
    assert 0 < c < family.horizon and family.dynamics == "cripple"
    midway, intact = make_batch_env(family, 1, 2), make_batch_env("cheetah-vel", 1, 2)
    midway.set_tasks(np.array([[0.0, 0.0]]))  # joint 0 disabled, from step c on
    intact.set_tasks(np.ones((1, 1)))
    rng = np.random.default_rng(3)
    actions = rng.uniform(-1, 1, size=(c + 20, 1, 2, 6)).astype(np.float32)
    for episode in range(2):
        midway.reset(np.random.default_rng(episode), None)
        intact.reset(np.random.default_rng(episode), None)
        for t in range(c + 20):
            got = midway.step(actions[t])
            expected = intact.step(actions[t] * (np.float32([0, 1, 1, 1, 1, 1]) if t >= c
                                                 else np.float32(1)))
            np.testing.assert_array_equal(got.obs, expected.obs)  # exactly, both segments


# ─── the meta-gradient ──────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_of_the_model_loss_matches_finite_differences(first_order):
    """Second order: ∂L(θ′(θ))/∂θ by autograd equals central differences in float64. First
    order: the gradient is ∇L at θ′ applied to θ, which differs from the exact one."""
    method = _grbal("point-nav", "hidden_sizes=[6]", "activation=tanh", "window=3", "future=2",
                    "inner_lr=0.5", f"first_order={first_order}")
    model = method.model.double()
    rng = np.random.default_rng(0)
    obs, act, next_obs = _segments(method, 4, rng)
    model.fit_normalizers(obs.reshape(-1, 2), act.reshape(-1, 2), next_obs.reshape(-1, 2))
    model.double()
    params = list(model.parameters())
    loss = method.segment_loss(obs, act, next_obs)
    grads = torch.autograd.grad(loss, params)
    direction = [torch.as_tensor(rng.normal(size=p.shape)) for p in params]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction))

    def loss_at(step):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(step * d)
        value = float(method.segment_loss(obs, act, next_obs).detach())
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(step * d)
        return value

    eps = 1e-6
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    if first_order:
        assert abs(analytic - numeric) > 1e-6 * max(1.0, abs(numeric))
    else:
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_meta_learned_step_sizes_get_the_exact_meta_gradient():
    """learn_inner_lr: ∂L(θ′)/∂ log α per weight tensor by autograd equals central differences
    in float64 (α enters θ′ = θ − α∇L only), and the controller adapts with the learnt α."""
    method = _grbal("point-nav", "hidden_sizes=[6]", "activation=tanh", "window=3", "future=2",
                    "inner_lr=0.5", "learn_inner_lr=true")
    model = method.model.double()
    method.log_inner_lr.double()
    assert sorted(method.log_inner_lr) == sorted(model.weights_dict())
    rng = np.random.default_rng(1)
    obs, act, next_obs = _segments(method, 4, rng)
    model.fit_normalizers(obs.reshape(-1, 2), act.reshape(-1, 2), next_obs.reshape(-1, 2))
    model.double()
    with torch.no_grad():  # distinct step sizes per tensor
        for i, v in enumerate(method.log_inner_lr.values()):
            v.fill_(np.log(0.5) + 0.2 * i - 0.5)
    rates = list(method.log_inner_lr.values())
    grads = torch.autograd.grad(method.segment_loss(obs, act, next_obs), rates)
    eps = 1e-6
    for rate, grad in zip(rates, grads):
        values = []
        for step in (eps, -eps):
            with torch.no_grad():
                rate.add_(step)
            values.append(float(method.segment_loss(obs, act, next_obs).detach()))
            with torch.no_grad():
                rate.sub_(step)
        assert float(grad) == pytest.approx((values[0] - values[1]) / (2 * eps), rel=1e-6,
                                            abs=1e-10)
    assert any(abs(float(g)) > 1e-6 for g in grads)  # the step sizes matter
    policy = method.controller(np.zeros((1, 2)), 1)
    assert policy.inner_lr == pytest.approx({k: float(v.detach().exp())
                                             for k, v in method.log_inner_lr.items()})


def test_meta_learned_step_sizes_train_checkpoint_and_refuse_a_mismatched_config():
    method = _grbal("point-nav", "iterations=2", "horizon=12", "window=3", "future=3",
                    "model_steps=5", "candidates=8", "plan_horizon=2", "learn_inner_lr=true")
    rng = np.random.default_rng(0)
    for _ in range(2):
        metrics = method.train_step(rng)
    start = np.log(method.config.inner_lr)
    assert all(abs(float(v.detach()) - start) > 0 for v in method.log_inner_lr.values())  # trained
    assert metrics["model/inner_lr"] == pytest.approx(
        float(torch.stack(list(method.log_inner_lr.values())).detach().mean().exp()))
    state = method.state_dict()
    fresh = _grbal("point-nav", "horizon=12", "window=3", "future=3", "learn_inner_lr=true")
    fresh.load_state_dict(state)
    for k, v in method.log_inner_lr.items():
        assert torch.equal(fresh.log_inner_lr[k], v)
    fixed = _grbal("point-nav", "horizon=12", "window=3", "future=3")
    with pytest.raises(ValueError, match="learn_inner_lr"):
        fixed.load_state_dict(state)
    assert fixed.step_sizes() == fixed.config.inner_lr and len(fixed.log_inner_lr) == 0


# ─── the planner ────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("method", ["cem", "random"])
def test_planner_finds_the_optimum_of_a_quadratic_reward_under_a_linear_model(method):
    """s' = s + a, r = −‖s' − g‖², a ∈ [−1, 1]²: with g − s inside the box, the best first
    action is a* = g − s (reach the goal at once, then stay)."""
    goal = torch.tensor([0.3, -0.2])
    obs = torch.tensor([[0.0, 0.0], [0.5, 0.5], [-0.4, 0.1]])

    def predict(o, a):
        return o + a

    def reward(o, a, o2):
        return -((o2 - goal) ** 2).sum(-1)

    # random shooting searches the whole sequence box at once: one step keeps it 2-D
    options = PlannerOptions(method, horizon=3 if method == "cem" else 1,
                             candidates=300 if method == "cem" else 2000, iterations=8)
    gen = torch.Generator().manual_seed(0)
    action = plan(predict, reward, obs, -torch.ones(2), torch.ones(2), gen, options)
    tolerance = 0.02 if method == "cem" else 0.1
    torch.testing.assert_close(action, goal - obs, atol=tolerance, rtol=0)


def _count_model_calls(monkeypatch, T, N, candidates):
    family = get_family("point-nav")
    torch.manual_seed(0)
    model = DynamicsModel(2, 2, (8,), "tanh")
    calls = []
    inner = model.delta_with

    def counted(weights, obs, act):
        calls.append(tuple(obs.shape))
        return inner(weights, obs, act)

    monkeypatch.setattr(model, "delta_with", counted)
    options = PlannerOptions("cem", horizon=4, candidates=candidates, iterations=3)
    tasks = family.split("test", T, np.random.default_rng(0))
    policy = MPCPolicy(model, family, tasks, -torch.ones(2), torch.ones(2), options, window=3,
                       inner_lr=0.1, inner_steps=1)
    LocalSampler(family).sample(policy, tasks, np.random.default_rng(1), N, horizon=5)
    return calls


def test_min_window_plans_with_the_trained_model_until_the_window_is_full():
    """min_window = window = 3: the first 3 control steps (0, 1, 2 transitions in the window)
    act exactly as the unadapted controller, step 3 on adapts; a bad min_window is refused."""
    family = get_family("point-nav")
    torch.manual_seed(0)
    model = DynamicsModel(2, 2, (8,), "tanh")
    tasks = family.split("test", 2, np.random.default_rng(0))
    options = PlannerOptions("random", horizon=2, candidates=16)

    def actions(**kw):
        policy = MPCPolicy(model, family, tasks, -torch.ones(2), torch.ones(2), options,
                           window=3, **kw)
        return LocalSampler(family).sample(policy, tasks, np.random.default_rng(1), 1,
                                           horizon=6).actions

    plain = actions(inner_lr=0.5, inner_steps=0)
    waiting = actions(inner_lr=0.5, inner_steps=1, min_window=3)
    eager = actions(inner_lr=0.5, inner_steps=1)
    torch.testing.assert_close(waiting[:, :, :3], plain[:, :, :3], rtol=0, atol=0)
    assert not torch.equal(waiting[:, :, 3], plain[:, :, 3])  # adapted from step 3 on
    assert not torch.equal(eager[:, :, 1:3], plain[:, :, 1:3])  # adapts on 1 and 2 already
    with pytest.raises(AdaptrlError, match="min_window"):
        MPCPolicy(model, family, tasks, -torch.ones(2), torch.ones(2), options, window=3,
                  inner_lr=0.5, inner_steps=1, min_window=4)
    with pytest.raises(AdaptrlError, match="min_window = 4 is larger than window = 3"):
        _grbal("point-nav", "window=3", "min_window=4")


def test_planner_is_batched_over_environments_and_candidates(monkeypatch):
    """A control step costs 1 adaptation call + rounds × horizon = 1 + 3 × 4 model calls,
    whatever the number of environments and candidates; each call carries all of them."""
    small = _count_model_calls(monkeypatch, 1, 1, 8)
    large = _count_model_calls(monkeypatch, 3, 4, 64)
    assert len(small) == len(large) == 5 * (1 + 3 * 4)
    planning = [shape for shape in large if shape[1] == 64]
    assert len(planning) == 5 * 3 * 4 and all(s[0] == 12 for s in planning)


# ─── online adaptation sees the past only ───────────────────────────────────────────────────
def test_online_adaptation_uses_only_past_transitions(monkeypatch):
    """At control step t the model adapts on the last M transitions (s_i, a_i, s_{i+1}) with
    i + 1 ≤ t: the newest ends in the current observation, none comes after it."""
    family = get_family("point-nav")
    torch.manual_seed(0)
    model = DynamicsModel(2, 2, (8,), "tanh")
    seen = []
    inner = model.adapt

    def recording(weights, obs, act, next_obs, mask=None, *args, **kwargs):
        seen.append((obs.clone(), act.clone(), next_obs.clone(), mask.clone()))
        return inner(weights, obs, act, next_obs, mask, *args, **kwargs)

    monkeypatch.setattr(model, "adapt", recording)
    M = 3
    policy = MPCPolicy(model, family, np.zeros((1, 2)), -torch.ones(2), torch.ones(2),
                       PlannerOptions("random", horizon=2, candidates=8), window=M,
                       inner_lr=0.1, inner_steps=1)
    gen = torch.Generator().manual_seed(0)
    observations = torch.randn(8, 1, 1, 2)
    state = policy.initial_state((1, 1))
    action = torch.zeros(1, 1, 2)
    actions = []
    zero = torch.zeros(1, 1)
    for t in range(8):
        action, state = policy.step(observations[t], state, action, zero, zero, gen)
        actions.append(action)
        obs_w, act_w, next_w, mask_w = seen[-1]
        filled = min(t, M)
        assert float(mask_w.sum()) == filled
        for j in range(filled):  # the slot M − 1 − j holds transition t − 1 − j
            i = t - 1 - j
            torch.testing.assert_close(obs_w[0, M - 1 - j], observations[i, 0, 0])
            torch.testing.assert_close(act_w[0, M - 1 - j], actions[i][0, 0])
            torch.testing.assert_close(next_w[0, M - 1 - j], observations[i + 1, 0, 0])
    # the meta-training step adapts on the first M steps of a segment and scores the rest
    method = _grbal("point-nav", "window=3", "future=2")
    calls = []
    adapt = method.model.adapt
    monkeypatch.setattr(method.model, "adapt",
                        lambda w, o, *a, **k: calls.append(o.clone()) or adapt(w, o, *a, **k))
    obs, act, next_obs = (x.float() for x in _segments(method, 2, np.random.default_rng(0)))
    method.segment_loss(obs, act, next_obs)
    torch.testing.assert_close(calls[0], obs[:, :3])


# ─── end to end ─────────────────────────────────────────────────────────────────────────────
def test_grbal_smoke_trains_and_evaluates_end_to_end(tmp_path, one_torch_thread):
    from adaptrl.runner import train

    run_dir = train("grbal", "cheetah-crippled", preset="smoke",
                    overrides=["iterations=2", "horizon=20", "window=4", "future=4",
                               "model_steps=5", "candidates=16", "plan_horizon=3"],
                    out=tmp_path / "grbal", progress=False)
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "model/future_loss_adapted" in rows[0]
    assert main(["eval", str(run_dir), "--num-tasks", "2", "--episodes", "1",
                 "--no-progress"]) == 0
    result = json.loads((run_dir / "eval" / "test" / "eval.json").read_text())
    assert result["steps"] == [0, 1] and result["budget_unit"] == "online adaptation steps"
    assert all(np.isfinite(result["summary"]["mean"]))
    assert all(task["params"][0] == 0.0 for task in result["tasks"])  # the held-out joint
    # the model's one-step error before/after adaptation and the planning time, per budget
    model = result["model"]
    assert [row["n"] for row in model] == [0, 1]
    assert model[0]["error_before"] == model[0]["error_after"]  # n = 0 does not adapt
    assert model[1]["error_after"] != model[1]["error_before"]
    assert all(row["n_windows"] == 2 * (20 - 4) and row["envs"] == 2 for row in model)
    assert all(0 < row["plan_ms_median"] <= row["plan_ms_p95"] for row in model)
    table = (run_dir / "eval" / "test" / "eval.md").read_text()
    assert "model error before adaptation" in table


def test_model_report_measures_the_error_on_the_transition_after_each_window():
    """By hand: the error before adaptation is the model's loss on every transition that has
    `window` real transitions before it in its episode; after adaptation, each one's loss under
    θ′ adapted on exactly those preceding transitions."""
    from adaptrl.sampling import Episodes

    method = _grbal("point-nav", "window=3", "future=3", "horizon=8")
    M, T, N, L, od = 3, 2, 1, 8, method.family.obs_dim
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(T, N, L, od, generator=gen)
    act = torch.randn(T, N, L, method.family.act_dim, generator=gen)
    nxt = obs + 0.1 * torch.randn(T, N, L, od, generator=gen)
    mask = torch.ones(T, N, L)
    mask[1, 0, 6:] = 0  # task 1's episode ended after 6 steps
    batch = Episodes(obs, act, torch.zeros(T, N, L), nxt, mask, torch.zeros(T, N, L, dtype=bool),
                     np.zeros((T, 2)))
    method.model.fit_normalizers(obs.reshape(-1, od), act.reshape(-1, act.shape[-1]),
                                 nxt.reshape(-1, od))
    policy = method.controller(np.zeros((T, 2)), 1)
    report = method.model_report([policy], [batch])[0]
    ends = [(t, e) for t in range(T) for e in range(M, int(mask[t, 0].sum()))]
    assert report["n_windows"] == len(ends) == (8 - 3) + (6 - 3)
    theta = method.model.weights_dict()
    before, after = [], []
    for t, e in ends:
        window = (obs[t, :, e - M:e], act[t, :, e - M:e], nxt[t, :, e - M:e])
        target = (obs[t, :, e:e + 1], act[t, :, e:e + 1], nxt[t, :, e:e + 1])
        with torch.no_grad():
            before.append(float(method.model.loss_with(theta, *target)))
        adapted = method.model.adapt(theta, *window, None, method.config.inner_lr, 1)
        with torch.no_grad():
            after.append(float(method.model.loss_with(adapted, *target)))
    assert report["error_before"] == pytest.approx(np.mean(before), rel=1e-5)
    assert report["error_after"] == pytest.approx(np.mean(after), rel=1e-5)
    assert report["plan_ms_median"] is None  # the policy never planned here


def test_eval_on_the_midway_family_reports_returns_before_and_after_the_change(tmp_path,
                                                                             one_torch_thread):
    from adaptrl.runner import train

    run_dir = train("grbal", "cheetah-crippled-midway", preset="smoke",
                    overrides=["iterations=1", "horizon=110", "window=4", "future=4",
                               "model_steps=3", "candidates=8", "plan_horizon=2"],
                    out=tmp_path / "midway", progress=False)
    assert main(["eval", str(run_dir), "--num-tasks", "2", "--episodes", "1",
                 "--no-progress"]) == 0
    folder = run_dir / "eval" / "test"
    result = json.loads((folder / "eval.json").read_text())
    segments = result["segments"]
    assert segments["change_step"] == 100
    for b in range(len(result["steps"])):  # the two segments add up to the episode's return
        assert segments["before"][b] + segments["after"][b] == pytest.approx(
            result["summary"]["mean"][b], rel=1e-5, abs=1e-4)
        assert len(segments["reward_curve"][b]) == 110
    assert all(len(task["segment_returns"]) == 2 for task in result["tasks"])
    assert (folder / "reward_curve.png").is_file()
    assert "return before the change (steps 0–99)" in (folder / "eval.md").read_text()


def test_the_adapting_planner_acts_the_same_on_one_thread_and_on_two():
    """The sampler gives the MPC policy's steps the caller's torch threads (the planner's
    products split over them); the actions are the same bit for bit as on one thread."""
    method = _grbal("cheetah-crippled", "hidden_sizes=[64, 64]", "candidates=64",
                    "plan_horizon=4", "window=4")
    tasks = method.family.sample(3, np.random.default_rng(1))
    policy = method.adapt(tasks, [1], np.random.default_rng(0))[0].policy
    assert policy.parallel_step and policy.adaptive
    threads, batches = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            batches.append(method.sampler.sample(policy, tasks, np.random.default_rng(3), 4,
                                                 horizon=12))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(batches[0].actions, batches[1].actions)
