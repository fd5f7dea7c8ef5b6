"""The family of tests is the data, not the view; seeds, ties and post-hoc honesty."""

from __future__ import annotations

import csv
import io

import pytest
from click.testing import CliRunner
from scipy import stats as sps
from test_leaderboard import DATA, add_data, add_run, invoke

from sgid_bench.leaderboard.figures import gain_figure
from sgid_bench.leaderboard.grid import cell_text, grid, posthoc_grid
from sgid_bench.leaderboard.table import Cell, Table, build
from sgid_bench.store import Store


@pytest.fixture
def store(db_url: str) -> Store:
    return add_data(Store(db_url))


def only_table(store: Store, **filters: object) -> Table:
    lb = build(store, **filters)  # type: ignore[arg-type]
    assert len(lb.tables) == 1
    return lb.tables[0]


def cell(table: Table, method: str, dataset: str) -> Cell:
    rows = [r for r in table.measured if r.method == method]
    assert len(rows) == 1
    return rows[0].cells[dataset]


def test_holm_p_values_do_not_depend_on_method_and_dataset_filters(store: Store) -> None:
    full = only_table(store)
    view = only_table(store, methods=["none", "sgid"], datasets=["shapes"])
    assert [r.method for r in view.measured] == ["none", "sgid"]
    assert view.datasets == ["shapes"]
    a, b = cell(full, "sgid", "shapes"), cell(view, "sgid", "shapes")
    assert b.vs_none.p_holm == a.vs_none.p_holm  # type: ignore[union-attr]
    assert b.vs_best.p_holm == a.vs_best.p_holm  # type: ignore[union-attr]
    # The best baseline is still chosen among every stored baseline, hidden or not.
    assert b.best_baseline == a.best_baseline == "randaugment"
    assert view.families == full.families == {("tiny", True): 8}
    caption = grid(view).caption
    assert "8 test(s) of the tiny profile" in caption
    assert "Hidden by the filters: 2 row(s) and dataset(s) cifar10" in caption


def test_cli_filters_leave_every_adjusted_p_unchanged(runner: CliRunner, store: Store) -> None:
    def holm(*args: str) -> dict[tuple[str, str], str]:
        rows = csv.DictReader(io.StringIO(invoke(runner, "--format", "csv", *args)))
        return {(r["method"], r["dataset"]): r["vs_none_p_holm"] for r in rows
                if r["kind"] == "measured" and r["vs_none_p_holm"]}

    full = holm()
    view = holm("-m", "none", "-m", "randaugment", "-d", "shapes")
    assert view == {("randaugment", "shapes"): full[("randaugment", "shapes")]}
    assert float(view[("randaugment", "shapes")]) > 0.05  # raw p ~ 0.03: still lifted


def test_tiny_and_real_models_are_separate_families(store: Store) -> None:
    before = cell(only_table(store), "sgid", "shapes").vs_none.p_holm  # type: ignore[union-attr]
    for seed, (none, sgid) in enumerate([(30.0, 40.0), (31.0, 40.5), (29.0, 41.0)]):
        add_run(store, "none", "shapes", seed, none, profile="paper")
        add_run(store, "sgid", "shapes", seed, sgid, profile="paper")
    table = only_table(store)
    assert table.families == {("tiny", True): 8, ("paper", False): 1}
    tiny = next(r for r in table.measured if r.method == "sgid" and r.tiny)
    assert tiny.cells["shapes"].vs_none.p_holm == before  # type: ignore[union-attr]
    real = next(r for r in table.measured if r.method == "sgid" and not r.tiny)
    # Its own family of one: Holm leaves the single p as it is; best of its own class.
    assert real.cells["shapes"].vs_none.p_holm == real.cells["shapes"].vs_none.p  # type: ignore[union-attr]
    assert real.cells["shapes"].place == 1
    assert tiny.cells["shapes"].place == 1
    fig = gain_figure(table)
    assert fig is not None
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2
    limits = [p.images[0].get_clim() for p in panels]
    assert limits[0] != limits[1]  # one colour scale per class


def test_a_single_seed_is_never_the_best_baseline_nor_bold(store: Store) -> None:
    add_run(store, "moex", "shapes", 0, 99.0)  # best mean, one seed
    table = only_table(store)
    sgid = cell(table, "sgid", "shapes")
    assert sgid.best_baseline == "randaugment"
    moex = cell(table, "moex", "shapes")
    assert moex.place == 0
    assert not cell_text(moex, 0.05).bold
    assert sgid.place == 1
    moex_row = next(r for r in table.measured if r.method == "moex")
    assert moex_row.rank is None  # not on every dataset: not ranked at all


def test_a_rank_resting_on_one_seed_is_marked(store: Store) -> None:
    for dataset in ("shapes", "cifar10"):
        add_run(store, "moex", dataset, 0, 99.0)
    table = only_table(store)
    moex = next(r for r in table.measured if r.method == "moex")
    assert moex.rank == 1.0
    assert moex.rank_thin
    line = next(row for row in grid(table).rows if row[1].text == "moex")
    assert line[-1].mark == "°"
    assert "° rank resting on a cell with a single seed" in grid(table).caption
    assert not any(r.rank_thin for r in table.measured if r.method != "moex")


def test_ties_are_judged_at_display_precision(store: Store) -> None:
    # mixup's mean is 0.0005 below randaugment's on each dataset: the same number
    # on screen, so the same place and the same rank.
    for dataset, values in DATA["randaugment"].items():
        for seed, value in enumerate(values):
            add_run(store, "mixup", dataset, seed, value - (0.002 if seed == 0 else 0.0))
    table = only_table(store)
    for dataset in ("shapes", "cifar10"):
        assert cell(table, "mixup", dataset).place == cell(table, "randaugment",
                                                           dataset).place == 2
    ranks = {r.method: r.rank for r in table.measured}
    assert ranks["mixup"] == ranks["randaugment"]


def test_csv_carries_each_tests_ci_statistic_and_the_post_hoc(runner: CliRunner,
                                                               db_url: str) -> None:
    s = Store(db_url)
    # One consistent order on 4 datasets: Friedman chi2 = 8, p = 0.018, so Nemenyi runs;
    # 4 datasets x 3 pairs can never give a Holm-adjusted Wilcoxon p < 0.05.
    for d, dataset in enumerate(("shapes", "cifar10", "cifar100", "dtd")):
        for seed in range(3):
            for m, method in enumerate(("none", "cutmix", "sgid")):
                add_run(s, method, dataset, seed, 50.0 + 5 * m + d + 0.3 * seed * (m + 1))
    rows = list(csv.DictReader(io.StringIO(invoke(runner, "--format", "csv"))))
    sg = next(r for r in rows if r["method"] == "sgid" and r["dataset"] == "dtd")
    x, y = [53.0 + 10 + 0.9 * k for k in range(3)], [53.0 + 0.3 * k for k in range(3)]
    ref = sps.ttest_rel(x, y)
    ci = ref.confidence_interval(0.95)
    assert float(sg["vs_none_statistic"]) == pytest.approx(ref.statistic)
    assert float(sg["vs_none_ci_low"]) == pytest.approx(ci.low)
    assert float(sg["vs_none_ci_high"]) == pytest.approx(ci.high)
    assert sg["vs_none_n"] == "3"
    assert sg["vs_best_test"] == "paired t"
    assert sg["vs_best_ci_low"]
    friedman = [r for r in rows if r["kind"] == "friedman"]
    assert len(friedman) == 1
    assert float(friedman[0]["friedman_chi2"]) == pytest.approx(8.0)
    assert float(friedman[0]["friedman_p"]) < 0.05
    assert float(friedman[0]["iman_davenport_f"]) == float("inf")
    posthoc = [r for r in rows if r["kind"] == "posthoc"]
    assert len(posthoc) == 3
    assert all(r["nemenyi_p"] and not r["wilcoxon_holm_p"] for r in posthoc)
    table = only_table(s)
    g = posthoc_grid(table)
    assert g is not None
    assert "Wilcoxon-Holm p" not in g.header  # it could never reach alpha here
    assert "Iman-Davenport F" in g.caption
