"""`adaptrl bench adapt`: how long each method's adaptation computation takes, and its memory.

Every method gets the same data: one batch of ``episodes`` episodes per task, collected once
with uniformly random actions, so that the timing measures the adaptation itself and the
methods see the same number of samples. What is timed, per method:

* gradient methods (maml, fomaml, reptile, pretrain, random): one adaptation step — the
  linear baseline fit, advantages, and one REINFORCE gradient step of the policy;
* flap: the adapter's prediction of the output layer from the transitions;
* pearl: the posterior q(z|c) from the transitions.

Latency is per task: each task is adapted on its own (T = 1), ``repeats`` times, after two
warm-up calls; the result gives the median and the 95th percentile in milliseconds. Peak memory
is the growth of the process's peak resident set during the method's first adaptation of all
tasks at once (Linux ``/proc/self/clear_refs``; None elsewhere): it includes intermediate
buffers, but not memory the allocator had already reserved, so small values read as "fits in
what the process already holds".
"""

from __future__ import annotations

import dataclasses
import gc
import re
import time
from pathlib import Path

import numpy as np
import torch

from ..algos import get_algorithm
from ..algos.offpolicy import OffPolicyMethod
from ..algos.pg import PolicyGradientMethod
from ..config import make_config, preset_path
from ..envs import action_bounds
from ..errors import AdaptrlError
from ..progress import progress_bar
from ..sampling import LocalSampler, UniformPolicy
from ..tasks import get_family

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def peak_memory_mb(fn) -> float | None:
    """Growth of the peak resident set (MB) while ``fn()`` runs; None where the kernel does not
    let a process reset its peak (not Linux, or no permission)."""
    gc.collect()
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident set
    except OSError:
        fn()
        return None
    before = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) / 1024.0


def adaptation_function(method, episodes):
    """A callable that runs ``method``'s adaptation computation on ``episodes`` (env-space
    actions) and returns what the adapted policy needs (see the module docstring)."""
    if isinstance(method, OffPolicyMethod):
        unit = dataclasses.replace(episodes, actions=method.unit_action(episodes.actions))
        context, mask = method.context_of([unit])

        def run():
            with torch.no_grad():
                return method.read_context(context, mask)

        return run
    if isinstance(method, PolicyGradientMethod):
        T = episodes.num_tasks

        def run():
            params = {k: v.detach() for k, v in method.policy.expand_params(T).items()}
            return method.inner_update(params, episodes, method.advantages(episodes))

        return run
    raise AdaptrlError(f"bench adapt does not know how {type(method).__name__} adapts")


def _config(cls, preset, overrides):
    if preset is None:
        return make_config(cls, None, overrides)
    try:
        preset_path(cls, preset)
    except AdaptrlError:
        return make_config(cls, None, overrides)  # methods without that preset use defaults
    return make_config(cls, preset, overrides)


def bench_adapt(family: str, algos=("flap", "pearl", "maml"), tasks: int = 20,
                episodes: int = 1, horizon: int | None = None, repeats: int = 5,
                preset: str | None = None, overrides=(), seed: int = 0,
                progress: bool = False) -> dict:
    """Adaptation latency and peak memory of each method on the same data (module docstring);
    ``progress``: a bar over the methods on stderr.

    Returns ``{"family", "tasks", "episodes", "horizon", "samples_per_task", "torch_threads",
    "methods": {name: {"median_ms", "p95_ms", "batched_ms_per_task", "peak_mb"}},
    "ratios": {"maml/flap": ..., ...}}``; the ratios divide each gradient method's median by
    each context method's (how many times faster the context method adapts).
    """
    fam = get_family(family)
    if tasks < 1 or episodes < 1 or repeats < 1:
        raise AdaptrlError("tasks, episodes and repeats must be positive")
    rng = np.random.default_rng(seed)
    task_set = fam.split("test", tasks, rng)
    horizon = int(horizon or fam.horizon)
    data = LocalSampler(fam).sample(UniformPolicy(*action_bounds(fam)), task_set, rng, episodes,
                                    horizon=horizon)
    result = {"family": fam.name, "tasks": tasks, "episodes": episodes,
              "horizon": horizon, "samples_per_task": int(data.mask[0].sum()),
              "repeats": repeats, "torch_threads": torch.get_num_threads(), "preset": preset,
              "methods": {}}
    bar = progress_bar(len(algos), f"bench adapt {fam.name}", progress, unit="method")
    for name in algos:
        bar.set_postfix_str(name, refresh=True)
        cls = get_algorithm(name)
        torch.manual_seed(seed)
        method = cls(fam, _config(cls, preset, overrides))
        batched = adaptation_function(method, data)
        peak_mb = peak_memory_mb(batched)  # first, before earlier calls leave memory reserved
        per_task = [adaptation_function(method, data.select([i])) for i in range(tasks)]
        for fn in per_task[:2]:
            fn()  # warm-up: first calls pay for allocations and kernel selection
        times = []
        for _ in range(repeats):
            for fn in per_task:
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1000.0)
        batched_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            batched()
            batched_times.append((time.perf_counter() - start) * 1000.0 / tasks)
        batched_ms = float(np.median(batched_times))
        result["methods"][cls.name] = {
            "median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
            "batched_ms_per_task": batched_ms, "peak_mb": peak_mb}
        bar.update(1)
    bar.close()
    methods = result["methods"]
    gradient = [n for n in methods if issubclass(get_algorithm(n), PolicyGradientMethod)]
    context = [n for n in methods if issubclass(get_algorithm(n), OffPolicyMethod)]
    result["ratios"] = {f"{g}/{c}": methods[g]["median_ms"] / methods[c]["median_ms"]
                        for g in gradient for c in context}
    return result


def format_adapt(r: dict) -> str:
    lines = [f"adapt  {r['family']}: {r['tasks']} tasks, {r['episodes']} episode(s) of "
             f"H={r['horizon']} per task ({r['samples_per_task']} samples), {r['repeats']} "
             f"repeats, torch threads {r['torch_threads']}",
             f"  {'method':10s} {'median_ms':>10s} {'p95_ms':>10s} {'batched_ms/task':>16s} "
             f"{'peak_MB':>8s}"]
    for name, m in r["methods"].items():
        peak = "n/a" if m["peak_mb"] is None else f"{m['peak_mb']:.1f}"
        lines.append(f"  {name:10s} {m['median_ms']:10.3f} {m['p95_ms']:10.3f} "
                     f"{m['batched_ms_per_task']:16.3f} {peak:>8s}")
    for key, ratio in r["ratios"].items():
        slow, fast = key.split("/")
        lines.append(f"  {fast} adapts {ratio:.1f}x faster than one {slow} step")
    return "\n".join(lines)
