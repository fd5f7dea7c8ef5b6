"""Command-line options shared by several commands, and the Context they build.

Import-light (click only): every command module imports it at start-up."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

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
    "--profile", type=click.Choice(["quick", "paper"]), default="quick", show_default=True,
    help="quick: embedded data, tiny models; paper: the paper's models and recipes.")

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
)


def make_context(profile: str, device: str, data_root: str | None, models_dir: str | None,
                 cache_dir: str | None, gen_batch_size: int, micro_batch: int | None = None,
                 dataset: str = "") -> Context:
    """The run Context from the shared options; ``auto`` picks CUDA when there is one."""
    from sgid_bench.context import Context

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Context(profile=profile, device=device, dataset=dataset.partition(":")[0],
                   data_root=data_root, models_dir=models_dir,  # type: ignore[arg-type]
                   cache_dir=cache_dir, gen_batch_size=gen_batch_size,  # type: ignore[arg-type]
                   micro_batch=micro_batch)
