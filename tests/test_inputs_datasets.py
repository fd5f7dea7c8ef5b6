"""Issue 12 items 1, 7, 22: dataset folders with link loops, links between splits,
duplicate content, FIFOs; one-class datasets."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from dataset_fixtures import make_image_tree, write_image

from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench_plugins.datasets_folder import ImageFolderDataset


def _folder(path: Path, **params: object) -> ImageFolderDataset:
    ds = ImageFolderDataset(path=str(path), **params)  # type: ignore[arg-type]
    ds.setup(Context(data_root=path))
    return ds


def _sizes(ds: ImageFolderDataset) -> dict[str, int]:
    return {s: len(ds.load(s)) for s in ds.splits}


def _files(ds: ImageFolderDataset, split: str) -> set[Path]:
    samples = ds.load(split).samples
    return {samples.base.paths[j] for j in samples.indices}  # type: ignore[attr-defined]


def test_symlink_loop_is_not_followed(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    # The case: 4 images and a link back to the dataset root became 164.
    root = tmp_path / "pics"
    make_image_tree(root, ["ant", "bee"], 2)
    os.symlink(root, root / "ant" / "loop")
    os.symlink(root / "bee", root / "ant" / "to_bee")  # another class: not followed either
    ds = _folder(root, test_fraction=0.5)
    assert _sizes(ds) == {"train": 2, "test": 2}
    assert ds.load("train").samples.targets + ds.load("test").samples.targets in (
        [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1])
    err = capsys.readouterr().err
    assert "not followed" in err
    assert "loop" in err


def test_link_loop_in_a_presplit_folder(tmp_path: Path) -> None:
    root = tmp_path / "pics"
    for split in ("train", "test"):
        make_image_tree(root / split, ["ant", "bee"], 2, seed=len(split))
    os.symlink(root, root / "train" / "bee" / "up")
    os.symlink(root / "train" / "bee", root / "train" / "bee" / "self")
    assert _sizes(_folder(root)) == {"train": 4, "test": 4}


def test_external_linked_folder_is_still_read(tmp_path: Path) -> None:
    root = tmp_path / "pics"
    make_image_tree(root, ["ant", "bee"], 2)
    make_image_tree(tmp_path / "more", ["ant"], 3, seed=7)
    os.symlink(tmp_path / "more" / "ant", root / "ant" / "more")
    os.symlink(tmp_path / "more" / "ant", root / "ant" / "again")  # the same folder twice
    ds = _folder(root, test_fraction=0.5)
    assert sum(_sizes(ds).values()) == 7


def test_a_file_linked_into_two_splits_is_in_one_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pics"
    for split in ("train", "test"):
        make_image_tree(root / split, ["ant", "bee"], 2, seed=len(split))
    os.symlink(root / "test" / "ant" / "0.jpg", root / "train" / "ant" / "leak.jpg")
    os.symlink(root / "test" / "bee", root / "train" / "bee" / "leaked")
    ds = _folder(root)
    train, test = _files(ds, "train"), _files(ds, "test")
    assert not train & test
    assert len(test) == 4
    assert len(train) == 4
    assert "left out of train" in capsys.readouterr().err


def test_duplicate_content_across_splits_is_warned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pics"
    for split in ("train", "test"):
        make_image_tree(root / split, ["ant", "bee"], 2, seed=len(split))
    shutil.copy(root / "test" / "bee" / "1.jpg", root / "train" / "bee" / "copy.jpg")
    ds = _folder(root)
    ds.load("train")
    err = capsys.readouterr().err
    assert "identical bytes in two splits" in err
    assert "copy.jpg" in err


def test_no_duplicate_warning_for_distinct_images(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pics"
    for split in ("train", "test"):
        make_image_tree(root / split, ["ant", "bee"], 2, seed=len(split))
    _folder(root).load("train")
    assert "warning" not in capsys.readouterr().err


def test_a_fifo_named_like_an_image_is_skipped_not_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pics"
    make_image_tree(root, ["ant", "bee"], 2)
    os.mkfifo(root / "ant" / "blocked.jpg")
    result: dict[str, object] = {}

    def load() -> None:
        ds = _folder(root, test_fraction=0.5)
        result["sizes"] = _sizes(ds)
        result["images"] = [im for s in ds.splits for im, _ in ds.load(s).samples]

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # unblock the reader so the test process can exit
        with open(root / "ant" / "blocked.jpg", "wb"):
            pass
        pytest.fail("reading the dataset blocked on a FIFO")
    assert result["sizes"] == {"train": 2, "test": 2}
    assert "not regular files" in capsys.readouterr().err


def test_one_class_dataset_is_rejected_before_a_run(tmp_path: Path) -> None:
    from sgid_bench.config import RunSpec, resolve
    from sgid_bench.data import check_dataset

    make_image_tree(tmp_path / "pics", ["ant"], 4)
    spec = RunSpec(dataset=f"imagefolder:{tmp_path / 'pics'}")
    context = Context(data_root=tmp_path)
    with pytest.raises(UserError, match="1 class.*at least two") as err:
        check_dataset(resolve(spec, context), context)
    assert "\n" not in str(err.value)


def test_two_class_dataset_passes_the_check(tmp_path: Path) -> None:
    from sgid_bench.config import RunSpec, resolve
    from sgid_bench.data import check_dataset

    make_image_tree(tmp_path / "pics", ["ant", "bee"], 2)
    context = Context(data_root=tmp_path)
    resolved = resolve(RunSpec(dataset=f"imagefolder:{tmp_path / 'pics'}"), context)
    assert check_dataset(resolved, context) == ["ant", "bee"]


def test_one_class_dataset_is_rejected_when_loading(tmp_path: Path) -> None:
    from sgid_bench.config import RunSpec, resolve
    from sgid_bench.data import load_splits

    write_image(tmp_path / "pics" / "train" / "ant" / "0.jpg", 0)
    write_image(tmp_path / "pics" / "train" / "ant" / "1.jpg", 1)
    write_image(tmp_path / "pics" / "test" / "ant" / "0.jpg", 2)
    context = Context(data_root=tmp_path, cache_dir=tmp_path / "cache")
    resolved = resolve(RunSpec(dataset=f"imagefolder:{tmp_path / 'pics'}"), context)
    with pytest.raises(UserError, match="at least two"):
        load_splits(resolved, context, None)


def test_the_class_count_error_says_what_was_found_and_how_to_fix_it() -> None:
    from sgid_bench.data import check_classes

    how = (r"a classification benchmark needs at least two; add class folders "
           r"\(imagefolder: PATH/<class>/\)")
    with pytest.raises(UserError, match=r"dataset 'pics' has 0 class\(es\) \(none\): " + how):
        check_classes("pics", [])
    with pytest.raises(UserError, match=r"dataset 'pics' has 1 class\(es\) \(ant\): " + how):
        check_classes("pics", ["ant"])


def test_training_labels_of_two_classes_pass_and_of_one_class_do_not() -> None:
    from sgid_bench.data import check_classes

    check_classes("pics", ["ant", "bee"], [0, 1, 1])
    check_classes("pics", ["ant", "bee", "cat"], [2, 0])
    check_classes("pics", ["ant", "bee"])  # labels unknown without decoding: not read
    with pytest.raises(UserError, match="dataset 'pics': every training image has the same "
                       "label; a classification benchmark needs images of at least two "
                       "classes"):
        check_classes("pics", ["ant", "bee"], [1, 1, 1])


def test_the_class_check_names_the_dataset(tmp_path: Path) -> None:
    from sgid_bench.config import RunSpec, resolve
    from sgid_bench.data import check_dataset

    make_image_tree(tmp_path / "pics", ["ant"], 4)
    spec = RunSpec(dataset=f"imagefolder:{tmp_path / 'pics'}")
    context = Context(data_root=tmp_path)
    with pytest.raises(UserError) as err:
        check_dataset(resolve(spec, context), context)
    assert str(err.value).startswith(f"dataset {spec.dataset!r} has 1 class(es) (ant)")
