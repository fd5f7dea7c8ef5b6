"""Fault tolerance of sweeps: a sweep process killed mid-run resumes without redoing
finished work; two sweeps on one store at once never run the same work twice; a corrupted
cache file is detected and regenerated.

The sweeps under test run in child processes (and Ray workers). A ``gate`` method (a
transform stage that announces it is mid-run and waits on a FIFO) lets the test act at a
known moment without sleeping: kill the process there, or start a second sweep and then
let both go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

import sgid_bench
from sgid_bench.plugins import Entry, registry
from sgid_bench.store import DONE, RUNNING, Store
from sgid_bench.sweep_command import sweep

GATE_ENV = "SGID_BENCH_TEST_GATE"
TESTS = Path(__file__).resolve().parent
SWEEP = """
[sweep]
methods = {methods!r}
backbones = ["clip_vit"]
datasets = ["shapes"]
seeds = {seeds}

[params]
train.epochs = 1
shapes.train_per_class = 10
shapes.test_per_class = 2
{extra}
"""
CHILD = """
import sys
sys.path.insert(0, {tests!r})
from test_faults import register_gate
register_gate()
if {ray!r}:
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={{"worker_process_setup_hook": register_gate,
                          "env_vars": {{"PYTHONPATH": {tests!r}}}}})
from sgid_bench.sweep_command import sweep
sweep({args!r})
"""


class Gate(sgid_bench.Augmenter):
    """Identity transform. In a process where ``SGID_BENCH_TEST_GATE`` names a directory,
    its first call writes the process id to the ``ready`` FIFO there and waits until the
    test writes to ``go-<pid>``: the process is then paused mid-run, at a known moment."""

    name = "gate"
    description = "Test helper: pauses a run mid-way until the test lets it go."
    waited: ClassVar[bool] = False

    def transform(self, image: Any, generator: Any) -> Any:
        gate_dir = os.environ.get(GATE_ENV)
        if gate_dir and not Gate.waited:
            Gate.waited = True
            go = Path(gate_dir) / f"go-{os.getpid()}"
            os.mkfifo(go)
            with open(Path(gate_dir) / "ready", "w") as ready:
                ready.write(f"{os.getpid()}\n")
            with open(go) as wait:  # blocks until the test opens it
                wait.read()
        return image


def register_gate(*_: Any) -> None:
    registry().entries["augmenter"]["gate"] = Entry(Gate, "tests")


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> type[Gate]:
    monkeypatch.setitem(registry().entries["augmenter"], "gate", Entry(Gate, "tests"))
    return Gate


class Gates:
    """The test's side of the gate: which processes are paused, and letting them go."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        os.mkfifo(directory / "ready")
        # Read-write, so opening never blocks and a writer never waits for us.
        self.fd = os.open(directory / "ready", os.O_RDWR | os.O_NONBLOCK)
        self.buffer = ""

    def wait(self, *children: subprocess.Popen[str], timeout: float = 600) -> int:
        """The pid of the next process paused at the gate; fails if the children end
        first."""
        deadline = time.monotonic() + timeout
        while "\n" not in self.buffer:
            if all(c.poll() is not None for c in children) or time.monotonic() > deadline:
                outputs = [c.communicate()[0] for c in children]
                pytest.fail(f"no process reached the gate; output:\n{outputs}")
            if select.select([self.fd], [], [], 1.0)[0]:
                self.buffer += os.read(self.fd, 4096).decode()
        line, self.buffer = self.buffer.split("\n", 1)
        return int(line)

    def release(self, pid: int) -> None:
        with open(self.dir / f"go-{pid}", "w") as go:
            go.write("go")

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def gates(tmp_path: Path) -> Iterator[Gates]:
    directory = tmp_path / "gates"
    directory.mkdir()
    g = Gates(directory)
    yield g
    g.close()


def start_sweep(path: Path, gates: Gates, *args: str, ray: bool = False
                ) -> subprocess.Popen[str]:
    """A child process running ``sgid-bench sweep path args`` with the gate armed."""
    code = CHILD.format(tests=str(TESTS), args=[str(path), *args], ray=ray)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, GATE_ENV: str(gates.dir)})


def test_killed_sweep_resumes_without_redoing_finished_work(
        tmp_path: Path, runner: CliRunner, db_url: str, gate: type[Gate], gates: Gates
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.format(methods=["none", "gate"], seeds=1, extra=""))
    child = start_sweep(path, gates)
    assert gates.wait(child) == child.pid  # "none" is done, "gate" is mid-run
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()  # reaps it and closes the pipes

    store = Store(db_url)
    (finished,) = store.runs(status=DONE)
    (killed,) = store.runs(status=RUNNING)
    assert (finished.method, killed.method, killed.pid) == ("none", "gate", child.pid)

    plain = runner.invoke(sweep, [str(path)])
    assert plain.exit_code == 0, plain.output
    assert "already done 1, failed earlier 1, running elsewhere 0, to run 0" in plain.output
    assert "interrupted" in store.get(killed.config_hash, killed.seed).error

    resumed = runner.invoke(sweep, [str(path), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "already done 1, failed earlier 0, running elsewhere 0, to run 1" in resumed.output
    assert "1 done, 0 failed" in resumed.output
    rows = store.runs(status=None)
    assert [(r.method, r.status) for r in rows] == [("none", DONE), ("gate", DONE)]
    again = store.get(finished.config_hash, finished.seed)
    assert (again.id, again.finished_at, again.top1) == (
        finished.id, finished.finished_at, finished.top1)  # not redone
    store.close()


@pytest.mark.slow
def test_two_sweeps_at_once_never_duplicate_work(
        tmp_path: Path, db_url: str, gates: Gates) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.format(methods=["gate"], seeds=4, extra=""))
    first = start_sweep(path, gates)
    assert gates.wait(first) == first.pid  # first is mid-run on one seed...
    second = start_sweep(path, gates)
    assert gates.wait(second) == second.pid  # ...and second is mid-run on another
    outputs = []
    for proc in (first, second):
        gates.release(proc.pid)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        outputs.append(out)
    assert "running elsewhere 1, to run 3" in outputs[1]  # second planned around first

    store = Store(db_url)
    rows = store.runs(status=None)
    assert sorted(r.seed for r in rows) == [0, 1, 2, 3]  # one row per run
    assert {r.status for r in rows} == {DONE}
    assert {r.pid for r in rows} == {first.pid, second.pid}  # both did work
    done = [int(out.split("finished: ")[1].split(" done")[0]) for out in outputs]
    assert sum(done) == 4, outputs  # and no run was executed twice
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("retries", [1, 0])
def test_ray_worker_killed_mid_run(tmp_path: Path, runner: CliRunner, db_url: str,
                                   gate: type[Gate], gates: Gates, retries: int) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.format(methods=["gate"], seeds=1,
                                 extra=f"[resources]\nmax_retries = {retries}\n"))
    child = start_sweep(path, gates, "--executor", "ray", ray=True)
    worker = gates.wait(child)
    assert worker != child.pid  # a Ray worker, not the driver, is mid-run
    os.kill(worker, signal.SIGKILL)
    store = Store(db_url)
    if retries:
        retried = gates.wait(child)  # Ray ran the task again in a new worker...
        assert retried != worker
        gates.release(retried)
        out = child.communicate(timeout=600)[0]
        assert child.returncode == 0, out
        assert "1 done, 0 failed" in out  # ...which re-claimed the reaped run
        assert [(r.status, r.pid) for r in store.runs(status=None)] == [(DONE, retried)]
    else:
        out = child.communicate(timeout=600)[0]
        assert child.returncode == 1, out
        assert "0 done, 1 failed" in out
        (row,) = store.runs(status=None)
        assert row.status == "failed", out
        assert f"process {worker}" in row.error  # reaped by the driver
        resumed = runner.invoke(sweep, [str(path), "--resume"])
        assert "1 done, 0 failed" in resumed.output, resumed.output
    store.close()


class Mirror(sgid_bench.Augmenter):
    """A cheap expand stage: the mirror image of each input (counts what it generates)."""

    name = "mirror"
    group = "generative"
    generated: ClassVar[int] = 0

    def expand(self, images: list[Any], labels: list[int], class_names: list[str],
               generator: Any) -> list[Any]:
        from PIL import ImageOps

        Mirror.generated += len(images)
        return [ImageOps.mirror(im) for im in images]


def test_corrupted_cache_file_is_detected_and_regenerated(
        tmp_path: Path, runner: CliRunner, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry().entries["augmenter"], "mirror", Entry(Mirror, "tests"))
    monkeypatch.setattr(Mirror, "generated", 0)
    cache = tmp_path / "cache"
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.format(methods=["mirror"], seeds=1, extra=""))
    args = [str(path), "--cache-dir", str(cache), "--gen-batch-size", "4"]
    assert runner.invoke(sweep, args).exit_code == 0
    total = Mirror.generated
    pngs = sorted(cache.glob("*/*.png"))
    assert len(pngs) == total > 4
    victim = pngs[len(pngs) // 2]
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])  # a truncated write

    result = runner.invoke(sweep, [*args, "--force"])
    assert result.exit_code == 0, result.output
    # Only the corrupted image's batch was generated again, and the file is whole.
    assert 0 < Mirror.generated - total <= 4
    assert victim.read_bytes() == good
    meta = json.loads(victim.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(good).hexdigest()
    store = Store(db_url)
    assert [r.status for r in store.runs(status=None)] == [DONE]
    store.close()


class CtrlC(sgid_bench.Augmenter):
    """Presses Ctrl-C in the middle of its first run."""

    name = "ctrl_c"
    description = "Test helper: interrupts the first run."
    pressed: ClassVar[bool] = False

    def transform(self, image: Any, generator: Any) -> Any:
        if not CtrlC.pressed:
            CtrlC.pressed = True
            raise KeyboardInterrupt
        return image


def test_ctrl_c_stops_the_sweep_and_resume_finishes_it(
        tmp_path: Path, runner: CliRunner, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry().entries["augmenter"], "ctrl_c", Entry(CtrlC, "tests"))
    monkeypatch.setattr(CtrlC, "pressed", False)
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.format(methods=["none", "ctrl_c"], seeds=2, extra=""))
    stopped = runner.invoke(sweep, [str(path)])
    assert stopped.exit_code == 1
    assert f"interrupted; finished runs are stored: continue with sgid-bench sweep {path} " \
           "--resume" in stopped.output
    store = Store(db_url)
    assert [(r.method, r.status) for r in store.runs(status=None)] == [
        ("none", DONE), ("none", DONE), ("ctrl_c", "failed")]  # the last one never started
    resumed = runner.invoke(sweep, [str(path), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "already done 2, failed earlier 0, running elsewhere 0, to run 2" in resumed.output
    assert [r.status for r in store.runs(status=None)] == [DONE] * 4
    store.close()


LOCKER = """
import sys
from sgid_bench.context import Context
from sgid_bench.executors import generation_lock
with generation_lock(Context(cache_dir={cache!r}), "k"):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_generation_lock_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    import fcntl

    holder = subprocess.Popen([sys.executable, "-c", LOCKER.format(cache=str(tmp_path))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    with open(tmp_path / ".locks" / "k.lock", "a") as handle:
        with pytest.raises(BlockingIOError):  # a second generator of "k" would wait
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate()
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a dead holder frees it
