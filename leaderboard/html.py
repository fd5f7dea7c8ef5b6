"""A self-contained HTML page of the leaderboard: tables plus figures embedded as base64
PNG, inline CSS, no external resource (it opens from a file, offline)."""

from __future__ import annotations

import base64
from html import escape

from sgid_bench.leaderboard.grid import Grid, Text
from sgid_bench.leaderboard.render import grids
from sgid_bench.leaderboard.table import Leaderboard

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; white-space: nowrap; }
th { border-bottom: 2px solid #444; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.best { font-weight: bold; } .second { text-decoration: underline; }
.dim { color: #999; } .ref { font-style: italic; color: #555; }
caption { caption-side: bottom; text-align: left; max-width: 70em; white-space: normal;
          font-size: 0.85em; color: #444; padding-top: 0.5em; }
figure { display: inline-block; margin: 1em 1em 1em 0; }
figure img { max-width: 100%; }
p.note { color: #555; font-style: italic; }
"""


def _td(t: Text, numeric: bool) -> str:
    classes = [c for c, on in (("num", numeric), ("best", t.bold), ("second", t.underline),
                               ("dim", t.dim), ("ref", t.italic)) if on]
    mark = f"<sup>{escape(t.mark)}</sup>" if t.mark else ""
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attr}>{escape(t.text)}{mark}</td>"


def html_grid(g: Grid) -> str:
    head = "".join(f'<th{" class=num" if n else ""}>{escape(h)}</th>'
                   for h, n in zip(g.header, g.numeric, strict=True))
    body = "\n".join("<tr>" + "".join(_td(t, n) for t, n in zip(row, g.numeric, strict=True))
                     + "</tr>" for row in g.rows)
    return (f"<h2>{escape(g.title)}</h2>\n<table>\n<caption>{escape(g.caption)}</caption>\n"
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>")


def figure_html(name: str, caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}" '
            f'title="{escape(name)}"><figcaption>{escape(caption)}</figcaption></figure>')


def render_html(lb: Leaderboard, details: bool = False, figures: bool = True,
                title: str = "sgid-bench leaderboard") -> str:
    """The whole page as one string."""
    from sgid_bench.leaderboard.figures import figure_notes, figure_pngs

    parts = [html_grid(g) for g in grids(lb, details)]
    if figures:
        pngs = figure_pngs(lb)
        notes = figure_notes(lb)
        if pngs or notes:
            parts.append("<h2>Figures</h2>")
            parts += [figure_html(*png) for png in pngs]
            parts += [f'<p class="note">{escape(n)}.</p>' for n in notes]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n" + "\n".join(parts) + "\n</body>\n</html>\n")
