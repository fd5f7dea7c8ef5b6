"""Settings chosen on validation: a sweep's [select] grid and the leaderboard's
--select-by val, on stores where validation and test disagree."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_leaderboard import add_run, invoke

from sgid_bench.errors import UserError
from sgid_bench.leaderboard.grid import cell_text, grid
from sgid_bench.leaderboard.table import Table, build
from sgid_bench.store import Store
from sgid_bench.sweep import expand, find_sweep_file, load_sweep

#: sgid.strength -> dataset -> (test top-1 per seed, validation top-1 per seed). On shapes
#: 0.3 wins on validation and loses on test; on cifar10 0.7 wins on validation, 0.3 on test.
SGID = {
    0.3: {"shapes": ([60.0, 61.0, 60.5], [80.0, 81.0, 80.5]),
          "cifar10": ([90.0, 91.0, 90.5], [70.0, 71.0, 70.5])},
    0.5: {"shapes": ([65.0, 66.0, 65.5], [75.0, 76.0, 75.5]),
          "cifar10": ([85.0, 86.0, 85.5], [74.0, 75.0, 74.5])},
    0.7: {"shapes": ([70.0, 71.0, 70.5], [70.0, 71.0, 70.5]),
          "cifar10": ([80.0, 81.0, 80.5], [78.0, 79.0, 78.5])},
}
CHOSEN = {"shapes": (0.3, 60.5), "cifar10": (0.7, 80.5)}  # by validation: (strength, test)


@pytest.fixture
def store(db_url: str) -> Store:
    s = Store(db_url)
    for dataset in ("shapes", "cifar10"):
        for seed in range(3):
            add_run(s, "none", dataset, seed, 50.0 + seed, val=50.0 + seed)
    for strength, per_dataset in SGID.items():
        for dataset, (test, val) in per_dataset.items():
            for seed in range(3):
                add_run(s, "sgid", dataset, seed, test[seed], params=(f"strength={strength}",),
                        val=val[seed])
    return s


def only_table(store: Store, **filters: object) -> Table:
    lb = build(store, **filters)  # type: ignore[arg-type]
    assert len(lb.tables) == 1
    return lb.tables[0]


def test_one_row_per_method_with_the_setting_chosen_on_validation(store: Store) -> None:
    table = only_table(store)
    sgid = [r for r in table.measured if r.method == "sgid"]
    assert len(sgid) == 1
    for dataset, (strength, test_mean) in CHOSEN.items():
        cell = sgid[0].cells[dataset]
        assert cell.selected == f"sgid.strength={strength}"
        assert cell.mean == pytest.approx(test_mean)  # test accuracy of the val choice
        assert f"[sgid.strength={strength}]" in cell_text(cell, 0.05).text
        assert [c.label for c in cell.candidates] == [
            "sgid.strength=0.3", "sgid.strength=0.5", "sgid.strength=0.7"]
    assert "sgid.strength chosen on val" in sgid[0].config_label
    assert "validation accuracy" in grid(table).caption


def test_only_the_chosen_setting_is_tested(store: Store) -> None:
    table = only_table(store)
    # sgid vs none on 2 datasets: the other settings are no tests of the family.
    assert table.families == {("tiny", True): 2}


def test_csv_names_the_choice_and_select_by_none_shows_every_setting(runner: CliRunner,
                                                                     store: Store) -> None:
    table = only_table(store, select_by="none")
    variants = sorted(r.variant for r in table.measured if r.method == "sgid")
    assert variants == ["strength=0.3", "strength=0.5", "strength=0.7"]
    out = invoke(runner, "--format", "csv")
    rows = [r for r in csv.DictReader(io.StringIO(out))
            if r["method"] == "sgid" and r["kind"] == "measured" and r["dataset"] != "average"]
    assert {(r["dataset"], r["selected"]) for r in rows} == {
        ("shapes", "sgid.strength=0.3"), ("cifar10", "sgid.strength=0.7")}
    shapes = next(r for r in rows if r["dataset"] == "shapes")
    assert float(shapes["val_mean"]) == pytest.approx(80.5)
    assert "sgid.strength=0.7: val 70.5000, test 70.5000" in shapes["select_candidates"]
    none_out = invoke(runner, "--select-by", "none")
    assert none_out.count("strength=0.3") >= 1
    assert "chosen on val" not in none_out


def test_settings_without_validation_accuracy_are_not_chosen_blind(db_url: str) -> None:
    s = Store(db_url)
    for seed in range(2):
        add_run(s, "sgid", "shapes", seed, 60.0 + seed, params=("strength=0.3",), val=70.0)
        add_run(s, "sgid", "shapes", seed, 65.0 + seed, params=("strength=0.7",))
    table = only_table(s)
    assert len([r for r in table.measured if r.method == "sgid"]) == 2
    assert any("no validation accuracy" in n for n in table.notes)


def test_only_the_methods_own_parameters_are_selected(store: Store) -> None:
    # Another recipe is another experiment, not a setting to pick: its own row.
    for seed in range(2):
        add_run(store, "sgid", "shapes", seed, 99.0, params=("strength=0.3", "train.epochs=7"),
                val=99.0)
    table = only_table(store)
    sgid = [r for r in table.measured if r.method == "sgid"]
    assert len(sgid) == 2
    assert any("epochs=7" in r.variant for r in sgid)
    default = next(r for r in sgid if "epochs=7" not in r.variant)
    assert default.cells["shapes"].selected == "sgid.strength=0.3"


def test_an_unknown_select_by_is_a_user_error(store: Store) -> None:
    with pytest.raises(UserError, match="--select-by") as err:
        build(store, select_by="test")
    assert str(err.value) == "--select-by 'test': use one of val, none"


def test_the_table_records_the_select_by_it_was_built_with(store: Store) -> None:
    assert only_table(store).select_by == "val"
    table = only_table(store, select_by="none")
    assert table.select_by == "none"
    assert "validation accuracy" not in grid(table).caption


# -- sweeps ----------------------------------------------------------------------------

def _sweep(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text('[sweep]\nprofile = "tiny"\nmethods = ["none", "sgid", "sgid+cutmix"]\n'
                    'datasets = ["shapes"]\nseeds = 2\n' + body)
    return path


def test_select_table_expands_like_a_grid_for_the_methods_it_names(tmp_path: Path) -> None:
    sw = load_sweep(_sweep(tmp_path, '[select]\nsgid.strength = [0.3, 0.7]\n'))
    assert sw.select == {"sgid.strength": [0.3, 0.7]}
    specs = expand(sw)
    by_method = {m: [s.params for s in specs if s.method == m]
                 for m in ("none", "sgid", "sgid+cutmix")}
    assert by_method["none"] == [[], []]
    for method in ("sgid", "sgid+cutmix"):
        assert sorted(p[0] for p in by_method[method]) == [
            "sgid.strength=0.3", "sgid.strength=0.3", "sgid.strength=0.7",
            "sgid.strength=0.7"]


@pytest.mark.parametrize(("body", "message"), [
    ('[select]\n"train.epochs" = [1, 2]\n', "must name a method's parameter"),
    ('[select]\nstrength = [0.3]\n', "must name a method's parameter"),
    ('[select]\nsgid.strength = 0.3\n', "non-empty list"),
    ('[params]\nsgid.strength = 0.5\n[select]\nsgid.strength = [0.3]\n', "keep one"),
])
def test_bad_select_tables(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_sweep(_sweep(tmp_path, body))


def test_the_paper_sweep_selects_the_noise_rate_on_validation() -> None:
    sw = load_sweep(find_sweep_file("paper"))
    assert sw.select == {"sgid.strength": [0.3, 0.5, 0.7]}
    sgid_methods = [m for m in sw.methods if "sgid" in m.split("+")]
    assert len(sgid_methods) == 4
    per_cell = len(sw.backbones) * len(sw.datasets) * len(sw.seeds)
    assert len(expand(sw)) == (len(sw.methods) - 4) * per_cell + 4 * 3 * per_cell


def test_the_terminal_table_names_the_choice(runner: CliRunner, store: Store) -> None:
    out = invoke(runner, "-d", "shapes")
    assert "[sgid.strength=0.3]" in out
    assert "[key=value]: the setting chosen per dataset" in out  # not eaten as rich markup
    assert out.count("│ sgid ") == 1
