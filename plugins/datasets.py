"""Built-in datasets: the toy world's ``world`` (the default), the embedded ``shapes``,
``imagefolder`` for a user's own images, and the paper's seven on torchvision's loaders.
This module is the entry point (``sgid_bench_plugins.datasets``); the classes live in the
``datasets_*`` modules, none of which imports torch or torchvision at import time."""

from __future__ import annotations

from collections.abc import Callable

import sgid_bench
from sgid_bench_plugins.datasets_folder import ImageFolderDataset
from sgid_bench_plugins.datasets_shapes import Shapes
from sgid_bench_plugins.datasets_torchvision import (
    CIFAR10,
    CIFAR100,
    DTD,
    PAPER_DATASETS,
    Caltech101,
    Flowers102,
    OxfordPets,
    StanfordCars,
)
from sgid_bench_plugins.datasets_world import World

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "DTD",
    "Caltech101",
    "Flowers102",
    "ImageFolderDataset",
    "OxfordPets",
    "Shapes",
    "StanfordCars",
    "World",
    "register_datasets",
]


@sgid_bench.hookimpl
def register_datasets(register: Callable[[type[sgid_bench.Dataset]], None]) -> None:
    for cls in (World, Shapes, ImageFolderDataset, *PAPER_DATASETS):
        register(cls)
