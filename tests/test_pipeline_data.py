"""Issue 11 item 5: how images reach the backbone's input size. Evaluation resizes the
shorter side and takes the centre crop (deterministic, never squashed); training takes a
random resized crop of the image at its own resolution (above CIFAR size)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sgid_bench.data import SMALL_IMAGE_MAX, ImageSet

BLUE, GREEN, RED = (0, 0, 255), (0, 255, 0), (255, 0, 0)


def thirds(height: int) -> Image.Image:
    """A 3h x h image: blue, green and red thirds (left to right)."""
    a = np.zeros((height, 3 * height, 3), dtype=np.uint8)
    for k, colour in enumerate((BLUE, GREEN, RED)):
        a[:, k * height:(k + 1) * height] = colour
    return Image.fromarray(a)


def share(image: torch.Tensor, colour: tuple[int, int, int]) -> float:
    """Fraction of pixels within 30 levels of ``colour``."""
    target = torch.tensor(colour).view(3, 1, 1)
    return float(((image.int() - target).abs().max(dim=0).values <= 30).float().mean())


def test_eval_resizes_the_shorter_side_and_centre_crops_a_non_square_image() -> None:
    size = 80  # above CIFAR size; the image is 300 x 100: resized to 240 x 80, then cropped
    dataset = ImageSet([(thirds(100), 1)], size, train=False)
    image, label = dataset[0]
    assert (tuple(image.shape), image.dtype, label) == ((3, size, size), torch.uint8, 1)
    # The centre third only: squashing the whole width would show blue and red too.
    assert share(image, GREEN) > 0.95
    assert share(image, BLUE) == share(image, RED) == 0.0


def test_eval_never_randomises() -> None:
    dataset = ImageSet([(thirds(100), 0)], 80, train=False)
    first = dataset[0][0]
    for epoch in range(3):
        dataset.epoch = epoch
        assert torch.equal(dataset[0][0], first)


def test_an_image_already_at_the_input_size_is_unchanged() -> None:
    # The quick and tiny profiles' datasets are native 32 px: no resampling at all.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = ImageSet([(Image.fromarray(pixels), 0)], 32, train=False)[0][0]
    assert torch.equal(image, torch.from_numpy(pixels).permute(2, 0, 1))


def halves() -> Image.Image:
    """400 x 100: left half black, right half white."""
    a = np.zeros((100, 400, 3), dtype=np.uint8)
    a[:, 200:] = 255
    return Image.fromarray(a)


def test_training_crops_come_from_the_image_at_its_own_resolution() -> None:
    # A random resized crop keeps an aspect ratio in [3/4, 4/3]: from the 400 x 100 image
    # it spans at most a third of the width, so most crops fall in one half (one colour).
    # From the image squashed to 96 x 96 first, most crops would straddle both halves.
    size = 96
    assert size > SMALL_IMAGE_MAX
    dataset = ImageSet([(halves(), 0)], size, train=True, seed=0)
    assert not dataset.in_memory  # decoded per sample at its own resolution
    one_colour = 0
    for epoch in range(60):
        dataset.epoch = epoch
        image = dataset[0][0]
        assert tuple(image.shape) == (3, size, size)
        dark = float((image.float().mean(dim=0) < 128).float().mean())
        one_colour += dark in (0.0, 1.0) or min(dark, 1 - dark) < 0.02
    assert one_colour >= 36, one_colour  # ~70 % expected; squashing first gives ~25 %


def test_training_randomises_per_epoch_and_repeats_per_seed() -> None:
    def crops(seed: int) -> list[torch.Tensor]:
        dataset = ImageSet([(thirds(100), 0)], 80, train=True, seed=seed)
        out = []
        for epoch in range(4):
            dataset.epoch = epoch
            out.append(dataset[0][0])
        return out

    a, b = crops(0), crops(0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(a[0], x) for x in a[1:])


def test_cifar_size_training_keeps_the_padded_random_crop_in_memory() -> None:
    rng = np.random.default_rng(1)
    samples = [(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), i % 2)
               for i in range(4)]
    dataset = ImageSet(samples, 32, train=True, seed=0)
    assert dataset.in_memory  # the quick profile decodes once, as before
    shifted = 0
    for epoch in range(8):
        dataset.epoch = epoch
        image = dataset[0][0]
        assert tuple(image.shape) == (3, 32, 32)
        shifted += bool((image == 0).all(dim=0).any())  # a zero-padded border came in
    assert shifted > 0


# -- resampling, the CIFAR-size crop, what is held in memory ------------------------------


def checkerboard(side: int) -> Image.Image:
    """Alternating black and white pixels: any downscaling without antialiasing aliases."""
    a = np.zeros((side, side, 3), dtype=np.uint8)
    a[::2, ::2] = a[1::2, 1::2] = 255
    return Image.fromarray(a)


def test_eval_downscaling_is_antialiased() -> None:
    # 240 -> 80: averaged, a one-pixel checkerboard is an even grey; point-sampled it is
    # black and white (what the recipes' antialias=True avoids).
    image = ImageSet([(checkerboard(240), 0)], 80, train=False)[0][0].float()
    assert abs(float(image.mean()) - 127.5) < 3
    assert float(image.std()) < 10


def test_training_crops_are_antialiased_too() -> None:
    dataset = ImageSet([(checkerboard(240), 0)], 80, train=True, seed=0)
    spreads = []
    for epoch in range(16):
        dataset.epoch = epoch
        spreads.append(float(dataset[0][0].float().std()))
    # Crops of 1.5x the input side or more are shrunk: averaged, they come out grey.
    assert sum(s < 10 for s in spreads) >= 4, spreads


def uniform(side: int, level: int = 200) -> Image.Image:
    return Image.new("RGB", (side, side), (level, level, level))


def padded_border(image: torch.Tensor) -> int:
    """Width of the widest all-zero margin (rows or columns) along one edge."""
    rows = (image == 0).all(dim=0).all(dim=1).tolist()
    cols = (image == 0).all(dim=0).all(dim=0).tolist()
    widths = []
    for line in (rows, cols):
        widths.append(next((k for k, z in enumerate(line) if not z), len(line)))
        widths.append(next((k for k, z in enumerate(line[::-1]) if not z), len(line)))
    return max(widths)


def test_cifar_size_crops_pad_by_four_pixels() -> None:
    dataset = ImageSet([(uniform(32), 0)], 32, train=True, seed=0)
    borders = []
    for epoch in range(64):
        dataset.epoch = epoch
        borders.append(padded_border(dataset[0][0]))
    assert max(borders) == 4  # shifted by up to the padding, never more


def test_an_input_side_of_64_is_still_cifar_size() -> None:
    assert SMALL_IMAGE_MAX == 64
    at_limit = ImageSet([(uniform(64), 0)], 64, train=True, seed=0)
    assert at_limit.in_memory  # held at 64 px and padded-cropped from there
    borders = []
    for epoch in range(16):
        at_limit.epoch = epoch
        borders.append(padded_border(at_limit[0][0]))
    assert 0 < max(borders) <= 4  # zero padding shows: the CIFAR crop, not a resized crop
    assert not ImageSet([(uniform(65), 0)], 65, train=True, seed=0).in_memory


def test_sets_up_to_the_memory_limit_are_held(monkeypatch: pytest.MonkeyPatch) -> None:
    from sgid_bench import data

    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 2 * 3 * 8 * 8)  # two 8 x 8 RGB images
    two = [(uniform(8), 0), (uniform(8), 1)]
    assert ImageSet(two, 8, train=False).in_memory  # exactly at the limit
    assert not ImageSet([*two, (uniform(8), 0)], 8, train=False).in_memory
    assert not ImageSet(two, 9, train=False).in_memory  # 2 x 3 x 9 x 9 bytes
    over = ImageSet([*two, (uniform(8), 0)], 8, train=False)
    assert [over[i][1] for i in range(3)] == [0, 1, 0]  # decoded per sample instead


class Counting(list):  # type: ignore[type-arg]
    """Samples that count how often an image is fetched (decoded)."""

    reads = 0

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        Counting.reads += 1
        return super().__getitem__(i)


def test_held_images_are_not_decoded_again() -> None:
    samples = Counting([(uniform(8, 10 * i), i % 2) for i in range(4)])
    for train in (False, True):
        dataset = ImageSet(samples, 8, train=train, seed=0)
        assert dataset.in_memory
        Counting.reads = 0
        items = [dataset[i] for i in range(4)]
        assert Counting.reads == 0
        assert [label for _, label in items] == [0, 1, 0, 1]
    assert int(ImageSet(samples, 8, train=False)[3][0].max()) == 30


def test_greyscale_and_transparent_images_become_rgb() -> None:
    grey = Image.new("L", (8, 8), 77)
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 40))
    for train in (False, True):
        for size in (8, 80):
            dataset = ImageSet([(grey, 0), (rgba, 1)], size, train=train, seed=0)
            assert tuple(dataset[0][0].shape) == tuple(dataset[1][0].shape) == (3, size, size)
    image = ImageSet([(grey, 0), (rgba, 1)], 8, train=False)[1][0]
    assert image[:, 4, 4].tolist() == [10, 20, 30]


class Noise:
    """A transform stage adding noise drawn from the generator it is given."""

    name = "noise"

    def transform(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randint(0, 50, image.shape, generator=generator, dtype=torch.uint8)
        return image // 2 + noise


def test_transform_stages_draw_from_the_per_sample_seeded_generator() -> None:
    samples = [(uniform(8), 0), (uniform(8), 1)]

    def images(seed: int, epoch: int) -> list[torch.Tensor]:
        dataset = ImageSet(samples, 8, True, [Noise()], seed=seed)  # type: ignore[list-item]
        dataset.epoch = epoch
        return [dataset[i][0] for i in range(len(samples))]

    first = images(0, 0)
    torch.rand(5)  # the global RNG plays no part
    assert all(torch.equal(a, b) for a, b in zip(first, images(0, 0), strict=True))
    assert not torch.equal(first[0], images(0, 1)[0])  # another epoch, other noise
    assert not torch.equal(first[0], images(1, 0)[0])  # another seed, other noise
