"""The procedural world: scenes with known attributes, their images and exact captions.

A :class:`Scene` holds every random choice of one image (shape, colour, size, background,
and the continuous geometry: radius, shift, rotation, texture seed), so :func:`render` is
a pure function of it and an edit (:func:`edit`) re-renders the same geometry with one
attribute changed: the edit pairs of the toy InstructPix2Pix come free.

The world has two distributions:

- the **corpus** (:func:`corpus`): every shape in every colour, size and context, with its
  caption: what the toy CLIP, captioner, Stable Diffusion and ViT are trained on (the
  stand-in for LAION / ImageNet-21k);
- the **target dataset** (``world``, :mod:`sgid_bench_plugins.datasets_world`): few images
  per class whose training contexts are a narrow slice of the world (two backgrounds)
  while test images come from every context: the paper's regime, where augmentation that
  adds contexts can help and its absence hurts.

Everything derives from fixed seeds: the same scene is the same pixels on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

#: Image side in pixels; shapes are drawn at SUPERSAMPLE x this and downsampled.
SIZE = 32
SUPERSAMPLE = 4
_CANVAS = SIZE * SUPERSAMPLE

#: Object classes (the labels of the target dataset), in label order.
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon",
          "heart", "crescent", "arrow", "semicircle")
#: Named colours of the objects (RGB).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 75, 215),
    "yellow": (240, 215, 35),
    "purple": (140, 50, 185),
    "orange": (245, 135, 25),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
#: Object sizes: radius range as a fraction of the image side.
SIZES: dict[str, tuple[float, float]] = {"small": (0.22, 0.29), "large": (0.36, 0.44)}
#: Contexts (backgrounds) and how a caption names each.
BACKGROUNDS: dict[str, str] = {
    "plain": "on a plain background",
    "stripes": "on a striped background",
    "dots": "on a dotted background",
    "checks": "on a checkered background",
    "grass": "on the grass",
    "sky": "in the sky",
}
#: Colours that would not stand out against a context; never drawn together.
CLASHES = {("green", "grass"), ("blue", "sky"), ("white", "plain"), ("white", "sky")}
#: Largest rotation in degrees (a rotated square must not become a diamond).
ROTATION = 20.0
#: Largest shift of the centre, as a fraction of the room the shape leaves.
SHIFT = 0.5
NOISE = 5.0


@dataclass(frozen=True)
class Scene:
    """Every choice behind one image. ``radius`` is a fraction of the side, ``dx``/``dy``
    fractions of the room left by the shape, ``seed`` drives the texture and noise."""

    shape: str
    colour: str
    size: str
    background: str
    radius: float
    dx: float
    dy: float
    angle: float
    seed: int

    @property
    def label(self) -> int:
        return SHAPES.index(self.shape)


def caption(scene: Scene) -> str:
    """The exact caption of a scene, e.g. ``"a small red star on a striped background"``."""
    return f"a {scene.size} {scene.colour} {scene.shape} {BACKGROUNDS[scene.background]}"


def label_sentence(shape: str) -> str:
    """The paper's label sentence for a class."""
    return f"A picture of a {shape}"


def sample_scene(rng: np.random.Generator, *, shape: str | None = None,
                 backgrounds: Sequence[str] | None = None,
                 colours: Sequence[str] | None = None) -> Scene:
    """A random scene; ``shape`` / ``backgrounds`` / ``colours`` restrict the draw."""
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    bgs = list(backgrounds or BACKGROUNDS)
    background = bgs[int(rng.integers(len(bgs)))]
    allowed = [c for c in (colours or COLOURS) if (c, background) not in CLASHES]
    colour = allowed[int(rng.integers(len(allowed)))]
    size = ("small", "large")[int(rng.integers(2))]
    radius = float(rng.uniform(*SIZES[size]))
    dx, dy = (float(v) for v in rng.uniform(-1, 1, size=2))
    angle = float(rng.uniform(-ROTATION, ROTATION))
    return Scene(shape, colour, size, background, radius, dx, dy, angle,
                 int(rng.integers(2**31)))


def _regular(n: int, r: float, phase_deg: float, c: float) -> list[tuple[float, float]]:
    angles = [math.radians(phase_deg) + 2 * math.pi * k / n for k in range(n)]
    return [(c + r * math.cos(a), c + r * math.sin(a)) for a in angles]


def _paint(draw: object, shape: str, r: float, c: float) -> None:
    """Paint ``shape`` of radius ``r`` centred at ``(c, c)`` as 255 on a 0 mask."""
    d = draw  # PIL.ImageDraw.ImageDraw
    if shape == "circle":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)  # type: ignore[attr-defined]
    elif shape in ("square", "triangle", "hexagon"):
        n, phase = {"square": (4, 45), "triangle": (3, -90), "hexagon": (6, 0)}[shape]
        d.polygon(_regular(n, r, phase, c), fill=255)  # type: ignore[attr-defined]
    elif shape == "star":
        pts = [(c + (r if k % 2 == 0 else 0.42 * r) * math.cos(-math.pi / 2 + math.pi * k / 5),
                c + (r if k % 2 == 0 else 0.42 * r) * math.sin(-math.pi / 2 + math.pi * k / 5))
               for k in range(10)]
        d.polygon(pts, fill=255)  # type: ignore[attr-defined]
    elif shape == "cross":
        w = 0.3 * r
        d.rectangle([c - r, c - w, c + r, c + w], fill=255)  # type: ignore[attr-defined]
        d.rectangle([c - w, c - r, c + w, c + r], fill=255)  # type: ignore[attr-defined]
    elif shape == "ring":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)  # type: ignore[attr-defined]
        i = 0.55 * r
        d.ellipse([c - i, c - i, c + i, c + i], fill=0)  # type: ignore[attr-defined]
    elif shape == "diamond":
        # A narrow rhombus, so that it stays distinct from a rotated square.
        d.polygon([(c, c - r), (c + 0.55 * r, c), (c, c + r),  # type: ignore[attr-defined]
                   (c - 0.55 * r, c)], fill=255)
    elif shape == "heart":
        lobe = 0.5 * r
        for sx in (-1, 1):
            x, y = c + sx * 0.45 * r, c - 0.3 * r
            d.ellipse([x - lobe, y - lobe, x + lobe, y + lobe], fill=255)  # type: ignore[attr-defined]
        d.polygon([(c - 0.93 * r, c - 0.15 * r), (c + 0.93 * r, c - 0.15 * r),  # type: ignore[attr-defined]
                   (c, c + r)], fill=255)
    elif shape == "crescent":
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)  # type: ignore[attr-defined]
        cut, x, y = 0.85 * r, c + 0.5 * r, c - 0.1 * r
        d.ellipse([x - cut, y - cut, x + cut, y + cut], fill=0)  # type: ignore[attr-defined]
    elif shape == "arrow":
        d.rectangle([c - r, c - 0.2 * r, c + 0.1 * r, c + 0.2 * r], fill=255)  # type: ignore[attr-defined]
        d.polygon([(c + r, c), (c + 0.1 * r, c - 0.65 * r),  # type: ignore[attr-defined]
                   (c + 0.1 * r, c + 0.65 * r)], fill=255)
    elif shape == "semicircle":
        d.pieslice([c - r, c - r * 0.6, c + r, c + r * 1.4], 180, 360, fill=255)  # type: ignore[attr-defined]
    else:
        raise ValueError(f"unknown shape {shape!r}")


def mask(scene: Scene) -> np.ndarray:
    """The object's coverage in [0, 1], SIZE x SIZE x 1."""
    from PIL import Image, ImageDraw

    c = _CANVAS / 2
    r = scene.radius * _CANVAS
    img = Image.new("L", (_CANVAS, _CANVAS), 0)
    _paint(ImageDraw.Draw(img), scene.shape, r, c)
    reach = SHIFT * max(c - r, 0.0)
    img = img.rotate(scene.angle, resample=Image.Resampling.BILINEAR, center=(c, c),
                     translate=(round(scene.dx * reach), round(scene.dy * reach)))
    img = img.resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32)[..., None] / 255.0


def _tones(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Two muted tones of one pattern, far enough apart to see the pattern.
    a = rng.uniform(120, 210, size=3)
    b = a - rng.uniform(45, 80) - rng.uniform(-15, 15, size=3)
    return a, np.clip(b, 0, 255)


def background(kind: str, rng: np.random.Generator) -> np.ndarray:
    """The context's pixels, float SIZE x SIZE x 3 in 0..255."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    if kind == "plain":
        out = np.broadcast_to(rng.uniform(150, 215, size=3), (SIZE, SIZE, 3)).copy()
    elif kind in ("stripes", "dots", "checks"):
        a, b = _tones(rng)
        phase = int(rng.integers(8))
        if kind == "stripes":
            on = ((yy + phase) // 4) % 2 == 0
        elif kind == "checks":
            on = (((yy + phase) // 6) + ((xx + phase) // 6)) % 2 == 0
        else:
            on = (((yy + phase) % 6 - 2.5) ** 2 + ((xx + phase) % 6 - 2.5) ** 2) > 3.0
        out = np.where(on[..., None], a, b)
    elif kind == "grass":
        base = np.array([70.0, 140.0, 50.0]) + rng.uniform(-15, 15, size=3)
        blades = rng.normal(0, 22, size=(1, SIZE, 1)) + rng.normal(0, 10, size=(SIZE, SIZE, 1))
        out = base + blades * np.array([0.6, 1.0, 0.5])
    elif kind == "sky":
        top = np.array([90.0, 150.0, 230.0]) + rng.uniform(-15, 15, size=3)
        bottom = np.array([195.0, 220.0, 250.0])
        t = (yy / (SIZE - 1))[..., None]
        out = top * (1 - t) + bottom * t
    else:
        raise ValueError(f"unknown background {kind!r}")
    return out + rng.normal(0, NOISE, size=(SIZE, SIZE, 3))


def render(scene: Scene) -> Image.Image:
    """The image of a scene: a pure function of it."""
    from PIL import Image

    rng = np.random.default_rng(scene.seed)
    bg = background(scene.background, rng)
    m = mask(scene)
    fg = np.array(COLOURS[scene.colour], dtype=np.float32) + rng.normal(0, NOISE, (SIZE, SIZE, 3))
    # A thin dark rim keeps every object readable on every context.
    rim = np.clip(m * (1 - m) * 4, 0, 1) * 0.5
    pixels = (bg * (1 - m) + fg * m) * (1 - rim) + 30.0 * rim
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")


# -- edits (InstructPix2Pix pairs) -----------------------------------------------------------

#: Instruction templates per edited attribute.
EDIT_TEMPLATES = {
    "colour": "make it {value}",
    "background": "put it {phrase}",
    "size": "make it {value}",
}


def edit(scene: Scene, rng: np.random.Generator) -> tuple[str, Scene]:
    """A random one-attribute edit of ``scene``: ``(instruction, edited scene)``, same
    geometry and texture seed, so only the named attribute changes."""
    kind = ("colour", "background", "size")[int(rng.integers(3))]
    if kind == "colour":
        options = [c for c in COLOURS if c != scene.colour and (c, scene.background) not in CLASHES]
        value = options[int(rng.integers(len(options)))]
        return f"make it {value}", replace(scene, colour=value)
    if kind == "background":
        options = [b for b in BACKGROUNDS
                   if b != scene.background and (scene.colour, b) not in CLASHES]
        value = options[int(rng.integers(len(options)))]
        return f"put it {BACKGROUNDS[value]}", replace(scene, background=value)
    value = "large" if scene.size == "small" else "small"
    lo, hi = SIZES[scene.size]
    frac = (scene.radius - lo) / (hi - lo)
    nlo, nhi = SIZES[value]
    word = "bigger" if value == "large" else "smaller"
    return f"make it {word}", replace(scene, size=value, radius=nlo + frac * (nhi - nlo))


def diversifying_edits(shape: str) -> list[str]:
    """ALIA-style per-class edits of the world: a change of context or colour that keeps
    the class (what SGID+InstructPix2Pix asks for)."""
    del shape  # every class can go to every context in this world
    return [f"put it {phrase}" for phrase in BACKGROUNDS.values()]


# -- the two distributions -------------------------------------------------------------------

#: Seeds of the corpus and of each split of the target dataset: disjoint streams.
CORPUS_SEED = 7
TARGET_SEEDS = {"train": 11, "val": 12, "test": 13}
#: The target dataset's training contexts: a narrow slice of the world.
TARGET_TRAIN_BACKGROUNDS = ("plain", "stripes")


def corpus_scenes(n: int, seed: int = CORPUS_SEED) -> list[Scene]:
    """``n`` scenes drawn uniformly over every attribute."""
    rng = np.random.default_rng((seed, 0))
    return [sample_scene(rng) for _ in range(n)]


def target_scenes(split: str, per_class: int) -> list[Scene]:
    """Scenes of the target dataset: ``per_class`` per shape, label order interleaved.

    train and val come from the narrow training contexts, test from every context."""
    rng = np.random.default_rng((TARGET_SEEDS[split], 1))
    bgs = TARGET_TRAIN_BACKGROUNDS if split in ("train", "val") else None
    return [sample_scene(rng, shape=SHAPES[i % len(SHAPES)], backgrounds=bgs)
            for i in range(per_class * len(SHAPES))]


def vocabulary() -> list[str]:
    """Every word the world's captions, prompts and instructions use."""
    words: dict[str, None] = {}
    texts = [caption(Scene(s, c, z, b, 0.3, 0, 0, 0, 0))
             for s in SHAPES for c in COLOURS for z in SIZES for b in BACKGROUNDS]
    texts += [label_sentence(s) for s in SHAPES]
    texts += ["make it bigger", "make it smaller", "put it", "turn it into", "a photo of the"]
    for t in texts:
        for w in t.lower().replace(",", " , ").split():
            words.setdefault(w, None)
    return list(words)
