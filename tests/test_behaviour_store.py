"""Which claims the store reaps (issue 13), with real processes: a zombie (exited, not
yet waited for) is dead; a live run of another host is never reaped by this host, whatever
its PID means here; a dead claim whose PID now belongs to another process is not kept
alive by it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from test_store import fields

from sgid_bench.store import (
    FAILED,
    RUNNING,
    Run,
    Store,
    pid_scope,
    process_alive,
    process_start_time,
    utcnow,
)


@pytest.fixture
def store(db_url: str) -> Store:
    return Store(db_url)


@pytest.fixture
def zombie() -> Iterator[int]:
    """The PID of a child that has exited and is not waited for yet (state Z)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Wait for the exit without reaping it: the PID stays a zombie until child.wait().
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    yield child.pid
    child.wait()


@pytest.fixture
def live() -> Iterator[int]:
    """The PID of a running child (blocked reading its stdin)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    yield child.pid
    child.communicate(b"")


def scope_of(pid: int) -> str:
    """The pid_scope that process ``pid`` of this host records with its claims."""
    here = pid_scope()
    assert here is not None
    return f"{here.partition('#')[0]}#{process_start_time(pid)}"


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def as_worker(store: Store, run_id: int, *, host: str, pid: int, scope: str | None,
              heartbeat_age_s: float = 1.0) -> None:
    with store.session() as s:
        row = s.get_one(Run, run_id)
        row.host, row.pid, row.pid_scope = host, pid, scope
        row.heartbeat_at = utcnow() - timedelta(seconds=heartbeat_age_s)
        row.claim_token = "e" * 32


def test_process_alive_tells_live_dead_and_zombie_processes(live: int, zombie: int) -> None:
    assert process_alive(os.getpid())
    assert process_alive(live)
    assert not process_alive(dead_pid())
    with open(f"/proc/{zombie}/stat") as fh:
        assert fh.read().rpartition(")")[2].split()[0] == "Z"  # really a zombie
    assert not process_alive(zombie)


def test_a_zombie_claim_is_reaped_at_once(store: Store, zombie: int) -> None:
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    as_worker(store, run_id, host=socket.gethostname(), pid=zombie, scope=pid_scope())
    assert store.reap_interrupted() == 1
    row = store.get("h", 0)
    assert row.status == FAILED
    assert f"process {zombie} on {socket.gethostname()} ended" in row.error


def test_a_live_claim_of_ours_is_kept(store: Store, live: int) -> None:
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    as_worker(store, run_id, host=socket.gethostname(), pid=live, scope=scope_of(live))
    assert store.reap_interrupted() == 0
    assert store.get("h", 0).status == RUNNING


def test_another_hosts_live_run_is_never_judged_by_its_pid(store: Store) -> None:
    # Another host, a PID that does not exist here, even the same PID scope string (two
    # machines booted from one image): only its heartbeat can say it is gone.
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    as_worker(store, run_id, host="elsewhere.example", pid=dead_pid(), scope=pid_scope())
    assert store.reap_interrupted() == 0
    assert store.claim("h", 0, **fields()) is None
    assert store.get("h", 0).status == RUNNING


def test_a_claim_without_a_pid_scope_is_judged_by_its_heartbeat(store: Store) -> None:
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    as_worker(store, run_id, host=socket.gethostname(), pid=dead_pid(), scope=None)
    if pid_scope() is not None:  # Linux: None is not our scope
        assert store.reap_interrupted() == 0
    as_worker(store, run_id, host=socket.gethostname(), pid=dead_pid(), scope=None,
              heartbeat_age_s=store.lease_s + 5)
    assert store.reap_interrupted() == 1


def test_the_lease_boundary(db_url: str) -> None:
    store = Store(db_url, lease_s=600)
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    as_worker(store, run_id, host="elsewhere.example", pid=1, scope=None,
              heartbeat_age_s=590)
    assert store.reap_interrupted() == 0
    as_worker(store, run_id, host="elsewhere.example", pid=1, scope=None,
              heartbeat_age_s=610)
    assert store.reap_interrupted() == 1
    assert "no heartbeat from process 1 on elsewhere.example" in store.get("h", 0).error


def test_a_reused_pid_does_not_keep_a_stale_claim_alive(store: Store, live: int) -> None:
    # Our host and scope, the PID now held by another (live) process, no heartbeat for
    # longer than the lease: the lease reclaims it whatever the PID says.
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    as_worker(store, run_id, host=socket.gethostname(), pid=live, scope=pid_scope(),
              heartbeat_age_s=store.lease_s + 5)
    assert store.reap_interrupted() == 1


CLAIM_AND_EXIT = """
import sys
from sgid_bench.store import Store
sys.path.insert(0, sys.argv[2])
from test_store import fields
print(Store(sys.argv[1]).claim("h", 0, **fields()))
"""


def test_a_dead_claim_whose_pid_was_reused_is_reaped_at_once(db_url: str) -> None:
    tests = os.path.dirname(__file__)
    out = subprocess.run([sys.executable, "-c", CLAIM_AND_EXIT, db_url, tests],
                         capture_output=True, text=True, check=True)
    run_id = int(out.stdout.strip().splitlines()[-1])
    store = Store(db_url)
    # As with a real reuse, the process now holding the PID started after the claimer
    # ended (a process started in the same clock tick would be indistinguishable).
    later = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        with store.session() as s:  # the claimer is gone; its PID now names `later`
            row = s.get_one(Run, run_id)
            assert row.status == RUNNING
            row.pid = later.pid
        assert process_alive(later.pid)
        assert store.reap_interrupted() == 1
    finally:
        later.communicate(b"")


def test_asking_whether_a_process_is_alive_does_not_signal_it() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    assert process_alive(child.pid)
    assert process_alive(child.pid, process_start_time(child.pid))
    child.communicate(b"")
    assert child.returncode == 0  # ended by its input, not by a signal


def test_a_process_we_may_not_signal_counts_as_alive(
        live: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")  # another user's process

    monkeypatch.setattr(os, "kill", forbidden)
    assert process_alive(live)


def test_a_process_named_like_a_stat_line_is_read_correctly(tmp_path: Path) -> None:
    # The command name is the executable's file name: anyone can choose it.
    exe = tmp_path / "w) Z 1 2"
    exe.symlink_to(sys.executable)
    child = subprocess.Popen([str(exe), "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        with open(f"/proc/{child.pid}/stat") as fh:
            assert "(w) Z 1 2)" in fh.read()
        assert process_alive(child.pid)
        started = process_start_time(child.pid)
        assert process_alive(child.pid, started)
        assert started.isdigit()
        assert scope_of(child.pid).endswith(f"#{started}")
    finally:
        child.communicate(b"")


def test_the_start_time_of_a_process_that_is_gone_is_an_os_error() -> None:
    pid = dead_pid()
    with pytest.raises(OSError, match=f"^no /proc entry for process {pid}$"):
        process_start_time(pid)


def test_a_claim_without_a_token_is_reaped_like_any_other(store: Store) -> None:
    # Rows claimed before claims carried tokens (schema 0001) have none.
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    as_worker(store, run_id, host="elsewhere.example", pid=1, scope=None,
              heartbeat_age_s=store.lease_s + 5)
    with store.session() as s:
        s.get_one(Run, run_id).claim_token = None
    assert len(store.reap(quiet=True)) == 1
    assert store.get("h", 0).status == FAILED
