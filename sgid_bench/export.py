"""``sgid-bench export``: a generative method's images, with their metadata, as files.

Writes the training originals of a run (its train split minus the validation carve-out)
and the images the method's expand stages generated from them, in ImageFolder layout::

    DIR/original/<class>/<n>.png      training original number n (its place in the split)
    DIR/generated/<class>/<n>.png     the image generated from original n
    DIR/generated.csv                 one row per generated image, dropped ones included

Generation is a training run's: the same train split (:func:`sgid_bench.data.load_splits`),
cache keys (:func:`sgid_bench.data.generation_keys`), generation seed and cache, so an
export after a run reuses the run's images and an export before a run fills the cache
for it. Of a chain (``text2img+sgid``) the last expand stage's images are exported, with
its metadata, each traced back to the original it came from. Transform, batch and
feature stages (RandAugment, CutMix...) act during training and are not applied.

``generated.csv`` columns: ``file`` (relative path; empty when a filter dropped the image:
dropped images are listed, not written), ``source`` (relative path of the original),
``class``, ``label``, ``prompt``, ``caption``, ``score`` (s*), ``guidance`` (g),
``prompt_score``, ``original_score`` (the image filters' CLIP scores) and ``dropped``
(``true``/``false``). A value the method does not record is empty.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sgid_bench.errors import UserError
from sgid_bench.options import context_options, make_context, profile_option
from sgid_bench.visualize import _user_errors

if TYPE_CHECKING:
    from sgid_bench.cache import Record, Stats
    from sgid_bench.config import Resolved
    from sgid_bench.context import Context
    from sgid_bench.data import Splits

CSV_NAME = "generated.csv"
COLUMNS = ("file", "source", "class", "label", "prompt", "caption", "score", "guidance",
           "prompt_score", "original_score", "dropped")
#: Names Windows reserves for devices, whatever the extension.
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
             *(f"LPT{i}" for i in range(1, 10))}


@dataclass
class Exported:
    """What an export wrote, and how much of it the cache already held."""

    originals: int
    generated: int
    dropped: int
    classes: int
    stats: Stats
    #: The model ids used, by role (tiny ones make meaningless images).
    models: dict[str, str]


# -- the method's generated images ---------------------------------------------------------


def generative_methods() -> list[str]:
    """Installed augmenters with an expand (image generation) stage."""
    from sgid_bench.plugins import registry

    reg = registry()
    return [n for n in reg.names("augmenter") if "expand" in reg.get("augmenter", n).stages()]


def resolve_generative(method: str, dataset: str, params: Sequence[str],
                       context: Context) -> tuple[Resolved, Context]:
    """Resolve ``method`` on ``dataset`` (empty: the profile's default) as a run would,
    and the run's context; it must generate images. Backbone parameters (they do not
    change generation) are ignored, so a run's ``--param`` list can be passed as it is."""
    from sgid_bench.config import RunSpec, resolve
    from sgid_bench.plugins import registry

    backbone = {"backbone", *registry().names("backbone")}
    own = [p for p in params if p.partition("=")[0].rpartition(".")[0] not in backbone]
    spec = RunSpec(method=method, profile=context.profile, params=own)
    spec.dataset = dataset or spec.dataset
    context = context.for_run(spec.profile, spec.dataset, spec.seed)
    resolved = resolve(spec, context)
    if not any("expand" in a.stages() for a in resolved.augmenters):
        raise UserError(f"method {method!r} generates no images, so there is nothing to "
                        f"export; generative methods: {', '.join(generative_methods())} "
                        "(alone or in a chain such as text2img+sgid)")
    return resolved, context


def generated_from_originals(resolved: Resolved, context: Context
                             ) -> tuple[Splits, list[tuple[int, Record]], Stats]:
    """The run's splits, and the last expand stage's records (dropped ones included), each
    with the index in ``splits.train`` of the original it came from; and the cache stats.

    The chain is :func:`sgid_bench.data.expand_chain`'s (each stage on the images the
    previous one kept, same keys and seed), keeping the records to trace each image."""
    from sgid_bench.cache import Stats, generate
    from sgid_bench.config import generation_seed
    from sgid_bench.data import generation_keys, load_splits

    # Without augmenters load_splits only loads and splits: generation follows, with records.
    splits = load_splits(replace(resolved, augmenters=[]), context, None)
    stats = Stats()
    current: Sequence[Any] = splits.train
    sources = list(range(len(splits.train)))
    traced: list[tuple[int, Record]] = []
    expanders = [a for a in resolved.augmenters if "expand" in a.stages()]
    for aug, key in zip(expanders, generation_keys(resolved, context), strict=True):
        result = generate(aug, current, splits.class_names, key=key,
                          seed=generation_seed(resolved.config, resolved.spec.seed),
                          context=context, setup=resolved.setup)
        stats.generated += result.stats.generated
        stats.reused += result.stats.reused
        stats.corrupted += result.stats.corrupted
        traced = [(sources[r.index], r) for r in result.records]
        sources = [s for s, r in traced if r.kept and r.image is not None]
        current = result.samples()
    return splits, traced, stats


# -- files ---------------------------------------------------------------------------------


def folder_names(class_names: Sequence[str]) -> list[str]:
    """A safe, distinct folder name per class: letters, digits, ``_ . -`` only, no
    leading dot, no Windows device name, distinct also on case-insensitive file systems
    (a clash gets ``_<label>`` appended)."""
    out: list[str] = []
    seen: set[str] = set()
    for label, name in enumerate(class_names):
        safe = re.sub(r"[^\w.-]+", "_", str(name)).strip("._-")[:100] or f"class_{label}"
        if safe.split(".")[0].upper() in _RESERVED:
            safe = f"{safe}_{label}"
        while safe.lower() in seen:
            safe = f"{safe}_{label}"
        seen.add(safe.lower())
        out.append(safe)
    return out


def check_target(directory: Path, force: bool) -> None:
    """Refuse a file, or a non-empty directory unless ``force``."""
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is a file: give a directory to export to")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise UserError(f"{directory} is not empty: give a new directory, or --force to "
                        "overwrite the files export writes there (it deletes nothing)")


def write(directory: Path, splits: Splits, traced: Sequence[tuple[int, Record]],
          stats: Stats, models: dict[str, str]) -> Exported:
    """Write originals, generated images and ``generated.csv`` under ``directory``,
    overwriting only those paths."""
    folders = folder_names(splits.class_names)
    width = max(5, len(str(len(splits.train) - 1)))

    def path(kind: str, label: int, index: int) -> str:
        return f"{kind}/{folders[label]}/{index:0{width}d}.png"

    def save(image: Any, relative: str) -> None:
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(target, format="PNG")

    labels = []
    for i in range(len(splits.train)):
        image, label = splits.train[i]
        labels.append(int(label))
        save(image, path("original", int(label), i))
    rows, dropped = [], 0
    for source, rec in traced:
        info = rec.meta.get("info") or {}
        kept = rec.kept and rec.image is not None
        file = path("generated", rec.label, source) if kept else ""
        if kept:
            save(rec.image, file)
        dropped += not kept
        rows.append({"file": file, "source": path("original", labels[source], source),
                     "class": splits.class_names[rec.label], "label": rec.label,
                     **{k: _cell(info.get(k)) for k in COLUMNS[4:-1]},
                     "dropped": "false" if kept else "true"})
    with open(directory / CSV_NAME, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return Exported(len(splits.train), len(rows) - dropped, dropped,
                    len(set(labels)), stats, models)


def _cell(value: Any) -> Any:
    return "" if value is None else value


def export_method(method: str, dataset: str, params: Sequence[str], directory: Path,
                  context: Context, force: bool = False) -> Exported:
    """Generate (or reuse) ``method``'s images of ``dataset`` (empty: the profile's
    default) and write them to ``directory`` (see the module docstring for the layout)."""
    resolved, context = resolve_generative(method, dataset, params, context)
    check_target(directory, force)
    splits, traced, stats = generated_from_originals(resolved, context)
    directory.mkdir(parents=True, exist_ok=True)
    models = {f"{a.name}.{role}": mid for a in resolved.augmenters
              for role, mid in a.models_used(context).items()}
    return write(directory, splits, traced, stats, models)


@click.command("export")
@click.option("--method", required=True,
              help="Generative method or chain (sgid, text2img, text2img+sgid, ...).")
@click.option("--dataset", default="",
              help="Dataset name, or imagefolder:/path [default: the profile's, as for run].")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Method or dataset parameter, as for run (sgid.strength=0.7).")
@click.option("--force", is_flag=True,
              help="Write into a non-empty DIR (overwrites only export's own files).")
@profile_option
@context_options
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@_user_errors
def export(method: str, dataset: str, params: tuple[str, ...], force: bool,
           directory: Path, **ctx: Any) -> None:
    """Write a run's training originals and the images METHOD generates from them to DIR
    (original/<class>/, generated/<class>/, PNG) with generated.csv: source, prompt,
    caption, s*, g and filter scores of each image. Uses and fills the run's cache."""
    from sgid_bench.run import uses_tiny_models

    context = make_context(dataset=dataset, **ctx)
    out = export_method(method, dataset, params, directory, context, force)
    click.echo(f"wrote {out.originals} training originals and {out.generated} generated "
               f"images of {out.classes} classes to {directory}"
               + (f" ({out.dropped} dropped by a filter: listed in {CSV_NAME} without a "
                  "file)" if out.dropped else "")
               + f"; generated now: {out.stats.generated}, from the cache: {out.stats.reused}")
    if uses_tiny_models(out.models):
        from sgid_bench.cli import TINY_NOTE

        click.echo(TINY_NOTE.format(models=", ".join(sorted(set(out.models.values())))),
                   err=True)
