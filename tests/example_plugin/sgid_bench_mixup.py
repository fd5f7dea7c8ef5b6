"""A third-party augmenter written only from the sgid-bench README: Mixup (Zhang et al.)."""

from __future__ import annotations

import sgid_bench


class Mixup(sgid_bench.Augmenter):
    name = "mixup"
    description = "Mixes pairs of images and their labels."

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def mix(self, images, targets, generator):
        import numpy as np
        import torch

        # Draw everything from the harness's generator so runs are reproducible.
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        lam = float(np.random.default_rng(seed).beta(self.alpha, self.alpha))
        perm = torch.randperm(images.shape[0], generator=generator).to(images.device)
        return (lam * images + (1 - lam) * images[perm],
                lam * targets + (1 - lam) * targets[perm])


@sgid_bench.hookimpl
def register_augmenters(register):
    register(Mixup)
