"""Building, shipping and loading the toy world's models.

``sgid-bench world build [--out DIR]`` trains every component from fixed seeds with the
project's own trainers (``sgid_bench.world.train_<x>``), each into ``DIR/<component>`` in
its library's own layout (``save_pretrained``, open_clip hub layout), and writes
``DIR/manifest.json``: per component the SHA-256 of every file, a digest over them, the
quality metrics its trainer measured on held-out data, the wall time and the library
versions; ``DIR/REPORT.md`` is the same as a table. The package ships one such build in
``sgid_bench/world/models``, so installing never trains.

A world model's id is ``world/<component>@<digest>``: the digest goes into every run's
config hash, so runs on differently built worlds never share a leaderboard cell. At load
the files are checked against the manifest; a corrupted or partial component is a one-line
error saying how to rebuild it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgid_bench.errors import UserError
from sgid_bench.models import WORLD

if TYPE_CHECKING:
    from sgid_bench.context import Context

#: Component -> trainer module, in build order (a later one may read an earlier one).
COMPONENTS: dict[str, str] = {
    "judge": "sgid_bench.world.train_judge",
    "clip": "sgid_bench.world.train_clip",
    "vit": "sgid_bench.world.train_vit",
    "blip": "sgid_bench.world.train_blip",
    "text": "sgid_bench.world.train_text",
    "stable-diffusion": "sgid_bench.world.train_diffusion",
    "instruct-pix2pix": "sgid_bench.world.train_diffusion",
}
#: Components whose trainer reads another's weights.
NEEDS: dict[str, tuple[str, ...]] = {"instruct-pix2pix": ("stable-diffusion",)}
#: The judge only measures the generated images; it is built and reported, not loaded by runs.
MANIFEST = "manifest.json"
FORMAT = 1


def _trainer(name: str) -> Callable[..., dict[str, float]]:
    module = importlib.import_module(COMPONENTS[name])
    # One module may train several components (Stable Diffusion and InstructPix2Pix).
    fn = getattr(module, f"build_{name.replace('-', '_')}", None) or module.build
    return fn  # type: ignore[no-any-return]


def file_hashes(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory``, by POSIX relative path."""
    out = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        out[path.relative_to(directory).as_posix()] = _sha256(path)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest(files: dict[str, str]) -> str:
    """One hash over a component's files (names and contents)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def read_manifest(world: Path) -> dict[str, Any]:
    path = world / MANIFEST
    if not path.is_file():
        return {"format": FORMAT, "components": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable world manifest ({exc}); rebuild with "
                        f"`sgid-bench world build --out {world} --force`") from None
    if not isinstance(data, dict) or not isinstance(data.get("components"), dict):
        raise UserError(f"{path} is not a world manifest; rebuild with "
                        f"`sgid-bench world build --out {world} --force`")
    return data


def _write_manifest(world: Path, manifest: dict[str, Any]) -> None:
    tmp = world / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, world / MANIFEST)
    (world / "REPORT.md").write_text(report(manifest))


def build(out: Path, *, only: Sequence[str] = (), scale: float = 1.0, force: bool = False,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the components ``only`` (default: all) into ``out``; returns the manifest.

    ``out`` must be empty, or an earlier world build: components already there are
    rebuilt only with ``force``. A component is trained aside and renamed into place, so
    an interrupted build never leaves a half-written component behind."""
    import torch

    unknown = [c for c in only if c not in COMPONENTS]
    if unknown:
        raise UserError(f"unknown world component(s) {', '.join(unknown)}; "
                        f"known: {', '.join(COMPONENTS)}")
    if scale <= 0:
        raise UserError(f"--scale must be > 0, got {scale}")
    names = [c for c in COMPONENTS if not only or c in only]
    out.mkdir(parents=True, exist_ok=True)
    is_world = (out / MANIFEST).is_file()
    if any(out.iterdir()) and not is_world and not force:
        raise UserError(f"{out} is not empty and holds no world build: choose an empty "
                        "directory or pass --force (files of other names are kept)")
    manifest = read_manifest(out)
    done = [c for c in names if c in manifest["components"]]
    if done and not force:
        raise UserError(f"{out} already holds {', '.join(done)}: pass --force to rebuild, "
                        "or --only the components to add")
    for name in names:
        missing = [n for n in NEEDS.get(name, ()) if n not in manifest["components"]
                   and n not in names]
        if missing:
            raise UserError(f"world component {name} needs {', '.join(missing)} built first "
                            f"in {out}: add --only {' --only '.join(missing)}")
    for name in names:
        log(f"world build: {name} (scale {scale:g}, {torch.get_num_threads()} threads)")
        partial = out / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        start = time.perf_counter()
        metrics = _trainer(name)(partial, world=out, scale=scale, log=log)
        seconds = time.perf_counter() - start
        shutil.rmtree(out / name, ignore_errors=True)
        os.replace(partial, out / name)
        manifest = record(out, name, metrics, seconds, scale=scale,
                          threads=torch.get_num_threads())
        log(f"world build: {name} done in {seconds:.0f} s: "
            + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return manifest


def record(out: Path, name: str, metrics: dict[str, float], seconds: float, *,
           scale: float, threads: int) -> dict[str, Any]:
    """Enter the trained component ``out/name`` in the manifest: the hash of every file,
    their digest, its quality metrics and training time. Returns the manifest."""
    manifest = read_manifest(out)
    files = file_hashes(out / name)
    manifest["components"][name] = {
        "digest": digest(files), "files": files, "metrics": metrics,
        "seconds": round(seconds, 1), "scale": scale, "threads": threads,
        "versions": _versions(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    _write_manifest(out, manifest)
    return manifest


def _versions() -> dict[str, str]:
    from sgid_bench.provenance import versions

    keep = ("torch", "diffusers", "transformers", "open_clip_torch", "sgid-bench")
    return {k: v for k, v in versions().items() if k in keep}


def report(manifest: dict[str, Any]) -> str:
    """The manifest as a Markdown table: time and quality of each component."""
    lines = ["# Toy world build", "",
             "Each component trained from fixed seeds by its trainer "
             "(`sgid-bench world build --only COMPONENT` reproduces it); every number measured "
             "on held-out data by that trainer at the end of training; seconds are wall time "
             "on the machine named below.", "",
             "| component | seconds | threads | scale | metrics | digest |",
             "|---|---:|---:|---:|---|---|"]
    total = 0.0
    machine = ""
    for name in COMPONENTS:
        c = manifest["components"].get(name)
        if c is None:
            continue
        total += c["seconds"]
        machine = c.get("machine", machine)
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in c["metrics"].items())
        lines.append(f"| {name} | {c['seconds']:.0f} | {c['threads']} | {c['scale']:g} | "
                     f"{metrics} | `{c['digest'][:12]}` |")
    lines += ["", f"Total training time: {total / 60:.1f} minutes ({machine})."]
    return "\n".join(lines) + "\n"


# -- ids and loading ------------------------------------------------------------------------

def world_id(name: str, context: Context) -> str:
    """``world/<name>@<digest>`` of the component in the context's world directory."""
    assert context.world_dir is not None
    entry = read_manifest(context.world_dir)["components"].get(name)
    if entry is None:
        raise UserError(f"the toy world model {name!r} is not built in {context.world_dir}: "
                        f"run `sgid-bench world build --only {name} --out {context.world_dir}` "
                        "(or --profile tiny for random-weight test models)")
    return f"{WORLD}{name}@{entry['digest'][:12]}"


def world_component(model_id: str, context: Context) -> Path:
    """The checked directory of a ``world/<name>@<digest>`` id."""
    assert context.world_dir is not None
    name, _, want = model_id[len(WORLD):].partition("@")
    world = context.world_dir
    entry = read_manifest(world)["components"].get(name)
    rebuild = f"rebuild it with `sgid-bench world build --only {name} --out {world} --force`"
    if entry is None:
        raise UserError(f"world model {model_id!r} is not built in {world}; {rebuild}")
    if want and not entry["digest"].startswith(want):
        raise UserError(f"world model {model_id!r}: {world} holds another build of {name} "
                        f"(@{entry['digest'][:12]}); point --world-dir at the build you want")
    problem = _check(world / name, tuple(sorted(entry["files"].items())))
    if problem:
        raise UserError(f"world model {name} in {world} is corrupted or partial ({problem}); "
                        f"{rebuild}")
    return world / name


def _check(directory: Path, files: tuple[tuple[str, str], ...]) -> str:
    stats = []
    for rel, _ in files:
        path = directory / rel
        if not path.is_file():
            return f"missing {rel}"
        st = path.stat()
        stats.append((rel, st.st_size, st.st_mtime_ns))
    return _check_cached(str(directory), files, tuple(stats))


@lru_cache(maxsize=32)
def _check_cached(directory: str, files: tuple[tuple[str, str], ...],
                  stats: tuple[tuple[str, int, int], ...]) -> str:
    # Keyed by size and mtime too: a file changed on disk is hashed again.
    del stats
    for rel, sha in files:
        if _sha256(Path(directory) / rel) != sha:
            return f"{rel} does not match its hash"
    return ""
