"""The perturbation baselines: registration, paper defaults, and each stage's effect."""

from __future__ import annotations

import pytest
import torch

from sgid_bench.errors import UserError
from sgid_bench.plugins import registry
from sgid_bench_plugins.perturbation import (
    ERASE_MEAN_PIXEL,
    CutMix,
    MoEx,
    NoAugmentation,
    RandAugment,
    RandomErasing,
)

PAPER_DEFAULTS = {
    NoAugmentation: {},
    RandomErasing: {"p": 0.5, "scale": (0.02, 0.4), "ratio": (0.3, 1 / 0.3),
                    "value": ERASE_MEAN_PIXEL},
    RandAugment: {"num_ops": 2, "magnitude": 9},
    CutMix: {"alpha": 1.0, "p": 0.5},
    MoEx: {"p": 0.25, "lam": 0.5, "eps": 1e-5, "layer": "stem"},  # official default layer
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise_image(seed: int, low: int = 0, size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    return torch.randint(low, 256, (3, *size), generator=gen(seed), dtype=torch.uint8)


@pytest.mark.parametrize(
    ("name", "cls", "group", "stages"),
    [
        ("none", NoAugmentation, "backbone", ()),
        ("random_erasing", RandomErasing, "perturbation", ("transform",)),
        ("randaugment", RandAugment, "perturbation", ("transform",)),
        ("cutmix", CutMix, "perturbation", ("mix",)),
        ("moex", MoEx, "perturbation", ("features",)),
    ],
)
def test_registered_through_entry_point(
    name: str, cls: type, group: str, stages: tuple[str, ...]
) -> None:
    entry = registry().entries["augmenter"][name]
    assert entry.cls is cls
    assert entry.package == "sgid-bench"
    assert cls.group == group
    assert cls.stages() == stages
    assert cls.description
    assert "\n" not in cls.description


@pytest.mark.parametrize("cls", list(PAPER_DEFAULTS))
def test_param_defaults_are_the_paper_settings(cls: type) -> None:
    assert cls.param_defaults() == PAPER_DEFAULTS[cls]


@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (RandomErasing, {"p": 1.5}),
        (RandomErasing, {"scale": (0.5, 0.1)}),
        (RandAugment, {"magnitude": 31}),
        (CutMix, {"alpha": 0.0}),
        (MoEx, {"lam": -0.1}),
    ],
)
def test_invalid_params_are_rejected(cls: type, params: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(params))):
        cls(**params)


def test_random_erasing_fills_one_rectangle_and_leaves_the_rest() -> None:
    # Pixels >= 200 can never equal the fill value, so "changed" is exactly "erased".
    image = noise_image(0, low=200, size=(24, 40))
    for seed in range(5):
        out = RandomErasing(p=1.0).transform(image, gen(seed))
        assert out.dtype == torch.uint8
        assert out.shape == image.shape
        changed = (out != image).any(dim=0)
        rows = changed.any(dim=1).nonzero().flatten()
        cols = changed.any(dim=0).nonzero().flatten()
        box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all(), "the erased region is not a filled rectangle"
        assert int(changed.sum()) == box.numel(), "pixels outside the rectangle changed"
        fill = torch.tensor(ERASE_MEAN_PIXEL, dtype=torch.uint8)[:, None]
        assert torch.equal(out[:, changed], fill.expand(-1, box.numel()))
        # Area within the configured scale up to the rounding of each side (h, w =
        # round(sqrt(area * r)), round(sqrt(area / r))), no other tolerance.
        h, w = box.shape
        assert (h - 0.5) * (w - 0.5) <= 0.4 * changed.numel()
        assert (h + 0.5) * (w + 0.5) >= 0.02 * changed.numel()


def test_random_erasing_with_p0_is_identity() -> None:
    image = noise_image(1)
    assert torch.equal(RandomErasing(p=0.0).transform(image, gen(0)), image)


def test_randaugment_changes_image_reproducibly_without_touching_global_rng() -> None:
    image = noise_image(2)
    aug = RandAugment()
    torch.manual_seed(1234)
    global_state = torch.get_rng_state()
    outs = [aug.transform(image, gen(seed)) for seed in range(4)]
    assert torch.equal(torch.get_rng_state(), global_state)
    for out in outs:
        assert out.dtype == torch.uint8
        assert out.shape == image.shape
        assert not torch.equal(out, image)
    assert torch.equal(aug.transform(image, gen(0)), outs[0])
    # The generator advances: a second call on the same generator draws new ops.
    g = gen(0)
    assert not torch.equal(aug.transform(image, g), aug.transform(image, g))


def constant_batch(n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with the value i and labelled one-hot i, so every pixel of a
    mixed image says which sample it came from."""
    images = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 3, h, w)
    return images.clone(), torch.eye(n)


def test_cutmix_label_weights_equal_pasted_pixel_fractions() -> None:
    n, h, w = 6, 12, 20
    images, targets = constant_batch(n, h, w)
    before = images.clone()
    mixed_any = False
    for seed in range(8):
        out, out_targets = CutMix(p=1.0).mix(images, targets, gen(seed))
        assert torch.equal(images, before), "inputs were modified in place"
        assert out.shape == images.shape
        assert torch.allclose(out_targets.sum(dim=1), torch.ones(n))
        source = out[:, 0]  # the value of each pixel = the sample it came from
        fractions = torch.stack(
            [(source == j).float().mean(dim=(1, 2)) for j in range(n)], dim=1
        )
        assert torch.allclose(out_targets, fractions, atol=1e-6)
        mixed_any |= bool((out_targets.diagonal() < 1).any())
    assert mixed_any, "no seed pasted any box"


def test_cutmix_keeps_soft_targets_probabilities_and_is_reproducible() -> None:
    images = torch.randn(5, 3, 16, 16, generator=gen(3))
    targets = torch.rand(5, 4, generator=gen(4)).softmax(dim=1)
    global_state = torch.get_rng_state()
    out_a = CutMix(p=1.0).mix(images, targets, gen(7))
    out_b = CutMix(p=1.0).mix(images, targets, gen(7))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(out_a[0], out_b[0])
    assert torch.equal(out_a[1], out_b[1])
    assert torch.allclose(out_a[1].sum(dim=1), torch.ones(5))
    assert (out_a[1] >= 0).all()


def test_cutmix_with_p0_is_identity() -> None:
    images, targets = constant_batch(4, 8, 8)
    out, out_targets = CutMix(p=0.0).mix(images, targets, gen(0))
    assert torch.equal(out, images)
    assert torch.equal(out_targets, targets)


def pono_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim=1), x.std(dim=1)


@pytest.mark.parametrize("shape", [(6, 8, 5, 5), (6, 16, 10)], ids=["cnn", "transformer"])
@pytest.mark.parametrize("lam", [0.5, 0.8])
def test_moex_exchanges_moments_and_mixes_labels(shape: tuple[int, ...], lam: float) -> None:
    offsets = torch.arange(shape[0], dtype=torch.float32).reshape(-1, *[1] * (len(shape) - 1))
    feats = torch.randn(shape, generator=gen(5)) * 3 + offsets
    targets = torch.eye(shape[0])
    before = feats.clone()
    out, out_targets = MoEx(p=1.0, lam=lam).features(feats, targets, gen(11))
    assert torch.equal(feats, before), "inputs were modified in place"
    assert out.shape == feats.shape
    assert not torch.allclose(out, feats)
    # Each output carries exactly the PONO moments of one (permuted) input sample...
    mean, std = pono_moments(feats)
    out_mean, out_std = pono_moments(out)
    perm = torch.cdist(out_mean.flatten(1), mean.flatten(1)).argmin(dim=1)
    assert sorted(perm.tolist()) == list(range(shape[0]))
    assert torch.allclose(out_mean, mean[perm], atol=1e-4)
    assert torch.allclose(out_std, std[perm], rtol=1e-3, atol=1e-4)
    # ...while keeping its own normalised pattern.
    norm = (feats - feats.mean(1, keepdim=True)) / feats.std(1, keepdim=True)
    out_norm = (out - out.mean(1, keepdim=True)) / out.std(1, keepdim=True)
    assert torch.allclose(out_norm, norm, atol=1e-3)
    assert torch.allclose(out_targets, lam * targets + (1 - lam) * targets[perm])
    assert torch.allclose(out_targets.sum(dim=1), torch.ones(shape[0]))


def test_moex_is_reproducible_and_p0_is_identity() -> None:
    feats = torch.randn(4, 8, 3, 3, generator=gen(6))
    targets = torch.eye(4)
    a = MoEx(p=1.0).features(feats, targets, gen(2))
    b = MoEx(p=1.0).features(feats, targets, gen(2))
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    out, out_targets = MoEx(p=0.0).features(feats, targets, gen(2))
    assert torch.equal(out, feats)
    assert torch.equal(out_targets, targets)


def test_resolve_routes_params_to_random_erasing() -> None:
    from sgid_bench.config import RunSpec, resolve
    from sgid_bench.context import Context

    reg = registry()
    if not reg.names("backbone") or not reg.names("dataset"):
        pytest.skip("no backbone or dataset plugin is registered yet")
    base = {"method": "random_erasing", "backbone": reg.names("backbone")[0],
            "dataset": reg.names("dataset")[0]}
    resolved = resolve(RunSpec(**base, params=["p=0.3"]), Context())
    (augmenter,) = resolved.augmenters
    assert isinstance(augmenter, RandomErasing)
    assert augmenter.p == 0.3
    assert resolved.config["augmenters"][0]["params"]["p"] == 0.3
    with pytest.raises(UserError, match="unknown parameter 'strength'"):
        resolve(RunSpec(**base, params=["strength=0.5"]), Context())
