"""Helpers shared by the file-backed datasets: a lazy sample view with labels known up
front, a seeded stratified split, and class-name cleaning."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

Sample = tuple["Image.Image", int]


class Samples(Sequence[Sample]):
    """``(RGB PIL image, label)`` pairs read lazily from an indexable dataset.

    Labels are given up front (``targets``) so that splitting and counting never decode an
    image; only ``samples[i]`` opens a file. ``indices`` selects a subset of ``base``.
    """

    def __init__(self, base: Any, targets: Sequence[int],
                 indices: Sequence[int] | None = None) -> None:
        self.base = base
        self.indices = list(range(len(targets))) if indices is None else list(indices)
        self._all_targets = [int(t) for t in targets]

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order (no image is decoded)."""
        return [self._all_targets[j] for j in self.indices]

    def subset(self, positions: Sequence[int]) -> Samples:
        """A view of some positions of this view (no image is read)."""
        return Samples(self.base, self._all_targets, [self.indices[i] for i in positions])

    def __len__(self) -> int:
        return len(self.indices)

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...
    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        j = self.indices[i]
        image = self.base[j][0]
        # Caltech101 holds grayscale images and user folders may hold RGBA / palette ones.
        if image.mode != "RGB":
            image = image.convert("RGB")
        # Decode now: torchvision's Caltech101 returns a lazily opened file, left open
        # until this image is read; load() reads it and closes the file.
        image.load()
        return image, self._all_targets[j]


def stratified_split(targets: Sequence[int], fraction: float, seed: int
                     ) -> tuple[list[int], list[int]]:
    """Indices ``(keep, held_out)`` holding out ``fraction`` of every class, seeded.

    Each class is shuffled by its own stream (seed, label), so adding a class never moves
    another class's images between the two sides. A class with >= 2 images keeps at least
    one image on each side."""
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    keep: list[int] = []
    held: list[int] = []
    for label, idx in sorted(by_class.items()):
        order = np.random.default_rng((seed, label)).permutation(len(idx))
        n_held = min(max(round(len(idx) * fraction), 1), len(idx) - 1) if len(idx) > 1 else 0
        held += [idx[k] for k in order[:n_held]]
        keep += [idx[k] for k in order[n_held:]]
    return sorted(keep), sorted(held)


def per_class_split(targets: Sequence[int], n_keep: int, seed: int
                    ) -> tuple[list[int], list[int]]:
    """Indices ``(keep, rest)`` keeping ``n_keep`` seeded images of every class (the
    Caltech101 protocol: a fixed number of training images per class, the rest for test).
    A class with fewer images keeps all but one, so it still appears in the test side."""
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    keep: list[int] = []
    rest: list[int] = []
    for label, idx in sorted(by_class.items()):
        order = np.random.default_rng((seed, label)).permutation(len(idx))
        k = min(n_keep, len(idx) - 1) if len(idx) > 1 else len(idx)
        keep += [idx[j] for j in order[:k]]
        rest += [idx[j] for j in order[k:]]
    return sorted(keep), sorted(rest)


_NUMBER_PREFIX = re.compile(r"^\d+\.")


def clean_class_name(folder: str) -> str:
    """A folder name as words for a prompt: ``001.Black_footed_Albatross`` ->
    ``Black footed Albatross``, ``shiba_inu`` -> ``shiba inu``."""
    name = _NUMBER_PREFIX.sub("", folder).replace("_", " ")
    return " ".join(name.split())
