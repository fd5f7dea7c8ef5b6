"""Claims that outlive their worker: a heartbeat and a lease reclaim a run left `running`
by a dead worker on another host (issue 12, item 2); a live run in another PID namespace
with our hostname is not judged dead by its PID, and a worker that lost its claim cannot
overwrite the new owner's result (item 3)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from test_store import fields

from sgid_bench.runs_command import runs
from sgid_bench.store import DONE, FAILED, RUNNING, ClaimLost, Run, Store, utcnow


@pytest.fixture
def store(db_url: str) -> Store:
    return Store(db_url)


def _as_other_worker(store: Store, run_id: int, *, host: str, pid: int, scope: str | None,
                     heartbeat_age_s: float) -> None:
    with store.session() as s:
        row = s.get_one(Run, run_id)
        row.host, row.pid, row.pid_scope = host, pid, scope
        row.heartbeat_at = utcnow() - timedelta(seconds=heartbeat_age_s)
        row.claim_token = "f" * 32


def _dead_pid() -> int:
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_dead_worker_on_another_host_is_reclaimed_after_the_lease(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    _as_other_worker(store, run_id, host="gone-host", pid=4242, scope="other-boot/pid:[1]",
                     heartbeat_age_s=store.lease_s - 30)
    assert store.claim("h", 0, **fields()) is None  # within the lease: still its run
    _as_other_worker(store, run_id, host="gone-host", pid=4242, scope="other-boot/pid:[1]",
                     heartbeat_age_s=store.lease_s + 30)
    with caplog.at_level(logging.WARNING, logger="sgid_bench.store"):
        assert store.claim("h", 0, **fields()) == run_id  # reclaimed, and said so
    assert f"reclaimed run {run_id} (none / resnet50 / shapes / seed 0)" in caplog.text
    assert "no heartbeat from process 4242 on gone-host" in caplog.text
    assert store.get("h", 0).host != "gone-host"


def test_runs_reap_says_what_it_reclaims(store: Store, db_url: str) -> None:
    stale = store.claim("stale", 0, **fields())
    fresh = store.claim("fresh", 0, **fields())
    assert stale is not None
    assert fresh is not None
    _as_other_worker(store, stale, host="gone-host", pid=7, scope=None, heartbeat_age_s=900)
    _as_other_worker(store, fresh, host="busy-host", pid=8, scope=None, heartbeat_age_s=5)
    result = CliRunner().invoke(runs, ["reap", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert f"reclaimed run {stale} (none / resnet50 / shapes / seed 0)" in result.output
    assert "1 run(s) reclaimed" in result.output
    assert (store.get("stale", 0).status, store.get("fresh", 0).status) == (FAILED, RUNNING)
    assert "no heartbeat" in store.get("stale", 0).error
    again = CliRunner().invoke(runs, ["reap", "--db", db_url, "--lease", "1"])
    assert f"reclaimed run {fresh}" in again.output  # a shorter lease reclaims it too


def test_live_run_in_another_pid_namespace_is_not_judged_by_pid(store: Store) -> None:
    import socket

    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    # Same hostname (containers), a PID that does not exist here, a fresh heartbeat.
    _as_other_worker(store, run_id, host=socket.gethostname(), pid=_dead_pid(),
                     scope="other-boot/pid:[4026532000]", heartbeat_age_s=1)
    assert store.reap_interrupted() == 0
    assert store.claim("h", 0, **fields()) is None
    assert store.get("h", 0).status == RUNNING


def test_dead_process_in_our_pid_namespace_is_reclaimed_at_once(store: Store) -> None:
    from sgid_bench.store import pid_scope

    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    _as_other_worker(store, run_id, host=__import__("socket").gethostname(), pid=_dead_pid(),
                     scope=pid_scope(), heartbeat_age_s=1)
    assert store.reap_interrupted() == 1


def test_a_worker_that_lost_its_claim_cannot_overwrite_the_new_owner(db_url: str) -> None:
    slow, other = Store(db_url), Store(db_url, lease_s=0.01)
    run_id = slow.claim("h", 0, **fields())
    time.sleep(0.05)  # the slow worker's heartbeat is now older than other's lease
    assert other.claim("h", 0, **fields()) == run_id  # taken over
    other.finish(run_id, top1=42.0)
    with pytest.raises(ClaimLost, match="taken over by another worker"):
        slow.finish(run_id, top1=1.0)
    slow.fail(run_id, "late failure")  # ignored: not its run any more
    row = other.get("h", 0)
    assert (row.status, row.top1, row.error) == (DONE, 42.0, None)


def test_heartbeat_keeps_a_long_run_claimed(store: Store) -> None:
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    first = store.get("h", 0).heartbeat_at
    with store.keep_alive(run_id, interval_s=0.05):
        time.sleep(0.4)
    assert store.get("h", 0).heartbeat_at > first


def test_claims_carry_a_token_and_a_pid_scope(store: Store) -> None:
    first = store.claim("h", 0, **fields())
    store.fail(first, "boom")  # type: ignore[arg-type]
    token = store.get("h", 0).claim_token
    assert store.claim("h", 0, **fields()) == first
    row: Any = store.get("h", 0)
    assert row.claim_token
    assert row.claim_token != token  # each claim its own token
    assert row.heartbeat_at is not None
