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
    not-significant dimmed, a caption naming the test, seeds and alpha."""
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text as RichText

    # Off a terminal (a pipe, a file) keep lines whole rather than wrapped at 80 columns.
    console = Console(file=file, width=width or (None if file.isatty() else 240))
    for g in grids(lb, details):
        rt = RichTable(title=g.title, caption=g.caption, caption_justify="left")
        for name, numeric in zip(g.header, g.numeric, strict=True):
            rt.add_column(name, justify="right" if numeric else "left", overflow="fold")
        for row in g.rows:
            rt.add_row(*[RichText.assemble((t.text, _rich_style(t)), (t.mark, "bold"))
                         for t in row])
        console.print(rt)


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

CSV_FIELDS = [
    "backbone", "group", "method", "kind", "profile", "tiny_models", "variant", "dataset",
    "config_hash", "n", "seeds", "mean", "std", "ci_low", "ci_high", "place",
    "vs_none_test", "vs_none_diff", "vs_none_p", "vs_none_p_holm", "vs_none_significant",
    "vs_none_effect", "best_baseline", "vs_best_test", "vs_best_diff", "vs_best_p",
    "vs_best_p_holm", "vs_best_significant", "vs_best_effect", "reference", "delta",
    "avg_rank", "note",
]


def _comparison_fields(prefix: str, cell: Cell, alpha: float) -> dict[str, Any]:
    c = getattr(cell, prefix)
    if c is None:
        return {}
    return {f"{prefix}_test": c.test or "", f"{prefix}_diff": c.diff, f"{prefix}_p": c.p,
            f"{prefix}_p_holm": c.p_holm, f"{prefix}_effect": c.effect,
            f"{prefix}_significant": int(c.significant(alpha)) if c.tested else ""}


def _csv_cell(table: Table, row: Row, dataset: str, cell: Cell) -> dict[str, Any]:
    ci = cell.ci(table.alpha)
    ref = row.reference.get(dataset)
    notes = [c.reason for c in cell.comparisons() if c.reason]
    return {
        "dataset": dataset, "config_hash": cell.config_hash, "n": cell.n,
        "seeds": " ".join(map(str, sorted(cell.values))), "mean": cell.mean, "std": cell.std,
        "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
        "place": cell.place or "", "best_baseline": cell.best_baseline,
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
                "variant": row.variant, "avg_rank": row.rank}
        if row.kind == MEASURED:
            out += [{**base, **_csv_cell(table, row, d, c)} for d, c in row.cells.items()]
            if row.average:
                a = row.average
                out.append({**base, "dataset": AVERAGE, "n": a.n, "mean": a.mean,
                            "std": a.std, "place": a.place or "", "delta": a.delta})
        else:
            out += [{**base, "dataset": d, "reference": v.accuracy}
                    for d, v in row.reference.items()]
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
