"""sgid-bench doctor: every paper model and dataset with its state, how to fetch what is
missing, and a non-zero exit when something is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from dataset_fixtures import make_cifar10, small_replicas

from sgid_bench.cli import main
from sgid_bench.doctor import PAPER_DATASETS
from sgid_bench.models import PAPER_KINDS


def doctor(tmp_path: Path, models: Path, data: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["doctor", "--profile", "paper", "--models-dir",
                                       str(models), "--data-root", str(data),
                                       "--cache-dir", str(tmp_path / "cache")],
                                env={"SGID_BENCH_HOME": str(tmp_path / "home"),
                                     "COLUMNS": "400"})
    return result.exit_code, result.output


def rows(output: str) -> dict[str, str]:
    """name -> state from the table (first line of each row)."""
    out = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 4 and cells[3] in ("found", "replica", "missing", "incomplete",
                                           "wrong", "info"):
            out[cells[2]] = cells[3]
    return out


def test_fresh_machine_lists_everything_missing_and_fails(tmp_path: Path) -> None:
    code, output = doctor(tmp_path, tmp_path / "models", tmp_path / "data")
    assert code == 1
    states = rows(output)
    for name in [*PAPER_KINDS, *PAPER_DATASETS]:
        assert states.get(name) == "missing", (name, states)
    assert f"hf download google/vit-base-patch16-224-in21k --local-dir {tmp_path}/models/" \
           "google/vit-base-patch16-224-in21k" in output
    # open_clip ids are fetched from their hub repo, into the folder the loader looks in.
    assert "hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in output
    assert "torchvision.datasets.CIFAR10(" in output


def test_replicas_incomplete_and_wrong_models(tmp_path: Path,
                                              tmp_path_factory: pytest.TempPathFactory,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from dataset_fixtures import skip_checksums

    replicas = small_replicas(tmp_path_factory)
    models = tmp_path / "models"
    shutil.copytree(replicas, models, symlinks=True)
    # An interrupted copy of Stable Diffusion, and a ViT where BLIP should be.
    (models / "stable-diffusion-v1-5/stable-diffusion-v1-5/unet/"
     "diffusion_pytorch_model.safetensors").unlink()
    blip = models / "Salesforce/blip-image-captioning-base"
    shutil.rmtree(blip)
    shutil.copytree(models / "google/vit-base-patch16-224-in21k", blip)
    skip_checksums(monkeypatch)
    make_cifar10(tmp_path / "data" / "cifar10")
    code, output = doctor(tmp_path, models, tmp_path / "data")
    states = rows(output)
    assert code == 1
    assert states["stable-diffusion-v1-5/stable-diffusion-v1-5"] == "incomplete"
    assert "unet/diffusion_pytorch_model.safetensors" in output
    assert states["Salesforce/blip-image-captioning-base"] == "wrong"
    assert states["google/vit-base-patch16-224-in21k"] == "replica"
    assert states["cifar10"] == "found"
    assert states["dtd"] == "missing"
