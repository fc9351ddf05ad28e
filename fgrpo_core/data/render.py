"""Drawing synthetic scenes (PIL) and overlaying boxes for the docs.

A scene is drawn as a pinhole view of a ground plane: light sky above the horizon, grey ground
below it with perspective lines that converge at the vanishing point, and flat shapes standing
on the ground. Objects are painted far to near, so nearer objects occlude farther ones. Fills
are flat, exact RGB colours (PIL draws without anti-aliasing), which lets a test find every
pixel of an object by its colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "yellow": (235, 200, 20),
    "purple": (150, 60, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SKY = (222, 228, 235)
GROUND = (186, 180, 170)
GRID = (165, 159, 150)


@dataclass(frozen=True)
class Shape:
    """One shape to draw: its kind, fill, and the integer box it is inscribed in (x2, y2 exclusive)."""

    shape: str
    colour: str
    box: tuple[int, int, int, int]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    """Square fills the box; circle is inscribed; triangle stands on the box's bottom edge."""
    x1, y1, x2, y2 = box
    if shape == "square":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif shape == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif shape == "triangle":
        draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def shape_mask(size: int, s: Shape) -> np.ndarray:
    """Boolean mask [H, W] of the full (amodal) shape, as if nothing occluded it."""
    img = Image.new("L", (size, size), 0)
    draw_shape(ImageDraw.Draw(img), s.shape, s.box, 255)
    return np.asarray(img) > 0


def draw_background(size: int, horizon_y: float) -> Image.Image:
    """Sky, ground and perspective lines converging at (size/2, horizon_y)."""
    img = Image.new("RGB", (size, size), SKY)
    d = ImageDraw.Draw(img)
    hy = int(round(horizon_y))
    d.rectangle([0, hy, size - 1, size - 1], fill=GROUND)
    vx = size / 2
    for k in range(-4, 5):  # rays from the vanishing point to the bottom edge
        d.line([(vx, hy), (vx + k * size * 0.35, size - 1)], fill=GRID, width=1)
    for frac in (0.12, 0.3, 0.6):  # receding ground lines, denser towards the horizon
        y = hy + (size - 1 - hy) * frac
        d.line([(0, y), (size - 1, y)], fill=GRID, width=1)
    return img


def render(size: int, horizon_y: float, shapes_far_to_near: list[Shape]) -> Image.Image:
    """The scene image: background, then shapes painted far to near."""
    img = draw_background(size, horizon_y)
    d = ImageDraw.Draw(img)
    for s in shapes_far_to_near:
        draw_shape(d, s.shape, s.box, COLOURS[s.colour])
    return img


def add_position_cue(image: Image.Image, levels: float) -> Image.Image:
    """``image`` with a coordinate ramp added to every pixel: red + levels*(2x/(W-1) - 1), blue +
    levels*(2y/(H-1) - 1), clipped to [0, 255] (a pixel shows its own x and y, as CoordConv's extra
    channels do). ``levels`` 0 returns the image unchanged."""
    if levels == 0:
        return image
    img = np.asarray(image.convert("RGB")).astype(np.float32)
    h, w = img.shape[:2]
    img[..., 0] += levels * np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    img[..., 2] += levels * np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))


def draw_boxes(image: Image.Image, boxes: list[tuple[str, list[float]]], scale: int = 4) -> Image.Image:
    """Upscaled copy of ``image`` with labelled box outlines (for docs and debugging)."""
    big = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    d = ImageDraw.Draw(big)
    for label, (x1, y1, x2, y2) in boxes:
        d.rectangle([x1 * scale, y1 * scale, x2 * scale - 1, y2 * scale - 1], outline=(0, 0, 0), width=2)
        d.text((x1 * scale + 3, max(0, y1 * scale - 11)), label, fill=(0, 0, 0))
    return big
