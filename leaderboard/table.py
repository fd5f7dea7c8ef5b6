"""The leaderboard model: stored runs -> one table per backbone, with its statistics.

A *cell* is one (backbone, method, dataset, config hash): runs of different configs
(params, models, profile, harness or plugin versions) never average together. Cells of one
method line up into *rows* across datasets; when a dataset holds several configs of the
same method, the config leaves that tell them apart become the row's ``variant`` label
(``strength=0.3``), so each variant gets its own row, except that settings differing only
in the method's own parameters are chosen on validation by default
(:mod:`~sgid_bench.leaderboard.select`).

Statistics never depend on the view: tests, their Holm family, best baselines, averages
and ranks are computed over every stored run of the backbone (and profile); ``-m``/``-d``
filters hide rows and columns afterwards. Each (profile, tiny models) class of rows is its
own family of tests: tiny and real models are never corrected, ranked or coloured
together. (A sweep could declare a narrower family, its own planned comparisons, but the
store does not record which sweep a run came from; the family is therefore the data's,
and each caption states its size.) Within a class, rows of different training budgets
(epochs, training images per class) are placed and ranked only against their own budget.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np

from sgid_bench.errors import UserError
from sgid_bench.leaderboard import select, stats
from sgid_bench.leaderboard.configs import base_signature, budget, budget_text, variant_labels
from sgid_bench.leaderboard.failed import failed_counts, failed_hint
from sgid_bench.leaderboard.groups import GROUP_ORDER, is_sgid_family, method_group
from sgid_bench.leaderboard.reference import (
    AVERAGE,
    PAPER_DATASETS,
    PAPER_METHODS,
    Reference,
    RefValue,
    filter_reference,
    load_reference,
)
from sgid_bench.store import Run, Store

log = logging.getLogger(__name__)

PAPER_BACKBONES = ("resnet50", "vit", "clip_vit")
MEASURED, REFERENCE = "measured", "reference"


@dataclass
class Cell:
    """The runs of one config on one dataset: ``{seed: top-1 %}``."""

    dataset: str
    config_hash: str
    config: dict[str, Any]
    values: dict[int, float] = field(default_factory=dict)
    val: dict[int, float] = field(default_factory=dict)  # seed -> validation top-1 %
    selected: str = ""  # the setting chosen on validation ("sgid.strength=0.7")
    candidates: list[select.Candidate] = field(default_factory=list)
    vs_none: stats.Comparison | None = None
    vs_best: stats.Comparison | None = None
    best_baseline: str = ""
    no_baseline: bool = False
    place: int = 0  # 1 best of its column, 2 second
    delta: float | None = None  # mean - reference
    split: bool = False  # its (method, dataset) has several configs in this table

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values())))

    @property
    def std(self) -> float | None:
        return float(np.std(list(self.values.values()), ddof=1)) if self.n >= 2 else None

    def ci(self, alpha: float) -> tuple[float, float] | None:
        return stats.mean_ci(list(self.values.values()), alpha)

    @property
    def short_hash(self) -> str:
        return self.config_hash[:7]

    def comparisons(self) -> list[stats.Comparison]:
        return [c for c in (self.vs_none, self.vs_best) if c is not None]

    @property
    def rankable(self) -> bool:
        """Enough seeds to be called best or second (and ranked without a mark)."""
        return self.n >= 2


#: A class of rows that is its own family of tests: (profile, tiny models).
Family = tuple[str, bool]


@dataclass
class Average:
    """A row's average over the table's measured datasets (std over per-seed averages of
    the seeds every cell has)."""

    mean: float
    std: float | None
    n: int
    place: int = 0
    delta: float | None = None


@dataclass
class Row:
    method: str
    group: str
    profile: str
    tiny: bool
    variant: str = ""
    kind: str = MEASURED
    cells: dict[str, Cell] = field(default_factory=dict)
    reference: dict[str, RefValue] = field(default_factory=dict)
    average: Average | None = None
    rank: float | None = None
    rank_thin: bool = False  # its rank rests on a cell with fewer than two seeds
    budget_label: str = ""  # "epochs=2" where its class mixes training budgets

    @property
    def family(self) -> Family:
        return (self.profile, self.tiny)

    @property
    def selected_keys(self) -> list[str]:
        """The parameters chosen on validation in some cell of this row."""
        keys = {part.partition("=")[0] for c in self.cells.values() if c.selected
                for part in c.selected.split(", ")}
        return sorted(keys)

    @property
    def config_label(self) -> str:
        if self.kind == REFERENCE:
            return "paper Table 1"
        chosen = ", ".join(self.selected_keys)
        parts = [self.profile, "tiny models" if self.tiny else "", self.variant,
                 self.budget_label, f"{chosen} chosen on val" if chosen else ""]
        return " · ".join(p for p in parts if p)

    @property
    def name(self) -> str:
        """Method plus what tells this row apart from its siblings."""
        extra = f" [{self.config_label}]" if self.kind == MEASURED else " (paper)"
        return self.method + extra


@dataclass
class Table:
    backbone: str
    datasets: list[str]
    rows: list[Row]
    alpha: float
    ranking: stats.Ranking | None = None
    ranked: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Tests per family (profile, tiny), counted over every stored row, hidden or not.
    families: dict[Family, int] = field(default_factory=dict)
    hidden_rows: int = 0
    hidden_datasets: list[str] = field(default_factory=list)
    select_by: str = select.VAL
    #: Failed runs of this backbone that the filters select (never in the table), and the
    #: command that lists them.
    failed: int = 0
    failed_hint: str = ""
    #: Budget settings that vary within a family on some dataset ({"epochs"}).
    budget_keys: dict[Family, set[str]] = field(default_factory=dict)

    @property
    def measured(self) -> list[Row]:
        return [r for r in self.rows if r.kind == MEASURED]

    @property
    def measured_datasets(self) -> list[str]:
        return [d for d in self.datasets if any(d in r.cells for r in self.measured)]

    def comparisons(self) -> list[stats.Comparison]:
        return [c for r in self.measured for cell in r.cells.values() for c in cell.comparisons()]

    def seed_counts(self) -> list[int]:
        return sorted({c.n for r in self.measured for c in r.cells.values()})

    @property
    def has_average(self) -> bool:
        return any(r.average or AVERAGE in r.reference for r in self.rows)


@dataclass
class Leaderboard:
    tables: list[Table]
    alpha: float
    reference: str | None = None


def build(
    store: Store,
    *,
    backbones: Sequence[str] = (),
    datasets: Sequence[str] = (),
    methods: Sequence[str] = (),
    profiles: Sequence[str] = (),
    alpha: float = 0.05,
    reference: str | None = None,
    select_by: str = select.VAL,
) -> Leaderboard:
    """The leaderboard of the finished runs in ``store`` (an empty filter keeps
    everything), with reference rows from ``reference`` (``paper``) when asked: those
    pass the same backbone / method / dataset filters.

    Backbone and profile filters choose the data; method and dataset filters only hide
    rows and columns of tables computed over every run of the backbone, so a filter never
    changes a p-value, a best baseline or a rank."""
    if select_by not in select.SELECT_BY:
        raise UserError(f"--select-by {select_by!r}: use one of {', '.join(select.SELECT_BY)}")
    runs = [r for r in store.runs(
        status="done", backbone=list(backbones) or None, profile=list(profiles) or None,
        on_invalid=_skip_unreadable,
    ) if r.top1 is not None]
    ref: Reference = {}
    if reference:
        ref = filter_reference(load_reference(reference), tuple(backbones), tuple(methods),
                               tuple(datasets))
    by_backbone: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_backbone[run.backbone].append(run)
    names = set(by_backbone) | {b for b, _, _ in ref}
    tables = [build_table(b, by_backbone.get(b, []), alpha, ref, select_by)
              for b in sorted(names, key=_order_key(PAPER_BACKBONES))]
    shown = [hide(t, methods, datasets) for t in tables]
    _count_failed(store, shown, profiles, methods, datasets)
    return Leaderboard([t for t in shown if t.rows], alpha, reference)


def _count_failed(store: Store, tables: list[Table], profiles: Sequence[str],
                  methods: Sequence[str], datasets: Sequence[str]) -> None:
    counts = failed_counts(store, backbones=[t.backbone for t in tables], profiles=profiles,
                           methods=methods, datasets=datasets)
    for table in tables:
        table.failed = counts.get(table.backbone, 0)
        if table.failed:
            table.failed_hint = failed_hint(store, backbones=[table.backbone],
                                            profiles=profiles, methods=methods,
                                            datasets=datasets)


def _skip_unreadable(run_id: int, reason: str) -> None:
    # One damaged row must not hide every other result.
    log.warning("skipped run %s: its stored data is unreadable (%s); inspect or delete the "
                "row (runs.id = %s) in the store", run_id, reason, run_id)


def build_table(backbone: str, runs: Iterable[Run], alpha: float, ref: Reference,
                select_by: str = select.VAL) -> Table:
    """One backbone's table: rows, comparisons (Holm per family), places, averages,
    ranks, and the reference rows and differences."""
    notes: list[str] = []
    rows = _measured_rows(runs, select_by, notes)
    ref_rows = _reference_rows(backbone, ref)
    columns = {d for r in rows for d in r.cells} | {d for r in ref_rows for d in r.reference}
    columns.discard(AVERAGE)
    table = Table(backbone, sorted(columns, key=_order_key(PAPER_DATASETS)), [], alpha,
                  select_by=select_by)
    table.rows = _interleave(rows, ref_rows)
    _compare(table)
    _holm(table)
    _mark_budgets(table)
    _averages(table)
    _places(table)
    _rank(table)
    _deltas(table)
    table.notes += notes
    if any(r.tiny for r in table.measured):
        table.notes.append("tiny models: random-weight stand-ins of the real architectures; "
                           "their accuracies check the pipeline, not the methods")
    return table


def hide(table: Table, methods: Sequence[str], datasets: Sequence[str]) -> Table:
    """Hide the rows of other methods and the columns of other datasets; everything
    computed stays as computed over the whole table."""
    if datasets:
        hidden = [d for d in table.datasets if d not in datasets]
        table.hidden_datasets = [d for d in hidden if any(d in r.cells for r in table.measured)]
        table.datasets = [d for d in table.datasets if d in datasets]
        for row in table.measured:
            row.cells = {d: c for d, c in row.cells.items() if d in datasets}
    keep = [r for r in table.rows if (not methods or r.method in methods)
            and (r.kind != MEASURED or r.cells)]
    table.hidden_rows = len(table.measured) - sum(r.kind == MEASURED for r in keep)
    table.rows = keep
    return table


# -- rows -------------------------------------------------------------------------------

def _measured_rows(runs: Iterable[Run], select_by: str, notes: list[str]) -> list[Row]:
    cells: dict[str, Cell] = {}
    meta: dict[str, tuple[str, str, bool]] = {}
    for run in runs:
        cell = cells.setdefault(run.config_hash, Cell(run.dataset, run.config_hash,
                                                      run.config or {}))
        cell.values[run.seed] = float(run.top1)  # type: ignore[arg-type]
        val = (run.extra or {}).get("val_top1")
        if isinstance(val, (int, float)) and math.isfinite(val):
            cell.val[run.seed] = float(val)
        meta[run.config_hash] = (run.method, run.profile, bool(run.tiny_models))
    families: dict[tuple[str, str, bool], list[Cell]] = defaultdict(list)
    for h, cell in cells.items():
        families[meta[h]].append(cell)
    rows: dict[tuple[str, str, bool, str], Row] = {}
    for (method, profile, tiny), members in families.items():
        if select_by == select.VAL:
            members, why = select.select(members)
            notes += [f"{method}: {w}" for w in why]
        labels = variant_labels(members)
        for cell in members:
            key = (method, profile, tiny, labels[cell.config_hash])
            row = rows.setdefault(key, Row(method, method_group(method), profile, tiny,
                                           labels[cell.config_hash]))
            row.cells[cell.dataset] = cell
            cell.split = len(labels) > 1 and sum(c.dataset == cell.dataset
                                                 for c in members) > 1
    return list(rows.values())


def _reference_rows(backbone: str, ref: Reference) -> list[Row]:
    rows: dict[str, Row] = {}
    for (b, method, dataset), value in ref.items():
        if b == backbone:
            row = rows.setdefault(method, Row(method, method_group(method), "paper", False,
                                              kind=REFERENCE))
            row.reference[dataset] = value
    return list(rows.values())


def _row_key(row: Row) -> tuple[Any, ...]:
    group = GROUP_ORDER.index(row.group) if row.group in GROUP_ORDER else len(GROUP_ORDER)
    method = PAPER_METHODS.index(row.method) if row.method in PAPER_METHODS else 99
    return (group, row.group, method, row.method, row.kind == REFERENCE, row.profile,
            row.tiny, row.variant)


def _interleave(measured: list[Row], reference: list[Row]) -> list[Row]:
    # Sorting puts each method's paper row right after its measured rows.
    return sorted([*measured, *reference], key=_row_key)


def _order_key(known: Sequence[str]) -> Any:
    return lambda name: (known.index(name) if name in known else len(known), name)


# -- comparisons ------------------------------------------------------------------------

def _candidates(table: Table, row: Row, cell: Cell) -> list[tuple[Row, Cell]]:
    sig = base_signature(cell.config)
    return [(r, r.cells[cell.dataset]) for r in table.measured
            if r is not row and r.profile == row.profile and r.tiny == row.tiny
            and cell.dataset in r.cells and base_signature(r.cells[cell.dataset].config) == sig]


def _shown(value: float) -> float:
    """A mean as displayed (2 decimals): what ties and places are judged on."""
    return round(value, 2)


def _best_baseline(rivals: list[tuple[Row, Cell]]) -> tuple[Row, Cell] | None:
    # Never a best baseline on fewer than two seeds: one lucky seed would set the bar.
    enough = [(r, c) for r, c in rivals if c.n >= 2]
    if not enough:
        return None
    # Ties at display precision go to more seeds, then to the method name (stable).
    ordered = sorted(enough, key=lambda rc: (rc[0].method, rc[0].variant))
    return max(ordered, key=lambda rc: (_shown(rc[1].mean), rc[1].n))


def _compare(table: Table) -> None:
    for row in table.measured:
        if row.method == "none":
            continue
        for cell in row.cells.values():
            peers = _candidates(table, row, cell)
            nones = [c for r, c in peers if r.method == "none"]
            if nones:
                base = max(nones, key=lambda c: (len(set(c.values) & set(cell.values)), c.n))
                cell.vs_none = stats.compare(cell.values, base.values, table.alpha)
            else:
                cell.no_baseline = True
            if is_sgid_family(row.method):
                best = _best_baseline([(r, c) for r, c in peers if r.method != "none"
                                       and not is_sgid_family(r.method)])
                if best:
                    cell.vs_best = stats.compare(cell.values, best[1].values, table.alpha)
                    cell.best_baseline = best[0].method


def _holm(table: Table) -> None:
    """Holm over each family: every test of one (profile, tiny) class of this backbone."""
    families: dict[Family, list[stats.Comparison]] = defaultdict(list)
    for row in table.measured:
        for cell in row.cells.values():
            families[row.family] += cell.comparisons()
    for key, comps in families.items():
        stats.apply_holm(comps)
        table.families[key] = sum(c.tested for c in comps)


def _coverage(table: Table) -> dict[tuple[str, bool], list[str]]:
    """Datasets measured per (profile, tiny) class: averages and ranks only compare rows
    over the same datasets."""
    seen: dict[tuple[str, bool], set[str]] = defaultdict(set)
    for row in table.measured:
        seen[(row.profile, row.tiny)] |= set(row.cells)
    return {k: [d for d in table.datasets if d in v] for k, v in seen.items()}


def _averages(table: Table) -> None:
    coverage = _coverage(table)
    for row in table.measured:
        columns = coverage[(row.profile, row.tiny)]
        if any(d not in row.cells for d in columns):
            continue
        cells = [row.cells[d] for d in columns]
        common = sorted(set.intersection(*(set(c.values) for c in cells)))
        per_seed = [float(np.mean([c.values[s] for c in cells])) for s in common]
        std = float(np.std(per_seed, ddof=1)) if len(per_seed) >= 2 else None
        row.average = Average(float(np.mean([c.mean for c in cells])), std, len(common))


def _mark_places(items: list[tuple[float, Any]]) -> None:
    # Places by the displayed (2-decimal) value, so equal-looking numbers share a place.
    # Alone in its group a result is not "best" of anything.
    if len(items) < 2:
        return
    shown = sorted({_shown(v) for v, _ in items}, reverse=True)
    for value, obj in items:
        place = shown.index(_shown(value)) + 1
        obj.place = place if place <= 2 else 0


def _budget_texts(cells: Iterable[Cell], varying: set[str]) -> list[str]:
    """The distinct budget texts of ``cells`` (a dataset without the varying settings has
    none, and adds nothing)."""
    return sorted({t for c in cells if (t := budget_text(budget(c.config), varying))})


def _row_budget(row: Row, columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(budget(row.cells[d].config) for d in columns if d in row.cells)


def _places(table: Table) -> None:
    # Within each family and training budget: a tiny-model cell is never "best" against
    # real models, nor a 2-epoch run against a 30-epoch one. Cells (and averages) on fewer
    # than two seeds are never placed.
    coverage = _coverage(table)
    for key, columns in coverage.items():
        rows = [r for r in table.measured if r.family == key]
        for d in table.measured_datasets:
            groups: dict[Any, list[tuple[float, Any]]] = defaultdict(list)
            for r in rows:
                if d in r.cells and r.cells[d].rankable:
                    groups[budget(r.cells[d].config)].append((r.cells[d].mean, r.cells[d]))
            for items in groups.values():
                _mark_places(items)
        averages: dict[Any, list[tuple[float, Any]]] = defaultdict(list)
        for r in rows:
            if r.average and r.average.n >= 2:
                averages[_row_budget(r, columns)].append((r.average.mean, r.average))
        for items in averages.values():
            _mark_places(items)


def _mark_budgets(table: Table) -> None:
    """Where a (profile, tiny) class mixes training budgets on a dataset, name each row's
    budget in its config label (unless its variant already does) and say how rows of
    different budgets are compared."""
    for key in _coverage(table):
        rows = [r for r in table.measured if r.family == key]
        per_dataset: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for r in rows:
            for d, c in r.cells.items():
                per_dataset[d] |= set(budget(c.config))
        varying = {k for values in per_dataset.values() for k, _ in values
                   if len({v for kk, v in values if kk == k}) > 1}
        if not varying:
            continue
        table.budget_keys[key] = varying
        for row in rows:
            texts = _budget_texts(row.cells.values(), varying)
            if not {p for t in texts for p in t.split(", ")} <= set(row.variant.split(", ")):
                row.budget_label = "; ".join(texts)
        what = f"{key[0]} profile" + (", tiny models" if key[1] else "")
        table.notes.append(f"{what}: rows trained with different budgets "
                           f"({', '.join(sorted(varying))}) are placed and ranked only "
                           "against rows of the same budget")


def _rank(table: Table) -> None:
    # Rank the (profile, tiny, budget) class with the most rows complete over its
    # family's datasets: rows of other budgets are never ranked against it.
    options = []
    for (profile, tiny), columns in _coverage(table).items():
        complete = [r for r in table.measured if (r.profile, r.tiny) == (profile, tiny)
                    and all(d in r.cells for d in columns)]
        by_budget: dict[Any, list[Row]] = defaultdict(list)
        for r in complete:
            by_budget[_row_budget(r, columns)].append(r)
        for rows in by_budget.values():
            options.append((len(rows), len(columns), profile, tiny, rows, columns))
    if not options:
        return
    n_rows, _, profile, tiny, rows, columns = max(options, key=lambda o: o[:2])
    if n_rows < 2:
        return
    # Ranks on the displayed means: numbers that look equal tie.
    scores = np.array([[_shown(r.cells[d].mean) for d in columns] for r in rows])
    names = [r.method + (f" [{r.variant}]" if r.variant else "") for r in rows]
    table.ranking = stats.rank(scores, names, table.alpha)
    table.ranked = rows
    for row, avg in zip(rows, table.ranking.avg_ranks, strict=True):
        row.rank = avg
        row.rank_thin = any(not row.cells[d].rankable for d in columns)
    left_out = len(table.measured) - len(rows)
    if left_out:
        what = f"{profile} profile" + (", tiny models" if tiny else "")
        varying = table.budget_keys.get(rows[0].family)
        if varying:
            texts = _budget_texts((rows[0].cells[d] for d in columns), varying)
            if texts:
                what += f", {'; '.join(texts)}"
        table.ranking.notes.append(
            f"ranks cover the {what} rows with a result on {', '.join(columns)}; "
            f"{left_out} other row(s) are left out")


def _deltas(table: Table) -> None:
    refs = {r.method: r.reference for r in table.rows if r.kind == REFERENCE}
    coverage = _coverage(table)
    for row in table.measured:
        ref = refs.get(row.method)
        # Only real-model paper-profile runs are comparable with the published numbers.
        if not ref or row.profile != "paper" or row.tiny:
            continue
        for d, cell in row.cells.items():
            if d in ref:
                cell.delta = cell.mean - ref[d].accuracy
        if row.average and AVERAGE in ref and \
                set(coverage[(row.profile, row.tiny)]) == set(PAPER_DATASETS):
            row.average.delta = row.average.mean - ref[AVERAGE].accuracy


def dataset_label(name: str) -> str:
    """A dataset name short enough for a column header: ``imagefolder:/a/b/pets`` ->
    ``imagefolder:pets`` (the full name stays in csv and the store)."""
    prefix, sep, path = name.partition(":")
    return f"{prefix}:{PurePath(path).name or path}" if sep else name


def fmt(value: float | None, digits: int = 2, signed: bool = False) -> str:
    """A number for display; an em dash for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
