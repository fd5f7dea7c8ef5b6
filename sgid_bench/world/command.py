"""``sgid-bench world``: build the toy world's models, or show what a build holds."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def world() -> None:
    """The toy world: every model of the paper trained at toy scale on a CPU."""


@world.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to build [default: the package's shipped world, which needs --force].")
@click.option("--only", multiple=True, metavar="COMPONENT",
              help="Build only these components (repeatable): judge, clip, vit, blip, text, "
              "stable-diffusion, instruct-pix2pix.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiplies training steps and corpus size (small values: a quick check).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads [default: torch's, one per core].")
@click.option("--force", is_flag=True,
              help="Build into a non-empty directory / rebuild components already built.")
def build(out: Path | None, only: tuple[str, ...], scale: float, threads: int | None,
          force: bool) -> None:
    """Train the world's models from fixed seeds into OUT (manifest.json, REPORT.md)."""
    import torch

    from sgid_bench.world import shipped_dir
    from sgid_bench.world.build import build as run_build
    from sgid_bench.world.build import report

    if threads:
        torch.set_num_threads(threads)
    target = out or shipped_dir()
    manifest = run_build(target, only=only, scale=scale, force=force,
                         log=lambda line: click.echo(line, err=True))
    click.echo(report(manifest))


@world.command()
@click.option("--world-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="SGID_BENCH_WORLD", help="A world build [default: the shipped one].")
def info(world_dir: Path | None) -> None:
    """Print the build report (time and quality of each component) of a world."""
    from sgid_bench.world import shipped_dir
    from sgid_bench.world.build import read_manifest, report

    click.echo(report(read_manifest(world_dir or shipped_dir())))
