"""The perturbation baselines' parameters take effect (issue 13): RandAugment's number of
ops and magnitude, CutMix's box size from its lambda, Random Erasing's area and aspect
within the configured bounds (exact rounding bounds, no padding), and each stage's
probability ``p`` over many draws."""

from __future__ import annotations

import math

import pytest
import torch

from sgid_bench.rng import fork_seeded
from sgid_bench_plugins.perturbation import (
    ERASE_MEAN_PIXEL,
    CutMix,
    MoEx,
    RandAugment,
    RandomErasing,
)

DRAWS = 400


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise(seed: int, size: tuple[int, int] = (32, 32), low: int = 0) -> torch.Tensor:
    return torch.randint(low, 256, (3, *size), generator=gen(seed), dtype=torch.uint8)


def binomial_band(p: float, n: int = DRAWS) -> tuple[float, float]:
    """Where the observed frequency of a probability-``p`` event lies (4.5 standard
    deviations: a false failure about once in 150 000 runs; the draws are seeded anyway)."""
    sd = math.sqrt(p * (1 - p) / n)
    return p - 4.5 * sd, p + 4.5 * sd


# -- RandAugment -------------------------------------------------------------------------


def mean_change(aug: RandAugment, draws: int = 150) -> tuple[float, int]:
    """Mean absolute pixel change over draws, and how many draws left the image as it was."""
    image = noise(0)
    diffs = [float((aug.transform(image, gen(s)).float() - image.float()).abs().mean())
             for s in range(draws)]
    return sum(diffs) / draws, sum(d == 0 for d in diffs)


def test_randaugment_is_torchvision_randaugment_with_its_parameters() -> None:
    from torchvision.transforms import v2

    image = noise(1)
    for num_ops, magnitude in ((1, 3), (3, 27)):
        ours = RandAugment(num_ops=num_ops, magnitude=magnitude)
        for seed in range(10):
            with fork_seeded(gen(seed)):
                expected = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)(image)
            assert torch.equal(ours.transform(image, gen(seed)), expected)


def test_randaugment_number_of_ops_takes_effect() -> None:
    none, unchanged = mean_change(RandAugment(num_ops=0))
    assert (none, unchanged) == (0.0, 150)  # no op: the image itself
    one, one_unchanged = mean_change(RandAugment(num_ops=1))
    four, four_unchanged = mean_change(RandAugment(num_ops=4))
    # Measured: 40 vs 80 mean change; ~14 % vs 0 % of draws unchanged (Identity drawn).
    assert four > 1.5 * one
    assert four_unchanged < one_unchanged


def test_randaugment_magnitude_takes_effect() -> None:
    low, _ = mean_change(RandAugment(magnitude=0))
    mid, _ = mean_change(RandAugment(magnitude=5))
    high, _ = mean_change(RandAugment(magnitude=30))
    # Measured: 2, 53 and 82 (magnitude 0: rotate 0, shear 0 ... only the magnitude-free
    # ops such as equalize change anything).
    assert low < 10 < mid < high - 15


# -- CutMix ------------------------------------------------------------------------------


def pasted_box(out: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the pasted box in a CutMix output of :func:`constant_batch`
    (pixel values say which sample they came from), None when nothing visible was pasted."""
    for k in range(out.shape[0]):
        changed = out[k, 0] != k
        if changed.any():
            rows = changed.any(dim=1).nonzero().flatten()
            cols = changed.any(dim=0).nonzero().flatten()
            return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    return None


def constant_batch(n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 3, h, w)
    return images.clone(), torch.eye(n)


def unclipped_sides(alpha: float, h: int, w: int, draws: int = 200
                    ) -> tuple[list[int], list[int]]:
    """Box heights whose box touches neither the top nor the bottom border (so the height
    is the drawn one), and likewise widths, over ``draws`` batches."""
    images, targets = constant_batch(6, h, w)
    heights, widths = [], []
    for seed in range(draws):
        out, _ = CutMix(alpha=alpha, p=1.0).mix(images, targets, gen(seed))
        box = pasted_box(out)
        if box is None:
            continue
        y0, y1, x0, x1 = box
        if 0 < y0 and y1 < h:
            heights.append(y1 - y0)
        if 0 < x0 and x1 < w:
            widths.append(x1 - x0)
    return heights, widths


def test_cutmix_box_sides_follow_lambda() -> None:
    # alpha 1000: lambda ~ Beta(1000, 1000) is 0.5 +- 0.011, so the box has area
    # (1 - lambda) = half the image: sides h / sqrt(2) and w / sqrt(2) (a non-square image,
    # so height and width cannot be swapped), up to the even rounding of a centred box.
    h, w = 40, 64
    heights, widths = unclipped_sides(1000.0, h, w)
    assert len(heights) > 20
    assert len(widths) > 20
    assert all(abs(s - h / math.sqrt(2)) <= 2.5 for s in heights), heights
    assert all(abs(s - w / math.sqrt(2)) <= 2.5 for s in widths), widths


def test_cutmix_alpha_reaches_the_beta_distribution() -> None:
    # alpha 1: lambda uniform on [0, 1], so drawn box sides spread over the whole range.
    heights, _ = unclipped_sides(1.0, 40, 64)
    assert len(heights) > 20
    assert min(heights) <= 10
    assert max(heights) >= 24
    spread = torch.tensor(heights, dtype=torch.float).std()
    assert spread > 5  # against ~0.5 at alpha 1000


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_cutmix_mixes_a_fraction_p_of_batches(p: float) -> None:
    images, targets = constant_batch(4, 8, 8)
    mixed = sum(CutMix(p=p).mix(images, targets, gen(s))[0] is not images
                for s in range(DRAWS))
    low, high = binomial_band(p)
    assert low <= mixed / DRAWS <= high


# -- Random Erasing ----------------------------------------------------------------------


def erased_box(image: torch.Tensor, out: torch.Tensor) -> tuple[int, int] | None:
    """(height, width) of the erased rectangle; ``image`` pixels are all >= 200, which the
    fill never is, so "changed" is exactly "erased"."""
    changed = (out != image).any(dim=0)
    if not changed.any():
        return None
    rows = changed.any(dim=1).nonzero().flatten()
    cols = changed.any(dim=0).nonzero().flatten()
    h, w = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
    assert int(changed.sum()) == h * w, "the erased region is not one filled rectangle"
    fill = torch.tensor(ERASE_MEAN_PIXEL, dtype=torch.uint8)[:, None]
    assert torch.equal(out[:, changed], fill.expand(-1, h * w))
    return h, w


@pytest.mark.parametrize(("scale", "ratio"), [((0.02, 0.4), (0.3, 1 / 0.3)),
                                              ((0.1, 0.2), (1.5, 3.0))])
def test_random_erasing_area_and_aspect_within_the_configured_bounds(
        scale: tuple[float, float], ratio: tuple[float, float]) -> None:
    size = (48, 64)
    total = size[0] * size[1]
    image = noise(3, size, low=200)
    aug = RandomErasing(p=1.0, scale=scale, ratio=ratio)
    areas = []
    for seed in range(200):
        box = erased_box(image, aug.transform(image, gen(seed)))
        if box is None:  # torchvision gives up after 10 boxes that do not fit
            continue
        h, w = box
        # h = round(sqrt(area * r)), w = round(sqrt(area / r)): the drawn area lies in
        # [(h - .5)(w - .5), (h + .5)(w + .5)] and r in [(h - .5)/(w + .5), (h + .5)/(w - .5)];
        # each interval must meet the configured one. No other tolerance.
        assert (h - 0.5) * (w - 0.5) <= scale[1] * total, (h, w)
        assert (h + 0.5) * (w + 0.5) >= scale[0] * total, (h, w)
        assert (h - 0.5) / (w + 0.5) <= ratio[1], (h, w)
        assert (h + 0.5) / (w - 0.5) >= ratio[0], (h, w)
        areas.append(h * w / total)
    assert len(areas) > 150
    # The whole configured range is used, not a corner of it.
    span = scale[1] - scale[0]
    assert min(areas) < scale[0] + 0.2 * span
    assert max(areas) > scale[1] - 0.2 * span


@pytest.mark.parametrize("p", [0.3, 0.8])
def test_random_erasing_erases_a_fraction_p_of_images(p: float) -> None:
    image = noise(4, low=200)
    aug = RandomErasing(p=p)
    erased = sum(erased_box(image, aug.transform(image, gen(s))) is not None
                 for s in range(DRAWS))
    low, high = binomial_band(p)
    assert low <= erased / DRAWS <= high


def test_random_erasing_fills_with_the_configured_value() -> None:
    image = noise(5, low=200)
    out = RandomErasing(p=1.0, value=(1, 2, 3)).transform(image, gen(0))
    changed = (out != image).any(dim=0)
    assert changed.any()
    assert out[:, changed].unique(dim=1).tolist() == [[1], [2], [3]]


# -- MoEx --------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_moex_exchanges_moments_in_a_fraction_p_of_batches(p: float) -> None:
    feats = torch.randn(4, 8, 3, 3, generator=gen(0))
    targets = torch.eye(4)
    exchanged = sum(MoEx(p=p).features(feats, targets, gen(s))[0] is not feats
                    for s in range(DRAWS))
    low, high = binomial_band(p)
    assert low <= exchanged / DRAWS <= high


def test_moex_eps_is_added_to_the_variance() -> None:
    # Features constant over channels: variance 0, so the normalised features are 0 and the
    # output is the partner's mean; a large eps must not change that, a missing eps would
    # divide by zero (NaN).
    feats = torch.arange(4, dtype=torch.float)[:, None, None, None].expand(4, 8, 2, 2).clone()
    out, _ = MoEx(p=1.0, eps=1e-5).features(feats, torch.eye(4), gen(1))
    assert torch.isfinite(out).all()
    assert sorted(out[:, 0, 0, 0].tolist()) == [0.0, 1.0, 2.0, 3.0]


def test_cutmix_box_centres_cover_every_row_and_column() -> None:
    # alpha 1000: the drawn box is 11 x 11 on 16 x 16 (half-side 5), so a box not clipped
    # at the bottom (right) border is centred at y1 - 5 (x1 - 5): the centres drawn must
    # include the first row and column (uniform over the image, Yun et al.).
    images, targets = constant_batch(6, 16, 16)
    rows, cols = set(), set()
    for seed in range(300):
        box = pasted_box(CutMix(alpha=1000.0, p=1.0).mix(images, targets, gen(seed))[0])
        assert box is not None
        y0, y1, x0, x1 = box
        if y1 < 16:
            rows.add(y1 - 5)
        if x1 < 16:
            cols.add(x1 - 5)
    assert rows == cols == set(range(11))


@pytest.mark.parametrize("stage", ["cutmix", "moex"])
def test_skipping_a_batch_depends_on_the_generator_only(stage: str) -> None:
    images, targets = constant_batch(4, 8, 8)

    def mixed(global_seed: int) -> list[bool]:
        torch.manual_seed(global_seed)
        if stage == "cutmix":
            return [CutMix(p=0.5).mix(images, targets, gen(s))[0] is not images
                    for s in range(40)]
        return [MoEx(p=0.5).features(images, targets, gen(s))[0] is not images
                for s in range(40)]

    first = mixed(0)
    assert first == mixed(1)
    assert 0 < sum(first) < 40


def test_no_argument_construction_is_the_paper_defaults() -> None:
    for cls in (RandomErasing, RandAugment, CutMix, MoEx):
        made = cls()
        for name, value in cls.param_defaults().items():
            assert getattr(made, name) == value, (cls.name, name)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: RandomErasing(p=-0.1), r"^p must be in \[0, 1\], got -0.1$"),
    (lambda: RandomErasing(scale=(0.5, 0.1)), r"^scale must be \[min, max\] with 0.0 <= min"),
    (lambda: RandomErasing(scale=(0.1, 1.5)), r"^scale must be \[min, max\]"),
    (lambda: RandomErasing(ratio=(0.0, 1.0)), r"^ratio must be \[min, max\] with 1e-06 <= min"),
    (lambda: RandAugment(num_ops=-1), r"^num_ops must be >= 0, got -1$"),
    (lambda: RandAugment(magnitude=-1), r"^magnitude must be in \[0, 30\], got -1$"),
    (lambda: CutMix(alpha=0.0), r"^alpha must be > 0, got 0.0$"),
    (lambda: CutMix(p=1.5), r"^p must be in \[0, 1\], got 1.5$"),
    (lambda: MoEx(p=2.0), r"^p must be in \[0, 1\], got 2.0$"),
    (lambda: MoEx(lam=1.1), r"^lam must be in \[0, 1\], got 1.1$"),
    (lambda: MoEx(eps=0.0), r"^eps must be > 0, got 0.0$"),
])
def test_invalid_parameters_are_named_in_the_error(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_boundary_parameters_are_accepted() -> None:
    RandomErasing(p=0.0, scale=(0.0, 1.0), ratio=(1.0, 1.0))
    RandomErasing(p=1.0, scale=(0.2, 0.2))
    RandAugment(num_ops=0, magnitude=0)
    RandAugment(magnitude=30)
    MoEx(p=0.0, lam=0.0)
    MoEx(p=1.0, lam=1.0)
