"""Hand-written gradient and curvature products of `GaussianMLPPolicy` losses, batched over tasks.

TRPO and second-order MAML spend almost all their time in products with Hessians of losses of
the form

    C(θ) = Σ_n c_n(μ_n, ℓ),    μ_n = μ(s_n; W) the policy mean,  ℓ its log-std,

one such sum per task (per-task parameters with a leading task dimension T). Writing
g = ∂c/∂μ, D = ∂²c/∂μ² and X = ∂²c/∂μ∂ℓ (both diagonal for this Gaussian) and μ̇ = J Ẇ for a
tangent (Ẇ, ℓ̇), the Hessian-vector product is

    (Hv)_W = Jᵀ (D μ̇ + X ℓ̇) + Σ_n Σ_k g_nk ∇²_W μ_nk Ẇ,      (Hv)_ℓ = Σ_n X_n μ̇_n + L_ℓℓ ℓ̇.

`MLPTrace` runs the forward pass once and keeps what every later product needs (layer inputs,
activation slopes). A product is then one forward tangent pass (μ̇) and one backward pass of
the output-gradient tangent; the network-curvature term is the tangent of the backward pass of
g (Pearlmutter's R-operator), which needs the backward deltas of g, cached once per loss. With
g = 0 (a KL at its minimum: the Fisher) that term vanishes and the product is exact Gauss–Newton.

Per product on a two-hidden-layer network this is six batched matrix products of the hidden
width and about seven elementwise passes; autograd's double backward, which MAML used before,
makes many more elementwise passes and fresh tensors. Measured on the same batch
(`benchmarks/curvature_products.py`): 1.5× faster per inner-loss Hessian product, 2.4× per
Fisher product. Tests compare every product with autograd (`tests/test_curvature.py`).
"""

from __future__ import annotations

import math

import torch

Params = dict[str, torch.Tensor]


def _outer(delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_n δ_n x_nᵀ per task, ``[T, out, in]``, from ``delta [T, M, out]`` and ``x [T, M, in]``.

    Computed as (xᵀδ)ᵀ when the input is the narrower side: MKL's batched product is 2–3×
    slower with a thin right factor (e.g. the 2-D or 17-D observations of the first layer).
    """
    if x.shape[-1] < delta.shape[-1]:
        return torch.bmm(x.transpose(1, 2), delta).transpose(1, 2)
    return torch.bmm(delta.transpose(1, 2), x)


_IN_PLACE = {"relu": torch.relu_, "tanh": torch.tanh_, "elu": torch.nn.functional.elu_}


# For relu and elu, z > 0 exactly when h = act(z) > 0, so the pre-activation need not be kept.
def _slope(activation: str, h: torch.Tensor) -> torch.Tensor:
    """act'(z) from the activation h = act(z)."""
    if activation == "relu":
        return (h > 0).to(h.dtype)
    if activation == "tanh":  # 1 − h², in one pass
        return torch.addcmul(torch.ones((), dtype=h.dtype), h, h, value=-1)
    if activation == "elu":  # α = 1: h = e^z − 1 for z ≤ 0
        return torch.where(h > 0, torch.ones_like(h), h + 1)
    raise ValueError(f"no derivatives for activation {activation!r}")


def _second(activation: str, h: torch.Tensor, slope: torch.Tensor) -> torch.Tensor | None:
    """act''(z) from h = act(z) and act'(z); None where it is zero everywhere (relu)."""
    if activation == "relu":
        return None
    if activation == "tanh":
        return -2 * h * slope
    return torch.where(h > 0, torch.zeros_like(h), h + 1)  # elu


class MLPTrace:
    """The forward pass of a policy on per-task parameters, kept for products.

    obs: ``[T, ..., obs_dim]``; params: per-task (leading dim T). ``mean`` is ``[T, M, act]``
    with M the flattened inner shape of ``obs``; nothing is recorded by autograd.
    """

    def __init__(self, policy, obs: torch.Tensor, params: Params):
        if params["log_std"].dim() != 2:
            raise ValueError("MLPTrace takes per-task parameters (see expand_params)")
        self.activation = policy.activation
        self.n = len(policy.layers)
        self.keys = list(params)
        T = params["log_std"].shape[0]
        self._work: dict = {}
        self.weights = [params[f"layers.{i}.weight"].detach() for i in range(self.n)]
        self.log_std = params["log_std"].detach()
        act = _IN_PLACE[self.activation]
        with torch.no_grad():
            x = obs.reshape(T, -1, obs.shape[-1])
            self.inputs, self.slopes = [x], []
            for i in range(self.n):
                z = torch.baddbmm(params[f"layers.{i}.bias"].detach().unsqueeze(1), x,
                                  self.weights[i].transpose(1, 2))
                if i == self.n - 1:
                    self.mean = z
                    break
                x = act(z)  # in place: z is not needed again
                self.inputs.append(x)
                self.slopes.append(_slope(self.activation, x))

    def second_derivative(self, i: int) -> torch.Tensor | None:
        """act''(z_i) of hidden layer i (None for relu)."""
        return _second(self.activation, self.inputs[i + 1], self.slopes[i])

    def work(self, name, like: torch.Tensor) -> torch.Tensor:
        """A scratch tensor shaped like ``like``, reused by every product on this trace.

        Products are called many times with the same shapes; writing their large intermediates
        into the same memory avoids a fresh allocation each time, which costs about as much as
        the elementwise pass itself (the allocator returns big blocks to the OS, so every new
        one page-faults: measured 3.2 ms against 1.7 ms for a [40, 2000, 64] product).
        Contents are valid until the next product on the same trace.
        """
        buf = self._work.get(name)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = self._work[name] = torch.empty_like(like)
        return buf

    # ── the two passes ──
    def tangent(self, tangent: Params) -> tuple[list, list]:
        """Forward tangents of every layer's pre-activation ``ż_i [T, M, width_i]`` (the last
        is μ̇ = J Ẇ) and of every layer's input ``ẋ_i`` (None for the observations); both
        live in the trace's scratch memory."""
        zdots, xdots, xdot = [], [None], None
        for i in range(self.n):
            dw, db = tangent[f"layers.{i}.weight"], tangent[f"layers.{i}.bias"]
            like = self.slopes[i] if i < self.n - 1 else self.mean
            zdot = torch.baddbmm(db.unsqueeze(1), self.inputs[i], dw.transpose(1, 2),
                                 out=self.work(("zdot", i), like))
            if xdot is not None:
                zdot.baddbmm_(xdot, self.weights[i].transpose(1, 2))
            zdots.append(zdot)
            if i < self.n - 1:
                xdot = torch.mul(zdot, self.slopes[i], out=self.work(("xdot", i), like))
                xdots.append(xdot)
        return zdots, xdots

    def backward(self, delta: torch.Tensor, keep: bool = False):
        """Gradients of Σ_n δ_n · μ_n with respect to every weight and bias (a dict), for an
        output gradient ``delta [T, M, act]``; with ``keep`` also the deltas of every layer's
        pre-activation and of its input (for `LossCurvature`)."""
        grads, deltas, input_deltas = {}, [None] * self.n, [None] * self.n
        for i in reversed(range(self.n)):
            deltas[i] = delta
            grads[f"layers.{i}.weight"] = _outer(delta, self.inputs[i])
            grads[f"layers.{i}.bias"] = delta.sum(1)
            if i > 0:
                input_delta = torch.bmm(delta, self.weights[i])
                input_deltas[i] = input_delta
                delta = (input_delta * self.slopes[i - 1] if keep
                         else input_delta.mul_(self.slopes[i - 1]))
        return (grads, deltas, input_deltas) if keep else grads


class LossCurvature:
    """Gradient and Hessian products of C = Σ_n c_n(μ_n, ℓ) on a trace, per task.

    g, D, X: ``[T, M, act]`` (g = ∂c/∂μ, D = ∂²c/∂μ², X = ∂²c/∂μ∂ℓ; g or X may be None for
    zero); grad_log_std, hess_log_std: ``[T, act]`` (Σ_n ∂c/∂ℓ and Σ_n ∂²c/∂ℓ²).
    """

    def __init__(self, trace: MLPTrace, g, D, X, grad_log_std, hess_log_std,
                 products: bool = True):
        self.trace, self.D, self.X, self.hess_log_std = trace, D, X, hess_log_std
        self.g, self.curv, self.products = g, None, products
        if g is not None:
            if products:
                grads, self.deltas, self.input_deltas = trace.backward(g, keep=True)
            else:
                grads = trace.backward(g)
            grads["log_std"] = grad_log_std
            self._gradient = {k: grads[k] for k in trace.keys}
        else:
            self._gradient = None

    def gradient(self) -> Params:
        """∇C per task (needs g)."""
        if self._gradient is None:
            raise ValueError("this loss was built without a first derivative (g = 0)")
        return self._gradient

    def __call__(self, tangent: Params) -> Params:
        """H v for a tangent dict shaped like the parameters (leading task dim T)."""
        if not self.products:
            raise ValueError("this loss was built for its gradient only (products=False)")
        tr = self.trace
        if self.g is not None and self.curv is None:
            # δ̃_i ⊙ act''(z_{i−1}): how the input delta of layer i moves with z_{i−1} (made on
            # the first product, so a loss used only for its gradient never pays for it)
            self.curv = [None] + [
                None if (second := tr.second_derivative(i - 1)) is None
                else self.input_deltas[i] * second for i in range(1, tr.n)]
        zdots, xdots = tr.tangent(tangent)
        mudot = zdots[-1]
        log_std_dot = tangent["log_std"].unsqueeze(1)  # [T, 1, act]
        gdot = self.D * mudot
        if self.X is not None:
            gdot = gdot + self.X * log_std_dot
        out, delta_dot = {}, gdot
        for i in reversed(range(tr.n)):
            if self.g is not None and i > 0:  # δ̇_iᵀ x_i + δ_iᵀ ẋ_i
                gw = torch.bmm(delta_dot.transpose(1, 2), tr.inputs[i])
                gw.baddbmm_(self.deltas[i].transpose(1, 2), xdots[i])
            else:
                gw = _outer(delta_dot, tr.inputs[i])
            out[f"layers.{i}.weight"] = gw
            out[f"layers.{i}.bias"] = delta_dot.sum(1)
            if i > 0:
                nxt = torch.bmm(delta_dot, tr.weights[i],
                                out=tr.work(("delta_dot", i), tr.slopes[i - 1]))
                if self.g is not None:
                    nxt.baddbmm_(self.deltas[i], tangent[f"layers.{i}.weight"])
                nxt.mul_(tr.slopes[i - 1])
                if self.g is not None and self.curv[i] is not None:
                    nxt.addcmul_(self.curv[i], zdots[i - 1])
                delta_dot = nxt
        hl = self.hess_log_std * tangent["log_std"]
        if self.X is not None:
            hl = hl + (self.X * mudot).sum(1)
        out["log_std"] = hl
        return {k: out[k] for k in tr.keys}


def neg_log_prob_curvature(trace: MLPTrace, actions: torch.Tensor, weights: torch.Tensor,
                           products: bool = True) -> LossCurvature:
    """C = −Σ_n w_n log π(a_n|s_n): REINFORCE losses (w = mask·advantage / count) per task.

    actions ``[T, ..., act]``, weights ``[T, ...]`` matching the trace's observations;
    ``products=False`` keeps nothing for Hessian products (the gradient alone is cheaper).
    """
    T, act = trace.mean.shape[0], trace.mean.shape[-1]
    a = actions.reshape(T, -1, act)
    w = weights.reshape(T, -1, 1).to(a.dtype)
    precision = torch.exp(-2 * trace.log_std).unsqueeze(1)   # [T, 1, act]
    diff = a - trace.mean
    e = diff * precision                                      # ∂ log π / ∂μ
    g = -w * e
    D = w * precision
    X = -2 * g
    grad_log_std = -(w * (diff * e - 1)).sum(1)
    hess_log_std = 2 * (w * diff * e).sum(1)
    return LossCurvature(trace, g, D, X, grad_log_std, hess_log_std, products)


def kl_curvature(trace: MLPTrace, weights: torch.Tensor) -> LossCurvature:
    """C = Σ_n w_n KL(π_trace(·|s_n) ‖ π_θ(·|s_n)) at θ = the trace's parameters: its Hessian is
    the Fisher information, F v = Jᵀ w Σ⁻¹ J v for the mean and 2 (Σ w) v for the log-std."""
    T = trace.mean.shape[0]
    w = weights.reshape(T, -1, 1).to(trace.mean.dtype)
    D = w * torch.exp(-2 * trace.log_std).unsqueeze(1)
    return LossCurvature(trace, None, D, None, None, 2 * w.sum(1).expand_as(trace.log_std))


def log_prob(trace: MLPTrace, actions: torch.Tensor) -> torch.Tensor:
    """log π(a|s) ``[T, M]`` for the trace's parameters (no autograd)."""
    T, act = trace.mean.shape[0], trace.mean.shape[-1]
    z = (actions.reshape(T, -1, act) - trace.mean) * torch.exp(-trace.log_std).unsqueeze(1)
    return (-0.5 * z**2 - trace.log_std.unsqueeze(1) - 0.5 * math.log(2 * math.pi)).sum(-1)
