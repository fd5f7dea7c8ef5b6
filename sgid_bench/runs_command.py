"""``sgid-bench runs ...``: list the runs in the store and show one's resolved config,
and look after them (reclaim dead claims, record spooled results). A click group: the CLI
adds it with its other commands. ``sgid-bench runs [filters]`` is ``runs list``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from sgid_bench.errors import UserError
from sgid_bench.options import db_option

T = TypeVar("T")


class DefaultList(click.Group):
    """A group whose default subcommand is ``list``: ``runs --status failed`` lists."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0].startswith("-") and args[0] != "--help"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group("runs", cls=DefaultList)
def runs() -> None:
    """List the runs in the results store (the default), show one, look after them."""


@runs.command("list")
@click.option("--method", "-m", multiple=True, help="Only these methods (repeatable).")
@click.option("--backbone", "-b", multiple=True, help="Only these backbones (repeatable).")
@click.option("--dataset", "-d", multiple=True, help="Only these datasets (repeatable).")
@click.option("--profile", multiple=True, help="Only this profile (repeatable).")
@click.option("--status", type=click.Choice(["done", "failed", "running"]), default=None,
              help="Only runs with this status [default: all].")
@click.option("--config", "config_prefix", default=None, metavar="HASH",
              help="Only runs whose config hash starts with HASH.")
@db_option
def list_runs(method: tuple[str, ...], backbone: tuple[str, ...], dataset: tuple[str, ...],
              profile: tuple[str, ...], status: str | None, config_prefix: str | None,
              db: str | None) -> None:
    """Stored runs: status, the error of failed ones, config hash, wall time."""
    from rich.console import Console

    rows = _read(db, lambda store: store.runs(
        status, method=list(method) or None, backbone=list(backbone) or None,
        dataset=list(dataset) or None, profile=list(profile) or None))
    if config_prefix:
        rows = [r for r in rows if r.config_hash.startswith(config_prefix.lstrip("#"))]
    if not rows:
        click.echo("no stored runs match", err=True)
        return
    # Wide enough for the 12-character hashes when piped to a file.
    Console(width=max(140, Console().width)).print(runs_table(rows))


def runs_table(rows: Sequence[Any]) -> Any:
    from rich.table import Table

    table = Table("id", "method", "backbone", "dataset", "seed", "profile", "status",
                  "top-1 %", "config", "wall s", "threads", "error",
                  title=f"{len(rows)} stored run(s)")
    for column in table.columns[:-1]:
        column.no_wrap = True
    for r in rows:
        extra = r.extra or {}
        error = (r.error or "").strip().splitlines()
        table.add_row(str(r.id), r.method, r.backbone, r.dataset, str(r.seed), r.profile,
                      r.status, f"{r.top1:.2f}" if r.top1 is not None else "",
                      r.config_hash[:12],
                      f"{r.wall_time_s:.1f}" if r.wall_time_s is not None else "",
                      str(extra.get("threads", "")), error[0] if error else "")
    return table


@runs.command("show")
@click.argument("config_hash", metavar="HASH")
@db_option
def show_run(config_hash: str, db: str | None) -> None:
    """Print the resolved config of the runs whose config hash starts with HASH (a
    leaderboard label such as #8d316ec), with their seeds and status."""
    prefix = config_hash.strip().lstrip("#").lower()
    if not prefix:
        raise click.ClickException("give a config hash or its first characters, e.g. 8d316ec")
    rows = [r for r in _read(db, lambda store: store.runs(None))
            if r.config_hash.startswith(prefix)]
    hashes = sorted({r.config_hash for r in rows})
    if not hashes:
        raise click.ClickException(f"no stored run has a config hash starting with {prefix!r}; "
                                   "sgid-bench runs lists them")
    if len(hashes) > 1:
        raise click.ClickException(f"{prefix!r} matches {len(hashes)} configs "
                                   f"({', '.join(h[:12] for h in hashes)}): give more "
                                   "characters")
    mine = [r for r in rows if r.config_hash == hashes[0]]
    seeds = ", ".join(f"{r.seed} ({r.status}"
                      + (f", {r.top1:.2f}%" if r.top1 is not None else "") + ")" for r in mine)
    click.echo(f"config {hashes[0]}")
    click.echo(f"{mine[0].method} / {mine[0].backbone} / {mine[0].dataset} / "
               f"profile {mine[0].profile}; seeds: {seeds}")
    click.echo(json.dumps(mine[0].config, indent=2, sort_keys=True, default=str))


def _read(db: str | None, query: Callable[[Any], Sequence[Any]]) -> list[Any]:
    """Rows from a read-only store (a missing database is a one-line error)."""
    from sgid_bench.store import Store

    store = _user_errors(lambda: Store(db, readonly=True))
    try:
        return list(_user_errors(lambda: query(store)))
    finally:
        store.close()


@runs.command("reap")
@click.option("--lease", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS",
              help="Reclaim running claims without a heartbeat for this long "
              "[default: $SGID_BENCH_LEASE or 300].")
@db_option
def reap(lease: float | None, db: str | None) -> None:
    """Mark failed the runs left `running` by workers that are gone (a dead process here,
    or no heartbeat for longer than the lease), so `sweep --resume` runs them again."""
    from sgid_bench.store import Store

    store = _user_errors(lambda: Store(db, lease_s=lease))
    try:
        lines = _user_errors(lambda: store.reap(quiet=True))
    finally:
        store.close()
    for line in lines:
        click.echo(line)
    click.echo(f"{len(lines)} run(s) reclaimed in {store.where}" if lines
               else f"nothing to reclaim in {store.where}")


@runs.command("import-spool")
@db_option
def import_spool(db: str | None) -> None:
    """Record the results that were spooled to local files because the store was
    unavailable when their runs finished."""
    from sgid_bench.store import Store, spool_dirs

    store = _user_errors(lambda: Store(db))
    try:
        lines = _user_errors(lambda: store.import_spool(quiet=True))
    finally:
        store.close()
    for line in lines:
        click.echo(line)
    if not lines:
        where = " or ".join(str(d) for d in spool_dirs())
        click.echo(f"no spooled results for {store.where} in {where}")


def _user_errors(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
