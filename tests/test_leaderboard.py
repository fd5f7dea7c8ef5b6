"""The leaderboard on stores filled with constructed results (and, slow, real runs)."""

from __future__ import annotations

import base64
import csv
import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from scipy import stats as sps

from sgid_bench.config import RunSpec, resolve
from sgid_bench.context import Context
from sgid_bench.leaderboard.command import leaderboard
from sgid_bench.leaderboard.grid import cell_text, grid
from sgid_bench.leaderboard.groups import is_sgid_family, method_group
from sgid_bench.leaderboard.table import Leaderboard, Table, build
from sgid_bench.store import Store

PNG = b"\x89PNG\r\n\x1a\n"
#: Constructed top-1 (%) per method, dataset, seed 0..3. sgid: a large, steady gain;
#: randaugment on shapes: raw p ~ 0.03 that Holm must lift above 0.05; cutmix: noise.
DATA = {
    "none": {"shapes": [60.0, 62.0, 61.0, 63.0], "cifar10": [80.0, 81.0, 79.5, 80.5]},
    "cutmix": {"shapes": [60.5, 61.5, 61.8, 62.6], "cifar10": [80.4, 80.6, 80.1, 80.2]},
    "randaugment": {"shapes": [61.0, 63.8, 61.4, 64.4], "cifar10": [80.2, 81.5, 79.0, 81.0]},
    "sgid": {"shapes": [66.0, 68.1, 67.0, 69.2], "cifar10": [84.0, 85.2, 83.4, 84.6]},
}


def add_run(store: Store, method: str, dataset: str, seed: int, top1: float,
            params: tuple[str, ...] = (), backbone: str = "resnet50",
            profile: str = "tiny", val: float | None = None, error: str | None = None) -> str:
    """Store a finished run with the config the harness would resolve; its config hash.
    With ``error`` the run is stored as failed instead."""
    spec = RunSpec(method=method, backbone=backbone, dataset=dataset, seed=seed,
                   profile=profile, params=list(params))
    resolved = resolve(spec, Context(profile=profile))
    models = resolved.config["models"]
    run_id = store.claim(
        resolved.config_hash, seed, method=resolved.config["method"], backbone=backbone,
        dataset=dataset, profile=profile, config=resolved.config, models=models,
        tiny_models=any(m.startswith("tiny/") for m in models.values()), versions={},
        git_revision=None)
    assert run_id is not None
    if error is not None:
        store.fail(run_id, error)
        return resolved.config_hash
    extra = {"val_top1": val} if val is not None else None
    store.finish(run_id, top1=top1, top5=min(100.0, top1 + 10), loss=1.0, extra=extra)
    return resolved.config_hash


def add_data(store: Store, datasets: tuple[str, ...] | None = None) -> Store:
    """Store every run of :data:`DATA` (only ``datasets``' when given); returns ``store``."""
    for method, per_dataset in DATA.items():
        for dataset, values in per_dataset.items():
            if datasets is None or dataset in datasets:
                for seed, value in enumerate(values):
                    add_run(store, method, dataset, seed, value)
    return store


@pytest.fixture
def store(db_url: str) -> Store:
    return add_data(Store(db_url))


def only_table(lb: Leaderboard) -> Table:
    assert len(lb.tables) == 1
    return lb.tables[0]


def row_of(table: Table, method: str, variant: str = "") -> object:
    matches = [r for r in table.measured if r.method == method and variant in r.variant]
    assert len(matches) == 1, [r.name for r in matches]
    return matches[0]


def expected_holm(pvalues: list[float]) -> list[float]:
    # Written out independently of stats.holm: adj(p_i) = max over p_j <= p_i of
    # min(1, (m - position of p_j) * p_j).
    ranked = sorted(pvalues)
    m = len(pvalues)
    return [max(min(1.0, (m - k) * q) for k, q in enumerate(ranked) if q <= p)
            for p in pvalues]


def test_gains_are_paired_t_tests_holm_corrected_over_the_table(store: Store) -> None:
    table = only_table(build(store))
    comps, expected_raw = [], []
    for method in ("cutmix", "randaugment", "sgid"):
        for dataset in ("shapes", "cifar10"):
            cell = row_of(table, method).cells[dataset]  # type: ignore[attr-defined]
            comps.append(cell.vs_none)
            expected_raw.append(sps.ttest_rel(DATA[method][dataset],
                                              DATA["none"][dataset]).pvalue)
            if method == "sgid":
                # The best non-SGID baseline by mean is randaugment on both datasets.
                assert cell.best_baseline == "randaugment"
                comps.append(cell.vs_best)
                expected_raw.append(sps.ttest_rel(DATA["sgid"][dataset],
                                                  DATA["randaugment"][dataset]).pvalue)
    assert len(table.comparisons()) == 8
    assert [c.p for c in comps] == pytest.approx(expected_raw)
    assert [c.p_holm for c in comps] == pytest.approx(expected_holm(expected_raw))


def test_significance_marks_follow_the_holm_adjusted_p(store: Store) -> None:
    table = only_table(build(store))
    sgid = row_of(table, "sgid")
    for dataset in ("shapes", "cifar10"):
        text = cell_text(sgid.cells[dataset], 0.05)  # type: ignore[attr-defined]
        assert text.mark == "*†"
        assert text.bold
        assert not text.dim
    ra = row_of(table, "randaugment").cells["shapes"]  # type: ignore[attr-defined]
    assert ra.vs_none.p < 0.05 < ra.vs_none.p_holm  # significant only before Holm
    text = cell_text(ra, 0.05)
    assert text.mark == ""
    assert text.dim
    assert text.underline
    assert cell_text(row_of(table, "none").cells["shapes"], 0.05).mark == ""  # type: ignore[attr-defined]


def test_details_grid_lists_raw_and_holm_p_effect_and_ci(store: Store) -> None:
    from sgid_bench.leaderboard.grid import details_grid

    table = only_table(build(store))
    g = details_grid(table)
    assert len(g.rows) == 8
    ra = row_of(table, "randaugment").cells["shapes"].vs_none  # type: ignore[attr-defined]
    line = next(r for r in g.rows if r[0].text == "randaugment" and r[2].text == "shapes")
    assert line[9].text == f"{ra.p:.4g}"
    assert line[10].text == f"{ra.p_holm:.4g}"
    assert line[8].text.startswith("d_z")
    assert line[7].text.startswith("[")
    assert line[11].text == "no"


def test_welch_when_the_seeds_do_not_pair(store: Store) -> None:
    for seed, value in zip((10, 11, 12), (70.0, 71.5, 70.5), strict=True):
        add_run(store, "random_erasing", "shapes", seed, value)
    table = only_table(build(store, datasets=["shapes"]))
    comp = row_of(table, "random_erasing").cells["shapes"].vs_none  # type: ignore[attr-defined]
    assert comp.test == "Welch t"
    ref = sps.ttest_ind([70.0, 71.5, 70.5], DATA["none"]["shapes"], equal_var=False)
    assert comp.p == pytest.approx(ref.pvalue)


def test_too_few_seeds_is_said_in_the_cell(store: Store) -> None:
    add_run(store, "moex", "shapes", 0, 75.0)
    table = only_table(build(store, datasets=["shapes"]))
    cell = row_of(table, "moex").cells["shapes"]  # type: ignore[attr-defined]
    text = cell_text(cell, 0.05)
    assert "too few seeds" in text.text
    assert "(n=1)" in text.text
    assert text.mark == ""
    assert cell.vs_none.p is None
    assert cell.vs_none not in [c for c in table.comparisons() if c.tested]


def test_configs_never_average_together(store: Store) -> None:
    add_run(store, "sgid", "shapes", 0, 50.0, params=("strength=0.3",))
    add_run(store, "sgid", "shapes", 1, 53.0, params=("strength=0.3",))
    table = only_table(build(store, datasets=["shapes"]))
    default = row_of(table, "sgid", "strength=0.5").cells["shapes"]  # type: ignore[attr-defined]
    low = row_of(table, "sgid", "strength=0.3").cells["shapes"]  # type: ignore[attr-defined]
    assert default.mean == pytest.approx(sum(DATA["sgid"]["shapes"]) / 4)
    assert low.mean == pytest.approx(51.5)
    assert low.n == 2
    assert default.config_hash != low.config_hash
    # Split cells show which config they are.
    assert f"#{low.short_hash}" in cell_text(low, 0.05).text


def test_profiles_are_separate_rows_and_filterable(store: Store) -> None:
    add_run(store, "none", "shapes", 0, 30.0, profile="paper")
    table = only_table(build(store, datasets=["shapes"]))
    nones = [r for r in table.measured if r.method == "none"]
    assert {(r.profile, r.cells["shapes"].mean) for r in nones} == {
        ("paper", 30.0), ("tiny", 61.5)}
    assert "tiny models" in [r for r in nones if r.profile == "tiny"][0].config_label
    quick = only_table(build(store, profiles=["tiny"], datasets=["shapes"]))
    assert all(r.profile == "tiny" for r in quick.measured)


def test_average_ranks_and_friedman_over_the_datasets(store: Store) -> None:
    table = only_table(build(store))
    assert table.ranking is not None
    means = {m: [sum(v) / len(v) for v in d.values()] for m, d in DATA.items()}
    ranks = {r.method: r.rank for r in table.measured}
    assert ranks["sgid"] == 1.0
    assert ranks["randaugment"] == 2.0
    scores = [means[r.method] for r in table.ranked]
    ref = sps.friedmanchisquare(*scores)
    assert table.ranking.friedman_p == pytest.approx(ref.pvalue)
    assert row_of(table, "sgid").average.place == 1  # type: ignore[attr-defined]


def test_method_groups() -> None:
    assert method_group("none") == "backbone"
    assert method_group("cutmix") == "perturbation"
    assert method_group("sgid") == "generative"
    assert method_group("sgid+randaugment") == "combined"
    assert method_group("not_installed_anywhere") == "other"
    assert is_sgid_family("text2img+sgid")
    assert is_sgid_family("sgid_diversecaption")
    assert not is_sgid_family("text2img")


def test_rows_are_grouped_in_the_papers_order(store: Store) -> None:
    add_run(store, "sgid+randaugment", "shapes", 0, 70.0)
    g = grid(only_table(build(store)))
    methods = [r[1].text for r in g.rows]
    assert methods == ["none", "cutmix", "randaugment", "sgid", "sgid+randaugment"]
    assert [r[0].text for r in g.rows] == ["backbone", "perturbation", "", "generative",
                                           "combined"]


# -- command and formats ----------------------------------------------------------------

def invoke(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(leaderboard, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_rich_table_names_test_seeds_and_alpha(runner: CliRunner, store: Store) -> None:
    out = invoke(runner, "--alpha", "0.01")
    assert "paired t-test" in out
    assert "Holm" in out
    assert "alpha = 0.01" in out
    assert "n = 4 seeds" in out
    assert "67.58 ± 1.38 (n=4)*†" in out


def test_markdown_parses_as_tables(runner: CliRunner, store: Store) -> None:
    out = invoke(runner, "--format", "markdown", "--details")
    tables = re.findall(r"((?:^\|.*\|\n)+)", out, flags=re.M)
    # Main and tests; no post-hoc: 4 methods on 2 datasets cannot make Friedman significant.
    assert len(tables) == 2
    assert "no post-hoc comparisons" in out.lower()
    for block in tables:
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in block.strip().splitlines()}
        assert len(widths) == 1
    assert "**84.30 ± 0.77 (n=4)**<sup>\\*†</sup>" in out


def test_csv_is_long_format_with_every_statistic(runner: CliRunner, store: Store) -> None:
    rows = list(csv.DictReader(io.StringIO(invoke(runner, "--format", "csv"))))
    ra = next(r for r in rows if r["method"] == "randaugment" and r["dataset"] == "shapes")
    p = sps.ttest_rel(DATA["randaugment"]["shapes"], DATA["none"]["shapes"]).pvalue
    assert float(ra["vs_none_p"]) == pytest.approx(p)
    assert float(ra["vs_none_p_holm"]) > 0.05
    assert ra["vs_none_significant"] == "0"
    assert float(ra["mean"]) == pytest.approx(62.65)
    assert ra["n"] == "4"
    sgid = next(r for r in rows if r["method"] == "sgid" and r["dataset"] == "cifar10")
    assert sgid["vs_best_significant"] == "1"
    assert sgid["best_baseline"] == "randaugment"


def test_latex_rows_have_one_cell_per_column(runner: CliRunner, store: Store) -> None:
    out = invoke(runner, "--format", "latex")
    body = out.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", out)
    assert spec is not None
    assert len(body) == 4
    for line in body:
        assert line.endswith(r"\\")
        assert len(re.findall(r"(?<!\\)&", line)) == len(spec.group(1)) - 1
    assert r"\textbf{84.30 $\pm$ 0.77 (n=4)}$^{*\dagger}$" in out
    assert out.count(r"\begin{tabular}") == out.count(r"\end{tabular}") == 1


def test_html_is_self_contained_with_embedded_figures(runner: CliRunner, store: Store,
                                                      tmp_path: Path) -> None:
    page = tmp_path / "board.html"
    invoke(runner, "--format", "html", "-o", str(page))
    html = page.read_text("utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert html.rstrip().endswith("</html>")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3  # accuracy, gain heat-map, CD diagram
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched from outside


def test_figures_include_the_cd_diagram(runner: CliRunner, store: Store,
                                        tmp_path: Path) -> None:
    result = runner.invoke(leaderboard, ["--figures", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == ["resnet50_accuracy.png", "resnet50_cd.png", "resnet50_gain.png"]
    assert (tmp_path / "figs" / "resnet50_cd.png").read_bytes().startswith(PNG)
    assert "resnet50_cd.png" in result.stderr


def test_publish_writes_readme_page_and_figures(runner: CliRunner, store: Store,
                                                tmp_path: Path) -> None:
    target = tmp_path / "published"
    invoke(runner, "--publish", str(target))
    readme = (target / "README.md").read_text("utf-8")
    assert "![resnet50_cd](resnet50_cd.png)" in readme
    assert "p (Holm)" in readme
    assert (target / "index.html").read_text("utf-8").count("data:image/png;base64,") == 3


def test_reference_paper_shows_the_published_number(runner: CliRunner, db_url: str) -> None:
    Store(db_url)  # an empty store: the reference rows alone
    out = invoke(runner, "--reference", "paper", "-b", "resnet50", "-m", "none",
                 "-d", "cifar100")
    assert "75.12" in out
    assert "94.81" not in out  # cifar10 is filtered out
    assert "backbone vit" not in out
    assert "clip_vit" not in out


def test_reference_difference_for_paper_profile_runs(runner: CliRunner, db_url: str) -> None:
    store = Store(db_url)
    add_run(store, "none", "cifar100", 0, 76.0, profile="paper")
    add_run(store, "none", "cifar100", 1, 76.5, profile="paper")
    out = invoke(runner, "--reference", "paper", "-b", "resnet50", "-d", "cifar100",
                 "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    measured = next(r for r in rows if r["kind"] == "measured")
    assert float(measured["delta"]) == pytest.approx(76.25 - 75.12)
    ref = [r for r in rows if r["kind"] == "reference"]
    assert len(ref) == 12  # the paper's 12 rows, only for cifar100 (no average)
    assert next(r for r in ref if r["method"] == "none")["reference"] == "75.12"


def test_missing_database_is_a_one_line_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(leaderboard, ["--db", f"sqlite:///{tmp_path / 'nope.db'}"])
    assert result.exit_code == 1
    assert "no results database" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "nope.db").exists()


def test_no_matching_runs_is_an_error(runner: CliRunner, store: Store) -> None:
    result = runner.invoke(leaderboard, ["--method", "moex"])
    assert result.exit_code == 1
    assert "no finished runs" in result.output


# -- end to end -------------------------------------------------------------------------

def _image_folder(root: Path) -> Path:
    """Two colour classes of 16x16 images, split into train / test."""
    from PIL import Image

    for split, count in (("train", 10), ("test", 4)):
        for label, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                shade = tuple(max(0, c - 12 * i) for c in colour)
                Image.new("RGB", (16, 16), shade).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_leaderboard_of_real_quick_runs(runner: CliRunner, db_url: str,
                                        tmp_path: Path) -> None:
    from sgid_bench.run import execute

    store = Store(db_url)
    folder = _image_folder(tmp_path / "colours")
    datasets = {"shapes": ["shapes.train_per_class=10", "shapes.test_per_class=4"],
                f"imagefolder:{folder}": []}
    for method in ("none", "cutmix", "randaugment"):
        for dataset, params in datasets.items():
            for seed in range(3):
                spec = RunSpec(method=method, dataset=dataset, seed=seed, profile="tiny",
                               params=[*params, "train.epochs=1"])
                outcome = execute(spec, store=store, context=Context(profile="tiny"))
                assert outcome.status == "done", outcome.error
    table = only_table(build(store))
    assert len(table.measured) == 3
    assert len(table.measured_datasets) == 2
    for row in table.measured:
        for cell in row.cells.values():
            assert cell.n == 3
    tested = [c for c in table.comparisons() if c.tested]
    raw = [c.p for c in tested]
    assert [c.p_holm for c in tested] == pytest.approx(expected_holm(raw))  # type: ignore[arg-type]
    out = invoke(runner, "--details", "--figures", str(tmp_path / "figs"))
    assert "p (Holm)" in out
    assert (tmp_path / "figs" / "resnet50_cd.png").read_bytes().startswith(PNG)


def test_figures_fit_long_dataset_and_row_names(store: Store, tmp_path: Path) -> None:
    from sgid_bench.leaderboard.figures import write_figures

    folder = _image_folder(tmp_path / "a_rather_long_folder_name" / "colours_of_things")
    for method in ("none", "randaugment"):
        for seed in range(3):
            add_run(store, method, f"imagefolder:{folder}", seed, 50.0 + seed + len(method))
    add_run(store, "randaugment", "shapes", 0, 50.0, params=("magnitude=3",))
    lb = build(store)
    # filterwarnings=error: a layout that cannot fit its labels fails here.
    paths = write_figures(lb, tmp_path / "figs")
    assert len(paths) == 3
    assert "imagefolder:colours_of_things" in grid(only_table(lb)).header


# -- the table model: baselines, order, reference rows, failed and damaged runs ---------

PAPER_ORDER = ["cifar100", "cifar10", "caltech101", "stanford_cars", "flowers102",
               "oxford_pets", "dtd"]


def add_seeds(store: Store, method: str, dataset: str, values: dict[int, float],
              **kwargs: object) -> str:
    """Store ``{seed: top-1}`` runs of one config; its config hash."""
    hashes = {add_run(store, method, dataset, seed, v, **kwargs)  # type: ignore[arg-type]
              for seed, v in values.items()}
    assert len(hashes) == 1
    return hashes.pop()


def test_best_baseline_is_the_best_measured_one_and_two_seeds_qualify(db_url: str) -> None:
    store = Store(db_url)
    none = {0: 60.0, 1: 61.0, 2: 62.5}
    sgid = {0: 70.0, 1: 71.5, 2: 73.0}
    cutmix = {0: 66.0, 1: 67.0}  # best baseline mean (66.5), on exactly two seeds
    add_seeds(store, "none", "shapes", none)
    add_seeds(store, "sgid", "shapes", sgid)
    add_seeds(store, "cutmix", "shapes", cutmix)
    add_seeds(store, "randaugment", "shapes", {0: 63.0, 1: 64.0, 2: 65.5})
    add_seeds(store, "moex", "shapes", {0: 90.0})  # one lucky seed never sets the bar
    lb = build(store, alpha=0.01)
    assert lb.alpha == 0.01
    table = only_table(lb)
    cell = row_of(table, "sgid").cells["shapes"]  # type: ignore[attr-defined]
    assert cell.best_baseline == "cutmix"
    # Seeds pair only partly (3 vs 2): Welch over every seed, 99% interval (alpha = 0.01).
    welch = sps.ttest_ind(list(sgid.values()), list(cutmix.values()), equal_var=False)
    assert cell.vs_best.test == "Welch t"
    assert cell.vs_best.p == pytest.approx(welch.pvalue)
    assert cell.vs_best.ci == pytest.approx(tuple(welch.confidence_interval(0.99)))
    paired = sps.ttest_rel(list(sgid.values()), list(none.values()))
    assert cell.vs_none.test == "paired t"
    assert cell.vs_none.p == pytest.approx(paired.pvalue)
    assert cell.vs_none.ci == pytest.approx(tuple(paired.confidence_interval(0.99)))
    values = list(sgid.values())
    expected_ci = sps.t.interval(0.99, 2, loc=sum(values) / 3, scale=sps.sem(values))
    assert cell.ci(0.01) == pytest.approx(expected_ci)
    # Only SGID-family methods are tested against the best baseline.
    assert row_of(table, "cutmix").cells["shapes"].vs_best is None  # type: ignore[attr-defined]


def test_vs_none_uses_the_plain_backbone_run_sharing_the_most_seeds(db_url: str) -> None:
    # Two plain-backbone configs that only differ in the none plugin's version (not in
    # what a comparison must share): the one run on sgid's seeds is its baseline.
    store = Store(db_url)
    h = add_seeds(store, "none", "shapes", {0: 60.0, 1: 61.0, 2: 62.5})
    run = store.get(h, 0)
    assert run is not None
    config = {**run.config, "augmenters": [{**run.config["augmenters"][0], "version": "0"}]}
    for seed, value in ((10, 50.0), (11, 51.0), (12, 52.5), (13, 50.5)):
        run_id = store.claim("0" * 64, seed, method="none", backbone="resnet50",
                             dataset="shapes", profile="tiny", config=config,
                             models=run.models, tiny_models=True, versions={},
                             git_revision=None)
        assert run_id is not None
        store.finish(run_id, top1=value, top5=value, loss=1.0)
    sgid = {0: 70.0, 1: 71.5, 2: 73.0}
    add_seeds(store, "sgid", "shapes", sgid)
    table = only_table(build(store, select_by="none"))
    nones = [r for r in table.measured if r.method == "none"]
    assert len(nones) == 2
    comp = row_of(table, "sgid").cells["shapes"].vs_none  # type: ignore[attr-defined]
    assert comp.test == "paired t"
    assert comp.n == 3
    assert comp.p == pytest.approx(sps.ttest_rel([70.0, 71.5, 73.0], [60.0, 61.0, 62.5]).pvalue)
    # The plain backbone is never tested against itself.
    assert all(c.vs_none is None and c.vs_best is None for r in nones for c in r.cells.values())


def test_the_plain_backbone_is_no_test_and_a_missing_one_is_noted(db_url: str) -> None:
    from sgid_bench.leaderboard.render import render_csv

    store = Store(db_url)
    add_seeds(store, "none", "shapes", {0: 60.0, 1: 61.0})
    add_seeds(store, "cutmix", "shapes", {0: 62.0, 1: 64.0})
    add_seeds(store, "cutmix", "cifar10", {0: 80.0, 1: 81.0})  # no plain backbone here
    lb = build(store)
    table = only_table(lb)
    none = row_of(table, "none").cells["shapes"]  # type: ignore[attr-defined]
    assert none.vs_none is None
    assert none.no_baseline is False
    assert row_of(table, "cutmix").cells["cifar10"].no_baseline is True  # type: ignore[attr-defined]
    assert table.families == {("tiny", True): 1}  # cutmix vs none on shapes only
    rows = list(csv.DictReader(io.StringIO(render_csv(lb))))
    notes = {(r["method"], r["dataset"]): r["note"] for r in rows if r["kind"] == "measured"
             and r["dataset"] != "average"}
    assert notes == {("none", "shapes"): "", ("cutmix", "shapes"): "",
                     ("cutmix", "cifar10"): "no plain-backbone run"}


def test_reference_rows_carry_the_papers_numbers_in_the_papers_order(db_url: str) -> None:
    from sgid_bench.leaderboard.render import render_csv

    store = Store(db_url)
    add_seeds(store, "none", "cifar100", {0: 76.0, 1: 76.5}, profile="paper")
    lb = build(store, reference="paper", alpha=0.01)
    assert (lb.alpha, lb.reference) == (0.01, "paper")
    assert [t.backbone for t in lb.tables] == ["resnet50", "vit", "clip_vit"]
    table = lb.tables[0]
    # Dataset columns in the paper's order; the paper's own average is no dataset column.
    assert table.datasets == PAPER_ORDER
    assert table.has_average
    measured, paper = table.rows[0], table.rows[1]
    assert (measured.method, measured.kind) == ("none", "measured")
    assert (paper.method, paper.kind) == ("none", "reference")
    assert (paper.group, paper.profile, paper.tiny) == ("backbone", "paper", False)
    assert paper.cells == {}  # never mixed with measured statistics
    assert paper.reference["cifar100"].accuracy == 75.12
    assert paper.reference["average"].accuracy == 57.53
    assert measured.cells["cifar100"].delta == pytest.approx(76.25 - 75.12)
    assert [r.kind for r in table.rows].count("measured") == 1
    rows = list(csv.DictReader(io.StringIO(render_csv(lb))))
    ref = next(r for r in rows if r["backbone"] == "resnet50" and r["kind"] == "reference"
               and r["method"] == "none" and r["dataset"] == "cifar100")
    assert (ref["group"], ref["profile"], ref["tiny_models"], ref["reference"]) == (
        "backbone", "paper", "0", "75.12")


def test_the_method_filter_applies_to_reference_rows(db_url: str) -> None:
    # A method the paper does not have: no paper rows, and no empty paper columns.
    store = Store(db_url)
    add_seeds(store, "sgid+cutmix", "shapes", {0: 60.0, 1: 61.0})
    add_seeds(store, "none", "shapes", {0: 50.0, 1: 51.0})
    table = only_table(build(store, reference="paper", methods=["sgid+cutmix"]))
    assert table.datasets == ["shapes"]
    assert [(r.method, r.kind) for r in table.rows] == [("sgid+cutmix", "measured")]


def test_backbone_filter_chooses_the_tables(db_url: str) -> None:
    store = Store(db_url)
    for backbone in ("clip_vit", "vit", "resnet50"):
        add_seeds(store, "none", "shapes", {0: 50.0, 1: 51.0}, backbone=backbone)
    assert [t.backbone for t in build(store).tables] == ["resnet50", "vit", "clip_vit"]
    assert [t.backbone for t in build(store, backbones=["vit"]).tables] == ["vit"]


def test_failed_runs_are_counted_per_table_under_the_same_filters(db_url: str) -> None:
    store = Store(db_url)
    add_seeds(store, "none", "shapes", {0: 50.0, 1: 51.0})
    add_run(store, "none", "shapes", 7, 0.0, error="CUDA out of memory")
    add_run(store, "none", "shapes", 8, 0.0, profile="paper", error="killed")
    add_run(store, "none", "shapes", 9, 0.0, backbone="vit", error="killed")
    table = only_table(build(store))
    assert table.failed == 2  # resnet50's own: the vit failure is another table's
    assert table.failed_hint == "sgid-bench runs --status failed -b resnet50"
    tiny = only_table(build(store, profiles=["tiny"]))
    assert tiny.failed == 1
    assert tiny.failed_hint == "sgid-bench runs --status failed -b resnet50 --profile tiny"
    assert "1 failed run(s) hidden: sgid-bench runs --status failed -b resnet50 --profile " \
        "tiny" in grid(tiny).caption


def test_a_damaged_row_is_skipped_with_a_warning_naming_it(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import sqlite3

    store = Store(db_url)
    add_seeds(store, "none", "shapes", {0: 50.0, 1: 51.0, 2: 52.0})
    add_seeds(store, "cutmix", "shapes", {0: 55.0, 1: 57.0})
    conn = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    with conn:
        conn.execute("UPDATE runs SET per_class = '{not json' WHERE id = 2")
    conn.close()
    with caplog.at_level(logging.WARNING, logger="sgid_bench.leaderboard"):
        table = only_table(build(store))
    assert row_of(table, "none").cells["shapes"].values == {0: 50.0, 2: 52.0}  # type: ignore[attr-defined]
    assert row_of(table, "cutmix").cells["shapes"].n == 2  # type: ignore[attr-defined]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "skipped run" in r.getMessage()]
    assert len(messages) == 1
    match = re.fullmatch(r"skipped run 2: its stored data is unreadable \((.+)\); inspect or "
                         r"delete the row \(runs\.id = 2\) in the store", messages[0])
    assert match is not None, messages
    assert match.group(1).startswith("JSONDecodeError: ")


def test_tiny_model_tables_say_their_numbers_check_the_pipeline(store: Store) -> None:
    table = only_table(build(store))
    assert table.notes[-1] == ("tiny models: random-weight stand-ins of the real "
                               "architectures; their accuracies check the pipeline, not "
                               "the methods")


def test_exactly_two_configs_of_one_dataset_split_the_cell(db_url: str) -> None:
    store = Store(db_url)
    add_seeds(store, "none", "shapes", {0: 50.0, 1: 51.0})
    add_seeds(store, "sgid", "shapes", {0: 60.0, 1: 61.0}, params=("strength=0.3",))
    add_seeds(store, "sgid", "shapes", {0: 62.0, 1: 64.0}, params=("strength=0.7",))
    table = only_table(build(store, select_by="none"))
    low = row_of(table, "sgid", "strength=0.3").cells["shapes"]  # type: ignore[attr-defined]
    high = row_of(table, "sgid", "strength=0.7").cells["shapes"]  # type: ignore[attr-defined]
    assert low.split
    assert high.split
    assert f"#{low.short_hash}" in cell_text(low, 0.05).text
    assert not row_of(table, "none").cells["shapes"].split  # type: ignore[attr-defined]


def test_rows_of_a_group_follow_the_papers_method_order(db_url: str) -> None:
    store = Store(db_url)
    for method in ("moex", "cutmix", "random_erasing", "none"):
        add_seeds(store, method, "shapes", {0: 50.0, 1: 51.0})
    table = only_table(build(store))
    assert [r.method for r in table.rows] == ["none", "random_erasing", "cutmix", "moex"]


def test_fmt_and_dataset_labels_are_what_tables_print() -> None:
    from sgid_bench.leaderboard.table import dataset_label, fmt

    assert fmt(None) == "—"
    assert fmt(float("nan")) == "—"
    assert fmt(1.5) == "1.50"
    assert fmt(1.5, signed=True) == "+1.50"
    assert fmt(-0.125, 1, signed=True) == "-0.1"
    assert fmt(3.0, 3, True) == "+3.000"
    assert fmt(2, 0) == "2"
    assert dataset_label("imagefolder:/data/sets/pets") == "imagefolder:pets"
    assert dataset_label("imagefolder:C:/data/pets") == "imagefolder:pets"
    assert dataset_label("cifar10") == "cifar10"


def test_a_plugin_group_outside_the_papers_comes_after_them(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sgid_bench.plugins import registry

    store = Store(db_url)
    for method in ("cutmix", "randaugment", "none"):
        add_seeds(store, method, "shapes", {0: 50.0, 1: 51.0})
    monkeypatch.setattr(registry().get("augmenter", "cutmix"), "group", "regularisation")
    method_group.cache_clear()
    try:
        table = only_table(build(store))
    finally:
        monkeypatch.undo()
        method_group.cache_clear()
    assert [(r.group, r.method) for r in table.rows] == [
        ("backbone", "none"), ("perturbation", "randaugment"), ("regularisation", "cutmix")]
