"""What is stored with every run so it can be reproduced: package versions, git revision,
host."""

from __future__ import annotations

import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "sgid-bench", "torch", "torchvision", "diffusers", "transformers", "open_clip_torch",
    "accelerate", "numpy", "scipy", "pillow", "sqlalchemy", "pluggy",
)


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions of the libraries that shape results, and of every installed plugin package."""
    from sgid_bench.plugins import registry

    names = set(PACKAGES)
    for kind in registry().entries.values():
        names.update(entry.package for entry in kind.values())
    out = {}
    for name in sorted(names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The git revision of the sgid-bench checkout (``+dirty`` with local changes), if any."""
    return revision_of(Path(__file__).resolve().parent)


def revision_of(directory: Path) -> str | None:
    """The git revision of the repository holding ``directory`` (``+dirty`` with changes).

    ``--no-optional-locks``: a plain ``git status`` refreshes the index under
    ``.git/index.lock``, which makes the user's own concurrent git commands fail."""
    git = ["git", "--no-optional-locks", "-C", str(directory)]
    try:
        rev = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def host() -> str:
    return socket.gethostname()
