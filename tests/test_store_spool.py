"""A finished result is never only in memory (issue 12, item 4): when the store cannot take
it (here a full disk, SQLite's SQLITE_FULL), finishing retries, then writes it to a spool
file named in a one-line error; `sgid-bench runs import-spool` or the next run records it.
The PostgreSQL restart case is in test_postgres."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event
from test_store import fields

from sgid_bench.errors import UserError
from sgid_bench.runs_command import runs
from sgid_bench.store import DONE, RUNNING, Run, Store, utcnow

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


BIG = {"history": ["x" * 1000] * 200}  # a write that needs new pages


def _spooled(db_url: str, config_hash: str = "h", seed: int = 0, *,
             done_first: tuple[tuple[str, int], ...] = (), error: str | None = None,
             **metrics: Any) -> tuple[Store, int, str]:
    """Claim (config_hash, seed) (after finishing the runs ``done_first``), then finish
    (or, with ``error``, fail) it on a full disk: the result goes to the spool."""
    store = Store(db_url)
    store.retry_delays = (0.0,)
    for key in done_first:
        first = store.claim(*key, **fields())
        store.finish(first, top1=42.0)  # type: ignore[arg-type]
    run_id = store.claim(config_hash, seed, **fields())
    assert run_id is not None
    _disk_full(store)
    write = (partial(store.finish, run_id, **{"top1": 81.5, "extra": BIG, **metrics})
             if error is None else partial(store.fail, run_id, error))
    with pytest.raises(UserError) as err:
        write()
    store.engine.dispose()
    return store, run_id, str(err.value)


def _set_row(db_url: str, run_id: int, **values: Any) -> None:
    with Store(db_url).session() as s:
        row = s.get_one(Run, run_id)
        for key, value in values.items():
            setattr(row, key, value)


@pytest.fixture
def tmpdir_(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temporary directory (the spool's fallback location)."""
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path / "tmp"


def test_results_spool_to_the_temporary_directory_when_home_is_unwritable(
        db_url: str, home: Path, tmpdir_: Path) -> None:
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a directory")
    _, run_id, message = _spooled(db_url)
    # The fallback's name is shared by every sgid-bench version: each finds the others'.
    (spooled,) = (tmpdir_ / "sgid-bench-spool").glob("*.json")
    assert f"saved in {spooled}:" in message
    (line,) = Store(db_url).import_spool(quiet=True)
    assert line == f"{spooled}: run {run_id} recorded as done"
    assert Store(db_url).get("h", 0).top1 == 81.5


def test_spooled_results_share_the_spool_directory(db_url: str, home: Path,
                                                    tmpdir_: Path) -> None:
    _spooled(db_url, "h1")
    _spooled(db_url, "h2")
    assert len(list((home / "spool").glob("*.json"))) == 2
    assert not (tmpdir_ / "sgid-bench-spool").exists()
    assert not list((home / "spool").glob(".*.tmp"))  # written whole, then renamed


def test_with_no_writable_spool_directory_the_result_is_in_the_error(
        db_url: str, home: Path, tmpdir_: Path) -> None:
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("not a directory")
    (tmpdir_ / "sgid-bench-spool").write_text("not a directory either")
    store, run_id, message = _spooled(db_url)
    marker = "the result is saved in (no writable spool directory) "
    assert marker in message
    record, end = json.JSONDecoder().raw_decode(message, message.index(marker) + len(marker))
    assert message[end:].startswith(": record it with `sgid-bench runs import-spool`")
    assert (record["kind"], record["db"], record["run_id"], record["status"]) == (
        "sgid-bench result", store.identity, run_id, DONE)
    assert record["values"] == {"top1": 81.5, "extra": BIG}
    assert record["claim_token"] == Store(db_url).get("h", 0).claim_token
    assert record["row"]["config_hash"] == "h"
    assert record["finished_at"].startswith(str(utcnow().year))  # ISO 8601


def test_writing_a_result_waits_only_between_retries(
        db_url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sgid_bench.store as store_module

    waits: list[float] = []
    monkeypatch.setattr(store_module.time, "sleep", waits.append)
    store = Store(db_url)
    store.retry_delays = (0.5, 1.0)
    run_id = store.claim("h", 0, **fields())
    store.finish(run_id, top1=1.0)  # type: ignore[arg-type]
    assert sum(waits) == 0  # the database is up: written at once
    waits.clear()
    run_id = store.claim("h", 1, **fields())
    _disk_full(store)
    with pytest.raises(UserError, match="could not record run"):
        store.finish(run_id, **METRICS)
    assert [w for w in waits if w] == [0.5, 1.0]


def test_import_spool_logs_each_line_unless_quiet(
        db_url: str, home: Path, caplog: pytest.LogCaptureFixture) -> None:
    _spooled(db_url, "h1")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sgid_bench.store"):
        lines = Store(db_url).import_spool()
    assert len(lines) == 1
    assert [r.getMessage() for r in caplog.records] == lines
    _spooled(db_url, "h2")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sgid_bench.store"):
        assert len(Store(db_url).import_spool(quiet=True)) == 1
    assert caplog.records == []


def test_unreadable_and_foreign_spool_files_do_not_stop_the_import(
        db_url: str, home: Path) -> None:
    _, run_id, _ = _spooled(db_url)
    spool = home / "spool"
    (spooled,) = spool.glob("*.json")
    corrupt, foreign = spool / "0-corrupt.json", spool / "1-foreign.json"  # sorted first
    corrupt.write_text("{not json")
    foreign.write_text(json.dumps({"kind": "something else", "run_id": run_id}))
    lines = Store(db_url).import_spool(quiet=True)
    assert len(lines) == 2
    assert lines[0].startswith(f"{corrupt}: unreadable (")
    assert lines[0].endswith("); left in place")
    assert lines[1] == f"{spooled}: run {run_id} recorded as done"
    assert sorted(spool.glob("*.json")) == [corrupt, foreign]
    assert Store(db_url).get("h", 0).status == DONE


def test_the_spool_is_imported_once_per_store(db_url: str, home: Path) -> None:
    _spooled(db_url, "h1")
    readonly = Store(db_url, readonly=True)
    readonly.import_spool_once()  # a reading command records nothing
    assert len(list((home / "spool").glob("*.json"))) == 1
    store = Store(db_url)
    store.import_spool_once()
    assert Store(db_url).get("h1", 0).status == DONE
    _spooled(db_url, "h2")
    store.import_spool_once()  # once per Store: the next run records it
    assert Store(db_url).get("h2", 0).status == RUNNING
    other = Store(db_url)
    other.import_spool()
    assert Store(db_url).get("h2", 0).status == DONE
    _spooled(db_url, "h3")
    other.import_spool_once()  # an explicit import counts as the once
    assert Store(db_url).get("h3", 0).status == RUNNING


def test_a_spooled_result_finds_its_row_by_config_and_seed(db_url: str, home: Path) -> None:
    # Runs of another config with this seed, and of this config with another seed, have
    # lower ids: neither may take the result.
    _, run_id, _ = _spooled(db_url, "h", 0, done_first=(("h2", 0), ("h", 1)))
    (line,) = Store(db_url).import_spool(quiet=True)
    assert line.endswith(f"run {run_id} recorded as done")
    store = Store(db_url)
    assert (store.get("h", 0).top1, store.get("h2", 0).top1, store.get("h", 1).top1) == (
        81.5, 42.0, 42.0)


def test_two_workers_importing_the_spool_at_once_do_not_trip_over_each_other(
        db_url: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, run_id, _ = _spooled(db_url)
    store = Store(db_url)
    record = store._import_record

    def other_worker_too(rec: dict[str, Any]) -> str:
        outcome = record(rec)
        for path in (home / "spool").glob("*.json"):  # the other worker's import ends first
            path.unlink()
        return outcome

    monkeypatch.setattr(store, "_import_record", other_worker_too)
    (line,) = store.import_spool(quiet=True)
    assert line.endswith(f"run {run_id} recorded as done")


def test_a_spooled_result_of_a_run_another_worker_finished_is_discarded(
        db_url: str, home: Path) -> None:
    _, run_id, _ = _spooled(db_url)
    _set_row(db_url, run_id, status=DONE, top1=42.0, claim_token="f" * 32)
    (line,) = Store(db_url).import_spool(quiet=True)
    assert line.endswith(f"run {run_id} discarded (already done by another worker)")
    assert Store(db_url).get("h", 0).top1 == 42.0
    assert not list((home / "spool").glob("*.json"))


def test_a_spooled_result_whose_write_did_land_is_recorded_again(
        db_url: str, home: Path) -> None:
    # The write committed but its acknowledgement was lost: same claim, already done.
    _, run_id, _ = _spooled(db_url)
    _set_row(db_url, run_id, status=DONE, top1=81.5)
    (line,) = Store(db_url).import_spool(quiet=True)
    assert line.endswith(f"run {run_id} recorded as done")
    assert not list((home / "spool").glob("*.json"))


def test_a_spooled_failure_is_recorded(db_url: str, home: Path) -> None:
    error = "Traceback:\n" + "frame\n" * 50_000  # too long for the full disk
    _, run_id, message = _spooled(db_url, error=error)
    assert f"could not record run {run_id}" in message
    (line,) = Store(db_url).import_spool(quiet=True)
    assert line.endswith(f"run {run_id} recorded as failed")
    row = Store(db_url).get("h", 0)
    assert (row.status, row.error) == ("failed", error)


def test_a_spooled_failure_superseded_by_a_later_claim_is_discarded(
        db_url: str, home: Path) -> None:
    _, run_id, _ = _spooled(db_url, error="E" * 300_000)
    # Since then another worker re-claimed the run, and it failed there too.
    _set_row(db_url, run_id, status="failed", error="later", claim_token="f" * 32)
    (line,) = Store(db_url).import_spool(quiet=True)
    assert line.endswith(f"run {run_id} discarded (a failure superseded by a later claim)")
    assert Store(db_url).get("h", 0).error == "later"


def test_a_spooled_result_beats_a_later_claims_failure(db_url: str, home: Path) -> None:
    _, run_id, _ = _spooled(db_url)
    _set_row(db_url, run_id, status="failed", error="later", claim_token="f" * 32)
    (line,) = Store(db_url).import_spool(quiet=True)
    assert line.endswith(f"run {run_id} recorded as done")
    row = Store(db_url).get("h", 0)
    assert (row.status, row.top1) == (DONE, 81.5)


def test_a_result_spooled_without_its_claim_is_matched_by_run_id(
        db_url: str, home: Path) -> None:
    # A restarted worker (a Store that did not make the claim) spools a bare result.
    owner = Store(db_url)
    run_id = owner.claim("h", 0, **fields())
    assert run_id is not None
    restarted = Store(db_url)
    restarted.retry_delays = (0.0,)
    _disk_full(restarted)
    with pytest.raises(UserError, match="could not record run"):
        restarted.finish(run_id, top1=81.5, extra=BIG)
    (line,) = Store(db_url).import_spool(quiet=True)
    assert line.endswith(f"run {run_id} kept (running in another worker now; "
                         "import again later)")
    assert Store(db_url).get("h", 0).status == RUNNING
    # Kept means kept: the file waits for an import after the other worker is gone.
    assert len(list((home / "spool").glob("*.json"))) == 1
    (again,) = Store(db_url).import_spool(quiet=True)
    assert again == line


def test_a_diverged_or_numpy_metric_is_spooled_not_lost(db_url: str, home: Path) -> None:
    import numpy as np

    store = Store(db_url)
    store.retry_delays = (0.0,)
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    _disk_full(store)
    with pytest.raises(UserError, match="could not record run"):
        store.finish(run_id, top1=np.float32(12.5), loss=float("nan"), extra=BIG)
    (spooled,) = (home / "spool").glob("*.json")
    values = json.loads(spooled.read_text())["values"]
    assert (values["top1"], values["loss"]) == (12.5, None)  # NaN as SQLite stores it
    Store(db_url).import_spool(quiet=True)
    row = Store(db_url).get("h", 0)
    assert (row.status, row.top1, row.loss) == (DONE, 12.5, None)


def test_a_bare_spooled_result_whose_row_is_gone_is_discarded(
        db_url: str, home: Path) -> None:
    owner = Store(db_url)
    run_id = owner.claim("h", 0, **fields())
    restarted = Store(db_url)
    restarted.retry_delays = (0.0,)
    _disk_full(restarted)
    with pytest.raises(UserError, match="could not record run"):
        restarted.finish(run_id, top1=81.5, extra=BIG)  # type: ignore[arg-type]
    with owner.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM runs")
    (line,) = Store(db_url).import_spool(quiet=True)
    assert line.endswith(f"run {run_id} discarded (its row is gone and the spool file "
                         "lacks it)")
    assert not list((home / "spool").glob("*.json"))
    assert Store(db_url).runs(None) == []
