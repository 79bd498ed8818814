"""The training runner: typed configs, run folders, atomic checkpoints and exact resume."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

import adaptrl.atomic as atomic_module
from adaptrl import config as config_module
from adaptrl.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_KEY,
    load_checkpoint,
    numbered_checkpoints,
    read_header,
    save_checkpoint,
)
from adaptrl.cli import main
from adaptrl.config import (
    config_from_dict,
    config_to_dict,
    describe_options,
    list_presets,
    make_config,
)
from adaptrl.errors import AdaptrlError
from adaptrl.runner import is_timing_column, load_run, train

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from dummy_algo import CRASH_ENV, SLEEP_ENV, DummyAlgo  # noqa: E402  (registers "dummy-test")

ALGO, FAMILY = "dummy-test", "point-nav"


def run(out, *overrides, resume=False, seed=None):
    return train(ALGO, FAMILY, overrides=list(overrides), out=out, resume=resume, seed=seed,
                 progress=False)


def read_metrics(run_dir):
    with open(Path(run_dir) / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def reproducible(rows):
    """The rows without wall-clock columns."""
    return [{k: v for k, v in row.items() if not is_timing_column(k)} for row in rows]


def assert_resume_is_exact(tmp_path, algo, family, first, total, checkpoint_every=1,
                           overrides=()):
    """A run of ``total`` iterations and one of ``first`` resumed to ``total`` (smoke preset,
    same seed, extra ``overrides``) write the same metrics, wall-clock columns aside."""
    def train_smoke(out, iterations, resume=False):
        return train(algo, family, preset="smoke",
                     overrides=[*overrides, f"iterations={iterations}",
                                f"checkpoint_every={checkpoint_every}"],
                     out=out, resume=resume, progress=False)

    whole = train_smoke(tmp_path / "whole", total)
    part = train_smoke(tmp_path / "part", first)
    train_smoke(part, total, resume=True)
    assert reproducible(read_metrics(part)) == reproducible(read_metrics(whole))


# ─── configs ────────────────────────────────────────────────────────────────────────────────
def test_set_parses_each_field_type():
    config = make_config(DummyAlgo, overrides=[
        "iterations=7", "lr=1e-3", "tag=hello world",
        "hidden_sizes=64,32", "widths=[0.25, 2]", "clip=0.5"])
    assert (config.iterations, config.lr, config.tag) == (7, 1e-3, "hello world")
    assert config.hidden_sizes == [64, 32] and config.widths == [0.25, 2.0]
    assert config.clip == 0.5
    assert make_config(DummyAlgo, overrides=["hidden_sizes=[8]"]).hidden_sizes == [8]
    assert make_config(DummyAlgo, overrides=["clip=none"]).clip is None
    assert make_config(DummyAlgo, overrides=["iterations=3", "iterations=4"]).iterations == 4


@pytest.mark.parametrize("text, value", [("true", True), ("Yes", True), ("1", True),
                                         ("on", True), ("false", False), ("no", False),
                                         ("0", False), ("OFF", False)])
def test_set_parses_booleans(text, value):
    assert make_config(DummyAlgo, overrides=[f"shuffle={text}"]).shuffle is value
    with pytest.raises(AdaptrlError, match="shuffle expects a boolean"):
        make_config(DummyAlgo, overrides=["shuffle=maybe"])


def test_unknown_key_names_it_suggests_and_lists_the_valid_ones():
    with pytest.raises(AdaptrlError) as err:
        make_config(DummyAlgo, overrides=["meta_bach=4"])
    message = str(err.value)
    assert "'meta_bach'" in message and "did you mean 'meta_batch'" in message
    assert "checkpoint_every" in message and "\n" not in message


@pytest.mark.parametrize("override, needles", [
    ("meta_batch=abc", ["meta_batch", "an integer"]),
    ("meta_batch=2.5", ["meta_batch", "an integer"]),
    ("lr=fast", ["lr", "a number"]),
    ("hidden_sizes=a,b", ["hidden_sizes", "list of integers"]),
    ("clip=big", ["clip", "a number or none"]),
    ("lr", ["key=value"]),
])
def test_wrong_type_names_the_key_and_the_expected_type(override, needles):
    with pytest.raises(AdaptrlError) as err:
        make_config(DummyAlgo, overrides=[override])
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize("override, field", [("meta_batch=0", "meta_batch"), ("lr=-1", "lr"),
                                             ("gamma=1.5", "gamma"), ("hidden_sizes=[]",
                                                                      "hidden_sizes")])
def test_impossible_value_is_rejected_naming_the_field(override, field):
    with pytest.raises(AdaptrlError, match=field):
        make_config(DummyAlgo, overrides=[override])


@pytest.fixture
def presets(tmp_path, monkeypatch):
    root = tmp_path / "presets"
    (root / ALGO).mkdir(parents=True)
    (root / ALGO / "smoke.yaml").write_text("iterations: 2\nlr: 0.5\nhidden_sizes: [4, 4]\n")
    (root / ALGO / "paper.yaml").write_text("meta_batch: 40\n")
    monkeypatch.setattr(config_module, "PRESET_ROOT", root)
    return root / ALGO


def test_preset_then_overrides(presets):
    config = make_config(DummyAlgo, "smoke", ["lr=0.25"])
    assert (config.iterations, config.lr, config.hidden_sizes) == (2, 0.25, [4, 4])
    assert list_presets(ALGO) == ["paper", "smoke"]
    assert make_config(DummyAlgo, str(presets / "paper.yaml")).meta_batch == 40


def test_unknown_preset_lists_the_algorithms_presets(presets):
    with pytest.raises(AdaptrlError) as err:
        make_config(DummyAlgo, "smok")
    assert "did you mean 'smoke'" in str(err.value) and "paper, smoke" in str(err.value)


def test_preset_with_bad_key_or_type_names_the_file(presets):
    (presets / "bad.yaml").write_text("lrr: 0.1\n")
    with pytest.raises(AdaptrlError, match=r"bad\.yaml.*'lrr'.*did you mean 'lr'"):
        make_config(DummyAlgo, "bad")
    (presets / "bad.yaml").write_text("meta_batch: many\n")
    with pytest.raises(AdaptrlError, match=r"bad\.yaml.*meta_batch expects an integer"):
        make_config(DummyAlgo, "bad")
    (presets / "bad.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(AdaptrlError, match="mapping"):
        make_config(DummyAlgo, "bad")


def test_config_dict_round_trip_is_strict():
    config = make_config(DummyAlgo, overrides=["hidden_sizes=8,8", "clip=2", "tag=x"])
    data = config_to_dict(config)
    assert config_from_dict(DummyAlgo, yaml.safe_load(yaml.safe_dump(data))) == config
    with pytest.raises(AdaptrlError, match="'bogus'"):
        config_from_dict(DummyAlgo, {**data, "bogus": 1})
    with pytest.raises(AdaptrlError, match="iterations expects an integer"):
        config_from_dict(DummyAlgo, {**data, "iterations": "ten"})
    assert config_from_dict(DummyAlgo, {}) == DummyAlgo.Config()  # missing keys: defaults


def test_list_options_describes_every_field():
    text = describe_options(DummyAlgo)
    for name in ("iterations", "lr", "hidden_sizes", "clip", "SGD step size"):
        assert name in text


def _shipped_presets():
    root = Path(config_module.__file__).parent / "presets"
    return sorted(root.glob("*/*.yaml"))


@pytest.mark.parametrize("path", _shipped_presets(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_presets_build_valid_configs(path):
    make_config(path.parent.name, path.stem)


# ─── run folders ────────────────────────────────────────────────────────────────────────────
def test_run_folder_holds_config_metrics_events_and_checkpoints(tmp_path):
    run_dir = run(tmp_path / "run", "iterations=8", "checkpoint_every=2", "tag=layout")
    record = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (record["algo"], record["family"], record["seed"], record["preset"]) == \
        (ALGO, FAMILY, 0, None)
    config = config_from_dict(DummyAlgo, record["config"])
    assert (config.iterations, config.tag) == (8, "layout")

    rows = read_metrics(run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 9))
    # the runner's phase times: the dummy samples nothing, so all of a step is its update
    assert list(rows[0]) == ["iteration", "loss", "return", "weight_norm", "time/sample_s",
                             "time/update_s", "step_s", "elapsed_s"]
    assert all(float(r["time/sample_s"]) == 0.0 for r in rows)
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])  # it does learn

    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["iter_000004.pt", "iter_000006.pt", "iter_000008.pt", "latest.pt"]
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["iteration"] == 8


def test_new_metric_key_adds_a_column_empty_in_earlier_rows(tmp_path):
    run_dir = run(tmp_path / "run", "iterations=4", "extra_metric_from=3")
    rows = read_metrics(run_dir)
    assert list(rows[0])[-3:] == ["late", "step_s", "elapsed_s"]
    assert [r["late"] for r in rows] == ["", "", "3.0", "4.0"]
    assert all(r["loss"] for r in rows)


def test_default_run_folder_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = train(ALGO, FAMILY, overrides=["iterations=1"], seed=3, progress=False)
    assert run_dir == Path("runs") / f"{ALGO}-{FAMILY}-s3" and (run_dir / "config.yaml").exists()


def test_load_run_rebuilds_the_trained_method(tmp_path):
    run_dir = run(tmp_path / "run", "iterations=3", seed=5)
    algo, config, info = load_run(run_dir)
    assert isinstance(algo, DummyAlgo) and config.iterations == 3 and algo.iteration == 3
    assert (info["seed"], info["iteration"], info["family"]) == (5, 3, FAMILY)
    saved = load_checkpoint(run_dir / "checkpoints" / "latest.pt")["algorithm"]["model"]
    for key, value in algo.model.state_dict().items():
        assert torch.equal(value, saved[key])


# ─── resume ─────────────────────────────────────────────────────────────────────────────────
def test_resume_matches_uninterrupted_run(tmp_path):
    whole = run(tmp_path / "whole", "iterations=6", "checkpoint_every=2")
    part = run(tmp_path / "part", "iterations=3", "checkpoint_every=2")
    assert len(read_metrics(part)) == 3
    run(part, "iterations=6", resume=True)
    assert reproducible(read_metrics(part)) == reproducible(read_metrics(whole))
    assert yaml.safe_load((part / "config.yaml").read_text())["config"]["iterations"] == 6
    assert float(read_metrics(part)[-1]["elapsed_s"]) >= float(read_metrics(part)[2]["elapsed_s"])


def test_rows_written_after_the_last_checkpoint_are_dropped_on_resume(tmp_path, monkeypatch):
    whole = run(tmp_path / "whole", "iterations=7", "checkpoint_every=3")
    crashed = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, "6")
    with pytest.raises(RuntimeError, match="dummy crash"):
        run(crashed, "iterations=7", "checkpoint_every=3")
    assert len(read_metrics(crashed)) == 5  # rows 4 and 5 came after the checkpoint at 3
    assert load_checkpoint(crashed / "checkpoints" / "latest.pt")["iteration"] == 3
    monkeypatch.delenv(CRASH_ENV)
    run(crashed, resume=True)
    assert reproducible(read_metrics(crashed)) == reproducible(read_metrics(whole))


def test_sigkill_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    out = tmp_path / "killed"
    overrides = ["iterations=8", "checkpoint_every=2"]
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import dummy_algo
        from adaptrl.runner import train
        train({ALGO!r}, {FAMILY!r}, overrides={overrides!r}, out={str(out)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, SLEEP_ENV: "0.15"},
                            stderr=subprocess.PIPE)
    metrics = out / "metrics.csv"
    try:
        deadline = time.monotonic() + 60
        # kill once a checkpoint exists and a row after it was written (an odd row count)
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "checkpoints" / "latest.pt").exists() and metrics.exists():
                rows = len(metrics.read_text().splitlines()) - 1
                if rows >= 3 and rows % 2 == 1:
                    break
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(read_metrics(out)) % 2 == 1 and len(read_metrics(out)) < 8

    run(out, resume=True)
    whole = run(tmp_path / "whole", *overrides)
    assert reproducible(read_metrics(out)) == reproducible(read_metrics(whole))


def test_fresh_run_into_a_folder_with_checkpoints_is_refused(tmp_path):
    run_dir = run(tmp_path / "run", "iterations=2")
    before = (run_dir / "metrics.csv").read_text()
    with pytest.raises(AdaptrlError, match="--resume"):
        run(run_dir, "iterations=2")
    assert (run_dir / "metrics.csv").read_text() == before


def test_resume_without_a_checkpoint_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(AdaptrlError, match="nothing to resume"):
        run(tmp_path / "empty", resume=True)
    monkeypatch.setenv(CRASH_ENV, "1")
    with pytest.raises(RuntimeError):
        run(tmp_path / "early")  # config.yaml written, no checkpoint yet
    monkeypatch.delenv(CRASH_ENV)
    with pytest.raises(AdaptrlError, match="no checkpoint"):
        run(tmp_path / "early", resume=True)
    run(tmp_path / "early", "iterations=1")  # a fresh start there is allowed
    assert len(read_metrics(tmp_path / "early")) == 1


def test_resume_with_a_different_config_names_the_mismatch(tmp_path):
    run_dir = run(tmp_path / "run", "iterations=2", "lr=0.05", seed=1)
    with pytest.raises(AdaptrlError, match=r"lr: 0\.05 → 0\.1"):
        run(run_dir, "lr=0.1", resume=True)
    with pytest.raises(AdaptrlError, match="seed 1, not 2"):
        run(run_dir, resume=True, seed=2)
    with pytest.raises(AdaptrlError, match="family 'point-nav', not 'cheetah-vel'"):
        train(ALGO, "cheetah-vel", out=run_dir, resume=True, progress=False)
    with pytest.raises(AdaptrlError, match="beyond iterations=1"):
        run(run_dir, "iterations=1", resume=True)
    run(run_dir, "iterations=3", "checkpoint_every=1", resume=True)  # extending is allowed
    assert len(read_metrics(run_dir)) == 3


def test_config_yaml_edited_behind_the_checkpoint_is_refused(tmp_path):
    run_dir = run(tmp_path / "run", "iterations=2")
    record = yaml.safe_load((run_dir / "config.yaml").read_text())
    record["config"]["lr"] = 0.5
    (run_dir / "config.yaml").write_text(yaml.safe_dump(record))
    with pytest.raises(AdaptrlError, match=r"no longer matches.*lr: 0\.05 → 0\.5"):
        run(run_dir, resume=True)


def test_a_second_process_cannot_train_in_the_same_folder(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(AdaptrlError, match="another adaptrl process"):
            run(run_dir, "iterations=1")
    run(run_dir, "iterations=1")


# ─── checkpoint files ───────────────────────────────────────────────────────────────────────
def test_truncated_checkpoint_is_a_clear_error_never_a_fresh_start(tmp_path):
    run_dir = run(tmp_path / "run", "iterations=2")
    latest = run_dir / "checkpoints" / "latest.pt"
    data = latest.read_bytes()
    before = (run_dir / "metrics.csv").read_text()
    for cut in (len(data) - 100, len(data) // 2, 30, 3, 0):
        latest.write_bytes(data[:cut])
        with pytest.raises(AdaptrlError, match="truncated|empty") as err:
            run(run_dir, "iterations=4", resume=True)
        assert str(latest) in str(err.value)
        with pytest.raises(AdaptrlError, match="--resume"):
            run(run_dir, "iterations=4")
    assert (run_dir / "metrics.csv").read_text() == before


def test_corrupt_payload_fails_the_checksum(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"x": torch.arange(1000)})
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(AdaptrlError, match="corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("write, needle", [
    (lambda p: torch.save({"model": torch.zeros(2)}, p), "plain torch.save"),
    (lambda p: p.write_text("hello: world\n"), "a text file"),
    (lambda p: p.write_bytes(b"\x00\x01\x02\xff" * 20), "unknown binary"),
])
def test_foreign_file_is_a_clear_error(tmp_path, write, needle):
    path = tmp_path / "foreign.pt"
    write(path)
    with pytest.raises(AdaptrlError, match="not an adaptrl checkpoint") as err:
        load_checkpoint(path)
    assert needle in str(err.value)


def test_missing_file_and_newer_format_are_clear_errors(tmp_path):
    with pytest.raises(AdaptrlError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"a": 1})
    header = read_header(good)
    assert header["format"] == FORMAT_NAME and header["format_version"] == FORMAT_VERSION
    assert header["library_version"] and len(header["sha256"]) == 64
    future = tmp_path / "future.pt"
    torch.save({HEADER_KEY: {**header, "format_version": FORMAT_VERSION + 1}, "a": 1}, future)
    with pytest.raises(AdaptrlError, match=f"format version {FORMAT_VERSION + 1}.*upgrade"):
        load_checkpoint(future)


def test_failed_write_keeps_the_old_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"generation": 1})

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"generation": 2, "big": torch.zeros(10_000)})
    monkeypatch.undo()
    assert load_checkpoint(path) == {"generation": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_only_the_last_three_numbered_checkpoints_are_kept(tmp_path):
    run_dir = run(tmp_path / "run", "iterations=5", "checkpoint_every=1")
    assert [i for i, _ in numbered_checkpoints(run_dir / "checkpoints")] == [3, 4, 5]


def test_keep_checkpoints_sets_how_many_and_zero_keeps_every_one(tmp_path):
    run_dir = run(tmp_path / "two", "iterations=4", "checkpoint_every=1", "keep_checkpoints=2")
    assert [i for i, _ in numbered_checkpoints(run_dir / "checkpoints")] == [3, 4]
    run_dir = run(tmp_path / "all", "iterations=4", "checkpoint_every=1", "keep_checkpoints=0")
    assert [i for i, _ in numbered_checkpoints(run_dir / "checkpoints")] == [1, 2, 3, 4]


# ─── the command line ───────────────────────────────────────────────────────────────────────
def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", ALGO, FAMILY, "--set", "iterations=2", "--out", str(out),
                 "--no-progress"]) == 0
    assert str(out) in capsys.readouterr().out
    assert main(["train", ALGO, FAMILY, "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", ALGO, FAMILY, "--set", "iterations=3", "--out", str(out), "--resume",
                 "--no-progress"]) == 0
    assert len(read_metrics(out)) == 3


def test_cli_mistakes_are_one_line(tmp_path, capsys):
    assert main(["train", ALGO, FAMILY, "--set", "lrr=1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did you mean 'lr'" in err
    assert main(["train", ALGO, "--list-options"]) == 0
    assert "checkpoint_every" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "dumy-test", FAMILY])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown algorithm 'dumy-test'" in err
    assert "did you mean 'dummy-test'" in err


# ─── the runner owns iteration counting and phase timing ──────────────────────────────────────
def test_methods_report_metrics_not_timers(tmp_path):
    class TimesItself(DummyAlgo):
        name = "dummy-times-itself"

        def train_step(self, rng):
            return {**super().train_step(rng), "time/mine_s": 0.1}

    with pytest.raises(ValueError, match="time/mine_s.*self.phase"):
        train(TimesItself, FAMILY, out=tmp_path / "run", progress=False)


def test_the_runner_times_the_phases_a_method_marks(tmp_path):
    run_dir = train("maml", "point-nav", preset="smoke", overrides=["iterations=2"],
                    out=tmp_path / "run", progress=False)
    rows = read_metrics(run_dir)
    for row in rows:
        sample, update, step = (float(row[k]) for k in ("time/sample_s", "time/update_s",
                                                        "step_s"))
        assert sample > 0 and update > 0
        assert sample + update == pytest.approx(step, rel=1e-6, abs=1e-6)
    run_dir = train("admrl", "hopper-2d", preset="smoke", overrides=["iterations=2"],
                    out=tmp_path / "admrl", progress=False)
    rows = read_metrics(run_dir)
    # declared phases have a column in every row, 0 where the phase did not run
    assert [float(r["time/task_grad_s"]) > 0 for r in rows] == [False, True]
    assert all(float(r["time/virtual_s"]) > 0 and float(r["time/sample_s"]) > 0 for r in rows)
