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
        # Only the CPU generator, the one fork_rng saves and restores: torch.manual_seed
        # would also seed CUDA/XPU/MTIA, which without an initialised device means
        # queueing a lazy seed with a formatted stack trace per call (a fifth of a quick
        # run's time at one call per training image) and a device state not restored.
        torch.default_generator.manual_seed(seed)
        yield


#: What runs record as their determinism setting: torch's deterministic algorithms where
#: it has them, a warning (not an error) where it does not.
DETERMINISM = "torch.use_deterministic_algorithms(warn_only)"


def make_deterministic(device: str) -> str:
    """Make the same (config, seed, thread count) give the same numbers: deterministic
    algorithms where torch has them, no cuDNN autotuning, and the cuBLAS workspace that
    deterministic CUDA matmuls need (set before cuBLAS starts). Returns the setting to
    record with the run."""
    import os

    import torch

    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return DETERMINISM


def default_threads(profile: str, device: str) -> int:
    """Intra-op threads when the user gives none.

    ``$OMP_NUM_THREADS`` first: Ray sets it to each task's CPUs, and a user or scheduler
    (slurm) that sets it knows how many workers share the machine. Otherwise 1 for the
    small profiles and for GPU runs (measured: small CPU models run several times slower
    with more threads, which only spin), and every core this process may use for the
    paper's models on a CPU."""
    import os

    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if profile != "paper" or not device.startswith("cpu"):
        return 1
    return max(1, available_cores())


def available_cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Set torch's intra-op thread count; returns it."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
