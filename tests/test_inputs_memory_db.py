"""An in-memory database (``--db sqlite://``) is allowed but said to discard results."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sgid_bench.cli import main
from sgid_bench.store import Store


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
