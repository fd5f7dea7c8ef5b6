"""The guidance each generated image got, read back from what the runs recorded:
``sgid-bench similarity --guidance``.

Every expand stage's images are recorded in the store (table ``generations``: method,
dataset, seed, cache folder) and each image's metadata sits beside it in the generation
cache (``<index>-s<seed>.json``: ``info.score`` is SGID's s*, the CLIP similarity of the
chosen caption to the original, and ``info.guidance`` the guidance scale g it was
generated with, g = -4 s*^2 + 2 s* + 1, at least 1 under the ``diffusers`` rule).
Nothing is generated or scored again here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sgid_bench.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.table import Table

    from sgid_bench.store import Store


@dataclass
class Recorded:
    """Per-image s* and g of one (dataset, method), over its stored generation sets."""

    dataset: str
    method: str
    scores: list[float] = field(default_factory=list)
    guidance: list[float] = field(default_factory=list)
    sets: int = 0  # generation sets (configs, seeds) pooled here


def _folder(path: str, cache_dir: Path | None) -> Path | None:
    """The cache folder of a generation: where it was written, else the same folder name
    under this machine's cache (a store copied from another machine)."""
    here = Path(path)
    if here.is_dir():
        return here
    if cache_dir is not None and (cache_dir / here.name).is_dir():
        return cache_dir / here.name
    return None


def read_recorded(store: Store, *, methods: Sequence[str] = (), datasets: Sequence[str] = (),
                  cache_dir: Path | None = None) -> tuple[list[Recorded], list[str]]:
    """The recorded s* and g per (dataset, method) of the finished generations in
    ``store`` (empty filters keep all), and notes on what could not be read."""
    from sqlalchemy import select

    from sgid_bench.store import DONE, Generation

    stmt = select(Generation).where(Generation.status == DONE).order_by(Generation.id)
    if methods:
        stmt = stmt.where(Generation.method.in_(list(methods)))
    if datasets:
        stmt = stmt.where(Generation.dataset.in_(list(datasets)))
    with store.session() as s:
        rows = [(g.dataset, g.method, g.seed, g.path) for g in s.scalars(stmt)]
    out: dict[tuple[str, str], Recorded] = {}
    missing: list[str] = []
    for dataset, method, seed, path in rows:
        folder = _folder(path, cache_dir)
        if folder is None:
            missing.append(path)
            continue
        scores, guidance = _read_folder(folder, seed)
        if not guidance:
            continue  # a method that maps no s* to g
        rec = out.setdefault((dataset, method), Recorded(dataset, method))
        rec.scores += scores
        rec.guidance += guidance
        rec.sets += 1
    notes = [f"{len(missing)} generation folder(s) recorded in the store are not on this "
             f"machine (e.g. {missing[0]}); pass --cache-dir where they are"] if missing else []
    return sorted(out.values(), key=lambda r: (r.dataset, r.method)), notes


def _read_folder(folder: Path, seed: int) -> tuple[list[float], list[float]]:
    scores, guidance = [], []
    for meta_path in sorted(folder.glob(f"*-s{seed}.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue  # being written or damaged: the cache regenerates it when used
        info = meta.get("info") if isinstance(meta, dict) else None
        if not isinstance(info, dict) or meta.get("dropped"):
            continue
        g, s = info.get("guidance"), info.get("score")
        # Only guidance mapped from an s*: a method with a fixed scale (text2img,
        # InstructPix2Pix) records its constant, which is no distribution to show.
        if isinstance(g, (int, float)) and isinstance(s, (int, float)):
            guidance.append(float(g))
            scores.append(float(s))
    return scores, guidance


def require(recorded: list[Recorded], notes: list[str]) -> None:
    """A one-line error when nothing was found."""
    if not recorded:
        why = f" ({notes[0]})" if notes else ""
        raise UserError("no generated image in the store records a guidance g: run a method "
                        "that maps s* to g (sgid, sgid_diversecaption, text2img+sgid...) with "
                        "--db pointing at its store, or relax --method/--dataset" + why)


def guidance_figure(recorded: list[Recorded], title: str = "") -> Figure:
    """Box plots (with each image as a jittered point) of s* and of g per dataset (and
    method, when several): two panels side by side."""
    import numpy as np
    from matplotlib.figure import Figure

    several = len({r.method for r in recorded}) > 1
    labels = [r.dataset + (f"\n{r.method}" if several else "") + f"\n(n={len(r.guidance)})"
              for r in recorded]
    fig = Figure(figsize=(4.0 + 2.4 * len(recorded), 4.6), layout="constrained")
    ax_s, ax_g = fig.subplots(1, 2)
    rng = np.random.default_rng(0)  # jitter only: the same picture every time
    panels = ((ax_s, [r.scores for r in recorded], "s* (CLIP similarity, caption vs original)"),
              (ax_g, [r.guidance for r in recorded], "guidance scale g"))
    for ax, values, ylabel in panels:
        # The points are drawn one by one: no separate outlier markers.
        ax.boxplot([v if v else [np.nan] for v in values], showmeans=True, showfliers=False,
                   widths=0.5)
        for i, v in enumerate(values, 1):
            ax.plot(i + rng.uniform(-0.12, 0.12, len(v)), v, ".", color="tab:blue",
                    alpha=0.35, markersize=4)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize="small")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("dataset and method" if several else "dataset")
    ax_g.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
    ax_s.set_title("s* per image", fontsize="medium")
    # A title, not a legend: a legend box would hide points.
    ax_g.set_title("g per image (dotted: g = 1, guidance off)", fontsize="medium")
    fig.suptitle(title or "Guidance of the generated images per dataset: "
                 "g = -4 s*² + 2 s* + 1 (box: quartiles, triangle: mean)")
    return fig


def guidance_table(recorded: list[Recorded]) -> Table:
    """Per (dataset, method): images, s* and g mean ± std, g's range and the share of
    images with g = 1 (guidance off)."""
    from rich.table import Table

    table = Table(title="Recorded s* and guidance g per generated image")
    for name in ("dataset", "method"):
        table.add_column(name, no_wrap=True)
    for name in ("images", "s* mean ± std", "g mean ± std", "g range", "g = 1"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in recorded:
        table.add_row(r.dataset, r.method, str(len(r.guidance)), _mean_std(r.scores),
                      _mean_std(r.guidance), f"{min(r.guidance):.3f}–{max(r.guidance):.3f}",
                      f"{sum(g == 1.0 for g in r.guidance) / len(r.guidance):.0%}")
    return table


def _mean_std(values: list[float]) -> str:
    import statistics

    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"
