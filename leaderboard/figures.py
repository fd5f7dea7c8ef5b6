"""Leaderboard figures (matplotlib, PNG): accuracy per method per dataset with confidence
intervals, gain over the plain backbone as a heat-map, and the critical-difference
diagram of the average ranks.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot), so no GUI
backend or global state is involved and this works headless and in threads.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sgid_bench.leaderboard import stats
from sgid_bench.leaderboard.grid import GAIN_NONE, LOSS
from sgid_bench.leaderboard.table import Leaderboard, Row, Table, dataset_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def accuracy_figure(table: Table) -> Figure | None:
    """Grouped bars: mean top-1 per row and dataset, error bars = t confidence interval of
    the mean over seeds (none for single-seed cells)."""
    rows, datasets = table.measured, table.measured_datasets
    if not rows:
        return None
    fig = _figure(max(6.0, 1.2 + 0.35 * len(rows) * len(datasets)), 4.5 + 0.2 * len(rows) / 3)
    ax = fig.add_subplot()
    width = 0.8 / len(rows)
    x = np.arange(len(datasets))
    for i, row in enumerate(rows):
        means, low, high = [], [], []
        for d in datasets:
            cell = row.cells.get(d)
            ci = cell.ci(table.alpha) if cell else None
            means.append(cell.mean if cell else np.nan)
            low.append(cell.mean - ci[0] if ci and cell else 0.0)
            high.append(ci[1] - cell.mean if ci and cell else 0.0)
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=[low, high],
               capsize=2, label=row.name)
    ax.set_xticks(x, [dataset_label(d) for d in datasets])
    ax.set_ylabel("top-1 accuracy (%)")
    level = f"{100 * (1 - table.alpha):g}%"
    ax.set_title(f"{table.backbone}: mean over seeds, {level} CI")
    fig.legend(loc="outside lower center", fontsize="small", ncols=min(3, len(rows)))
    return fig


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
    label_width = 0.08 * max(len(r.name) for r in rows)
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
    image = ax.imshow(gains, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    for i, row in enumerate(rows):
        for j, d in enumerate(datasets):
            comp = row.cells[d].vs_none if d in row.cells else None
            if comp is not None:
                mark = (GAIN_NONE if comp.diff > 0 else LOSS) if comp.significant(
                    table.alpha) else ""
                ax.text(j, i, f"{comp.diff:+.2f}{mark}", ha="center", va="center",
                        fontsize="small")
    ax.set_xticks(range(len(datasets)), [dataset_label(d) for d in datasets])
    ax.set_yticks(range(len(rows)), [r.name for r in rows], fontsize="small")
    fig.colorbar(image, ax=ax, label="gain (pp)")


def cd_figure(table: Table) -> Figure | None:
    """Critical-difference diagram (Demsar 2006): average ranks on an axis, rank 1 on the
    left, thick bars joining methods whose ranks differ by less than the Nemenyi CD."""
    from matplotlib.figure import Figure

    r = table.ranking
    if r is None:
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


def write_figures(lb: Leaderboard, directory: Path) -> list[Path]:
    """Write every figure as PNG into ``directory`` (created); the written paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, _, data in figure_pngs(lb):
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths

