"""Where each image goes (issue 13): the validation split is carved from train only,
disjoint from the training images, stratified and seeded; an official val split is used
as it is; generation sees only the training images; the test split is never seen by
training or model selection."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, ClassVar

import pytest
import torch
from PIL import Image

from sgid_bench.api import Augmenter, Dataset, Split
from sgid_bench.config import RunSpec, resolve
from sgid_bench.context import Context
from sgid_bench.data import SPLIT_SEED, load_splits, loaders, stratified_split

#: Images per class of the train split: unbalanced, so stratification shows.
PER_CLASS = {0: 40, 1: 20, 2: 10}


def tagged(split: str, index: int) -> Image.Image:
    """A 2 x 2 image whose pixels name its split and index (so images are told apart)."""
    code = {"train": 0, "val": 1, "test": 2}[split]
    return Image.new("RGB", (2, 2), (code, index // 256, index % 256))


def tag(image: Image.Image) -> tuple[int, int]:
    split, high, low = image.getpixel((0, 0))
    return split, high * 256 + low


class Tagged(Dataset):
    """Train (unbalanced, interleaved labels), test, and optionally an official val."""

    name = "tagged"
    version = "1"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def class_names(self) -> list[str]:
        return ["a", "b", "c"]

    def load(self, split: str) -> Split:
        if split == "train":
            labels = [y for y, n in PER_CLASS.items() for _ in range(n)]
            labels = labels[::2] + labels[1::2]  # classes interleaved, not in blocks
        else:
            labels = [0, 1, 2] * 4
        return Split([(tagged(split, i), y) for i, y in enumerate(labels)], self.class_names())


class TaggedWithVal(Tagged):
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")


def resolved_with(dataset: Dataset, context: Context, augmenters: list[Any] = ()) -> Any:  # type: ignore[assignment]
    resolved = resolve(RunSpec(method="none", backbone="resnet50", dataset="shapes",
                               params=["train.epochs=1"]), context)
    config = dict(resolved.config)
    if augmenters:
        config["augmenters"] = [{"name": a.name, "version": "1", "params": {}}
                                for a in augmenters]
    return dataclasses.replace(resolved, dataset=dataset, augmenters=list(augmenters),
                               config=config)


def tags(samples: Any) -> list[tuple[int, int]]:
    return [tag(samples[i][0]) for i in range(len(samples))]


def test_stratified_split_holds_out_a_fraction_of_each_class() -> None:
    samples = Tagged().load("train").samples
    keep, held = stratified_split(samples, 0.1, seed=0)
    assert sorted(keep + held) == list(range(len(samples)))  # a partition
    assert not set(keep) & set(held)
    held_per_class = Counter(samples[i][1] for i in held)
    assert held_per_class == {0: 4, 1: 2, 2: 1}  # round(n * 0.1) of each class
    keep2, held2 = stratified_split(samples, 0.25, seed=0)
    assert Counter(samples[i][1] for i in held2) == {0: 10, 1: 5, 2: 2}  # round(2.5) = 2
    assert len(keep2) == 70 - 17


def test_stratified_split_is_seeded() -> None:
    samples = Tagged().load("train").samples
    first = stratified_split(samples, 0.2, seed=0)
    assert stratified_split(samples, 0.2, seed=0) == first
    assert stratified_split(samples, 0.2, seed=1) != first
    # A seeded shuffle, not the first or last images of each class.
    by_class: dict[int, list[int]] = {}
    for i, (_, y) in enumerate(samples):
        by_class.setdefault(y, []).append(i)
    held = Counter(samples[i][1] for i in first[1])
    firsts = sorted(i for y, idx in by_class.items() for i in idx[: held[y]])
    lasts = sorted(i for y, idx in by_class.items() for i in idx[len(idx) - held[y]:])
    assert first[1] not in (firsts, lasts)


def test_stratified_split_keeps_one_image_and_holds_one_out_per_class() -> None:
    # Classes of 1, 2 and 30 images at fraction 0.01: one held out from each class with
    # two or more, never the only image of a class; at fraction 0.99 one is kept.
    samples = [(None, 0)] + [(None, 1)] * 2 + [(None, 2)] * 30
    keep, held = stratified_split(samples, 0.01, seed=0)  # type: ignore[arg-type]
    assert Counter(samples[i][1] for i in held) == {1: 1, 2: 1}
    keep, held = stratified_split(samples, 0.99, seed=0)  # type: ignore[arg-type]
    assert Counter(samples[i][1] for i in keep) == {0: 1, 1: 1, 2: 1}


def test_stratified_split_reads_targets_without_decoding() -> None:
    class Labelled(list):  # type: ignore[type-arg]
        targets = [0, 0, 1, 1, 1, 1]

        def __getitem__(self, i):  # type: ignore[no-untyped-def]
            raise AssertionError("an image was decoded")

    keep, held = stratified_split(Labelled([None] * 6), 0.5, seed=0)
    assert len(held) == 3
    assert sorted(keep + held) == list(range(6))


def test_validation_is_carved_from_train_only(context: Context) -> None:
    splits = load_splits(resolved_with(Tagged(), context), context, None)
    train, val, test = tags(splits.train), tags(splits.val), tags(splits.test)
    assert {s for s, _ in train} == {s for s, _ in val} == {0}  # both from train
    assert not set(train) & set(val)
    assert sorted(train + val) == [(0, i) for i in range(70)]  # nothing lost
    assert test == [(2, i) for i in range(12)]  # the test split, untouched
    assert Counter(y for _, y in splits.val) == {0: 4, 1: 2, 2: 1}
    # Seeded with the fixed split seed: every run (and seed) gets the same validation.
    _, held = stratified_split(Tagged().load("train").samples, 0.1, SPLIT_SEED)
    assert val == [(0, i) for i in held]
    again = load_splits(resolved_with(Tagged(), context), context, None)
    assert tags(again.val) == val


def test_an_official_val_split_is_used_as_it_is(context: Context) -> None:
    splits = load_splits(resolved_with(TaggedWithVal(), context), context, None)
    assert tags(splits.val) == [(1, i) for i in range(12)]
    assert tags(splits.train) == [(0, i) for i in range(70)]  # train keeps every image


class Recorder(Augmenter):
    """An expand stage that records the images it is given and returns them."""

    name = "recorder"
    per_image_generators = True
    seen: ClassVar[list[tuple[int, int]]] = []

    def expand(self, images, labels, class_names, generator):  # type: ignore[no-untyped-def]
        Recorder.seen += [tag(im) for im in images]
        return list(images)


def test_generation_sees_only_the_training_images(context: Context) -> None:
    Recorder.seen = []
    splits = load_splits(resolved_with(Tagged(), context, [Recorder()]), context, None)
    assert Recorder.seen == tags(splits.train)
    assert tags(splits.generated) == tags(splits.train)


def test_loaders_put_each_split_where_it_belongs(context: Context) -> None:
    resolved = resolved_with(Tagged(), context)
    splits = load_splits(resolved, context, None)
    train, val, test = loaders(splits, resolved, 2, 0, context)
    assert tags(train.dataset.samples) == tags(splits.train)
    assert tags(val.dataset.samples) == tags(splits.val)
    assert tags(test.dataset.samples) == tags(splits.test)
    assert train.dataset.train
    assert not val.dataset.train
    assert not test.dataset.train


def test_training_and_selection_never_see_the_test_split(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    from sgid_bench import run
    from sgid_bench.train import Trainer

    seen: dict[str, list[tuple[int, int]]] = {}
    fit = Trainer.fit

    def spy(self: Trainer, train: Any, val: Any) -> Any:
        seen["train"] = tags(train.dataset.samples)
        seen["val"] = tags(val.dataset.samples)
        return fit(self, train, val)

    monkeypatch.setattr(Trainer, "fit", spy)
    resolved = resolved_with(Tagged(), context)
    metrics = run.train_and_evaluate(resolved, context, None)
    assert {s for s, _ in seen["train"] + seen["val"]} == {0}  # train images only
    assert len(seen["val"]) == 7
    assert metrics["extra"]["val_images"] == 7
    assert metrics["extra"]["test_images"] == 12
    # Test accuracy is over the 12 test images: a multiple of 100 / 12.
    assert round(metrics["top1"] * 12 / 100, 6) == round(metrics["top1"] * 12 / 100)


def test_generated_images_join_training_only(context: Context) -> None:
    Recorder.seen = []
    resolved = resolved_with(Tagged(), context, [Recorder()])
    splits = load_splits(resolved, context, None)
    train, val, test = loaders(splits, resolved, 2, 0, context)
    assert len(train.dataset) == len(splits.train) + len(splits.generated) == 2 * 63
    assert len(val.dataset) == 7
    assert len(test.dataset) == 12


def test_images_are_resized_to_the_input_size(context: Context) -> None:
    resolved = resolved_with(Tagged(), context)
    splits = load_splits(resolved, context, None)
    _, val, _ = loaders(splits, resolved, 4, 0, context)
    images, labels = next(iter(val))
    assert images.shape[1:] == (3, 4, 4)
    assert images.dtype == torch.uint8
    assert labels.tolist() == [y for _, y in list(splits.val)[: len(labels)]]
