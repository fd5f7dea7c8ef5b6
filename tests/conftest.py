from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner


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
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return os.environ["SGID_BENCH_DB"]
