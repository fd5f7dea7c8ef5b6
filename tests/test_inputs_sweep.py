"""Issue 12 items 8, 18, 21: infeasible Ray requests, binary sweep files and markup in
names, misspelled parameter prefixes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_sweep import TINY, write

from sgid_bench.errors import UserError
from sgid_bench.executors import infeasible
from sgid_bench.sweep import Resources, load_sweep
from sgid_bench.sweep_command import sweep


def test_binary_sweep_file_is_a_clear_error(tmp_path: Path, runner: CliRunner) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    with pytest.raises(UserError, match="not a text file"):
        load_sweep(path)
    result = runner.invoke(sweep, [str(path), "--dry-run"])
    assert result.exit_code == 1
    assert "not a text file" in result.output
    assert "Traceback" not in result.output


def test_rich_markup_in_a_sweep_name_is_printed_as_text(
        tmp_path: Path, runner: CliRunner, db_url: str) -> None:
    path = write(tmp_path / "s.toml", ["none"])
    text = path.read_text().replace("[sweep]\n", "[sweep]\nname = \"[bold red]x[/nope] [\"\n")
    path.write_text(text)
    result = runner.invoke(sweep, [str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "[bold red]x[/nope] [" in result.output


@pytest.mark.parametrize(("table", "key"), [("params", "trian.epochs"),
                                            ("grid", "cutmx.alpha")])
def test_a_misspelled_prefix_is_an_error(tmp_path: Path, table: str, key: str) -> None:
    value = "[1, 2]" if table == "grid" else "2"
    path = write(tmp_path / "s.toml", ["none", "cutmix"],
                 extra=TINY + f"[{table}]\n'{key}' = {value}\n" if table == "grid"
                 else f"[params]\n'{key}' = {value}\n")
    with pytest.raises(UserError, match=rf"'{key}' applies to no run") as err:
        load_sweep(path)
    assert "components: none, cutmix, clip_vit, shapes, train, backbone, dataset" in str(
        err.value)


def test_prefixes_of_some_runs_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", ["none", "cutmix"],
                 extra=TINY + "[grid]\n'cutmix.alpha' = [0.5, 1.0]\n")
    assert load_sweep(path).grid == {"cutmix.alpha": [0.5, 1.0]}


def test_infeasible_ray_request_is_detected_up_front() -> None:
    nodes = [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 1.0}]
    assert infeasible(Resources(num_cpus=1), nodes) is None
    assert infeasible(Resources(num_cpus=4, num_gpus=1), nodes) is None
    message = infeasible(Resources(num_cpus=1, num_gpus=2), nodes)
    assert message is not None
    assert "1 CPU(s) and 2 GPU(s)" in message
    assert "largest has 8 CPU(s) and 1 GPU(s)" in message
    assert "\n" not in message
    # A node with the GPU but too few CPUs for the same task does not count.
    assert infeasible(Resources(num_cpus=4, num_gpus=1), [{"CPU": 2.0, "GPU": 1.0},
                                                           {"CPU": 8.0}]) is not None
    assert infeasible(Resources(), []) is not None


def test_waiting_tasks_are_shown() -> None:
    from rich.console import Console

    from sgid_bench.config import RunSpec
    from sgid_bench.sweep import Job
    from sgid_bench.sweep_command import LiveView

    out = io.StringIO()
    with LiveView(Console(file=out, force_terminal=True, width=200), 5, 0) as view:
        view("slots", None, 2)
        for i in range(5):
            view("start", Job(RunSpec(), str(i)), None)
        assert view.states()["run"] == (2, 3)
        assert view.progress.tasks[0].fields["waiting"] == 3
    assert "3 waiting" in out.getvalue()


@pytest.mark.slow
def test_ray_sweep_asking_for_absent_gpus_fails_at_once(
        tmp_path: Path, runner: CliRunner, db_url: str) -> None:
    path = write(tmp_path / "s.toml", ["none"], extra=TINY + "[resources]\nnum_gpus = 4\n")
    result = runner.invoke(sweep, [str(path), "--executor", "ray", "--num-cpus", "1"])
    assert result.exit_code == 1
    assert "no node of the cluster has that much" in result.output
