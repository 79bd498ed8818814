"""Keeping NaN and infinity out of what training changes: snapshots of networks, optimizer states
and loose tensors taken before an update, a check after it, and a restore when it failed.

A method names what its updates change (`adaptrl.algos.MetaAlgorithm.trainables`); the runner
wraps each iteration in a `TrainableSnapshot` and refuses the iteration when `first_nonfinite`
finds a NaN or infinity afterwards, or when the iteration raised
`adaptrl.errors.NonFiniteError`. The check is one ``isfinite(...).all()`` per tensor.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

Trainables = dict  # name → nn.Module | torch.optim.Optimizer | torch.Tensor


def _unique(trainables: Trainables) -> list[tuple[str, object]]:
    """The (name, object) pairs, each object once (FLAP's actor is also its SAC's actor)."""
    seen, out = set(), []
    for name, obj in trainables.items():
        if id(obj) not in seen:
            seen.add(id(obj))
            out.append((name, obj))
    return out


def _tensors(name: str, obj) -> list[tuple[str, torch.Tensor, bool]]:
    """Every tensor of a module (parameters, then buffers), an optimizer's state (moments, step
    counts) or a loose tensor: ``(where it lives, tensor, whether ±inf is allowed)``. Buffers
    may hold ±inf as a sentinel (a dynamics model's state bounds before its first fit), never
    NaN; everything else must be finite."""
    if isinstance(obj, nn.Module):
        return ([(f"{name}.{k}", v, False) for k, v in obj.named_parameters()]
                + [(f"{name}.{k}", v, True) for k, v in obj.named_buffers()])
    if isinstance(obj, torch.optim.Optimizer):
        return [(f"{name} state {key}", v, False) for state in obj.state.values()
                for key, v in state.items() if isinstance(v, torch.Tensor)]
    if isinstance(obj, torch.Tensor):
        return [(name, obj, False)]
    raise TypeError(f"trainable {name!r} is a {type(obj).__name__}; expected an nn.Module, an "
                    f"optimizer or a tensor")


def first_nonfinite(trainables: Trainables) -> str | None:
    """The name of the first floating-point tensor among ``trainables`` that holds a NaN or an
    infinity (``"sac.critic.q1.0.weight"``, ``"encoder_optim state exp_avg"``; a module's
    buffers only count NaN); None when all are finite."""
    for name, obj in _unique(trainables):
        for label, tensor, inf_allowed in _tensors(name, obj):
            if not tensor.is_floating_point():
                continue
            bad = tensor.isnan().any() if inf_allowed else ~torch.isfinite(tensor).all()
            if bad:
                return label
    return None


class TrainableSnapshot:
    """Copies of ``trainables`` taken now, to `restore` in place later (modules by
    ``load_state_dict``, optimizers by their state dicts, loose tensors by ``copy_``)."""

    def __init__(self, trainables: Trainables):
        self.items = _unique(trainables)
        self.saved = []
        for _, obj in self.items:
            if isinstance(obj, nn.Module):
                self.saved.append({k: v.detach().clone() for k, v in obj.state_dict().items()})
            elif isinstance(obj, torch.optim.Optimizer):
                self.saved.append(copy.deepcopy(obj.state_dict()))
            else:
                self.saved.append(obj.detach().clone())

    def restore(self) -> None:
        """Put every trainable back as it was when the snapshot was taken (an optimizer that
        had no state then has none again). A snapshot restores once."""
        for (_, obj), saved in zip(self.items, self.saved):
            if isinstance(obj, nn.Module):
                obj.load_state_dict(saved)
            elif isinstance(obj, torch.optim.Optimizer):
                obj.load_state_dict(saved)
            else:
                with torch.no_grad():
                    obj.copy_(saved)
