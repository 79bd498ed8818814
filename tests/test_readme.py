"""The README lists what users can type: every method's CLI name with every preset it ships,
and every task family."""

import re
from pathlib import Path

import adaptrl
from adaptrl.names import ALGORITHM_NAMES, FAMILY_NAMES

ROOT = Path(__file__).parent.parent
PRESETS = Path(adaptrl.__file__).parent / "presets"


def _methods_rows() -> dict[str, str]:
    """The README's methods table: CLI name → its row."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Methods\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and re.fullmatch(r"`[a-z0-9-]+`", cells[3]):
            rows[cells[3].strip("`")] = line
    return rows


def test_readme_lists_every_method_with_every_preset():
    rows = _methods_rows()
    missing = [name for name in ALGORITHM_NAMES if name not in rows]
    assert not missing, f"README's methods table lacks {missing}"
    unlisted = [f"{folder.name}/{preset.stem}"
                for folder in sorted(PRESETS.iterdir()) if folder.is_dir()
                for preset in sorted(folder.glob("*.yaml"))
                if f"`{preset.stem}`" not in rows.get(folder.name, "")]
    assert not unlisted, f"presets missing from README's methods table: {unlisted}"


def test_readme_lists_every_task_family():
    text = (ROOT / "README.md").read_text()
    assert not [name for name in FAMILY_NAMES if f"`{name}`" not in text]
