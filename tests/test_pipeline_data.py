"""Issue 11 item 5: how images reach the backbone's input size. Evaluation resizes the
shorter side and takes the centre crop (deterministic, never squashed); training takes a
random resized crop of the image at its own resolution (above CIFAR size)."""

from __future__ import annotations

import numpy as np
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
