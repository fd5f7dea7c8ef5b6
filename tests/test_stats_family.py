"""The family of tests is the data, not the view; seeds, ties and post-hoc honesty."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as sps
from test_leaderboard import DATA, add_data, add_run, invoke

from sgid_bench.leaderboard.figures import gain_figure
from sgid_bench.leaderboard.grid import cell_text, grid, posthoc_grid
from sgid_bench.leaderboard.table import Cell, Row, Table, build
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


# -- places, averages, ranks -----------------------------------------------------------------

def row(table: Table, method: str, profile: str = "tiny") -> Row:
    rows = [r for r in table.measured if r.method == method and r.profile == profile]
    assert len(rows) == 1
    return rows[0]


def test_only_the_best_and_second_shown_means_are_placed(store: Store) -> None:
    # Means (by hand from DATA), shapes: none 61.5, cutmix 61.6, randaugment 62.65,
    # sgid 67.575; cifar10: 80.25, 80.325, 80.425, 84.3.
    table = only_table(store)
    for dataset in ("shapes", "cifar10"):
        places = {m: cell(table, m, dataset).place
                  for m in ("none", "cutmix", "randaugment", "sgid")}
        assert places == {"none": 0, "cutmix": 0, "randaugment": 2, "sgid": 1}
    averages = {r.method: r.average for r in table.measured}
    expected = {"none": 70.875, "cutmix": 70.9625, "randaugment": 71.5375, "sgid": 75.9375}
    assert {m: a.mean for m, a in averages.items()} == pytest.approx(expected)  # type: ignore[union-attr]
    assert {m: a.place for m, a in averages.items()} == {  # type: ignore[union-attr]
        "none": 0, "cutmix": 0, "randaugment": 2, "sgid": 1}


def test_the_average_uses_only_the_seeds_every_cell_has(db_url: str) -> None:
    s = Store(db_url)
    # none: seed 2 only on shapes; both rows share seeds 0 and 1 on every dataset.
    for seed, value in enumerate([60.0, 62.0, 64.0]):
        add_run(s, "none", "shapes", seed, value)
    for seed, (none, sgid_shapes, sgid_cifar) in enumerate([(80.0, 70.0, 90.0),
                                                            (84.0, 71.0, 93.0)]):
        add_run(s, "none", "cifar10", seed, none)
        add_run(s, "sgid", "shapes", seed, sgid_shapes)
        add_run(s, "sgid", "cifar10", seed, sgid_cifar)
    table = only_table(s)
    none, sgid = row(table, "none").average, row(table, "sgid").average
    assert none is not None
    assert sgid is not None
    # The mean is the mean of the cell means (62 and 82), seed 2 included; the std is
    # over the per-seed averages of the common seeds 0 and 1: (60+80)/2, (62+84)/2.
    assert none.mean == pytest.approx(72.0)
    assert none.n == 2
    assert none.std == pytest.approx(3.0 / 2 ** 0.5)
    assert sgid.mean == pytest.approx(81.0)
    assert sgid.n == 2
    assert sgid.std == pytest.approx(2.0 / 2 ** 0.5)
    # Two common seeds are enough to be placed.
    assert (sgid.place, none.place) == (1, 2)
    assert "81.00 ± 1.41" in grid(table).rows[1][-2].text


def test_rows_missing_a_dataset_get_no_average_and_no_rank(store: Store) -> None:
    # moex sorts before randaugment and sgid, sgid_diversecaption after every other row.
    for seed in range(2):
        add_run(store, "moex", "shapes", seed, 90.0 + seed)
        add_run(store, "sgid_diversecaption", "shapes", seed, 95.0 + seed)
    table = only_table(store)
    assert [r.method for r in table.measured][-1] == "sgid_diversecaption"
    averages = {r.method: r.average.mean if r.average else None for r in table.measured}
    assert averages == pytest.approx({"none": 70.875, "cutmix": 70.9625, "moex": None,
                                      "randaugment": 71.5375, "sgid": 75.9375,
                                      "sgid_diversecaption": None})
    ranks = {r.method: r.rank for r in table.measured}
    # The same order on both datasets: sgid > randaugment > cutmix > none.
    assert ranks == {"none": 4.0, "cutmix": 3.0, "moex": None, "randaugment": 2.0,
                     "sgid": 1.0, "sgid_diversecaption": None}
    assert table.ranking is not None
    assert table.ranking.notes[-1] == ("ranks cover the tiny profile, tiny models rows with "
                                       "a result on cifar10, shapes; 2 other row(s) are "
                                       "left out")


def test_when_every_row_is_ranked_no_row_is_said_to_be_left_out(store: Store) -> None:
    table = only_table(store)
    assert table.ranking is not None
    assert len(table.ranked) == 4
    assert not any("left out" in n for n in table.ranking.notes)


def test_ranked_names_carry_the_variant(db_url: str) -> None:
    s = Store(db_url)
    for seed in range(2):
        for dataset in ("shapes", "cifar10"):
            add_run(s, "none", dataset, seed, 60.0 + seed)
            add_run(s, "sgid", dataset, seed, 70.0 + seed)
            add_run(s, "sgid", dataset, seed, 65.0 + seed, params=("train.lr=0.01",))
    table = only_table(s)
    assert table.ranking is not None
    assert table.ranking.methods == ["none", "sgid [lr=0.002]", "sgid [lr=0.01]"]
    assert table.ranking.avg_ranks == [3.0, 1.0, 2.0]


def test_the_ranking_tests_at_the_tables_alpha(db_url: str) -> None:
    s = Store(db_url)
    # One order on 2 datasets, 3 methods: Friedman chi2 = 4, p = exp(-2) ~ 0.135, which
    # is significant at alpha 0.2 (not at 0.05): the post-hoc runs at the table's alpha.
    for dataset in ("shapes", "cifar10"):
        for seed in range(2):
            for m, method in enumerate(("none", "cutmix", "sgid")):
                add_run(s, method, dataset, seed, 50.0 + 5 * m + seed)
    ranking = only_table(s, alpha=0.2).ranking
    assert ranking is not None
    assert ranking.friedman_stat == pytest.approx(4.0)
    assert ranking.friedman_p == pytest.approx(math.exp(-2))
    se = math.sqrt(3 * 4 / (6 * 2))
    assert ranking.cd == pytest.approx(sps.studentized_range.ppf(0.8, 3, np.inf)
                                       / math.sqrt(2) * se)
    assert set(ranking.nemenyi_p) == {(0, 1), (0, 2), (1, 2)}
    assert only_table(s).ranking.cd is None  # type: ignore[union-attr]


def test_on_a_tie_the_real_model_class_listed_first_is_ranked(db_url: str) -> None:
    s = Store(db_url)
    # Two rows on one dataset in each class: the quick profile (world models) is listed
    # before the tiny stand-ins, and it is the one ranked.
    for profile in ("quick", "tiny"):
        for seed in range(2):
            add_run(s, "none", "shapes", seed, 60.0 + seed, profile=profile)
            add_run(s, "sgid", "shapes", seed, 70.0 + seed, profile=profile)
    table = only_table(s)
    assert [(r.method, r.profile) for r in table.ranked] == [("none", "quick"),
                                                             ("sgid", "quick")]
    assert row(table, "sgid", "quick").rank == 1.0
    assert row(table, "sgid", "tiny").rank is None
    assert table.ranking.notes[-1] == (  # type: ignore[union-attr]
        "ranks cover the quick profile rows with a result on shapes; 2 other row(s) are "
        "left out")


# -- differences from the paper --------------------------------------------------------------

#: The paper's resnet50 sgid row (Table 1), and its published average.
PAPER_SGID = {"cifar100": 75.72, "cifar10": 95.48, "caltech101": 59.17, "stanford_cars": 88.53,
              "flowers102": 45.61, "oxford_pets": 73.71, "dtd": 37.19}
PAPER_SGID_AVERAGE = 67.92


def test_deltas_are_only_for_real_model_paper_profile_runs(db_url: str) -> None:
    s = Store(db_url)
    for seed in range(2):
        add_run(s, "none", "cifar10", seed, 90.0 + seed)  # tiny: listed first, no delta
        add_run(s, "sgid", "cifar10", seed, 93.0 + seed, profile="quick")
        add_run(s, "sgid", "cifar10", seed, 96.0 + seed, profile="paper")
        add_run(s, "sgid", "cifar100", seed, 70.0 + 2 * seed, profile="paper")
    table = only_table(s, reference="paper", backbones=["resnet50"])
    assert cell(table, "none", "cifar10").delta is None
    assert row(table, "sgid", "quick").cells["cifar10"].delta is None
    paper = row(table, "sgid", "paper")
    assert paper.cells["cifar10"].delta == pytest.approx(96.5 - 95.48)
    assert paper.cells["cifar100"].delta == pytest.approx(71.0 - 75.72)
    # The published average is over seven datasets: no difference from an average of two.
    assert paper.average is not None
    assert paper.average.mean == pytest.approx((96.5 + 71.0) / 2)
    assert paper.average.delta is None


def test_the_average_delta_needs_every_paper_dataset(db_url: str) -> None:
    s = Store(db_url)
    offsets = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 1.0]  # measured mean - paper, per dataset
    for (dataset, ref), off in zip(PAPER_SGID.items(), offsets, strict=True):
        for seed, spread in enumerate((-0.5, 0.5)):
            add_run(s, "sgid", dataset, seed, ref + off + spread, profile="paper")
        if dataset != "dtd":  # none misses one dataset: no average, no average delta
            add_run(s, "none", dataset, 0, 50.0, profile="paper")
    table = only_table(s, reference="paper", backbones=["resnet50"])
    sgid = row(table, "sgid", "paper")
    for dataset, off in zip(PAPER_SGID, offsets, strict=True):
        assert sgid.cells[dataset].delta == pytest.approx(off)
    mean = sum(PAPER_SGID.values()) / 7 + sum(offsets) / 7
    assert sgid.average is not None
    assert sgid.average.mean == pytest.approx(mean)
    assert sgid.average.delta == pytest.approx(mean - PAPER_SGID_AVERAGE)
    assert row(table, "none", "paper").average is None
