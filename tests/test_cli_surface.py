"""The command line's surface: the command list, --version, ``python -m adaptrl``, help that
names every method and family without importing torch, progress on stderr, and TensorBoard
events that carry the hyper-parameters under the metrics.csv names."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adaptrl import __version__, names
from adaptrl.cli import main
from adaptrl.names import ALGORITHM_NAMES, FAMILY_GYM_IDS, FAMILY_NAMES

TESTS = Path(__file__).parent


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_static_names_equal_the_registries():
    # a fresh process: test modules register extra methods in this one
    registries = json.loads(_python(
        "import json; from adaptrl.algos import ALGORITHMS; from adaptrl.tasks import REGISTRY; "
        "print(json.dumps([list(ALGORITHMS), {k: f.gym_id for k, f in REGISTRY.items()}, "
        "{k: f.horizon for k, f in REGISTRY.items()}]))"))
    assert list(ALGORITHM_NAMES) == registries[0]
    assert FAMILY_GYM_IDS == registries[1]
    assert names.FAMILY_HORIZONS == registries[2]


@pytest.mark.parametrize("args", [[], ["--help"], ["train", "--help"], ["eval", "--help"]])
def test_help_does_not_import_torch(args):
    code = ("import sys\nfrom adaptrl.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'mujoco') if m in sys.modules))")
    assert _python(code).splitlines()[-1] == "[]"


def test_adaptrl_alone_prints_the_command_list(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "compare", "oracle", "bench", "envs", "baselines"):
        assert f"    {command}" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"adaptrl {__version__}"


def test_python_dash_m_adaptrl_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "adaptrl", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"adaptrl {__version__}"


def test_train_help_lists_every_method_and_family(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    words = set(capsys.readouterr().out.replace(",", " ").split())
    assert set(ALGORITHM_NAMES) <= words and set(FAMILY_NAMES) <= words


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("progress", [True, False])
def test_eval_progress_is_a_bar_on_a_terminal_only(progress, monkeypatch, one_torch_thread):
    from adaptrl.algos import get_algorithm
    from adaptrl.config import make_config
    from adaptrl.eval import evaluate
    from adaptrl.tasks import get_family

    family = get_family("point-nav")
    algo = get_algorithm("maml")(family, make_config("maml", "smoke", []))
    tasks = family.split("test", 2, np.random.default_rng(0))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    evaluate(algo, family, tasks, [0, 1], 1, np.random.default_rng(0), horizon=5,
             progress=progress)
    shown = terminal.getvalue()
    assert ("eval maml point-nav" in shown and "3/3" in shown) == progress
    assert shown == "" or progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: nothing
    evaluate(algo, family, tasks, [0], 1, np.random.default_rng(0), horizon=5, progress=True)
    assert sys.stderr.getvalue() == ""


def test_every_long_command_can_turn_progress_off():
    from adaptrl.cli import build_parser

    for args in (["eval", "RUN"], ["compare", "RUN"], ["oracle", "point-nav"], ["train", "maml"],
                 ["bench", "sampler", "point-nav"], ["bench", "meta-step", "point-nav"],
                 ["bench", "adapt", "point-nav"]):
        assert build_parser().parse_args([*args, "--no-progress"]).no_progress


def test_tensorboard_has_the_metrics_csv_names_and_the_hyper_parameters(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from adaptrl.runner import train

    sys.path.insert(0, str(TESTS))
    import dummy_algo  # noqa: F401  (registers "dummy-test")

    run = train("dummy-test", "point-nav", overrides=["iterations=2"], out=tmp_path / "run",
                progress=False)
    with open(run / "metrics.csv", newline="") as handle:
        columns = next(csv.reader(handle))
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == sorted(columns[1:])  # all but "iteration"

    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["algo"].string_value == "dummy-test"
    assert hparams["family"].string_value == "point-nav"
    assert hparams["iterations"].number_value == 2
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert sorted(m.name.tag for m in experiment.experiment.metric_infos) == sorted(columns[1:])
