"""Config ranges are declared with the fields (`option(..., ge=..)`), checked by one function
(`check_ranges`), and the TRPO options are declared once (`TRPOOptions`)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from adaptrl.algos import ALGORITHMS, get_algorithm
from adaptrl.algos.admrl import AdMRLConfig
from adaptrl.algos.base import BaseConfig
from adaptrl.algos.offpolicy import OffPolicyConfig
from adaptrl.algos.pg import PGConfig
from adaptrl.config import describe_options, make_config
from adaptrl.errors import AdaptrlError
from adaptrl.eval.trained_oracle import OracleTrainingConfig, train_oracle
from adaptrl.optim.sac import SACConfig
from adaptrl.optim.trpo import TRPOOptions
from adaptrl.options import Range, check_ranges, field_range, option

TRPO_FIELDS = ("max_kl", "cg_iters", "cg_damping", "ls_backtrack_ratio", "ls_max_steps")


def _config_classes() -> list[type]:
    built_in = {cls.Config for cls in ALGORITHMS.values()
                if cls.Config.__module__.startswith("adaptrl.")}
    built_in |= {SACConfig, TRPOOptions, OracleTrainingConfig}
    return sorted(built_in, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _ranged_fields() -> list[tuple[type, str]]:
    return [(cls, f.name) for cls in _config_classes() for f in dataclasses.fields(cls)
            if field_range(cls, f.name) is not None]


def _validate(config) -> None:
    """The config's own ``validate()`` (which must apply the ranges), else `check_ranges`."""
    getattr(config, "validate", lambda: check_ranges(config))()


def _is_int(cls, name: str) -> bool:
    default = getattr(cls(), name)
    return isinstance(default, int) and not isinstance(default, bool)


def _outside_and_inside(cls, name: str, r: Range) -> tuple[list, list]:
    """Values just outside the range, and values just inside it."""
    if r.item_ge is not None or r.nonempty:
        outside, inside = [], []
        if r.nonempty:
            outside.append([])
        if r.item_ge is not None:
            outside.append([r.item_ge - 1])
            outside.append([r.item_ge, math.nan])
            inside.append([r.item_ge])
        else:
            inside.append([1])
        return outside, inside
    as_int = _is_int(cls, name)
    lo_strict, lo = (True, 0) if r.positive else ((True, r.gt) if r.gt is not None
                                                   else (False, r.ge))
    hi_strict, hi = (True, r.lt) if r.lt is not None else (False, r.le)
    outside, inside = [], []
    if lo is not None:
        below = lo - 1 if as_int else math.nextafter(lo, -math.inf)
        above = lo + 1 if as_int else math.nextafter(lo, math.inf)
        outside.append(lo if lo_strict else below)
        inside.append(above if lo_strict else lo)
        outside.append(-math.inf)
    if hi is not None:
        below = hi - 1 if as_int else math.nextafter(hi, -math.inf)
        above = hi + 1 if as_int else math.nextafter(hi, math.inf)
        outside.append(hi if hi_strict else above)
        inside.append(below if hi_strict else hi)
        outside.append(math.inf)
    return outside, inside


@pytest.mark.parametrize("cls, name", _ranged_fields(),
                         ids=lambda x: x.__qualname__ if isinstance(x, type) else x)
def test_every_ranged_field_rejects_nan_and_values_just_outside(cls, name):
    r = field_range(cls, name)
    outside, inside = _outside_and_inside(cls, name, r)
    nan = [math.nan] if (r.item_ge is not None or r.nonempty) else math.nan
    for value in [nan, *outside]:
        config = dataclasses.replace(cls(), **{name: value})
        with pytest.raises(ValueError, match=rf"^{name} must be .*, got "):
            _validate(config)
    for value in inside:
        check_ranges(dataclasses.replace(cls(), **{name: value}))


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__qualname__)
def test_defaults_are_in_range(cls):
    _validate(cls())


def test_no_range_accepts_nan_or_infinity():
    for r in (Range(), Range(ge=0), Range(gt=0), Range(gt=0, le=1), Range(le=1),
              Range(positive=True), Range(item_ge=1)):
        for value in (math.nan, math.inf, -math.inf):
            assert not r.accepts([1, value] if r.item_ge else value), (r, value)
    assert Range(ge=0).accepts(None)  # an optional field left unset
    assert Range(ge=0).error("max_kl", math.inf) == "max_kl must be a finite number ≥ 0, got inf"
    assert Range().error("x", math.nan) == "x must be a finite number, got nan"


def _float_fields() -> list[tuple[type, str]]:
    return [(cls, f.name) for cls in _config_classes() for f in dataclasses.fields(cls)
            if isinstance(getattr(cls(), f.name), float)
            or "float" in str(f.type)]


@pytest.mark.parametrize("cls, name", _float_fields(),
                         ids=lambda x: x.__qualname__ if isinstance(x, type) else x)
def test_every_float_field_rejects_nan_and_infinity(cls, name):
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match=rf"^{name} must be .*, got "):
            _validate(dataclasses.replace(cls(), **{name: value}))


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__qualname__)
def test_every_numeric_field_declares_a_bounded_range(cls):
    """Every int and float field is bounded on both sides (a size or rate that no machine can
    run is refused when the config is built), except the documented optional ones."""
    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        if isinstance(default, bool) or not (isinstance(default, (int, float))
                                             or "float" in str(f.type)):
            continue
        r = field_range(cls, f.name)
        assert r is not None, f"{cls.__qualname__}.{f.name} declares no range"
        assert r.lt is not None or r.le is not None, f"{cls.__qualname__}.{f.name}: no upper bound"


def test_activation_fields_offer_exactly_the_networks_activations():
    import typing

    from adaptrl.nets import ACTIVATIONS
    from adaptrl.options import Activation

    assert set(typing.get_args(Activation)) == set(ACTIVATIONS)
    with pytest.raises(AdaptrlError, match=r"--set activation=foo: activation expects one of"):
        make_config("maml", None, ["activation=foo"])
    with pytest.raises(ValueError, match=r"^activation must be one of relu, tanh, elu, got 'foo'"):
        BaseConfig(activation="foo").validate()


@pytest.mark.parametrize("algo, key", [("pearl", "gae_lambda"), ("flap", "gae_lambda"),
                                       ("rl2", "activation"), ("snail", "activation"),
                                       ("reptile", "max_kl"), ("reptile", "inner_steps")])
def test_fields_a_method_does_not_use_are_refused(algo, key):
    value = "tanh" if key == "activation" else "1" if key == "inner_steps" else "0.5"
    with pytest.raises(AdaptrlError, match=rf"^--set {key}={value}: {algo} does not use {key} "):
        make_config(algo, None, [f"{key}={value}"])
    assert "(not used by" in describe_options(algo)


def test_a_preset_may_not_set_an_unused_field_but_may_include_one(tmp_path):
    # reptile's presets include MAML's, which set max_kl and inner_steps: dropped, not refused
    assert make_config("reptile", "nav").meta_lr == 1.0
    own = tmp_path / "p.yaml"
    own.write_text("gae_lambda: 0.5\n")
    with pytest.raises(AdaptrlError, match=r"p.yaml: pearl does not use gae_lambda"):
        make_config("pearl", str(own))


def test_a_huge_integer_for_a_float_field_is_one_line(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(f"max_kl: {10**400}\n")
    with pytest.raises(AdaptrlError, match=r"max_kl must be a finite number, got an integer of "
                                           r"401 digits"):
        make_config("maml", str(preset))


@pytest.mark.parametrize("make, message", [
    (lambda: BaseConfig(iterations=0), "iterations must be in [1, 1e8], got 0"),
    (lambda: BaseConfig(horizon=-1), "horizon must be in [0, 1e7], got -1"),
    (lambda: BaseConfig(hidden_sizes=[]), "hidden_sizes must be positive widths, got []"),
    (lambda: BaseConfig(hidden_sizes=[64, 0]),
     "hidden_sizes must be positive widths, got [64, 0]"),
    (lambda: BaseConfig(gamma=1.5), "gamma must be in (0, 1], got 1.5"),
    (lambda: BaseConfig(gae_lambda=-0.1), "gae_lambda must be in [0, 1], got -0.1"),
    (lambda: PGConfig(inner_lr=-1.0), "inner_lr must be in [0, 100], got -1.0"),
    (lambda: PGConfig(cg_subsample=0.0), "cg_subsample must be in (0, 1], got 0.0"),
    (lambda: PGConfig(ls_backtrack_ratio=1.0), "ls_backtrack_ratio must be in (0, 1), got 1.0"),
    (lambda: PGConfig(max_kl=0.0), "max_kl must be in (0, 10], got 0.0"),
    (lambda: get_algorithm("maml").Config(inner_steps=0),
     "inner_steps must be in [1, 1000] for MAML, got 0"),
    (lambda: get_algorithm("reptile").Config(meta_lr=0.0), "meta_lr must be in (0, 100], got 0.0"),
    (lambda: SACConfig(actor_lr=0.0), "actor_lr must be positive and ≤ 1, got 0.0"),
    (lambda: SACConfig(actor_lr=2.0), "actor_lr must be positive and ≤ 1, got 2.0"),
    (lambda: SACConfig(tau=0.0), "tau must be in (0, 1], got 0.0"),
    (lambda: SACConfig(gamma=1.5), "gamma must be in [0, 1], got 1.5"),
    (lambda: get_algorithm("pearl").Config(latent_dim=0),
     "latent_dim must be positive and ≤ 1e4, got 0"),
    (lambda: get_algorithm("pearl").Config(encoder_hidden=[]),
     "encoder_hidden must be positive widths, got []"),
    (lambda: get_algorithm("flap").Config(adapter_decoder=[0]),
     "adapter_decoder must be positive widths, got [0]"),
    (lambda: AdMRLConfig(task_lr=-1.0), "task_lr must be in [0, 1e6], got -1.0"),
    (lambda: AdMRLConfig(meta_batch=2), "meta_batch must be 1 for model-based methods (one "
                                        "task per iteration, Algorithm 1), got 2"),
    (lambda: OracleTrainingConfig(iterations=0), "iterations must be in [1, 1e6], got 0"),
])
def test_messages_are_the_established_ones(make, message):
    with pytest.raises(ValueError) as err:
        make().validate()
    assert str(err.value) == message


def test_cross_field_rules_stay_in_validate():
    pearl = get_algorithm("pearl").Config
    with pytest.raises(ValueError, match="collect at least one episode"):
        pearl(prior_episodes=0, posterior_episodes=0, extra_rl_episodes=0).validate()
    with pytest.raises(ValueError, match=r"meta_batch \(200\) cannot exceed num_train_tasks"):
        pearl(meta_batch=200).validate()


def test_off_policy_configs_apply_the_ranges_of_both_bases_once():
    # gamma is declared by both bases: BaseConfig's (0, 1] wins over SACConfig's [0, 1]
    assert field_range(OffPolicyConfig, "gamma") == Range(gt=0, le=1)
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\], got 0.0"):
        OffPolicyConfig(gamma=0.0).validate()
    SACConfig(gamma=0.0).validate()
    with pytest.raises(ValueError, match="tau must be"):  # a SACConfig field
        OffPolicyConfig(tau=2.0).validate()
    # redeclared, range kept
    with pytest.raises(ValueError, match=r"fast_batch must be in \[1, 1e6\]"):
        OffPolicyConfig(fast_batch=0).validate()
    with pytest.raises(ValueError, match="hidden_sizes must be positive widths"):
        OffPolicyConfig(hidden_sizes=[]).validate()


def test_a_redeclared_field_keeps_its_base_range_unless_it_declares_one():
    maml = get_algorithm("maml").Config
    assert field_range(PGConfig, "inner_steps") == Range(ge=0, le=1000)
    assert field_range(maml, "inner_steps").ge == 1
    PGConfig(inner_steps=0).validate()
    assert field_range(AdMRLConfig, "iterations") == field_range(BaseConfig, "iterations")


def test_trpo_options_are_declared_once():
    base = {f.name: f for f in dataclasses.fields(TRPOOptions)}
    assert tuple(base) == TRPO_FIELDS
    users = [cls for cls in _config_classes()
             if any(f.name in TRPO_FIELDS for f in dataclasses.fields(cls))]
    assert PGConfig in users and AdMRLConfig in users and OracleTrainingConfig in users
    for cls in users:
        assert issubclass(cls, TRPOOptions), cls
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in TRPO_FIELDS:
            assert fields[name] is base[name], (cls, name)
            assert fields[name].metadata is base[name].metadata
    assert TRPOOptions().trpo_kwargs() == {"max_kl": 0.01, "cg_iters": 10, "cg_damping": 1e-5,
                                           "backtrack_ratio": 0.8, "max_backtracks": 15}
    cfg = AdMRLConfig(max_kl=0.02, ls_max_steps=3)
    assert cfg.trpo_kwargs()["max_kl"] == 0.02 and cfg.trpo_kwargs()["max_backtracks"] == 3


def test_option_rejects_contradictory_bounds():
    with pytest.raises(TypeError):
        option(1, "x", gt=0, ge=0)
    with pytest.raises(TypeError):
        option(1, "x", positive=True, ge=1)
    with pytest.raises(TypeError):
        option([1], "x", item_ge=1, ge=0)
    assert "range" not in option(1, "x").metadata
    assert option(1, "x", ge=1).metadata["range"] == Range(ge=1)


def test_config_errors_are_one_line_adaptrl_errors():
    with pytest.raises(AdaptrlError, match=r"invalid maml config: gae_lambda must be in "
                                           r"\[0, 1\], got nan"):
        make_config("maml", None, ["gae_lambda=nan"])
    with pytest.raises(AdaptrlError, match=r"^oracle max_kl must be in \(0, 10\], got nan$"):
        train_oracle("hopper-2d", [[0.0, 1.5]], OracleTrainingConfig(max_kl=math.nan),
                     horizon=5)


def test_list_options_shows_the_ranges():
    text = describe_options("maml")
    assert "meta-training iterations (must be in [1, 1e8])" in text
    assert "discount (must be in (0, 1])" in text
