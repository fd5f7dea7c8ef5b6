"""The store's schema and its file (issue 12): versioned by Alembic and never re-stamped
older (item 6), created race-free by concurrent processes (item 12), a corrupted or
foreign SQLite file refused without a write (item 13), values PostgreSQL would reject
refused or widened (item 16)."""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from test_store import fields

from sgid_bench.errors import UserError
from sgid_bench.store import HEAD, MIGRATIONS, NoStore, Store

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


@pytest.mark.parametrize("writer", ["9.1.0", None], ids=["version recorded", "no version row"])
def test_database_of_a_newer_sgid_bench_is_refused_not_restamped(
        db_url: str, writer: str | None) -> None:
    from sgid_bench import __version__

    Store(db_url).close()
    with sqlite3.connect(_path(db_url)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
        conn.execute("DELETE FROM sgid_bench_info")
        if writer:
            conn.execute("INSERT INTO sgid_bench_info VALUES ('version', ?)", (writer,))
    conn.close()
    before = _digest(_path(db_url))
    with pytest.raises(UserError) as err:
        Store(db_url)
    # Names the newer release when it is known, the two schemas, and the fix, in one
    # well-formed sentence either way.
    newer = f"newer sgid-bench {writer} (" if writer else "newer sgid-bench ("
    assert str(err.value) == (
        f"database {_path(db_url)} was created by a {newer}schema 0099; this is sgid-bench "
        f"{__version__}, schema {HEAD}); upgrade: pip install -U sgid-bench")
    with sqlite3.connect(_path(db_url)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0099",)]
    conn.close()
    assert _digest(_path(db_url)) == before


def _old_store(db_url: str, *, versioned: bool) -> None:
    """A store with one finished run as sgid-bench 0.1.0 left it (its schema known only by
    its columns) or, ``versioned``, as the first migrating release left it (revision 0001)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    with engine.begin() as conn:  # the 0.1.0 schema, as create_all made it then
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        if not versioned:
            conn.exec_driver_sql("DROP TABLE alembic_version")
            conn.exec_driver_sql("PRAGMA user_version=1")
        conn.exec_driver_sql(
            "INSERT INTO runs (config_hash, seed, method, backbone, dataset, profile, status,"
            " config, models, tiny_models, versions, host, pid, started_at, top1) VALUES "
            "('old', 0, 'none', 'resnet50', 'shapes', 'tiny', 'done', '{}', '{}', 1, '{}',"
            " 'h', 1, '2025-01-01 00:00:00', 50.0)")
    engine.dispose()


def test_database_from_before_migrations_is_upgraded_keeping_its_runs(db_url: str) -> None:
    _old_store(db_url, versioned=False)
    store = Store(db_url)
    assert store.get("old", 0).top1 == 50.0
    assert store.claim("new", 2**40, **fields()) is not None  # the new columns are there


@pytest.mark.parametrize("versioned", [False, True], ids=["before migrations", "revision 0001"])
def test_reading_an_older_store_asks_for_one_writing_command_and_writes_nothing(
        db_url: str, versioned: bool) -> None:
    _old_store(db_url, versioned=versioned)
    path = _path(db_url)
    before = _digest(path)
    with pytest.raises(UserError) as err:
        Store(db_url, readonly=True)
    message = str(err.value)
    assert f"database {path} has an older schema" in message
    assert f"upgrade it once with a writing command, e.g. sgid-bench runs reap --db {db_url}" \
        in message
    assert _digest(path) == before
    Store(db_url).close()  # the writing command it asks for upgrades it, keeping the run
    assert Store(db_url, readonly=True).get("old", 0).top1 == 50.0


def test_a_runs_table_with_the_identifying_columns_is_an_older_sgid_bench_store(
        tmp_path: Path) -> None:
    """The columns that mark a ``runs`` table as sgid-bench's, before migrations existed,
    are enough on their own: such a store is older, not another application's."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (config_hash TEXT, seed INTEGER, method TEXT, "
                     "backbone TEXT, status TEXT, config TEXT, started_at TEXT)")
    conn.close()
    before = _digest(path)
    with pytest.raises(UserError) as err:
        Store(f"sqlite:///{path}", readonly=True)
    assert f"database {path} has an older schema" in str(err.value)
    assert _digest(path) == before


def test_migrating_again_names_the_release_that_migrated_last_and_keeps_other_rows(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A later sgid-bench with one more migration upgrades a store this one built: the
    row naming the last writer (what an older release's refusal quotes) now names the
    later release, once, and the table's other rows stay."""
    import sgid_bench
    from sgid_bench import store as store_module

    Store(db_url).close()
    path = _path(db_url)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO sgid_bench_info VALUES ('note', 'kept')")
    conn.close()
    later = tmp_path / "later-migrations"
    shutil.copytree(MIGRATIONS, later, ignore=shutil.ignore_patterns("__pycache__"))
    (later / "versions" / "0003_later.py").write_text(
        f'revision = "0003"\ndown_revision = "{HEAD}"\n\n\ndef upgrade() -> None:\n'
        "    pass\n")
    monkeypatch.setattr(store_module, "MIGRATIONS", later)
    monkeypatch.setattr(store_module, "HEAD", "0003")
    monkeypatch.setattr(sgid_bench, "__version__", "9.1.0")
    Store(db_url).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
        assert sorted(conn.execute("SELECT key, value FROM sgid_bench_info").fetchall()) == [
            ("note", "kept"), ("version", "9.1.0")]
    conn.close()


def _empty_file(path: Path) -> None:
    path.touch()  # what `touch` or `sqlite3 results.db .quit` leaves


def _generations_only(path: Path) -> None:
    # A 0.1.0 store whose results were dropped by hand, its generation records kept.
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE generations (id INTEGER PRIMARY KEY, cache_key TEXT)")
    conn.close()


@pytest.mark.parametrize("make", [_empty_file, _generations_only])
def test_reading_a_database_without_results_says_so_and_writes_nothing(
        tmp_path: Path, make: Any) -> None:
    path = tmp_path / "nothing.db"
    make(path)
    before = _digest(path)
    # NoStore: a dry-run sweep then plans every run as still to do.
    with pytest.raises(NoStore) as err:
        Store(f"sqlite:///{path}", readonly=True)
    message = str(err.value)
    assert f"no sgid-bench results in {path}" in message
    assert ("run `sgid-bench run` or `sgid-bench sweep` first, or pass --db to the store "
            "your runs wrote to") in message
    assert _digest(path) == before


def test_a_writing_command_builds_a_store_whose_results_were_dropped_keeping_generations(
        db_url: str) -> None:
    """What the reader tells of such a store ("no sgid-bench results ... run `sgid-bench
    run` first") holds: the writing command builds the results table and keeps the cached
    generation records."""
    _old_store(db_url, versioned=False)
    with sqlite3.connect(_path(db_url)) as conn:
        conn.execute("DROP TABLE runs")
        conn.execute(
            "INSERT INTO generations (cache_key, method, dataset, seed, params, models, path,"
            " images, status, created_at) VALUES ('k', 'none', 'shapes', 0, '{}', '{}', 'p',"
            " 3, 'done', '2025-01-01 00:00:00')")
    conn.close()
    store = Store(db_url)
    assert store.claim("new", 0, **fields()) is not None
    with sqlite3.connect(_path(db_url)) as conn:
        assert conn.execute("SELECT cache_key, images FROM generations").fetchall() == [
            ("k", 3)]
    conn.close()


def test_a_store_built_while_this_opener_waited_for_the_lock_is_left_as_built(
        db_url: str) -> None:
    """Two processes find the database empty; the one that gets the lock second finds the
    schema built and uses it as it is: no second migration, and the row naming the
    sgid-bench that built it still names the first."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import Engine

    engine = create_engine(db_url)
    first = engine.connect()
    first.exec_driver_sql("PRAGMA journal_mode=WAL")
    first.commit()
    first.exec_driver_sql("BEGIN IMMEDIATE")  # the first opener holds the lock and builds
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = first
    command.upgrade(config, "head")
    first.exec_driver_sql("INSERT INTO sgid_bench_info VALUES ('version', '0.0.9')")

    waiting = threading.Event()

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.upper().startswith("BEGIN"):  # the second asks for the lock
            waiting.set()

    event.listen(Engine, "before_cursor_execute", on_execute)
    try:
        with ThreadPoolExecutor(1) as pool:
            second = pool.submit(Store, db_url)
            assert waiting.wait(timeout=60), "the second opener never asked for the lock"
            first.commit()
            store = second.result(timeout=60)
    finally:
        event.remove(Engine, "before_cursor_execute", on_execute)
        first.close()
        engine.dispose()
    assert store.runs(status=None) == []
    store.close()
    with sqlite3.connect(_path(db_url)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
        assert conn.execute("SELECT key, value FROM sgid_bench_info").fetchall() == [
            ("version", "0.0.9")]
    conn.close()


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


def test_an_opener_waits_for_another_openers_write_lock_on_a_new_file(tmp_path: Path) -> None:
    """Switching a new file to WAL meets another opener's write lock: this opener waits
    for it instead of failing with 'database is locked' (SQLite answers that switch at
    once, without its busy timeout; about 1 in 100 four-process creations hit it)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    path = tmp_path / "fresh.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is creating the store

    def other_finishes(_context: Any) -> None:  # ...and finishes while this one waits
        if other.in_transaction:
            other.commit()

    event.listen(Engine, "handle_error", other_finishes)
    try:
        store = Store(f"sqlite:///{path}")
    finally:
        event.remove(Engine, "handle_error", other_finishes)
        other.close()
    assert store.runs(status=None) == []
    store.close()


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
        conn.execute("CREATE TABLE payments (id INTEGER PRIMARY KEY, invoice INTEGER)")
    conn.close()


def _foreign_alembic_app(path: Path) -> None:
    # Another application that versions its schema with Alembic too.
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('3f2a9c1b')")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    conn.close()


def _freelist_miscounted(path: Path) -> None:
    # A store that opens and reads, whose header miscounts its free pages: damage only the
    # integrity check finds.
    Store(f"sqlite:///{path}").close()
    data = bytearray(path.read_bytes())
    data[36:40] = (5).to_bytes(4, "big")  # the header's count of freelist pages
    path.write_bytes(bytes(data))


CORRUPT = "is corrupted or not a SQLite file"
FOREIGN = "is not an sgid-bench results store ({}); nothing was written to it: pass another --db"


def _refusals(path: Path) -> list[str]:
    """The one-line errors of a writing and a reading open of ``path``, which neither may
    change (nor write a page to its WAL)."""
    before = _digest(path)
    messages = []
    for readonly in (False, True):
        with pytest.raises(UserError) as err:
            Store(f"sqlite:///{path}", readonly=readonly)
        messages.append(str(err.value))
        assert "\n" not in messages[-1]
    assert _digest(path) == before
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # no page written there either
    return messages


@pytest.mark.parametrize(("make", "problem"), [
    pytest.param(_random_bytes, CORRUPT, id="random bytes"),
    pytest.param(_truncated, CORRUPT, id="truncated"),
    pytest.param(_malformed_pages, CORRUPT, id="malformed pages"),
    pytest.param(_freelist_miscounted, CORRUPT, id="freelist miscounted"),
    pytest.param(_foreign_runs_table, FOREIGN.format("its `runs` table has other columns"),
                 id="foreign runs table"),
    pytest.param(_foreign_other_tables, FOREIGN.format("it holds tables invoices, payments"),
                 id="foreign tables"),
    pytest.param(_foreign_alembic_app,
                 FOREIGN.format("its schema is revision 3f2a9c1b of another application"),
                 id="another Alembic application"),
])
def test_corrupted_or_foreign_sqlite_file_is_refused_untouched(
        tmp_path: Path, make: Any, problem: str) -> None:
    path = tmp_path / "victim.db"
    make(path)
    for message in _refusals(path):
        assert f"database {path} {problem}" in message


def test_damage_only_the_integrity_check_finds_is_named_and_left_untouched(
        tmp_path: Path) -> None:
    path = tmp_path / "victim.db"
    _freelist_miscounted(path)
    for message in _refusals(path):
        assert f"database {path} {CORRUPT}" in message
        assert "freelist: size is 0 but should be 5" in message  # what the check found
        assert "nothing was written to it: restore it from a backup or pass another --db" \
            in message


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
