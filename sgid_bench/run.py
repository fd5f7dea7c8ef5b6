"""One run end to end: resolve, claim a row in the store, load data (and generate),
train, evaluate on test, record. A crash is recorded as failed with its error."""

from __future__ import annotations

import json
import os
import re
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgid_bench import models as model_ids
from sgid_bench.config import Resolved, RunSpec, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.provenance import git_revision, versions
from sgid_bench.store import DONE, FAILED, ClaimLost, Store
from sgid_bench.train import Progress, Trainer, evaluate, normalizer


@dataclass
class Outcome:
    status: str  # "done" | "failed" | "skipped" (already done) | "busy" (claimed elsewhere)
    config_hash: str
    run_id: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    models: dict[str, str] = field(default_factory=dict)


def uses_tiny_models(models: dict[str, str]) -> bool:
    return any(model_ids.is_tiny(m) or model_ids.is_replica(m) for m in models.values())


def uses_world_models(models: dict[str, str]) -> bool:
    return any(model_ids.is_world(m) for m in models.values())


def execute(spec: RunSpec, *, store: Store, context: Context, force: bool = False,
            progress: Progress | None = None, output_dir: str | Path | None = None) -> Outcome:
    """Run ``spec`` unless its (config hash, seed) is already done (or ``force``).

    With ``output_dir``, a finished run is also written as a JSON file there
    (:func:`result_path`).

    User mistakes found before the run starts raise :class:`UserError` and store nothing;
    any failure after it started is recorded as failed and returned (a UserError found
    then, such as missing dataset files, is recorded and raised)."""
    context = context.for_run(spec.profile, spec.dataset, spec.seed)
    resolved = resolve(spec, context)
    chash = resolved.config_hash
    # Missing dataset files are a user mistake: say so before anything is stored.
    from sgid_bench.data import check_dataset

    check_dataset(resolved, context)
    resolved.setup(resolved.backbone, context)
    existing = store.get(chash, spec.seed)
    if existing is not None and existing.status == DONE and not force:
        if output_dir is not None and not result_path(output_dir, existing).exists():
            write_result_json(output_dir, existing)  # stored before files were written
        return Outcome("skipped", chash, existing.id, _metrics_of(existing),
                       models=resolved.config["models"])
    store.import_spool_once()  # results an unavailable store could not take last time
    run_id = store.claim(chash, spec.seed, force=force, **claim_columns(resolved))
    if run_id is None:
        return Outcome("busy", chash, models=resolved.config["models"])
    try:
        with store.keep_alive(run_id):  # the heartbeat that keeps the claim ours
            metrics = train_and_evaluate(resolved, context, store, progress)
    except KeyboardInterrupt:
        store.fail(run_id, "interrupted by the user (KeyboardInterrupt)")
        raise
    except UserError as exc:
        store.fail(run_id, str(exc))
        raise
    except Exception as exc:
        store.fail(run_id, "".join(traceback.format_exception_only(exc)).strip()
                   + "\n" + traceback.format_exc())
        return Outcome(FAILED, chash, run_id, error=f"{type(exc).__name__}: {exc}",
                       models=resolved.config["models"])
    try:
        # Retries, then spools the result to a file named in the UserError it raises.
        store.finish(run_id, **metrics)
    except ClaimLost as exc:
        return Outcome(FAILED, chash, run_id, error=str(exc), models=resolved.config["models"])
    if output_dir is not None:
        row = store.get(chash, spec.seed)
        if row is not None:
            write_result_json(output_dir, row)
    return Outcome(DONE, chash, run_id, metrics, models=resolved.config["models"])


def _path_part(text: str) -> str:
    # imagefolder:/data/x and a+b must stay one directory level each.
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("_") or "_"


def result_path(output_dir: str | Path, row: Any) -> Path:
    """``DIR/<backbone>/<dataset>/<method>/<config hash, 12>/seed<k>.json``: the layout
    of lm-evaluation-harness and MTEB result folders."""
    return (Path(output_dir) / _path_part(row.backbone) / _path_part(row.dataset)
            / _path_part(row.method) / row.config_hash[:12] / f"seed{row.seed}.json")


def result_record(row: Any) -> dict[str, Any]:
    """A stored run as one JSON-able dict: what it ran, with what, and what it measured."""
    extra = dict(row.extra or {})
    history = extra.pop("history", [])
    return {
        "method": row.method, "backbone": row.backbone, "dataset": row.dataset,
        "profile": row.profile, "seed": row.seed, "status": row.status,
        "config_hash": row.config_hash, "config": row.config, "models": row.models,
        "tiny_models": row.tiny_models, "versions": row.versions,
        "git_revision": row.git_revision, "host": row.host,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "wall_time_s": row.wall_time_s,
        "metrics": {"top1": row.top1, "top5": row.top5, "loss": row.loss,
                    "per_class": row.per_class, **extra},
        "history": history,
    }


def write_result_json(output_dir: str | Path, row: Any) -> Path:
    """Write ``row`` to its :func:`result_path` atomically (a reader never sees half a
    file); returns the path. A directory that cannot be written is a UserError."""
    path = result_path(output_dir, row)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(result_record(row), fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write the result file {path}: {exc.strerror or exc}; pass "
                        "a writable --output-dir (the run is stored in the database)") from None
    return path


def claim_columns(resolved: Resolved) -> dict[str, Any]:
    """What a run's row records before it starts: names, config, models, provenance."""
    spec, models = resolved.spec, resolved.config["models"]
    return {"method": resolved.config["method"], "backbone": resolved.backbone.name,
            "dataset": spec.dataset, "profile": spec.profile, "config": resolved.config,
            "models": models, "tiny_models": uses_tiny_models(models), "versions": versions(),
            "git_revision": git_revision()}


def generate(spec: RunSpec, *, store: Store | None, context: Context) -> int:
    """Run only the expand (generation) stages of ``spec`` into the cache; returns the
    number of generated images. Sweeps call it once per distinct generation."""
    from sgid_bench.data import load_splits

    context = context.for_run(spec.profile, spec.dataset, spec.seed)
    return len(load_splits(resolve(spec, context), context, store).generated)


def train_and_evaluate(resolved: Resolved, context: Context, store: Store | None,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Load data, train with model selection on validation, evaluate once on test."""
    import torch

    from sgid_bench.data import load_splits, loaders
    from sgid_bench.rng import make_deterministic, seed_everything

    seed = resolved.spec.seed
    determinism = make_deterministic(context.device)
    seed_everything(seed)
    _phase(progress, "data")
    splits = load_splits(resolved, context, store)
    backbone = resolved.backbone
    # Each plugin once per run: those set up before (the dataset, the backbone, an
    # augmenter that generated) are not set up again.
    for plugin in (backbone, *resolved.augmenters):
        resolved.setup(plugin, context)
    size = backbone.input_size(context)
    train, val, test = loaders(splits, resolved, size, seed, context)
    num_classes = len(splits.class_names)
    normalize = normalizer(backbone, context.device)
    trainer = Trainer(backbone, lambda: backbone.build(num_classes, context), resolved.recipe,
                      resolved.augmenters, context.device, seed, normalize, num_classes,
                      progress, micro_batch=context.micro_batch)
    _phase(progress, "train")
    fit = trainer.fit(train, val)
    _phase(progress, "test")
    ev = evaluate(fit.model, test, normalize, context.device, num_classes, splits.class_names)
    return {
        "top1": ev.top1, "top5": ev.top5, "loss": ev.loss, "per_class": ev.per_class,
        "extra": {"val_top1": fit.val.top1, "lr": fit.lr, "best_epoch": fit.best_epoch,
                  "train_images": len(splits.train), "generated_images": len(splits.generated),
                  "val_images": len(splits.val), "test_images": len(splits.test),
                  "images_per_s": round(fit.images_per_s, 2), "history": fit.history,
                  "device": context.device, "num_classes": num_classes,
                  # Not in the config hash (they do not change what is asked), but the
                  # numbers are reproducible only at the same thread count.
                  "threads": torch.get_num_threads(), "determinism": determinism},
    }


def _phase(progress: Progress | None, name: str) -> None:
    if progress is not None:
        progress("phase", 0, 0, phase=name)


def _metrics_of(run: Any) -> dict[str, Any]:
    return {"top1": run.top1, "top5": run.top5, "loss": run.loss, "per_class": run.per_class,
            "extra": run.extra}
