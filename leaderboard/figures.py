"""Leaderboard figures (matplotlib, PNG): accuracy per method per dataset with confidence
intervals, gain over the plain backbone as a heat-map, and the critical-difference
diagram of the average ranks.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot), so no GUI
backend or global state is involved and this works headless and in threads.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sgid_bench.leaderboard import stats
from sgid_bench.leaderboard.grid import GAIN_NONE, LOSS
from sgid_bench.leaderboard.table import Cell, Leaderboard, Row, Table, dataset_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def accuracy_figure(table: Table) -> Figure | None:
    """Grouped bars: mean top-1 per row and dataset, error bars = t confidence interval of
    the mean over seeds, clipped to [0, 100] (accuracy cannot leave it); a single-seed
    cell has no interval: its bar is hatched and has no whisker."""
    rows, datasets = table.measured, table.measured_datasets
    if not rows:
        return None
    fig = _figure(max(6.0, 1.2 + 0.35 * len(rows) * len(datasets)), 4.5 + 0.2 * len(rows) / 3)
    ax = fig.add_subplot()
    width = 0.8 / len(rows)
    x = np.arange(len(datasets))
    single = False
    import matplotlib

    # Distinct colours for up to 20 rows (the default cycle repeats after 10).
    colours = matplotlib.colormaps["tab10" if len(rows) <= 10 else "tab20"]
    for i, row in enumerate(rows):
        offsets = x + (i - (len(rows) - 1) / 2) * width
        cells = [row.cells.get(d) for d in datasets]
        means = [c.mean if c else np.nan for c in cells]
        bars = ax.bar(offsets, means, width, label=row.name, color=colours(i % colours.N))
        for bar, cell in zip(bars, cells, strict=True):
            if cell is not None and cell.n < 2:
                bar.set_hatch("///")
                single = True
        _whiskers(ax, offsets, cells, table.alpha)
    ax.set_xticks(x, [dataset_label(d) for d in datasets])
    ax.set_ylabel("top-1 accuracy (%)")
    level = f"{100 * (1 - table.alpha):g}%"
    title = f"{table.backbone}: mean top-1 over seeds, {level} CI"
    if single:
        title += "\nhatched: a single seed, no interval"
    if any(r.tiny for r in rows):
        title += "\ntiny models: random weights, accuracies check the pipeline only"
    ax.set_title(title, fontsize="medium")
    fig.legend(loc="outside lower center", fontsize="small", ncols=min(3, len(rows)))
    return fig


def _whiskers(ax: Axes, offsets: np.ndarray, cells: list[Cell | None], alpha: float) -> None:
    """Error bars of the cells with two or more seeds, clipped to [0, 100]."""
    xs, ys, low, high = [], [], [], []
    for x, cell in zip(offsets, cells, strict=True):
        ci = cell.ci(alpha) if cell is not None else None
        if cell is None or ci is None:
            continue
        lo, hi = max(ci[0], 0.0), min(ci[1], 100.0)
        xs.append(x)
        ys.append(cell.mean)
        low.append(cell.mean - lo)
        high.append(hi - cell.mean)
    if xs:
        ax.errorbar(xs, ys, yerr=[low, high], fmt="none", ecolor="black", capsize=2,
                    linewidth=1)


def gain_figure(table: Table) -> Figure | None:
    """Heat-map of the mean gain over the plain backbone (percentage points), annotated
    with the gain and its significance mark (Holm-adjusted): one panel with its own
    colour scale per (profile, tiny models) class, so tiny-model noise never sets the
    scale of real-model gains."""
    rows = [r for r in table.measured if any(c.vs_none for c in r.cells.values())]
    if not rows:
        return None
    families = list(dict.fromkeys(r.family for r in rows))
    panels = [[r for r in rows if r.family == f] for f in families]
    # Room for the row names (about 0.08 inch a character at small size) and the colour bar.
    label_width = 0.08 * max(len(_panel_name(r)) for r in rows)
    n_cols = max(len(_gain_datasets(table, p)) for p in panels)
    fig = _figure(2.4 + label_width + 1.3 * n_cols,
                  1.2 * len(panels) + 0.45 * len(rows) + 0.4)
    axes = fig.subplots(len(panels), 1, squeeze=False,
                        height_ratios=[len(p) + 1 for p in panels])[:, 0]
    for ax, panel, (profile, tiny) in zip(axes, panels, families, strict=True):
        _gain_panel(fig, ax, table, panel)
        what = f"{profile} profile" + (", tiny models" if tiny else "")
        ax.set_title(f"{table.backbone}, {what}: gain over the plain backbone (pp)\n"
                     f"{GAIN_NONE} / {LOSS}: Holm-adjusted p < {table.alpha:g}",
                     fontsize="small")
    return fig


def _gain_datasets(table: Table, rows: list[Row]) -> list[str]:
    return [d for d in table.measured_datasets
            if any(d in r.cells and r.cells[d].vs_none for r in rows)]


def _gain_panel(fig: Figure, ax: Axes, table: Table, rows: list[Row]) -> None:
    datasets = _gain_datasets(table, rows)
    gains = np.full((len(rows), len(datasets)), np.nan)
    for i, row in enumerate(rows):
        for j, d in enumerate(datasets):
            comp = row.cells[d].vs_none if d in row.cells else None
            gains[i, j] = comp.diff if comp else np.nan
    bound = float(np.nanmax(np.abs(gains))) if np.isfinite(gains).any() else 0.0
    bound = bound or 1.0
    import matplotlib

    # Grey, not white, where nothing was compared: white is a gain of zero.
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.85")
    image = ax.imshow(gains, cmap=cmap, vmin=-bound, vmax=bound, aspect="auto")
    for i, row in enumerate(rows):
        for j, d in enumerate(datasets):
            comp = row.cells[d].vs_none if d in row.cells else None
            if comp is None:
                ax.text(j, i, "—", ha="center", va="center", fontsize="small")
            else:
                mark = (GAIN_NONE if comp.diff > 0 else LOSS) if comp.significant(
                    table.alpha) else ""
                # An untested gain (one seed) says so: it is noise until measured again.
                why = "" if comp.tested else f"\n({comp.reason})"
                ax.text(j, i, f"{comp.diff:+.2f}{mark}{why}", ha="center", va="center",
                        fontsize="small", color=text_colour(image.cmap(image.norm(comp.diff))))
    ax.set_xticks(range(len(datasets)), [dataset_label(d) for d in datasets])
    # The panel title names the profile and model class: rows need only what is left.
    ax.set_yticks(range(len(rows)), [_panel_name(r) for r in rows], fontsize="small")
    fig.colorbar(image, ax=ax, label="gain (pp)")


def _panel_name(row: Row) -> str:
    extra = ", ".join(p for p in (row.variant, row.budget_label) if p)
    return row.method + (f" [{extra}]" if extra else "")


def text_colour(rgba: Iterable[float]) -> str:
    """White on a dark cell, black on a light one: the cell colour's relative luminance
    (WCAG, from linearised sRGB) against the point where both contrasts are equal."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in list(rgba)[:3])
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "white" if luminance < 0.179 else "black"


def cd_figure(table: Table) -> Figure | None:
    """Critical-difference diagram (Demsar 2006): average ranks on an axis, rank 1 on the
    left, thick bars joining methods whose ranks differ by less than the Nemenyi CD."""
    from matplotlib.figure import Figure

    r = table.ranking
    if r is None or cd_skip_reason(table):
        return None
    k = len(r.methods)
    order = [int(i) for i in np.argsort(r.avg_ranks, kind="stable")]
    bars = stats.cliques(r)
    top = -0.35 - 0.15 * len(bars)  # label lines start below the clique bars
    fig = Figure(figsize=(8.0, 1.5 + 0.3 * k))
    # Fixed margins: the method names sit left and right of the axis, outside it.
    ax = fig.add_axes((0.3, 0.04, 0.4, 0.78))
    ax.set_xlim(0.9, k + 0.1)
    ax.set_ylim(top - 0.4 * ((k + 1) // 2) - 0.1, 1.3)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black")
    for t in range(1, k + 1):
        ax.vlines(t, 0, 0.1, color="black")
        ax.text(t, 0.15, str(t), ha="center", va="bottom", fontsize="small")
    half = (k + 1) // 2
    for pos, idx in enumerate(order):
        left = pos < half
        y = top - 0.4 * (pos if left else k - 1 - pos)
        rank_, end = r.avg_ranks[idx], (0.9 if left else k + 0.1)
        ax.plot([rank_, rank_, end], [0, y, y], color="black", linewidth=0.8)
        name = r.methods[idx] if len(r.methods[idx]) <= 36 else r.methods[idx][:35] + "…"
        ax.text(end, y, f"{name} ({rank_:.2f}) ", va="center", fontsize="small",
                ha="right" if left else "left")
    ranks = [r.avg_ranks[i] for i in order]
    for level, (a, b) in enumerate(bars):
        ax.hlines(-0.2 - 0.15 * level, ranks[a] - 0.03, ranks[b] + 0.03, linewidth=3,
                  color="tab:gray")
    if r.cd is not None:
        ax.hlines(0.9, 1, 1 + r.cd, color="black", linewidth=1.5)
        ax.text(1 + r.cd / 2, 0.95, f"CD = {r.cd:.2f}", ha="center", va="bottom",
                fontsize="small")
    fig.suptitle(_cd_title(table), fontsize="small")
    return fig


def cd_skip_reason(table: Table) -> str:
    """Why ``table`` has no CD diagram ("" when it has one)."""
    r = table.ranking
    if r is None:
        return "no two rows have results on the same datasets, so nothing is ranked"
    if r.n_blocks < 2:
        return (f"ranks over {r.n_blocks} dataset: a critical-difference diagram compares "
                "average ranks over 2 or more datasets")
    return ""


def _cd_title(table: Table) -> str:
    r = table.ranking
    assert r is not None
    title = f"{table.backbone}: average rank over {r.n_blocks} dataset(s)"
    if r.friedman_p is not None and r.cd is not None:
        title += f"; Friedman p = {r.friedman_p:.3g}; Nemenyi alpha = {table.alpha:g}"
    elif r.friedman_p is not None:
        title += f"; Friedman p = {r.friedman_p:.3g}, not significant: no post-hoc bars"
    else:
        title += "; too few methods/datasets for the Friedman test"
    return title


FIGURES: dict[str, Callable[[Table], Figure | None]] = {
    "accuracy": accuracy_figure,
    "gain": gain_figure,
    "cd": cd_figure,
}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "table"


def figure_pngs(lb: Leaderboard) -> list[tuple[str, str, bytes]]:
    """``(file name, caption, PNG bytes)`` of every figure of every table."""
    out = []
    for table in lb.tables:
        for kind, make in FIGURES.items():
            fig = make(table)
            if fig is None:
                continue
            buf = io.BytesIO()
            # "tight" grows the canvas to hold a legend wider than the axes.
            fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            out.append((f"{_slug(table.backbone)}_{kind}.png",
                        f"{table.backbone}: {kind}", buf.getvalue()))
    return out


def figure_notes(lb: Leaderboard) -> list[str]:
    """One line per figure a table does not get, saying why (so a missing diagram is
    never a silent gap)."""
    notes = []
    for table in lb.tables:
        reason = cd_skip_reason(table)
        if reason:
            notes.append(f"{table.backbone}: no CD diagram: {reason}")
        if gain_figure(table) is None and table.measured:
            notes.append(f"{table.backbone}: no gain heat-map: no method has a plain-backbone "
                         "(none) run of the same config to compare with")
    return notes


def write_figures(lb: Leaderboard, directory: Path) -> list[Path]:
    """Write every figure as PNG into ``directory`` (created); the written paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, _, data in figure_pngs(lb):
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths

