"""Frames of single environments of a batch, ``[height, width, 3]`` uint8 RGB.

MuJoCo bodies are drawn by MuJoCo's own renderer (`mujoco.Renderer`, through the models'
``track`` camera, which follows the body's centre of mass); the other bodies are simple
top-down pictures drawn with NumPy. Without a display, MuJoCo renders through EGL or OSMesa,
chosen by the ``MUJOCO_GL`` environment variable *before* ``mujoco`` is imported;
`default_headless_gl` sets ``MUJOCO_GL=egl`` when nothing was chosen and no display exists.
"""

from __future__ import annotations

import copy
import os
import sys

import numpy as np

from ..errors import AdaptrlError

DEFAULT_SIZE = 480  # pixels, Gymnasium's MuJoCo default

BACKGROUND = (245, 245, 245)
WALL = (40, 40, 40)
AGENT = (31, 119, 180)  # matplotlib's C0
GOAL = (214, 39, 40)  # C3
BAR = (150, 150, 150)


def has_display() -> bool:
    """Whether a window can be opened (an X11 or Wayland display on Linux; assumed elsewhere)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def default_headless_gl() -> None:
    """Ask MuJoCo for EGL (headless OpenGL) when no display exists and ``MUJOCO_GL`` is unset.

    MuJoCo reads the variable once, when it is imported, so this only helps before the first
    ``import mujoco``; it never overrides a user's choice."""
    if "mujoco" in sys.modules or "MUJOCO_GL" in os.environ or has_display():
        return
    if sys.platform.startswith("linux"):
        os.environ["MUJOCO_GL"] = "egl"


def check_size(width: int, height: int) -> tuple[int, int]:
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise AdaptrlError(f"frame size must be positive, got {width}×{height}")
    return width, height


class MujocoFrames:
    """Renders physics states of one model with `mujoco.Renderer` (one GL context, made on
    first use; `close` frees it). Not picklable state: owners drop it when pickled."""

    def __init__(self, model):
        import mujoco

        self._mujoco = mujoco
        self.model = copy.copy(model)  # its buffer sizes change here
        # software OpenGL (EGL on a machine without a GPU) spends most of a frame on the 4096 px
        # shadow map and 4× multisampling: 1024 px and none render ~6× faster, look the same
        self.model.vis.quality.shadowsize = 1024
        self.model.vis.quality.offsamples = 0
        self.data = mujoco.MjData(model)
        self._renderer = None
        self._size = None
        self._camera = "track" if mujoco.mj_name2id(
            model, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0 else -1

    def frame(self, state: np.ndarray, spec, width: int, height: int) -> np.ndarray:
        """The frame of one full physics state ``state [nstate]`` (``spec``: its
        `mujoco.mjtState` layout)."""
        mujoco = self._mujoco
        width, height = check_size(width, height)
        vis = self.model.vis.global_
        if width > vis.offwidth or height > vis.offheight:  # the offscreen buffer's size
            vis.offwidth, vis.offheight = max(width, vis.offwidth), max(height, vis.offheight)
            self.close()
        if self._renderer is None or self._size != (width, height):
            self.close()
            try:
                self._renderer = mujoco.Renderer(self.model, height=height, width=width)
            except Exception as err:  # GL backends raise many types; all mean "cannot render"
                backend = os.environ.get("MUJOCO_GL", "default (glfw)")
                raise AdaptrlError(
                    f"MuJoCo cannot render (MUJOCO_GL={backend}): {err}. Without a display, set "
                    "MUJOCO_GL=egl (or osmesa) before Python starts") from None
            self._size = (width, height)
        mujoco.mj_setState(self.model, self.data, np.asarray(state, np.float64), spec)
        mujoco.mj_forward(self.model, self.data)
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


# ─── simple NumPy pictures ───────────────────────────────────────────────────────────────────
def canvas(width: int, height: int) -> np.ndarray:
    width, height = check_size(width, height)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    return image


def fill_box(image, x0, y0, x1, y1, color) -> None:
    """Fill the pixel box [x0, x1) × [y0, y1) (clipped to the image)."""
    h, w = image.shape[:2]
    x0, x1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), w)
    y0, y1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h)
    if x1 > x0 and y1 > y0:
        image[y0:y1, x0:x1] = color


def fill_disc(image, cx, cy, radius, color) -> None:
    h, w = image.shape[:2]
    ys, xs = np.ogrid[:h, :w]
    image[(xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2] = color


def draw_point(position, goal, half_width: float, width: int, height: int) -> np.ndarray:
    """Top-down view of a point and its goal on the square [−half_width, half_width]²."""
    image = canvas(width, height)
    size = min(image.shape[:2])

    def pixel(xy):
        x, y = (np.asarray(xy, np.float64) / half_width + 1.0) / 2.0
        return x * (image.shape[1] - 1), (1.0 - y) * (image.shape[0] - 1)  # y points up

    centre = pixel((0.0, 0.0))
    fill_box(image, centre[0], 0, centre[0] + 1, image.shape[0], BAR)  # the axes
    fill_box(image, 0, centre[1], image.shape[1], centre[1] + 1, BAR)
    fill_disc(image, *pixel(goal), max(size / 40, 2.0), GOAL)
    fill_disc(image, *pixel(position), max(size / 60, 1.5), AGENT)
    return image


def draw_maze(passable: np.ndarray, position, goal, width: int, height: int) -> np.ndarray:
    """Top-down view of a maze ``passable [n, n, 4]`` (open sides N, E, S, W of each cell) with
    the agent's cell and the goal cell (row, col)."""
    image = canvas(width, height)
    n = passable.shape[0]
    cell = min(image.shape[:2]) / (n + 0.5)
    pad, line = cell / 4, max(cell / 12, 1.0)

    def box(row, col, shrink, color):
        fill_box(image, pad + col * cell + shrink, pad + row * cell + shrink,
                 pad + (col + 1) * cell - shrink, pad + (row + 1) * cell - shrink, color)

    box(*goal, cell / 6, GOAL)
    box(*position, cell / 4, AGENT)
    for row in range(n):
        for col in range(n):
            x0, y0 = pad + col * cell, pad + row * cell
            x1, y1 = x0 + cell, y0 + cell
            if not passable[row, col, 0]:
                fill_box(image, x0, y0, x1 + line, y0 + line, WALL)
            if not passable[row, col, 1]:
                fill_box(image, x1, y0, x1 + line, y1 + line, WALL)
            if not passable[row, col, 2]:
                fill_box(image, x0, y1, x1 + line, y1 + line, WALL)
            if not passable[row, col, 3]:
                fill_box(image, x0, y0, x0 + line, y1 + line, WALL)
    return image


def draw_bars(values, highlight: int | None, width: int, height: int) -> np.ndarray:
    """One bar per entry of ``values`` (in [0, 1]); the bar ``highlight`` in the agent's colour
    (a bandit's arm means with the last arm pulled; a tabular MDP's current state)."""
    image = canvas(width, height)
    values = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
    h, w = image.shape[:2]
    slot = w / max(len(values), 1)
    for i, v in enumerate(values):
        color = AGENT if i == highlight else BAR
        fill_box(image, i * slot + slot * 0.15, (h - 2) * (1.0 - v), (i + 1) * slot - slot * 0.15,
                 h - 2, color)
    fill_box(image, 0, h - 2, w, h, WALL)
    return image
