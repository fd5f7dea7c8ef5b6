"""One run end to end: resolve, claim a row in the store, load data (and generate),
train, evaluate on test, record. A crash is recorded as failed with its error."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
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
    return any(model_ids.is_tiny(m) for m in models.values())


def uses_world_models(models: dict[str, str]) -> bool:
    return any(model_ids.is_world(m) for m in models.values())


def execute(spec: RunSpec, *, store: Store, context: Context, force: bool = False,
            progress: Progress | None = None) -> Outcome:
    """Run ``spec`` unless its (config hash, seed) is already done (or ``force``).

    User mistakes found before the run starts raise :class:`UserError` and store nothing;
    any failure after it started is recorded as failed and returned (a UserError found
    then, such as missing dataset files, is recorded and raised)."""
    context = context.for_run(spec.profile, spec.dataset, spec.seed)
    resolved = resolve(spec, context)
    chash = resolved.config_hash
    # Missing dataset files are a user mistake: say so before anything is stored.
    from sgid_bench.data import check_dataset

    check_dataset(resolved, context)
    resolved.backbone.setup(context)
    existing = store.get(chash, spec.seed)
    if existing is not None and existing.status == DONE and not force:
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
    return Outcome(DONE, chash, run_id, metrics, models=resolved.config["models"])


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
    from sgid_bench.data import load_splits, loaders
    from sgid_bench.rng import seed_everything

    seed = resolved.spec.seed
    seed_everything(seed)
    splits = load_splits(resolved, context, store)
    backbone = resolved.backbone
    backbone.setup(context)
    for aug in resolved.augmenters:
        aug.setup(context)
    size = backbone.input_size(context)
    train, val, test = loaders(splits, resolved, size, seed, context)
    num_classes = len(splits.class_names)
    normalize = normalizer(backbone, context.device)
    trainer = Trainer(backbone, lambda: backbone.build(num_classes, context), resolved.recipe,
                      resolved.augmenters, context.device, seed, normalize, num_classes,
                      progress, micro_batch=context.micro_batch)
    fit = trainer.fit(train, val)
    ev = evaluate(fit.model, test, normalize, context.device, num_classes, splits.class_names)
    return {
        "top1": ev.top1, "top5": ev.top5, "loss": ev.loss, "per_class": ev.per_class,
        "extra": {"val_top1": fit.val.top1, "lr": fit.lr, "best_epoch": fit.best_epoch,
                  "train_images": len(splits.train), "generated_images": len(splits.generated),
                  "val_images": len(splits.val), "test_images": len(splits.test),
                  "images_per_s": round(fit.images_per_s, 2), "history": fit.history,
                  "device": context.device},
    }


def _metrics_of(run: Any) -> dict[str, Any]:
    return {"top1": run.top1, "top5": run.top5, "loss": run.loss, "per_class": run.per_class,
            "extra": run.extra}
