"""The ``sgid-bench`` command line: thin click commands that parse, call the core, render.

Results go to stdout; progress, notes and errors to stderr. A user mistake
(:class:`UserError`) prints one ``Error: ...`` line and exits 1, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from sgid_bench.errors import UserError
from sgid_bench.options import context_options, db_option, make_context, profile_option

TINY_NOTE = (
    "Note: this run uses tiny, randomly initialised models ({models}): they exercise the "
    "pipeline and produce no meaningful augmentations or accuracies. Use --profile paper "
    "with real weights for research results."
)
WORLD_NOTE = (
    "Note: the quick profile runs the toy world: every model ({models}) is the real library "
    "class at toy scale, trained on a procedural world of 32 px shapes. It shows the "
    "mechanism at work, not the paper's numbers (use --profile paper with real weights)."
)


class Group(click.Group):
    """Turns :class:`UserError` into a one-line click error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@click.group(cls=Group)
@click.version_option(package_name="sgid-bench")
def main() -> None:
    """sgid-bench: does augmentation method X improve classifier Y on dataset Z?"""


@main.command()
@click.option("--method", default="none", show_default=True,
              help="Augmenter name, or a combination a+b (a then b).")
@click.option("--backbone", default="resnet50", show_default=True)
@click.option("--dataset", default="",
              help="Dataset name, or imagefolder:/path [default: world; shapes with "
              "--profile tiny or paper].")
@click.option("--seed", type=int, multiple=True, default=(0,), show_default=True,
              help="Training seed; repeat for several.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Method/backbone/dataset/training parameter; prefix with a component "
              "name when ambiguous (sgid.strength=0.7, train.epochs=3).")
@click.option("--force", is_flag=True, help="Run again even if this config and seed is done.")
@db_option
@profile_option
@context_options
def run(method: str, backbone: str, dataset: str, seed: tuple[int, ...],
        params: tuple[str, ...], force: bool, db: str | None, **ctx: Any) -> None:
    """Train and evaluate one (method, backbone, dataset) per seed, storing each result."""
    from sgid_bench.config import RunSpec
    from sgid_bench.run import execute, uses_tiny_models, uses_world_models
    from sgid_bench.store import Store

    store = Store(db)
    context = make_context(**ctx)
    console = stderr_console()
    failures = 0
    for s in seed:
        spec = RunSpec(method=method, backbone=backbone, dataset=dataset, seed=s,
                       profile=ctx["profile"], params=list(params))
        with training_progress(console, f"{method} / {backbone} / {spec.dataset} / seed {s}") as cb:
            outcome = execute(spec, store=store, context=context, force=force, progress=cb)
        used = ", ".join(sorted(set(outcome.models.values())))
        if uses_tiny_models(outcome.models):
            console.print(TINY_NOTE.format(models=used), style="yellow", highlight=False)
        elif uses_world_models(outcome.models):
            console.print(WORLD_NOTE.format(models=used), style="cyan", highlight=False)
        failures += outcome.status == "failed"
        click.echo(format_outcome(spec, outcome))
    if failures:
        raise click.ClickException(f"{failures} run(s) failed; the error is stored with each "
                                   f"run (sgid-bench leaderboard shows done runs only)")


def format_outcome(spec: Any, outcome: Any) -> str:
    head = f"{spec.method} / {spec.backbone} / {spec.dataset} / seed {spec.seed}"
    if outcome.status in ("done", "skipped"):
        m = outcome.metrics
        note = " (already done: --force to rerun)" if outcome.status == "skipped" else ""
        return (f"{head}: top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%  loss {m['loss']:.4f}"
                f"  [run {outcome.run_id}, config {outcome.config_hash[:12]}]{note}")
    if outcome.status == "busy":
        return f"{head}: running in another process; skipped"
    return f"{head}: FAILED: {outcome.error}"


class training_progress:  # noqa: N801 - used as a context manager like a function
    """A rich progress bar for epochs and batches on stderr; silent when not a terminal."""

    def __init__(self, console: Any, title: str) -> None:
        self.console, self.title = console, title

    def __enter__(self) -> Callable[[str, int, int], None] | None:
        if not self.console.is_terminal:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.bar = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=self.console, transient=True)
        self.bar.start()
        tasks: dict[str, Any] = {}

        def update(kind: str, done: int, total: int) -> None:
            if kind not in tasks:
                label = self.title if kind == "epoch" else "  batches"
                tasks[kind] = self.bar.add_task(label, total=total)
            self.bar.update(tasks[kind], completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "bar"):
            self.bar.stop()


@main.command(name="list")
def list_plugins() -> None:
    """List augmenters, backbones and datasets, and the package that gave each."""
    from rich.console import Console
    from rich.table import Table

    from sgid_bench.plugins import registry

    reg = registry()
    table = Table("kind", "name", "description", "package", title="sgid-bench plugins")
    for kind, entries in reg.entries.items():
        for name in sorted(entries):
            entry = entries[name]
            table.add_row(kind, name, entry.cls.description, entry.package)
    Console(width=max(120, Console().width)).print(table)


def _add_commands() -> None:
    # Commands that live beside what they drive; each module imports only click at the top.
    from sgid_bench.export import export
    from sgid_bench.leaderboard.command import leaderboard
    from sgid_bench.runs_command import runs
    from sgid_bench.sweep_command import sweep
    from sgid_bench.visualize import show, similarity
    from sgid_bench.world.command import world

    for command in (leaderboard, sweep, show, similarity, export, world, runs):
        main.add_command(command)


_add_commands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
