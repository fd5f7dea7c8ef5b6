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
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sgid_bench.errors import UserError
from sgid_bench.options import context_options, make_context, profile_option, stack

if TYPE_CHECKING:
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
    dataset.setup(context)
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
        aug.setup(context)
        if "expand" in aug.stages():
            alive = [s for s in shown if s.augmented is not None]
            key = {**next(keys), "purpose": "show", "indices": [s.index for s in alive]}
            inputs = [(s.augmented, s.label) for s in alive if s.augmented is not None]
            result = generate(aug, inputs, class_names,
                              key=key, seed=seed, context=context)
            for s, rec in zip(alive, result.records, strict=True):
                info = rec.meta.get("info", {})
                s.augmented = rec.image if rec.kept else None
                s.prompt, s.caption = info.get("prompt") or "", info.get("caption") or ""
        elif "transform" in aug.stages():
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


def render_grid(shown: Sequence[Shown], class_names: list[str], title: str, output: Path) -> None:
    """One row per image: the original, then the augmentation with prompt and caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(shown), 2, figsize=(7, 2.9 * len(shown)), squeeze=False)
    for row, s in zip(axes, shown, strict=True):
        row[0].imshow(s.original)
        row[0].set_title(f"original: {class_names[s.label]}", fontsize=8)
        if s.augmented is not None:
            row[1].imshow(s.augmented)
        else:
            row[1].text(0.5, 0.5, "dropped by an image filter", ha="center", va="center")
        text = [f"prompt: {s.prompt}"] if s.prompt else []
        text += [f"caption: {s.caption}"] if s.caption and s.caption != s.prompt else []
        row[1].set_xlabel("\n".join(textwrap.fill(t, 48) for t in text), fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    # Leave room for the title above the first row's labels (about 0.4 inch).
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (2.9 * len(shown))))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)


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
    render_grid(shown, names, f"{method} on {dataset} ({context.profile} profile)", output)
    click.echo(f"wrote {output} ({len(shown)} images)")


# -- similarity ---------------------------------------------------------------------------


def similarities(shown: Sequence[Shown], scorer: Any) -> list[float | None]:
    """CLIP cosine similarity of each original to its augmentation (None if dropped)."""
    kept = [s for s in shown if s.augmented is not None]
    values = iter(scorer.image_image([s.original for s in kept], [s.augmented for s in kept])
                  if kept else [])
    return [next(values) if s.augmented is not None else None for s in shown]


def per_class_means(shown: Sequence[Shown], sims: Sequence[float | None]
                    ) -> tuple[dict[int, float], float]:
    by_class: dict[int, list[float]] = {}
    for s, v in zip(shown, sims, strict=True):
        if v is not None:
            by_class.setdefault(s.label, []).append(v)
    means = {y: sum(v) / len(v) for y, v in by_class.items()}
    flat = [v for v in sims if v is not None]
    return means, (sum(flat) / len(flat) if flat else float("nan"))


def render_similarity(results: dict[str, tuple[dict[int, float], float]],
                      class_names: list[str], output: Path) -> Any:
    """A rich table (classes x methods) and a grouped bar chart PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rich.table import Table

    methods = list(results)
    classes = sorted({y for means, _ in results.values() for y in means})
    table = Table(title="CLIP cosine similarity, original vs augmented (higher = closer)")
    table.add_column("class")
    for m in methods:
        table.add_column(m, justify="right")
    for y in classes:
        table.add_row(class_names[y], *[_fmt(results[m][0].get(y)) for m in methods])
    table.add_row("mean", *[_fmt(results[m][1]) for m in methods], style="bold")

    labels = [class_names[y] for y in classes] + ["mean"]
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(labels) * max(1, len(methods))), 4))
    for k, m in enumerate(methods):
        values = [results[m][0].get(y, float("nan")) for y in classes] + [results[m][1]]
        ax.bar([x + k * width for x in range(len(labels))], values, width, label=m)
    ax.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(labels))])
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("CLIP cosine similarity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"


@click.command("similarity")
@click.option("--method", "methods", multiple=True, required=True,
              help="Augmenter name or combination; repeat to compare methods.")
@click.option("--dataset", default="shapes", show_default=True)
@click.option("--per-class", type=click.IntRange(min=1), default=10, show_default=True,
              help="Training images per class.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("similarity.png"), show_default=True, help="PNG plot to write.")
@click.option("--clip-model", default="",
              help="open_clip model [default: ViT-B-32/laion2b_s34b_b79k, tiny in quick].")
@view_options
@_user_errors
def similarity(methods: tuple[str, ...], dataset: str, per_class: int, output: Path,
               clip_model: str, seed: int, params: tuple[str, ...], **ctx: Any) -> None:
    """Mean CLIP cosine similarity between originals and augmentations (the paper's
    automatic evaluation), per class and per method: a table and a plot."""
    from rich.console import Console

    from sgid_bench_plugins.captioning import ClipScorer
    from sgid_bench_plugins.sgid import model_for

    context = make_context(dataset=dataset, **ctx)
    resolved = {m: resolve_method(m, dataset, params, seed, context) for m in methods}
    samples, names = load_train(next(iter(resolved.values())), context)
    indices = pick(samples, len(names), per_class)
    scorer = ClipScorer(model_for("clip", clip_model, context), context)
    results = {}
    for method, res in resolved.items():
        shown = apply_method(res, samples, names, indices, context, seed)
        results[method] = per_class_means(shown, similarities(shown, scorer))
    Console().print(render_similarity(results, names, output))
    click.echo(f"wrote {output}")
