"""Seeding: every random draw of a run derives from its seed, so the same config and
seed give the same result on CPU."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``parts``."""
    import torch

    return torch.Generator().manual_seed(derive_seed(*parts))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch global RNGs."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def fork_seeded(gen: torch.Generator) -> Iterator[None]:
    """Run code that draws from torch's global RNG (torchvision transforms) with a seed
    drawn from ``gen``, leaving the global RNG as it was."""
    import torch

    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
