"""``imagefolder``: a user's own images, read with torchvision's ``ImageFolder``.

Two layouts: ``path/train/<class>/*`` + ``path/test/<class>/*`` (and optionally
``path/val/<class>/*``), or a flat ``path/<class>/*`` that is split into train / test by a
seeded, stratified ``test_fraction``.
"""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sgid_bench.api import Dataset, Split
from sgid_bench.errors import UserError
from sgid_bench_plugins.datasets_common import (
    ImageFiles,
    Samples,
    Scan,
    clean_class_name,
    duplicate_content,
    scan_images,
    stratified_split,
)

if TYPE_CHECKING:
    from sgid_bench.context import Context

LAYOUT = ("expected PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg (optional PATH/val/), "
          "or PATH/<class>/*.jpg split by --param test_fraction")


def _class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolderDataset(Dataset):
    name = "imagefolder"
    description = (
        "Your own images: --dataset imagefolder:/path with path/train/<class>/ and "
        "path/test/<class>/ (optional val/), or path/<class>/ split by test_fraction."
    )
    version = "1"

    def __init__(self, path: str = "", test_fraction: float = 0.2, split_seed: int = 0) -> None:
        if not path:
            raise UserError("dataset imagefolder needs a path: "
                            "--dataset imagefolder:/path/to/images")
        root = Path(path).expanduser()
        if not root.is_dir():
            raise UserError(f"imagefolder: {root} is not a directory; {LAYOUT}")
        if not 0 < test_fraction < 1:
            raise UserError(f"imagefolder: test_fraction must be in (0, 1), got {test_fraction}")
        self.root, self.test_fraction, self.split_seed = root, test_fraction, split_seed
        self.presplit = (root / "train").is_dir() or (root / "test").is_dir()
        if self.presplit and not ((root / "train").is_dir() and (root / "test").is_dir()):
            raise UserError(f"imagefolder: {root} needs both train/ and test/ folders; {LAYOUT}")
        # The splits depend on the folder, so this instance shadows the class attribute.
        has_val = self.presplit and (root / "val").is_dir()
        self.splits = ("train", "val", "test") if has_val else ("train", "test")  # type: ignore[misc]

    @cached_property
    def _train_dir(self) -> Path:
        return self.root / "train" if self.presplit else self.root

    @cached_property
    def _folders(self) -> list[str]:
        folders = _class_dirs(self._train_dir)
        if not folders:
            raise UserError(f"imagefolder: no class folders in {self._train_dir}; {LAYOUT}")
        return folders

    def class_names(self) -> list[str]:
        return [clean_class_name(f) for f in self._folders]

    def _scan(self, directory: Path) -> tuple[list[Path], list[int]]:
        """Files and labels of ``directory/<class>/`` (each file once, regular files only),
        labelled by the train split's classes."""
        found = _class_dirs(directory)
        if not found:
            raise UserError(f"imagefolder: no class folders in {directory}; {LAYOUT}")
        extra = sorted(set(found) - set(self._folders))
        if extra:
            raise UserError(f"imagefolder: {directory} has class folders missing from "
                            f"{self._train_dir}: {', '.join(extra)}")
        paths: list[Path] = []
        targets: list[int] = []
        claimed: set[Path] = set()
        for label, folder in enumerate(self._folders):
            if folder not in found:
                continue
            fences = [directory / f for f in found if f != folder]
            scan = scan_images(directory / folder, fences)
            _report(directory / folder, scan)
            # One file under two class folders (a link) would carry two labels: first wins.
            kept = [p for p in scan.paths if p not in claimed]
            if len(kept) < len(scan.paths):
                _warn(f"{len(scan.paths) - len(kept)} file(s) in {directory / folder} are "
                      "also in another class folder (links): kept in the first class only")
            claimed.update(kept)
            paths += kept
            targets += [label] * len(kept)
        return paths, targets

    def _samples(self, directory: Path, paths: list[Path], targets: list[int],
                 every_class: bool) -> Samples:
        if not paths:
            raise UserError(f"imagefolder: no images found in {directory}; {LAYOUT}")
        empty = [f for i, f in enumerate(self._folders) if i not in set(targets)]
        if every_class and empty:
            raise UserError(f"imagefolder: class folder(s) without images in {directory}: "
                            f"{', '.join(empty)}")
        return Samples(ImageFiles(paths, targets), targets)

    @cached_property
    def _presplit(self) -> dict[str, tuple[list[Path], list[int]]]:
        """Every split's files, each file in one split only: a file reached from two
        splits (a link) stays in the later of test, val, train, so the test set is as laid
        out and never leaks into training."""
        out: dict[str, tuple[list[Path], list[int]]] = {}
        claimed: set[Path] = set()
        for split in reversed(self.splits):  # test, (val,) train
            paths, targets = self._scan(self.root / split)
            keep = [i for i, p in enumerate(paths) if p not in claimed]
            if len(keep) < len(paths):
                _warn(f"{len(paths) - len(keep)} file(s) of {self.root / split} are also in "
                      f"a later split (links): left out of {split}")
            out[split] = ([paths[i] for i in keep], [targets[i] for i in keep])
            claimed.update(out[split][0])
        _warn_duplicate_content({s: p for s, (p, _) in out.items()})
        return out

    @cached_property
    def _flat_split(self) -> dict[str, Samples]:
        paths, targets = self._scan(self.root)
        everything = self._samples(self.root, paths, targets, every_class=True)
        train, test = stratified_split(everything.targets, self.test_fraction, self.split_seed)
        _warn_duplicate_content({"train": [paths[i] for i in train],
                                 "test": [paths[i] for i in test]})
        return {"train": everything.subset(train), "test": everything.subset(test)}

    def load(self, split: str) -> Split:
        if split not in self.splits:
            raise UserError(f"imagefolder has no split {split!r}; splits: {', '.join(self.splits)}")
        if not self.presplit:
            return Split(self._flat_split[split], self.class_names())
        paths, targets = self._presplit[split]
        samples = self._samples(self.root / split, paths, targets, every_class=split == "train")
        return Split(samples, self.class_names())

    def setup(self, context: Context) -> None:
        # Fail early (before any training) on a folder without classes.
        self.class_names()


def _warn(message: str) -> None:
    print(f"sgid-bench: warning: imagefolder: {message}", file=sys.stderr)


def _report(folder: Path, scan: Scan) -> None:
    """Say what a scan skipped: link loops, repeated files, files that are not regular."""
    if scan.loops:
        _warn(f"{folder}: directory link(s) leading back into the folder not followed: "
              f"{', '.join(str(p) for p in scan.loops[:3])}")
    if scan.repeated:
        _warn(f"{folder}: {scan.repeated} file(s) reached through more than one path "
              "(links) counted once")
    if scan.not_regular:
        _warn(f"{folder}: skipped {len(scan.not_regular)} entries that are not regular files "
              f"(FIFOs, sockets, devices): {', '.join(str(p) for p in scan.not_regular[:3])}")


def _warn_duplicate_content(splits: dict[str, list[Path]]) -> None:
    pairs = duplicate_content(splits)
    if pairs:
        a, b, pa, pb = pairs[0]
        _warn(f"{len(pairs)} image(s) have identical bytes in two splits (e.g. {pa} in {a} "
              f"and {pb} in {b}): test accuracy on them measures memory, not "
              "generalisation; remove the copies")
