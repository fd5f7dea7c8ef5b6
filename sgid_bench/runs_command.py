"""``sgid-bench runs ...``: look after the runs in the store (reclaim dead claims, record
spooled results). A click group: the CLI adds it with its other commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from sgid_bench.errors import UserError
from sgid_bench.options import db_option

T = TypeVar("T")


@click.group("runs")
def runs() -> None:
    """Look after the runs in the results store."""


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
