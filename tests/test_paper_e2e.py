"""The paper profile end to end without a model hub: small replicas of every paper model
(sgid-bench models replicate), the paper's datasets as on-disk fixtures in their official
formats, and `sgid-bench run --profile paper` with reductions passed as ordinary params.
The stored row names the paper's models, pinned to the replicas' content hashes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from dataset_fixtures import make_cifar10, skip_checksums, small_replicas

from sgid_bench.cli import main
from sgid_bench.context import Context
from sgid_bench.models import PAPER_KINDS, base_id, content_hash, is_replica
from sgid_bench.store import Store

#: Reductions: 2 denoising steps at 64 px, 2 captions per mode, 1 epoch.
GEN = ["steps=2", "resolution=64"]
SGID_LIKE = [*GEN, "num_captions=2"]
CASES = [("sgid", "resnet50", SGID_LIKE), ("text2img", "resnet50", GEN),
         ("sgid_diversecaption", "resnet50", [*SGID_LIKE, "pool_per_class=2"]),
         ("sgid_instructpix2pix", "resnet50", GEN),
         ("none", "vit", []), ("none", "clip_vit", [])]


@pytest.fixture
def paper_env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
              monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    skip_checksums(monkeypatch)
    data = tmp_path / "data"
    make_cifar10(data / "cifar10", per_batch=2, n_test=4)
    return {"models": small_replicas(tmp_path_factory), "data": data, "home": tmp_path / "home",
            "db": tmp_path / "runs.db"}


def paper_run(env: dict[str, Path], method: str, backbone: str, params: list[str],
              models: Path | None = None) -> object:
    args = ["run", "--method", method, "--backbone", backbone, "--dataset", "cifar10",
            "--profile", "paper", "--models-dir", str(models or env["models"]),
            "--data-root", str(env["data"]), "--db", f"sqlite:///{env['db']}", "-q",
            "--device", "cpu", "--output-dir", str(env["home"] / "results"),
            "--param", "train.epochs=1", "--param", "train.batch_size=8"]
    for p in params:
        args += ["--param", p]
    return CliRunner().invoke(main, args, env={"SGID_BENCH_HOME": str(env["home"])})


@pytest.mark.parametrize(("method", "backbone", "params"), CASES,
                         ids=[f"{m}-{b}" for m, b, _ in CASES])
def test_paper_run_on_replicas(paper_env: dict[str, Path], method: str, backbone: str,
                               params: list[str]) -> None:
    result = paper_run(paper_env, method, backbone, params)
    assert result.exit_code == 0, result.output
    store = Store(f"sqlite:///{paper_env['db']}")
    [row] = store.runs(status=None)
    assert (row.status, row.profile, row.method) == ("done", "paper", method)
    ctx = Context(profile="paper", home=paper_env["home"], models_dir=paper_env["models"])
    assert row.models, "a paper run uses models"
    for role, mid in row.models.items():
        if mid.startswith("torchvision/"):  # ResNet-50 is trained from scratch: no weights
            continue
        paper_id = base_id(mid)
        assert paper_id in PAPER_KINDS, (role, mid)
        assert is_replica(mid), mid
        digest = content_hash(paper_env["models"] / paper_id, PAPER_KINDS[paper_id], ctx)
        assert mid == f"{paper_id}+replica@{digest[:16]}"
    assert row.tiny_models  # random weights: never ranked with real-weight runs
    store.close()


def test_incomplete_and_wrong_models_are_one_line_errors(paper_env: dict[str, Path],
                                                         tmp_path: Path) -> None:
    models = tmp_path / "models"
    vit = "google/vit-base-patch16-224-in21k"
    shutil.copytree(paper_env["models"] / vit, models / vit)
    (models / vit / "model.safetensors").unlink()  # an interrupted copy
    result = paper_run(paper_env, "none", "vit", [], models=models)
    assert result.exit_code == 1
    assert "vit backbone" in result.output
    assert "incomplete" in result.output
    assert "model.safetensors" in result.output
    assert "Traceback" not in result.output
    # A CLIP where the ViT belongs.
    shutil.rmtree(models / vit)
    shutil.copytree(paper_env["models"] / "ViT-B-32/openai", models / vit)
    result = paper_run(paper_env, "none", "vit", [], models=models)
    assert result.exit_code == 1
    assert f"vit backbone: {models / vit} is not a ViT" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_gpu_check_runs_on_cpu(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
                               ) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    report = gpu_check.main(["--size", "small", "--device", "cpu", "--models-dir",
                             str(small_replicas(tmp_path_factory)), "--work-dir",
                             str(tmp_path)])
    whats = [r["what"] for r in report["rows"]]
    assert whats == ["generation batch 1 (s/image)", "generation batch 2 (s/image)",
                     "resnet50 training (images/s)", "vit training (images/s)"]
    assert all(r["harness"] > 0 and r["bare"] > 0 for r in report["rows"])
    assert report["end_to_end"]["status"] == "done"
    assert report["end_to_end"]["profile"] == "paper"
