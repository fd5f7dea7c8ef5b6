"""The ``sgid-bench`` command line: thin click commands that parse, call the core, render.

Results go to stdout; progress, notes and errors to stderr. A user mistake
(:class:`UserError`) prints one ``Error: ...`` line and exits 1, never a traceback.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
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

#: Where ``run`` writes its result files, relative to the working directory.
DEFAULT_OUTPUT_DIR = "sgid-bench-results"


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
@click.option("--output-dir", type=click.Path(file_okay=False), default=DEFAULT_OUTPUT_DIR,
              envvar="SGID_BENCH_OUTPUT_DIR", show_default=True,
              help="Also write each finished run as JSON to "
              "DIR/<backbone>/<dataset>/<method>/<config hash>/seed<k>.json.")
@click.option("--quiet", "-q", is_flag=True, help="No progress and no notes on stderr.")
@click.option("--verbose", "-v", is_flag=True,
              help="Also the config hash, threads and result file of each run, and a "
              "progress line per epoch on a terminal too.")
@db_option
@profile_option
@context_options
def run(method: str, backbone: str, dataset: str, seed: tuple[int, ...],
        params: tuple[str, ...], force: bool, output_dir: str, quiet: bool, verbose: bool,
        db: str | None, **ctx: Any) -> None:
    """Train and evaluate one (method, backbone, dataset) per seed, storing each result."""
    if quiet and verbose:
        raise UserError("--quiet and --verbose contradict each other: give one")
    check_names(method, backbone, dataset)  # before torch is imported: a typo fails fast
    from sgid_bench.config import RunSpec
    from sgid_bench.run import execute
    from sgid_bench.store import Store

    store = Store(db)
    if store.discard_warning():
        click.echo(store.discard_warning(), err=True)
    context = make_context(**ctx)
    console = stderr_console()
    outcomes = []
    for s in dict.fromkeys(seed):  # a repeated --seed runs once
        spec = RunSpec(method=method, backbone=backbone, dataset=dataset, seed=s,
                       profile=ctx["profile"], params=list(params))
        title = f"{method} / {backbone} / {spec.dataset} / seed {s}"
        with RunProgress(console, title, quiet=quiet, verbose=verbose) as listener:
            outcome = execute(spec, store=store, context=context, force=force,
                              progress=listener, output_dir=output_dir)
        outcomes.append((spec, outcome))
        if not quiet:
            announce_models(console, outcome.models)
        if verbose:
            announce_run(console, store, spec, outcome, output_dir)
        click.echo(format_outcome(spec, outcome))
    finish_run(store, outcomes, console, quiet, len(seed) > 1)


def check_names(method: str, backbone: str, dataset: str) -> None:
    """Unknown method, backbone or dataset names, with a suggestion (loads the plugin
    registry only: no torch)."""
    from sgid_bench.config import split_method
    from sgid_bench.plugins import augmenter_class, backbone_class, dataset_class

    for name in split_method(method):
        augmenter_class(name)
    backbone_class(backbone)
    if dataset:
        dataset_class(dataset)


def announce_models(console: Any, models: dict[str, str]) -> None:
    from sgid_bench.run import uses_tiny_models, uses_world_models

    used = ", ".join(sorted(set(models.values())))
    if uses_tiny_models(models):
        console.print(TINY_NOTE.format(models=used), style="yellow", highlight=False)
    elif uses_world_models(models):
        console.print(WORLD_NOTE.format(models=used), style="cyan", highlight=False)


def announce_run(console: Any, store: Any, spec: Any, outcome: Any, output_dir: str) -> None:
    from sgid_bench.run import result_path

    row = store.get(outcome.config_hash, spec.seed)
    extra = (row.extra or {}) if row is not None else {}
    where = f", written to {result_path(output_dir, row)}" if row and row.status == "done" else ""
    console.print(f"config {outcome.config_hash[:12]}, threads {extra.get('threads', '?')}, "
                  f"determinism {extra.get('determinism', '?')}{where}", highlight=False,
                  soft_wrap=True)


def finish_run(store: Any, outcomes: list[tuple[Any, Any]], console: Any, quiet: bool,
               several: bool) -> None:
    """The summary table (several seeds), then the exit status."""
    failures = sum(o.status == "failed" for _, o in outcomes)
    if several:
        print_summary(store, outcomes, console, quiet)
    if failures:
        raise click.ClickException(f"{failures} run(s) failed; the error is stored with each "
                                   f"run (sgid-bench runs --status failed lists them)")


def print_summary(store: Any, outcomes: list[tuple[Any, Any]], console: Any,
                  quiet: bool) -> None:
    from rich.console import Console

    from sgid_bench.summary import render, summarize

    rows = [store.get(o.config_hash, spec.seed) for spec, o in outcomes
            if o.status in ("done", "skipped")]
    lines = summarize([r for r in rows if r is not None and r.top1 is not None], store)
    if not lines:
        return
    Console(width=max(100, Console().width)).print(render(lines))
    for line in lines:
        if line.hint and not quiet:
            console.print(f"Hint: {line.hint}", highlight=False, soft_wrap=True)


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


#: Seconds between plain progress lines within an epoch (a pipe sees one at least this
#: often while batches run).
LOG_EVERY_S = 20.0


class RunProgress:
    """Progress of one run on stderr, as the trainer's ``progress`` listener.

    On a terminal: a rich bar per phase (epochs with ETA, loss and validation accuracy;
    batches of the current epoch with images/s and ETA, restarted every epoch). Elsewhere
    (a pipe, nohup, slurm): one plain timestamped line per phase and per epoch, and one
    at least every :data:`LOG_EVERY_S` seconds within a long epoch. ``quiet``: nothing."""

    def __init__(self, console: Any, title: str, quiet: bool = False,
                 verbose: bool = False) -> None:
        self.console, self.title = console, title
        self.quiet, self.verbose = quiet, verbose
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}
        self.train_started = self.last_line = time.monotonic()

    def __enter__(self) -> RunProgress | None:
        if self.quiet:
            return None
        if self.console.is_terminal:
            self.bar = self._make_bar()
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def _make_bar(self) -> Any:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                        TextColumn("{task.fields[info]}"), console=self.console,
                        transient=True)

    def __call__(self, kind: str, done: int, total: int, **info: Any) -> None:
        if kind == "phase":
            self._phase(str(info.get("phase", "")))
        elif kind == "epoch":
            self._epoch(done, total, info)
        elif kind == "batch":
            self._batch(done, total, info)

    def _phase(self, phase: str) -> None:
        label = {"data": "loading data (and generating)", "train": "training",
                 "test": "testing"}.get(phase, phase)
        if phase == "train":
            self.train_started = time.monotonic()
        if self.bar is None:
            self.log(label)
        elif phase == "test" and "batch" in self.tasks:
            self.bar.update(self.tasks.pop("batch"), visible=False)

    def _epoch(self, done: int, total: int, info: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.train_started
        eta = elapsed / done * (total - done) if done else 0.0
        text = (f"loss {info.get('train_loss', float('nan')):.4f}  "
                f"val {info.get('val_top1', float('nan')):.2f}%  "
                f"{info.get('images_per_s', 0.0):.1f} images/s")
        if self.bar is None or self.verbose:
            self.log(f"epoch {done}/{total}  {text}  eta {_clock(eta)}")
        if self.bar is not None:
            self._task("epoch", f"{self.title}: epochs", total, done, text)

    def _batch(self, done: int, total: int, info: dict[str, Any]) -> None:
        rate = f"{info.get('images_per_s', 0.0):.1f} images/s"
        if self.bar is not None:
            if done == 1 and "batch" in self.tasks:
                self.bar.reset(self.tasks["batch"], total=total)  # a fresh timer per epoch
            self._task("batch", "  batches", total, done, rate)
        elif time.monotonic() - self.last_line >= LOG_EVERY_S:
            self.log(f"epoch {int(info.get('epoch', 0)) + 1} batch {done}/{total}  {rate}")

    def _task(self, key: str, label: str, total: int, done: int, info: str) -> None:
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(label, total=total, info="")
        self.bar.update(self.tasks[key], completed=done, total=total, info=info)

    def log(self, message: str) -> None:
        """One plain line: timestamp, run, message."""
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        self.console.print(f"{stamp}  {self.title}  {message}", highlight=False,
                           markup=False, soft_wrap=True)
        self.last_line = time.monotonic()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@main.command(name="list")
@click.option("--params", "with_params", is_flag=True,
              help="Each plugin's parameters: default, the quick profile's value and the "
              "paper's values (per dataset where they differ).")
def list_plugins(with_params: bool) -> None:
    """List augmenters, backbones and datasets, and the package that gave each."""
    from rich.console import Console
    from rich.table import Table

    from sgid_bench.plugins import registry

    reg = registry()
    console = Console(width=max(120, Console().width))
    if with_params:
        console.print(params_table(reg))
        return
    table = Table("kind", "name", "description", "package", title="sgid-bench plugins")
    for kind, entries in reg.entries.items():
        for name in sorted(entries):
            entry = entries[name]
            table.add_row(kind, name, entry.cls.description, entry.package)
    console.print(table)


def params_table(reg: Any) -> Any:
    """kind, plugin, parameter, default, quick value, paper value(s)."""
    from rich.table import Table

    from sgid_bench.config import DEFAULT_DATASETS

    table = Table("kind", "name", "parameter", "default", "quick", "paper",
                  title="parameters (--param name.key=value)")
    datasets = reg.names("dataset")
    for kind, entries in reg.entries.items():
        for name in sorted(entries):
            cls = entries[name].cls
            quick = cls.profile_params("quick", DEFAULT_DATASETS["quick"])
            paper = {d: cls.profile_params("paper", d) for d in datasets}
            for key, default in cls.param_defaults().items():
                table.add_row(kind, name, key, _short(default),
                              _short(quick[key]) if key in quick else "",
                              _paper_values(key, paper))
    return table


def _paper_values(key: str, per_dataset: dict[str, dict[str, Any]]) -> str:
    # One value when every dataset the paper sets agrees, else "dataset value" pairs.
    values = {d: p[key] for d, p in per_dataset.items() if key in p}
    if not values:
        return ""
    shown = {_short(v) for v in values.values()}
    if len(shown) == 1:
        return shown.pop()
    return ", ".join(f"{d} {_short(v)}" for d, v in sorted(values.items()))


def _short(value: Any, width: int = 40) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[:width - 1] + "…"


def _add_commands() -> None:
    # Commands that live beside what they drive; each module imports only click at the top.
    from sgid_bench.doctor import doctor
    from sgid_bench.export import export
    from sgid_bench.leaderboard.command import leaderboard
    from sgid_bench.replicate import models
    from sgid_bench.runs_command import runs
    from sgid_bench.sweep_command import sweep
    from sgid_bench.visualize import show, similarity
    from sgid_bench.world.command import world

    for command in (leaderboard, sweep, show, similarity, export, world, runs, models, doctor):
        main.add_command(command)


_add_commands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
