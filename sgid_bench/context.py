"""What a plugin sees of the run it is part of."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

#: The profiles: quick (the toy world, the default), tiny (random-weight test models),
#: paper (the paper's models and recipes).
PROFILES = ("quick", "tiny", "paper")


def default_profile() -> str:
    """``$SGID_BENCH_PROFILE`` or ``quick`` (the test suite sets ``tiny``)."""
    return os.environ.get("SGID_BENCH_PROFILE") or "quick"


def default_home() -> Path:
    """Per-user data directory: ``$SGID_BENCH_HOME`` or ``~/.cache/sgid-bench``."""
    env = os.environ.get("SGID_BENCH_HOME")
    return Path(env) if env else Path.home() / ".cache" / "sgid-bench"


@dataclass
class Context:
    """Run-wide settings shared with plugins.

    ``profile`` is ``quick`` (the toy world's trained models at small scale: the default),
    ``tiny`` (tiny random-weight models, for tests: they exercise the pipeline only) or
    ``paper`` (the paper's models and recipes). ``models_dir`` holds local model copies
    and the generated tiny presets; ``data_root`` the datasets; ``cache_dir`` the
    generation cache.
    """

    profile: str = field(default_factory=default_profile)
    device: str = "cpu"
    dataset: str = ""
    seed: int = 0
    home: Path = field(default_factory=default_home)
    data_root: Path | None = None
    models_dir: Path | None = None
    cache_dir: Path | None = None
    gen_batch_size: int = 8
    #: Largest batch one forward pass takes; bigger recipe batches accumulate gradients.
    micro_batch: int | None = None
    #: The toy world's trained models (quick profile): the shipped ones unless
    #: ``$SGID_BENCH_WORLD`` or ``--world-dir`` names another build.
    world_dir: Path | None = None

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        self.data_root = Path(self.data_root) if self.data_root else self.home / "data"
        self.models_dir = Path(self.models_dir) if self.models_dir else self.home / "models"
        self.cache_dir = Path(self.cache_dir) if self.cache_dir else self.home / "cache"
        if not self.world_dir:
            from sgid_bench.world import shipped_dir

            env = os.environ.get("SGID_BENCH_WORLD")
            self.world_dir = Path(env) if env else shipped_dir()
        self.world_dir = Path(self.world_dir)

    def for_run(self, profile: str, dataset: str, seed: int) -> Context:
        """A copy for one run: its profile, dataset name (an ``imagefolder:/path`` spec
        gives ``imagefolder``) and seed."""
        return replace(self, profile=profile, dataset=dataset.partition(":")[0], seed=seed)

    @property
    def small(self) -> bool:
        """Whether this profile runs at small scale (32 px, few epochs and steps): the
        quick and tiny profiles."""
        return self.profile != "paper"

    @property
    def model_set(self) -> str:
        """Which models a plugin loads: ``world`` (quick), ``tiny`` or ``paper``."""
        return {"quick": "world", "tiny": "tiny"}.get(self.profile, "paper")
