"""``sgid-bench export``: originals and generated images as files, with generated.csv."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from sgid_bench.cli import main
from sgid_bench.config import RunSpec, resolve
from sgid_bench.context import Context
from sgid_bench.export import CSV_NAME, folder_names

# Shapes with 3 train images per class: 2 per class after the validation carve-out.
SMALL = ["--dataset", "shapes", "--param", "train_per_class=3", "--param", "test_per_class=1"]


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, list(args), catch_exceptions=False)


def export(runner: CliRunner, tmp_path: Path, out: Path, *args: str) -> Result:
    return invoke(runner, "export", *SMALL, "--cache-dir", str(tmp_path / "cache"), *args,
                  str(out))


def training_originals(tmp_path: Path) -> tuple[list[tuple[Image.Image, int]], list[str]]:
    """What a run trains on besides generated images, straight from data.load_splits."""
    from sgid_bench.data import load_splits

    context = Context(profile="tiny", cache_dir=tmp_path / "cache")
    resolved = resolve(RunSpec(method="none", dataset="shapes", profile="tiny",
                               params=["train_per_class=3", "test_per_class=1"]), context)
    splits = load_splits(resolved, context, None)
    return list(splits.train), splits.class_names


def pngs(folder: Path) -> Counter[str]:
    """Number of PNGs per class folder."""
    return Counter(p.parent.name for p in folder.glob("*/*.png"))


def read_csv(out: Path) -> list[dict[str, str]]:
    with open(out / CSV_NAME, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def check_rows(out: Path, rows: list[dict[str, str]], names: list[str]) -> None:
    """Every row's source exists and is of its class; kept rows' files exist, same class."""
    folders = folder_names(names)
    for row in rows:
        source = out / row["source"]
        assert source.is_file(), row
        assert row["class"] == names[int(row["label"])]
        assert source.parent.name == folders[int(row["label"])]
        assert row["dropped"] in ("true", "false")
        if row["dropped"] == "true":
            assert row["file"] == ""
        else:
            assert (out / row["file"]).is_file()
            assert Path(row["file"]).parent.name == folders[int(row["label"])]
            assert row["file"].startswith("generated/")
            assert Path(row["file"]).name == source.name  # generated n from original n


def test_export_writes_the_training_originals_and_what_sgid_made_of_them(
        runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = export(runner, tmp_path, out, "--method", "sgid")
    assert result.exit_code == 0, result.output
    originals, names = training_originals(tmp_path)
    folders = folder_names(names)
    expected = Counter(folders[y] for _, y in originals)
    assert pngs(out / "original") == expected
    assert pngs(out / "generated") == expected  # no filter: one image per original
    # The originals are the training images themselves, in split order.
    for i, (image, y) in enumerate(originals):
        written = Image.open(out / "original" / folders[y] / f"{i:05d}.png")
        assert np.array_equal(np.asarray(written), np.asarray(image.convert("RGB")))

    rows = read_csv(out)
    assert len(rows) == len(originals)
    check_rows(out, rows, names)
    for row in rows:
        assert row["prompt"]
        assert row["caption"]
        s, g = float(row["score"]), float(row["guidance"])
        # The default guidance rule (diffusers): g <= 1 is guidance off, i.e. 1.
        assert g == pytest.approx(max(-4 * s * s + 2 * s + 1, 1.0), abs=1e-9)


def test_a_second_export_reuses_the_cache_and_force_keeps_user_files(
        runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = export(runner, tmp_path, out, "--method", "text2img")
    assert first.exit_code == 0, first.output
    assert "generated now: 24, from the cache: 0" in first.stdout
    meta = sorted((tmp_path / "cache").rglob("*-s0.json"))
    assert len(meta) == 24
    stamps = [p.stat().st_mtime_ns for p in meta]
    (out / "notes.txt").write_text("mine")
    (out / "original" / "mine.png").write_bytes(b"not a png")

    refused = runner.invoke(main, ["export", *SMALL, "--method", "text2img", str(out)])
    assert refused.exit_code != 0
    assert "not empty" in refused.output
    assert "--force" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert "Traceback" not in refused.output

    again = export(runner, tmp_path, out, "--method", "text2img", "--force")
    assert again.exit_code == 0, again.output
    assert "generated now: 0, from the cache: 24" in again.stdout
    assert [p.stat().st_mtime_ns for p in meta] == stamps
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "original" / "mine.png").read_bytes() == b"not a png"
    assert len(read_csv(out)) == 24


def test_export_after_a_run_uses_the_runs_generated_images(
        runner: CliRunner, tmp_path: Path) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache")]
    run = invoke(runner, "run", "--method", "text2img", *SMALL, *cache,
                 "--param", "train.epochs=1")
    assert run.exit_code == 0, run.output
    result = export(runner, tmp_path, tmp_path / "out", "--method", "text2img",
                    "--param", "vit.mode=finetune")  # another backbone's param is ignored
    assert result.exit_code == 0, result.output
    assert "generated now: 0, from the cache: 24" in result.stdout


def test_a_chain_traces_images_to_originals_and_lists_dropped_ones(
        runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # The prompt filter keeps images at least as close to their prompt as their class mean.
    result = export(runner, tmp_path, out, "--method", "text2img+sgid",
                    "--param", "sgid.prompt_filter=true")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert len(rows) == 24
    assert len({r["source"] for r in rows}) == 24  # one per original
    check_rows(out, rows, training_originals(tmp_path)[1])
    dropped = [r for r in rows if r["dropped"] == "true"]
    assert 0 < len(dropped) < len(rows)
    assert f"({len(dropped)} dropped by a filter" in result.stdout
    assert sum(pngs(out / "generated").values()) == len(rows) - len(dropped)
    assert all(r["prompt_score"] and r["caption"] for r in rows)  # the last stage's


def test_a_method_that_generates_nothing_is_a_one_line_error(
        runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["export", "--method", "randaugment", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1
    assert "generates no images" in result.output
    for name in ("sgid", "text2img", "sgid_diversecaption", "sgid_instructpix2pix"):
        assert name in result.output
    assert not (tmp_path / "x").exists()


def test_class_folder_names_are_safe_and_distinct() -> None:
    names = folder_names(["stop sign", "a/b", "..", "CON", "Cat", "cat", "café", "x:y*z"])
    assert names[:2] == ["stop_sign", "a_b"]
    assert names[6] == "café"
    assert len({n.lower() for n in names}) == len(names)
    for n in names:
        assert n
        assert not n.startswith(".")
        assert not set("/:*") & set(n)
        assert n.split(".")[0].upper() != "CON"
