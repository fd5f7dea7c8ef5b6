"""From a dataset plugin to DataLoaders: validation split, expand (generation) stages,
the base augmentation, uint8 tensors held in memory for small datasets, per-sample
transform stages.

Images go to the backbone's input size the way the paper's recipes do (torchvision's
reference scripts, transformers' image-classification example): training takes a random
resized crop of each image *at its own resolution*, evaluation resizes the shorter side
to the input size and takes the centre crop (no squashing of non-square images). Images
at CIFAR size (:data:`SMALL_IMAGE_MAX`) train on random 4-pixel-padded crops instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import torch
from torch.utils import data as tud

from sgid_bench.api import TransformStage
from sgid_bench.errors import UserError
from sgid_bench.rng import derive_seed, fork_seeded, generator

if TYPE_CHECKING:
    from PIL import Image

    from sgid_bench.config import Resolved
    from sgid_bench.context import Context
    from sgid_bench.store import Store

#: The validation split is carved with this fixed seed, so every training seed sees the
#: same train images (and shares their generated augmentations).
SPLIT_SEED = 0
#: Datasets up to this many bytes as uint8 tensors are decoded once and held in memory.
IN_MEMORY_BYTES = 2 * 1024**3
#: Up to this input side training uses CIFAR's random crop with 4-pixel padding; above it,
#: the random resized crop of ImageNet training.
SMALL_IMAGE_MAX = 64

Sample = tuple["Image.Image", int]


@dataclass
class Splits:
    """The three splits of a run; ``generated`` are the expand stages' new train images."""

    train: Sequence[Sample]
    val: Sequence[Sample]
    test: Sequence[Sample]
    generated: list[Sample]
    class_names: list[str]


def stratified_split(samples: Sequence[Sample], fraction: float, seed: int
                     ) -> tuple[list[int], list[int]]:
    """Indices (keep, held_out): ``fraction`` of each class held out, seeded."""
    # Datasets that know their labels expose ``targets``: no image is decoded for them.
    labels = getattr(samples, "targets", None)
    if labels is None:
        labels = [samples[i][1] for i in range(len(samples))]
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    gen = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for label in sorted(by_class):
        idx = by_class[label]
        order = torch.randperm(len(idx), generator=gen).tolist()
        # At least one held out per class with two or more images, never all of them (so
        # none of a class of one).
        n_held = min(max(round(len(idx) * fraction), 1), len(idx) - 1)
        held += [idx[j] for j in order[:n_held]]
        keep += [idx[j] for j in order[n_held:]]
    return sorted(keep), sorted(held)


class Subset(Sequence[Sample]):
    """A read-only view of some indices of a sample sequence (no copying of images)."""

    def __init__(self, samples: Sequence[Sample], indices: list[int]) -> None:
        self.samples, self.indices = samples, indices

    def __len__(self) -> int:
        return len(self.indices)

    @overload
    def __getitem__(self, i: int) -> Sample: ...

    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...

    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.samples[self.indices[i]]


def check_dataset(resolved: Resolved, context: Context) -> list[str]:
    """The dataset's class names, after the checks that need no image: its files exist
    (``setup``) and it has at least two classes. Run before a run is claimed."""
    resolved.setup(resolved.dataset, context)
    names = list(resolved.dataset.class_names())
    check_classes(resolved.spec.dataset, names)
    return names


def check_classes(dataset: str, names: Sequence[str], labels: Sequence[int] | None = None
                  ) -> None:
    """A classifier needs two classes: with one, every prediction is right (top-1 100 %)."""
    if len(names) < 2:
        raise UserError(f"dataset {dataset!r} has {len(names)} class(es) "
                        f"({', '.join(names) or 'none'}): a classification benchmark needs at "
                        "least two; add class folders (imagefolder: PATH/<class>/)")
    if labels is not None and len(set(labels)) < 2:
        raise UserError(f"dataset {dataset!r}: every training image has the same label; "
                        "a classification benchmark needs images of at least two classes")


def load_splits(resolved: Resolved, context: Context, store: Store | None) -> Splits:
    """Load train/val/test, carve validation if needed, run the expand stages."""
    dataset = resolved.dataset
    resolved.setup(dataset, context)
    train = dataset.load("train")
    test = dataset.load("test")
    names = list(train.class_names or dataset.class_names())
    if len(train) == 0 or len(test) == 0:
        raise UserError(f"dataset {resolved.spec.dataset!r} is empty (train {len(train)}, "
                        f"test {len(test)} images): check its files")
    # Labels known without decoding (``targets``) are checked too; others are not read.
    check_classes(resolved.spec.dataset, names, getattr(train.samples, "targets", None))
    val: Sequence[Sample]
    if "val" in dataset.splits:
        val = dataset.load("val").samples
        train_samples: Sequence[Sample] = train.samples
    else:
        keep, held = stratified_split(train.samples, resolved.config["val_fraction"], SPLIT_SEED)
        train_samples, val = Subset(train.samples, keep), Subset(train.samples, held)
    generated = expand_chain(resolved, train_samples, names, context, store)
    return Splits(train_samples, val, test.samples, generated, names)


def generation_keys(resolved: Resolved, context: Context) -> list[dict[str, Any]]:
    """The generation-cache key of each expand stage, in chain order: the stage and every
    stage before it (with their models), the dataset and the train/val split."""
    from sgid_bench.cache import effective_key

    upstream: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []
    for aug, comp in zip(resolved.augmenters, resolved.config["augmenters"], strict=True):
        if "expand" not in aug.stages():
            continue
        upstream.append({**comp, "models": aug.models_used(context)})
        keys.append(effective_key(aug, {
            "chain": list(upstream), "dataset": resolved.config["dataset"],
            "val_fraction": resolved.config["val_fraction"], "split_seed": SPLIT_SEED},
            context))
    return keys


def expand_chain(resolved: Resolved, samples: Sequence[Sample], class_names: list[str],
                 context: Context, store: Store | None) -> list[Sample]:
    """Apply the expand stages in order, each on the previous one's images
    (``text2img+sgid``: SGID on Text2Img's images); returns the last stage's images."""
    expanders = [a for a in resolved.augmenters if "expand" in a.stages()]
    if not expanders:
        return []
    from sgid_bench.cache import expand_samples
    from sgid_bench.config import generation_seed

    current: Sequence[Sample] = samples
    for aug, key in zip(expanders, generation_keys(resolved, context), strict=True):
        seed = generation_seed(resolved.config, resolved.spec.seed)
        # Set up by the cache only if something is generated: cached images load no model.
        current = expand_samples(aug, current, class_names, key=key, seed=seed,
                                 context=context, store=store, setup=resolved.setup)
    return list(current)


class ImageSet(tud.Dataset[tuple[torch.Tensor, int]]):
    """A torch-style dataset of (uint8 CHW tensor at ``size`` x ``size``, label).

    Evaluation (``train=False``): the shorter side resized to ``size``, then the centre
    crop (:func:`eval_transform`); deterministic, held in memory when small enough.
    Training: :func:`base_augmentation` then the transform stages, per sample and epoch,
    drawn from a generator seeded by (seed, epoch, index). At CIFAR size the images are
    held at ``size`` like evaluation's and randomly cropped from there; above it each
    crop is taken from the image at its own resolution, decoded per sample."""

    def __init__(self, samples: Sequence[Sample], size: int, train: bool,
                 transforms: Sequence[TransformStage] = (), seed: int = 0) -> None:
        self.samples, self.size, self.train = samples, size, train
        self.transforms, self.seed, self.epoch = list(transforms), seed, 0
        self.crops_native = train and size > SMALL_IMAGE_MAX
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        if not self.crops_native and len(samples) * 3 * size * size <= IN_MEMORY_BYTES:
            self.images = torch.stack([self._fixed(i) for i in range(len(samples))])
            self.labels = torch.tensor([int(samples[i][1]) for i in range(len(samples))])

    @property
    def in_memory(self) -> bool:
        """Whether every image is decoded once and held (no decoding per sample)."""
        return self.images is not None

    def _native(self, i: int) -> torch.Tensor:
        from torchvision.transforms import v2

        return v2.functional.pil_to_tensor(self.samples[i][0].convert("RGB"))

    def _fixed(self, i: int) -> torch.Tensor:
        return eval_transform(self.size)(self._native(i))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.images is not None and self.labels is not None:
            image, label = self.images[i], int(self.labels[i])
        else:
            image = self._native(i) if self.crops_native else self._fixed(i)
            label = int(self.samples[i][1])
        if not self.train:
            return image, label
        gen = generator(self.seed, self.epoch, i)
        with fork_seeded(gen):
            image = base_augmentation(self.size)(image)
        for aug in self.transforms:
            image = aug.transform(image, gen)
        return image, label


def base_augmentation(size: int) -> Any:
    """The paper's standard training augmentation, for every method (uint8 CHW in,
    ``size`` x ``size`` out): at CIFAR size a random crop with 4-pixel padding of the
    image at ``size``; otherwise a random resized crop (scale 0.08-1, aspect 3/4-4/3) of
    the image at its own resolution; then a horizontal flip. Draws from the global RNG."""
    from torchvision.transforms import v2

    crop = (v2.RandomCrop(size, padding=4) if size <= SMALL_IMAGE_MAX
            else v2.RandomResizedCrop(size, antialias=True))
    return v2.Compose([crop, v2.RandomHorizontalFlip()])


def eval_transform(size: int) -> Any:
    """Evaluation's resize: the shorter side to ``size`` (aspect ratio kept), then the
    centre ``size`` x ``size`` crop, as open_clip's preprocessing and transformers'
    example do; an image already ``size`` x ``size`` is returned as it is."""
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])


def loaders(splits: Splits, resolved: Resolved, size: int, seed: int, context: Context
            ) -> tuple[Any, Any, Any]:
    """DataLoaders for train (originals + generated), val and test."""
    transforms = [a for a in resolved.augmenters if isinstance(a, TransformStage)]
    train_set = ImageSet([*splits.train, *splits.generated], size, True, transforms, seed)
    cuda = context.device.startswith("cuda")
    # Workers only pay off when decoding per sample or feeding a GPU; tiny in-memory sets
    # are faster in-process.
    workers = min(4, torch.get_num_threads()) if cuda or not train_set.in_memory else 0
    common: dict[str, Any] = {"num_workers": workers, "pin_memory": cuda}
    batch = resolved.recipe.batch_size
    shuffle = torch.Generator().manual_seed(derive_seed(seed, "shuffle"))
    train = tud.DataLoader(train_set, batch_size=batch, shuffle=True, generator=shuffle,
                           drop_last=len(train_set) > batch, **common)
    val = tud.DataLoader(ImageSet(splits.val, size, False), batch_size=batch, **common)
    test = tud.DataLoader(ImageSet(splits.test, size, False), batch_size=batch, **common)
    return train, val, test

