from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sgid_bench.context import Context


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sgid-bench home per test session, so tiny presets are built once."""
    return tmp_path_factory.mktemp("sgid-home")


@pytest.fixture(autouse=True)
def _isolated_env(shared_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every test gets its own database and working directory; models are shared.
    monkeypatch.setenv("SGID_BENCH_HOME", str(shared_home))
    monkeypatch.setenv("SGID_BENCH_DB", f"sqlite:///{tmp_path / 'results.db'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The default suite runs on the tiny random-weight models (fast, pipeline checks);
    # tests of the toy world name --profile quick (or Context(profile="quick")) themselves.
    monkeypatch.setenv("SGID_BENCH_PROFILE", "tiny")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models are far too small for intra-op threads: on a loaded CPU the extra threads
    # only spin (several times slower). Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def context(tmp_path: Path) -> Context:
    """A run context whose generation cache is private to the test."""
    return Context(cache_dir=tmp_path / "cache", gen_batch_size=4)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return os.environ["SGID_BENCH_DB"]
