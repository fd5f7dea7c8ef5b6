"""The small table a multi-seed ``sgid-bench run`` ends with: per (method, backbone,
dataset) the mean ± std top-1 over the seeds just run, the dataset's chance level, and the
gain over the plain backbone (``none``) of the same config when the store has it, with the
leaderboard's test (:func:`sgid_bench.leaderboard.stats.compare`): a paired t-test when
both have the same seeds, Welch's t-test over every seed of both when they pair only in
part (no seed is dropped); else a hint naming the ``none`` run to make."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Config keys that define the ``none`` baseline of a run: everything but the method
#: (its augmenters, their models and generation settings).
BASELINE_KEYS = ("harness", "backbone", "dataset", "profile", "recipe", "val_fraction")


@dataclass
class Gain:
    """Mean of the method minus mean of ``none``, and the test of the difference."""

    mean: float
    seeds: list[int]  # the seeds both have
    p: float | None  # None when no test could be made (``reason`` says why)
    test: str = ""  # "paired t" or "Welch t"
    n: int = 0  # results the test used
    reason: str = ""


@dataclass
class Line:
    method: str
    backbone: str
    dataset: str
    config_hash: str
    top1: dict[int, float] = field(default_factory=dict)  # seed -> top-1 (%)
    chance: float | None = None  # percent
    gain: Gain | None = None
    hint: str | None = None  # what to run when there is no baseline

    @property
    def mean(self) -> float:
        return statistics.fmean(self.top1.values())

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.top1.values()) if len(self.top1) > 1 else None


def baseline_signature(config: dict[str, Any]) -> dict[str, Any]:
    """What a run's ``none`` baseline shares with it: the backbone, dataset, recipe and
    profile, and the backbone's own models (not the method's generators)."""
    out = {k: config.get(k) for k in BASELINE_KEYS}
    prefix = f"{(config.get('backbone') or {}).get('name')}."
    out["models"] = {k: v for k, v in (config.get("models") or {}).items()
                     if k.startswith(prefix)}
    return out


def chance_level(row: Any) -> float | None:
    """100 / number of classes, in percent."""
    classes = (row.extra or {}).get("num_classes") or len(row.per_class or {})
    return 100.0 / classes if classes else None


def summarize(rows: Sequence[Any], store: Any) -> list[Line]:
    """One :class:`Line` per config among ``rows`` (stored done runs), in first-seen
    order, each compared with the store's ``none`` runs of the same baseline signature."""
    lines: dict[str, Line] = {}
    for row in rows:
        line = lines.setdefault(row.config_hash, Line(row.method, row.backbone, row.dataset,
                                                      row.config_hash))
        line.top1[row.seed] = float(row.top1)
        line.chance = line.chance or chance_level(row)
    configs = {row.config_hash: row.config for row in rows}
    for line in lines.values():
        if line.method != "none":
            _compare(line, configs[line.config_hash], store)
    return list(lines.values())


def _compare(line: Line, config: dict[str, Any], store: Any) -> None:
    from sgid_bench.store import DONE

    wanted = baseline_signature(config)
    baseline: dict[str, dict[int, float]] = {}
    for run in store.runs(DONE, method="none", backbone=line.backbone, dataset=line.dataset,
                          profile=config.get("profile")):
        if run.top1 is not None and baseline_signature(run.config) == wanted:
            baseline.setdefault(run.config_hash, {})[run.seed] = float(run.top1)
    best = max(baseline.values(), key=lambda seeds: (len(seeds.keys() & line.top1.keys()),
                                                      len(seeds)), default={})
    if not best:
        seeds = " ".join(f"--seed {s}" for s in sorted(line.top1))
        line.hint = (f"{line.method} / {line.backbone} / {line.dataset}: no `none` run of the "
                     f"same config to compare with; run sgid-bench run --method none "
                     f"--backbone {line.backbone} --dataset {line.dataset} {seeds} "
                     f"(with the same train.* --param)")
        return
    from sgid_bench.leaderboard.stats import compare

    result = compare(line.top1, best)
    line.gain = Gain(result.diff, sorted(best.keys() & line.top1.keys()), result.p,
                     result.test or "", result.n, result.reason or "")
    missing = " ".join(f"--seed {s}" for s in sorted(line.top1.keys() - best.keys()))
    if result.reason and missing:
        line.hint = (f"{line.method} / {line.backbone} / {line.dataset}: {result.reason} "
                     f"to test the gain; sgid-bench run --method none --backbone "
                     f"{line.backbone} --dataset {line.dataset} {missing} pairs every seed")


def render(lines: Sequence[Line]) -> Any:
    """A rich table of ``lines``."""
    from rich.table import Table

    table = Table("method", "backbone", "dataset", "n", "top-1 %", "chance %", "vs none",
                  "p", title="summary of the seeds just run")
    for line in lines:
        std = f" ± {line.std:.2f}" if line.std is not None else ""
        gain = p = "-"
        if line.gain is not None:
            gain = f"{line.gain.mean:+.2f} (n={line.gain.n})"
            p = (f"{line.gain.p:.3g} ({line.gain.test})" if line.gain.p is not None
                 else line.gain.reason or "no test")
        elif line.method == "none":
            gain = "baseline"
        chance = f"{line.chance:.2f}" if line.chance is not None else "?"
        table.add_row(line.method, line.backbone, line.dataset, str(len(line.top1)),
                      f"{line.mean:.2f}{std}", chance, gain, p)
    return table
