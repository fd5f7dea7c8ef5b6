"""Who may see and write what (issue 12): no password in any message (item 9), reading
commands never write the database and work on a read-only copy (item 10), provenance does
not lock the user's git index (item 11), one unreadable row does not sink the leaderboard
(item 20)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError
from test_store import fields

from sgid_bench.errors import UserError
from sgid_bench.leaderboard.command import leaderboard
from sgid_bench.store import Store
from sgid_bench.sweep_command import sweep

SECRET = "s3cr3t-pw"
SWEEP = ("[sweep]\nmethods = ['none']\nbackbones = ['clip_vit']\ndatasets = ['shapes']\n"
         "seeds = 1\n[params]\ntrain.epochs = 1\n")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://bench:{SECRET}@127.0.0.1:1/results",  # connection refused
    f"postgresql+nodriver://bench:{SECRET}@127.0.0.1/results",  # unknown driver
    f"postgresql://bench:{SECRET}@db:notaport/results",  # unparsable port
    f"postgresql+psycopg://bench:{SECRET}@@:/",  # unparsable
])
def test_no_password_in_store_errors(url: str) -> None:
    with pytest.raises(UserError) as err:
        Store(url)
    assert SECRET not in str(err.value)


def test_no_password_in_command_errors(tmp_path: Path, runner: CliRunner,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql+psycopg://bench:{SECRET}@127.0.0.1:1/results"
    path = tmp_path / "s.toml"
    path.write_text(SWEEP)
    from_flag = runner.invoke(leaderboard, ["--db", url])
    monkeypatch.setenv("SGID_BENCH_DB", url)
    from_env = runner.invoke(sweep, [str(path), "--dry-run"])
    for result in (from_flag, from_env):
        assert result.exit_code == 1
        assert "bench:***@127.0.0.1:1" in result.output
        assert SECRET not in result.output


def _store_with_runs(db_url: str) -> Path:
    store = Store(db_url)
    for seed in range(2):
        run_id = store.claim("h", seed, **fields())
        store.finish(run_id, top1=50.0 + seed, top5=90.0, loss=1.0)  # type: ignore[arg-type]
    store.close()
    return Path(db_url.removeprefix("sqlite:///"))


def test_reading_commands_do_not_write_the_database(
        tmp_path: Path, runner: CliRunner, db_url: str) -> None:
    db = _store_with_runs(db_url)
    path = tmp_path / "s.toml"
    path.write_text(SWEEP)
    before = _digest(db)
    board = runner.invoke(leaderboard, ["--db", db_url, "--format", "csv"])
    assert board.exit_code == 0, board.output
    plan = runner.invoke(sweep, [str(path), "--dry-run", "--db", db_url])
    assert plan.exit_code == 0, plan.output
    assert _digest(db) == before


def test_read_only_store_cannot_write(db_url: str) -> None:
    _store_with_runs(db_url)
    store = Store(db_url, readonly=True)
    assert len(store.runs()) == 2
    with pytest.raises(OperationalError, match="readonly"), store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE runs SET top1 = 0")
    assert store.reap() == []


def test_reading_a_missing_database_says_so_and_creates_nothing(
        tmp_path: Path, runner: CliRunner) -> None:
    missing = tmp_path / "nowhere.db"
    path = tmp_path / "s.toml"
    path.write_text(SWEEP)
    board = runner.invoke(leaderboard, ["--db", f"sqlite:///{missing}"])
    assert board.exit_code == 1
    assert f"no results database at {missing}" in board.output
    assert len(board.output.strip().splitlines()) == 1
    plan = runner.invoke(sweep, [str(path), "--dry-run", "--db", f"sqlite:///{missing}"])
    assert plan.exit_code == 0, plan.output
    assert f"no results database at {missing}: every run is still to do" in plan.output
    assert "to run 1" in plan.output
    assert not missing.exists()


def test_reading_an_old_schema_asks_for_an_upgrade(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from sgid_bench.store import MIGRATIONS

    engine = create_engine(db_url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    engine.dispose()
    db = Path(db_url.removeprefix("sqlite:///"))
    before = _digest(db)
    with pytest.raises(UserError, match="older schema: upgrade it once"):
        Store(db_url, readonly=True)
    assert _digest(db) == before
    Store(db_url).close()  # a writing open migrates it
    assert Store(db_url, readonly=True).runs() == []


def test_provenance_does_not_take_the_git_index_lock(tmp_path: Path) -> None:
    from sgid_bench.provenance import revision_of

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        if args[0] == "add":
            (tmp_path / "f.txt").write_text("x")
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, env=env)
    # Stale stat data (2020): a plain `git status` refreshes and rewrites the index.
    os.utime(tmp_path / "f.txt", (1577836800, 1577836800))
    index = tmp_path / ".git" / "index"
    time.sleep(1.1)  # past the index's own timestamp, so git trusts and rewrites it
    before = index.stat().st_mtime_ns
    assert revision_of(tmp_path)
    assert index.stat().st_mtime_ns == before  # the index (and its lock) was not touched


def test_leaderboard_skips_a_row_with_invalid_json(
        runner: CliRunner, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    db = _store_with_runs(db_url)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET per_class = '{not json' WHERE id = 1")
    conn.close()
    with caplog.at_level(logging.WARNING, logger="sgid_bench.leaderboard"):
        result = runner.invoke(leaderboard, ["--db", db_url, "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "51.0" in result.output  # the other run is there
    assert "skipped run 1: its stored data is unreadable" in caplog.text


HINT = "pass a SQLAlchemy URL such as sqlite:///results.db or postgresql+psycopg://user@host/db"


@pytest.mark.parametrize(("url", "shown", "problem"), [
    (f"postgresql+nodriver://bench:{SECRET}@127.0.0.1/results",
     "'postgresql+nodriver://bench:***@127.0.0.1/results'", "postgresql.nodriver"),
    (f"postgresql+psycopg://bench:{SECRET}@@:/", "'postgresql+psycopg://bench:***@@:/'", ""),
])
def test_a_bad_url_names_the_url_the_problem_and_the_fix(url: str, shown: str,
                                                          problem: str) -> None:
    with pytest.raises(UserError) as err:
        Store(url)
    message = str(err.value)
    assert message.startswith(f"cannot use database URL {shown}")
    assert problem in message
    assert message.endswith(HINT)
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize(("url", "password"), [
    ("postgresql+nodriver://bench:plugin@127.0.0.1/results", "plugin"),  # unknown driver
    ("postgresql+psycopg://bench:refused@127.0.0.1:1/results", "refused"),  # no server
])
def test_a_password_that_is_a_plain_word_is_hidden_wherever_it_appears(
        url: str, password: str) -> None:
    with pytest.raises(UserError) as err:
        Store(url)
    assert "bench:***@127.0.0.1" in str(err.value)
    assert password not in str(err.value)


def test_reading_an_unreachable_postgresql_says_it_cannot_be_reached() -> None:
    with pytest.raises(UserError) as err:
        Store(f"postgresql+psycopg://bench:{SECRET}@127.0.0.1:1/results", readonly=True)
    message = str(err.value)
    assert message.startswith("cannot open database "
                              "postgresql+psycopg://bench:***@127.0.0.1:1/results: ")
    assert "127.0.0.1" in message.split(": ", 1)[1]  # the driver's reason: no server there
    assert SECRET not in message


def test_an_unopenable_database_names_the_file_and_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "no" / "such" / "dir" / "r.db"
    with pytest.raises(UserError) as err:
        Store(f"sqlite:///{db}")
    assert str(err.value) == (
        f"cannot open database {db}: unable to open database file; check that it is "
        "reachable and writable, or pass another location with --db or SGID_BENCH_DB")
    assert not db.parent.exists()


@pytest.mark.parametrize("readonly", [False, True])
def test_a_corrupted_file_is_reported_as_corrupted_and_left_alone(db_url: str,
                                                                 readonly: bool) -> None:
    db = Path(db_url.removeprefix("sqlite:///"))
    db.write_bytes(b"not a database " * 300)
    before = _digest(db)
    with pytest.raises(UserError) as err:
        Store(db_url, readonly=readonly)
    assert str(err.value) == (
        f"database {db} is corrupted or not a SQLite file (file is not a database); "
        "nothing was written to it: restore it from a backup or pass another --db")
    assert _digest(db) == before


@pytest.mark.parametrize("url", ["sqlite:///{}", "sqlite:///file:{}?uri=true"])
def test_a_read_only_open_of_a_missing_file_says_what_to_do_and_creates_nothing(
        tmp_path: Path, url: str) -> None:
    missing = tmp_path / "nowhere.db"
    with pytest.raises(UserError) as err:
        Store(url.format(missing), readonly=True)
    assert str(err.value) == (
        f"no results database at {missing}: run `sgid-bench run` or `sgid-bench sweep` "
        "first, or pass --db (or set SGID_BENCH_DB) to the store your runs wrote to")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("query", ["uri=true", "mode=rw&uri=true"])
def test_a_read_only_open_through_a_file_uri_cannot_write(db_url: str, query: str) -> None:
    db = _store_with_runs(db_url)
    store = Store(f"sqlite:///file:{db}?{query}", readonly=True)
    assert len(store.runs()) == 2
    with pytest.raises(OperationalError, match="readonly"), store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE runs SET top1 = 0")


def test_store_connections_enforce_foreign_keys(db_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    store = Store(db_url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TEMP TABLE child (parent INTEGER REFERENCES parent(id))")
        with pytest.raises(IntegrityError, match="FOREIGN KEY"):
            conn.exec_driver_sql("INSERT INTO child VALUES (42)")
    store.close()


def test_a_pooled_connection_closed_under_the_store_is_replaced(db_url: str) -> None:
    from sqlalchemy import event

    store = Store(db_url)
    run_id = store.claim("h", 0, **fields())
    # The database side drops every idle connection (a server restart, an idle timeout).
    event.listen(store.engine, "checkin", lambda dbapi_conn, _record: dbapi_conn.close())
    assert store.get("h", 0) is not None
    assert store.get("h", 0).id == run_id  # type: ignore[union-attr]
    store.close()
