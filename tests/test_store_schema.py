"""The store's schema and its file (issue 12): versioned by Alembic and never re-stamped
older (item 6), created race-free by concurrent processes (item 12), a corrupted or
foreign SQLite file refused without a write (item 13), values PostgreSQL would reject
refused or widened (item 16)."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_store import fields

from sgid_bench.errors import UserError
from sgid_bench.store import HEAD, MIGRATIONS, Store

WORKERS = 4


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _path(db_url: str) -> Path:
    return Path(db_url.removeprefix("sqlite:///"))


def test_head_names_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD]


def test_migrations_build_the_models_schema(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from sgid_bench.store import Base

    store = Store(db_url)  # a fresh store is built by running every migration
    with store.engine.connect() as conn:
        # SQLite column types are affinities (the widening migration skips them there;
        # test_postgres compares types).
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        assert compare_metadata(context, Base.metadata) == []


def test_database_of_a_newer_sgid_bench_is_refused_not_restamped(db_url: str) -> None:
    Store(db_url).close()
    with sqlite3.connect(_path(db_url)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
        conn.execute("UPDATE sgid_bench_info SET value = '9.1.0' WHERE key = 'version'")
    conn.close()
    before = _digest(_path(db_url))
    with pytest.raises(UserError, match=r"created by a newer sgid-bench 9\.1\.0 .*; upgrade"):
        Store(db_url)
    with sqlite3.connect(_path(db_url)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0099",)]
    conn.close()
    assert _digest(_path(db_url)) == before


def test_database_from_before_migrations_is_upgraded_keeping_its_runs(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    with engine.begin() as conn:  # the 0.1.0 schema, as create_all made it then
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.exec_driver_sql("DROP TABLE alembic_version")
        conn.exec_driver_sql("PRAGMA user_version=1")
        conn.exec_driver_sql(
            "INSERT INTO runs (config_hash, seed, method, backbone, dataset, profile, status,"
            " config, models, tiny_models, versions, host, pid, started_at, top1) VALUES "
            "('old', 0, 'none', 'resnet50', 'shapes', 'tiny', 'done', '{}', '{}', 1, '{}',"
            " 'h', 1, '2025-01-01 00:00:00', 50.0)")
    engine.dispose()
    store = Store(db_url)
    assert store.get("old", 0).top1 == 50.0
    assert store.claim("new", 2**40, **fields()) is not None  # the new columns are there


def _open_fresh(url: str, barrier: Any, results: Any) -> None:
    barrier.wait()  # all four open the missing database at the same moment
    try:
        Store(url).close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_processes_create_a_fresh_sqlite_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_open_fresh, args=(url, barrier, results))
             for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert outcomes == ["ok"] * WORKERS
    assert Store(url).runs(status=None) == []


def _real_store(path: Path, rows: int = 200) -> None:
    store = Store(f"sqlite:///{path}")
    for i in range(rows):
        run_id = store.claim(f"h{i}", 0, **fields(config={"pad": "x" * 500}))
        store.finish(run_id, top1=1.0)  # type: ignore[arg-type]
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def _random_bytes(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


def _truncated(path: Path) -> None:
    _real_store(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _malformed_pages(path: Path) -> None:
    _real_store(path)
    data = bytearray(path.read_bytes())
    page = 4096
    for start in range(2 * page, len(data) - page, 3 * page):
        data[start:start + 200] = b"\xff" * 200  # btree page headers overwritten
    path.write_bytes(bytes(data))


def _foreign_runs_table(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, athlete TEXT, km REAL)")
        conn.execute("INSERT INTO runs (athlete, km) VALUES ('ada', 42.2)")
    conn.close()


def _foreign_other_tables(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.close()


@pytest.mark.parametrize(("make", "problem"), [
    (_random_bytes, "corrupted or not a SQLite file"),
    (_truncated, "corrupted or not a SQLite file"),
    (_malformed_pages, "corrupted or not a SQLite file"),
    (_foreign_runs_table, "not an sgid-bench results store"),
    (_foreign_other_tables, "not an sgid-bench results store"),
])
def test_corrupted_or_foreign_sqlite_file_is_refused_untouched(
        tmp_path: Path, make: Any, problem: str) -> None:
    path = tmp_path / "victim.db"
    make(path)
    before = _digest(path)
    for readonly in (False, True):
        with pytest.raises(UserError) as err:
            Store(f"sqlite:///{path}", readonly=readonly)
        message = str(err.value)
        assert problem in message
        assert str(path) in message
        assert "\n" not in message
    assert _digest(path) == before
    wal = tmp_path / "victim.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # no page written there either


def test_nan_params_and_oversized_seeds_are_refused_before_storing(db_url: str) -> None:
    store = Store(db_url)
    with pytest.raises(UserError, match=r"parameter recipe\.lr=nan is not a finite number"):
        store.claim("h", 0, **fields(config={"recipe": {"lr": float("nan")}}))
    with pytest.raises(UserError, match=r"parameter sgid\.scales\[1\]=inf"):
        store.claim("h", 0, **fields(config={"sgid": {"scales": [1.0, float("inf")]}}))
    with pytest.raises(UserError, match="does not fit in 64 bits"):
        store.claim("h", 2**64, **fields())
    assert store.runs(status=None) == []


def test_big_seeds_long_paths_and_nan_metrics_are_stored(db_url: str) -> None:
    store = Store(db_url)
    dataset = "imagefolder:/" + "d" * 700
    run_id = store.claim("h", 2**40 + 1, **fields(dataset=dataset))
    store.finish(run_id, top1=1.0, extra={"history": [{"loss": float("nan")}]})  # type: ignore[arg-type]
    row = Store(db_url).get("h", 2**40 + 1)
    assert (row.dataset, row.extra) == (dataset, {"history": [{"loss": None}]})
