"""The checkpoint file format: plain ``torch.load(weights_only=True)`` opens every method's
checkpoint; the header, checksum and refusals of `adaptrl.checkpoint`; ``latest.pt`` as a link."""

import hashlib
import io
import json
import os

import numpy as np
import pytest
import torch

from adaptrl.algos import ALGORITHMS
from adaptrl.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_KEY,
    V1_MAGIC,
    load_checkpoint,
    numbered_checkpoints,
    payload_digest,
    save_checkpoint,
    write_run_checkpoint,
)
from adaptrl.errors import AdaptrlError
from adaptrl.runner import load_run, train

# the smoke preset cut down to one short iteration: this file checks the format, not learning
TINY = {"point-nav": ["iterations=1", "horizon=5", "fast_batch=2", "meta_batch=2"],
        "bandit-k5": ["iterations=1", "meta_batch=2", "fast_batch=1", "trial_episodes=2"]}
EXTRA = {
    "pearl": ["num_train_tasks=2", "tasks_per_iteration=1", "initial_episodes=1",
              "updates_per_iteration=1", "batch_size=8", "embedding_batch=8"],
    "flap": ["num_train_tasks=2", "tasks_per_iteration=1", "initial_episodes=1",
             "updates_per_iteration=1", "batch_size=8", "adapter_batch=8"],
    "admrl": ["meta_batch=1", "n_zeroshot=1", "n_slbo=1", "n_slbo_first=1", "n_inner=1",
              "n_model=1", "n_policy=1", "virtual_episodes=2", "task_cg_iters=2",
              "model_batch=8"],
}
EXTRA["mb-unif"] = EXTRA["mb-gauss"] = EXTRA["admrl"]
EXTRA["grbal"] = ["hidden_sizes=8", "window=2", "future=2", "model_steps=1", "model_batch=2",
                  "plan_horizon=2", "candidates=4"]
EXTRA["mb-mpc"] = EXTRA["mb-mpc-finetune"] = EXTRA["grbal"]
FAMILY = {"rl2": "bandit-k5", "snail": "bandit-k5"}
BUILT_IN = ("maml", "fomaml", "reptile", "random", "pretrain", "oracle", "pearl", "flap",
            "admrl", "mb-unif", "mb-gauss", "rl2", "snail", "grbal", "mb-mpc",
            "mb-mpc-finetune")


def test_every_registered_method_is_covered():
    assert set(BUILT_IN) <= set(ALGORITHMS)
    assert not {name for name in ALGORITHMS if not name.endswith("-test")} - set(BUILT_IN)


@pytest.mark.parametrize("algo", BUILT_IN)
def test_plain_torch_load_opens_every_methods_checkpoint(tmp_path, one_torch_thread, algo):
    family = FAMILY.get(algo, "point-nav")
    run_dir = train(algo, family, preset="smoke", overrides=TINY[family] + EXTRA.get(algo, []),
                    out=tmp_path / algo, progress=False)  # later overrides win
    latest = run_dir / "checkpoints" / "latest.pt"
    archive = torch.load(latest, weights_only=True)
    header = archive.pop(HEADER_KEY)
    assert header["format"] == FORMAT_NAME and header["format_version"] == FORMAT_VERSION
    assert header["sha256"] == payload_digest(archive)
    assert archive["algo"] == algo and archive["iteration"] == 1
    assert isinstance(archive["algorithm"], dict)
    method, config, info = load_run(run_dir)
    assert info["iteration"] == 1 and method.name == algo


# ─── the format ─────────────────────────────────────────────────────────────────────────────
def test_round_trip_is_exact_and_the_header_stays_out_of_the_payload(tmp_path):
    payload = {"weights": torch.randn(3, 4, dtype=torch.float64), "flags": torch.tensor([True]),
               "rng": np.random.default_rng(5).bit_generator.state, "step": 7, "rate": 0.1,
               "nan": float("nan"), "names": ["a", "b"], "pair": (1, None),
               "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}}}
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert list(loaded) == list(payload) and HEADER_KEY not in loaded
    assert torch.equal(loaded["weights"], payload["weights"])
    assert loaded["rng"] == payload["rng"] and loaded["pair"] == (1, None)
    assert payload_digest(loaded) == payload_digest(payload)


def test_numpy_values_are_refused_naming_their_place():
    with pytest.raises(TypeError, match=r"payload\['algorithm'\]\['obs'\] is a numpy.ndarray.*"
                                        r"torch.from_numpy"):
        save_checkpoint("unused.pt", {"algorithm": {"obs": np.zeros(3)}})
    with pytest.raises(TypeError, match=r"payload\['step'\] is a numpy.float64"):
        save_checkpoint("unused.pt", {"step": np.float64(1.0)})


def test_a_flipped_byte_in_tensor_data_fails_the_checksum(tmp_path):
    path = tmp_path / "c.pt"
    marker = torch.arange(1000, 1256, dtype=torch.int64)
    save_checkpoint(path, {"x": marker})
    data = bytearray(path.read_bytes())
    at = bytes(data).index(marker.numpy().tobytes()) + 8 * 100
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(AdaptrlError, match="corrupt"):
        load_checkpoint(path)


def test_version_1_checkpoints_are_still_read(tmp_path):
    body = io.BytesIO()
    torch.save({"iteration": 4, "state": np.arange(3)}, body)
    body = body.getvalue()
    header = {"format": FORMAT_NAME, "format_version": 1, "library_version": "0.1.0",
              "payload_size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    path = tmp_path / "old.pt"
    path.write_bytes(V1_MAGIC + json.dumps(header).encode() + b"\n" + body)
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 4 and np.array_equal(loaded["state"], np.arange(3))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(AdaptrlError, match="truncated"):
        load_checkpoint(path)


# ─── a run's folder ─────────────────────────────────────────────────────────────────────────
def test_latest_is_a_hard_link_to_the_newest_numbered_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    for iteration in range(1, 6):
        write_run_checkpoint(folder, iteration, {"iteration": iteration})
    assert [i for i, _ in numbered_checkpoints(folder)] == [3, 4, 5]
    latest, newest = folder / "latest.pt", folder / "iter_000005.pt"
    assert os.path.samefile(latest, newest)
    assert sorted(p.name for p in folder.iterdir()) == [
        "iter_000003.pt", "iter_000004.pt", "iter_000005.pt", "latest.pt"]
    newest.unlink()  # latest keeps its data without the numbered name
    assert load_checkpoint(latest)["iteration"] == 5


def test_latest_is_a_copy_where_hard_links_are_not_supported(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    folder = tmp_path / "checkpoints"
    write_run_checkpoint(folder, 1, {"iteration": 1})
    assert not os.path.samefile(folder / "latest.pt", folder / "iter_000001.pt")
    assert load_checkpoint(folder / "latest.pt")["iteration"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["iter_000001.pt", "latest.pt"]
