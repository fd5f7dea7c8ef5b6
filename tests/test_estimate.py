"""sgid-bench sweep --dry-run --estimate: FLOPs of the real architectures, and a wall-time
estimate split into generation and training that counts only the work still to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgid_bench.cli import main
from sgid_bench.context import Context
from sgid_bench.estimate import Rates, estimate, flops

SWEEP = """
[sweep]
name = "mini-paper"
profile = "paper"
methods = ["none", "sgid"]
backbones = ["resnet50"]
datasets = ["cifar10", "dtd"]
seeds = [0]
"""


def test_flops_of_the_real_resnet50(tmp_path: Path) -> None:
    # ResNet-50 at 224 px: 4.1 GMACs, i.e. 8.2 GFLOPs forward (torchvision's own figure).
    assert flops("resnet50@224", tmp_path) == pytest.approx(8.18e9, rel=0.01)
    cached = json.loads((tmp_path / "estimate-flops.json").read_text())
    assert cached["resnet50@224"] == pytest.approx(8.18e9, rel=0.01)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    # The SD UNet and VAE FLOPs take ~20 s to count on a busy CPU: seeded here with the
    # counted values (1 image at 512 px), so this test exercises the plan arithmetic.
    home = tmp_path / "home"
    home.mkdir()
    (home / "estimate-flops.json").write_text(json.dumps({"unet": 8.03e11, "vae": 3.63e12}))
    return home


def plan_for(tmp_path: Path, home: Path) -> tuple[object, Context]:
    from sgid_bench.store import Store
    from sgid_bench.sweep import load_sweep, make_plan

    path = tmp_path / "mini.toml"
    path.write_text(SWEEP)
    context = Context(profile="paper", home=home, models_dir=tmp_path / "models")
    return make_plan(load_sweep(path), Store("sqlite://"), context), context


def test_estimate_counts_only_the_work_to_do(tmp_path: Path, home: Path) -> None:
    plan, context = plan_for(tmp_path, home)
    rates = Rates(train=1e12, generate=1e13, how="test rates")
    est = estimate(plan, context, rates)
    assert set(est.training_s) == {"cifar10", "dtd"}
    assert set(est.generation_s) == {"cifar10", "dtd"}
    # CIFAR-10: 50,000 images x 50 denoising steps (100 at strength 0.5) x 2 branches.
    per_image = (8.03e11 * 2 * 50 + 3.63e12) / 1e13
    assert est.generation_s["cifar10"] == pytest.approx(50000 * per_image)
    for gen in plan.generations.values():  # noqa: SIM118 - GenJob values
        gen.cached = True
    assert sum(estimate(plan, context, rates).generation_s.values()) == 0
    plan.jobs.clear()
    assert estimate(plan, context, rates).total_s == 0


def test_cli_prints_generation_and_training(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "mini.toml"
    path.write_text(SWEEP)
    result = CliRunner().invoke(main, ["sweep", str(path), "--dry-run", "--estimate",
                                       "--device", "cpu", "--db",
                                       f"sqlite:///{tmp_path / 'none.db'}"],
                                env={"SGID_BENCH_HOME": str(home), "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "estimate: generation" in result.output
    assert "training" in result.output
    assert "scaled to the real architectures by FLOPs" in result.output
    for dataset in ("cifar10", "dtd"):
        assert dataset in result.output
    result = CliRunner().invoke(main, ["sweep", str(path), "--estimate"])
    assert result.exit_code != 0
    assert "--dry-run" in result.output
