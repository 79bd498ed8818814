"""Videos of adapted policies: `adaptrl eval --video` and the links in `adaptrl compare`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scripted import Scripted
from test_eval import GreedyDummy

from adaptrl.algos import ALGORITHMS, Adapted, MetaAlgorithm
from adaptrl.errors import AdaptrlError
from adaptrl.eval import find_videos, write_videos
from adaptrl.tasks import get_family


class PushDummy(MetaAlgorithm):
    """Budget n: every joint pushed with torque 0.3·n (so each budget's video differs)."""

    name = "test-push-dummy"

    def adapt(self, tasks, budgets, rng):
        def push(n):
            return Scripted(lambda obs, generator: torch.full(
                (*obs.shape[:-1], self.family.act_dim), 0.3 * n))

        return [Adapted(push(n), np.zeros(len(tasks), dtype=int), 0.0) for n in budgets]


def _gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


def test_write_videos_draws_each_budget_on_a_mujoco_body(tmp_path):
    family = get_family("cheetah-vel")
    algo = PushDummy(family, PushDummy.Config())
    tasks = family.sample(4, np.random.default_rng(0))
    try:
        paths = write_videos(algo, family, tasks, [0, 2], np.random.default_rng(1), tmp_path,
                             num_tasks=2, horizon=8, size=48)
    except AdaptrlError as err:
        if "MuJoCo cannot render" not in str(err):
            raise
        pytest.skip(f"no OpenGL backend for MuJoCo here: {err}")
    assert list(paths) == ["video n=0", "video n=2"]
    assert find_videos(tmp_path) == {0: tmp_path / "videos" / "n0.gif",
                                     2: tmp_path / "videos" / "n2.gif"}
    still, pushed = _gif_frames(paths["video n=0"]), _gif_frames(paths["video n=2"])
    assert len(still) == len(pushed) == 9  # the start and one frame per step
    assert still[0].shape == (48, 96, 3)  # two tasks side by side
    assert not np.array_equal(still[-1], pushed[-1])


def test_cli_eval_video_and_compare_links(tmp_path, monkeypatch, capsys):
    from adaptrl.cli import main
    from adaptrl.runner import train

    monkeypatch.setitem(ALGORITHMS, GreedyDummy.name, GreedyDummy)
    run = train(GreedyDummy.name, "point-nav", overrides=["iterations=1"], seed=0,
                out=tmp_path / "runs" / "greedy", progress=False)
    assert main(["eval", str(run), "--num-tasks", "4", "--steps", "0,1", "--episodes", "1",
                 "--video"]) == 0
    out = capsys.readouterr().out
    videos = find_videos(run / "eval" / "test")
    assert sorted(videos) == [0, 1] and f"wrote {videos[1]}" in out
    frames = _gif_frames(videos[1])
    assert frames[0].shape == (200, 600, 3)  # three tasks side by side
    assert 1 < len(frames) <= 101

    compare = tmp_path / "compare"
    assert main(["compare", str(run), "--out", str(compare)]) == 0
    text = (compare / "compare.md").read_text()
    assert "[n=0](../runs/greedy/eval/test/videos/n0.gif)" in text
    assert "[n=1](../runs/greedy/eval/test/videos/n1.gif)" in text
