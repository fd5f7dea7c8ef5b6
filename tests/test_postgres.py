"""The shared store on a real PostgreSQL 15 started by the test (and on SQLite): concurrent
claims from several processes never duplicate a run; results round-trip; a sweep writes
to PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sgid_bench.store import DONE, FAILED, RUNNING, Run, Store

PG_BIN = Path(os.environ.get("SGID_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
WORKERS = 3
KEYS = [(f"hash{i}", seed) for i in range(6) for seed in range(2)]


def fields(**kw: Any) -> dict[str, Any]:
    base = {"method": "none", "backbone": "resnet50", "dataset": "shapes", "profile": "quick",
            "config": {"a": 1}, "models": {"backbone": "tiny/resnet50"}, "tiny_models": True,
            "versions": {"torch": "x"}, "git_revision": None}
    return {**base, **kw}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(args: list[str]) -> list[str]:
    """``args`` as a command line; as the postgres system user when we are root (initdb
    and postgres refuse to run as root)."""
    if os.geteuid() != 0:
        return args
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and no 'postgres' system user to run PostgreSQL as")
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *args]
    return ["su", "postgres", "-c", shlex.join(args)]


#: How to start and stop the test's server (tests that restart it mid-run).
_SERVER: dict[str, list[str]] = {}


def _pg(action: str) -> None:
    subprocess.run(_as_server_user(_SERVER[action]), check=True, capture_output=True,
                   timeout=120)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster listening on 127.0.0.1 only (its unix socket in its
    own temp dir), stopped at teardown; yields ``postgresql+psycopg://postgres@HOST:PORT``."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (set SGID_BENCH_PG_BIN)")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install psycopg")
    # Not under pytest's tmp dir: the postgres user cannot enter root's 0700 directories.
    root = Path(tempfile.mkdtemp(prefix="sgid-pg-"))
    if os.geteuid() == 0:
        _as_server_user([])  # skips early when there is no postgres user
        shutil.chown(root, user="postgres")
    data, port = root / "data", _free_port()
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data)]
    subprocess.run(_as_server_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                    "-A", "trust", "--no-sync", "-E", "UTF8"]),
                   check=True, capture_output=True, timeout=120)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    _SERVER["start"] = [*pg_ctl, "-l", str(root / "log"), "-w", "-t", "60", "-o", options,
                        "start"]
    _SERVER["stop"] = [*pg_ctl, "-m", "fast", "-w", "stop"]
    try:
        _pg("start")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_server_user([*pg_ctl, "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stores() -> Iterator[list[Store]]:
    """Stores opened by a test, their connections closed at teardown (psycopg warns about
    connections left open when an engine is garbage collected)."""
    opened: list[Store] = []
    yield opened
    for store in opened:
        store.close()


@pytest.fixture
def open_store(stores: list[Store]) -> Any:
    def open_(url: str) -> Store:
        stores.append(Store(url))
        return stores[-1]

    return open_


@pytest.fixture
def pg_url(postgres_server: str) -> str:
    """A fresh, empty database per test on the shared server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{postgres_server.replace('+psycopg', '')}/postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"


def _claim_all(url: str, barrier: Any, keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
    store = Store(url)
    barrier.wait()  # every worker opens the store first, then all race for the same keys
    won = []
    for key, seed in keys:
        run_id = store.claim(key, seed, **fields())
        if run_id is not None:
            store.finish(run_id, top1=float(os.getpid() % 100))
            won.append((key, seed))
    store.close()
    return won


def _race(url: str) -> Counter[tuple[str, int]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(WORKERS)
    with ctx.Pool(WORKERS) as pool:
        # Different orders per worker so claims really interleave.
        orders = [KEYS if w % 2 == 0 else KEYS[::-1] for w in range(WORKERS)]
        results = pool.starmap(_claim_all, [(url, barrier, order) for order in orders])
    return Counter(key for won in results for key in won)


def _check_no_duplicates(store: Store) -> None:
    # The tables exist before the race (a creation race is another test).
    wins = _race(store.url)
    assert sorted(wins) == sorted(KEYS)
    assert set(wins.values()) == {1}, "a run was claimed by two workers"
    rows = store.runs(status=None)
    assert sorted((r.config_hash, r.seed) for r in rows) == sorted(KEYS)
    assert {r.status for r in rows} == {DONE}


def test_concurrent_claims_postgres(pg_url: str, open_store: Any) -> None:
    _check_no_duplicates(open_store(pg_url))


def test_concurrent_claims_sqlite(db_url: str, open_store: Any) -> None:
    _check_no_duplicates(open_store(db_url))


def _open(url: str, barrier: Any) -> int:
    barrier.wait()
    store = Store(url)
    count = len(store.runs(status=None))
    store.close()
    return count


def test_many_workers_open_a_fresh_postgres_store_at_once(pg_url: str) -> None:
    # Every Ray worker opens the store (creating tables if missing) at the same moment.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(WORKERS)
    with ctx.Pool(WORKERS) as pool:
        assert pool.starmap(_open, [(pg_url, barrier)] * WORKERS) == [0] * WORKERS


def test_results_round_trip_postgres(pg_url: str, open_store: Any) -> None:
    store = open_store(pg_url)
    run_id = store.claim("h1", 3, **fields(config={"recipe": {"lr": 0.1, "milestones": [1]}}))
    assert run_id is not None
    per_class = {"circle": 90.0, "shiba inu": 12.5}
    extra = {"val_top1": 77.25, "lr": 0.001, "history": [{"epoch": 1, "loss": 1.5}]}
    store.finish(run_id, top1=81.5, top5=99.0, loss=0.4, per_class=per_class, extra=extra)
    row = open_store(pg_url).get("h1", 3)  # a new engine: really read back from the server
    assert row is not None
    assert (row.status, row.top1, row.top5, row.loss) == (DONE, 81.5, 99.0, 0.4)
    assert (row.per_class, row.extra) == (per_class, extra)
    assert row.config == {"recipe": {"lr": 0.1, "milestones": [1]}}
    assert row.started_at.tzinfo is not None
    assert row.wall_time_s is not None
    assert row.wall_time_s >= 0


def test_failed_and_interrupted_runs_postgres(pg_url: str, open_store: Any) -> None:
    store = open_store(pg_url)
    failed = store.claim("h", 0, **fields())
    store.fail(failed, "boom")  # type: ignore[arg-type]
    assert store.claim("h", 0, **fields()) == failed  # a failed run is re-claimed
    dead = subprocess.run(["python3", "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    with store.session() as s:  # its process has ended without finishing
        s.get_one(Run, failed).pid = int(dead.stdout)
    assert store.get("h", 0).status == RUNNING
    assert store.reap_interrupted() == 1
    row = store.get("h", 0)
    assert row.status == FAILED
    assert "interrupted" in row.error


def test_sweep_writes_to_postgres(tmp_path: Path, pg_url: str, open_store: Any) -> None:
    from click.testing import CliRunner

    from sgid_bench.sweep_command import sweep

    path = tmp_path / "s.toml"
    path.write_text("[sweep]\nmethods = ['none']\nbackbones = ['clip_vit']\n"
                    "datasets = ['shapes']\nseeds = 2\n[params]\ntrain.epochs = 1\n"
                    "shapes.train_per_class = 10\nshapes.test_per_class = 2\n")
    result = CliRunner().invoke(sweep, [str(path), "--db", pg_url])
    assert result.exit_code == 0, result.output
    assert "2 done, 0 failed" in result.output
    rows = open_store(pg_url).runs()
    assert sorted(r.seed for r in rows) == [0, 1]
    assert all(r.top1 is not None and r.per_class for r in rows)
    again = CliRunner().invoke(sweep, [str(path), "--db", pg_url])
    assert "already done 2, failed earlier 0, running elsewhere 0, to run 0" in again.output


def test_postgres_restart_at_finish_is_retried(pg_url: str, open_store: Any) -> None:
    import threading

    store = open_store(pg_url)
    store.retry_delays = (1.0, 2.0, 4.0, 8.0)
    run_id = store.claim("h", 0, **fields())
    _pg("stop")  # the pooled connection dies with the server...
    restart = threading.Timer(1.0, _pg, args=("start",))
    restart.start()
    try:
        store.finish(run_id, top1=81.5)  # ...and finishing waits for it to come back
    finally:
        restart.join()
    assert open_store(pg_url).get("h", 0).top1 == 81.5


def test_postgres_down_at_finish_spools_then_imports(
        pg_url: str, open_store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sgid_bench.errors import UserError
    from sgid_bench.runs_command import runs

    monkeypatch.setenv("SGID_BENCH_HOME", str(tmp_path))
    store = open_store(pg_url)
    store.retry_delays = (0.1,)
    run_id = store.claim("h", 0, **fields())
    _pg("stop")
    try:
        with pytest.raises(UserError, match=r"the result is saved in .*spool.*import-spool"):
            store.finish(run_id, top1=81.5)
    finally:
        _pg("start")
    result = CliRunner().invoke(runs, ["import-spool", "--db", pg_url])
    assert result.exit_code == 0, result.output
    assert "recorded as done" in result.output
    assert open_store(pg_url).get("h", 0).top1 == 81.5


def test_postgres_takes_big_seeds_long_paths_and_nan_metrics(
        pg_url: str, open_store: Any) -> None:
    store = open_store(pg_url)
    dataset = "imagefolder:/" + "d" * 700
    run_id = store.claim("h", 2**40, **fields(dataset=dataset))
    store.finish(run_id, top1=1.0, extra={"history": [{"loss": float("nan")}]})
    row = open_store(pg_url).get("h", 2**40)
    assert (row.dataset, row.extra) == (dataset, {"history": [{"loss": None}]})


def test_postgres_schema_matches_the_models(pg_url: str, open_store: Any) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from sgid_bench.store import Base

    store = open_store(pg_url)
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_postgres_newer_schema_is_refused(pg_url: str, open_store: Any) -> None:
    from sgid_bench.errors import UserError

    store = open_store(pg_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(UserError, match="created by a newer sgid-bench"):
        Store(pg_url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0099"


def test_postgres_read_only_store_cannot_write(pg_url: str, open_store: Any) -> None:
    from sqlalchemy.exc import InternalError, OperationalError, ProgrammingError

    from sgid_bench.errors import UserError

    with pytest.raises(UserError, match="no sgid-bench results"):
        Store(pg_url, readonly=True)  # an empty database: nothing created
    open_store(pg_url)
    reader = Store(pg_url, readonly=True)
    try:
        with pytest.raises((InternalError, OperationalError, ProgrammingError),
                           match="read-only"), reader.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM runs")
    finally:
        reader.close()
