"""A finished result is never only in memory (issue 12, item 4): when the store cannot take
it (here a full disk, SQLite's SQLITE_FULL), finishing retries, then writes it to a spool
file named in a one-line error; `sgid-bench runs import-spool` or the next run records it.
The PostgreSQL restart case is in test_postgres."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event
from test_store import fields

from sgid_bench.errors import UserError
from sgid_bench.runs_command import runs
from sgid_bench.store import DONE, RUNNING, Store

METRICS: dict[str, Any] = {"top1": 81.5, "top5": 99.0, "loss": 0.4,
                           "per_class": {"circle": 90.0},
                           "extra": {"history": ["x" * 1000] * 200}}  # needs new pages


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SGID_BENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _disk_full(store: Store) -> None:
    """From now on the database file cannot grow by a single page."""

    def limit(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count={pages}")
        cur.close()

    event.listen(store.engine, "connect", limit)
    store.engine.dispose()


def _finish_on_a_full_disk(db_url: str) -> tuple[Store, int, str]:
    store = Store(db_url)
    store.retry_delays = (0.0, 0.01)
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    _disk_full(store)
    with pytest.raises(UserError) as err:
        store.finish(run_id, **METRICS)
    return store, run_id, str(err.value)


def test_full_disk_at_finish_spools_the_result(db_url: str, home: Path) -> None:
    store, run_id, message = _finish_on_a_full_disk(db_url)
    (spooled,) = (home / "spool").glob("*.json")
    assert "\n" not in message
    assert f"could not record run {run_id}" in message
    assert "database or disk is full" in message
    assert f"saved in {spooled}" in message
    assert "sgid-bench runs import-spool" in message
    record = json.loads(spooled.read_text())
    assert (record["status"], record["values"]["top1"]) == (DONE, 81.5)
    assert Store(db_url).get("h", 0).status == RUNNING  # nothing half-written


def test_import_spool_records_it_once(db_url: str, home: Path) -> None:
    _finish_on_a_full_disk(db_url)
    result = CliRunner().invoke(runs, ["import-spool", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert "run 1 recorded as done" in result.output
    row = Store(db_url).get("h", 0)
    assert (row.status, row.top1, row.extra) == (DONE, 81.5, METRICS["extra"])
    assert row.wall_time_s is not None
    assert not list((home / "spool").glob("*.json"))
    again = CliRunner().invoke(runs, ["import-spool", "--db", db_url])
    assert "no spooled results" in again.output


def test_spooled_result_of_another_database_is_left_alone(
        db_url: str, home: Path, tmp_path: Path) -> None:
    _finish_on_a_full_disk(db_url)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert Store(other).import_spool() == []
    assert len(list((home / "spool").glob("*.json"))) == 1


def test_spooled_result_whose_row_is_gone_is_recreated(db_url: str, home: Path) -> None:
    _finish_on_a_full_disk(db_url)
    store = Store(db_url)
    with store.engine.begin() as conn:  # e.g. the database was restored from a backup
        conn.exec_driver_sql("DELETE FROM runs")
    (line,) = store.import_spool(quiet=True)
    assert "recorded as done (row re-created)" in line
    row = store.get("h", 0)
    assert (row.status, row.top1, row.method, row.config) == (DONE, 81.5, "none", {"a": 1})


def test_the_next_run_records_spooled_results(
        db_url: str, home: Path, runner: CliRunner) -> None:
    from sgid_bench.cli import main

    _finish_on_a_full_disk(db_url)
    result = runner.invoke(main, ["run", "--backbone", "clip_vit", "--param", "train.epochs=1",
                                  "--param", "shapes.train_per_class=4",
                                  "--param", "shapes.test_per_class=1"])
    assert result.exit_code == 0, result.output
    assert Store(db_url).get("h", 0).status == DONE
    assert not list((home / "spool").glob("*.json"))
