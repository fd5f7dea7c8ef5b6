"""Settings chosen on validation, never on test (``--select-by val``).

The SGID paper picks the noise rate n from {0.3, 0.5, 0.7} per dataset. A user who runs
every value and reads the best leaderboard row picks it on test, which flatters the
method. Here, cells of one method and dataset whose configs differ *only in the method's
own parameters* (``sgid.strength``, as a sweep's ``[select]`` grid or ``--param`` runs
make them) are candidates: the one with the best mean validation accuracy over its seeds
(``extra.val_top1``, measured on the validation split the run selected its epoch on) is
kept, its test accuracy shown, the chosen value named. The others leave the table.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sgid_bench.config import canonical_json

if TYPE_CHECKING:
    from sgid_bench.leaderboard.table import Cell

VAL, NONE = "val", "none"
SELECT_BY = (VAL, NONE)


@dataclass
class Candidate:
    """One setting a selected cell was chosen among."""

    label: str  # "sgid.strength=0.3"
    config_hash: str
    val_mean: float | None
    test_mean: float
    n: int


def own_params(config: dict[str, Any]) -> dict[str, Any]:
    """The parameters of the run's method parts: ``{"sgid.strength": 0.5, ...}``."""
    out: dict[str, Any] = {}
    for aug in config.get("augmenters") or []:
        for key, value in (aug.get("params") or {}).items():
            out[f"{aug.get('name')}.{key}"] = value
    return out


def without_own_params(config: dict[str, Any]) -> str:
    """What candidates of one selection must share: the config minus the method's params."""
    augmenters = [{k: v for k, v in a.items() if k != "params"}
                  for a in config.get("augmenters") or []]
    return canonical_json({**config, "augmenters": augmenters})


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def labels(cells: Sequence[Cell]) -> dict[str, str]:
    """``{config hash: "sgid.strength=0.7"}``: the own parameters that differ among
    ``cells``, with each cell's value."""
    params = {c.config_hash: own_params(c.config) for c in cells}
    keys = sorted({k for p in params.values() for k in p
                   if len({_text(q.get(k)) for q in params.values()}) > 1})
    return {h: ", ".join(f"{k}={_text(p.get(k, 'unset'))}" for k in keys)
            for h, p in params.items()}


def val_mean(cell: Cell) -> float | None:
    return sum(cell.val.values()) / len(cell.val) if cell.val else None


def select(cells: Sequence[Cell]) -> tuple[list[Cell], list[str]]:
    """Of each group of ``cells`` (one method; same dataset and config but for the
    method's own parameters) keep the cell with the best mean validation accuracy.

    A group with a candidate that has no validation accuracy is kept whole (each setting
    its own row) and a note says why: choosing without it would be choosing blind."""
    groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for cell in cells:
        groups[(cell.dataset, without_own_params(cell.config))].append(cell)
    kept: list[Cell] = []
    notes: list[str] = []
    for members in groups.values():
        if len(members) == 1:
            kept += members
            continue
        names = labels(members)
        blind = [names[c.config_hash] for c in members if not c.val]
        if blind:
            notes.append(f"{members[0].dataset}: not selected on validation, {len(blind)} "
                         f"setting(s) have no validation accuracy ({'; '.join(blind)})")
            kept += members
            continue
        kept.append(_choose(members, names))
    return kept, notes


def _choose(members: list[Cell], names: dict[str, str]) -> Cell:
    ordered = sorted(members, key=lambda c: names[c.config_hash])
    # Best validation mean; ties (at 1e-9) go to more validation seeds, then label order.
    best = max(ordered, key=lambda c: (round(val_mean(c) or -math.inf, 9), len(c.val)))
    best.selected = names[best.config_hash]
    best.candidates = [Candidate(names[c.config_hash], c.config_hash, val_mean(c), c.mean,
                                 c.n) for c in ordered]
    return best
