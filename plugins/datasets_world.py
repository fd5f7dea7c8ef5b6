"""``world``: the target dataset of the toy world (:mod:`sgid_bench.world.scene`).

The paper's regime in miniature: 12 object classes, few training images per class, all
drawn on two contexts (a plain or a striped background), while the test images come from
all six contexts (also grass, sky, dots, checks). A classifier that never saw the other
contexts must generalise to them; augmentation that adds contexts (generated images) or
invariance (perturbations) can help, and its absence hurts. A validation split from the
training distribution selects models and settings, never the test split.

Needs no files: every image is rendered from a fixed seed, the same pixels everywhere.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

from sgid_bench.api import Dataset, Split
from sgid_bench.errors import UserError

if TYPE_CHECKING:
    from PIL import Image


@lru_cache(maxsize=8)
def _samples(split: str, per_class: int) -> tuple[tuple[Image.Image, int], ...]:
    # Cached per process: every run in a sweep worker reuses the same rendered images.
    from sgid_bench.world import scene

    return tuple((scene.render(s), s.label) for s in scene.target_scenes(split, per_class))


class World(Dataset):
    name = "world"
    description = (
        "Toy world target (the default): 12 shapes, RGB 32x32, few train images per class on "
        "2 contexts, test on all 6 contexts (distribution shift); needs no files."
    )
    version = "1"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def __init__(self, train_per_class: int = 10, val_per_class: int = 5,
                 test_per_class: int = 30) -> None:
        counts = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
        bad = {k: v for k, v in counts.items() if v < 1}
        if bad:
            raise UserError("world: " + ", ".join(f"{k}_per_class={v}" for k, v in bad.items())
                            + " must be >= 1")
        self.per_class = counts

    def class_names(self) -> list[str]:
        from sgid_bench.world.scene import SHAPES

        return list(SHAPES)

    def load(self, split: str) -> Split:
        if split not in self.per_class:
            raise UserError(f"world has no split {split!r}; splits: train, val, test")
        return Split(list(_samples(split, self.per_class[split])), self.class_names())
