"""AdMRL: the task-gradient estimators (Eqs. 2–7), the dynamics model, virtual rollouts, the
projection onto Ψ, configs, checkpoints and an end-to-end smoke run (MB-Unif/MB-Gauss too)."""

import io
import math

import numpy as np
import pytest
import torch

from adaptrl.algos import get_algorithm
from adaptrl.algos.admrl import project_to_box
from adaptrl.config import make_config
from adaptrl.errors import AdaptrlError
from adaptrl.nets.dynamics import DynamicsModel
from adaptrl.optim import conjugate_gradient
from adaptrl.optim.implicit import (
    implicit_task_gradient,
    mixed_derivative_vjp,
    policy_hessian_product,
    reward_gradient,
)
from adaptrl.sampling import LocalSampler, ModelSampler, UniformPolicy
from adaptrl.tasks import get_family

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ── Eq. (2) + (5): the implicit task gradient ─────────────────────────────────────────────────
def _quadratic_problem(seed=0, p=6, k=3):
    """η̂(θ, ψ) = ½θᵀQ̂θ + θᵀĈψ with an INDEFINITE Q̂ (stationary point θ̂ = −Q̂⁻¹Ĉψ) and
    η*(θ, ψ) = −½θᵀQθ + θᵀCψ + dᵀψ + ½ψᵀEψ with Q ≻ 0 (argmax θ* = Q⁻¹Cψ)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(p, p, generator=gen, dtype=F64))
    eig = torch.tensor([3.0, -2.0, 1.5, -1.0, 2.5, -0.8][:p], dtype=F64)
    Q_hat = q @ torch.diag(eig) @ q.T
    C_hat = torch.randn(p, k, generator=gen, dtype=F64)
    M = torch.randn(p, p, generator=gen, dtype=F64)
    Q = M @ M.T + p * torch.eye(p, dtype=F64)
    C = torch.randn(p, k, generator=gen, dtype=F64)
    d = torch.randn(k, generator=gen, dtype=F64)
    E = torch.randn(k, k, generator=gen, dtype=F64)
    E = E + E.T

    def eta_star(theta, psi):
        return -0.5 * theta @ Q @ theta + theta @ C @ psi + d @ psi + 0.5 * psi @ E @ psi

    def theta_hat(psi):
        return -torch.linalg.solve(Q_hat, C_hat @ psi)

    def gap(psi):  # L(ψ) of Eq. (1)
        theta_star = torch.linalg.solve(Q, C @ psi)
        return eta_star(theta_star, psi) - eta_star(theta_hat(psi), psi)

    def estimator_inputs(psi):
        th, ts = theta_hat(psi), torch.linalg.solve(Q, C @ psi)
        return dict(d_eta_dpsi_star=C.T @ ts + d + E @ psi, d_eta_dpsi_hat=C.T @ th + d + E @ psi,
                    d_eta_dtheta_hat=-Q @ th + C @ psi, hessian_matvec=lambda v: Q_hat @ v,
                    mixed_vjp=lambda y: C_hat.T @ y)

    return gap, estimator_inputs, Q_hat, k


def test_implicit_task_gradient_matches_finite_differences_of_the_gap():
    gap, inputs, _, k = _quadratic_problem()
    psi = torch.tensor([0.3, -0.7, 1.1], dtype=F64)
    grad, info = implicit_task_gradient(**inputs(psi), cg_iters=100, residual_tol=1e-28)
    eps = 1e-5
    fd = torch.stack([(gap(psi + eps * e) - gap(psi - eps * e)) / (2 * eps)
                      for e in torch.eye(k, dtype=F64)])
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-7), (grad, fd)
    assert info["cg_ok"] and info["cg_normal_residual"] < 1e-8


def test_normal_equation_cg_solves_the_indefinite_system_plain_cg_cannot():
    _, inputs, Q_hat, _ = _quadratic_problem(seed=1)
    b = torch.randn(Q_hat.shape[0], generator=torch.Generator().manual_seed(3), dtype=F64)
    _, plain = conjugate_gradient(lambda v: Q_hat @ v, b, iters=100)
    assert not plain["curvature_ok"]  # plain CG meets negative curvature and stops
    # implicit_task_gradient solves A y = g by CG on AᵀA y = Aᵀg: recover y from the chain term
    y_true = torch.linalg.solve(Q_hat, b)
    seen = {}

    def record(y):
        seen["y"] = y
        return torch.zeros(1, dtype=F64)

    implicit_task_gradient(torch.zeros(1, dtype=F64), torch.zeros(1, dtype=F64), b,
                           lambda v: Q_hat @ v, record, cg_iters=100, residual_tol=1e-28)
    assert torch.allclose(seen["y"], y_true, rtol=1e-8, atol=1e-10)


# ── Eq. (7) / Appendix B: the policy Hessian estimator; Eq. (6): the mixed derivative ──────────
def _bandit(psi=None):
    """Two-step episodes of a softmax policy over 3 actions with a non-additive return
    R(a₁, a₂) = u[a₁]·w[a₂] + ψ·v[a₂]; log π(τ) = log p(a₁) + log p(a₂)."""
    u = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    w = torch.tensor([0.5, 1.5, -1.0], dtype=F64)
    v = torch.tensor([0.2, -1.0, 0.7], dtype=F64)

    def exact_eta(logits, psi):
        prob = torch.softmax(logits, -1)
        R = u[:, None] * w[None, :] + psi * v[None, :]
        return prob @ R @ prob

    return u, w, v, exact_eta


def test_policy_hessian_estimator_is_unbiased_on_a_discrete_problem():
    u, w, v, exact_eta = _bandit()
    psi = torch.tensor(0.4, dtype=F64)
    logits = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    exact = torch.autograd.functional.hessian(lambda th: exact_eta(th, psi), logits)
    gen = torch.Generator().manual_seed(0)
    N = 400_000
    actions = torch.multinomial(torch.softmax(logits, -1), 2 * N, replacement=True,
                                generator=gen).reshape(1, N, 2)
    R = (u[actions[..., 0]] * w[actions[..., 1]] + psi * v[actions[..., 1]])  # [1, N]

    def log_prob_traj(params):
        logp = torch.log_softmax(params["logits"], -1)  # [1, 3]
        return torch.gather(logp.expand(N, 3), 1, actions[0]).sum(-1)[None]  # [1, N]

    params = {"logits": logits[None].clone()}
    matvec = policy_hessian_product(log_prob_traj, R, params)
    estimate = torch.stack([matvec(e) for e in torch.eye(3, dtype=F64)], dim=1)
    assert torch.allclose(estimate, estimate.T, atol=1e-10)
    assert torch.allclose(estimate, exact, atol=0.03), (estimate, exact)
    # a constant baseline leaves it unbiased (and the test still passes with it)
    centred = policy_hessian_product(log_prob_traj, R - R.mean(), params)
    estimate_c = torch.stack([centred(e) for e in torch.eye(3, dtype=F64)], dim=1)
    assert torch.allclose(estimate_c, exact, atol=0.03)


def test_mixed_derivative_vjp_is_unbiased_on_a_discrete_problem():
    u, w, v, exact_eta = _bandit()
    logits = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    psi0 = torch.tensor([0.4], dtype=F64)
    # exact B = ∂²η/∂θ∂ψ [3]
    theta = logits.clone().requires_grad_()
    psi = psi0.clone().requires_grad_()
    g = torch.autograd.grad(exact_eta(theta, psi[0]), theta, create_graph=True)[0]
    exact = torch.stack([torch.autograd.grad(g[i], psi, retain_graph=True)[0][0]
                         for i in range(3)])
    gen = torch.Generator().manual_seed(1)
    N = 200_000
    actions = torch.multinomial(torch.softmax(logits, -1), 2 * N, replacement=True,
                                generator=gen).reshape(1, N, 2)

    def surrogate(params, psi_var):  # REINFORCE with the return differentiable in ψ
        logp = torch.log_softmax(params["logits"], -1)
        lp = torch.gather(logp.expand(N, 3), 1, actions[0]).sum(-1)
        R = u[actions[0, :, 0]] * w[actions[0, :, 1]] + psi_var[0, 0] * v[actions[0, :, 1]]
        return (lp * R).mean()

    vjp = mixed_derivative_vjp(surrogate, {"logits": logits[None].clone()}, psi0[None])
    estimate = torch.stack([vjp(e)[0, 0] for e in torch.eye(3, dtype=F64)])
    assert torch.allclose(estimate, exact, atol=0.01), (estimate, exact)


def test_reward_gradient_is_the_discounted_sum_of_reward_derivatives():
    family = get_family("hopper-2d")
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(2, 3, 4, 11, generator=gen)
    next_obs = torch.randn(2, 3, 4, 11, generator=gen)
    act = torch.randn(2, 3, 4, 3, generator=gen)
    mask = torch.ones(2, 3, 4)
    mask[1, :, 2:] = 0
    psi = np.array([[0.5, 1.5], [-1.0, 1.3]])
    grad = reward_gradient(family.reward, obs, act, next_obs, mask, psi, gamma=0.9)
    # r = −(|vx − ψx| + 5|z − ψz|) + …  ⇒  ∂r/∂ψ = (sign(vx − ψx), 5 sign(z − ψz))
    vx, z = next_obs[..., 5].double(), next_obs[..., 0].double()
    weights = 0.9 ** torch.arange(4, dtype=F64) * mask.double()
    psi_t = torch.as_tensor(psi)
    dx = (torch.sign(vx - psi_t[:, None, None, 0]) * weights).sum(-1).mean(-1)
    dz = (5 * torch.sign(z - psi_t[:, None, None, 1]) * weights).sum(-1).mean(-1)
    assert torch.allclose(grad, torch.stack([dx, dz], -1))


# ── projection onto Ψ and task draws ──────────────────────────────────────────────────────────
def test_projection_and_task_draws_stay_in_psi():
    family = get_family("hopper-2d")
    rng = np.random.default_rng(0)
    points = rng.normal(0, 5, size=(1000, 2))
    projected = project_to_box(points, family.low, family.high)
    assert family.contains(projected).all()
    inside = family.sample(50, rng)
    assert np.array_equal(project_to_box(inside, family.low, family.high), inside)
    # the projection is the nearest point of the box
    assert np.allclose(project_to_box(np.array([5.0, 1.5]), family.low, family.high), [2.0, 1.5])
    for name in ("mb-unif", "mb-gauss"):
        cls = get_algorithm(name)
        algo = cls(family, make_config(cls, "smoke", []))
        draws = np.array([algo.draw_task(rng) for _ in range(400)])
        assert family.contains(draws).all()
    centre = (family.low + family.high) / 2
    assert np.abs(np.median(draws, 0) - centre).max() < 0.2  # mb-gauss: around the centre


# ── the dynamics model and virtual rollouts ───────────────────────────────────────────────────
def _hopper_transitions(seed=0, episodes=8, horizon=60):
    family = get_family("hopper-2d")
    rng = np.random.default_rng(seed)
    ep = LocalSampler(family).sample(UniformPolicy(-np.ones(3), np.ones(3)), family.sample(1, rng),
                                     rng, episodes, horizon=horizon)
    flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
    return flat(ep.obs), flat(ep.actions), flat(ep.next_obs)


def test_model_fit_reduces_held_out_prediction_error_on_hopper():
    torch.manual_seed(0)
    obs, act, next_obs = _hopper_transitions()
    n_train = 360
    model = DynamicsModel(11, 3, (64, 64), ensemble_size=2)
    model.fit_normalizers(obs[:n_train], act[:n_train], next_obs[:n_train])
    held_out = (obs[n_train:], act[n_train:], next_obs[n_train:])
    before = model.prediction_error(*held_out)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    info = model.fit(obs[:n_train], act[:n_train], next_obs[:n_train], steps=400, batch_size=64,
                     rng=np.random.default_rng(0), optimizer=optimizer)
    after = model.prediction_error(*held_out)
    assert info["loss_last"] < info["loss_first"]
    assert after < 0.5 * before, (before, after)
    # predictions are clamped to the widened range of the fitted states
    far = model.predict(obs[:5] * 1e3, act[:5])
    width = model.obs_high - model.obs_low
    assert (far <= model.obs_high + model.clamp_margin * width + 1e-5).all()


def test_model_fit_is_seeded_by_the_generator_and_state_dict_round_trips():
    obs, act, next_obs = _hopper_transitions(episodes=2, horizon=30)
    models = []
    for _ in range(2):
        torch.manual_seed(1)
        model = DynamicsModel(11, 3, (16,), ensemble_size=3)
        model.fit_normalizers(obs, act, next_obs)
        model.fit(obs, act, next_obs, 20, 16, np.random.default_rng(5),
                  torch.optim.Adam(model.parameters(), lr=1e-3))
        models.append(model)
    gen = [torch.Generator().manual_seed(2) for _ in range(2)]
    a, b = (m.predict(obs, act, g) for m, g in zip(models, gen))
    assert torch.equal(a, b)
    clone = DynamicsModel(**models[0].config())
    buffer = io.BytesIO()
    torch.save(models[0].state_dict(), buffer)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer))
    assert torch.equal(clone.predict(obs, act), models[0].predict(obs, act))


def test_virtual_rollouts_give_episodes_with_task_rewards():
    family = get_family("hopper-2d")
    obs, act, next_obs = _hopper_transitions(episodes=2, horizon=20)
    tasks = np.array([[1.0, 1.3], [-1.0, 1.9]])

    def model_step(o, a, g):  # a toy model: drift by the (clipped) action
        assert a.abs().max() <= 1.0
        return o + 0.1 * a.sum(-1, keepdim=True)

    sampler = ModelSampler(family, model_step, obs, -np.ones(3), np.ones(3))
    ep = sampler.sample(UniformPolicy(-3 * np.ones(3), 3 * np.ones(3)), tasks,
                        np.random.default_rng(0), 3, horizon=7)
    assert ep.obs.shape == (2, 3, 7, 11) and ep.actions.shape == (2, 3, 7, 3)
    assert ep.mask.all() and torch.equal(ep.obs[:, :, 1:], ep.next_obs[:, :, :-1])
    clipped = ep.actions.clamp(-1, 1)
    expected = family.reward(ep.obs, clipped, ep.next_obs, torch.tensor(tasks,
                             dtype=torch.float32)[:, None, None])
    assert torch.allclose(ep.rewards, expected)
    assert ep.actions.abs().max() > 1.0  # the policy's own actions are kept for log π


# ── configs, checkpoints, end to end ──────────────────────────────────────────────────────────
@pytest.mark.parametrize("override, field", [
    ("meta_batch=2", "meta_batch"), ("n_slbo=0", "n_slbo"), ("task_lr=-1", "task_lr"),
    ("model_hidden_sizes=[]", "model_hidden_sizes"), ("n_model=-1", "n_model"),
    ("virtual_episodes=0", "virtual_episodes"), ("max_kl=0", "max_kl"),
    ("task_cg_iters=0", "task_cg_iters")])
def test_impossible_config_values_are_rejected_naming_the_field(override, field):
    with pytest.raises(AdaptrlError, match=field):
        make_config(get_algorithm("admrl"), "smoke", [override])


def test_presets_share_the_smoke_and_paper_settings():
    base = make_config(get_algorithm("admrl"), "smoke", [])
    for name in ("mb-unif", "mb-gauss"):
        assert make_config(get_algorithm(name), "smoke", []) == base
    paper = make_config(get_algorithm("admrl"), "paper", [])
    assert (paper.n_zeroshot, paper.n_slbo, paper.n_inner, paper.n_model, paper.n_policy,
            paper.virtual_episodes * paper.horizon, paper.fast_batch * paper.horizon,
            paper.task_cg_iters) == (40, 3, 20, 100, 20, 10_000, 2000, 200)


def _tiny_algo(name="admrl", seed=0):
    torch.manual_seed(seed)
    cls = get_algorithm(name)
    cfg = make_config(cls, "smoke", ["horizon=20", "n_slbo_first=1", "n_slbo=2", "n_inner=1",
                                     "n_model=10", "n_policy=2", "n_zeroshot=1",
                                     "virtual_episodes=4", "task_cg_iters=5"])
    return cls(get_family("hopper-2d"), cfg)


def test_checkpoint_round_trip_gives_identical_actions():
    algo = _tiny_algo()
    rng = np.random.default_rng(0)
    for _ in range(2):
        metrics = algo.train_step(rng)
    assert math.isfinite(metrics["task_grad/target_vx"])
    buffer = io.BytesIO()
    torch.save(algo.state_dict(), buffer)
    buffer.seek(0)
    clone = _tiny_algo(seed=123)
    clone.load_state_dict(torch.load(buffer, weights_only=False))
    assert clone.visited == algo.visited and np.array_equal(clone.psi, algo.psi)
    tasks = np.array([[0.5, 1.4], [-1.5, 1.9]])
    obs = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(0))
    actions = []
    for a in (algo, clone):
        adapted = a.adapt(tasks, [0], np.random.default_rng(7))[0]
        actions.append(adapted.policy.act(obs, torch.Generator().manual_seed(1)))
    assert torch.equal(actions[0], actions[1])
    # and training continues identically from the restored state
    m1, m2 = algo.train_step(np.random.default_rng(3)), clone.train_step(np.random.default_rng(3))
    assert m1["model/loss"] == m2["model/loss"] and m1["task/next_target_vx"] == \
        m2["task/next_target_vx"]


def test_adapt_budgets_are_real_samples():
    algo = _tiny_algo("mb-unif")
    rng = np.random.default_rng(0)
    algo.train_step(rng)
    per_iteration = algo.config.fast_batch * algo.horizon  # 4 × 20 = 80
    tasks = np.array([[0.5, 1.4], [-1.5, 1.9]])
    out = algo.adapt(tasks, [0, per_iteration, 2 * per_iteration + 10], rng)
    assert [list(o.samples) for o in out] == [[0, 0], [80, 80], [160, 160]]
    assert out[0].seconds <= out[1].seconds <= out[2].seconds
    with pytest.raises(ValueError, match="budgets"):
        algo.adapt(tasks, [-1], rng)


def test_smoke_preset_trains_and_adapts_end_to_end(tmp_path):
    from adaptrl.eval.protocol import evaluate
    from adaptrl.runner import load_run, train

    run_dir = train("admrl", "hopper-2d", preset="smoke", out=tmp_path / "run", seed=0,
                    progress=False)
    algo, _, info = load_run(run_dir)
    assert info["iteration"] == 3 and len(algo.visited) == 3
    family = get_family("hopper-2d")
    assert family.contains(np.array(algo.visited)).all()
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("time/task_grad_s", "time/virtual_s", "time/sample_s", "task/target_vx"):
        assert column in header
    tasks = family.grid(2)[:2]
    result = evaluate(algo, family, tasks, [0, 200], 2, np.random.default_rng(0))
    assert result["tasks"][0]["samples"] == [0, 200]
    assert all(math.isfinite(r) for t in result["tasks"] for r in t["returns"])


@pytest.mark.parametrize("name", ["mb-unif", "mb-gauss"])
def test_distributional_variants_train_on_drawn_tasks_without_a_task_gradient(name):
    algo = _tiny_algo(name)
    rng = np.random.default_rng(0)
    metrics = []
    for _ in range(2):
        metrics.append(algo.train_step(rng))
        assert "task_grad" not in algo.clock.take()  # the phase never ran
    assert all(math.isnan(m["task_grad/target_vx"]) for m in metrics)
    assert algo.family.contains(np.array(algo.visited)).all() and len(algo.visited) == 2
    # equal sample counts: first task n_slbo_first collections, later ones n_slbo
    cfg = algo.config
    per = cfg.fast_batch * algo.horizon
    assert metrics[-1]["samples/real"] == (cfg.n_slbo_first + cfg.n_slbo) * per


def test_resume_matches_uninterrupted_run(tmp_path):
    from test_runner import assert_resume_is_exact

    assert_resume_is_exact(tmp_path, "admrl", "hopper-2d", first=1, total=2)


def test_default_budgets_are_zero_shot_and_one_to_three_collections():
    from adaptrl.algos import get_algorithm
    from adaptrl.config import make_config
    from adaptrl.tasks import get_family

    cls = get_algorithm("admrl")
    torch.manual_seed(0)
    smoke = cls(get_family("hopper-2d"), make_config(cls, "smoke"))
    assert smoke.default_budgets == (0, 200, 400, 600)  # fast_batch 4 × horizon 50
    paper = make_config(cls, "paper")
    assert paper.fast_batch * paper.horizon == 2000  # → 0, 2000, 4000, 6000 as in the paper
