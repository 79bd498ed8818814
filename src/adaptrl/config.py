"""Typed configs: presets, ``--set key=value`` overrides, and the dict form stored in run folders.

A method's config is its flat ``Config`` dataclass (see `adaptrl.algos.base`). A config is built
in three layers, each checked field by field:

1. the dataclass defaults;
2. an optional preset, a flat YAML mapping ``field: value`` stored at
   ``adaptrl/presets/<algo>/<preset>.yaml`` (or any ``.yaml`` path given instead of a name);
   ``include: <algo>/<preset>`` first applies another preset (shared paper settings);
3. ``key=value`` overrides, each parsed by the field's declared type.

Then ``config.validate()`` rejects impossible values. Every mistake (unknown key, wrong type,
impossible value, unknown preset) is an `AdaptrlError` whose one line names the key and what
would have been accepted.

Accepted ``--set`` spellings by field type:

* ``int``: ``20``; ``float``: ``0.1``, ``1e-3``; ``str``: the text as written;
* ``bool``: ``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case);
* lists (``list``, ``list[int]``, ``tuple[float, ...]``): ``64,64`` or ``[64, 64]``; ``[]`` is
  empty; a bare ``list`` takes its element type from the default's first element;
* optional fields (``X | None``): also ``none`` / ``null``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import AdaptrlError, UnknownNameError
from .options import field_range

PRESET_ROOT = Path(__file__).parent / "presets"
"""Where named presets live: ``PRESET_ROOT/<algo>/<preset>.yaml``."""

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", "~"}


# ─── field types ────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class _Kind:
    """What a config field accepts. ``base`` is None for types we cannot check (parsed as YAML)."""

    base: type | None
    item: type | None = None  # element type of a list field
    optional: bool = False
    choices: tuple | None = None

    def describe(self) -> str:
        names = {int: "an integer", float: "a number", bool: "a boolean (true/false)",
                 str: "a string"}
        if self.choices is not None:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.base is list:
            item_names = {int: "integers like 64,64", float: "numbers like 0.1,0.2",
                          bool: "booleans like true,false", str: "strings like a,b"}
            text = "a list of " + item_names.get(self.item, "values like a,b")
        else:
            text = names.get(self.base, "a YAML value")
        return text + (" or none" if self.optional else "")


def _field_kind(config_cls, field: dataclasses.Field) -> _Kind:
    """The `_Kind` of ``field`` from its annotation (falling back to its default's type)."""
    hint = typing.get_type_hints(config_cls).get(field.name, field.type)
    optional = False
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else typing.Any
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return _Kind(type(args[0]), optional=optional, choices=tuple(args))
    if hint in (list, tuple) or origin in (list, tuple):
        item = args[0] if args and args[0] is not Ellipsis else None
        if item is None:
            default = _default_of(field)
            item = type(default[0]) if default else str
        return _Kind(list, item=item if item in (int, float, bool, str) else None,
                     optional=optional)
    if hint in (int, float, bool, str):
        return _Kind(hint, optional=optional)
    return _Kind(None, optional=optional)


def _default_of(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _parse_scalar(text: str, base: type):
    """``text`` as a ``base`` value; ValueError if it is not one."""
    if base is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(text)
    if base is int:
        return int(text.strip())
    if base is float:
        return float(text.strip())
    return text


def _parse_text(key: str, text: str, kind: _Kind):
    """The value of ``key=text`` given on the command line."""
    if kind.optional and text.strip().lower() in _NONE:
        return None
    try:
        if kind.base is None:
            return yaml.safe_load(text)
        if kind.base is list:
            body = text.strip()
            if body[:1] in "[(" and body[-1:] in "])":
                body = body[1:-1]
            parts = [p.strip() for p in body.split(",")] if body.strip() else []
            return [_parse_scalar(p, kind.item or str) for p in parts]
        value = _parse_scalar(text, kind.base)
    except (ValueError, yaml.YAMLError):
        raise AdaptrlError(f"--set {key}={text}: {key} expects {kind.describe()}") from None
    if kind.choices is not None and value not in kind.choices:
        raise AdaptrlError(f"--set {key}={text}: {key} expects {kind.describe()}")
    return value


def _check_value(key: str, value, kind: _Kind, source: str):
    """``value`` (from YAML or a stored dict) checked against ``kind``; the cleaned value."""

    def fits(v, base):
        if base is bool:
            return isinstance(v, bool)
        if base is int:
            return isinstance(v, int) and not isinstance(v, bool)
        if base is float:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        return base is None or isinstance(v, base)

    def clean(v, base):
        if base is not float:
            return v
        try:
            return float(v)
        except OverflowError:  # an integer beyond the float range
            raise AdaptrlError(f"{source}: {key} must be a finite number, got an integer of "
                               f"{len(str(abs(v)))} digits") from None

    if value is None and (kind.optional or kind.base is None):
        return None
    ok = False
    if kind.base is list:
        ok = isinstance(value, (list, tuple)) and all(fits(v, kind.item) for v in value)
        if ok:
            value = [clean(v, kind.item) for v in value]
    elif fits(value, kind.base):
        ok = kind.choices is None or value in kind.choices
        value = clean(value, kind.base)
    if not ok:
        raise AdaptrlError(f"{source}: {key} expects {kind.describe()}, got {value!r}")
    return value


# ─── building configs ───────────────────────────────────────────────────────────────────────
def _algorithm(algo):
    """The algorithm class for a class or a registered name."""
    if isinstance(algo, str):
        from .algos import get_algorithm

        return get_algorithm(algo)
    return algo


def _fields(config_cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls)}


def _unknown_key(algo_cls, key: str, source: str | None = None) -> AdaptrlError:
    err = UnknownNameError(f"{algo_cls.name} option", key, _fields(algo_cls.Config))
    return AdaptrlError(f"{source}: {err}") if source else err


def _unused(algo_cls) -> dict[str, str]:
    """The inherited fields ``algo_cls`` ignores, with the reason (``Config.unused_fields``)."""
    return getattr(algo_cls.Config, "unused_fields", {})


def _refuse_unused(algo_cls, key: str, source: str) -> None:
    reason = _unused(algo_cls).get(key)
    if reason is not None:
        raise AdaptrlError(f"{source}: {algo_cls.name} does not use {key} ({reason})")


def _replace(algo_cls, config, values: dict, source: str):
    """``config`` with ``values`` (already-typed, e.g. from YAML) checked and applied."""
    fields = _fields(algo_cls.Config)
    checked = {}
    for key, value in values.items():
        if key not in fields:
            raise _unknown_key(algo_cls, str(key), source)
        checked[key] = _check_value(key, value, _field_kind(algo_cls.Config, fields[key]), source)
    return dataclasses.replace(config, **checked)


def validate_config(algo_cls, config) -> None:
    """Run ``config.validate()``; an impossible value becomes a one-line `AdaptrlError`."""
    try:
        config.validate()
    except ValueError as err:
        raise AdaptrlError(f"invalid {algo_cls.name} config: {err}") from None


def parse_overrides(algo, overrides) -> dict:
    """``["key=value", ...]`` → ``{key: typed value}`` for ``algo``'s config (later keys win)."""
    algo_cls = _algorithm(algo)
    fields = _fields(algo_cls.Config)
    values = {}
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise AdaptrlError(f"--set expects key=value, got '{item}'")
        if key not in fields:
            raise _unknown_key(algo_cls, key)
        _refuse_unused(algo_cls, key, f"--set {key}={text}")
        values[key] = _parse_text(key, text, _field_kind(algo_cls.Config, fields[key]))
    return values


def apply_overrides(algo, config, overrides):
    """A validated copy of ``config`` with ``key=value`` overrides applied."""
    algo_cls = _algorithm(algo)
    config = dataclasses.replace(config, **parse_overrides(algo_cls, overrides))
    validate_config(algo_cls, config)
    return config


def make_config(algo, preset: str | None = None, overrides=()):
    """The validated config of ``algo`` (a class or registered name): defaults, then the
    ``preset`` (a name from `list_presets` or a path to a ``.yaml`` file), then ``overrides``
    (``"key=value"`` strings)."""
    algo_cls = _algorithm(algo)
    config = algo_cls.Config()
    if preset is not None:
        path = preset_path(algo_cls, preset)
        values, own = _resolve_preset(path), _read_preset(path)
        for key in [k for k in values if k in _unused(algo_cls)]:
            if key in own:
                _refuse_unused(algo_cls, key, f"preset {path}")
            del values[key]  # from a shared preset it includes, written for other methods
        config = _replace(algo_cls, config, values, f"preset {path}")
    return apply_overrides(algo_cls, config, overrides)


def _resolve_preset(path: Path, seen: tuple = ()) -> dict:
    """A preset's fields, after those of the preset it names in ``include: <algo>/<name>``
    (so methods share one file per paper setting and add only their own fields)."""
    if path in seen:
        raise AdaptrlError(f"preset {path} includes itself: {' -> '.join(map(str, seen))}")
    data = dict(_read_preset(path))
    include = data.pop("include", None)
    if include is None:
        return data
    if not isinstance(include, str) or include.count("/") != 1:
        raise AdaptrlError(f"preset {path}: include must look like '<algo>/<preset>', "
                           f"got {include!r}")
    algo_name, name = include.split("/")
    merged = _resolve_preset(preset_path(algo_name, name), seen + (path,))
    merged.update(data)
    return merged


# ─── presets ────────────────────────────────────────────────────────────────────────────────
def list_presets(algo) -> list[str]:
    """Names of the presets shipped for ``algo`` (a class or name), sorted."""
    name = algo if isinstance(algo, str) else algo.name
    folder = PRESET_ROOT / name
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def preset_path(algo, preset: str) -> Path:
    """The file of ``preset``: a shipped preset's name, or a path ending in .yaml/.yml."""
    name = algo if isinstance(algo, str) else algo.name
    if preset.endswith((".yaml", ".yml")):
        path = Path(preset)
        if not path.is_file():
            raise AdaptrlError(f"preset file {path} does not exist")
        return path
    path = PRESET_ROOT / name / f"{preset}.yaml"
    if not path.is_file():
        known = list_presets(name)
        if not known:
            raise AdaptrlError(f"unknown preset '{preset}': algorithm '{name}' ships no presets "
                               f"(give a .yaml path, or set fields with --set key=value)")
        raise UnknownNameError(f"preset for {name}", preset, known)
    return path


def _read_preset(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise AdaptrlError(f"preset {path} is not UTF-8 text (a YAML mapping)") from None
    except yaml.YAMLError as err:
        raise AdaptrlError(f"preset {path} is not valid YAML: {' '.join(str(err).split())}"
                           ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AdaptrlError(f"preset {path} must be a mapping of field: value, "
                           f"got {type(data).__name__}")
    return data


# ─── dict form (config.yaml) ────────────────────────────────────────────────────────────────
def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(config) -> dict:
    """Field → plain YAML-safe value, in field order."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_from_dict(algo, data: dict, source: str = "config"):
    """The validated config from a `config_to_dict` mapping. Unknown keys and wrong types are
    errors naming ``source``; fields missing from ``data`` (added to the method since the dict
    was written) take their defaults."""
    algo_cls = _algorithm(algo)
    if not isinstance(data, dict):
        raise AdaptrlError(f"{source}: expected a mapping of field: value, "
                           f"got {type(data).__name__}")
    config = _replace(algo_cls, algo_cls.Config(), data, source)
    validate_config(algo_cls, config)
    return config


def config_differences(old, new, ignore=()) -> list[str]:
    """``"field: old → new"`` for each field that differs, except those in ``ignore``."""
    return [f"{f.name}: {getattr(old, f.name)!r} → {getattr(new, f.name)!r}"
            for f in dataclasses.fields(old)
            if f.name not in ignore and getattr(old, f.name) != getattr(new, f.name)]


def describe_options(algo, config=None) -> str:
    """A table of ``algo``'s config fields: name, type, value (``config``'s or the default),
    help; followed by the shipped presets."""
    algo_cls = _algorithm(algo)
    config = config if config is not None else algo_cls.Config()
    rows = [("option", "type", "value", "help")]
    for field in dataclasses.fields(config):
        kind = _field_kind(type(config), field)
        type_name = kind.describe().split(" like ")[0].replace("a list of", "list of")
        help_text = field.metadata.get("help", "")
        bounds = field_range(config, field.name)
        if bounds is not None:
            help_text += f" (must be {bounds.requirement()})"
        if field.name in _unused(algo_cls):
            help_text += f" (not used by {algo_cls.name}: {_unused(algo_cls)[field.name]})"
        rows.append((field.name, type_name.removeprefix("an ").removeprefix("a "),
                     _format_value(getattr(config, field.name)), help_text))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3] for r in rows]
    presets = list_presets(algo_cls)
    lines.append("")
    lines.append(f"presets: {', '.join(presets) if presets else '(none)'}")
    return "\n".join(lines)


def _format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "[]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
