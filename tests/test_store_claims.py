"""Claims that outlive their worker: a heartbeat and a lease reclaim a run left `running`
by a dead worker on another host (issue 12, item 2); a live run in another PID namespace
with our hostname is not judged dead by its PID, and a worker that lost its claim cannot
overwrite the new owner's result (item 3)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
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


def _set_heartbeat(store: Store, run_id: int, age_s: float) -> None:
    """Make the claim's last heartbeat ``age_s`` old, leaving everything else as it is."""
    with store.session() as s:
        s.get_one(Run, run_id).heartbeat_at = utcnow() - timedelta(seconds=age_s)


def _heartbeat_at(store: Store, run_id: int) -> Any:
    with store.session() as s:
        return s.get_one(Run, run_id).heartbeat_at


def test_heartbeat_renews_only_the_live_claim_it_names(store: Store, db_url: str) -> None:
    first = store.claim("h", 0, **fields())
    second = store.claim("h", 1, **fields())
    assert first is not None
    assert second is not None
    for run_id in (first, second):
        _set_heartbeat(store, run_id, 100)
    before = {run_id: _heartbeat_at(store, run_id) for run_id in (first, second)}
    assert store.heartbeat(first) is True
    assert _heartbeat_at(store, first) > before[first]
    assert _heartbeat_at(store, second) == before[second]
    # A Store that did not make the claim (a restarted worker) renews it by id alone.
    assert Store(db_url).heartbeat(second) is True
    assert _heartbeat_at(store, second) > before[second]
    assert _heartbeat_at(store, first) < _heartbeat_at(store, second)
    store.finish(first, top1=1.0)
    assert store.heartbeat(first) is False  # finished: nothing to renew
    assert Store(db_url).heartbeat(first) is False


def test_heartbeat_says_when_the_claim_was_taken_over(store: Store) -> None:
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    assert store.heartbeat(run_id) is True
    _as_other_worker(store, run_id, host="other", pid=1, scope=None, heartbeat_age_s=1)
    before = _heartbeat_at(store, run_id)
    assert store.heartbeat(run_id) is False
    assert _heartbeat_at(store, run_id) == before  # the new owner's heartbeat is untouched


def test_finish_records_when_the_run_ended(store: Store) -> None:
    run_id = store.claim("h", 0, **fields())
    before = utcnow()
    store.finish(run_id, top1=1.0)  # type: ignore[arg-type]
    after = utcnow()
    row = store.get("h", 0)
    finished = row.finished_at.replace(tzinfo=before.tzinfo)
    assert before <= finished <= after
    assert row.wall_time_s == pytest.approx(
        (finished - row.started_at.replace(tzinfo=before.tzinfo)).total_seconds())


def test_finish_keeps_nan_out_of_json_metrics(store: Store) -> None:
    run_id = store.claim("h", 0, **fields())
    store.finish(run_id, top1=1.0, per_class={"circle": float("nan"), "square": 2.0},  # type: ignore[arg-type]
                 extra={"history": [1.0, float("inf")]})
    row = store.get("h", 0)
    assert (row.per_class, row.extra) == ({"circle": None, "square": 2.0},
                                          {"history": [1.0, None]})


def test_a_worker_cannot_finish_a_run_taken_over_while_the_new_owner_runs(
        store: Store, db_url: str) -> None:
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    _set_heartbeat(store, run_id, store.lease_s + 30)
    other = Store(db_url)
    assert other.claim("h", 0, **fields()) == run_id  # taken over, still running there
    with pytest.raises(ClaimLost) as err:
        store.finish(run_id, top1=1.0)
    assert str(err.value) == (
        f"run {run_id} was taken over by another worker (no heartbeat from here for over the "
        f"lease of {store.lease_s:g} s), so this result was not recorded; if workers are busy "
        "for longer, raise SGID_BENCH_LEASE")
    row = store.get("h", 0)
    assert (row.status, row.top1) == (RUNNING, None)
    assert store.heartbeat(run_id) is False
    assert other.heartbeat(run_id) is True
    other.finish(run_id, top1=2.0)
    assert store.get("h", 0).top1 == 2.0


def test_a_reaped_run_is_not_finished_late_by_its_worker(store: Store, db_url: str) -> None:
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    _set_heartbeat(store, run_id, store.lease_s + 30)
    assert len(Store(db_url).reap(quiet=True)) == 1  # e.g. `sgid-bench runs reap`
    with pytest.raises(ClaimLost):
        store.finish(run_id, top1=1.0)
    with pytest.raises(ClaimLost):  # finishing twice does not overwrite the first result
        store.finish(run_id, top1=2.0)
    row = store.get("h", 0)
    assert (row.status, row.top1) == (FAILED, None)


def test_finishing_a_run_whose_row_is_gone_says_the_claim_was_lost(
        store: Store, db_url: str) -> None:
    run_id = store.claim("h", 0, **fields())
    with store.engine.begin() as conn:  # e.g. the database was restored from a backup
        conn.exec_driver_sql("DELETE FROM runs")
    for worker in (store, Store(db_url)):  # with and without the claim's token
        with pytest.raises(ClaimLost):
            worker.finish(run_id, top1=1.0)  # type: ignore[arg-type]


def test_a_failure_after_a_takeover_is_only_logged(
        store: Store, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    _set_heartbeat(store, run_id, store.lease_s + 30)
    assert Store(db_url).claim("h", 0, **fields()) == run_id
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sgid_bench.store"):
        store.fail(run_id, "late failure")
    assert [r.getMessage() for r in caplog.records] == [
        f"run {run_id} was taken over by another worker; its failure here is not recorded"]
    assert (store.get("h", 0).status, store.get("h", 0).error) == (RUNNING, None)


def test_reap_logs_the_lines_it_returns_and_dates_the_failure(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    run_id = store.claim("h", 0, **fields(dataset="imagefolder:/data/100%"))
    assert run_id is not None
    _as_other_worker(store, run_id, host="gone-host", pid=7, scope=None,
                     heartbeat_age_s=store.lease_s + 30)
    before = utcnow()
    with caplog.at_level(logging.WARNING, logger="sgid_bench.store"):
        lines = store.reap()
    after = utcnow()
    assert len(lines) == 1
    assert lines[0].startswith(f"reclaimed run {run_id} (none / resnet50 / "
                               "imagefolder:/data/100% / seed 0): interrupted: no heartbeat")
    assert [r.getMessage() for r in caplog.records] == lines
    row = store.get("h", 0)
    assert row.status == FAILED
    assert before <= row.finished_at.replace(tzinfo=before.tzinfo) <= after
    caplog.clear()
    other = store.claim("h", 1, **fields())
    assert other is not None
    _set_heartbeat(store, other, store.lease_s + 30)
    with caplog.at_level(logging.WARNING, logger="sgid_bench.store"):
        assert len(store.reap(quiet=True)) == 1
    assert caplog.records == []


def _reap_while(store: Store, monkeypatch: pytest.MonkeyPatch,
                meanwhile: Callable[[int], None]) -> list[Any]:
    """Reap a stale claim while ``meanwhile(run_id)`` happens between reap's reading of
    the row and its judging it stale."""
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    _set_heartbeat(store, run_id, store.lease_s + 30)
    judge = store._stale

    def judge_after(*args: Any) -> str | None:
        meanwhile(run_id)
        return judge(*args)

    monkeypatch.setattr(store, "_stale", judge_after)
    return store.reap()


def test_a_finish_between_reading_and_reaping_wins(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker was only slow: it finishes while reap decides.
    assert _reap_while(store, monkeypatch, lambda run_id: store.finish(run_id, top1=5.0)) == []
    row = store.get("h", 0)
    assert (row.status, row.top1, row.error) == (DONE, 5.0, None)


def test_a_new_claim_between_reading_and_reaping_wins(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another worker reaps and re-claims it first: a new token, a fresh heartbeat.
    def claimed(run_id: int) -> None:
        _as_other_worker(store, run_id, host="new-host", pid=9, scope=None, heartbeat_age_s=0)

    assert _reap_while(store, monkeypatch, claimed) == []
    row = store.get("h", 0)
    assert (row.status, row.host, row.error) == (RUNNING, "new-host", None)


def test_a_heartbeat_exactly_one_lease_old_is_not_yet_stale(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import sgid_bench.store as store_module

    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    now = utcnow()
    monkeypatch.setattr(store_module, "utcnow", lambda: now)
    _as_other_worker(store, run_id, host="elsewhere", pid=1, scope=None, heartbeat_age_s=0)
    with store.session() as s:
        s.get_one(Run, run_id).heartbeat_at = now - timedelta(seconds=store.lease_s)
    assert store.reap() == []
    with store.session() as s:
        s.get_one(Run, run_id).heartbeat_at = now - timedelta(seconds=store.lease_s,
                                                               microseconds=1)
    assert len(store.reap()) == 1
