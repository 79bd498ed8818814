"""Videos of adaptation: the adapted policy of every budget, acting on a few tasks side by side.

`write_videos` adapts the method to the first few evaluation tasks with each budget (one
``algo.adapt`` call, as the protocol does), rolls each adapted policy out for one episode on
the real simulator through the library's rollout loop, draws every step (`BatchEnv.
render_frame`: MuJoCo's renderer for MuJoCo bodies) and writes one animated GIF per budget,
``RUN_DIR/eval/<split>/videos/n<budget>.gif``: the tasks side by side, each labelled with its ψ
and its return so far. `adaptrl compare` links the files (`find_videos`).

GIF needs nothing beyond Pillow (which matplotlib brings). Frames are 200 px squares; long
episodes keep every k-th step so that a video has at most about `MAX_FRAMES` frames (software
OpenGL draws a MuJoCo frame in ~20–60 ms, so a video of 3 tasks × 4 budgets takes a minute
or less).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..algos import MetaAlgorithm
from ..envs import BatchEnv, make_batch_env
from ..sampling import rollout
from ..sampling.sampler import single_torch_thread
from ..tasks import TaskFamily, get_family
from .protocol import check_steps, eval_dir, write_file

VIDEO_DIR = "videos"
MAX_FRAMES = 100
MIN_FRAME_MS = 20  # browsers show faster GIF frames at 100 ms


class _Recorder:
    """A `BatchEnv` seen through the rollout loop, drawing the first ``num_recorded`` tasks
    after every reset and step; everything else is the wrapped environment's."""

    def __init__(self, env: BatchEnv, num_recorded: int, stride: int, size: int):
        self._env = env
        self.num_recorded, self.stride, self.size = num_recorded, stride, size
        self.frames: list[np.ndarray] = []  # [num_recorded, size, size, 3] each
        self.returns: list[np.ndarray] = []  # the return so far of each recorded task
        self._return = np.zeros(num_recorded)
        self._t = 0

    def __getattr__(self, name):
        return getattr(self._env, name)

    def reset(self, rng, generator=None):
        obs = self._env.reset(rng, generator)
        self._return[:] = 0.0
        self._t = 0
        self._draw()
        return obs

    def step(self, action):
        result = self._env.step(action)
        self._return += result.reward[:self.num_recorded, 0]
        self._t += 1
        if self._t % self.stride == 0 or not self._env.active[:self.num_recorded].any():
            self._draw()
        return result

    def _draw(self):
        self.frames.append(np.stack([
            self._env.render_frame(i, 0, width=self.size, height=self.size)
            for i in range(self.num_recorded)]))
        self.returns.append(self._return.copy())


def write_videos(algo: MetaAlgorithm, family: TaskFamily | str, tasks, steps: list[int],
                 rng: np.random.Generator, out_dir, *, num_tasks: int = 3,
                 horizon: int | None = None, size: int = 200) -> dict[str, Path]:
    """Adapt ``algo`` to the first ``num_tasks`` of ``tasks [T, k]`` with each budget in
    ``steps``, record one episode of each adapted policy, and write
    ``out_dir/videos/n<budget>.gif``; returns ``{"video n=<budget>": path}``."""
    family = get_family(family)
    tasks = family.check_tasks(tasks)[:max(int(num_tasks), 1)]
    steps = check_steps(steps)
    horizon = int(horizon or getattr(algo, "horizon", None) or family.horizon)
    adapt_rng, rollout_rng = rng.spawn(2)
    adapted = algo.adapt(tasks, steps, adapt_rng)
    env = make_batch_env(family, len(tasks), 1)
    fps = env.render_fps
    stride = max(math.ceil(horizon / MAX_FRAMES), math.ceil(fps * MIN_FRAME_MS / 1000))
    frame_ms = 1000.0 * stride / fps
    paths = {}
    try:
        for budget, result, budget_rng in zip(steps, adapted, rollout_rng.spawn(len(steps))):
            recorder = _Recorder(env, len(tasks), stride, size)
            with torch.no_grad(), single_torch_thread():
                rollout(recorder, result.policy, tasks, budget_rng, horizon)
            frames = _label(recorder.frames, recorder.returns, tasks, budget)
            path = Path(out_dir) / VIDEO_DIR / f"n{budget}.gif"
            paths[f"video n={budget}"] = write_gif(path, frames, frame_ms)
    finally:
        env.close()
    return paths


def _label(frames, returns, tasks, budget) -> list[np.ndarray]:
    """Tile each step's frames side by side and write the budget, ψ and the return so far on
    every tile (Pillow's built-in font)."""
    from PIL import Image, ImageDraw

    names = [", ".join(f"{v:.2g}" for v in psi[:3]) + (", …" if len(psi) > 3 else "")
             for psi in tasks]
    out = []
    for tiles, so_far in zip(frames, returns):
        image = Image.fromarray(np.concatenate(list(tiles), axis=1))
        draw = ImageDraw.Draw(image)
        width = tiles.shape[2]
        for i in range(1, len(names)):  # a line between tasks
            draw.line([(i * width, 0), (i * width, image.height)], fill=(60, 60, 60), width=2)
        for i, name in enumerate(names):
            text = f"n={budget}  task [{name}]\nreturn {so_far[i]:.1f}"  # ASCII: any font
            draw.multiline_text((i * width + 4, 3), text, fill=(0, 0, 0),
                                stroke_width=2, stroke_fill=(255, 255, 255))
        out.append(np.asarray(image))
    return out


def write_gif(path, frames: list[np.ndarray], frame_ms: float) -> Path:
    """An animated GIF of ``frames`` (``[H, W, 3]`` uint8 each), looping, written atomically."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames to write")
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(int(round(frame_ms / 10.0)) * 10, MIN_FRAME_MS), loop=0)
    return write_file(path, buffer.getvalue())


def find_videos(eval_folder) -> dict[int, Path]:
    """The videos `write_videos` left in an evaluation folder, ``{budget: path}`` by budget."""
    folder = Path(eval_folder) / VIDEO_DIR
    found = {}
    if folder.is_dir():
        for path in folder.glob("n*.gif"):
            if path.stem[1:].isdigit():
                found[int(path.stem[1:])] = path
    return dict(sorted(found.items()))


def video_links(entries, split: str, out_dir) -> str | None:
    """Markdown: for each compared run, links to its videos per budget (paths relative to
    ``out_dir``, where compare.md lives); None when no run has videos."""
    lines = []
    for entry in entries:
        videos = find_videos(eval_dir(entry.run_dir, split))
        if videos:
            links = ", ".join(f"[n={n}]({os.path.relpath(path, out_dir)})"
                              for n, path in videos.items())
            lines.append(f"- {entry.label}: {links}")
    if not lines:
        return None
    return "Videos of the adapted policies (`adaptrl eval RUN_DIR --video`):\n\n" + \
        "\n".join(lines) + "\n"
