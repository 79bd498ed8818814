"""Config fields with help text and valid ranges, shared by every layer's config dataclasses
(no imports from the package).

A field declares its range next to it, ``option(0.99, "discount", gt=0, le=1)``, and a config's
``validate()`` calls `check_ranges` once for all its fields (inherited ones included), keeping
only cross-field rules in its own body.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

MAX_SEED = 2**32 - 1
"""Seeds (the CLI's ``--seed``, a run's seed, the oracle's) are integers in [0, MAX_SEED]."""

Activation = Literal["relu", "tanh", "elu"]
"""The type of an ``activation`` field: the names in `adaptrl.nets.ACTIVATIONS` (a test holds
them equal), so that ``--set activation=foo`` is refused while the config is built."""


@dataclass(frozen=True)
class Range:
    """The valid values of a field, as declared by `option` (stored as ``metadata["range"]``).

    Numbers: ``gt``/``ge`` (lower bound, strict or not), ``lt``/``le`` (upper bound);
    ``positive`` is ``gt=0`` worded "must be positive". Lists: ``item_ge`` bounds every item,
    ``nonempty`` forbids ``[]``. ``message`` replaces the error text: a template with
    ``{name}`` and ``{value}``. A float must be finite (NaN and ±inf are refused whatever the
    bounds; see `check_ranges` for fields without a range), and so must every float item of a
    list. None (an optional field left unset) is always accepted.
    """

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    positive: bool = False
    item_ge: float | None = None
    nonempty: bool = False
    message: str | None = None

    def __post_init__(self):
        if self.gt is not None and self.ge is not None or \
                self.lt is not None and self.le is not None:
            raise TypeError("a range takes at most one of gt/ge and one of lt/le")
        if self.positive and (self.gt is not None or self.ge is not None):
            raise TypeError("positive=True is gt=0; do not combine it with gt or ge")
        numeric = any(b is not None for b in (self.gt, self.ge, self.lt, self.le)) \
            or self.positive
        if numeric and (self.item_ge is not None or self.nonempty):
            raise TypeError("a range bounds either a number or a list's items, not both")

    def requirement(self) -> str:
        """What a valid value is, as in "must be ≥ 0": ``≥ 0``, ``> 0``, ``in (0, 1]``,
        ``positive``, ``positive widths``, ..."""
        if self.item_ge is not None:
            return "positive widths" if self.item_ge == 1 else f"items ≥ {self.item_ge}"
        if self.nonempty:
            return "non-empty"
        if self.positive:
            upper = (f" and < {_bound(self.lt)}" if self.lt is not None
                     else f" and ≤ {_bound(self.le)}" if self.le is not None else "")
            return "positive" + upper
        low = (f"({_bound(self.gt)}" if self.gt is not None
               else f"[{_bound(self.ge)}" if self.ge is not None else None)
        high = (f"{_bound(self.lt)})" if self.lt is not None
                else f"{_bound(self.le)}]" if self.le is not None else None)
        if low is not None and high is not None:
            return f"in {low}, {high}"
        if low is not None:
            return ("> " if low[0] == "(" else "≥ ") + low[1:]
        if high is not None:
            return ("< " if high[-1] == ")" else "≤ ") + high[:-1]
        return "anything"

    def accepts(self, value) -> bool:
        if value is None:
            return True
        if isinstance(value, (list, tuple)):
            items = list(value)
            if not all(_finite(v) for v in items) or self.nonempty and not items:
                return False
            return self.item_ge is None or all(v >= self.item_ge for v in items)
        if not _finite(value):
            return False
        gt = 0 if self.positive else self.gt
        return not ((gt is not None and not value > gt)
                    or (self.ge is not None and not value >= self.ge)
                    or (self.lt is not None and not value < self.lt)
                    or (self.le is not None and not value <= self.le))

    def error(self, name: str, value) -> str | None:
        """The error message for ``name = value``, or None when the value is in range."""
        if self.accepts(value):
            return None
        if self.message is not None:
            return self.message.format(name=name, value=value)
        requirement = self.requirement()
        bounded = requirement.startswith("in ")
        if not _finite(value) and not bounded:  # "> 0, got inf" would read as a contradiction
            requirement = "a finite number" + ("" if requirement == "anything"
                                               else f" {requirement}")
        return f"{name} must be {requirement}, got {value}"


def _bound(value) -> str:
    """A bound as written in messages: powers of ten from 10⁴ up as ``1e8``."""
    exponent = math.log10(abs(value)) if value and math.isfinite(value) else 0
    if exponent >= 4 and exponent == int(exponent):
        return ("-" if value < 0 else "") + f"1e{int(exponent)}"
    return str(value)


def _finite(value) -> bool:
    """False for a float NaN or ±inf; True for anything else (ints, strings, ...)."""
    return not isinstance(value, float) or math.isfinite(value)


def option(default, help: str, *, gt=None, ge=None, lt=None, le=None, positive: bool = False,
           item_ge=None, nonempty: bool = False, message: str | None = None, **kwargs):
    """A dataclass field with its one-line help text (shown by ``--help`` and in errors) and
    optionally its valid range (see `Range`; checked by `check_ranges`); mutable defaults
    (lists, dicts, tuples) are copied per instance.

    A subclass that redeclares a field (a new default) without a range keeps the range of the
    base class's declaration; one that declares a range replaces it.
    """
    metadata = {"help": help}
    bounds = Range(gt=gt, ge=ge, lt=lt, le=le, positive=positive, item_ge=item_ge,
                   nonempty=nonempty, message=message)
    if bounds != Range():
        metadata["range"] = bounds
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata,
                     **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def field_range(config, name: str) -> Range | None:
    """The range that applies to field ``name`` of a config class or instance: its own
    declaration's, else that of the nearest base class (in MRO order) declaring the field with
    a range; None when none does."""
    cls = config if isinstance(config, type) else type(config)
    for klass in cls.__mro__:
        declared = vars(klass).get("__dataclass_fields__", {}).get(name)
        if declared is not None and "range" in declared.metadata:
            return declared.metadata["range"]
    return None


def check_ranges(config) -> None:
    """Raise ValueError naming the first field (in declaration order) of the dataclass
    instance ``config`` whose value is outside its declared range, or (any field) a float that
    is NaN or ±inf, or a value that is not one of a ``Literal`` field's choices."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        bounds = field_range(config, f.name) or Range()
        message = bounds.error(f.name, value)
        choices = _choices(hints.get(f.name))
        if message is None and choices and value is not None and value not in choices:
            message = f"{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}"
        if message is not None:
            raise ValueError(message)


def _choices(hint) -> tuple:
    """The choices of a ``Literal[...]`` (or ``Literal[...] | None``) annotation, else ()."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next((typing.get_args(a) for a in typing.get_args(hint)
                     if typing.get_origin(a) is Literal), ())
    return ()
