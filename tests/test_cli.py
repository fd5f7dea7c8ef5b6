"""The command line end to end on the embedded dataset with tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sgid_bench.cli import main
from sgid_bench.store import DONE, FAILED, Store

FAST = ["--param", "train.epochs=1"]


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, list(args), catch_exceptions=False)


def rows(status: str | None = None) -> list:
    return list(Store(os.environ["SGID_BENCH_DB"]).runs(status=status))


def test_list_shows_every_builtin_with_its_package(runner: CliRunner) -> None:
    result = invoke(runner, "list")
    assert result.exit_code == 0
    for name in ("none", "random_erasing", "cutmix", "moex", "randaugment", "sgid",
                 "resnet50", "vit", "clip_vit", "shapes", "mixup", "sgid-bench-mixup"):
        assert name in result.output


def test_run_stores_a_done_row_and_skips_it_next_time(runner: CliRunner) -> None:
    result = invoke(runner, "run", "--method", "randaugment", "--backbone", "resnet50", *FAST)
    assert result.exit_code == 0, result.output
    assert "randaugment / resnet50 / shapes / seed 0: top-1" in result.stdout
    (row,) = rows(DONE)
    assert row.models == {"resnet50.backbone": "tiny/resnet50"}
    assert row.tiny_models
    assert row.versions["torch"]
    assert row.config["recipe"]["epochs"] == 1
    # Top-1 over a balanced test set: a whole number of images, the mean of per-class.
    n_test = row.extra["test_images"]
    assert row.top1 * n_test / 100 == pytest.approx(round(row.top1 * n_test / 100))
    assert row.top1 == pytest.approx(sum(row.per_class.values()) / len(row.per_class), abs=1e-3)
    assert sum(1 for _ in row.per_class) == len(row.per_class) > 0
    again = invoke(runner, "run", "--method", "randaugment", *FAST)
    assert "already done" in again.stdout
    assert len(rows()) == 1
    forced = invoke(runner, "run", "--method", "randaugment", "--force", *FAST)
    assert "already done" not in forced.stdout
    assert rows(DONE)[0].top1 == row.top1  # same config + seed, same result on CPU


def test_tiny_models_are_announced(runner: CliRunner) -> None:
    result = invoke(runner, "run", "--method", "none", *FAST)
    assert "tiny, randomly initialised models (tiny/resnet50)" in result.stderr


def test_third_party_plugin_runs_alone_and_combined(runner: CliRunner) -> None:
    for method in ("mixup", "mixup+randaugment", "randaugment+mixup"):
        result = invoke(runner, "run", "--method", method, "--param", "mixup.alpha=0.4", *FAST)
        assert result.exit_code == 0, result.output
    assert {r.method for r in rows(DONE)} == {"mixup", "mixup+randaugment", "randaugment+mixup"}
    assert all(r.config["augmenters"][0]["params"] for r in rows(DONE))


def test_a_crash_is_recorded_as_failed_with_its_error(runner: CliRunner) -> None:
    # alpha <= 0 is accepted by Mixup's __init__ and only breaks inside training.
    result = runner.invoke(main, ["run", "--method", "mixup", "--param", "alpha=-1", *FAST])
    assert result.exit_code == 1
    assert "FAILED" in result.stdout
    (row,) = rows(FAILED)
    assert "ValueError" in row.error


def test_moex_runs_through_the_feature_layer(runner: CliRunner) -> None:
    result = invoke(runner, "run", "--method", "moex", "--param", "moex.p=1.0", *FAST)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "nope"], "unknown augmenter 'nope'; known augmenters: "),
    (["--backbone", "nope"], "unknown backbone 'nope'; known backbones: "),
    (["--dataset", "nope"], "unknown dataset 'nope'; known datasets: "),
    (["--param", "oops"], "malformed --param 'oops'"),
    (["--method", "cutmix", "--param", "strength=1"], "unknown parameter 'strength'"),
    (["--db", "sqlite:////nonexistent-dir/x/results.db"], "cannot open database"),
])
def test_user_errors_are_one_line_without_traceback(runner: CliRunner, args: list[str],
                                                    message: str) -> None:
    result = runner.invoke(main, ["run", *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_empty_dataset_is_a_user_error(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir(parents=True)
    result = runner.invoke(main, ["run", "--dataset", f"imagefolder:{tmp_path / 'empty'}"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_sgid_on_vit_completes_and_names_its_models(runner: CliRunner) -> None:
    result = invoke(runner, "run", "--method", "sgid", "--backbone", "vit", *FAST)
    assert result.exit_code == 0, result.output
    (row,) = rows(DONE)
    assert row.models["vit.backbone"] == "tiny/vit"
    assert any(k.startswith("sgid.") for k in row.models)
    assert row.extra["generated_images"] > 0
    assert "tiny/stable-diffusion" in result.stderr


def test_a_second_generative_run_reuses_the_cache(runner: CliRunner, tmp_path: Path) -> None:
    from sqlalchemy import select

    from sgid_bench.store import Generation

    small = ["--param", "train_per_class=3", "--param", "test_per_class=1", *FAST,
             "--cache-dir", str(tmp_path / "cache")]
    first = invoke(runner, "run", "--method", "text2img", "--seed", "0", *small)
    assert first.exit_code == 0, first.output
    images = sorted((tmp_path / "cache").rglob("*.png"))
    assert images
    stamps = [p.stat().st_mtime_ns for p in images]
    # Another training seed and backbone: same generation key, nothing generated again.
    second = invoke(runner, "run", "--method", "text2img", "--seed", "1", "--backbone", "vit",
                    *small)
    assert second.exit_code == 0, second.output
    assert sorted((tmp_path / "cache").rglob("*.png")) == images
    assert [p.stat().st_mtime_ns for p in images] == stamps
    with Store(os.environ["SGID_BENCH_DB"]).session() as s:
        (gen,) = s.scalars(select(Generation)).all()
    assert gen.status == "done"
    assert gen.images == len(images)
    assert {r.extra["generated_images"] for r in rows(DONE)} == {len(images)}
