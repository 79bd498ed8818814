"""SNAIL (Mishra et al. 2018, "A Simple Neural Attentive Meta-Learner"): a policy over the history
of a trial built of causal temporal convolutions and causal soft attention.

At step t the network reads x_t = [s_t, a_{t−1}, r_{t−1}, d_{t−1}] (the GRU's inputs: the
previous action, reward and done flag, zeros at the start of a trial; SNAIL §3, §5.2) and
computes, causally over the trial so far,

    f_t = embed(x_t)                              (a linear map to ``embed`` channels)
    f_t ← TC(f)_t → Attn(f)_t → TC(f)_t → Attn(f)_t

where every block concatenates its output to its input (§3.1), so the channels grow:

* dense block (dilation R, D = ``filters``): a causal convolution of kernel 2,
  z_t = W [f_{t−R}, f_t] + b (f_{t−R} = 0 before the trial's start), split into two halves and
  gated, tanh(z_f) · σ(z_g), D new channels;
* TC block: ⌈log₂ max_length⌉ dense blocks with dilations 2, 4, 8, …, whose receptive field
  covers the whole trial;
* attention block (K = ``key_size``, V = ``value_size``): single-head query q_t, keys k_j and
  values v_j (affine maps of f), read_t = Σ_{j≤t} softmax_j(q_t·k_j / √K) v_j over the past and
  the present (the future masked), V new channels.

The heads act on the final features f_t: Gaussian, π(a_t | history) = N(W f_t + b,
diag(exp(log_std))²), or categorical over one-hot actions, π = softmax(W f_t + b); optionally a
value head V(f_t) = wᵀf_t + c (policy and value share the trunk, like `GRUPolicy`).

Relation to SNAIL App. C. The paper builds one stack per domain (bandits, tabular MDPs, MuJoCo,
the visual mazes) from these same three blocks: an input embedding (a small conv net first for
images), TC blocks of ⌈log₂ T⌉ dense blocks with T the whole trial's length (N pulls for
bandits, N×10 steps for MDPs, two episodes for MuJoCo and the mazes), attention blocks between
them, and linear policy (and value) outputs, with widths chosen per domain. This class fixes one
interleaving for every domain, embedding → TC → Attn → TC → Attn → heads, with T =
``max_length`` and widths sized down for the CPU (32 filters, key and value size 32, a 32-wide
embedding by default), and one trunk shared by the policy and value heads (RL² here trains both
with PPO rather than TRPO with a separate baseline). App. C's exact per-domain layer lists were
not at hand when this was written, so no domain's widths or block order are claimed to match:
set ``filters`` / ``key_size`` / ``value_size`` / ``embed`` (and ``max_length``) to size it to
a given stack.

Masked steps. A step with mask 0 comes after an episode ended early inside its slot: the sampler
still calls the policy there but ignores its action and holds the state. The network sees the
trial as the sequence of the steps TAKEN: a held step enters no later step's context (neither
attention key nor convolution tap), and the output at any step t is the network at position
c_t = (number of steps taken before t) over the taken steps before t and x_t itself. The
full-sequence pass (`evaluate`, `forward`) computes exactly this by gathering each dilated tap
from the taken steps and masking held steps out of the attention keys, which makes it equal to
the cached step-by-step actor under the sampler's holds (a test pins the two together).

The actor's cache (``initial_state``) is a dict of tensors with leading dims [T, N]: ``count``
(steps taken so far, int64); ``features`` [T, N, max_length + 1, C], each taken step's features
up to the widest dense block's input, taken step c in slot c + 1 and zeros in slot 0 (a dense
block of dilation R reads a channel prefix of slot max(c − R + 1, 0)); ``keys``
[T, N, 2, max_length, K] and ``values`` [T, N, 2, max_length, V], the two attention blocks'.
A step computes the new step alone (no recomputation of the history) and writes its rows IN
PLACE past the given count, returning the same buffers with ``count + 1``: no read of a state
goes past its count, so the state it was given stays a valid state and the sampler's
``hold_state`` (``torch.where`` on every tensor) holds it exactly; but two continuations stepped
from the same state object would share their buffers, so copy a state
(``tree_map(torch.clone, state)``) before branching from it. A trial longer than
``max_length`` steps does not fit the cache (an error).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import AdaptrlError
from ..sampling.policy import Policy
from .heads import HEADS, ActionHead
from .policy import NetworkActor, Params

ATTENTION_BLOCKS = 2  # embedding → TC → Attn → TC → Attn


def tc_depth(max_length: int) -> int:
    """⌈log₂ max_length⌉ (at least one dense block): the number of dense blocks of a TC block."""
    return max(1, (int(max_length) - 1).bit_length())


def _lin(x: torch.Tensor, params: Params, name: str) -> torch.Tensor:
    return nn.functional.linear(x, params[f"{name}.weight"], params[f"{name}.bias"])


class SNAILPolicy(ActionHead, nn.Module):
    """See the module docstring. ``max_length``: the longest trial the network will see (fixes
    the TC blocks' depth and the actor's cache); ``head``: gaussian or categorical;
    ``value_head``: also a state-value output (`evaluate`); ``filters`` (D), ``key_size`` (K),
    ``value_size`` (V), ``embed``: the blocks' widths. Shared parameters only."""

    def __init__(self, obs_dim: int, act_dim: int, max_length: int, head: str = "gaussian",
                 value_head: bool = False, init_log_std: float = 0.0, filters: int = 32,
                 key_size: int = 32, value_size: int = 32, embed: int = 32):
        super().__init__()
        sizes = {"obs": obs_dim, "act": act_dim, "max_length": max_length, "filters": filters,
                 "key_size": key_size, "value_size": value_size, "embed": embed}
        if min(sizes.values()) < 1:
            raise AdaptrlError("SNAIL sizes must be positive: "
                               + ", ".join(f"{k} {v}" for k, v in sizes.items()))
        if head not in HEADS:
            raise AdaptrlError(f"unknown policy head '{head}'; known: {', '.join(HEADS)}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.max_length = int(max_length)
        self.head, self.value_head = head, bool(value_head)
        self.init_log_std = float(init_log_std)
        self.filters, self.key_size = int(filters), int(key_size)
        self.value_size, self.embed_size = int(value_size), int(embed)
        self.input_dim = self.obs_dim + self.act_dim + 2
        self.depth = tc_depth(self.max_length)
        self.dilations = tuple(2 ** i for i in range(1, self.depth + 1))

        self.embed = nn.Linear(self.input_dim, self.embed_size)
        channels, dense, attention = self.embed_size, [], []
        for _ in range(ATTENTION_BLOCKS):
            for _ in self.dilations:
                dense.append(nn.Linear(2 * channels, 2 * self.filters))
                channels += self.filters
            attention.append(nn.Linear(channels, 2 * self.key_size + self.value_size))
            channels += self.value_size
        self.dense, self.attention = nn.ModuleList(dense), nn.ModuleList(attention)
        self.channels = channels
        """Width of the final features f_t (the heads' input)."""
        self.history_channels = channels - self.value_size - self.filters
        """Width of the cached features: the input of the last dense block."""
        self.out = nn.Linear(channels, self.act_dim)
        if head == "gaussian":
            self.log_std = nn.Parameter(torch.full((self.act_dim,), self.init_log_std))
        if self.value_head:
            self.value = nn.Linear(channels, 1)
        with torch.no_grad():  # start near zero mean / uniform logits, like the other policies
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def config(self) -> dict:
        """Constructor arguments, so that a snapshot or checkpoint rebuilds the network."""
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "max_length": self.max_length,
                "head": self.head, "value_head": self.value_head,
                "init_log_std": self.init_log_std, "filters": self.filters,
                "key_size": self.key_size, "value_size": self.value_size,
                "embed": self.embed_size}

    def params(self) -> Params:
        return dict(self.named_parameters())

    # ── the trunk, shared by the full-sequence pass and the cached step ──
    def _trunk(self, x: torch.Tensor, params: Params, conv_tap, attend) -> torch.Tensor:
        """Features ``[..., channels]`` from inputs ``x [..., input_dim]``.
        ``conv_tap(j, f, w)`` gives the j-th dilation's tap term w·f_{t−R} (zeros before the
        start) for the current features f (any prefix width) and the tap's half ``w`` of the
        kernel; ``attend(a, q, k, v)`` the read of attention block a."""
        K, V = self.key_size, self.value_size
        f = _lin(x, params, "embed")
        d = 0
        for a in range(ATTENTION_BLOCKS):
            for j in range(self.depth):
                # the kernel-2 convolution W [f_{t−R}, f_t] + b, as its two halves
                weight, C = params[f"dense.{d}.weight"], f.shape[-1]
                z = (nn.functional.linear(f, weight[:, C:], params[f"dense.{d}.bias"])
                     + conv_tap(j, f, weight[:, :C]))
                z_f, z_g = z.chunk(2, -1)
                f = torch.cat([f, torch.tanh(z_f) * torch.sigmoid(z_g)], -1)
                d += 1
            q, k, v = _lin(f, params, f"attention.{a}").split([K, K, V], -1)
            f = torch.cat([f, attend(a, q, k, v)], -1)
        return f

    def _sequence(self, x: torch.Tensor, mask: torch.Tensor, params: Params):
        """The full causal pass over rows ``x [B, L, input_dim]`` with step mask ``[B, L]``:
        features ``[B, L, channels]`` and the attention blocks' keys and values (lists of
        ``[B, L, K]`` / ``[B, L, V]``)."""
        B, L = mask.shape
        taken = mask > 0
        t = torch.arange(L, device=x.device)
        # the tap term is linear in f: project every step once, then shift (or gather) the
        # 2D-wide projection rather than the C-wide features
        if bool(taken.all()):  # every step taken: the taps are plain shifts
            def conv_tap(j, f, w):
                R = self.dilations[j]
                return nn.functional.pad(f @ w.T, (0, 0, R, 0))[:, :L]
        else:  # the tap at t is the taken step c_t − R (c_t: steps taken before t)
            before = torch.cumsum(taken.long(), 1) - taken.long()
            order = torch.argsort(torch.where(taken, t, t + L), dim=1)  # taken steps first
            taps = []
            for R in self.dilations:
                lag = before - R
                taps.append((order.gather(1, lag.clamp(min=0)), lag >= 0))

            def conv_tap(j, f, w):
                src, valid = taps[j]
                p = f @ w.T
                past = p.gather(1, src[..., None].expand(-1, -1, p.shape[-1]))
                return torch.where(valid[..., None], past, torch.zeros((), dtype=p.dtype))
        # query t sees itself and the taken steps before it
        allowed = (torch.eye(L, dtype=torch.bool, device=x.device)
                   | (torch.tril(torch.ones(L, L, dtype=torch.bool, device=x.device), -1)
                      & taken[:, None, :]))
        scale = 1.0 / math.sqrt(self.key_size)
        keys, values = [], []

        def attend(a, q, k, v):
            keys.append(k)
            values.append(v)
            logits = (q @ k.transpose(1, 2)) * scale
            probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1)
            return probs @ v

        return self._trunk(x, params, conv_tap, attend), keys, values

    def step_inputs(self, obs, prev_action, prev_reward, prev_done) -> torch.Tensor:
        return torch.cat([obs, prev_action, prev_reward[..., None], prev_done[..., None]], -1)

    # ── a batch of episodes (or trials) ──
    def inputs(self, obs: torch.Tensor, episodes) -> tuple:
        """What the network reads over ``episodes`` (``obs``: their observations, possibly
        with extra conditioning): observations, the sampler's feedback and the step mask."""
        return (obs, *episodes.feedback(), episodes.mask)

    def features(self, inputs: tuple, params: Params | None = None) -> torch.Tensor:
        """The final features f_t ``[T, N, L, channels]`` over the histories, in one causal
        pass (held steps out of every later step's context, as the actor's cache keeps them)."""
        params = self.params() if params is None else params
        obs, prev_action, prev_reward, prev_done, mask = inputs
        x = self.step_inputs(obs, prev_action, prev_reward, prev_done)
        T, N, L = mask.shape
        f, _, _ = self._sequence(x.reshape(T * N, L, -1), mask.reshape(T * N, L), params)
        return f.reshape(T, N, L, -1)

    def head_output(self, f: torch.Tensor, params: Params) -> torch.Tensor:
        """The Gaussian mean or the categorical logits, ``[..., act_dim]``."""
        return _lin(f, params, "out")

    def value_output(self, f: torch.Tensor, params: Params) -> torch.Tensor:
        """V(f_t), ``[...]`` (needs ``value_head``)."""
        return _lin(f, params, "value").squeeze(-1)

    def forward(self, inputs: tuple, params: Params | None = None):
        """The head's output ``[T, N, L, act_dim]`` (mean or logits) and the log-std (None for
        the categorical head)."""
        params = self.params() if params is None else params
        out = self.head_output(self.features(inputs, params), params)
        return out, (params["log_std"] if self.head == "gaussian" else None)

    def evaluate(self, inputs, actions, params: Params | None = None):
        """One causal pass for actor-critic training: log π(a_t | history), the entropy of π
        at each step and V(f_t), each ``[T, N, L]`` (values need ``value_head``)."""
        params = self.params() if params is None else params
        f = self.features(inputs, params)
        out = self.head_output(f, params)
        log_std = params["log_std"] if self.head == "gaussian" else None
        values = self.value_output(f, params) if self.value_head else None
        return self._log_prob(out, log_std, actions), self._entropy(out, log_std), values

    def values(self, inputs, params: Params | None = None) -> torch.Tensor:
        """V(f_t) ``[T, N, L]`` alone, one causal pass (needs ``value_head``; a separate
        critic)."""
        params = self.params() if params is None else params
        return self.value_output(self.features(inputs, params), params)

    # ── the actor's cache ──
    def initial_state(self, num_envs, dtype=torch.float32) -> dict:
        """The cache at the start of a trial for ``num_envs`` = ``(T, N)`` (module docstring)."""
        T, N = num_envs
        L, A = self.max_length, ATTENTION_BLOCKS
        return {"count": torch.zeros(T, N, dtype=torch.long),
                "features": torch.zeros(T, N, L + 1, self.history_channels, dtype=dtype),
                "keys": torch.zeros(T, N, A, L, self.key_size, dtype=dtype),
                "values": torch.zeros(T, N, A, L, self.value_size, dtype=dtype)}

    def cached_step(self, x: torch.Tensor, state: dict, params: Params):
        """One step for inputs ``x [T, N, input_dim]``: the features ``[T, N, channels]`` and
        the next state (the same buffers, the new step written in place past ``count``; see
        the module docstring). Computes the new step only, from the cache."""
        T, N = x.shape[:2]
        B, L = T * N, self.max_length
        count = state["count"].reshape(B)
        if B and int(count.max()) >= L:
            raise AdaptrlError(f"SNAIL's context holds max_length = {L} steps and this trial is "
                               f"longer; build the policy with a larger max_length")
        bufs = {k: state[k] if state[k].is_contiguous() else state[k].contiguous()
                for k in ("features", "keys", "values")}
        feats = bufs["features"].view(B * (L + 1), self.history_channels)
        keys = bufs["keys"].view(B, ATTENTION_BLOCKS, L, self.key_size)
        values = bufs["values"].view(B, ATTENTION_BLOCKS, L, self.value_size)
        rows = torch.arange(B)
        # step c's taps are the steps c − R, in slots c − R + 1; slot 0 (zeros) before the start
        slot = (count[:, None] + 1 - torch.tensor(self.dilations)[None]).clamp(min=0)
        taps = feats.index_select(0, (rows[:, None] * (L + 1) + slot).reshape(-1))
        taps = taps.view(B, self.depth, self.history_channels)
        span = int(count.max()) + 1 if B else 1
        visible = torch.arange(span)[None] <= count[:, None]  # [B, span]
        scale = 1.0 / math.sqrt(self.key_size)

        def conv_tap(j, f, w):
            return taps[:, j, :f.shape[-1]] @ w.T

        def attend(a, q, k, v):
            keys[rows, a, count] = k
            values[rows, a, count] = v
            logits = torch.einsum("bk,bsk->bs", q, keys[:, a, :span]) * scale
            probs = torch.softmax(logits.masked_fill(~visible, float("-inf")), -1)
            return torch.einsum("bs,bsv->bv", probs, values[:, a, :span])

        f = self._trunk(x.reshape(B, -1), params, conv_tap, attend)
        feats[rows * (L + 1) + count + 1] = f[:, :self.history_channels]
        state = {**bufs, "count": (count + 1).reshape(T, N)}
        return f.reshape(T, N, -1), state

    def state_after(self, inputs: tuple, last: torch.Tensor, params: Params | None = None):
        """The actor's state (the cache, leading dim ``[T]``) after step ``last[i]`` of row
        ``(i, 0)`` of a batch of trials (its first row per task), as the sampler would have
        carried it: the taken steps up to ``last[i]``, in order, and their count."""
        return self.states_after(inputs, [last], params)[0]

    def states_after(self, inputs: tuple, lasts: list, params: Params | None = None) -> list:
        """`state_after` for several ``last`` vectors from one pass over the trials."""
        params = self.params() if params is None else params
        obs, prev_action, prev_reward, prev_done, mask = (x[:, 0] for x in inputs)
        x = self.step_inputs(obs, prev_action, prev_reward, prev_done)
        f, keys, values = self._sequence(x, mask, params)
        return [self._cache_after(f, keys, values, mask, last) for last in lasts]

    def _cache_after(self, f, keys, values, mask, last) -> dict:
        T, L = mask.shape
        t = torch.arange(L)
        kept = (mask > 0) & (t[None] <= torch.as_tensor(last).reshape(T, 1))
        count = kept.sum(1)
        if T and int(count.max()) > self.max_length:
            raise AdaptrlError(f"SNAIL's context holds max_length = {self.max_length} steps; "
                               f"the trial's state needs {int(count.max())}")
        width = min(L, self.max_length)
        order = torch.argsort(torch.where(kept, t, t + L), dim=1)[:, :width]
        slot_used = (torch.arange(width)[None] < count[:, None])[..., None]

        def compress(seq, first=0):  # [T, L, d] → [T, first + max_length, d]: the kept steps
            out = seq.new_zeros(T, first + self.max_length, seq.shape[-1])  # from slot first
            picked = seq.gather(1, order[..., None].expand(-1, -1, seq.shape[-1]))
            out[:, first:first + width] = torch.where(slot_used, picked,
                                                      torch.zeros((), dtype=seq.dtype))
            return out

        return {"count": count,
                "features": compress(f[..., :self.history_channels], first=1),
                "keys": torch.stack([compress(k) for k in keys], 1),
                "values": torch.stack([compress(v) for v in values], 1)}

    def act_from(self, f: torch.Tensor, params: Params, generator, deterministic: bool
                 ) -> torch.Tensor:
        """Actions ``[T, N, act_dim]`` from features ``f [T, N, channels]`` (one-hot for the
        categorical head)."""
        log_std = params["log_std"] if self.head == "gaussian" else None
        return self.sample_actions(self.head_output(f, params), log_std, generator,
                                   deterministic)

    def actor(self, params: Params | None = None, deterministic: bool = False) -> SNAILActor:
        """The policy the sampler drives (one cached step per time step)."""
        return SNAILActor(self, params, deterministic)


class SNAILActor(NetworkActor, Policy):
    """A `SNAILPolicy` with parameters θ as a stateful sampler policy: each step computes the
    new step from the cache of the trial so far (`SNAILPolicy.cached_step`)."""

    network = SNAILPolicy
    parallel_step = True  # its features widen to hundreds of channels: worth every thread

    def initial_state(self, num_envs):
        return self.net.initial_state(num_envs, self.current_params()["embed.weight"].dtype)

    @torch.no_grad()
    def step(self, obs, state, prev_action, prev_reward, prev_done, generator):
        params = self.current_params()
        x = self.net.step_inputs(obs, prev_action, prev_reward, prev_done)
        f, state = self.net.cached_step(x, state, params)
        return self.net.act_from(f, params, generator, self.deterministic), state
