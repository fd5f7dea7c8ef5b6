"""The paper's seven datasets on torchvision's loaders (never downloading).

Each dataset lives in ``<data root>/<name>`` (the directory handed to torchvision) unless
``--param root=DIR`` says otherwise. Missing files raise a one-line UserError naming the
expected layout and the torchvision call that fetches them on a connected machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sgid_bench.api import Dataset, Split
from sgid_bench.errors import UserError
from sgid_bench_plugins.datasets_common import Samples, clean_class_name, per_class_split
from sgid_bench_plugins.datasets_names import CALTECH101, FLOWERS102

if TYPE_CHECKING:
    from sgid_bench.context import Context


def targets_of(ds: Any) -> list[int]:
    """Labels of a torchvision dataset without decoding images (each class keeps them
    under its own attribute); falls back to reading every sample."""
    for attr in ("targets", "_labels", "y"):
        if isinstance(getattr(ds, attr, None), list):
            return [int(t) for t in getattr(ds, attr)]
    if isinstance(getattr(ds, "_samples", None), list):  # StanfordCars: (path, label)
        return [int(t) for _, t in ds._samples]
    return [int(ds[i][1]) for i in range(len(ds))]


class TorchvisionDataset(Dataset):
    """Base of the torchvision-backed datasets; subclasses set the class attributes."""

    #: Attribute of ``torchvision.datasets``.
    torchvision_class: ClassVar[str] = ""
    #: Our split -> keyword arguments of the torchvision class.
    split_kwargs: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Paths relative to the root that must exist (checked before torchvision runs, so a
    #: missing dataset never leaves empty folders behind).
    expected: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: str = "") -> None:
        self.root_param = root
        self._root: Path | None = None
        # Opened torchvision datasets per split: class_names() and load("train") share one
        # (CIFAR decodes all its batches into memory when opened).
        self._opened: dict[str, Any] = {}

    def setup(self, context: Context) -> None:
        assert context.data_root is not None  # Context.__post_init__ always sets it
        self._root = (Path(self.root_param).expanduser() if self.root_param
                      else context.data_root / self.name)
        self._opened.clear()

    @property
    def root(self) -> Path:
        """The directory handed to torchvision."""
        if self._root is None:
            from sgid_bench.context import Context

            self.setup(Context())
        assert self._root is not None
        return self._root

    def download_hint(self) -> str:
        call = f"torchvision.datasets.{self.torchvision_class}('{self.root}', download=True)"
        return (f'on a connected machine run: python -c "import torchvision; {call}", copy that '
                f"folder to {self.root} here, or point --data-root (the folder holding "
                f"{self.name}/) or --param root= at an existing copy")

    def layout(self) -> str:
        """The expected files, briefly (for error messages)."""
        return ", ".join(self.expected)

    def check_files(self) -> None:
        missing = [p for p in self.expected if not (self.root / p).exists()]
        if missing:
            raise UserError(f"dataset {self.name}: {self.root / missing[0]} not found (expected "
                            f"under {self.root}: {self.layout()}); {self.download_hint()}")

    def _open(self, split: str) -> Any:
        if split not in self.splits:
            raise UserError(f"{self.name} has no split {split!r}; splits: {', '.join(self.splits)}")
        if split not in self._opened:
            self._opened[split] = self._construct(split)
        return self._opened[split]

    def _construct(self, split: str) -> Any:
        self.check_files()
        import torchvision

        cls = getattr(torchvision.datasets, self.torchvision_class)
        try:
            return cls(str(self.root), download=False, **self.split_kwargs[split])
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            # Files present but unreadable: usually a partial copy or a failed checksum.
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise UserError(f"dataset {self.name}: files under {self.root} are incomplete or "
                            f"corrupted ({reason}); {self.download_hint()}") from None

    def raw_class_names(self) -> list[str]:
        return list(self._open("train").classes)

    def clean(self, raw: str) -> str:
        return clean_class_name(raw)

    @cached_property
    def _class_names(self) -> list[str]:
        return [self.clean(n) for n in self.raw_class_names()]

    def class_names(self) -> list[str]:
        return list(self._class_names)

    def load(self, split: str) -> Split:
        ds = self._open(split)
        return Split(Samples(ds, targets_of(ds)), self.class_names())


def _cifar_files(folder: str, names: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"{folder}/{n}" for n in names)


class CIFAR10(TorchvisionDataset):
    name = "cifar10"
    description = "CIFAR-10 (torchvision): 10 classes, 50,000 train / 10,000 test, 32x32."
    torchvision_class = "CIFAR10"
    split_kwargs: ClassVar[dict[str, dict[str, Any]]] = {
        "train": {"train": True}, "test": {"train": False}}
    expected = _cifar_files("cifar-10-batches-py", [
        "batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch"])

    def layout(self) -> str:
        return "cifar-10-batches-py/{batches.meta,data_batch_1..5,test_batch}"


class CIFAR100(TorchvisionDataset):
    name = "cifar100"
    description = "CIFAR-100 (torchvision): 100 classes, 50,000 train / 10,000 test, 32x32."
    torchvision_class = "CIFAR100"
    split_kwargs = CIFAR10.split_kwargs
    expected = _cifar_files("cifar-100-python", ["meta", "train", "test"])

    def layout(self) -> str:
        return "cifar-100-python/{meta,train,test}"


class Caltech101(TorchvisionDataset):
    name = "caltech101"
    description = (
        "Caltech101 (torchvision): 101 object classes; no official split, so a seeded "
        "train_per_class (30) images per class train, the rest test."
    )
    torchvision_class = "Caltech101"
    split_kwargs: ClassVar[dict[str, dict[str, Any]]] = {"train": {}, "test": {}}
    expected = ("caltech101/101_ObjectCategories",)

    def __init__(self, root: str = "", train_per_class: int = 30, split_seed: int = 0) -> None:
        super().__init__(root)
        if train_per_class < 1:
            raise UserError(f"caltech101: train_per_class must be >= 1, got {train_per_class}")
        self.train_per_class, self.split_seed = train_per_class, split_seed

    def raw_class_names(self) -> list[str]:
        return list(self._open("train").categories)

    def clean(self, raw: str) -> str:
        return CALTECH101.get(raw, clean_class_name(raw))

    def load(self, split: str) -> Split:
        if split not in self.splits:
            raise UserError(f"caltech101 has no split {split!r}; splits: train, test")
        ds = self._open("train")  # the whole dataset, opened once: the split is ours
        everything = Samples(ds, targets_of(ds))
        train, test = per_class_split(everything.targets, self.train_per_class, self.split_seed)
        return Split(everything.subset(train if split == "train" else test), self.class_names())


class StanfordCars(TorchvisionDataset):
    name = "stanford_cars"
    description = "Stanford Cars (torchvision): 196 car models, 8,144 train / 8,041 test."
    torchvision_class = "StanfordCars"
    split_kwargs: ClassVar[dict[str, dict[str, Any]]] = {
        "train": {"split": "train"}, "test": {"split": "test"}}
    expected = ("stanford_cars/devkit/cars_meta.mat", "stanford_cars/devkit/cars_train_annos.mat",
                "stanford_cars/cars_train", "stanford_cars/cars_test",
                "stanford_cars/cars_test_annos_withlabels.mat")

    def download_hint(self) -> str:
        # torchvision cannot download it: the original URL is gone.
        return ("torchvision cannot download Stanford Cars (its URL is gone): follow "
                "https://github.com/pytorch/vision/issues/7545 (images from Kaggle "
                "'jessicali9530/stanford-cars-dataset', car_devkit.tgz and "
                "cars_test_annos_withlabels.mat linked there), lay them out as "
                f"{self.root}/stanford_cars/{{cars_train/,cars_test/,devkit/,"
                "cars_test_annos_withlabels.mat}, or point --data-root or --param root= at a copy")


class Flowers102(TorchvisionDataset):
    name = "flowers102"
    description = "Oxford Flowers-102 (torchvision): 102 flowers, official 1,020 / 1,020 / 6,149."
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    torchvision_class = "Flowers102"
    split_kwargs: ClassVar[dict[str, dict[str, Any]]] = {
        s: {"split": s} for s in ("train", "val", "test")}
    expected = ("flowers-102/jpg", "flowers-102/imagelabels.mat", "flowers-102/setid.mat")

    def raw_class_names(self) -> list[str]:
        # torchvision ships no names for Flowers102; the files hold only label numbers.
        return list(FLOWERS102)


class OxfordPets(TorchvisionDataset):
    name = "oxford_pets"
    description = "Oxford-IIIT Pets (torchvision): 37 breeds, trainval 3,680 / test 3,669."
    torchvision_class = "OxfordIIITPet"
    split_kwargs: ClassVar[dict[str, dict[str, Any]]] = {
        "train": {"split": "trainval"}, "test": {"split": "test"}}
    expected = ("oxford-iiit-pet/images", "oxford-iiit-pet/annotations/trainval.txt",
                "oxford-iiit-pet/annotations/test.txt")

    def clean(self, raw: str) -> str:
        # torchvision title-cases every breed ("Shiba Inu"); prompts read "shiba inu".
        return clean_class_name(raw).lower()


class DTD(TorchvisionDataset):
    name = "dtd"
    description = "Describable Textures (torchvision): 47 textures, official train/val/test."
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    torchvision_class = "DTD"

    def __init__(self, root: str = "", partition: int = 1) -> None:
        super().__init__(root)
        if not 1 <= partition <= 10:
            raise UserError(f"dtd: partition must be 1..10 (the official splits), got {partition}")
        self.partition = partition
        self.split_kwargs = {  # type: ignore[misc]  # per instance: depends on partition
            s: {"split": s, "partition": partition} for s in self.splits}
        self.expected = ("dtd/dtd/images",  # type: ignore[misc]
                         *(f"dtd/dtd/labels/{s}{partition}.txt" for s in self.splits))


PAPER_DATASETS: tuple[type[TorchvisionDataset], ...] = (
    CIFAR10, CIFAR100, Caltech101, StanfordCars, Flowers102, OxfordPets, DTD)
