"""Format-neutral layout of a leaderboard table: header, styled cells, caption and the
details tables. Every renderer (rich, markdown, latex, html) draws the same grid, so the
formats never disagree about what a cell says."""

from __future__ import annotations

from dataclasses import dataclass

from sgid_bench.leaderboard import stats
from sgid_bench.leaderboard.table import (
    AVERAGE,
    MEASURED,
    Average,
    Cell,
    Row,
    Table,
    dataset_label,
    fmt,
)

GAIN_NONE, GAIN_BEST, LOSS = "*", "†", "↓"
LEGEND = (f"{GAIN_NONE} significant gain over the plain backbone (none), {GAIN_BEST} over "
          f"the best non-SGID baseline, {LOSS} significantly below the plain backbone")


@dataclass
class Text:
    """One table cell: its text plus the styling every format maps to its own markup."""

    text: str
    bold: bool = False
    underline: bool = False
    dim: bool = False
    italic: bool = False
    mark: str = ""  # significance marks, drawn as superscripts where the format can
    numeric: bool = False  # right-aligned


@dataclass
class Grid:
    title: str
    header: list[str]
    rows: list[list[Text]]
    caption: str
    numeric: list[bool]


def _marks(cell: Cell, alpha: float) -> str:
    out = ""
    if cell.vs_none and cell.vs_none.significant(alpha):
        out += GAIN_NONE if cell.vs_none.diff > 0 else LOSS
    if cell.vs_best and cell.vs_best.significant(alpha) and cell.vs_best.diff > 0:
        out += GAIN_BEST
    return out


def _untested_reason(cell: Cell) -> str:
    if cell.n < 2:
        return "too few seeds"
    if cell.vs_none and cell.vs_none.reason:
        return f"no test: {cell.vs_none.reason}"
    return ""


def cell_text(cell: Cell, alpha: float) -> Text:
    """``mean ± std (n=k)`` with marks, place, and a note when no test could be made."""
    text = f"{fmt(cell.mean)} ± {fmt(cell.std)}" if cell.std is not None else fmt(cell.mean)
    text += f" (n={cell.n})"
    reason = _untested_reason(cell)
    if reason:
        text += f" {reason}"
    if cell.delta is not None:
        text += f" Δ{fmt(cell.delta, signed=True)}"
    if cell.split:
        text += f" #{cell.short_hash}"
    tested = [c for c in cell.comparisons() if c.tested]
    dim = bool(tested) and not any(c.significant(alpha) for c in tested)
    return Text(text, bold=cell.place == 1, underline=cell.place == 2, dim=dim,
                mark=_marks(cell, alpha), numeric=True)


def average_text(avg: Average | None) -> Text:
    if avg is None:
        return Text("—", numeric=True)
    text = f"{fmt(avg.mean)} ± {fmt(avg.std)}" if avg.std is not None else fmt(avg.mean)
    if avg.delta is not None:
        text += f" Δ{fmt(avg.delta, signed=True)}"
    return Text(text, bold=avg.place == 1, underline=avg.place == 2, numeric=True)


def _row_cells(row: Row, table: Table) -> list[Text]:
    if row.kind == MEASURED:
        cells = [cell_text(row.cells[d], table.alpha) if d in row.cells
                 else Text("—", numeric=True) for d in table.datasets]
        avg = average_text(row.average)
    else:
        cells = [_ref_text(row, d) for d in table.datasets]
        avg = _ref_text(row, AVERAGE)
    out = cells + ([avg] if table.has_average else [])
    if table.ranking:
        out.append(Text(fmt(row.rank) if row.rank is not None else "—", numeric=True))
    return out


def _ref_text(row: Row, dataset: str) -> Text:
    value = row.reference.get(dataset)
    if value is None:
        return Text("—", italic=True, numeric=True)
    return Text(fmt(value.accuracy), italic=True, numeric=True,
                mark=GAIN_NONE if value.significant else "")


def grid(table: Table) -> Grid:
    """The main table of one backbone."""
    header = ["Group", "Method", "Config", *map(dataset_label, table.datasets)]
    header += ["Average"] if table.has_average else []
    header += ["Avg rank"] if table.ranking else []
    rows, last_group = [], None
    for row in table.rows:
        group = row.group if row.group != last_group else ""
        last_group = row.group
        rows.append([Text(group), Text(row.method, italic=row.kind != MEASURED),
                     Text(row.config_label, dim=True), *_row_cells(row, table)])
    numeric = [False, False, False] + [True] * (len(header) - 3)
    return Grid(f"Top-1 accuracy (%), backbone {table.backbone}", header, rows,
                caption(table), numeric)


def caption(table: Table) -> str:
    """Names the test, the seeds, alpha, and the rank statistics."""
    seeds = table.seed_counts()
    parts = []
    if seeds:
        n_seeds = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
        tests = [c for c in table.comparisons() if c.tested]
        parts.append(
            f"Cells: mean ± std over seeds (n = {n_seeds} seeds per cell). {LEGEND}: two-sided "
            f"paired t-test over seeds (Welch's t-test where seeds do not pair), "
            f"Holm-corrected over the {len(tests)} tests of this table, alpha = "
            f"{table.alpha:g}. Bold best, underlined second; dimmed = no significant "
            "difference.")
    else:
        parts.append("No measured runs of this backbone match the filters.")
    if any(r.kind != MEASURED for r in table.rows):
        parts.append("Italic rows: the paper's Table 1, * where the paper marks the gain "
                     "significant (p < 0.05); Δ = measured − paper, for paper-profile runs "
                     "with real models only.")
    parts += ranking_lines(table) + table.notes
    return " ".join(sentence(p) for p in parts)


def sentence(text: str) -> str:
    """Capitalised and full-stopped, so notes read as sentences in a caption."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def ranking_lines(table: Table) -> list[str]:
    r = table.ranking
    if r is None:
        return []
    out = [f"Avg rank over {r.n_blocks} dataset(s), 1 = best."]
    if r.friedman_p is not None:
        out.append(f"Friedman chi² = {r.friedman_stat:.3f}, p = {r.friedman_p:.4g}; "
                   f"Nemenyi critical difference = {r.cd:.3f}.")
    return out + r.notes


def details_grid(table: Table) -> Grid:
    """Every comparison of the table: test, n, difference, CI, effect size, raw and Holm p."""
    header = ["Method", "Config", "Dataset", "Versus", "Test", "n", "Diff", "CI",
              "Effect", "p", "p (Holm)", "Sig.", "Note"]
    rows = []
    for row in table.measured:
        for d, cell in row.cells.items():
            for versus, comp in (("none", cell.vs_none), (cell.best_baseline, cell.vs_best)):
                if comp is not None:
                    rows.append(_detail_row(row, d, cell, versus, comp, table.alpha))
            if cell.no_baseline and row.method != "none":
                rows.append([Text(row.method), Text(row.config_label), Text(dataset_label(d)),
                         Text("none"),
                             *[Text("")] * 8, Text("no plain-backbone run with this config")])
    numeric = [False] * 5 + [True] * 6 + [False] * 2
    level = f"{100 * (1 - table.alpha):g}%"
    return Grid(f"Tests, backbone {table.backbone}", header, rows,
                f"CI: {level} confidence interval of the mean difference. Effect: Cohen's "
                "d_z (paired) or d_av (Welch). p (Holm): adjusted over the table.", numeric)


def _detail_row(row: Row, dataset: str, cell: Cell, versus: str, c: stats.Comparison,
                alpha: float) -> list[Text]:
    ci = f"[{fmt(c.ci[0], signed=True)}, {fmt(c.ci[1], signed=True)}]" if c.ci else "—"
    effect = f"{c.effect_name} {fmt(c.effect)}" if c.effect is not None else "—"
    p = f"{c.p:.4g}" if c.p is not None else "—"
    ph = f"{c.p_holm:.4g}" if c.p_holm is not None else "—"
    sig = ("yes" if c.significant(alpha) else "no") if c.tested else "—"
    note = "; ".join(x for x in (c.reason or "", c.note, f"#{cell.short_hash}") if x)
    return [Text(row.method), Text(row.config_label), Text(dataset_label(dataset)), Text(versus),
            Text(c.test or "—"), Text(str(c.n)), Text(fmt(c.diff, signed=True)), Text(ci),
            Text(effect), Text(p), Text(ph), Text(sig, bold=sig == "yes"), Text(note)]


def posthoc_grid(table: Table) -> Grid | None:
    """Pairwise post-hoc p-values of the rank analysis (Nemenyi; Wilcoxon-Holm where the
    number of datasets allows)."""
    r = table.ranking
    if r is None or not r.nemenyi_p:
        return None
    header = ["Method A", "Method B", "Rank A", "Rank B", "Nemenyi p", "Wilcoxon-Holm p"]
    rows = []
    for (i, j), p in r.nemenyi_p.items():
        w = r.wilcoxon_holm_p.get((i, j))
        rows.append([Text(r.methods[i]), Text(r.methods[j]), Text(fmt(r.avg_ranks[i])),
                     Text(fmt(r.avg_ranks[j])), Text(f"{p:.4g}", bold=p < table.alpha),
                     Text(f"{w:.4g}" if w is not None else "—")])
    return Grid(f"Post-hoc, backbone {table.backbone}", header, rows,
                " ".join(sentence(x) for x in ranking_lines(table)), [False, False] + [True] * 4)
