"""Command-line options shared by several commands, and the Context they build.

Import-light (click only): every command module imports it at start-up."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from sgid_bench.errors import UserError

if TYPE_CHECKING:
    from sgid_bench.context import Context

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def stack(*options: Decorator) -> Decorator:
    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


profile_option = click.option(
    "--profile", type=click.Choice(["quick", "tiny", "paper"]), default="quick",
    show_default=True, envvar="SGID_BENCH_PROFILE",
    help="quick: the toy world's trained models at small scale; tiny: random-weight test "
    "models; paper: the paper's models and recipes.")

db_option = click.option(
    "--db", default=None, envvar="SGID_BENCH_DB",
    help="SQLAlchemy URL of the results store (postgresql+psycopg://... for many workers) "
    "[default: sqlite:///sgid-bench.db].")

#: Where data, models and the generation cache live, and the device.
context_options = stack(
    click.option("--device", default="auto", show_default=True,
                 help="cpu, cuda, cuda:1, or auto."),
    click.option("--data-root", type=click.Path(file_okay=False), default=None,
                 help="Where datasets live [default: ~/.cache/sgid-bench/data]."),
    click.option("--models-dir", type=click.Path(file_okay=False), default=None,
                 help="Local model copies and tiny presets "
                 "[default: ~/.cache/sgid-bench/models]."),
    click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                 help="Generation cache [default: ~/.cache/sgid-bench/cache]."),
    click.option("--gen-batch-size", type=click.IntRange(min=1), default=8, show_default=True,
                 help="Images per generation batch."),
    click.option("--micro-batch", type=click.IntRange(min=1), default=None,
                 help="Largest training batch per forward pass; the recipe's batch is "
                 "reached by gradient accumulation (when it does not fit in memory)."),
    click.option("--world-dir", type=click.Path(file_okay=False), default=None,
                 envvar="SGID_BENCH_WORLD",
                 help="A toy world build (sgid-bench world build) [default: the shipped one]."),
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="Torch intra-op threads [default: $OMP_NUM_THREADS, else 1 for the "
                 "quick and tiny profiles and on a GPU (faster for small models), else every "
                 "core]. Recorded with each run; not part of the config hash."),
)


def make_context(profile: str, device: str, data_root: str | None, models_dir: str | None,
                 cache_dir: str | None, gen_batch_size: int, micro_batch: int | None = None,
                 dataset: str = "", world_dir: str | None = None,
                 device_here: bool = True, threads: int | None = None) -> Context:
    """The run Context from the shared options; ``auto`` picks CUDA when there is one.

    Sets this process's torch threads (``threads``, or the default for the profile and
    device: :func:`sgid_bench.rng.default_threads`); every run records the count.

    A device that is malformed, or (with ``device_here``: the work runs in this process)
    absent from this machine, is a :class:`UserError` before any run is claimed."""
    from sgid_bench.context import Context
    from sgid_bench.rng import default_threads, set_threads

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device, here=device_here)
    set_threads(threads or default_threads(profile, device))
    return Context(profile=profile, device=device, dataset=dataset.partition(":")[0],
                   data_root=data_root, models_dir=models_dir,  # type: ignore[arg-type]
                   cache_dir=cache_dir, gen_batch_size=gen_batch_size,  # type: ignore[arg-type]
                   micro_batch=micro_batch, world_dir=world_dir)  # type: ignore[arg-type]


#: Device types the trainer knows how to use.
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(device: str, here: bool = True) -> None:
    """Refuse ``--device bogus`` always, and ``--device cuda`` on a machine without CUDA
    when ``here`` (a Ray task's device is checked by the cluster's resources instead)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise UserError(f"unknown --device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    if not here or parsed.type == "cpu":
        return
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("--device mps: this machine has no MPS device; use --device cpu")
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise UserError(f"--device {device}: CUDA is not available on this machine (no GPU "
                        "or a CPU-only PyTorch); use --device cpu or auto")
    if parsed.index is not None and parsed.index >= count:
        raise UserError(f"--device {device}: this machine has {count} CUDA device(s) "
                        f"(cuda:0 to cuda:{count - 1})")
