"""What tells stored configs apart: variant labels of rows that share a method, and the
signature a method's cell must share with its plain-backbone cell to be compared."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sgid_bench.config import canonical_json

if TYPE_CHECKING:
    from sgid_bench.leaderboard.table import Cell


def _flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return _flatten(dict(enumerate(obj)), prefix)
    return {prefix[:-1]: json.dumps(obj, sort_keys=True, default=str)}


def _short_key(path: str) -> str:
    # "augmenters.0.params.strength" -> "strength"; "recipe.lr" -> "recipe.lr".
    parts = [p for p in path.split(".") if not p.isdigit() and p not in ("params", "augmenters")]
    return ".".join(parts) or path


def variant_labels(cells: Sequence[Cell], limit: int = 40) -> dict[str, str]:
    """``{config hash: label}`` naming the config leaves that differ between configs of
    the same dataset (leaves that only differ across datasets, such as the dataset itself
    or per-dataset profile settings, do not split a row). Empty when nothing splits."""
    leaves = {c.config_hash: _flatten(c.config) for c in cells}
    split_keys: set[str] = set()
    by_dataset: dict[str, list[str]] = defaultdict(list)
    for c in cells:
        by_dataset[c.dataset].append(c.config_hash)
    for hashes in by_dataset.values():
        keys = set().union(*(leaves[h] for h in hashes))
        split_keys |= {k for k in keys if len({leaves[h].get(k) for h in hashes}) > 1}
    out = {}
    for h in leaves:
        label = ", ".join(f"{_short_key(k)}={leaves[h].get(k, 'unset')}"
                          for k in sorted(split_keys))
        if len(label) > limit:
            # Too long for a table: a stable digest; each cell's config hash (csv, --details)
            # leads to its full config in the store.
            label = "#" + _digest(label)
        out[h] = label
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:7]


def base_signature(config: dict[str, Any]) -> str:
    """What a method's cell and its plain-backbone cell must share to be compared: harness,
    backbone, dataset, profile, recipe and the backbone's models (not the augmenters)."""
    name = (config.get("backbone") or {}).get("name", "")
    models = {k: v for k, v in (config.get("models") or {}).items()
              if k.startswith(f"{name}.")}
    keep = ("harness", "backbone", "dataset", "profile", "recipe", "val_fraction")
    return canonical_json({**{k: config.get(k) for k in keep}, "models": models})
