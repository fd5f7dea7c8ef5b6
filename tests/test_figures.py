"""Figures fit for a paper (issue 14, item 7) and the recorded guidance (issue 11, item 3),
checked through the matplotlib objects that draw them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.colors import to_rgba
from matplotlib.container import ErrorbarContainer
from PIL import Image
from test_leaderboard import add_data, add_run

from sgid_bench.leaderboard.figures import (
    accuracy_figure,
    cd_figure,
    figure_notes,
    figure_pngs,
    gain_figure,
    text_colour,
)
from sgid_bench.leaderboard.table import Table, build
from sgid_bench.store import Store


def only_table(store: Store) -> Table:
    lb = build(store)
    assert len(lb.tables) == 1
    return lb.tables[0]


def whisker_segments(fig: object) -> list[np.ndarray]:
    ax = fig.axes[0]  # type: ignore[attr-defined]
    return [seg for c in ax.containers if isinstance(c, ErrorbarContainer)
            for col in c.lines[2] for seg in col.get_segments()]


def test_whiskers_stay_within_0_and_100_and_a_single_seed_has_none(db_url: str) -> None:
    s = Store(db_url)
    for seed, (high, low) in enumerate([(99.0, 0.0), (100.0, 3.0), (96.0, 0.5)]):
        add_run(s, "none", "shapes", seed, high)   # t interval reaches above 100
        add_run(s, "cutmix", "shapes", seed, low)  # and below 0
    add_run(s, "mixup", "shapes", 0, 50.0)         # one seed: no interval at all
    table = only_table(s)
    ci = next(r for r in table.measured if r.method == "none").cells["shapes"].ci(0.05)
    assert ci is not None
    assert ci[1] > 100
    fig = accuracy_figure(table)
    segments = whisker_segments(fig)
    assert len(segments) == 2  # none and cutmix; nothing for mixup
    ys = np.concatenate([seg[:, 1] for seg in segments])
    assert ys.min() == pytest.approx(0.0)
    assert ys.max() == pytest.approx(100.0)
    assert ((ys >= 0.0) & (ys <= 100.0)).all()
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert len(hatched) == 1
    assert hatched[0].get_height() == pytest.approx(50.0)
    assert "single seed" in fig.axes[0].get_title()


@pytest.fixture
def store(db_url: str) -> Store:
    return add_data(Store(db_url))


def luminance(colour: object) -> float:
    r, g, b, _ = to_rgba(colour)  # type: ignore[arg-type]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_heat_map_text_contrasts_with_its_cell(store: Store) -> None:
    fig = gain_figure(only_table(store))
    assert fig is not None
    (ax,) = [a for a in fig.axes if a.images]
    image = ax.images[0]
    texts = {t.get_text(): t for t in ax.texts}
    # sgid's gain sets the scale (dark blue); cutmix's is about zero (near white).
    dark, light = texts["+6.07*"], texts["+0.10"]
    dark_cell = image.cmap(image.norm(6.07))
    light_cell = image.cmap(image.norm(0.10))
    assert luminance(dark_cell) < 0.3 < luminance(light_cell)
    assert to_rgba(dark.get_color()) == to_rgba("white")
    assert to_rgba(light.get_color()) == to_rgba("black")
    assert text_colour((0.0, 0.0, 0.2, 1.0)) == "white"
    assert text_colour((1.0, 1.0, 0.9, 1.0)) == "black"


def test_no_cd_diagram_from_one_dataset_but_a_note_saying_why(store: Store) -> None:
    lb = build(store, datasets=["shapes"])
    assert cd_figure(lb.tables[0]) is not None  # ranks still cover both datasets
    s = add_data(Store(f"sqlite:///{Path(store.url.removeprefix('sqlite:///')).with_name('one.db')}"),
                 ("shapes",))
    one = build(s)
    assert one.tables[0].ranking is not None
    assert one.tables[0].ranking.n_blocks == 1
    assert cd_figure(one.tables[0]) is None
    assert [name for name, _, _ in figure_pngs(one)] == ["resnet50_accuracy.png",
                                                         "resnet50_gain.png"]
    (note,) = figure_notes(one)
    assert note.startswith("resnet50: no CD diagram: ranks over 1 dataset")
    assert figure_notes(build(store)) == []


def test_the_leaderboard_command_prints_the_note(runner: CliRunner, db_url: str,
                                                  tmp_path: Path) -> None:
    from sgid_bench.leaderboard.command import leaderboard

    s = Store(db_url)
    for method in ("none", "cutmix", "sgid"):
        for seed in range(2):
            add_run(s, method, "shapes", seed, 50.0 + seed + len(method))
    result = runner.invoke(leaderboard, ["--figures", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    assert "note: resnet50: no CD diagram" in result.stderr
    assert not (tmp_path / "figs" / "resnet50_cd.png").exists()


# -- show and similarity ---------------------------------------------------------------------

def test_show_grid_has_column_headings_row_labels_and_the_models_note() -> None:
    from sgid_bench.visualize import Shown, grid_figure, models_note

    im = Image.new("RGB", (8, 8), (200, 20, 20))
    shown = [Shown(0, 0, im, im, prompt="A picture of a circle"), Shown(1, 1, im, None)]
    note = models_note({"sgid.generator": "tiny/stable-diffusion-r2"})
    assert "random-weight" in note
    fig = grid_figure(shown, ["circle", "square"], "sgid", "sgid on shapes", note)
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["original", "sgid"]
    assert [ax.get_title() for ax in axes[1]] == ["", ""]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["circle", "square"]
    assert "random-weight" in fig.get_suptitle()
    assert "dropped by an image filter" in [t.get_text() for t in axes[1, 1].texts]
    world = models_note({"sgid.generator": "world/stable-diffusion@b7c9298799b3"})
    assert "toy-world" in world
    assert models_note({"vit.backbone": "google/vit-base-patch16-224-in21k"}) == ""


def test_similarity_figure_zooms_on_the_data_with_error_bars_and_an_outside_legend() -> None:
    from sgid_bench.visualize import similarity_figure

    results = {"sgid": {0: [0.84, 0.86, 0.85], 1: [0.88, 0.87]},
               "randaugment": {0: [0.81, 0.83], 1: [0.9]}}
    fig = similarity_figure(results, ["circle", "square"])
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert 0.75 < low < 0.81
    assert 0.9 < high < 0.95
    assert ax.get_title()
    assert ax.get_ylabel() == "CLIP cosine similarity"
    # Bars with 2+ images have a whisker; randaugment's single square image has none:
    # sgid 3 (2 classes + mean), randaugment 2 (circle + mean).
    assert len(whisker_segments(fig)) == 5
    fig.canvas.draw()
    legend = ax.get_legend()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1


# -- guidance recorded per image ------------------------------------------------------------

def record_generation(store: Store, cache: Path, method: str, dataset: str,
                      infos: list[dict[str, object]], seed: int = 0) -> None:
    """A finished generation as the cache writes it: a folder with per-image metadata."""
    from sgid_bench.store import DONE, Generation, utcnow

    folder = cache / f"{method}-{dataset}-{seed}"
    folder.mkdir(parents=True)
    for i, info in enumerate(infos):
        meta = {"index": i, "seed": seed, "label": 0, "dropped": info.pop("dropped", False),
                "info": info}
        (folder / f"{i:07d}-s{seed}.json").write_text(json.dumps(meta))
    (folder / "key.json").write_text("{}")
    with store.session() as s:
        s.add(Generation(cache_key=f"{method}{dataset}{seed}", method=method, dataset=dataset,
                         seed=seed, params={}, models={}, path=str(folder),
                         images=len(infos), status=DONE, created_at=utcnow(),
                         finished_at=utcnow()))


def g_of(score: float) -> float:
    return max(1.0, -4 * score * score + 2 * score + 1)


@pytest.fixture
def recorded(db_url: str, tmp_path: Path) -> Store:
    s = Store(db_url)
    cache = tmp_path / "cache"
    world = [0.1, 0.2, 0.25, 0.4]
    record_generation(s, cache, "sgid", "world", [{"score": v, "guidance": g_of(v)}
                                                  for v in world])
    record_generation(s, cache, "sgid", "shapes",
                      [{"score": 0.9, "guidance": 1.0},
                       {"score": 0.3, "guidance": g_of(0.3)},
                       {"score": 0.5, "guidance": 1.0, "dropped": True}])
    # A fixed guidance scale (no s*) is no distribution: left out.
    record_generation(s, cache, "text2img", "world", [{"prompt": "x", "guidance": 7.5}])
    return s


def test_recorded_guidance_is_read_per_dataset(recorded: Store) -> None:
    from sgid_bench.guidance import read_recorded

    got, notes = read_recorded(recorded)
    assert notes == []
    assert [(r.dataset, r.method) for r in got] == [("shapes", "sgid"), ("world", "sgid")]
    shapes, world = got
    assert shapes.guidance == pytest.approx([1.0, g_of(0.3)])  # the dropped image is not
    assert world.scores == [0.1, 0.2, 0.25, 0.4]
    assert world.guidance == pytest.approx([g_of(v) for v in world.scores])
    only, _ = read_recorded(recorded, datasets=["world"], methods=["sgid"])
    assert [(r.dataset, r.method) for r in only] == [("world", "sgid")]


def test_guidance_figure_has_a_title_labels_and_one_box_per_dataset(recorded: Store) -> None:
    from sgid_bench.guidance import guidance_figure, read_recorded

    got, _ = read_recorded(recorded)
    fig = guidance_figure(got)
    ax_s, ax_g = fig.axes
    assert "g = -4 s*² + 2 s* + 1" in fig.get_suptitle()
    assert ax_g.get_ylabel() == "guidance scale g"
    assert ax_s.get_ylabel().startswith("s*")
    assert ax_g.get_xlabel() == "dataset"
    assert [t.get_text().split("\n")[0] for t in ax_g.get_xticklabels()] == ["shapes", "world"]
    # One box (its median line) per dataset, at the median of its recorded g.
    medians = [line for line in ax_g.lines if line.get_label() == "_nolegend_"
               and len(line.get_xdata()) == 2 and line.get_color() in ("C1", "#ff7f0e")]
    assert len(medians) == 2
    assert medians[1].get_ydata()[0] == pytest.approx(np.median([g_of(v) for v in
                                                                 (0.1, 0.2, 0.25, 0.4)]))


def test_similarity_guidance_command(runner: CliRunner, recorded: Store,
                                     tmp_path: Path) -> None:
    from sgid_bench.visualize import similarity

    out = tmp_path / "g.png"
    result = runner.invoke(similarity, ["--guidance", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "world" in result.stdout
    assert "shapes" in result.stdout
    with Image.open(out) as im:
        assert im.format == "PNG"
    none = runner.invoke(similarity, ["--guidance", "--dataset", "cifar10", "-o", str(out)])
    assert none.exit_code == 1
    assert "no generated image in the store records a guidance g" in none.output
    assert len(none.output.strip().splitlines()) == 1
    bare = runner.invoke(similarity, [])
    assert bare.exit_code == 1
    assert "give --method" in bare.output


def test_a_store_from_another_machine_is_read_from_this_cache(recorded: Store,
                                                              tmp_path: Path) -> None:
    import shutil

    from sgid_bench.guidance import read_recorded

    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "cache", moved)
    lost, notes = read_recorded(recorded)
    assert lost == []
    assert "not on this machine" in notes[0]
    found, notes = read_recorded(recorded, cache_dir=moved)
    assert len(found) == 2
    assert notes == []
