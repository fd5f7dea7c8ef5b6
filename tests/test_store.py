"""Store round trip, claims, resume of interrupted runs, bad URLs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sgid_bench.errors import UserError
from sgid_bench.store import DONE, FAILED, RUNNING, Run, Store


def fields(**kw: Any) -> dict[str, Any]:
    base = {"method": "none", "backbone": "resnet50", "dataset": "shapes", "profile": "quick",
            "config": {"a": 1}, "models": {"backbone": "tiny/resnet50"}, "tiny_models": True,
            "versions": {"torch": "x"}, "git_revision": None}
    return {**base, **kw}


@pytest.fixture
def store(db_url: str) -> Store:
    return Store(db_url)


def test_round_trip(store: Store) -> None:
    run_id = store.claim("h1", 0, **fields())
    assert run_id is not None
    store.finish(run_id, top1=81.5, top5=99.0, loss=0.4, per_class={"circle": 90.0},
                 extra={"lr": 0.1})
    (row,) = store.runs()
    assert (row.status, row.top1, row.per_class, row.extra) == (
        DONE, 81.5, {"circle": 90.0}, {"lr": 0.1})
    assert row.config == {"a": 1}
    assert row.wall_time_s is not None
    assert row.wall_time_s >= 0
    assert Store(store.url).get("h1", 0).top1 == 81.5  # persisted, new connection


def test_claim_is_exclusive_until_failed(store: Store) -> None:
    first = store.claim("h", 0, **fields())
    assert store.claim("h", 0, **fields()) is None  # running here
    store.fail(first, "boom")  # type: ignore[arg-type]
    assert store.get("h", 0).error == "boom"
    assert store.claim("h", 0, **fields()) == first  # a failed run is re-claimed
    store.finish(first, top1=1.0)  # type: ignore[arg-type]
    assert store.claim("h", 0, **fields()) is None  # done stays done...
    assert store.claim("h", 0, force=True, **fields()) == first  # ...unless forced
    assert store.get("h", 0).status == RUNNING


def test_interrupted_run_is_marked_failed_on_next_start(store: Store) -> None:
    run_id = store.claim("h", 0, **fields())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    with store.session() as s:  # the row now belongs to a process that has ended
        s.get_one(Run, run_id).pid = int(dead.stdout)
    assert store.reap_interrupted() == 1
    row = store.get("h", 0)
    assert row.status == FAILED
    assert "interrupted" in row.error
    assert store.claim("h", 0, **fields()) == run_id


def test_unwritable_location_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot open database"):
        Store(f"sqlite:///{tmp_path}/missing/dir/results.db")


def test_malformed_url_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot use database URL"):
        Store("not a url")


def test_sqlite_uses_wal(store: Store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
