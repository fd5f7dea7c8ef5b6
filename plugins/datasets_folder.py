"""``imagefolder``: a user's own images, read with torchvision's ``ImageFolder``.

Two layouts: ``path/train/<class>/*`` + ``path/test/<class>/*`` (and optionally
``path/val/<class>/*``), or a flat ``path/<class>/*`` that is split into train / test by a
seeded, stratified ``test_fraction``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sgid_bench.api import Dataset, Split
from sgid_bench.errors import UserError
from sgid_bench_plugins.datasets_common import Samples, clean_class_name, stratified_split

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

    def _read(self, directory: Path, every_class: bool) -> Samples:
        """Every image under ``directory/<class>/``, labelled by the train split's classes;
        with ``every_class``, a class folder without images is an error."""
        from torchvision.datasets import ImageFolder

        found = _class_dirs(directory)
        if not found:
            raise UserError(f"imagefolder: no class folders in {directory}; {LAYOUT}")
        extra = sorted(set(found) - set(self._folders))
        if extra:
            raise UserError(f"imagefolder: {directory} has class folders missing from "
                            f"{self._train_dir}: {', '.join(extra)}")
        folder = ImageFolder(str(directory), allow_empty=True)
        index = {name: i for i, name in enumerate(self._folders)}
        # ImageFolder also reads hidden folders (.ipynb_checkpoints): their files are skipped.
        targets = [index.get(folder.classes[t], -1) for t in folder.targets]
        kept = [i for i, t in enumerate(targets) if t >= 0]
        if not kept:
            raise UserError(f"imagefolder: no images found in {directory}; {LAYOUT}")
        present = {targets[i] for i in kept}
        empty = [f for i, f in enumerate(self._folders) if i not in present]
        if every_class and empty:
            raise UserError(f"imagefolder: class folder(s) without images in {directory}: "
                            f"{', '.join(empty)}")
        return Samples(folder, targets, kept)

    @cached_property
    def _flat_split(self) -> dict[str, Samples]:
        everything = self._read(self.root, every_class=True)
        train, test = stratified_split(everything.targets, self.test_fraction, self.split_seed)
        return {"train": everything.subset(train), "test": everything.subset(test)}

    def load(self, split: str) -> Split:
        if split not in self.splits:
            raise UserError(f"imagefolder has no split {split!r}; splits: {', '.join(self.splits)}")
        if not self.presplit:
            return Split(self._flat_split[split], self.class_names())
        samples = self._read(self.root / split, every_class=split == "train")
        return Split(samples, self.class_names())

    def setup(self, context: Context) -> None:
        # Fail early (before any training) on a folder without classes.
        self.class_names()
