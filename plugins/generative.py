"""Built-in generative augmenters (expand stage): SGID, Text2Img, SGID+DiverseCaption,
SGID+InstructPix2Pix. Registered through the ``sgid_bench`` entry-point group.

Import-light: torch, diffusers, transformers and open_clip load on first use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sgid_bench
from sgid_bench_plugins.gen_baselines import SGIDDiverseCaption, SGIDInstructPix2Pix, Text2Img
from sgid_bench_plugins.sgid import SGID

AUGMENTERS = (SGID, Text2Img, SGIDDiverseCaption, SGIDInstructPix2Pix)


@sgid_bench.hookimpl
def register_augmenters(register: Callable[[type[Any]], None]) -> None:
    for cls in AUGMENTERS:
        register(cls)
