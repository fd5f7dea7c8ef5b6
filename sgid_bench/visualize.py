"""``sgid-bench show`` (originals beside their augmentations, with prompt and caption)
and ``sgid-bench similarity`` (the paper's automatic evaluation: mean CLIP cosine
similarity between original and augmented images, per class and per method).

Both apply a method's image-level stages to a few training images: expand stages
through the generation cache (under a key of their own, so they never mix with a run's
images), transform stages directly. Batch and feature stages (CutMix, MoEx) act inside
training and are not shown.
"""

from __future__ import annotations

import functools
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sgid_bench.errors import UserError
from sgid_bench.options import context_options, db_option, make_context, profile_option, stack

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

    from sgid_bench.config import Resolved
    from sgid_bench.context import Context

IMAGE_STAGES = ("expand", "transform")


@dataclass
class Shown:
    """One original and what the method made of it (None: dropped by an image filter)."""

    index: int
    label: int
    original: Image.Image
    augmented: Image.Image | None
    prompt: str = ""
    caption: str = ""


#: The shared run options plus the seed and method parameters of what is shown.
view_options = stack(
    profile_option,
    context_options,
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed of the image choice and of the augmentations."),
    click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                 help="Method parameter, e.g. sgid.strength=0.7."),
)


def _user_errors(fn: Callable[..., None]) -> Callable[..., None]:
    # One line, no traceback, whether or not the command runs inside the main group.
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


# -- applying a method to a few images ----------------------------------------------------


def resolve_method(method: str, dataset: str, params: Sequence[str], seed: int,
                   context: Context) -> Resolved:
    """Resolve ``method`` on ``dataset``; only its image-level stages can be shown."""
    from sgid_bench.config import RunSpec, resolve, split_method

    names = split_method(method)
    own = [p for p in params if p.partition("=")[0].rpartition(".")[0] in ("", *names)]
    resolved = resolve(RunSpec(method=method, dataset=dataset, seed=seed,
                               profile=context.profile, params=own), context)
    if not any(s in IMAGE_STAGES for a in resolved.augmenters for s in a.stages()):
        raise UserError(f"method {method!r} has no image-level stage (expand or transform): "
                        "it acts on batches or features during training and cannot be shown")
    return resolved


def load_train(resolved: Resolved, context: Context) -> tuple[Sequence[Any], list[str]]:
    dataset = resolved.dataset
    resolved.setup(dataset, context)
    split = dataset.load("train")
    return split.samples, list(split.class_names or dataset.class_names())


def pick(samples: Sequence[Any], num_classes: int, per_class: int,
         limit: int | None = None) -> list[int]:
    """Indices of the first ``per_class`` images of every class, interleaved by class
    (so ``limit`` images cover as many classes as possible)."""
    by_class: dict[int, list[int]] = {}
    for i in range(len(samples)):
        group = by_class.setdefault(int(samples[i][1]), [])
        if len(group) < per_class:
            group.append(i)
        # Stop reading (and decoding) images once every class is complete.
        if len(by_class) == num_classes and all(len(g) >= per_class for g in by_class.values()):
            break
    order = [g[r] for r in range(per_class) for _, g in sorted(by_class.items()) if r < len(g)]
    return order[:limit] if limit else order


def apply_method(resolved: Resolved, samples: Sequence[Any], class_names: list[str],
                 indices: list[int], context: Context, seed: int) -> list[Shown]:
    """The method's image-level stages, in order, on ``samples[indices]``."""
    from sgid_bench.cache import generate
    from sgid_bench.data import generation_keys

    shown = [Shown(i, int(samples[i][1]), samples[i][0].convert("RGB"),
                   samples[i][0].convert("RGB")) for i in indices]
    # The training runs' keys, narrowed to the shown images: a cache of its own.
    keys = iter(generation_keys(resolved, context))
    for aug in resolved.augmenters:
        if "expand" in aug.stages():
            alive = [s for s in shown if s.augmented is not None]
            key = {**next(keys), "purpose": "show", "indices": [s.index for s in alive]}
            inputs = [(s.augmented, s.label) for s in alive if s.augmented is not None]
            result = generate(aug, inputs, class_names, key=key, seed=seed, context=context,
                              setup=resolved.setup)
            for s, rec in zip(alive, result.records, strict=True):
                info = rec.meta.get("info", {})
                s.augmented = rec.image if rec.kept else None
                s.prompt, s.caption = info.get("prompt") or "", info.get("caption") or ""
        elif "transform" in aug.stages():
            resolved.setup(aug, context)
            _transform(aug, shown, seed)
    return shown


def _transform(aug: Any, shown: list[Shown], seed: int) -> None:
    from torchvision.transforms.functional import pil_to_tensor, to_pil_image

    from sgid_bench.rng import generator

    for s in shown:
        if s.augmented is not None:
            out = aug.transform(pil_to_tensor(s.augmented), generator("show", seed, s.index))
            s.augmented = to_pil_image(out)


# -- show ---------------------------------------------------------------------------------


def models_note(models: dict[str, str]) -> str:
    """What a reader of a figure must know about the models that made it ("" for the
    paper's real weights)."""
    from sgid_bench.models import is_replica, is_tiny, is_world

    ids = list(models.values())
    if any(is_tiny(m) or is_replica(m) for m in ids):
        return ("random-weight models (tiny stand-ins or replicas of the real architectures): "
                "the images show the pipeline at work, not what the method makes")
    if any(is_world(m) for m in ids):
        return ("toy-world models: the real architectures trained at toy scale on 32 px "
                "shapes, not the paper's weights")
    return ""


def grid_figure(shown: Sequence[Shown], class_names: list[str], method: str, title: str,
                note: str = "") -> Figure:
    """One row per image under two column headings, "original" and the method: the
    original (its class on the left) and what the method made of it, with prompt and
    caption below; ``note`` (the models) under the title."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 2.9 * len(shown) + (1.0 if note else 0.6)),
                 layout="constrained")
    axes = fig.subplots(len(shown), 2, squeeze=False)
    axes[0][0].set_title("original", fontsize=10, fontweight="bold")
    axes[0][1].set_title(method, fontsize=10, fontweight="bold")
    for row, s in zip(axes, shown, strict=True):
        row[0].imshow(s.original)
        row[0].set_ylabel(class_names[s.label], fontsize=9)
        if s.augmented is not None:
            row[1].imshow(s.augmented)
        else:
            row[1].text(0.5, 0.5, "dropped by an image filter", ha="center", va="center",
                        transform=row[1].transAxes)
        text = [f"prompt: {s.prompt}"] if s.prompt else []
        text += [f"caption: {s.caption}"] if s.caption and s.caption != s.prompt else []
        row[1].set_xlabel("\n".join(textwrap.fill(t, 48) for t in text), fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    head = title + (f"\nNote: {textwrap.fill(note, 80)}" if note else "")
    fig.suptitle(head, fontsize=10, color="black")
    return fig


def render_grid(shown: Sequence[Shown], class_names: list[str], title: str, output: Path,
                method: str = "augmented", note: str = "") -> None:
    """:func:`grid_figure` written as PNG to ``output``."""
    fig = grid_figure(shown, class_names, method, title, note)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)


@click.command("show")
@click.option("--method", required=True, help="Augmenter name or combination a+b.")
@click.option("--dataset", default="shapes", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("grid.png"), show_default=True, help="PNG file to write.")
@click.option("--n", "n", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Number of training images (one per class first).")
@view_options
@_user_errors
def show(method: str, dataset: str, output: Path, n: int, seed: int,
         params: tuple[str, ...], **ctx: Any) -> None:
    """Originals beside their augmentations, with prompt and caption under each."""
    context = make_context(dataset=dataset, **ctx)
    resolved = resolve_method(method, dataset, params, seed, context)
    samples, names = load_train(resolved, context)
    shown = apply_method(resolved, samples, names, pick(samples, len(names), n, n), context, seed)
    render_grid(shown, names, f"{method} on {dataset} ({context.profile} profile)", output,
                method=method, note=models_note(resolved.config.get("models") or {}))
    click.echo(f"wrote {output} ({len(shown)} images)")


# -- similarity ---------------------------------------------------------------------------


def similarities(shown: Sequence[Shown], scorer: Any) -> list[float | None]:
    """CLIP cosine similarity of each original to its augmentation (None if dropped)."""
    kept = [s for s in shown if s.augmented is not None]
    values = iter(scorer.image_image([s.original for s in kept], [s.augmented for s in kept])
                  if kept else [])
    return [next(values) if s.augmented is not None else None for s in shown]


def per_class_values(shown: Sequence[Shown], sims: Sequence[float | None]
                     ) -> dict[int, list[float]]:
    """``{class: similarities of its kept images}``."""
    by_class: dict[int, list[float]] = {}
    for s, v in zip(shown, sims, strict=True):
        if v is not None:
            by_class.setdefault(s.label, []).append(v)
    return by_class


def per_class_means(shown: Sequence[Shown], sims: Sequence[float | None]
                    ) -> tuple[dict[int, float], float]:
    by_class = per_class_values(shown, sims)
    means = {y: sum(v) / len(v) for y, v in by_class.items()}
    flat = [v for v in sims if v is not None]
    return means, (sum(flat) / len(flat) if flat else float("nan"))


#: method -> class -> similarity of each kept image.
Similarities = dict[str, dict[int, list[float]]]


def _bars(values: dict[int, list[float]], classes: list[int]) -> list[list[float]]:
    # Per class, then "mean" over every image of the method.
    return [values.get(y, []) for y in classes] + [[v for vs in values.values() for v in vs]]


def similarity_figure(results: Similarities, class_names: list[str], title: str = ""
                      ) -> Figure:
    """Grouped bars per class (and overall) and method: the mean similarity, error bars
    ± one standard deviation over its images (none below two images); the y axis spans
    the data, so differences of a few hundredths show; the legend sits outside the axes."""
    import numpy as np
    from matplotlib.figure import Figure

    methods = list(results)
    classes = sorted({y for values in results.values() for y in values})
    labels = [class_names[y] for y in classes] + ["mean"]
    width = 0.8 / max(1, len(methods))
    fig = Figure(figsize=(max(6.0, 0.3 * len(labels) * max(1, len(methods)) + 2.5), 4.2),
                 layout="constrained")
    ax = fig.add_subplot()
    ends: list[float] = []
    for k, m in enumerate(methods):
        groups = _bars(results[m], classes)
        means = np.array([np.mean(g) if g else np.nan for g in groups])
        x = np.arange(len(labels)) + (k - (len(methods) - 1) / 2) * width
        ax.bar(x, means, width, label=m)
        spread = [(i, float(np.std(g, ddof=1))) for i, g in enumerate(groups) if len(g) >= 2]
        if spread:
            ax.errorbar([x[i] for i, _ in spread], [means[i] for i, _ in spread],
                        yerr=[sd for _, sd in spread], fmt="none", ecolor="black",
                        capsize=2, linewidth=1)
        ends += [means[i] + e for i, sd in spread for e in (-sd, sd)]
        ends += [float(v) for v in means if np.isfinite(v)]
    if ends:
        lo, hi = min(ends), max(ends)
        pad = max(0.1 * (hi - lo), 0.01)
        ax.set_ylim(max(-1.0, lo - pad), min(1.0, hi + pad))
    ax.set_xticks(np.arange(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("class")
    ax.set_ylabel("CLIP cosine similarity")
    ax.set_title(title or SIMILARITY_TITLE, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="method")
    return fig


SIMILARITY_TITLE = ("CLIP similarity of each original to its augmentation\n(mean per class, "
                    "error bars ± 1 std over images; y axis zoomed to the data)")


def render_similarity(results: Similarities, class_names: list[str], output: Path,
                      title: str = "") -> Any:
    """A rich table (classes x methods) and :func:`similarity_figure` as PNG."""
    import statistics

    from rich.table import Table

    methods = list(results)
    classes = sorted({y for values in results.values() for y in values})
    table = Table(title="CLIP cosine similarity, original vs augmented (higher = closer)")
    table.add_column("class")
    for m in methods:
        table.add_column(m, justify="right")
    for label, index in [*((class_names[y], i) for i, y in enumerate(classes)),
                         ("mean", len(classes))]:
        cells = [_bars(results[m], classes)[index] for m in methods]
        table.add_row(label, *[_fmt(statistics.fmean(c) if c else None) for c in cells],
                      style="bold" if label == "mean" and index == len(classes) else "")
    fig = similarity_figure(results, class_names, title)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


@click.command("similarity")
@click.option("--method", "methods", multiple=True,
              help="Augmenter name or combination; repeat to compare methods (with "
              "--guidance: only these methods' recorded images).")
@click.option("--dataset", default=None,
              help="Dataset [default: shapes; with --guidance: every recorded dataset].")
@click.option("--per-class", type=click.IntRange(min=1), default=10, show_default=True,
              help="Training images per class.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="PNG plot to write [default: similarity.png; with "
              "--guidance: guidance.png].")
@click.option("--clip-model", default="",
              help="open_clip model [default: ViT-B-32/laion2b_s34b_b79k, tiny in quick].")
@click.option("--guidance", "guidance", is_flag=True,
              help="Instead: plot the distribution of s* and of the guidance g per dataset, "
              "from what the runs recorded for each generated image (store + generation "
              "cache); nothing is generated or scored.")
@db_option
@view_options
@_user_errors
def similarity(methods: tuple[str, ...], dataset: str | None, per_class: int,
               output: Path | None, clip_model: str, guidance: bool, db: str | None,
               seed: int, params: tuple[str, ...], **ctx: Any) -> None:
    """Mean CLIP cosine similarity between originals and augmentations (the paper's
    automatic evaluation), per class and per method: a table and a plot. With
    --guidance, the recorded s* and g of every generated image, per dataset."""
    from rich.console import Console

    if guidance:
        _guidance(methods, dataset, output or Path("guidance.png"), db, ctx.get("cache_dir"))
        return
    if not methods:
        raise UserError("give --method (repeatable), e.g. --method sgid --method text2img; "
                        "or --guidance to plot the recorded guidance")
    from sgid_bench_plugins.captioning import ClipScorer
    from sgid_bench_plugins.sgid import model_for

    dataset = dataset or "shapes"
    output = output or Path("similarity.png")
    context = make_context(dataset=dataset, **ctx)
    resolved = {m: resolve_method(m, dataset, params, seed, context) for m in methods}
    samples, names = load_train(next(iter(resolved.values())), context)
    indices = pick(samples, len(names), per_class)
    scorer = ClipScorer(model_for("clip", clip_model, context), context)
    results: Similarities = {}
    models: dict[str, str] = {}
    for method, res in resolved.items():
        shown = apply_method(res, samples, names, indices, context, seed)
        results[method] = per_class_values(shown, similarities(shown, scorer))
        models.update(res.config.get("models") or {})
    note = models_note(models)
    title = SIMILARITY_TITLE.replace("augmentation", f"augmentation, {dataset}") + (
        f"\nNote: {textwrap.fill(note, 100)}" if note else "")
    Console().print(render_similarity(results, names, output, title))
    click.echo(f"wrote {output}")


def _guidance(methods: tuple[str, ...], dataset: str | None, output: Path, db: str | None,
              cache_dir: str | None) -> None:
    from rich.console import Console

    from sgid_bench.context import Context
    from sgid_bench.guidance import guidance_figure, guidance_table, read_recorded, require
    from sgid_bench.store import Store

    store = Store(db, readonly=True)
    try:
        here = Path(cache_dir) if cache_dir else Context().cache_dir
        recorded, notes = read_recorded(store, methods=methods,
                                        datasets=[dataset] if dataset else [],
                                        cache_dir=here)
    finally:
        store.close()
    require(recorded, notes)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    # Off a terminal keep the table's lines whole (rich would wrap at 80 columns).
    Console(width=None if sys.stdout.isatty() else 160).print(guidance_table(recorded))
    output.parent.mkdir(parents=True, exist_ok=True)
    guidance_figure(recorded).savefig(output, dpi=100)
    click.echo(f"wrote {output}")
