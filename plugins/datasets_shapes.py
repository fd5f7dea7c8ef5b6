"""``shapes``: the embedded default dataset, drawn procedurally with PIL (no files needed).

Each image is a coloured shape (random size, position, rotation within +-20 degrees and
colour) on a smoothly varying, noisy background. Learnable but not trivial: a 3-layer CNN
with Adam reaches ~40% test top-1 after 5 epochs and ~65% after 20 (chance 8.3%).
Everything derives from fixed seeds per (split, index): the same split is the same pixels
in every process and on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from sgid_bench.api import Dataset, Split
from sgid_bench.errors import UserError

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

#: Output side in pixels; shapes are drawn at SUPERSAMPLE x this and downsampled (anti-aliasing).
SIZE = 32
SUPERSAMPLE = 2
_CANVAS = SIZE * SUPERSAMPLE
#: Fixed base seed of the dataset; splits get distinct streams so train and test never overlap.
_BASE_SEED = 2024
_SPLIT_CODES = {"train": 0, "test": 1}

# Difficulty knobs: every shape stays recognisable at 32 px, while colour, size, position
# and background vary enough that a classifier must learn the outline.
#: Shape radius as a fraction of the image side.
RADIUS = (0.34, 0.46)
#: Largest shift of the centre, as a fraction of the room left by the shape.
SHIFT = 0.5
#: Largest rotation in degrees (small: a rotated square must not become a diamond).
ROTATION = 20.0
#: Std of the background's coarse colour variation and of the per-pixel noise (0..255).
BACKGROUND_VARIATION = 12.0
NOISE = 6.0
#: Least RGB distance between the shape's colour and the background's mean colour.
CONTRAST = 150.0

Point = tuple[float, float]


def _regular(n: int, r: float, phase_deg: float, c: float) -> list[Point]:
    angles = [math.radians(phase_deg) + 2 * math.pi * k / n for k in range(n)]
    return [(c + r * math.cos(a), c + r * math.sin(a)) for a in angles]


def _star(r: float, c: float) -> list[Point]:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else 0.42 * r
        a = -math.pi / 2 + math.pi * k / 5
        pts.append((c + rad * math.cos(a), c + rad * math.sin(a)))
    return pts


def _circle(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    d.ellipse([c - r, c - r, c + r, c + r], fill=255)


def _square(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    d.polygon(_regular(4, r, 45, c), fill=255)


def _triangle(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    d.polygon(_regular(3, r, -90, c), fill=255)


def _star_shape(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    d.polygon(_star(r, c), fill=255)


def _cross(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    w = 0.3 * r
    d.rectangle([c - r, c - w, c + r, c + w], fill=255)
    d.rectangle([c - w, c - r, c + w, c + r], fill=255)


def _ring(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    d.ellipse([c - r, c - r, c + r, c + r], fill=255)
    inner = 0.55 * r
    d.ellipse([c - inner, c - inner, c + inner, c + inner], fill=0)


def _diamond(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    # A narrow rhombus, so that it stays distinct from a rotated square.
    d.polygon([(c, c - r), (c + 0.55 * r, c), (c, c + r), (c - 0.55 * r, c)], fill=255)


def _hexagon(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    d.polygon(_regular(6, r, 0, c), fill=255)


def _heart(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    lobe = 0.5 * r
    for sx in (-1, 1):
        x, y = c + sx * 0.45 * r, c - 0.3 * r
        d.ellipse([x - lobe, y - lobe, x + lobe, y + lobe], fill=255)
    d.polygon([(c - 0.93 * r, c - 0.15 * r), (c + 0.93 * r, c - 0.15 * r), (c, c + r)], fill=255)


def _crescent(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    d.ellipse([c - r, c - r, c + r, c + r], fill=255)
    cut, x, y = 0.85 * r, c + 0.5 * r, c - 0.1 * r
    d.ellipse([x - cut, y - cut, x + cut, y + cut], fill=0)


def _arrow(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    d.rectangle([c - r, c - 0.2 * r, c + 0.1 * r, c + 0.2 * r], fill=255)
    d.polygon([(c + r, c), (c + 0.1 * r, c - 0.65 * r), (c + 0.1 * r, c + 0.65 * r)], fill=255)


def _semicircle(d: ImageDraw.ImageDraw, r: float, c: float) -> None:
    d.pieslice([c - r, c - r * 0.6, c + r, c + r * 1.4], 180, 360, fill=255)


#: Class name -> mask painter, in label order (names are prompt-ready words).
SHAPES: dict[str, Callable[[ImageDraw.ImageDraw, float, float], None]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star_shape,
    "cross": _cross,
    "ring": _ring,
    "diamond": _diamond,
    "hexagon": _hexagon,
    "heart": _heart,
    "crescent": _crescent,
    "arrow": _arrow,
    "semicircle": _semicircle,
}
CLASS_NAMES = list(SHAPES)


def _mask(label: int, rng: np.random.Generator) -> np.ndarray:
    """The shape's coverage in [0, 1] at SIZE x SIZE, randomly scaled, rotated and moved."""
    from PIL import Image, ImageDraw

    c = _CANVAS / 2
    r = float(rng.uniform(*RADIUS)) * _CANVAS
    img = Image.new("L", (_CANVAS, _CANVAS), 0)
    SHAPES[CLASS_NAMES[label]](ImageDraw.Draw(img), r, c)
    reach = SHIFT * max(c - r, 0.0)  # keep most of the shape inside the frame
    dx, dy = (round(float(v)) for v in rng.uniform(-reach, reach, size=2))
    angle = float(rng.uniform(-ROTATION, ROTATION))
    img = img.rotate(angle, resample=Image.Resampling.BILINEAR, center=(c, c), translate=(dx, dy))
    img = img.resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32)[..., None] / 255.0


def _background(rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour field plus pixel noise (float HWC in 0..255)."""
    from PIL import Image

    base = rng.uniform(40, 215, size=3)
    coarse = base + rng.normal(0, BACKGROUND_VARIATION, size=(4, 4, 3))
    coarse = np.clip(coarse, 0, 255).astype(np.uint8)
    smooth = Image.fromarray(coarse, "RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return np.asarray(smooth, dtype=np.float32) + rng.normal(0, NOISE, size=(SIZE, SIZE, 3))


def _foreground_colour(bg_mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Draw until the shape contrasts with its background (bounded, so always deterministic).
    colour = rng.uniform(0, 255, size=3)
    for _ in range(8):
        if np.linalg.norm(colour - bg_mean) > CONTRAST:
            break
        colour = rng.uniform(0, 255, size=3)
    return colour


def render(split: str, index: int, label: int) -> Image.Image:
    """The image of ``(split, index)`` with class ``label``: pure function of its arguments."""
    from PIL import Image

    rng = np.random.default_rng((_BASE_SEED, _SPLIT_CODES[split], index))
    bg = _background(rng)
    mask = _mask(label, rng)
    colour = _foreground_colour(bg.mean(axis=(0, 1)), rng)
    fg = colour + rng.normal(0, NOISE, size=(SIZE, SIZE, 3))
    pixels = bg * (1 - mask) + fg * mask
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")


@lru_cache(maxsize=8)
def _split_samples(split: str, per_class: int) -> tuple[tuple[Image.Image, int], ...]:
    # Cached per process: every run in a sweep worker reuses the same drawn images.
    n = len(CLASS_NAMES)
    return tuple((render(split, i, i % n), i % n) for i in range(per_class * n))


class Shapes(Dataset):
    name = "shapes"
    description = (
        "Embedded default: 12 procedurally drawn shapes (circle, star, heart, ...) on noisy "
        "backgrounds, RGB 32x32, 60 train + 20 test per class; needs no files."
    )
    version = "1"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(self, train_per_class: int = 60, test_per_class: int = 20) -> None:
        if train_per_class < 1 or test_per_class < 1:
            raise UserError(
                "shapes: train_per_class and test_per_class must be >= 1, got "
                f"{train_per_class} and {test_per_class}"
            )
        self.per_class = {"train": train_per_class, "test": test_per_class}

    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def load(self, split: str) -> Split:
        if split not in self.per_class:
            raise UserError(f"shapes has no split {split!r}; splits: train, test")
        return Split(list(_split_samples(split, self.per_class[split])), self.class_names())
