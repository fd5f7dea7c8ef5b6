"""Helpers shared by the file-backed datasets: a lazy sample view with labels known up
front, a seeded stratified split, and class-name cleaning."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


#: Image file suffixes read from folders (torchvision's ``IMG_EXTENSIONS``).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class Scan:
    """Image files found under a folder: resolved paths, and what was skipped."""

    paths: list[Path] = field(default_factory=list)
    not_regular: list[Path] = field(default_factory=list)  # FIFOs, sockets, devices
    repeated: int = 0  # files reached a second time through a link
    loops: list[Path] = field(default_factory=list)  # directory links back into the tree


def scan_images(folder: Path, fences: Iterable[Path] = ()) -> Scan:
    """Every image file under ``folder``, each once, in sorted order (as torchvision's
    ImageFolder lists them).

    Directory links are followed, except one leading to a directory visited before, to
    ``folder`` or one of its parents (a link loop), or to one of ``fences`` (the other class
    folders of a dataset: their images would get this folder's label). Files are
    identified by their resolved path, so a file reached through several links counts
    once. Only regular files are kept: a FIFO named like an image blocks its reader
    forever."""
    top = folder.resolve()
    seen = {_inode(p) for p in (top, *top.parents, *fences) if p.exists()}
    scan, files = Scan(), set[Path]()
    for here, dirs, names in os.walk(top, followlinks=True):
        for name in sorted(names):
            _add_file(Path(here) / name, scan, files)
        kept = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            try:
                node = _inode(Path(here) / d)
            except OSError:  # a dangling link
                continue
            if node in seen:
                scan.loops.append(Path(here) / d)
                continue
            seen.add(node)
            kept.append(d)
        dirs[:] = kept  # os.walk descends only into these
    return scan


def _inode(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _add_file(path: Path, scan: Scan, files: set[Path]) -> None:
    if path.name.startswith(".") or not path.name.lower().endswith(IMAGE_SUFFIXES):
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:  # a dangling link
        return
    if not stat.S_ISREG(mode):
        scan.not_regular.append(path)
        return
    real = path.resolve()
    if real in files:
        scan.repeated += 1
        return
    files.add(real)
    scan.paths.append(real)


def content_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def duplicate_content(splits: dict[str, Sequence[Path]]) -> list[tuple[str, str, Path, Path]]:
    """(split a, split b, file a, file b) for files of different splits with the same
    bytes. Only files whose size occurs in two splits are read."""
    by_size: dict[int, list[tuple[str, Path]]] = {}
    for split, paths in splits.items():
        for path in paths:
            by_size.setdefault(path.stat().st_size, []).append((split, path))
    found: list[tuple[str, str, Path, Path]] = []
    for group in by_size.values():
        if len({split for split, _ in group}) < 2:
            continue
        first: dict[str, tuple[str, Path]] = {}
        for split, path in group:
            digest = content_digest(path)
            if digest in first and first[digest][0] != split:
                found.append((first[digest][0], split, first[digest][1], path))
            first.setdefault(digest, (split, path))
    return found


class ImageFiles:
    """``(PIL image, label)`` by index from a list of file paths, opened on access."""

    def __init__(self, paths: Sequence[Path], targets: Sequence[int]) -> None:
        self.paths, self.targets = list(paths), list(targets)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        from PIL import Image

        return Image.open(self.paths[i]), self.targets[i]


_NUMBER_PREFIX = re.compile(r"^\d+\.")


def clean_class_name(folder: str) -> str:
    """A folder name as words for a prompt: ``001.Black_footed_Albatross`` ->
    ``Black footed Albatross``, ``shiba_inu`` -> ``shiba inu``."""
    name = _NUMBER_PREFIX.sub("", folder).replace("_", " ")
    return " ".join(name.split())
