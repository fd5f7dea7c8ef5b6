"""Writers of tiny datasets in torchvision's on-disk formats (never downloaded).

Each ``make_*`` takes the directory handed to torchvision (``<data root>/<name>``), writes
a few 8x8 images per class and split, and returns ``{split: number of images}`` so tests
compare a loader's output with what was written.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 8


def write_image(path: Path, seed: int, mode: str = "RGB") -> None:
    """A random ``SIZE`` x ``SIZE`` image (JPEG or PNG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").convert(mode).save(path)


def skip_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR and Flowers102 verify the md5 of the real files; fixtures can only match the
    format, so those checks become existence checks for the test."""
    import torchvision.datasets.cifar
    import torchvision.datasets.flowers102

    def exists(fpath: str, md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    for module in (torchvision.datasets.cifar, torchvision.datasets.flowers102):
        monkeypatch.setattr(module, "check_integrity", exists)


def make_image_tree(root: Path, classes: Sequence[str], per_class: int, seed: int = 0) -> int:
    """``root/<class>/<i>.jpg``; returns the number of images written."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{i}.jpg", seed=seed * 1000 + c * 100 + i)
    return len(classes) * per_class


def _cifar_batch(path: Path, n: int, n_classes: int, label_key: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {
        "data": rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8),
        label_key: [i % n_classes for i in range(n)],
    }
    path.write_bytes(pickle.dumps(batch))


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def make_cifar10(root: Path, per_batch: int = 2, n_test: int = 3) -> dict[str, int]:
    """The five train batches, the test batch and ``batches.meta`` as Python pickles."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR10_NAMES}))
    for i in range(1, 6):
        _cifar_batch(folder / f"data_batch_{i}", per_batch, 10, "labels", seed=i)
    _cifar_batch(folder / "test_batch", n_test, 10, "labels", seed=9)
    return {"train": 5 * per_batch, "test": n_test}


def make_cifar100(root: Path, names: Sequence[str], n_train: int = 6,
                  n_test: int = 3) -> dict[str, int]:
    """``train``, ``test`` and ``meta`` pickles (fine labels) for the given class names."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": list(names)}))
    _cifar_batch(folder / "train", n_train, len(names), "fine_labels", seed=1)
    _cifar_batch(folder / "test", n_test, len(names), "fine_labels", seed=2)
    return {"train": n_train, "test": n_test}


def make_caltech101(root: Path, categories: Sequence[str], per_class: int = 3) -> int:
    """``caltech101/101_ObjectCategories/<category>/image_0001.jpg``, with the
    BACKGROUND_Google folder torchvision drops; every other image is grayscale, as in the
    real dataset. Returns the number of images of the real categories."""
    base = root / "caltech101" / "101_ObjectCategories"
    for c, name in enumerate(["BACKGROUND_Google", *categories]):
        for i in range(1, per_class + 1):
            write_image(base / name / f"image_{i:04d}.jpg", seed=c * 100 + i,
                        mode="L" if i % 2 else "RGB")
    return len(categories) * per_class


def make_flowers102(root: Path, labels: Sequence[int], per_split: int = 2) -> dict[str, int]:
    """``flowers-102/jpg/image_00001.jpg``, ``imagelabels.mat`` (1-based labels) and
    ``setid.mat`` (trnid / valid / tstid) for ``per_split`` images of each label."""
    from scipy.io import savemat

    base = root / "flowers-102"
    all_labels: list[int] = []
    ids: dict[str, list[int]] = {"trnid": [], "valid": [], "tstid": []}
    for key in ids:
        for label in labels:
            for _ in range(per_split):
                all_labels.append(label)
                ids[key].append(len(all_labels))
                write_image(base / "jpg" / f"image_{len(all_labels):05d}.jpg", len(all_labels))
    savemat(base / "imagelabels.mat", {"labels": np.array(all_labels, dtype=np.uint8)})
    savemat(base / "setid.mat", {k: np.array(v, dtype=np.uint16) for k, v in ids.items()})
    n = len(labels) * per_split
    return {"train": n, "val": n, "test": n}


def make_oxford_pets(root: Path, breeds: Sequence[str], per_split: int = 2) -> dict[str, int]:
    """``oxford-iiit-pet/images/<Breed>_<i>.jpg`` and ``annotations/{trainval,test}.txt``
    (``id class species breed`` lines, 1-based; cat breeds are capitalised on disk)."""
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    counter = 0
    for split in ("trainval", "test"):
        lines = []
        for label, breed in enumerate(breeds, start=1):
            species = 1 if breed[0].isupper() else 2
            for _ in range(per_split):
                counter += 1
                image_id = f"{breed}_{counter}"
                write_image(base / "images" / f"{image_id}.jpg", counter)
                lines.append(f"{image_id} {label} {species} {label}\n")
        (base / "annotations" / f"{split}.txt").write_text("".join(lines))
    n = len(breeds) * per_split
    return {"train": n, "test": n}


def make_dtd(root: Path, classes: Sequence[str], per_split: int = 2,
             partition: int = 1) -> dict[str, int]:
    """``dtd/dtd/images/<class>/<class>_0001.jpg`` and ``dtd/dtd/labels/<split><k>.txt``."""
    base = root / "dtd" / "dtd"
    (base / "labels").mkdir(parents=True)
    counter = 0
    for split in ("train", "val", "test"):
        lines = []
        for name in classes:
            for _ in range(per_split):
                counter += 1
                write_image(base / "images" / name / f"{name}_{counter:04d}.jpg", counter)
                lines.append(f"{name}/{name}_{counter:04d}.jpg\n")
        (base / "labels" / f"{split}{partition}.txt").write_text("".join(lines))
    n = len(classes) * per_split
    return {"train": n, "val": n, "test": n}


def _car_annotations(labels: Sequence[int], first: int) -> np.ndarray:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    annos = np.zeros(len(labels), dtype=[(f, "O") for f in fields])
    for k, label in enumerate(labels):
        annos[k] = (1, 1, 7, 7, label, f"{first + k:05d}.jpg")
    return annos


def make_stanford_cars(root: Path, names: Sequence[str], per_split: int = 2) -> dict[str, int]:
    """What torchvision's StanfordCars reads: ``devkit/cars_meta.mat`` (class_names),
    ``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat`` (struct arrays
    with bbox_*, class (1-based) and fname), and the images in ``cars_train/`` and
    ``cars_test/``."""
    from scipy.io import savemat

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat",
            {"class_names": np.array(list(names), dtype=object)})
    labels = [label for label in range(1, len(names) + 1) for _ in range(per_split)]
    targets = {"cars_train": base / "devkit" / "cars_train_annos.mat",
               "cars_test": base / "cars_test_annos_withlabels.mat"}
    for offset, (folder, mat) in enumerate(targets.items()):
        savemat(mat, {"annotations": _car_annotations(labels, 1)})
        for k in range(len(labels)):
            write_image(base / folder / f"{k + 1:05d}.jpg", seed=1000 * offset + k)
    n = len(labels)
    return {"train": n, "test": n}


#: The small replicas of every paper model, written once per test session (see
#: :func:`small_replicas`).
_REPLICAS: list[Path] = []


def small_replicas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding ``--size small`` replicas of every paper model (written once
    per session, ~20 s; tests that change a model copy it first)."""
    if not _REPLICAS:
        from sgid_bench.replicate import replicate

        root = tmp_path_factory.mktemp("replicas")
        replicate(root, "small")
        _REPLICAS.append(root)
    return _REPLICAS[0]
