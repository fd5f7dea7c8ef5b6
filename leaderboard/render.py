"""Text renderers of a :class:`~sgid_bench.leaderboard.table.Leaderboard`: rich terminal
table, markdown, csv (long format, one line per cell) and LaTeX (booktabs). HTML lives in
:mod:`sgid_bench.leaderboard.html`."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import IO, Any

from sgid_bench.leaderboard.grid import Grid, Text, details_grid, grid, posthoc_grid
from sgid_bench.leaderboard.table import AVERAGE, MEASURED, Cell, Leaderboard, Row, Table


def grids(lb: Leaderboard, details: bool = False) -> list[Grid]:
    """The grids to draw, in order: per backbone its table, then (details) its tests and
    post-hoc comparisons."""
    out: list[Grid] = []
    for table in lb.tables:
        out.append(grid(table))
        if details:
            out.append(details_grid(table))
            post = posthoc_grid(table)
            if post:
                out.append(post)
    return out


# -- rich -------------------------------------------------------------------------------

def _rich_style(t: Text) -> str:
    parts = [s for s, on in (("bold", t.bold), ("underline", t.underline), ("dim", t.dim),
                             ("italic", t.italic)) if on]
    return " ".join(parts)


def render_rich(lb: Leaderboard, file: IO[str], details: bool = False,
                width: int | None = None) -> None:
    """Rich tables on ``file``: numbers right-aligned, best bold, second underlined,
    not-significant dimmed, a caption naming the test, seeds and alpha; the details
    tables below the main one.

    Cells wrap between words, never inside one: every column is at least as wide as its
    longest word, and a grid too wide for the console is split into panels of columns,
    each repeating the columns that name the row."""
    from rich.console import Console

    # Off a terminal (a pipe, a file) keep lines whole rather than wrapped at 80 columns.
    console = Console(file=file, width=width or (None if file.isatty() else 240))
    for g in grids(lb, details):
        for table in rich_tables(g, console.width):
            console.print(table)


#: What a rich table with the default box adds to its columns' widths: a border and one
#: space of padding either side of each column, and the closing border.
_PER_COLUMN, _EDGE = 3, 1


def _column_texts(g: Grid) -> list[list[str]]:
    return [[g.header[i], *(row[i].text + row[i].mark for row in g.rows)]
            for i in range(len(g.header))]


def _longest_word(texts: list[str]) -> int:
    return max((len(w) for t in texts for w in t.split()), default=1) or 1


def _longest_line(texts: list[str]) -> int:
    return max((len(t) for t in texts), default=1) or 1


def _panels(least: list[int], key: int, width: int) -> list[list[int]]:
    """Column indices of each panel: the key columns that fit in two thirds of the width, then
    as many others as fit in ``width`` at their narrowest (at least one per panel)."""
    key_cols: list[int] = []
    base = _EDGE
    for i in range(min(key, len(least) - 1)):
        if key_cols and base + least[i] + _PER_COLUMN > 2 * width // 3:
            break
        key_cols.append(i)
        base += least[i] + _PER_COLUMN
    panels: list[list[int]] = []
    current: list[int] = []
    used = base
    for i in range(len(key_cols), len(least)):
        cost = least[i] + _PER_COLUMN
        if current and used + cost > width:
            panels.append(key_cols + current)
            current, used = [], base
        current.append(i)
        used += cost
    if current or not panels:
        panels.append(key_cols + current)
    return panels


#: How wide a numeric column grows before text columns get any spare room: a cell's
#: ``mean ± std (n=k)`` and its marks on one line.
_NUMBER_WIDTH = 20


def _widths(least: list[int], most: list[int], numeric: list[bool], room: int) -> list[int]:
    """Each column's width: its longest word, then the space left handed out one character
    at a time to the column furthest from holding its longest line, numbers first up to
    one cell's worth (a number split over lines reads worst)."""
    widths = list(least)
    spare = room - sum(widths)
    targets = ([min(m, _NUMBER_WIDTH) if n else w for w, m, n in zip(widths, most, numeric,
                                                                     strict=True)], most)
    for target in targets:
        while spare > 0:
            gaps = [t - w for w, t in zip(widths, target, strict=True)]
            i = max(range(len(gaps)), key=lambda k: gaps[k])
            if gaps[i] <= 0:
                break
            widths[i] += 1
            spare -= 1
    return widths


def rich_tables(g: Grid, width: int) -> list[Any]:
    """``g`` as rich tables that fit ``width`` columns (several panels when it must)."""
    from rich.markup import escape
    from rich.table import Table as RichTable
    from rich.text import Text as RichText

    texts = _column_texts(g)
    least = [_longest_word(t) for t in texts]
    most = [_longest_line(t) for t in texts]
    panels = _panels(least, g.key_columns, width)
    out = []
    for n, columns in enumerate(panels, 1):
        room = width - _EDGE - _PER_COLUMN * len(columns)
        widths = _widths([least[i] for i in columns], [most[i] for i in columns],
                         [g.numeric[i] for i in columns], room)
        title = g.title + (f" ({n}/{len(panels)})" if len(panels) > 1 else "")
        # Captions name settings as [key=value]: text, not rich markup.
        rt = RichTable(title=escape(title), caption=escape(g.caption) if n == len(panels)
                       else None, caption_justify="left")
        for i, w in zip(columns, widths, strict=True):
            rt.add_column(escape(g.header[i]), justify="right" if g.numeric[i] else "left",
                          width=w, overflow="fold")
        for row in g.rows:
            rt.add_row(*[RichText.assemble((row[i].text, _rich_style(row[i])),
                                           (row[i].mark, "bold")) for i in columns])
        out.append(rt)
    return out


# -- markdown ---------------------------------------------------------------------------

def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def _md(t: Text) -> str:
    text = md_escape(t.text)
    if text and text != "—":
        if t.bold:
            text = f"**{text}**"
        if t.underline:
            text = f"<u>{text}</u>"
        if t.italic:
            text = f"*{text}*"
    return text + (f"<sup>{md_escape(t.mark)}</sup>" if t.mark else "")


def markdown_grid(g: Grid, level: int = 2) -> str:
    align = ["---:" if n else ":---" for n in g.numeric]
    lines = [f"{'#' * level} {md_escape(g.title)}", "",
             "| " + " | ".join(map(md_escape, g.header)) + " |",
             "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_md(t) for t in row) + " |" for row in g.rows]
    return "\n".join([*lines, "", md_escape(g.caption), ""])


def render_markdown(lb: Leaderboard, details: bool = False) -> str:
    return "\n".join(markdown_grid(g) for g in grids(lb, details))


# -- csv --------------------------------------------------------------------------------

COMPARISON_FIELDS = ["test", "n", "diff", "ci_low", "ci_high", "statistic", "p", "p_holm",
                     "significant", "effect", "effect_name", "note"]
CSV_FIELDS = [
    "backbone", "group", "method", "kind", "profile", "tiny_models", "variant", "budget",
    "dataset",
    "config_hash", "n", "seeds", "mean", "std", "ci_low", "ci_high", "place",
    "selected", "val_mean", "select_candidates",
    *[f"vs_none_{f}" for f in COMPARISON_FIELDS], "best_baseline",
    *[f"vs_best_{f}" for f in COMPARISON_FIELDS], "holm_family_size",
    "reference", "delta", "avg_rank", "rank_single_seed",
    # Rank analysis (kind "friedman": one line per table; kind "posthoc": one per pair).
    "versus", "friedman_chi2", "friedman_p", "iman_davenport_f", "iman_davenport_p", "cd",
    "nemenyi_p", "wilcoxon_holm_p", "note",
]


def _comparison_fields(prefix: str, cell: Cell, alpha: float) -> dict[str, Any]:
    c = getattr(cell, prefix)
    if c is None:
        return {}
    values = {"test": c.test or "", "n": c.n, "diff": c.diff,
              "ci_low": c.ci[0] if c.ci else None, "ci_high": c.ci[1] if c.ci else None,
              "statistic": c.statistic, "p": c.p, "p_holm": c.p_holm,
              "significant": int(c.significant(alpha)) if c.tested else "",
              "effect": c.effect, "effect_name": c.effect_name,
              "note": "; ".join(x for x in (c.reason or "", c.note) if x)}
    return {f"{prefix}_{k}": v for k, v in values.items()}


def _candidates_text(cell: Cell) -> str:
    return "; ".join(f"{c.label}: val {c.val_mean:.4f}, test {c.test_mean:.4f}, n={c.n}"
                     for c in cell.candidates if c.val_mean is not None)


def _csv_cell(table: Table, row: Row, dataset: str, cell: Cell) -> dict[str, Any]:
    ci = cell.ci(table.alpha)
    ref = row.reference.get(dataset)
    notes = [c.reason for c in cell.comparisons() if c.reason]
    val = list(cell.val.values())
    return {
        "dataset": dataset, "config_hash": cell.config_hash, "n": cell.n,
        "seeds": " ".join(map(str, sorted(cell.values))), "mean": cell.mean, "std": cell.std,
        "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
        "place": cell.place or "", "best_baseline": cell.best_baseline,
        "selected": cell.selected, "val_mean": sum(val) / len(val) if val else None,
        "select_candidates": _candidates_text(cell),
        "holm_family_size": table.families.get(row.family),
        "reference": ref.accuracy if ref else None, "delta": cell.delta,
        "note": "; ".join(notes + (["no plain-backbone run"] if cell.no_baseline else [])),
        **_comparison_fields("vs_none", cell, table.alpha),
        **_comparison_fields("vs_best", cell, table.alpha),
    }


def _csv_rows(table: Table) -> list[dict[str, Any]]:
    out = []
    for row in table.rows:
        base = {"backbone": table.backbone, "group": row.group, "method": row.method,
                "kind": row.kind, "profile": row.profile, "tiny_models": int(row.tiny),
                "variant": row.variant, "budget": row.budget_label, "avg_rank": row.rank,
                "rank_single_seed": int(row.rank_thin) if row.rank is not None else ""}
        if row.kind == MEASURED:
            out += [{**base, **_csv_cell(table, row, d, c)} for d, c in row.cells.items()]
            if row.average:
                a = row.average
                out.append({**base, "dataset": AVERAGE, "n": a.n, "mean": a.mean,
                            "std": a.std, "place": a.place or "", "delta": a.delta})
        else:
            out += [{**base, "dataset": d, "reference": v.accuracy}
                    for d, v in row.reference.items()]
    return out + _csv_ranking(table)


def _csv_ranking(table: Table) -> list[dict[str, Any]]:
    """The Friedman / Iman-Davenport line and one line per post-hoc pair (every pair of
    the ranking: the csv is the complete record, hidden rows included)."""
    r = table.ranking
    if r is None:
        return []
    ranked = table.ranked[0]
    base = {"backbone": table.backbone, "profile": ranked.profile,
            "tiny_models": int(ranked.tiny)}
    out: list[dict[str, Any]] = [{
        **base, "kind": "friedman", "n": r.n_blocks, "friedman_chi2": r.friedman_stat,
        "friedman_p": r.friedman_p, "iman_davenport_f": r.iman_davenport_f,
        "iman_davenport_p": r.iman_davenport_p, "cd": r.cd, "note": " ".join(r.notes)}]
    for (i, j), p in r.nemenyi_p.items():
        out.append({**base, "kind": "posthoc", "method": r.methods[i], "versus": r.methods[j],
                    "avg_rank": r.avg_ranks[i], "n": r.n_blocks, "nemenyi_p": p,
                    "wilcoxon_holm_p": r.wilcoxon_holm_p.get((i, j))})
    return out


def render_csv(lb: Leaderboard) -> str:
    """Long format: one line per (table, row, dataset), every statistic in its column."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for table in lb.tables:
        for line in _csv_rows(table):
            writer.writerow({k: ("" if v is None else v) for k, v in line.items()})
    return buf.getvalue()


# -- latex ------------------------------------------------------------------------------

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$",
                  "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "--", "·": r"$\cdot$",
                  "−": "-", "²": r"$^2$", "–": "--", "†": r"$^\dagger$",
                  "↓": r"$^\downarrow$", "<": "$<$", ">": "$>$"}
_LATEX_MARKS = {"*": "*", "†": r"\dagger", "↓": r"\downarrow"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    for sym, rep in _LATEX_SYMBOLS.items():
        out = out.replace(sym, rep)
    return out


def _tex(t: Text) -> str:
    text = latex_escape(t.text)
    wrappers: list[tuple[bool, Callable[[str], str]]] = [
        (t.bold, lambda s: rf"\textbf{{{s}}}"), (t.underline, lambda s: rf"\underline{{{s}}}"),
        (t.italic, lambda s: rf"\textit{{{s}}}"), (t.dim, lambda s: rf"\textcolor{{gray}}{{{s}}}"),
    ]
    for on, wrap in wrappers:
        if on and text:
            text = wrap(text)
    if t.mark:
        text += "$^{" + "".join(_LATEX_MARKS.get(m, m) for m in t.mark) + "}$"
    return text


def latex_grid(g: Grid) -> str:
    cols = "".join("r" if n else "l" for n in g.numeric)
    lines = [r"\begin{table*}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(g.title)}. {latex_escape(g.caption)}}}",
             rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in g.header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(t) for t in row) + r" \\" for row in g.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table*}", ""]
    return "\n".join(lines)


def render_latex(lb: Leaderboard, details: bool = False) -> str:
    """One ``table*`` per grid; needs ``booktabs`` (and ``xcolor`` for dimmed cells)."""
    head = "% requires \\usepackage{booktabs,xcolor}\n"
    return head + "\n".join(latex_grid(g) for g in grids(lb, details))
