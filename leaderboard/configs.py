"""What tells stored configs apart: variant labels of rows that share a method, and the
signature a method's cell must share with its plain-backbone cell to be compared."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
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


def _names(keys: Sequence[str]) -> dict[str, str]:
    """Each config path's name in a label: its last part (``strength``, ``epochs``) where
    that is unambiguous among ``keys``, else the longer :func:`_short_key`."""
    last = {k: k.rsplit(".", 1)[-1] for k in keys}
    clash = {n for n in last.values() if list(last.values()).count(n) > 1}
    return {k: _short_key(k) if n in clash else n for k, n in last.items()}


def _value(text: str | None) -> str:
    if text is None:
        return "unset"
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]  # a JSON string: its text
    # Model ids end in the digest that tells two builds apart: keep both ends.
    return text if len(text) <= 24 else text[:10] + "…" + text[-12:]


#: Config paths that say what a run is or how it was made, not a setting a user chose:
#: they never label a row as differing from the default.
_IDENTITY = ("harness", "method", "profile", "models.", "dataset.params.path")


def _settable(path: str) -> bool:
    return not path.startswith(_IDENTITY) and not path.endswith((".name", ".version"))


@lru_cache(maxsize=256)
def _default_leaves(method: str, backbone: str, dataset: str, profile: str
                    ) -> dict[str, str] | None:
    from sgid_bench.config import RunSpec, resolve
    from sgid_bench.context import Context

    try:
        resolved = resolve(RunSpec(method=method, backbone=backbone, dataset=dataset,
                                   profile=profile), Context(profile=profile))
    except Exception:
        # A store from another machine may name plugins, datasets or folders unknown
        # here: rows are then labelled by what tells them apart alone.
        return None
    return _flatten(resolved.config)


def default_leaves(cell: Cell) -> dict[str, str] | None:
    """The flattened config a run of ``cell``'s method, backbone, dataset and profile gets
    without any ``--param`` here and now (None when it cannot be resolved here)."""
    config = cell.config
    return _default_leaves(str(config.get("method", "")),
                           str((config.get("backbone") or {}).get("name", "")),
                           cell.dataset, str(config.get("profile", "")))


def _changed(leaves: dict[str, str], default: dict[str, str] | None) -> set[str]:
    # Only keys both know: a setting added or removed since the run was stored says
    # nothing about what its user chose.
    if default is None:
        return set()
    return {k for k, v in leaves.items() if _settable(k) and k in default and default[k] != v}


def _chosen(cell: Cell) -> set[str]:
    """Config paths of the settings chosen on validation in ``cell`` (the cell names them
    itself: ``[sgid.strength=0.7]``), which therefore do not label its row."""
    names = {part.partition("=")[0] for part in cell.selected.split(", ") if part}
    return {f"augmenters.{i}.params.{key}"
            for i, aug in enumerate(cell.config.get("augmenters") or [])
            for key in aug.get("params") or {} if f"{aug.get('name')}.{key}" in names}


def variant_labels(cells: Sequence[Cell], limit: int = 40) -> dict[str, str]:
    """``{config hash: label}`` naming, as ``key=value``, the config leaves that differ
    between configs of the same dataset (leaves that only differ across datasets, such as
    the dataset itself or per-dataset profile settings, do not split a row) and the
    settings in which a config differs from the default of its method, backbone, dataset
    and profile (``epochs=2`` when every run was made so). Empty for a default config
    that nothing splits. A label longer than ``limit`` keeps the keys that fit, says how
    many more there are and adds a digest of the whole label, so it stays unique."""
    leaves = {c.config_hash: _flatten(c.config) for c in cells}
    split_keys: set[str] = set()
    by_dataset: dict[str, list[str]] = defaultdict(list)
    for c in cells:
        by_dataset[c.dataset].append(c.config_hash)
    for hashes in by_dataset.values():
        keys = set().union(*(leaves[h] for h in hashes))
        split_keys |= {k for k in keys if len({leaves[h].get(k) for h in hashes}) > 1}
    changed = {c.config_hash: _changed(leaves[c.config_hash], default_leaves(c))
               - _chosen(c) for c in cells}
    names = _names(sorted(split_keys.union(*changed.values())))
    out = {}
    for h in leaves:
        ordered = sorted(split_keys | changed[h], key=lambda k: (names[k], k))
        out[h] = _fit([f"{names[k]}={_value(leaves[h].get(k))}" for k in ordered], limit)
    return out


def _fit(parts: list[str], limit: int) -> str:
    label = ", ".join(parts)
    if len(label) <= limit:
        return label
    # The digest of the whole label keeps two long labels apart; the config hash of each
    # cell (csv, --details, `sgid-bench runs show`) leads to its full config.
    tail = f" #{_digest(label)}"
    kept: list[str] = []
    for part in parts:
        rest = len(parts) - len(kept) - 1
        candidate = ", ".join([*kept, part]) + (f" +{rest} more" if rest else "") + tail
        if kept and len(candidate) > limit:
            break
        kept.append(part)
    rest = len(parts) - len(kept)
    return ", ".join(kept) + (f" +{rest} more" if rest else "") + tail


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:7]


#: The training budget of a run: epochs and training images per class. Rows of different
#: budgets are placed and ranked only against rows of their own budget.
BUDGET_KEYS = ("recipe.epochs", "dataset.params.train_per_class")


def budget(config: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """``(("epochs", "8"), ...)``: the budget settings ``config`` has."""
    leaves = _flatten(config)
    return tuple((k.rsplit(".", 1)[-1], leaves[k]) for k in BUDGET_KEYS if k in leaves)


def budget_text(value: tuple[tuple[str, str], ...], keys: set[str] | None = None) -> str:
    """``epochs=8, train_per_class=10`` (only ``keys`` when given)."""
    return ", ".join(f"{k}={v}" for k, v in value if keys is None or k in keys)


def base_signature(config: dict[str, Any]) -> str:
    """What a method's cell and its plain-backbone cell must share to be compared: harness,
    backbone, dataset, profile, recipe and the backbone's models (not the augmenters)."""
    name = (config.get("backbone") or {}).get("name", "")
    models = {k: v for k, v in (config.get("models") or {}).items()
              if k.startswith(f"{name}.")}
    keep = ("harness", "backbone", "dataset", "profile", "recipe", "val_fraction")
    return canonical_json({**{k: config.get(k) for k in keep}, "models": models})
