"""The generation cache: expand-stage images generated once, stored on disk, reused.

Layout: ``<cache_dir>/<key hash>/`` holds ``key.json`` (the key), and per image
``<index>-s<seed>.png`` plus ``<index>-s<seed>.json`` (label, dropped flag, sha256 of the
PNG, the augmenter's metadata: prompt, caption, s*, g...). The JSON is written last, so
it marks a finished image; both files are written atomically (temp file + rename).

Batches cover fixed index ranges ``[b, b + gen_batch_size)``. An augmenter with
``per_image_generators`` gets one generator per image, seeded from (seed, image index):
its images do not depend on the batch size at all. Any other augmenter gets one generator
per batch, seeded from (seed, b): its images depend on the batch size, so a batch size
other than :data:`DEFAULT_GEN_BATCH` becomes part of the key (:func:`effective_key`) and
never reuses images made with another. Either way a resumed or repeated run regenerates
exactly the same images; a batch is redone only when one of its images is missing or its
file fails the hash check (and only those images are written). A metadata file that is
not what this module wrote (``null``, garbage) counts as corrupted and is regenerated.

Optional augmenter hooks used here, each a protocol of :mod:`sgid_bench.api`:
:class:`~sgid_bench.api.ReportsInfo` (``last_info``: JSON-able dicts, one per input of
the last ``expand``), :class:`~sgid_bench.api.SelectsImages` (``select(infos, labels)``: a
keep mask computed over the whole set, for class-mean filters) and
:class:`~sgid_bench.api.FitsDataset` (``fit(samples, class_names, generator) -> state``
and ``load_state(state)``: dataset-level preparation, stored as ``fit-s<seed>.json`` so it
is computed once).

The augmenter is set up (``setup(context)``) only when something is generated, so a run
whose images are all cached loads no model; a run passes its :class:`SetupOnce` so that
happens once per run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgid_bench.api import ExpandStage, FitsDataset, ReportsInfo, SelectsImages
from sgid_bench.config import SetupOnce, canonical_json, config_hash

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from sgid_bench.api import Augmenter
    from sgid_bench.context import Context
    from sgid_bench.store import Store


@dataclass
class Record:
    """One input image's generation: the new image (None when dropped) and metadata."""

    index: int
    label: int
    image: Image.Image | None
    meta: dict[str, Any]
    kept: bool = True


@dataclass
class Stats:
    """What a call did: images generated, reused from disk, found corrupted."""

    generated: int = 0
    reused: int = 0
    corrupted: int = 0
    expand_calls: int = 0
    seconds: float = 0.0


@dataclass
class Result:
    """A finished call: records in input order, the cache folder and the stats."""

    records: list[Record]
    path: Path
    stats: Stats = field(default_factory=Stats)

    def samples(self) -> list[tuple[Image.Image, int]]:
        return [(r.image, r.label) for r in self.records if r.kept and r.image is not None]


def expand_samples(augmenter: Augmenter, samples: Sequence[tuple[Image.Image, int]],
                   class_names: list[str], *, key: dict[str, Any], seed: int,
                   context: Context, store: Store | None = None,
                   setup: SetupOnce | None = None) -> list[tuple[Image.Image, int]]:
    """The generated (image, label) pairs of ``samples`` in input order, dropped ones
    omitted; generated once per (key hash, index, seed) and then read from the cache."""
    return generate(augmenter, samples, class_names, key=key, seed=seed, context=context,
                    store=store, setup=setup).samples()


#: The generation batch size whose images are keyed without it (the CLI's default), so
#: caches and results made before the batch size was keyed stay valid.
DEFAULT_GEN_BATCH = 8


def batch_dependent(augmenter: Augmenter | type[Augmenter]) -> bool:
    """Whether the images of ``augmenter`` depend on how they are batched (one generator
    per batch, not :attr:`~sgid_bench.api.Augmenter.per_image_generators`)."""
    return not augmenter.per_image_generators


def effective_key(augmenter: Augmenter | type[Augmenter], key: dict[str, Any],
                  context: Context) -> dict[str, Any]:
    """``key`` plus the generation batch size when the images depend on it (and it is
    not the default): other batch sizes never share images."""
    size = max(1, int(context.gen_batch_size))
    if batch_dependent(augmenter) and size != DEFAULT_GEN_BATCH:
        return {**key, "gen_batch_size": size}
    return key


def key_hash(key: dict[str, Any]) -> str:
    return config_hash(key)


def cache_path(key: dict[str, Any], context: Context) -> Path:
    assert context.cache_dir is not None
    return Path(context.cache_dir) / key_hash(key)


def generate(augmenter: Augmenter, samples: Sequence[tuple[Image.Image, int]],
             class_names: list[str], *, key: dict[str, Any], seed: int, context: Context,
             store: Store | None = None, setup: SetupOnce | None = None) -> Result:
    """:func:`expand_samples` with the records (metadata included) and statistics.

    ``setup``: the run's record of set-up plugins (:attr:`Resolved.setup`); without one
    the augmenter is set up here if anything is generated."""
    if not isinstance(augmenter, ExpandStage):
        raise TypeError(f"augmenter {augmenter.name!r} has no expand stage to generate with")
    key = effective_key(augmenter, key, context)
    root = cache_path(key, context)
    n, size = len(samples), max(1, int(context.gen_batch_size))
    stats, fresh = Stats(), {}
    done = {i: _finished(root, i, seed, stats) for i in range(n)}
    todo = [b for b in range(0, n, size) if not all(done[i] for i in range(b, min(b + size, n)))]
    stats.reused = sum(1 for v in done.values() if v)
    if todo:  # a complete cache is only read: it may be read-only
        _prepare_folder(root, key, n - stats.reused)
    gen_id = _record_start(store, augmenter, key, seed, root, context)
    if todo:
        start = time.perf_counter()
        (setup or SetupOnce())(augmenter, context)
        _fit(augmenter, samples, class_names, root, seed)
        with _progress(n, stats.reused, augmenter.name) as advance:
            for b in todo:
                idx = list(range(b, min(b + size, n)))
                batch = _run_batch(augmenter, samples, class_names, idx, seed)
                stats.expand_calls += 1
                for i, (image, info) in zip(idx, batch, strict=True):
                    if not done[i]:
                        # RGB as when read back from the cache: a later stage of a chain
                        # sees the same image whether this stage ran now or was cached.
                        fresh[i] = (image if image is None or image.mode == "RGB"
                                    else image.convert("RGB"))
                        _write(root, i, seed, int(samples[i][1]), image, info, b, size)
                        stats.generated += 1
                advance(sum(1 for i in idx if not done[i]))
        stats.seconds = time.perf_counter() - start
    records = [_load(root, i, seed, fresh) for i in range(n)]
    _apply_select(augmenter, records)
    _record_done(store, gen_id, sum(1 for r in records if r.kept))
    return Result(records, root, stats)


# -- files -------------------------------------------------------------------------------


def _stem(root: Path, index: int, seed: int) -> Path:
    return root / f"{index:07d}-s{seed}"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _prepare_folder(root: Path, key: dict[str, Any], missing: int) -> None:
    """Create the key's folder (and ``key.json``) before generating into it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "key.json").exists():
            _atomic_write(root / "key.json", json.dumps(key, indent=1, sort_keys=True,
                                                        default=str).encode())
        probe = tempfile.TemporaryFile(dir=root)  # fails early on a read-only cache
        probe.close()
    except OSError as exc:
        from sgid_bench.errors import UserError

        raise UserError(f"generation cache {root} cannot be written ({exc.strerror}) and "
                        f"misses {missing} image(s): make it writable or pass another "
                        "--cache-dir") from None


def _valid_meta(meta: Any) -> bool:
    """Whether ``meta`` is an image record as :func:`_write` makes it."""
    return (isinstance(meta, dict) and isinstance(meta.get("dropped"), bool)
            and isinstance(meta.get("label"), int)
            and (meta["dropped"] or isinstance(meta.get("sha256"), str)))


def _finished(root: Path, index: int, seed: int, stats: Stats) -> bool:
    """Whether image ``index`` is on disk and intact (a hash mismatch, or metadata that is
    not a record, counts as corrupted)."""
    stem = _stem(root, index, seed)
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        stats.corrupted += 1
        return False
    if not _valid_meta(meta):
        stats.corrupted += 1
        return False
    if meta["dropped"]:
        return True
    try:
        data = stem.with_suffix(".png").read_bytes()
    except OSError:
        return False
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        stats.corrupted += 1
        return False
    return True


def _write(root: Path, index: int, seed: int, label: int, image: Image.Image | None,
           info: dict[str, Any], batch_first: int, batch_size: int) -> None:
    stem = _stem(root, index, seed)
    meta: dict[str, Any] = {"index": index, "seed": seed, "label": label,
                            "dropped": image is None, "batch_first": batch_first,
                            "batch_size": batch_size, "info": info}
    if image is not None:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        data = buf.getvalue()
        _atomic_write(stem.with_suffix(".png"), data)
        meta["sha256"] = hashlib.sha256(data).hexdigest()
    _atomic_write(stem.with_suffix(".json"), canonical_json(meta).encode())


def _load(root: Path, index: int, seed: int, fresh: dict[int, Any]) -> Record:
    from PIL import Image

    stem = _stem(root, index, seed)
    meta = json.loads(stem.with_suffix(".json").read_text())
    image = fresh.get(index)
    if image is None and not meta["dropped"]:
        with Image.open(stem.with_suffix(".png")) as im:
            image = im.convert("RGB")
    return Record(index, int(meta["label"]), image, meta, kept=not meta["dropped"])


# -- the augmenter -----------------------------------------------------------------------


def _run_batch(augmenter: Augmenter, samples: Sequence[tuple[Image.Image, int]],
               class_names: list[str], idx: list[int], seed: int
               ) -> list[tuple[Image.Image | None, dict[str, Any]]]:
    from sgid_bench.rng import generator

    assert isinstance(augmenter, ExpandStage)  # checked by generate()
    images = [samples[i][0] for i in idx]
    labels = [int(samples[i][1]) for i in idx]
    gen: torch.Generator | list[torch.Generator] = (
        generator("expand", seed, idx[0]) if batch_dependent(augmenter)
        else [generator("expand", seed, i) for i in idx])
    out = augmenter.expand(images, labels, class_names, gen)
    if len(out) != len(idx):
        raise RuntimeError(f"{augmenter.name}.expand returned {len(out)} images for "
                           f"{len(idx)} inputs (it must return one per input, None to drop)")
    infos: list[dict[str, Any]] = [{} for _ in idx]
    if isinstance(augmenter, ReportsInfo) and isinstance(augmenter.last_info, list) and len(
            augmenter.last_info) == len(idx):
        infos = augmenter.last_info
    return list(zip(out, infos, strict=True))


def _fit(augmenter: Augmenter, samples: Sequence[tuple[Image.Image, int]],
         class_names: list[str], root: Path, seed: int) -> None:
    """Dataset-level preparation once per (key, seed), stored beside the images."""
    if not isinstance(augmenter, FitsDataset):
        return
    from sgid_bench.rng import generator

    path = root / f"fit-s{seed}.json"
    try:
        state = json.loads(path.read_text())
        if state is not None:
            augmenter.load_state(state)
            return
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass  # missing or corrupt: fitted again below
    state = augmenter.fit(samples, class_names, generator("fit", seed))
    _atomic_write(path, canonical_json(state).encode())


def _apply_select(augmenter: Augmenter, records: list[Record]) -> None:
    if not isinstance(augmenter, SelectsImages):
        return
    infos = [{**r.meta.get("info", {}), "dropped": r.meta["dropped"]} for r in records]
    keep = augmenter.select(infos, [r.label for r in records])
    for r, k in zip(records, keep, strict=True):
        r.kept = r.kept and bool(k)


# -- progress and store ------------------------------------------------------------------


@contextlib.contextmanager
def _progress(total: int, completed: int, name: str) -> Iterator[Any]:
    """A rich progress bar on stderr with images/s; silent when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Speed(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0.0:.1f} images/s")

    console = Console(stderr=True)
    if not console.is_terminal:
        # A pipe, nohup or slurm: a plain timestamped line per chunk instead of a bar.
        yield _log_lines(console, name, total, completed)
        return
    with Progress(TextColumn(f"generating {name}"), BarColumn(), MofNCompleteColumn(), Speed(),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(name, total=total, completed=completed)
        yield lambda k: progress.advance(task, k)


def _log_lines(console: Any, name: str, total: int, completed: int) -> Any:
    """``advance(k)`` printing ``<time>  generating NAME  done/total  rate  ETA``."""
    from datetime import datetime

    start, first, done = time.perf_counter(), completed, [completed]

    def advance(k: int) -> None:
        done[0] += k
        rate = (done[0] - first) / max(time.perf_counter() - start, 1e-9)
        eta = (total - done[0]) / rate if rate > 0 else 0.0
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        console.print(f"{stamp}  generating {name}  {done[0]}/{total}  {rate:.1f} images/s  "
                      f"ETA {int(eta) // 60}:{int(eta) % 60:02d}", highlight=False,
                      markup=False, soft_wrap=True)

    return advance


def _describe(augmenter: Augmenter, key: dict[str, Any], context: Context) -> dict[str, Any]:
    chain = key.get("chain") if isinstance(key.get("chain"), list) else None
    last = chain[-1] if chain else {}
    dataset = key.get("dataset", "")
    if isinstance(dataset, dict):
        dataset = dataset.get("name", "")
    return {
        "method": "+".join(str(c.get("name", "?")) for c in chain) if chain else augmenter.name,
        "dataset": str(dataset),
        "params": last.get("params", {}) if isinstance(last, dict) else {},
        "models": augmenter.models_used(context),
    }


def _record_start(store: Store | None, augmenter: Augmenter, key: dict[str, Any], seed: int,
                  root: Path, context: Context) -> int | None:
    if store is None:
        return None
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from sgid_bench.store import RUNNING, utcnow
    from sgid_bench.store import Generation as Row

    cache_key = config_hash({"key": key_hash(key), "seed": seed})
    fields = dict(_describe(augmenter, key, context), seed=seed, path=str(root),
                  status=RUNNING, finished_at=None)
    for _ in range(2):  # a concurrent first insert makes ours an update
        try:
            with store.session() as s:
                row = s.scalar(select(Row).where(Row.cache_key == cache_key))
                if row is None:
                    row = Row(cache_key=cache_key, created_at=utcnow(), images=0, **fields)
                    s.add(row)
                else:
                    for k, v in fields.items():
                        setattr(row, k, v)
                s.flush()
                return int(row.id)
        except IntegrityError:
            continue
    raise RuntimeError(f"cannot record generation {cache_key} in the store")


def _record_done(store: Store | None, gen_id: int | None, images: int) -> None:
    if store is None or gen_id is None:
        return
    from sgid_bench.store import DONE, utcnow
    from sgid_bench.store import Generation as Row

    with store.session() as s:
        row = s.get_one(Row, gen_id)
        row.status, row.images, row.finished_at = DONE, images, utcnow()
