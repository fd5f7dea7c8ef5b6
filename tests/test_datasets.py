"""Dataset plugins: the embedded ``shapes``, ``imagefolder`` and the paper's seven on
fixtures written in torchvision's on-disk formats (never downloaded)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dataset_fixtures
import numpy as np
import pytest
from dataset_fixtures import (
    make_caltech101,
    make_cifar10,
    make_cifar100,
    make_dtd,
    make_flowers102,
    make_image_tree,
    make_oxford_pets,
    make_stanford_cars,
    skip_checksums,
    write_image,
)

from sgid_bench.api import Dataset
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.plugins import dataset_class
from sgid_bench_plugins.datasets_folder import ImageFolderDataset
from sgid_bench_plugins.datasets_shapes import Shapes

#: dataset name -> the torchvision call its missing-files error must show.
TORCHVISION_CALLS = [
    ("cifar10", "torchvision.datasets.CIFAR10("),
    ("cifar100", "torchvision.datasets.CIFAR100("),
    ("caltech101", "torchvision.datasets.Caltech101("),
    ("flowers102", "torchvision.datasets.Flowers102("),
    ("oxford_pets", "torchvision.datasets.OxfordIIITPet("),
    ("dtd", "torchvision.datasets.DTD("),
    ("stanford_cars", "pytorch/vision/issues/7545"),
]


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_each_profile_has_a_registered_default_dataset() -> None:
    from sgid_bench.config import DEFAULT_DATASETS, RunSpec
    from sgid_bench_plugins.datasets_world import World

    assert dataset_class(DEFAULT_DATASETS["quick"]) is World
    assert dataset_class(DEFAULT_DATASETS["tiny"]) is Shapes
    assert RunSpec(profile="quick").dataset == "world"
    assert RunSpec(profile="tiny").dataset == "shapes"
    assert RunSpec(profile="quick", dataset="cifar10").dataset == "cifar10"


def test_shapes_split_sizes_and_class_names() -> None:
    ds = Shapes(train_per_class=5, test_per_class=2)
    names = ds.class_names()
    assert len(names) >= 10
    assert len(set(names)) == len(names)
    assert all(n.replace(" ", "").isalpha() and n.islower() for n in names)
    train, test = ds.load("train"), ds.load("test")
    assert (len(train), len(test)) == (5 * len(names), 2 * len(names))
    assert train.class_names == names
    counts = np.bincount([label for _, label in train.samples], minlength=len(names))
    assert counts.tolist() == [5] * len(names)


def test_shapes_images_are_rgb_32_and_vary_within_a_class() -> None:
    split = Shapes(train_per_class=4, test_per_class=1).load("train")
    for image, _ in split.samples:
        assert (image.mode, image.size) == ("RGB", (32, 32))
    n = len(split.class_names)
    for label in range(n):
        same = [_pixels(img) for img, y in split.samples if y == label]
        assert len(same) == 4
        assert all(np.abs(same[0] - other).mean() > 5 for other in same[1:])


def test_shapes_is_deterministic_and_splits_differ() -> None:
    from sgid_bench_plugins import datasets_shapes

    first = Shapes(train_per_class=3, test_per_class=3).load("train")
    datasets_shapes._split_samples.cache_clear()  # redraw from scratch, not the cache
    again = Shapes(train_per_class=3, test_per_class=3).load("train")
    test = Shapes(train_per_class=3, test_per_class=3).load("test")
    for (a, ya), (b, yb) in zip(first.samples, again.samples, strict=True):
        assert ya == yb
        assert np.array_equal(_pixels(a), _pixels(b))
    assert not np.array_equal(_pixels(first.samples[0][0]), _pixels(test.samples[0][0]))


def test_shapes_rejects_bad_sizes_and_splits() -> None:
    with pytest.raises(UserError, match="train_per_class"):
        Shapes(train_per_class=0)
    with pytest.raises(UserError, match="no split 'val'"):
        Shapes().load("val")


# --- imagefolder -------------------------------------------------------------------------


def _imagefolder(path: Path, **params: Any) -> ImageFolderDataset:
    ds = ImageFolderDataset(path=str(path), **params)
    ds.setup(Context(data_root=path))
    return ds


def test_imagefolder_reads_train_test_and_val_folders(tmp_path: Path) -> None:
    classes = ["golden_retriever", "001.Black_footed_Albatross", "tabby cat"]
    for split, n in {"train": 3, "val": 1, "test": 2}.items():
        make_image_tree(tmp_path / split, classes, n, seed=len(split))
    ds = _imagefolder(tmp_path)
    assert ds.splits == ("train", "val", "test")
    # Sorted by folder name, as torchvision's ImageFolder labels them.
    assert ds.class_names() == ["Black footed Albatross", "golden retriever", "tabby cat"]
    sizes = {s: len(ds.load(s)) for s in ds.splits}
    assert sizes == {"train": 9, "val": 3, "test": 6}
    image, label = ds.load("test").samples[5]
    assert (image.mode, image.size, label) == ("RGB", (8, 8), 2)


def test_imagefolder_test_split_missing_a_class_keeps_train_labels(tmp_path: Path) -> None:
    make_image_tree(tmp_path / "train", ["ant", "bee", "cow"], 2)
    make_image_tree(tmp_path / "test", ["ant", "cow"], 2)
    ds = _imagefolder(tmp_path)
    assert ds.splits == ("train", "test")
    assert ds.load("test").samples.targets == [0, 0, 2, 2]


def test_imagefolder_flat_layout_is_a_seeded_stratified_split(tmp_path: Path) -> None:
    make_image_tree(tmp_path, ["ant", "bee", "cow"], 10)
    split = {s: _imagefolder(tmp_path, test_fraction=0.3).load(s).samples
             for s in ("train", "test")}
    assert np.bincount(split["test"].targets).tolist() == [3, 3, 3]
    assert np.bincount(split["train"].targets).tolist() == [7, 7, 7]
    assert not set(split["train"].indices) & set(split["test"].indices)
    again = _imagefolder(tmp_path, test_fraction=0.3).load("test").samples
    assert again.indices == split["test"].indices
    other = _imagefolder(tmp_path, test_fraction=0.3, split_seed=1).load("test").samples
    assert other.indices != split["test"].indices


@pytest.mark.parametrize(("layout", "message"), [
    ("missing", "is not a directory"),
    ("no_classes", "no class folders"),
    ("empty", "no images found"),
    ("train_only", "needs both train/ and test/"),
    ("empty_class", "without images in"),
])
def test_imagefolder_errors_name_the_problem_and_layout(tmp_path: Path, layout: str,
                                                        message: str) -> None:
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "no_classes":
        write_image(root / "stray.jpg", 0)
    if layout == "empty":
        (root / "ant").mkdir()
    if layout == "train_only":
        make_image_tree(root / "train", ["ant"], 1)
    if layout == "empty_class":
        make_image_tree(root, ["ant"], 2)
        (root / "bee").mkdir()
    def load() -> None:
        _imagefolder(root).load("train")

    with pytest.raises(UserError, match=message) as err:
        load()
    assert "\n" not in str(err.value)


def test_imagefolder_needs_a_path() -> None:
    with pytest.raises(UserError, match="imagefolder:/path"):
        ImageFolderDataset()


def test_imagefolder_path_comes_from_the_dataset_spec(tmp_path: Path) -> None:
    from sgid_bench.config import RunSpec, resolve

    make_image_tree(tmp_path / "pics", ["ant", "bee"], 2)
    spec = RunSpec(dataset=f"imagefolder:{tmp_path / 'pics'}", params=["test_fraction=0.5"])
    resolved = resolve(spec, Context())
    assert isinstance(resolved.dataset, ImageFolderDataset)
    assert resolved.dataset.root == tmp_path / "pics"
    assert resolved.dataset.test_fraction == 0.5


# --- the paper's seven on torchvision --------------------------------------------------

CIFAR100_NAMES = ["apple", "aquarium_fish", "maple_tree"]
CALTECH_FOLDERS = ["Faces", "Faces_easy", "Motorbikes", "car_side", "water_lilly"]
PET_BREEDS = ["Abyssinian", "american_bulldog", "shiba_inu"]
DTD_CLASSES = ["banded", "bubbly", "cracked"]
CAR_NAMES = ["AM General Hummer SUV 2000", "Chevrolet Silverado 1500 Extended Cab 2012"]

#: dataset name -> (fixture writer, expected clean class names or None for "all of them").
CASES: dict[str, tuple[Callable[[Path], dict[str, int]], list[str] | None]] = {
    "cifar10": (make_cifar10, dataset_fixtures.CIFAR10_NAMES),
    "cifar100": (lambda r: make_cifar100(r, CIFAR100_NAMES),
                 ["apple", "aquarium fish", "maple tree"]),
    "stanford_cars": (lambda r: make_stanford_cars(r, CAR_NAMES), CAR_NAMES),
    "flowers102": (lambda r: make_flowers102(r, labels=[1, 2, 102]), None),
    "oxford_pets": (lambda r: make_oxford_pets(r, PET_BREEDS),
                    ["abyssinian", "american bulldog", "shiba inu"]),
    "dtd": (lambda r: make_dtd(r, DTD_CLASSES), DTD_CLASSES),
}


def _loaded(name: str, data_root: Path, **params: Any) -> Dataset:
    ds = dataset_class(name)(**params)
    ds.setup(Context(data_root=data_root))
    return ds


@pytest.mark.parametrize("name", sorted(CASES))
def test_torchvision_dataset_splits_and_class_names(name: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    skip_checksums(monkeypatch)
    write, names = CASES[name]
    sizes = write(tmp_path / name)
    ds = _loaded(name, tmp_path)
    assert set(ds.splits) == set(sizes)
    assert {s: len(ds.load(s)) for s in ds.splits} == sizes
    if names is not None:
        assert ds.class_names() == names
    for split in ds.splits:
        loaded = ds.load(split)
        assert loaded.class_names == ds.class_names()
        image, label = loaded.samples[len(loaded) - 1]
        assert image.mode == "RGB"
        assert label == loaded.samples.targets[-1]
        assert 0 <= label < len(ds.class_names())


def test_flowers102_names_follow_the_label_numbers(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    skip_checksums(monkeypatch)
    make_flowers102(tmp_path / "flowers102", labels=[1, 2, 102])
    ds = _loaded("flowers102", tmp_path)
    names = ds.class_names()
    assert len(names) == len(set(names)) == 102
    test = ds.load("test")
    assert [names[t] for t in sorted(set(test.samples.targets))] == [
        "pink primrose", "hard-leaved pocket orchid", "blackberry lily"]


def test_caltech101_split_per_class_and_clean_names(tmp_path: Path) -> None:
    n = make_caltech101(tmp_path / "caltech101", CALTECH_FOLDERS, per_class=3)
    ds = _loaded("caltech101", tmp_path, train_per_class=2)
    assert ds.class_names() == ["off-center face", "face", "motorbike", "side of a car",
                                "water lily"]
    train, test = ds.load("train").samples, ds.load("test").samples
    assert (len(train), len(test)) == (2 * len(CALTECH_FOLDERS), n - 2 * len(CALTECH_FOLDERS))
    assert np.bincount(train.targets).tolist() == [2] * len(CALTECH_FOLDERS)
    assert not set(train.indices) & set(test.indices)
    assert all(img.mode == "RGB" for img, _ in test)  # half of the files are grayscale
    again = _loaded("caltech101", tmp_path, train_per_class=2).load("train").samples
    assert again.indices == train.indices


def test_dtd_other_partition_reads_its_own_files(tmp_path: Path) -> None:
    make_dtd(tmp_path / "dtd", DTD_CLASSES, per_split=1, partition=3)
    assert len(_loaded("dtd", tmp_path, partition=3).load("val")) == len(DTD_CLASSES)
    with pytest.raises(UserError, match=r"labels/train1\.txt"):
        _loaded("dtd", tmp_path).load("train")


def test_root_param_overrides_the_data_root(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    skip_checksums(monkeypatch)
    sizes = make_cifar10(tmp_path / "elsewhere")
    ds = _loaded("cifar10", tmp_path / "unused", root=str(tmp_path / "elsewhere"))
    assert len(ds.load("test")) == sizes["test"]


@pytest.mark.parametrize("name", [n for n, _ in TORCHVISION_CALLS])
def test_missing_files_say_where_and_how_to_download(name: str, tmp_path: Path) -> None:
    ds = _loaded(name, tmp_path)
    with pytest.raises(UserError) as err:
        ds.load("train")
    message = str(err.value)
    assert "\n" not in message
    assert "Traceback" not in message
    assert str(tmp_path / name) in message
    assert dict(TORCHVISION_CALLS)[name] in message
    assert not (tmp_path / name).exists()  # nothing created on the way


def test_corrupted_files_are_a_user_error(tmp_path: Path) -> None:
    make_cifar10(tmp_path / "cifar10")  # real checksums on: the fixture does not match them
    with pytest.raises(UserError, match="incomplete or corrupted.*download=True"):
        _loaded("cifar10", tmp_path).load("train")


# --- through the CLI ----------------------------------------------------------------------


def _write_folder(data_root: Path) -> str:
    # 10 per class: the harness carves a 10% validation split out of train.
    make_image_tree(data_root / "pics" / "train", ["red_fox", "grey wolf"], 10)
    make_image_tree(data_root / "pics" / "test", ["red_fox", "grey wolf"], 2, seed=1)
    return f"imagefolder:{data_root / 'pics'}"


def _write_case(name: str) -> Callable[[Path], str]:
    def write(root: Path) -> str:
        CASES[name][0](root / name)
        return name

    return write


def _write_caltech(root: Path) -> str:
    make_caltech101(root / "caltech101", ["accordion", "Faces_easy"], per_class=4)
    return "caltech101"


#: Every dataset (the seven on fixtures, imagefolder, the embedded one made small).
RUNNABLE: dict[str, Callable[[Path], str]] = {
    **{name: _write_case(name) for name in CASES},
    # Enough CIFAR-10 test images that every class is in the test split.
    "cifar10": lambda root: (make_cifar10(root / "cifar10", per_batch=20, n_test=10),
                             "cifar10")[1],
    "caltech101": _write_caltech,
    "imagefolder": _write_folder,
    "shapes": lambda root: "shapes",
}
SMALL = {"shapes": ["--param", "train_per_class=4", "--param", "test_per_class=2"],
         "caltech101": ["--param", "train_per_class=2"]}


@pytest.mark.parametrize("backbone", ["resnet50", "vit", "clip_vit"])
@pytest.mark.parametrize("name", sorted(RUNNABLE))
def test_cli_run_on_fixture_stores_per_class_accuracy(name: str, backbone: str, tmp_path: Path,
                                                      runner: Any, db_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from sgid_bench.cli import main
    from sgid_bench.store import Store

    skip_checksums(monkeypatch)
    dataset = RUNNABLE[name](tmp_path / "data")
    result = runner.invoke(main, ["run", "--dataset", dataset, "--backbone", backbone,
                                  "--data-root", str(tmp_path / "data"), "--param", "epochs=1",
                                  "--device", "cpu", *SMALL.get(name, [])])
    assert result.exit_code == 0, result.output
    (row,) = Store(db_url).runs(status="done", dataset=dataset)
    params = {"path": dataset.partition(":")[2]} if name == "imagefolder" else {}
    params.update(row.config["dataset"]["params"])
    expected = dataset_class(name)(**params)
    expected.setup(Context(data_root=tmp_path / "data"))
    names = expected.class_names()
    test = expected.load("test").samples
    # Accuracy of every class that has test images, named as the dataset names it.
    assert sorted(row.per_class) == sorted({names[test[i][1]] for i in range(len(test))})
