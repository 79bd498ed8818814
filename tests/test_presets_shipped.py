"""Every preset shipped in ``adaptrl/presets`` builds a valid config for its method."""

import pytest

from adaptrl.algos.registry import ALGORITHMS
from adaptrl.config import list_presets, make_config, preset_path

BUILT_IN = sorted(name for name, cls in ALGORITHMS.items()
                  if cls.__module__.startswith("adaptrl."))  # not the dummies tests register
SHIPPED = [(name, preset) for name in BUILT_IN for preset in list_presets(name)]


def test_every_method_ships_a_smoke_preset():
    assert len(BUILT_IN) >= 16
    assert [name for name in BUILT_IN if "smoke" not in list_presets(name)] == []


@pytest.mark.parametrize("name, preset", SHIPPED, ids=[f"{n}/{p}" for n, p in SHIPPED])
def test_shipped_preset_is_a_valid_config(name, preset):
    config = make_config(ALGORITHMS[name], str(preset_path(name, preset)))
    config.validate()
