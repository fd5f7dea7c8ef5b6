"""The perturbation baselines of the SGID paper, plus ``none`` (the plain backbone).

Defaults are the paper's settings (``shared/reference/README.md``, "Baseline settings"):
Random Erasing p 0.5, max area 0.4, min aspect 0.3; CutMix alpha 1.0 applied with
probability 0.5; RandAugment N 2, M 9; MoEx lambda 0.5, p 0.25, PONO, at the stem (the
official code's default layer).

This module is imported by ``sgid-bench list``: torch and torchvision are imported inside
functions only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import sgid_bench
from sgid_bench.rng import fork_seeded

if TYPE_CHECKING:
    import torch

#: Random Erasing's fill in the reference implementation (Zhong et al.): the CIFAR mean
#: pixel (0.4914, 0.4822, 0.4465), here on the 0..255 scale of the uint8 transform stage.
ERASE_MEAN_PIXEL = (125, 123, 114)


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_range(name: str, pair: Sequence[float], low: float, high: float) -> None:
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        raise ValueError(f"{name} must be [min, max] with {low} <= min <= max <= {high}: {pair}")


def _coin(generator: torch.Generator, p: float) -> bool:
    """True with probability ``p``, one draw from ``generator``."""
    import torch

    return bool(torch.rand((), generator=generator).item() < p)


def _mix_targets(targets: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    return lam * targets + (1.0 - lam) * targets[perm]


class NoAugmentation(sgid_bench.Augmenter):
    name = "none"
    description = "No augmentation: the plain backbone with its standard training transforms."
    group: ClassVar[str] = "backbone"


class _TorchvisionTransform(sgid_bench.Augmenter):
    """A ``transform`` stage running a torchvision v2 transform, seeded from the generator."""

    _built: Callable[[Any], Any] | None = None

    def _build(self) -> Callable[[Any], Any]:
        raise NotImplementedError

    def transform(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 CHW in, uint8 CHW out; same generator state gives the same output."""
        if self._built is None:
            # Built on first use so resolving a run (which instantiates) stays import-light.
            self._built = self._build()
        # torchvision's v2 transforms draw from the global RNG and take no generator:
        # fork_seeded makes them a function of ``generator`` and restores the global RNG.
        with fork_seeded(generator):
            return self._built(image)


class RandomErasing(_TorchvisionTransform):
    name = "random_erasing"
    description = "Random Erasing (Zhong et al. 2020): fills a random rectangle of the image."

    def __init__(
        self,
        p: float = 0.5,
        scale: tuple[float, float] = (0.02, 0.4),
        ratio: tuple[float, float] = (0.3, 1 / 0.3),
        value: tuple[int, ...] = ERASE_MEAN_PIXEL,
    ) -> None:
        _check_probability("p", p)
        _check_range("scale", scale, 0.0, 1.0)
        _check_range("ratio", ratio, 1e-6, math.inf)
        self.p, self.scale, self.ratio, self.value = p, tuple(scale), tuple(ratio), tuple(value)

    def _build(self) -> Callable[[Any], Any]:
        from torchvision.transforms import v2

        return v2.RandomErasing(
            p=self.p, scale=self.scale, ratio=self.ratio, value=[float(v) for v in self.value]
        )


class RandAugment(_TorchvisionTransform):
    name = "randaugment"
    description = "RandAugment (Cubuk et al. 2020): num_ops random ops at a fixed magnitude."

    def __init__(self, num_ops: int = 2, magnitude: int = 9) -> None:
        if num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {num_ops}")
        # torchvision's default scale has 31 magnitude bins (0..30).
        if not 0 <= magnitude <= 30:
            raise ValueError(f"magnitude must be in [0, 30], got {magnitude}")
        self.num_ops, self.magnitude = num_ops, magnitude

    def _build(self) -> Callable[[Any], Any]:
        from torchvision.transforms import v2

        return v2.RandAugment(num_ops=self.num_ops, magnitude=self.magnitude)


class CutMix(sgid_bench.Augmenter):
    name = "cutmix"
    description = "CutMix (Yun et al. 2019): pastes a box from another image, mixes labels by area."

    def __init__(self, alpha: float = 1.0, p: float = 0.5) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        _check_probability("p", p)
        self.alpha, self.p = alpha, p

    def mix(
        self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float NCHW images and N x C probability targets in; the same shapes out.

        Skipped batches (probability ``1 - p``) come back as the inputs themselves, which
        are never modified."""
        import torch

        if not _coin(generator, self.p):
            return images, targets
        n, _, h, w = images.shape
        with fork_seeded(generator):  # torch.distributions samples from the global RNG
            lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        # Box of area (1 - lam) * h * w centred uniformly, clipped at the borders (Yun et al.).
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(h * cut), int(w * cut)
        cy = int(torch.randint(0, h, (), generator=generator))
        cx = int(torch.randint(0, w, (), generator=generator))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        perm = torch.randperm(n, generator=generator).to(images.device)
        mixed = images.clone()
        mixed[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
        # The clipped box may be smaller than drawn: weight labels by the real pasted area.
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        return mixed, _mix_targets(targets, perm.to(targets.device), lam)


class MoEx(sgid_bench.Augmenter):
    name = "moex"
    description = "MoEx (Li et al. 2021): swaps PONO feature moments between samples, mixes labels."
    # 2: the layer parameter, whose default (the stem) moves MoEx from the first stage.
    version = "2"

    def __init__(self, p: float = 0.25, lam: float = 0.5, eps: float = 1e-5,
                 layer: str = "stem") -> None:
        """``layer``: the backbone layer whose output MoEx rewrites; ``stem`` (after the
        input stem) is the official code's default, ``layer1``... are later stages."""
        _check_probability("p", p)
        _check_probability("lam", lam)
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.p, self.lam, self.eps, self.layer = p, lam, eps, layer

    def features(
        self, features: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel-first features (N x C x ..., channels on dim 1) and N x C targets in.

        PONO moments are per sample and per position, over channels. ``lam`` is the
        weight of a sample's own label. Skipped batches return the inputs themselves."""
        import torch

        if not _coin(generator, self.p):
            return features, targets
        perm = torch.randperm(features.shape[0], generator=generator).to(features.device)
        mean = features.mean(dim=1, keepdim=True)
        # Unbiased variance, as in the reference MoEx code.
        std = (features.var(dim=1, keepdim=True) + self.eps).sqrt()
        exchanged = (features - mean) / std * std[perm] + mean[perm]
        return exchanged, _mix_targets(targets, perm.to(targets.device), self.lam)


@sgid_bench.hookimpl
def register_augmenters(register: Callable[[type[Any]], None]) -> None:
    for cls in (NoAugmentation, RandomErasing, RandAugment, CutMix, MoEx):
        register(cls)
