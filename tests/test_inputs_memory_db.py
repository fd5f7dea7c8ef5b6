"""An in-memory database (``--db sqlite://``) is allowed but said to discard results."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from test_store import fields

from sgid_bench.cli import main
from sgid_bench.store import NoStore, Store


def test_run_into_an_in_memory_database_warns_that_results_are_discarded() -> None:
    result = CliRunner().invoke(main, ["run", "--method", "none", "--db", "sqlite://",
                                       "--param", "train.epochs=1", "--param",
                                       "shapes.train_per_class=2", "--param",
                                       "shapes.test_per_class=1"])
    assert result.exit_code == 0, result.output
    assert "in-memory database: every result is discarded" in result.output


def test_a_file_database_gives_no_such_warning(tmp_path: Path) -> None:
    assert Store(f"sqlite:///{tmp_path / 'r.db'}").discard_warning() is None
    assert Store("sqlite://").discard_warning() is not None


@pytest.mark.parametrize("url", [
    "sqlite://",
    "sqlite:///:memory:",
    pytest.param("sqlite:///file:results?mode=memory&cache=shared&uri=true",
                 marks=pytest.mark.filterwarnings("ignore:Selection of the SingletonThreadPool")),
])
def test_in_memory_urls_are_recognised_and_write_no_file(url: str, tmp_path: Path) -> None:
    store = Store(url)
    run_id = store.claim("h", 0, **fields())
    assert run_id is not None
    assert store.in_memory
    assert store.discard_warning() is not None
    store.close()
    assert list(tmp_path.iterdir()) == []  # the working directory


def test_reading_an_in_memory_database_finds_no_results() -> None:
    with pytest.raises(NoStore, match="no sgid-bench results in sqlite://"):
        Store("sqlite://", readonly=True)


@pytest.mark.parametrize("query", ["?uri=true", "%3Fcache=private?uri=true"])
def test_a_file_uri_is_recognised_as_that_file(tmp_path: Path, query: str) -> None:
    db = tmp_path / "r.db"
    store = Store(f"sqlite:///file:{db}{query}")
    assert not store.in_memory
    assert store.discard_warning() is None
    assert store.where == str(db)
    store.claim("h", 0, **fields())
    store.close()
    assert Store(f"sqlite:///{db}", readonly=True).get("h", 0) is not None
