"""``sgid-bench sweep FILE.toml``: plan a grid of runs against the store, print the plan,
and execute it locally or on Ray with a live view of progress on stderr."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import click

from sgid_bench.errors import UserError
from sgid_bench.options import context_options, db_option, make_context

EXECUTORS = ("local", "ray")


@click.command("sweep")
@click.argument("file")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local: one run after another in this process; ray: one task per run.")
@click.option("--address", default=None,
              help="Ray cluster to join: auto or ray://host:10001 [default: start a local "
              "cluster].")
@click.option("--num-cpus", type=click.IntRange(min=1), default=2, show_default=True,
              help="CPUs of the local Ray cluster started without --address.")
@click.option("--resume", is_flag=True,
              help="Also retry runs that failed or were interrupted (crash, Ctrl-C) before.")
@click.option("--dry-run", is_flag=True, help="Print the plan with its counts; run nothing.")
@click.option("--estimate", is_flag=True,
              help="With --dry-run: also the estimated wall time of the work to do, split "
              "into generation and training per dataset (calibrated on this machine for a "
              "few seconds).")
@click.option("--force", is_flag=True, help="Run finished runs again too.")
@db_option
@context_options
def sweep(file: str, executor: str, address: str | None, num_cpus: int, resume: bool,
          dry_run: bool, estimate: bool, force: bool, db: str | None, **ctx: Any) -> None:
    """Run the grid of FILE (a sweep .toml, or a shipped sweep: paper, quick).

    Finished runs are skipped (the store knows them); a failed run is recorded with its
    error and the sweep goes on; generation is shared by every run that needs it."""
    if estimate and not dry_run:
        raise click.ClickException("--estimate goes with --dry-run (it plans, runs nothing)")
    ctx["estimate"] = estimate
    try:
        _sweep(file, executor, address, num_cpus, resume, dry_run, force, db, ctx)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None


def _sweep(file: str, executor: str, address: str | None, num_cpus: int, resume: bool,
           dry_run: bool, force: bool, db: str | None, ctx: dict[str, Any]) -> None:
    from sgid_bench.sweep import find_sweep_file, load_sweep

    if address and executor != "ray":
        raise UserError("--address needs --executor ray")
    spec = load_sweep(find_sweep_file(file))
    estimate = ctx.pop("estimate", False)
    wants_device = ctx.get("device")
    context = _context(spec, executor, ctx, dry_run)
    store = _open_store(db, dry_run)
    try:
        plan = _plan_and_run(spec, store, context, executor, address, num_cpus, resume,
                             dry_run, force, file)
        if estimate and plan is not None:
            print_estimate(plan, context, wants_device)
    finally:
        from sgid_bench.executors import close_stores

        close_stores()
        store.close()


def _open_store(db: str | None, dry_run: bool) -> Any:
    """The store; a dry run only reads it (never creates or writes the file), and plans
    against an empty one when there is no database yet."""
    from sgid_bench.store import NoStore, Store

    if not dry_run:
        store = Store(db)
        if store.discard_warning():
            click.echo(store.discard_warning(), err=True)
        return store
    try:
        return Store(db, readonly=True)
    except NoStore as exc:
        click.echo(f"Note: {str(exc).partition(':')[0]}: every run is still to do.", err=True)
        return Store("sqlite://")


def _plan_and_run(spec: Any, store: Any, context: Any, executor: str, address: str | None,
                  num_cpus: int, resume: bool, dry_run: bool, force: bool, file: str) -> Any:
    from sgid_bench.sweep import make_plan

    if not dry_run:
        store.reap_interrupted()  # rows left running by dead processes become failed
    plan = make_plan(spec, store, context, resume=resume, force=force)
    console = _console(stderr=False)
    console.print(plan_table(plan))
    click.echo(plan_summary(plan))
    if dry_run or not plan.todo:
        return plan
    if plan.sweep.profile == "tiny":
        click.echo("Note: the tiny profile trains and generates with tiny, randomly "
                   "initialised models: the results exercise the pipeline only.", err=True)
    elif plan.sweep.profile == "quick":
        click.echo("Note: the quick profile runs the toy world's models: the mechanism at toy "
                   "scale, not the paper's numbers.", err=True)
    report = _execute(plan, store, context, executor, address, num_cpus, force, file)
    click.echo(report_summary(report))
    if report.failures:
        raise UserError(f"{len(report.failures)} run(s) failed (errors above and in the store); "
                        f"fix the cause and retry them with: {resume_command(file)}")
    return plan


def print_estimate(plan: Any, context: Any, wants_device: str | None) -> None:
    """Calibrate on this machine's device (CUDA when there is one, unless --device says
    otherwise) and print the plan's estimated wall time."""
    import torch

    from sgid_bench.estimate import calibrate, estimate, render, summary

    device = wants_device if wants_device not in (None, "auto") else (
        "cuda" if torch.cuda.is_available() else "cpu")
    click.echo(f"calibrating on {device} for a few seconds...", err=True)
    est = estimate(plan, context, calibrate(str(device)))
    _console(stderr=False).print(render(est, str(device)))
    click.echo(summary(est))


def _context(spec: Any, executor: str, ctx: dict[str, Any], dry_run: bool) -> Any:
    device = ctx.pop("device")
    if device == "auto" and (dry_run or executor == "ray"):
        # Ray gives each task its own GPUs (or none): decide from the sweep's resources.
        device = "cuda" if spec.resources.num_gpus > 0 else "cpu"
    # Ray tasks run on the cluster's machines, and a dry run trains nothing: the device
    # need not exist here (Ray checks the GPUs a task asks for against the cluster).
    here = executor == "local" and not dry_run
    return make_context(profile=spec.profile, device=device, device_here=here, **ctx)


def _execute(plan: Any, store: Any, context: Any, executor: str, address: str | None,
             num_cpus: int, force: bool, file: str) -> Any:
    from sgid_bench.executors import Settings, run_local, run_ray

    settings = Settings(shareable_url(store.url, executor), context, force)
    view = LiveView(_console(stderr=True), len(plan.todo), len(plan.generations))
    try:
        with view:
            if executor == "ray":
                return run_ray(plan, settings, plan.sweep.resources, address, view, num_cpus)
            return run_local(plan, settings, view)
    except KeyboardInterrupt:
        raise click.ClickException(
            f"interrupted; finished runs are stored: continue with {resume_command(file)}"
        ) from None


def resume_command(file: str) -> str:
    """The user's sweep command again, with every option they gave on the command line
    (passwords in URLs hidden) and ``--resume``."""
    import shlex

    from click.core import ParameterSource

    from sgid_bench.store import redact

    ctx = click.get_current_context()
    words = ["sgid-bench", "sweep", file]
    for param in ctx.command.params:
        name = param.name or ""
        if (not isinstance(param, click.Option) or name in ("resume", "force", "dry_run")
                or ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE):
            continue
        value = ctx.params.get(name)
        flag = param.opts[0]
        if param.is_flag:
            words += [flag] if value else []
        else:
            words += [flag, redact(str(value), str(value)) if name == "db" else str(value)]
    return shlex.join([*words, "--resume"])


def shareable_url(url: str, executor: str) -> str:
    """The store URL as every worker must see it: SQLite paths made absolute (a Ray
    worker's working directory is not ours); an in-memory database cannot be shared."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    if not parsed.database or parsed.database == ":memory:":
        if executor == "ray":
            raise UserError("an in-memory SQLite store cannot be shared with Ray workers: "
                            "pass --db sqlite:///results.db or a PostgreSQL URL")
        return url
    from pathlib import Path

    return parsed.set(database=str(Path(parsed.database).resolve())).render_as_string(
        hide_password=False)


def _console(stderr: bool) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)


def plan_table(plan: Any) -> Any:
    """Runs per method: total, already done, failed earlier, running elsewhere, to run."""
    from rich.markup import escape
    from rich.table import Table

    from sgid_bench.sweep import BUSY, DONE_BEFORE, FAILED_BEFORE, TODO

    # Names come from the user's file: "[bold" in one is text, not rich markup.
    table = Table(title=escape(f"sweep {plan.sweep.name} ({plan.sweep.profile} profile)"))
    table.add_column("method")
    for name in ("runs", "done", "failed", "running", "to run"):
        table.add_column(name, justify="right")
    by_method: dict[str, Counter[str]] = {}
    for job in plan.jobs:
        by_method.setdefault(job.spec.method, Counter())[job.state] += 1
    states = (DONE_BEFORE, FAILED_BEFORE, BUSY, TODO)
    for method, counts in by_method.items():
        table.add_row(escape(method), str(sum(counts.values())),
                      *(str(counts[s]) for s in states))
    c = plan.counts()
    table.add_row("total", str(c["total"]), str(c["done"]), str(c["failed"]),
                  str(c["running"]), str(c["to_run"]), style="bold", end_section=True)
    return table


def plan_summary(plan: Any) -> str:
    s, c = plan.sweep, plan.counts()
    cells = len(s.methods) * len(s.backbones) * len(s.datasets)
    lines = [
        f"{c['total']} runs: {len(s.methods)} methods x {len(s.backbones)} backbones x "
        f"{len(s.datasets)} datasets ({cells} cells) x {len(s.seeds)} seeds"
        + (f", grid over {', '.join(s.grid)}" if s.grid else "")
        + (f", select over {', '.join(s.select)}" if s.select else "")
        + (f"; {c['duplicates']} duplicate(s) removed" if c["duplicates"] else ""),
        f"already done {c['done']}, failed earlier {c['failed']}, running elsewhere "
        f"{c['running']}, to run {c['to_run']}",
        f"generation jobs: {c['generations']} ({c['generations_cached']} already cached), "
        f"shared by {sum(g.runs for g in plan.generations.values())} training runs",
    ]
    if c["failed"]:
        lines.append("failed runs are retried with --resume")
    return "\n".join(lines)


def report_summary(report: Any) -> str:
    counts = Counter(o.status for _, o in report.outcomes)
    gen_failed = sum(g.error is not None for g in report.generations)
    lines = [f"finished: {counts['done']} done, {counts['failed']} failed, "
             f"{counts['skipped'] + counts['busy']} skipped (done or running elsewhere); "
             f"{len(report.generations)} generation(s), {gen_failed} failed"]
    for job, outcome in report.failures:
        first = (outcome.error or "").strip().splitlines()[:1]
        lines.append(f"  FAILED {_label(job)}: {first[0] if first else 'unknown error'}")
    return "\n".join(lines)


def _label(job: Any) -> str:
    spec = job.spec
    params = f" {' '.join(spec.params)}" if spec.params else ""
    return f"{spec.method} / {spec.backbone} / {spec.dataset} / seed {spec.seed}{params}"


class LiveView:
    """Done / running / failed and an ETA on stderr; when stderr is not a terminal, one
    log line per finished run instead."""

    def __init__(self, console: Any, runs: int, generations: int) -> None:
        self.console, self.live = console, console.is_terminal
        self.runs, self.generations = runs, generations
        self.counts: Counter[str] = Counter()
        self.slots, self.active, self.started = 1, 0, time.monotonic()

    def __enter__(self) -> LiveView:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                "{task.description}", BarColumn(), MofNCompleteColumn(),
                "[green]{task.fields[done]} done[/] [yellow]{task.fields[running]} running[/] "
                "[dim]{task.fields[waiting]} waiting[/] [red]{task.fields[failed]} failed[/]",
                TimeElapsedColumn(), "eta",
                TimeRemainingColumn(), console=self.console)
            self.gen_task = (self.progress.add_task("generations", total=self.generations,
                                                    done=0, running=0, waiting=0, failed=0)
                             if self.generations else None)
            self.run_task = self.progress.add_task("runs", total=self.runs, done=0, running=0,
                                                   waiting=0, failed=0)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def __call__(self, event: str, item: Any, payload: Any) -> None:
        from sgid_bench.sweep import GenJob

        if event == "slots":
            self.slots = payload or 1
            if not self.live and self.slots > 1:
                click.echo(f"up to {self.slots} task(s) run at once; the others wait for "
                           "free resources", err=True)
            return
        kind = "gen" if isinstance(item, GenJob) else "run"
        if event == "start":
            self.counts[f"{kind}_active"] += 1
        elif event == "finish":
            self.counts[f"{kind}_active"] -= 1
            failed = getattr(payload, "error", None) is not None and (
                kind == "gen" or payload.status == "failed")
            self.counts[f"{kind}_{'failed' if failed else 'done'}"] += 1
            if not self.live:
                self._log(kind, item, payload, failed)
        if self.live:
            self._refresh()

    def states(self) -> dict[str, tuple[int, int]]:
        """(running, waiting) per kind: submitted tasks beyond the executor's slots wait
        (on Ray: for a worker with the resources they ask for)."""
        busy_gens = min(self.counts["gen_active"], self.slots)
        busy_runs = max(min(self.counts["run_active"], self.slots - busy_gens), 0)
        return {"gen": (busy_gens, self.counts["gen_active"] - busy_gens),
                "run": (busy_runs, self.counts["run_active"] - busy_runs)}

    def _refresh(self) -> None:
        states = self.states()
        for kind, task in (("gen", self.gen_task), ("run", self.run_task)):
            if task is None:
                continue
            running, waiting = states[kind]
            self.progress.update(
                task, completed=self.counts[f"{kind}_done"] + self.counts[f"{kind}_failed"],
                done=self.counts[f"{kind}_done"], failed=self.counts[f"{kind}_failed"],
                running=running, waiting=waiting)

    def _log(self, kind: str, item: Any, payload: Any, failed: bool) -> None:
        n = self.counts[f"{kind}_done"] + self.counts[f"{kind}_failed"]
        total = self.generations if kind == "gen" else self.runs
        what = (f"generation {item.spec.method} / {item.spec.dataset}" if kind == "gen"
                else _label(item))
        if failed:
            status = f"FAILED: {(payload.error or '').strip().splitlines()[0]}"
        elif kind == "gen":
            status = f"{payload.images} images in {payload.seconds:.1f}s"
        elif payload.status in ("done", "skipped"):
            status = f"{payload.status}, top-1 {payload.metrics.get('top1', float('nan')):.2f}%"
        else:
            status = "running in another process; skipped"
        elapsed = time.monotonic() - self.started
        click.echo(f"[{kind} {n}/{total} {elapsed:.0f}s] {what}: {status}", err=True)
