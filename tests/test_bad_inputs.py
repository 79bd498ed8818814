"""Ordinary mistakes never end in a traceback (issue 16): a table of bad invocations and files,
every CLI command, each run in-process through `adaptrl.cli.main`. Each must exit with code 2,
print exactly one line on stderr (no 'Traceback'), and leave every file of the workspace (a
trained run folder, copies of it made bad in one way, task and preset files) as it was.

Classes: impossible config values (NaN/inf, out of range, unknown choices, fields a method does
not use); sizes that cannot fit memory or would plan endless work; ordinary mistakes (negative
seeds, output paths that are a folder or inside a file, files that are not UTF-8, huge integers,
checkpoints that do not fit the run's config or hold the wrong types); non-finite numbers in
files (task files, checkpoint weights); a run killed during its first checkpoint write. NaN/inf
during training is `tests/test_nonfinite.py`, kills at any moment `tests/test_kill_resume.py`.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from adaptrl.algos import get_algorithm
from adaptrl.checkpoint import load_checkpoint, write_run_checkpoint
from adaptrl.cli import main
from adaptrl.errors import AdaptrlError
from adaptrl.options import field_range
from adaptrl.runner import train

TINY = ["iterations=2", "checkpoint_every=1", "meta_batch=2", "fast_batch=2", "horizon=5",
        "hidden_sizes=8"]
LATIN1 = "é: ü\n".encode("latin-1")  # not UTF-8
PIB = str(10**9)  # a count that makes any batch petabytes


# ─── the workspace: one tiny run, and copies of it made bad in one way each ──────────────────
def _first_tensor_path(state, path=()):
    """The key path of the first tensor in a nested state dict."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            return path + (key,)
        if isinstance(value, dict):
            found = _first_tensor_path(value, path + (key,))
            if found:
                return found
    return None


def _rewrite_checkpoint(run: Path, change) -> None:
    """Replace the run's checkpoints with one whose payload ``change`` altered."""
    folder = run / "checkpoints"
    payload = load_checkpoint(folder / "latest.pt")
    change(payload)
    shutil.rmtree(folder)
    write_run_checkpoint(folder, 2, payload)


def _first_tensor_slot(payload):
    """The dict holding the algorithm state's first tensor, and its key there."""
    *parents, last = _first_tensor_path(payload["algorithm"])
    node = payload["algorithm"]
    for key in parents:
        node = node[key]
    return node, last


def _set_tensor(payload, value):
    node, last = _first_tensor_slot(payload)
    if value is None:
        del node[last]
    else:
        node[last] = value


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    run = train("maml", "point-nav", preset="smoke", overrides=TINY, out=root / "run",
                progress=False)
    (root / "file.txt").write_text("a file, not a folder\n")
    (root / "folder").mkdir()
    (root / "latin1.json").write_bytes(LATIN1)
    (root / "latin1.yaml").write_bytes(LATIN1)
    (root / "huge.json").write_text(f"[[{10**400}, 0.0]]")
    (root / "digits.json").write_text(f"[[{'9' * 5000}, 0.0]]")
    (root / "nan.yaml").write_text("max_kl: .nan\n")
    (root / "inf.yaml").write_text("inner_lr: .inf\n")
    (root / "bigint.yaml").write_text(f"max_kl: {10**400}\n")
    (root / "unused.yaml").write_text("gae_lambda: 0.5\n")
    (root / "activation.yaml").write_text("activation: swish\n")

    def copy(name, edit=None):
        target = root / name
        shutil.copytree(run, target)
        if edit is not None:
            edit(target)
        return target

    copy("latin1-config", lambda r: (r / "config.yaml").write_bytes(LATIN1))
    copy("latin1-metrics", lambda r: (r / "metrics.csv").write_bytes(LATIN1 * 3))
    copy("eval-is-a-file", lambda r: (r / "eval").write_text("x"))
    copy("negative-seed", lambda r: (r / "config.yaml").write_text(
        (r / "config.yaml").read_text().replace("seed: 0", "seed: -4")))
    copy("wider", lambda r: (r / "config.yaml").write_text(
        (r / "config.yaml").read_text().replace("hidden_sizes: [8]", "hidden_sizes: [16]")))
    bad_payloads = {
        "size-mismatch": lambda p: _set_tensor(p, torch.zeros(3, 3, 3)),
        "missing-key": lambda p: _set_tensor(p, None),
        "algorithm-str": lambda p: p.__setitem__("algorithm", "weights"),
        "algorithm-list": lambda p: p.__setitem__("algorithm", [1, 2]),
        "iteration-str": lambda p: p.__setitem__("iteration", "2"),
        "iteration-negative": lambda p: p.__setitem__("iteration", -1),
        "torch-rng-list": lambda p: p.__setitem__("torch_rng", [1, 2, 3]),
        "numpy-rng-str": lambda p: p.__setitem__("numpy_rng", "state"),
        "numpy-rng-bad": lambda p: p.__setitem__("numpy_rng", {"bit_generator": "nope"}),
        "columns-int": lambda p: p.__setitem__("metrics_columns", 3),
        "elapsed-str": lambda p: p.__setitem__("elapsed_s", "long"),
        "no-algorithm": lambda p: p.pop("algorithm"),
    }
    for name, change in bad_payloads.items():
        copy(name, lambda r, change=change: _rewrite_checkpoint(r, change))
    # non-finite values in files: task files, and weights adaptrl would never have written
    (root / "nan-task.json").write_text("[[NaN, 0.0]]")
    (root / "inf-task.json").write_text("[[0.1, -Infinity]]")
    for name, value in (("nan-weights", math.nan), ("inf-weights", math.inf)):
        copy(name, lambda r, value=value: _rewrite_checkpoint(r, lambda p: _poison(p, value)))
    # a run killed while writing its first checkpoint: only a stale temporary is left
    copy("killed-first-write", lambda r: (shutil.rmtree(r / "checkpoints"),
                                          (r / "checkpoints").mkdir(),
                                          (r / "checkpoints" / ".tmp-latest.pt.x1")
                                          .write_bytes(b"PK\x03\x04partial")))
    return root


def _poison(payload, value):
    node, last = _first_tensor_slot(payload)
    node[last] = node[last].clone()
    node[last].view(-1)[0] = value


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ─── the table ──────────────────────────────────────────────────────────────────────────────
def _config_cases() -> list[tuple[str, str]]:
    """train --set: NaN, inf and a value past the upper bound for every float field of each
    method (the fields it uses), and the fields it does not use."""
    cases = []
    for algo in ("maml", "reptile", "pearl", "flap", "rl2", "admrl"):
        config_cls = get_algorithm(algo).Config
        unused = getattr(config_cls, "unused_fields", {})
        floats = [f for f in config_cls.__dataclass_fields__.values()
                  if "float" in str(f.type) and f.name not in unused]
        for f in floats:
            r = field_range(config_cls, f.name)
            upper = r.le if r.le is not None else r.lt
            for value in ("nan", "inf", "-inf") if algo in ("maml", "pearl") else ("nan",):
                cases.append((f"train {algo} point-nav --set {f.name}={value}", f.name))
            if upper is not None and algo in ("maml", "pearl", "admrl"):
                cases.append((f"train {algo} point-nav --set {f.name}={upper * 10 + 1}",
                              f.name))
        for name in unused:
            cases.append((f"train {algo} point-nav --set {name}=0.5", f"does not use {name}"))
    return cases


SIZE_CASES = [
    ("train maml point-nav --set meta_batch=1000000 --set fast_batch=1000000", "needs about"),
    ("train maml point-nav --set horizon=10000000 --set fast_batch=1000000", "needs about"),
    ("train maml point-nav --set hidden_sizes=60000,60000,60000 --set meta_batch=100000",
     "needs about"),
    ("train pearl point-nav --set replay_capacity=10000000000", "replay buffers"),
    ("train flap point-nav --set context_capacity=10000000000", "context buffers"),
    ("train admrl hopper-2d --set model_buffer=10000000000", "model's data"),
    ("train rl2 bandit-k5 --set trial_episodes=100000 --set meta_batch=1000000 "
     "--set fast_batch=1000000", "trial_episodes"),
    ("train maml point-nav --set iterations=99999999999999999999", "iterations"),
    ("train maml point-nav --set meta_batch=99999999999999999999", "meta_batch"),
    ("train pearl point-nav --set updates_per_iteration=99999999999999", "updates_per_iteration"),
    ("eval {ws}/run --num-tasks 100000000000", "needs about"),
    ("eval {ws}/run --episodes 100000000000", "needs about"),
    ("eval {ws}/run --steps 99999999999999999999", "environment steps"),
    ("eval {ws}/run --steps 0,1,1000000000000", "environment steps"),
    (f"bench sampler point-nav --tasks {PIB} --episodes {PIB}", "needs about"),
    (f"bench sampler point-nav --horizon {PIB} --episodes {PIB}", "needs about"),
    (f"bench sampler point-nav --tasks 2 --repeats {PIB} --episodes {PIB}", "--tasks"),
    (f"bench adapt point-nav --tasks {PIB} --episodes {PIB}", "needs about"),
    ("bench meta-step point-nav --preset smoke --set meta_batch=1000000 "
     "--set fast_batch=1000000", "needs about"),
    (f"bench meta-step point-nav --preset smoke --iterations {10**12}", "environment steps"),
    (f"baselines bandit-k5 --num-tasks {PIB} --episodes {PIB}", "needs about"),
    (f"baselines bandit-k5 --trial-episodes {PIB} --episodes {PIB}", "needs about"),
    (f"oracle point-nav --split test --num-tasks {PIB} --episodes {PIB}", "needs about"),
    (f"oracle point-nav --split test --num-tasks 40 --iterations {PIB} --episodes 1000",
     "environment steps"),
    (f"normalizer cheetah-highdim --episodes {10**13}", "needs about"),
]

MISTAKE_CASES = [
    # negative and oversized seeds, every command that takes one
    *[(f"{cmd} --seed {seed}", "--seed") for seed in ("-1", str(2**64))
      for cmd in ("train maml point-nav", "eval {ws}/run", "baselines bandit-k5",
                  "bench sampler point-nav", "bench meta-step point-nav",
                  "bench adapt point-nav", "normalizer cheetah-highdim", "oracle point-nav")],
    ("oracle point-nav --train-seed -2", "--train-seed"),
    ("train maml point-nav --seed abc", "--seed"),
    # output paths that are a folder, or inside a file
    ("train maml point-nav --out {ws}/file.txt", "not a folder"),
    ("train maml point-nav --out {ws}/file.txt/run", "is a file"),
    ("baselines bandit-k5 --out {ws}/file.txt", "not a folder"),
    ("baselines bandit-k5 --out {ws}/file.txt/b", "is a file"),
    ("compare {ws}/run --out {ws}/file.txt", "not a folder"),
    ("plot-tasks {ws}/run --out {ws}/folder", "is a folder"),
    ("plot-tasks {ws}/run --out {ws}/file.txt/x.png", "is a file"),
    ("normalizer cheetah-highdim --out {ws}/folder", "is a folder"),
    ("normalizer cheetah-highdim --out {ws}/file.txt/n.json", "is a file"),
    ("oracle point-nav --cache {ws}/file.txt", "not a folder"),
    ("eval {ws}/eval-is-a-file", "is a file"),
    # files that are not UTF-8
    ("train maml point-nav --preset {ws}/latin1.yaml", "not UTF-8"),
    ("train maml --list-options --preset {ws}/latin1.yaml", "not UTF-8"),
    ("eval {ws}/run --tasks {ws}/latin1.json", "not UTF-8"),
    ("oracle point-nav --tasks {ws}/latin1.json", "not UTF-8"),
    ("eval {ws}/latin1-config", "not UTF-8"),
    ("train maml point-nav --out {ws}/latin1-config --resume", "not UTF-8"),
    ("plot-tasks {ws}/latin1-metrics --out {ws}/folder/p.png", "metrics.csv"),
    # presets and task files with impossible values or huge integers
    ("train maml point-nav --preset {ws}/nan.yaml", "max_kl"),
    ("train maml point-nav --preset {ws}/inf.yaml", "inner_lr"),
    ("train maml point-nav --preset {ws}/bigint.yaml", "max_kl"),
    ("train pearl point-nav --preset {ws}/unused.yaml", "does not use gae_lambda"),
    ("train maml point-nav --preset {ws}/activation.yaml", "activation"),
    ("train maml point-nav --set activation=foo", "activation"),
    ("train snail bandit-k5 --set activation=tanh", "does not use activation"),
    ("eval {ws}/run --tasks {ws}/huge.json", "huge.json"),
    ("eval {ws}/run --tasks {ws}/digits.json", "digits.json"),
    ("oracle point-nav --tasks {ws}/huge.json", "huge.json"),
    ("oracle hopper-2d --max-kl nan", "max_kl"),
    ("oracle hopper-2d --max-kl inf", "max_kl"),
    ("baselines bandit-k5 --epsilon nan", "--epsilon"),
    ("baselines bandit-k5 --ucb-c nan", "--ucb-c"),
    ("eval {ws}/negative-seed", "seed"),
    # checkpoints that do not fit the run's config, or hold the wrong types
    ("eval {ws}/wider", "does not fit"),
    *[(f"eval {{ws}}/{name}", "latest.pt") for name in (
        "size-mismatch", "missing-key", "algorithm-str", "algorithm-list", "iteration-str",
        "iteration-negative", "torch-rng-list", "numpy-rng-str", "columns-int", "elapsed-str",
        "no-algorithm")],
    *[(f"train maml point-nav --out {{ws}}/{name} --resume --set iterations=3", "latest.pt")
      for name in ("size-mismatch", "missing-key", "algorithm-str", "iteration-str",
                   "torch-rng-list", "numpy-rng-str", "numpy-rng-bad", "columns-int",
                   "no-algorithm")],
    # non-finite numbers in files (class 1 at the file boundary)
    ("eval {ws}/run --tasks {ws}/nan-task.json", "must be finite"),
    ("eval {ws}/run --tasks {ws}/inf-task.json", "must be finite"),
    ("oracle point-nav --tasks {ws}/nan-task.json", "must be finite"),
    ("eval {ws}/nan-weights", "NaN or infinity"),
    ("eval {ws}/inf-weights", "NaN or infinity"),
    ("train maml point-nav --out {ws}/nan-weights --resume --set iterations=3", "NaN or infinity"),
    # a kill during the first checkpoint write (class 5): nothing to evaluate or compare yet
    ("eval {ws}/killed-first-write", "no checkpoint yet"),
    ("compare {ws}/killed-first-write", "no evaluation"),
    # the other commands' ordinary mistakes
    ("envs --bogus", "--bogus"),
    ("compare {ws}/run", "no evaluation"),
    ("compare {ws}/folder", "folder"),
    ("plot-tasks {ws}/run --out {ws}/folder/p.png", "no visited tasks"),
    ("plot-tasks {ws}/nowhere", "does not exist"),
    ("eval {ws}/nowhere", "does not exist"),
    ("eval {ws}/folder", "config.yaml"),
    ("eval {ws}/run --steps 0,-1", "-1"),
    ("eval {ws}/run --per-dim 0", "--per-dim"),
    ("bench sampler point-nav --hidden 0", "--hidden"),
    ("bench adapt point-nav --algos nope", "nope"),
    ("train nope point-nav", "nope"),
    ("train maml nowhere-nav", "nowhere-nav"),
]

CASES = [*_config_cases(), *SIZE_CASES, *MISTAKE_CASES]


def test_the_table_covers_every_command_and_at_least_150_cases():
    assert len(CASES) >= 150, len(CASES)
    commands = {argv.split()[0] if argv.split()[0] != "bench" else " ".join(argv.split()[:2])
                for argv, _ in CASES}
    assert commands >= {"train", "eval", "compare", "envs", "bench sampler", "bench meta-step",
                        "bench adapt", "baselines", "normalizer", "oracle", "plot-tasks"}


@pytest.mark.parametrize("argv, needle", CASES, ids=[c[0] for c in CASES])
def test_a_bad_invocation_is_one_line_exit_2_and_writes_nothing(argv, needle, ws, capsys,
                                                                monkeypatch):
    monkeypatch.chdir(ws)  # default outputs (runs/...) would land in the workspace
    monkeypatch.setenv("ADAPTRL_ORACLE_CACHE", str(ws / "oracle-cache"))
    before = _snapshot(ws)
    try:
        code = main(argv.format(ws=ws).split() + (["--no-progress"] if " --out " in argv
                                                   and argv.startswith("train") else []))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    assert _snapshot(ws) == before


# ─── the Python API refuses the same values ─────────────────────────────────────────────────
@pytest.mark.parametrize("kwargs, needle", [
    ({"seed": -1}, "seed must be an integer"),
    ({"seed": 2**40}, "seed must be an integer"),
    ({"overrides": ["max_kl=nan"]}, "max_kl"),
    ({"overrides": ["activation=foo"]}, "activation"),
])
def test_the_python_api_refuses_before_creating_the_run_folder(tmp_path, kwargs, needle):
    out = tmp_path / "never"
    with pytest.raises(AdaptrlError, match=needle):
        train("maml", "point-nav", out=out, progress=False, **kwargs)
    assert not out.exists()


def test_nan_in_a_preset_is_named_like_a_set_value():
    from adaptrl.config import make_config

    with pytest.raises(AdaptrlError, match=r"max_kl must be in \(0, 10\], got nan"):
        make_config("maml", None, [f"max_kl={math.nan}"])
    assert yaml.safe_load("x: .nan")["x"] != yaml.safe_load("x: .nan")["x"]  # NaN, as parsed
