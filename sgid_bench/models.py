"""The one place that turns a model id into something loadable, offline.

Model ids are of three kinds:

- real ids (``google/vit-base-patch16-224-in21k``, a hub repo id);
- toy-world models (``world/<component>@<digest>``): the real library classes at toy
  scale, trained on the procedural world by ``sgid-bench world build`` and shipped with
  the package (:mod:`sgid_bench.world.build`); the digest names the exact weights, so a
  rebuilt world never shares a leaderboard cell with another;
- tiny presets (``tiny/<name>``): tiny, randomly initialised models of the real
  architectures, built from configs once into ``<models_dir>/tiny/<name>`` and then loaded
  with ``from_pretrained`` like any model. They exercise the pipeline (tests) and produce
  no meaningful augmentations or accuracies.

A real id is looked up, in order, as: an existing local path, ``<models_dir>/<id>``, the
Hugging Face cache (``local_files_only``). Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sgid_bench.context import Context
from sgid_bench.errors import UserError

TINY = "tiny/"
WORLD = "world/"
#: Bump when a tiny builder changes so stale presets are rebuilt (it is in their path).
TINY_REVISION = "r2"

#: tiny preset name -> module whose import registers its builder with :func:`tiny_builder`.
TINY_MODULES: dict[str, str] = {
    "vit": "sgid_bench.tiny_vision",
    "open_clip": "sgid_bench.tiny_vision",
    "stable-diffusion": "sgid_bench.tiny_generative",
    "blip": "sgid_bench.tiny_generative",
    "instruct-pix2pix": "sgid_bench.tiny_generative",
    "t5": "sgid_bench.tiny_generative",
}
_BUILDERS: dict[str, Callable[[Path], None]] = {}


def tiny_builder(name: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    """Register ``fn(directory)`` that writes the tiny preset ``name`` into ``directory``
    (``save_pretrained`` and friends). It must be deterministic (seed its own RNG)."""

    def decorate(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        _BUILDERS[name] = fn
        return fn

    return decorate


def is_tiny(model_id: str) -> bool:
    return model_id.startswith(TINY)


def is_world(model_id: str) -> bool:
    return model_id.startswith(WORLD)


def for_profile(context: Context, *, tiny: str, world: str, paper: str) -> str:
    """The model id of one role for the context's model set; ``world`` is a component
    name of the toy world (its id carries the digest of the weights in use)."""
    if context.model_set == "tiny":
        return tiny
    if context.model_set == "world":
        from sgid_bench.world.build import world_id

        return world_id(world, context)
    return paper


def resolve(model_id: str, context: Context) -> Path:
    """A local directory holding ``model_id``; builds tiny presets on first use.

    Raises :class:`UserError` saying how to make a missing real model available."""
    assert context.models_dir is not None
    if is_tiny(model_id):
        return ensure_tiny(model_id[len(TINY):], context.models_dir)
    if is_world(model_id):
        from sgid_bench.world.build import world_component

        return world_component(model_id, context)
    for candidate in (Path(model_id).expanduser(), context.models_dir / model_id):
        if candidate.is_dir():
            return candidate
    snapshot = hf_cached(model_id)
    if snapshot is not None:
        return snapshot
    raise missing_model(model_id, context)


def hf_cached(repo_id: str) -> Path | None:
    """The local snapshot of a hub repo if it is in the Hugging Face cache, else None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # any miss (not cached, malformed id, offline) means "not here"
        return None


def missing_model(model_id: str, context: Context) -> UserError:
    return UserError(
        f"model {model_id!r} is not available offline (looked in {context.models_dir} and "
        f"the Hugging Face cache): on a connected machine run `hf download {model_id} "
        f"--local-dir {context.models_dir}/{model_id}` and copy that folder here, or point "
        "--models-dir at a folder that holds it; the quick profile needs no downloads"
    )


def ensure_tiny(name: str, models_dir: Path) -> Path:
    """Build the tiny preset ``name`` once (atomically: built aside, then renamed)."""
    target = models_dir / "tiny" / TINY_REVISION / name
    if target.is_dir():
        return target
    if name not in TINY_MODULES:
        raise UserError(f"unknown tiny model {name!r}; known: {', '.join(sorted(TINY_MODULES))}")
    importlib.import_module(TINY_MODULES[name])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        with transformers_progress_off():
            _BUILDERS[name](tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same preset first; theirs is identical.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextmanager
def transformers_progress_off() -> Iterator[None]:
    """No transformers progress bars inside (restored after): saving or loading a small
    checkpoint should not draw bars in the run's output."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
