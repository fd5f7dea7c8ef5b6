"""Terminal tables that fit, readable variant labels, training budgets kept apart, and the
failed runs the leaderboard leaves out (issue 14, items 5, 6 and 8)."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from test_leaderboard import DATA, _image_folder, add_data, add_run

from sgid_bench.cli import main
from sgid_bench.leaderboard.configs import variant_labels
from sgid_bench.leaderboard.grid import grid
from sgid_bench.leaderboard.render import grids, render_rich, rich_tables
from sgid_bench.leaderboard.table import Cell, Table, build
from sgid_bench.store import Store

BOX = set("│┃┏┓┗┛┡┩└┘┌┐━─┳┻╇┴┬┼╋├┤┣┫═║ ")


def fill(store: Store) -> None:
    for method, per_dataset in DATA.items():
        for dataset, values in per_dataset.items():
            for seed, value in enumerate(values):
                add_run(store, method, dataset, seed, value)


@pytest.fixture
def store(db_url: str) -> Store:
    s = Store(db_url)
    fill(s)
    return s


def only_table(store: Store, **filters: object) -> Table:
    lb = build(store, **filters)  # type: ignore[arg-type]
    assert len(lb.tables) == 1
    return lb.tables[0]


# -- terminal tables -------------------------------------------------------------------------

@pytest.fixture
def wide(store: Store, tmp_path: Path) -> Store:
    """Long labels: a folder dataset, a variant of sgid, a single-seed cell."""
    folder = _image_folder(tmp_path / "a_rather_long_folder_name" / "colours_of_things")
    for seed in range(3):
        add_run(store, "sgid", "shapes", seed, 70.0 + seed,
                params=("strength=0.7", "train.epochs=2"))
        add_run(store, "sgid_diversecaption", f"imagefolder:{folder}", seed, 50.0 + seed)
    add_run(store, "moex", "shapes", 0, 55.0)
    return store


def words_of(texts: list[str]) -> set[str]:
    return {w for t in texts for w in t.split()}


def test_tables_fit_100_columns_and_never_split_a_word(wide: Store) -> None:
    lb = build(wide)
    for g in grids(lb, details=True):
        console = Console(width=100, record=True, file=io.StringIO())
        tables = rich_tables(g, 100)
        for table in tables:
            console.print(table)
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= 100
        known = words_of([g.title, g.caption, *g.header,
                          *(t.text + t.mark for row in g.rows for t in row),
                          *(f"({i}/{len(tables)})" for i in range(1, len(tables) + 1))])
        # Every word on screen is a whole word of the grid: none is cut across lines.
        for line in text.splitlines():
            for token in re.split(r"[│┃]", line):
                for word in token.split():
                    if set(word) <= BOX:
                        continue
                    assert word in known, (word, line)


def test_a_grid_too_wide_is_split_into_panels_that_repeat_the_row_names(wide: Store) -> None:
    g = grid(only_table(wide))
    tables = rich_tables(g, 100)
    assert len(tables) > 1
    for table in tables:
        assert [c.header for c in table.columns[:2]] == ["Group", "Method"]
    # Each dataset column is in exactly one panel; the caption comes once, at the end.
    headers = [c.header for t in tables for c in t.columns]
    for name in g.header[3:]:
        assert headers.count(name) == 1
    assert [t.caption is not None for t in tables] == [False] * (len(tables) - 1) + [True]
    # Wide enough: one table, unchanged.
    assert len(rich_tables(g, 400)) == 1


def test_details_go_below_the_main_table(wide: Store) -> None:
    out = io.StringIO()
    render_rich(build(wide), out, details=True, width=100)
    lines = out.getvalue().splitlines()
    main_rows = [i for i, line in enumerate(lines) if "sgid_diversecaption" in line]
    details_title = next(i for i, line in enumerate(lines) if "Tests, backbone" in line)
    main_title = next(i for i, line in enumerate(lines) if "Top-1 accuracy" in line)
    assert main_title < min(main_rows)
    assert details_title > main_rows[0]
    assert not any("Top-1 accuracy" in line and "Tests" in line for line in lines)


# -- variants and budgets --------------------------------------------------------------------

def test_variant_labels_name_what_differs_from_the_default(db_url: str) -> None:
    s = Store(db_url)
    for seed in range(2):
        # Every run of this store was made with 2 epochs: nothing splits the rows, but
        # they are not the default config and say so.
        add_run(s, "none", "shapes", seed, 60.0 + seed, params=("train.epochs=2",))
        add_run(s, "sgid", "shapes", seed, 70.0 + seed,
                params=("train.epochs=2", "strength=0.7"))
    table = only_table(s)
    labels = {r.method: r.variant for r in table.measured}
    assert labels == {"none": "epochs=2", "sgid": "epochs=2, strength=0.7"}
    assert "epochs=2, strength=0.7" in grid(table).rows[1][2].text


def test_default_configs_have_no_label(store: Store) -> None:
    assert {r.variant for r in only_table(store).measured} == {""}


def test_a_long_label_keeps_readable_keys_and_stays_unique(db_url: str) -> None:
    s = Store(db_url)
    params = ("train.epochs=2", "train.lr=0.5", "train.batch_size=4", "strength=0.7",
              "label_weight=2.0", "caption_weight=0.3")
    hashes = [add_run(s, "sgid", "shapes", 0, 70.0, params=params),
              add_run(s, "sgid", "shapes", 0, 71.0, params=(*params[:-1], "caption_weight=0.4"))]
    cells = [Cell("shapes", r.config_hash, r.config) for r in s.runs()]
    labels = variant_labels(cells, limit=40)
    assert set(labels) == set(hashes)
    a, b = labels.values()
    assert a != b
    for label in (a, b):
        assert len(label) <= 40
        assert re.search(r"^\w+=[^,]+(, \w+=[^,]+)* \+\d+ more #[0-9a-f]{7}$", label), label


def test_rows_of_another_budget_are_never_placed_or_ranked_against_the_others(
        store: Store) -> None:
    # Far above every default-budget row, but trained for 2 epochs only.
    for dataset in ("shapes", "cifar10"):
        for seed in range(3):
            add_run(store, "cutmix", dataset, seed, 95.0 + seed, params=("train.epochs=2",))
    table = only_table(store)
    short = next(r for r in table.measured if "epochs=2" in r.variant)
    default = [r for r in table.measured if r is not short]
    assert all(c.place == 0 for c in short.cells.values())  # alone in its budget
    sgid = next(r for r in default if r.method == "sgid")
    assert all(c.place == 1 for c in sgid.cells.values())
    assert short.rank is None
    assert table.ranked == default
    assert sgid.rank == 1.0
    assert any("ranks cover the tiny profile, tiny models, epochs=8 rows" in n
               for n in table.ranking.notes)  # type: ignore[union-attr]
    caption = grid(table).caption
    assert "placed and ranked only against rows of the same budget" in caption
    # The budget shows on every row of the class, so the reader sees why.
    assert all("epochs=" in r.config_label for r in table.measured)


# -- failed runs -----------------------------------------------------------------------------

def add_failed(store: Store, method: str, dataset: str, seed: int) -> None:
    from sgid_bench.config import RunSpec, resolve
    from sgid_bench.context import Context

    resolved = resolve(RunSpec(method=method, dataset=dataset, seed=seed, profile="tiny"),
                       Context(profile="tiny"))
    run_id = store.claim(resolved.config_hash, seed, method=method, backbone="resnet50",
                         dataset=dataset, profile="tiny", config=resolved.config,
                         models=resolved.config["models"], tiny_models=True, versions={},
                         git_revision=None)
    assert run_id is not None
    store.fail(run_id, "ValueError: constructed failure")


def test_the_caption_counts_failed_runs_and_names_the_command_that_lists_them(
        runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"  # not the default: the hint needs --db
    s = Store(url)
    fill(s)
    add_failed(s, "mixup", "shapes", 0)
    add_failed(s, "mixup", "cifar10", 1)
    add_failed(s, "cutmix", "shapes", 7)
    table = only_table(s)
    assert table.failed == 3
    caption = grid(table).caption
    hint = f"sgid-bench runs --status failed -b resnet50 --db {url}"
    assert f"3 failed run(s) hidden: {hint}." in caption
    listed = runner.invoke(main, shlex.split(hint)[1:])
    assert listed.exit_code == 0, listed.output
    assert "3 stored run(s)" in listed.stdout
    # With filters the count and the command follow them.
    view = only_table(s, methods=["mixup", "none"], datasets=["shapes"])
    assert view.failed == 1
    assert "-m mixup -m none -d shapes" in view.failed_hint
    listed = runner.invoke(main, shlex.split(view.failed_hint)[1:])
    assert "1 stored run(s)" in listed.stdout


def test_no_failed_runs_no_line(store: Store) -> None:
    table = only_table(store)
    assert table.failed == 0
    assert "failed run" not in grid(table).caption


def test_nothing_finished_but_failures_says_how_to_see_them(runner: CliRunner,
                                                            db_url: str) -> None:
    from sgid_bench.leaderboard.command import leaderboard

    s = Store(db_url)
    add_failed(s, "mixup", "shapes", 0)
    result = runner.invoke(leaderboard, ["-m", "mixup"])
    assert result.exit_code == 1
    assert "1 run(s) failed: sgid-bench runs --status failed -m mixup lists them" in \
        result.output
    assert len(result.output.strip().splitlines()) == 1


def test_budget_labels_name_only_the_budget_that_varies_and_never_twice(db_url: str) -> None:
    s = add_data(Store(db_url), ("shapes",))
    for seed in range(3):
        add_run(s, "cutmix", "shapes", seed, 95.0 + seed, params=("train.epochs=2",))
    table = only_table(s)
    labels = {(r.method, r.variant): (r.budget_label, r.config_label) for r in table.measured}
    # shapes configs also carry train_per_class=60, the same in every row: never named.
    assert labels == {
        ("none", ""): ("epochs=8", "tiny · tiny models · epochs=8"),
        # Their variants already say the budget: not said again.
        ("cutmix", "epochs=8"): ("", "tiny · tiny models · epochs=8"),
        ("cutmix", "epochs=2"): ("", "tiny · tiny models · epochs=2"),
        ("randaugment", ""): ("epochs=8", "tiny · tiny models · epochs=8"),
        ("sgid", ""): ("epochs=8", "tiny · tiny models · epochs=8"),
    }
    assert table.budget_keys == {("tiny", True): {"epochs"}}
    assert table.notes == ["tiny profile, tiny models: rows trained with different budgets "
                           "(epochs) are placed and ranked only against rows of the same "
                           "budget",
                           "tiny models: random-weight stand-ins of the real architectures; "
                           "their accuracies check the pipeline, not the methods"]
    assert table.ranking is not None
    assert table.ranking.notes[-1] == ("ranks cover the tiny profile, tiny models, epochs=8 "
                                       "rows with a result on shapes; 1 other row(s) are "
                                       "left out")


def test_a_variant_naming_its_budget_among_other_settings_gets_no_budget_label(
        db_url: str) -> None:
    s = Store(db_url)
    for seed in range(2):
        add_run(s, "none", "shapes", seed, 60.0 + seed)
        add_run(s, "sgid", "shapes", seed, 70.0 + seed,
                params=("train.epochs=2", "strength=0.7"))
    table = only_table(s)
    labels = {r.method: r.config_label for r in table.measured}
    assert labels == {"none": "tiny · tiny models · epochs=8",
                      "sgid": "tiny · tiny models · epochs=2, strength=0.7"}


def test_two_varying_budget_settings_are_both_named(store: Store) -> None:
    for seed in range(2):
        add_run(store, "cutmix", "shapes", seed, 50.0 + seed,
                params=("train.epochs=2", "dataset.train_per_class=30"))
    table = only_table(store)
    assert table.budget_keys == {("tiny", True): {"epochs", "train_per_class"}}
    assert ("tiny profile, tiny models: rows trained with different budgets (epochs, "
            "train_per_class) are placed and ranked only against rows of the same budget"
            in table.notes)
    short = next(r for r in table.measured if r.variant.startswith("epochs=2"))
    assert short.variant == "epochs=2, train_per_class=30"
    assert short.budget_label == ""
    # Default rows: cifar10 has no train_per_class; each budget of the row, once.
    sgid = next(r for r in table.measured if r.method == "sgid")
    assert sgid.budget_label.split("; ") == ["epochs=8", "epochs=8, train_per_class=60"]


def test_each_class_mixing_budgets_gets_its_own_note(db_url: str) -> None:
    s = Store(db_url)
    for seed in range(2):
        # quick profile (listed first): one budget; tiny: two budgets.
        add_run(s, "none", "shapes", seed, 60.0 + seed, profile="quick")
        add_run(s, "sgid", "shapes", seed, 70.0 + seed, profile="quick")
        add_run(s, "none", "shapes", seed, 60.0 + seed)
        add_run(s, "sgid", "shapes", seed, 70.0 + seed, params=("train.epochs=2",))
    table = only_table(s)
    assert table.budget_keys == {("tiny", True): {"epochs"}}
    assert [n for n in table.notes if "budget" in n] == [
        "tiny profile, tiny models: rows trained with different budgets (epochs) are "
        "placed and ranked only against rows of the same budget"]
    assert {r.budget_label for r in table.measured if r.profile == "quick"} == {""}
    # The same in a class of real models, which says no "tiny models".
    for seed in range(2):
        add_run(s, "cutmix", "shapes", seed, 65.0 + seed, profile="quick",
                params=("train.epochs=2",))
    table = only_table(s)
    assert table.budget_keys == {("quick", False): {"epochs"}, ("tiny", True): {"epochs"}}
    assert [n for n in table.notes if "budget" in n] == [
        "quick profile: rows trained with different budgets (epochs) are placed and ranked "
        "only against rows of the same budget",
        "tiny profile, tiny models: rows trained with different budgets (epochs) are "
        "placed and ranked only against rows of the same budget"]


def test_a_budget_setting_some_datasets_lack_is_named_cleanly(store: Store) -> None:
    for seed in range(2):
        add_run(store, "cutmix", "shapes", seed, 50.0 + seed,
                params=("dataset.train_per_class=30",))
    table = only_table(store)
    assert table.budget_keys == {("tiny", True): {"train_per_class"}}
    sgid = next(r for r in table.measured if r.method == "sgid")
    assert sgid.budget_label == "train_per_class=60"
    assert sgid.config_label == "tiny · tiny models · train_per_class=60"
    assert table.ranking is not None
    assert "ranks cover the tiny profile, tiny models, train_per_class=60 rows with a " \
        "result on cifar10, shapes;" in table.ranking.notes[-1]


@pytest.mark.xfail(strict=True, reason="known, not fixed: configs.variant_labels labels the "
                   "shapes default 'train_per_class=60' once 30 is also stored there, while "
                   "cifar10 (no such setting) stays unlabelled, so one default config becomes "
                   "two rows and is neither averaged nor ranked")
def test_a_setting_split_on_one_dataset_does_not_split_a_default_row(store: Store) -> None:
    for seed in range(2):
        add_run(store, "cutmix", "shapes", seed, 50.0 + seed,
                params=("dataset.train_per_class=30",))
    table = only_table(store)
    cutmix = [r for r in table.measured if r.method == "cutmix"]
    assert len(cutmix) == 2
    default = next(r for r in cutmix if "train_per_class=30" not in r.variant)
    assert set(default.cells) == {"shapes", "cifar10"}
    assert default.average is not None
    assert default.rank is not None
