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
from sgid_bench.errors import UserError

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


# -- slicing, set-up, empty and one-label datasets ----------------------------------------


def test_a_carved_split_slices_like_a_list(context: Context) -> None:
    splits = load_splits(resolved_with(Tagged(), context), context, None)
    val = list(splits.val)
    assert tags(splits.val[2:5]) == tags(val[2:5])
    assert tags(splits.val[::-1]) == tags(val[::-1])
    assert splits.train[-1] == list(splits.train)[-1]


class Rooted(Tagged):
    """A dataset whose files must be under the run's data root (as real datasets' are)."""

    def setup(self, context: Context) -> None:
        folder = context.data_root / "tagged"  # type: ignore[operator]
        if not folder.is_dir():
            raise UserError(f"dataset 'tagged': put its files in {folder}")


def test_the_dataset_is_set_up_with_the_runs_context(tmp_path: Any) -> None:
    from sgid_bench.data import check_dataset

    context = Context(cache_dir=tmp_path / "cache", data_root=tmp_path / "data")
    resolved = resolved_with(Rooted(), context)
    for check in (check_dataset, lambda r, c: load_splits(r, c, None)):
        with pytest.raises(UserError, match=f"put its files in {tmp_path / 'data' / 'tagged'}"):
            check(resolved, context)
    (tmp_path / "data" / "tagged").mkdir(parents=True)
    assert check_dataset(resolved_with(Rooted(), context), context) == ["a", "b", "c"]
    assert len(load_splits(resolved_with(Rooted(), context), context, None).val) == 7


class Unnamed(Tagged):
    """Splits that carry no class names: the dataset's are used."""

    def load(self, split: str) -> Split:
        return Split(super().load(split).samples)


def test_class_names_come_from_the_dataset_when_the_split_has_none(context: Context) -> None:
    splits = load_splits(resolved_with(Unnamed(), context), context, None)
    assert splits.class_names == ["a", "b", "c"]


class Emptied(Tagged):
    """One split without images."""

    def __init__(self, empty: str = "train") -> None:
        self.empty = empty

    def load(self, split: str) -> Split:
        loaded = super().load(split)
        return Split([], loaded.class_names) if split == self.empty else loaded


def test_an_empty_split_is_a_user_error_naming_both_sizes(context: Context) -> None:
    with pytest.raises(UserError, match=r"'shapes' is empty \(train 0, test 12 images\): "
                                        "check its files"):
        load_splits(resolved_with(Emptied("train"), context), context, None)
    with pytest.raises(UserError, match=r"is empty \(train 70, test 0 images\)"):
        load_splits(resolved_with(Emptied("test"), context), context, None)


class Labelled(list):  # type: ignore[type-arg]
    """Samples whose labels are known without decoding them (``targets``)."""

    @property
    def targets(self) -> list[int]:
        return [y for _, y in self]


class OneLabel(Tagged):
    """Three class names, but every training image is labelled 0."""

    def load(self, split: str) -> Split:
        loaded = super().load(split)
        if split == "train":
            return Split(Labelled((im, 0) for im, _ in loaded.samples), loaded.class_names)
        return loaded


def test_training_images_of_one_label_are_rejected_when_loading(context: Context) -> None:
    resolved = resolved_with(OneLabel(), context)
    with pytest.raises(UserError, match=f"dataset {resolved.spec.dataset!r}: every training "
                                        "image has the same label"):
        load_splits(resolved, context, None)
    # Labelled the ordinary way, the same samples load.
    assert len(load_splits(resolved_with(Tagged(), context), context, None).train) == 63


# -- the expand chain and its cache keys --------------------------------------------------


class Stage(Augmenter):
    """An expand stage that adds ``step`` to every pixel value and records what it gets."""

    name = "stage"
    per_image_generators = True
    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, step: int = 1, model: str = "m") -> None:
        self.step, self.model = step, model
        self.setups = 0

    def setup(self, context: Context) -> None:
        self.setups += 1

    def models_used(self, context: Context) -> dict[str, str]:
        return {"generator": f"{context.profile}/{self.model}"}

    def expand(self, images, labels, class_names, generator):  # type: ignore[no-untyped-def]
        Stage.calls.append({"name": self.name, "tags": [tag(im) for im in images],
                            "class_names": list(class_names)})
        out = []
        for im in images:  # the split code (red) goes up by ``step``; the index stays
            red, green, blue = im.getpixel((0, 0))
            out.append(Image.new("RGB", im.size, ((red + self.step) % 256, green, blue)))
        return out


class Later(Stage):
    name = "later"


class Flip(Augmenter):
    """A transform stage (per sample and epoch: it never changes generated images)."""

    name = "flip"

    def transform(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return image.flip(-1)


def test_the_expand_chain_feeds_each_stage_the_previous_ones_images(
        context: Context) -> None:
    Stage.calls = []
    first, second = Stage(step=1), Later(step=10)
    splits = load_splits(resolved_with(Tagged(), context, [first, second]), context, None)
    train = tags(splits.train)
    seen: dict[str, list[tuple[int, int]]] = {}
    for call in Stage.calls:  # one call per generation batch
        seen.setdefault(call["name"], []).extend(call["tags"])
    assert list(seen) == ["stage", "later"]  # in chain order
    assert seen["stage"] == train
    assert seen["later"] == [(s + 1, i) for s, i in train]  # the first stage's output
    assert tags(splits.generated) == [(s + 11, i) for s, i in train]  # the last's output
    assert [y for _, y in splits.generated] == [y for _, y in splits.train]
    # Prompts need the class names: every stage gets the dataset's.
    assert all(c["class_names"] == ["a", "b", "c"] for c in Stage.calls)


def test_each_expand_stage_is_set_up_once_per_run(context: Context) -> None:
    stage = Stage()
    resolved = resolved_with(Tagged(), context, [stage])
    load_splits(resolved, context, None)
    assert stage.setups == 1
    resolved.setup(stage, context)  # e.g. a later stage of the run needing the plugin
    assert stage.setups == 1


def test_generations_are_recorded_in_the_runs_store(context: Context, db_url: str) -> None:
    from sqlalchemy import select

    from sgid_bench.store import Generation, Store

    store = Store(db_url)
    resolved = resolved_with(Tagged(), context, [Stage(), Later()])
    load_splits(resolved, context, store)
    with store.session() as s:
        rows = {r.method: r for r in s.scalars(select(Generation)).all()}
    assert sorted(rows) == ["stage", "stage+later"]
    assert {r.dataset for r in rows.values()} == {resolved.config["dataset"]["name"]}
    assert all(r.status == "done" and r.images == 63 for r in rows.values())


def with_seed(resolved: Any, seed: int, generation_seed: str) -> Any:
    return dataclasses.replace(resolved, spec=dataclasses.replace(resolved.spec, seed=seed),
                               config={**resolved.config, "generation_seed": generation_seed})


class Noise(Stage):
    """An expand stage whose images are drawn from the generator of each image."""

    name = "noise"

    def expand(self, images, labels, class_names, generator):  # type: ignore[no-untyped-def]
        return [Image.new("RGB", (2, 2), tuple(torch.randint(0, 256, (3,), generator=g)
                                               .tolist())) for g in generator]


def test_generated_images_follow_the_generation_seed(context: Context) -> None:
    resolved = resolved_with(Tagged(), context, [Noise()])

    def generated(seed: int, mode: str) -> list[bytes]:
        splits = load_splits(with_seed(resolved, seed, mode), context, None)
        return [im.tobytes() for im, _ in splits.generated]

    fixed = generated(3, "fixed")
    assert generated(4, "fixed") == fixed  # every training seed shares the images
    per_run = generated(3, "per-run"), generated(4, "per-run")
    assert per_run[0] != per_run[1]  # each training seed its own images
    assert fixed not in per_run
    assert generated(3, "per-run") == per_run[0]


def expand_keys(context: Context, stages: list[Any], **config: Any) -> list[dict[str, Any]]:
    """The generation keys of ``stages``; ``config`` overrides settings of the run."""
    from sgid_bench.data import generation_keys

    resolved = resolved_with(Tagged(), context, stages)
    resolved = dataclasses.replace(resolved, config={**resolved.config, **config})
    return generation_keys(resolved, context)


def test_the_generation_key_names_the_chain_with_its_models_the_dataset_and_the_split(
        context: Context) -> None:
    # The key is the cache's address on disk (and is stored with it): a different key
    # orphans every cached image, so its layout is part of the contract.
    resolved = resolved_with(Tagged(), context, [Stage(), Later(model="n")])
    stage, later = resolved.config["augmenters"]
    models = [{"generator": f"{context.profile}/m"}, {"generator": f"{context.profile}/n"}]
    split = {"dataset": resolved.config["dataset"], "val_fraction": 0.1,
             "split_seed": SPLIT_SEED}
    from sgid_bench.data import generation_keys

    assert generation_keys(resolved, context) == [
        {"chain": [{**stage, "models": models[0]}], **split},
        {"chain": [{**stage, "models": models[0]}, {**later, "models": models[1]}], **split}]


def test_transform_stages_do_not_change_the_generation_key(context: Context) -> None:
    # ``flip+stage`` generates the images ``stage`` does: they share the cache.
    alone = expand_keys(context, [Stage()])
    assert expand_keys(context, [Flip(), Stage()]) == alone
    assert expand_keys(context, [Stage(), Flip()]) == alone
    assert len(expand_keys(context, [Flip(), Stage(), Flip(), Later()])) == 2


def test_the_generation_key_changes_with_everything_that_changes_the_images(
        tmp_path: Any) -> None:
    from sgid_bench.cache import key_hash

    def key(model: str = "n", step: int = 1, **config: Any) -> str:
        context = Context(cache_dir=tmp_path / "cache")
        stages = [{"name": "stage", "version": "1", "params": {"step": step}},
                  {"name": "later", "version": "1", "params": {"step": 1}}]
        keys = expand_keys(context, [Stage(step), Later(model=model)],
                           **{"augmenters": stages, **config})
        return key_hash(keys[-1])

    base = key()
    changed = [
        key(model="other"),  # the last stage's models
        key(step=2),  # an upstream stage's parameter
        key(val_fraction=0.2),  # other training images
        key(dataset={"name": "tagged", "version": "2", "params": {}}),
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)


def test_stages_and_their_settings_must_pair_up(context: Context) -> None:
    # A stage keyed with another stage's settings would share its cache: refused.
    from sgid_bench.data import generation_keys

    resolved = resolved_with(Tagged(), context, [Stage(), Later()])
    short = dataclasses.replace(resolved, config={
        **resolved.config, "augmenters": resolved.config["augmenters"][:1]})
    with pytest.raises(ValueError, match="zip"):
        generation_keys(short, context)


# -- the DataLoaders ----------------------------------------------------------------------


def with_batch(resolved: Any, batch_size: int) -> Any:
    return dataclasses.replace(resolved, recipe=dataclasses.replace(resolved.recipe,
                                                                    batch_size=batch_size))


def test_batches_are_the_recipes_and_training_drops_only_a_last_partial_batch(
        context: Context) -> None:
    resolved = with_batch(resolved_with(Tagged(), context), 8)
    splits = load_splits(resolved, context, None)  # 63 train, 7 val, 12 test images
    train, val, test = loaders(splits, resolved, 2, 0, context)
    assert [len(b) for b in train.batch_sampler] == [8] * 7  # 63 = 7 x 8 + 7 dropped
    # Evaluation sees every image once, in order, in batches of the recipe's size.
    assert list(val.batch_sampler) == [list(range(7))]
    assert list(test.batch_sampler) == [list(range(8)), list(range(8, 12))]
    assert [len(labels) for _, labels in test] == [8, 4]
    # A training set smaller than one batch is one batch, not none.
    small, _, _ = loaders(splits, with_batch(resolved, 100), 2, 0, context)
    assert [sorted(b) for b in small.batch_sampler] == [list(range(63))]


def test_training_order_is_shuffled_per_epoch_and_repeats_per_seed(context: Context) -> None:
    resolved = with_batch(resolved_with(Tagged(), context), 8)
    splits = load_splits(resolved, context, None)

    def orders(seed: int) -> list[list[int]]:
        train, _, _ = loaders(splits, resolved, 2, seed, context)
        out = []
        for epoch in range(2):
            torch.manual_seed(1000 + epoch)  # the global RNG plays no part
            out.append([i for batch in train.batch_sampler for i in batch])
        return out

    first = orders(0)
    assert first[0] != sorted(first[0])  # shuffled
    assert first[0] != first[1]  # anew each epoch
    torch.rand(3)
    assert orders(0) == first  # the same for the same seed
    assert orders(1) != first  # another for another seed


def test_training_augmentation_follows_the_run_seed(context: Context) -> None:
    resolved = resolved_with(Tagged(), context)
    splits = load_splits(resolved, context, None)

    def first_images(seed: int) -> list[torch.Tensor]:
        train, _, _ = loaders(splits, resolved, 8, seed, context)
        return [train.dataset[i][0] for i in range(8)]

    zero = first_images(0)
    assert all(torch.equal(a, b) for a, b in zip(zero, first_images(0), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(zero, first_images(1), strict=True))


def test_loaders_above_cifar_size_decode_training_images_per_sample(
        context: Context) -> None:
    resolved = with_batch(resolved_with(Tagged(), context), 8)
    splits = load_splits(resolved, context, None)
    train, val, test = loaders(splits, resolved, 72, 0, context)
    assert not train.dataset.in_memory  # crops from each image at its own resolution
    assert val.dataset.in_memory
    assert test.dataset.in_memory
    images, labels = train.dataset[0]
    assert tuple(images.shape) == (3, 72, 72)
