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

GAIN_NONE, GAIN_BEST, LOSS, THIN = "*", "†", "↓", "°"
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
    #: Leading columns that name a row (method, config...): a renderer that must split a
    #: wide grid into panels repeats them in each.
    key_columns: int = 1


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
    if cell.selected:
        text += f" [{cell.selected}]"
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


def _summaries(table: Table) -> bool:
    """Average and rank columns: not when a dataset filter hides columns they cover."""
    return not table.hidden_datasets


def _row_cells(row: Row, table: Table) -> list[Text]:
    if row.kind == MEASURED:
        cells = [cell_text(row.cells[d], table.alpha) if d in row.cells
                 else Text("—", numeric=True) for d in table.datasets]
        avg = average_text(row.average)
    else:
        cells = [_ref_text(row, d) for d in table.datasets]
        avg = _ref_text(row, AVERAGE)
    if not _summaries(table):
        return cells
    out = cells + ([avg] if table.has_average else [])
    if table.ranking:
        out.append(_rank_text(row))
    return out


def _rank_text(row: Row) -> Text:
    if row.rank is None:
        return Text("—", numeric=True)
    # A rank resting on a single-seed cell is shown, but never without a mark.
    return Text(fmt(row.rank), numeric=True, dim=row.rank_thin,
                mark=THIN if row.rank_thin else "")


def _ref_text(row: Row, dataset: str) -> Text:
    value = row.reference.get(dataset)
    if value is None:
        return Text("—", italic=True, numeric=True)
    return Text(fmt(value.accuracy), italic=True, numeric=True,
                mark=GAIN_NONE if value.significant else "")


def grid(table: Table) -> Grid:
    """The main table of one backbone."""
    header = ["Group", "Method", "Config", *map(dataset_label, table.datasets)]
    if _summaries(table):
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
                caption(table), numeric, key_columns=3)


def family_text(table: Table) -> str:
    """The Holm families and their sizes (over every stored row, hidden or not)."""
    parts = []
    for (profile, tiny), size in sorted(table.families.items()):
        what = f"{profile} profile" + (", tiny models" if tiny else "")
        parts.append(f"{size} test(s) of the {what}")
    if not parts:
        return "no tests"
    return ("one family of " if len(parts) == 1 else "separate families: ") + "; ".join(parts)


def caption(table: Table) -> str:
    """Names the test, the seeds, alpha, the Holm family, selection and rank statistics."""
    seeds = table.seed_counts()
    parts = []
    if seeds:
        n_seeds = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
        parts.append(
            f"Cells: mean ± std over seeds (n = {n_seeds} seeds per cell). {LEGEND}: two-sided "
            f"paired t-test over seeds (Welch's t-test over all seeds where the seeds do not "
            f"all pair), Holm-corrected over all comparisons of this backbone in the store, "
            f"{family_text(table)}; alpha = {table.alpha:g}. Filters hide rows, never tests. "
            "Bold best, underlined second (among cells with 2+ seeds of the same profile, "
            "model class and training budget); dimmed = no significant difference.")
    else:
        parts.append("No measured runs of this backbone match the filters.")
    if any(c.selected for r in table.measured for c in r.cells.values()):
        parts.append("[key=value]: the setting chosen per dataset by the best mean "
                     "validation accuracy among the stored settings (--select-by val); its "
                     "test accuracy is shown.")
    if table.hidden_rows or table.hidden_datasets:
        hidden = [f"{table.hidden_rows} row(s)"] if table.hidden_rows else []
        hidden += [f"dataset(s) {', '.join(table.hidden_datasets)}"] \
            if table.hidden_datasets else []
        parts.append(f"Hidden by the filters: {' and '.join(hidden)}; tests, best baselines "
                     "and ranks still count them" + ("; average and rank columns left out"
                                                     if table.hidden_datasets else ""))
    if table.failed:
        parts.append(f"{table.failed} failed run(s) hidden: {table.failed_hint}")
    if any(r.rank_thin for r in table.measured):
        parts.append(f"{THIN} rank resting on a cell with a single seed.")
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
    out = [f"Avg rank over {r.n_blocks} dataset(s), 1 = best, ties at display precision."]
    if r.friedman_p is not None:
        line = (f"Friedman chi² = {r.friedman_stat:.3f}, p = {r.friedman_p:.4g}; "
                f"Iman-Davenport F = {fmt(r.iman_davenport_f, 3)}, p = "
                f"{r.iman_davenport_p:.4g}")
        if r.cd is not None:
            line += f"; Nemenyi critical difference = {r.cd:.3f}"
        out.append(line + ".")
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
                "d_z (paired) or d_av (Welch). p (Holm): adjusted within its family, "
                f"{family_text(table)}.", numeric, key_columns=4)


def _detail_row(row: Row, dataset: str, cell: Cell, versus: str, c: stats.Comparison,
                alpha: float) -> list[Text]:
    ci = f"[{fmt(c.ci[0], signed=True)}, {fmt(c.ci[1], signed=True)}]" if c.ci else "—"
    effect = f"{c.effect_name} {fmt(c.effect)}" if c.effect is not None else "—"
    p = f"{c.p:.4g}" if c.p is not None else "—"
    ph = f"{c.p_holm:.4g}" if c.p_holm is not None else "—"
    sig = ("yes" if c.significant(alpha) else "no") if c.tested else "—"
    chosen = f"{cell.selected} chosen on val" if cell.selected else ""
    note = "; ".join(x for x in (c.reason or "", c.note, chosen, f"#{cell.short_hash}") if x)
    return [Text(row.method), Text(row.config_label), Text(dataset_label(dataset)), Text(versus),
            Text(c.test or "—"), Text(str(c.n)), Text(fmt(c.diff, signed=True)), Text(ci),
            Text(effect), Text(p), Text(ph), Text(sig, bold=sig == "yes"), Text(note)]


def posthoc_grid(table: Table) -> Grid | None:
    """Pairwise post-hoc p-values of the rank analysis (Nemenyi after a significant
    Friedman test; Wilcoxon-Holm only where an adjusted p can reach alpha), for the pairs
    whose rows are shown."""
    r = table.ranking
    if r is None or not r.nemenyi_p:
        return None
    shown = {id(row) for row in table.measured}
    visible = [id(row) in shown for row in table.ranked]
    wilcoxon = bool(r.wilcoxon_holm_p)
    header = ["Method A", "Method B", "Rank A", "Rank B", "Nemenyi p"]
    header += ["Wilcoxon-Holm p"] if wilcoxon else []
    rows = []
    for (i, j), p in r.nemenyi_p.items():
        if not (visible[i] and visible[j]):
            continue
        line = [Text(r.methods[i]), Text(r.methods[j]), Text(fmt(r.avg_ranks[i])),
                Text(fmt(r.avg_ranks[j])), Text(f"{p:.4g}", bold=p < table.alpha)]
        if wilcoxon:
            w = r.wilcoxon_holm_p[(i, j)]
            line.append(Text(f"{w:.4g}", bold=w < table.alpha))
        rows.append(line)
    return Grid(f"Post-hoc, backbone {table.backbone}", header, rows,
                " ".join(sentence(x) for x in ranking_lines(table)),
                [False, False] + [True] * (len(header) - 2), key_columns=2)
