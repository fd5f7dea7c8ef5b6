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

In the paper profile a real id found on disk is pinned to its weights: ``<id>@<digest>``
(:func:`content_hash` of the weight files the loaders read), or ``<id>+replica@<digest>``
when the folder is a replica written by ``sgid-bench models replicate`` (it holds
:data:`REPLICA_MARKER`). The pinned id is in the run's config, so runs on other weights
(or on a replica) never share a config hash, a generation cache entry or a leaderboard
cell with runs on the published weights.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
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
    return pin(paper, context)


def resolve(model_id: str, context: Context, kind: str | None = None,
            role: str | None = None) -> Path:
    """A local directory holding ``model_id``; builds tiny presets on first use.

    A real model's folder is checked against ``kind`` (default: the paper id's own, see
    :data:`PAPER_KINDS`): the wrong architecture or an incomplete copy is a one-line
    :class:`UserError` naming ``role`` and the folder. Raises :class:`UserError` saying how
    to make a missing real model available."""
    assert context.models_dir is not None
    if is_tiny(model_id):
        return ensure_tiny(model_id[len(TINY):], context.models_dir)
    if is_world(model_id):
        from sgid_bench.world.build import world_component

        return world_component(model_id, context)
    model_id = base_id(model_id)
    folder = find_local(model_id, context)
    if folder is None:
        raise missing_model(model_id, context)
    kind = kind or PAPER_KINDS.get(model_id)
    if kind is not None:
        check_folder(folder, kind, role or f"model {model_id}", model_id, context.models_dir)
    return folder


def find_local(model_id: str, context: Context) -> Path | None:
    """The local folder of a real id (see the module docstring), or None."""
    assert context.models_dir is not None
    for candidate in (Path(model_id).expanduser(), context.models_dir / model_id):
        if candidate.is_dir():
            return candidate
    return hf_cached(model_id)


def hf_cached(repo_id: str) -> Path | None:
    """The local snapshot of a hub repo if it is in the Hugging Face cache, else None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # any miss (not cached, malformed id, offline) means "not here"
        return None


def download_command(model_id: str, models_dir: Path | None) -> str:
    """The command that fetches ``model_id`` into ``models_dir`` on a connected machine."""
    return f"hf download {model_id} --local-dir {models_dir}/{model_id}"


def missing_model(model_id: str, context: Context) -> UserError:
    return UserError(
        f"model {model_id!r} is not available offline (looked in {context.models_dir} and "
        f"the Hugging Face cache): on a connected machine run "
        f"`{download_command(model_id, context.models_dir)}` and copy that folder here, or "
        "point --models-dir at a folder that holds it; the quick profile needs no downloads "
        "(`sgid-bench doctor --profile paper` lists everything the paper profile needs)"
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


# -- paper models: layouts, replicas, content hashes -----------------------------------------

#: Marker file of a replica (``sgid-bench models replicate``); hub snapshots never have it.
REPLICA_MARKER = "sgid_bench_replica.json"
_PIN = re.compile(r"^(?P<id>.+?)(?P<replica>\+replica)?@(?P<digest>[0-9a-f]{8,64})$")

#: Architecture of every paper model id (what its folder must hold, what writes a replica).
PAPER_KINDS: dict[str, str] = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "stable_diffusion",
    "timbrooks/instruct-pix2pix": "instruct_pix2pix",
    "Salesforce/blip-image-captioning-base": "blip",
    "ViT-B-32/openai": "open_clip",
    "ViT-B-32/laion2b_s34b_b79k": "open_clip",
    "google/vit-base-patch16-224-in21k": "vit",
    "google/flan-t5-base": "t5",
    "mrm8488/t5-base-finetuned-common_gen": "t5",
}
#: Human name of each kind, for errors.
KIND_NAMES = {
    "stable_diffusion": "Stable Diffusion (diffusers, 4-channel UNet)",
    "instruct_pix2pix": "InstructPix2Pix (diffusers, 8-channel UNet)",
    "blip": "BLIP captioning (transformers BlipForConditionalGeneration)",
    "open_clip": "OpenCLIP (open_clip_config.json + weights)",
    "vit": "ViT (transformers ViTModel)",
    "t5": "T5 seq2seq (transformers)",
}
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
               "pytorch_model.bin.index.json")
_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                      "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
_TOKENIZER = ("tokenizer.json", "vocab.txt", "spiece.model", "vocab.json")


def _pipeline_files() -> list[tuple[tuple[str, ...], bool]]:
    def sub(folder: str, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f"{folder}/{n}" for n in names)

    return [(("model_index.json",), False), (("scheduler/scheduler_config.json",), False),
            (("text_encoder/config.json",), False), (sub("text_encoder", _HF_WEIGHTS), True),
            (sub("tokenizer", ("vocab.json", "tokenizer.json")), False),
            (("unet/config.json",), False), (sub("unet", _DIFFUSERS_WEIGHTS), True),
            (("vae/config.json",), False), (sub("vae", _DIFFUSERS_WEIGHTS), True)]


def required_files(kind: str) -> list[tuple[tuple[str, ...], bool]]:
    """What a folder of ``kind`` must hold for the harness to load it: groups of
    alternatives (one of each group must exist) and whether the group is weights."""
    if kind in ("stable_diffusion", "instruct_pix2pix"):
        return _pipeline_files()
    if kind == "open_clip":
        return [(("open_clip_config.json",), False), (_OPEN_CLIP_WEIGHTS, True)]
    groups = [(("config.json",), False), (_HF_WEIGHTS, True)]
    if kind in ("blip", "t5"):
        groups.append((_TOKENIZER, False))
    if kind == "blip":
        groups.append((("preprocessor_config.json",), False))
    return groups


def missing_files(folder: Path, kind: str) -> list[str]:
    """Files ``folder`` lacks for ``kind`` (alternatives written as ``a or b``)."""
    return [" or ".join(group) for group, _ in required_files(kind)
            if not any((folder / name).is_file() for name in group)]


def weight_files(folder: Path, kind: str | None) -> list[Path]:
    """The weight files the loaders read (the first present of each weight group); for an
    unknown kind, every checkpoint file under ``folder``."""
    if kind is None:
        suffixes = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
        return sorted(p for p in folder.rglob("*") if p.suffix in suffixes and p.is_file())
    out = []
    for group, is_weights in required_files(kind):
        found = next((folder / n for n in group if (folder / n).is_file()), None)
        if is_weights and found is not None:
            out.append(found)
            if found.name.endswith(".index.json"):  # sharded: every shard it names
                shards = set(json.loads(found.read_text()).get("weight_map", {}).values())
                out += [found.parent / s for s in sorted(shards)]
    return out


def architecture_problem(folder: Path, kind: str) -> str | None:
    """Why ``folder`` holds another architecture than ``kind`` (None when it fits)."""
    def config(rel: str) -> dict[str, object]:
        try:
            data = json.loads((folder / rel).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    if kind in ("stable_diffusion", "instruct_pix2pix"):
        if (folder / "config.json").is_file() and not (folder / "model_index.json").is_file():
            found = config("config.json").get("model_type")
            return f"a single model (config.json model_type {found!r}), not a diffusers pipeline"
        channels = config("unet/config.json").get("in_channels")
        want = 8 if kind == "instruct_pix2pix" else 4
        if channels is not None and channels != want:
            return f"its UNet takes {channels} input channels, {KIND_NAMES[kind]} takes {want}"
        return None
    if kind == "open_clip":
        if (folder / "model_index.json").is_file():
            return "a diffusers pipeline, not an OpenCLIP model"
        cfg = config("open_clip_config.json")
        if (folder / "open_clip_config.json").is_file() and "model_cfg" not in cfg:
            return "open_clip_config.json has no model_cfg"
        return None
    if (folder / "model_index.json").is_file():
        return "a diffusers pipeline (model_index.json)"
    if (folder / "open_clip_config.json").is_file() and not (folder / "config.json").is_file():
        return "an OpenCLIP model (open_clip_config.json)"
    model_type = config("config.json").get("model_type")
    if model_type is not None and model_type != kind:
        return f"config.json says model_type {model_type!r}, expected {kind!r}"
    return None


def check_folder(folder: Path, kind: str, role: str, model_id: str,
                 models_dir: Path | None) -> None:
    """Raise a one-line :class:`UserError` when ``folder`` is of the wrong architecture
    for ``role`` or incomplete (an interrupted copy), naming what is missing."""
    problem = architecture_problem(folder, kind)
    if problem:
        raise UserError(f"{role}: {folder} is not a {KIND_NAMES[kind]} model: {problem}; "
                        "point --models-dir (or the role's --param) at the right model")
    missing = missing_files(folder, kind)
    if missing:
        raise UserError(f"{role}: model folder {folder} is incomplete (an interrupted "
                        f"copy?): missing {', '.join(missing)}; copy it again "
                        f"(`{download_command(model_id, models_dir)}`)")


def replica_info(folder: Path) -> dict[str, object] | None:
    """The replica marker of ``folder`` (model id, size, seed), or None for real weights."""
    marker = folder / REPLICA_MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        info = {}
    return info if isinstance(info, dict) else {}


def base_id(model_id: str) -> str:
    """A pinned id (``<id>@<digest>``, ``<id>+replica@<digest>``) without its pin."""
    m = _PIN.match(model_id)
    return m.group("id") if m else model_id


def is_replica(model_id: str) -> bool:
    """Whether a (pinned) model id names replica weights."""
    m = _PIN.match(model_id)
    return bool(m and m.group("replica"))


def pin(model_id: str, context: Context) -> str:
    """``model_id`` pinned to the weights found on disk (see the module docstring); the
    bare id when the model is not here (the run then stops with how to get it)."""
    if is_tiny(model_id) or is_world(model_id) or _PIN.match(model_id):
        return model_id
    kind = PAPER_KINDS.get(model_id)
    folder = locate_quiet(model_id, kind, context)
    if folder is None or (kind is not None and missing_files(folder, kind)):
        return model_id  # not here, or incomplete: loading says what is wrong
    mark = "+replica" if replica_info(folder) is not None else ""
    return f"{model_id}{mark}@{content_hash(folder, kind, context)[:16]}"


def locate_quiet(model_id: str, kind: str | None, context: Context) -> Path | None:
    """The local folder of ``model_id`` (open_clip ids through :mod:`sgid_bench.openclip`),
    or None when it is not here."""
    if kind == "open_clip":
        from sgid_bench.openclip import locate

        try:
            return locate(model_id, context)
        except UserError:
            return None
    return find_local(model_id, context)


# -- content hashes ------------------------------------------------------------------------

_MEMO: dict[tuple[object, ...], str] = {}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def content_hash(folder: Path, kind: str | None, context: Context) -> str:
    """sha256 over (relative path, sha256 of the file) of the weight files of ``folder``.

    Cheap after the first time: each file's sha256 is cached by (path, size, mtime) in
    ``<home>/model-hashes.json``; files of a Hugging Face cache snapshot (blobs named by
    their sha256) and of an ``hf download --local-dir`` folder (its metadata records the
    sha256 as etag) are not read at all."""
    files = weight_files(folder, kind)
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(folder), kind, stats)
    if key not in _MEMO:
        cache_file = Path(context.home) / "model-hashes.json"
        cache = _read_json(cache_file)
        before = dict(cache)
        h = hashlib.sha256()
        for path, (_, size, mtime) in zip(files, stats, strict=True):
            rel = path.relative_to(folder).as_posix()
            h.update(f"{rel}:{_file_sha256(folder, path, size, mtime, cache)}\n".encode())
        if cache != before:  # only when a file was hashed now: reading commands write nothing
            _write_json(cache_file, cache)
        _MEMO[key] = h.hexdigest()
    return _MEMO[key]


def _file_sha256(folder: Path, path: Path, size: int, mtime: int,
                 cache: dict[str, object]) -> str:
    real = path.resolve()
    if _HEX64.match(real.name) and real.parent.name == "blobs":  # HF cache: named by sha256
        return real.name
    etag = _local_dir_etag(folder, path, mtime)
    if etag:
        return etag
    entry = cache.get(str(real))
    if isinstance(entry, list) and entry[:2] == [size, mtime]:
        return str(entry[2])
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    cache[str(real)] = [size, mtime, h.hexdigest()]
    return h.hexdigest()


def _local_dir_etag(folder: Path, path: Path, mtime: int) -> str | None:
    """The sha256 ``hf download --local-dir`` recorded for ``path`` (its etag: the LFS
    sha256), when the file was not touched after the download."""
    meta = (folder / ".cache" / "huggingface" / "download"
            / f"{path.relative_to(folder).as_posix()}.metadata")
    try:
        _, etag, stamp = meta.read_text().splitlines()[:3]
        ok = _HEX64.match(etag.strip()) and mtime / 1e9 <= float(stamp) + 1
    except (OSError, ValueError):
        return None
    return etag.strip() if ok else None


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, object]) -> None:
    # Atomic; a lost race only loses cache entries (they are computed again).
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model-hashes.")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: hashes are computed again next time
