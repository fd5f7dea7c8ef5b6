"""The toy world: a procedural image world with exact captions (:mod:`.scene`), and every
model of the SGID paper trained on it at toy scale (:mod:`.build`), shipped in
``models/`` so the quick profile measures real effects on a CPU."""

from __future__ import annotations

from pathlib import Path


def shipped_dir() -> Path:
    """Where the package's built world models live."""
    return Path(__file__).parent / "models"
