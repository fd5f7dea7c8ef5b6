"""``generation.seed``: fixed (one generated set shared by every training seed) or per-run
(each training seed its own set, still shared across backbones)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgid_bench.cli import main
from sgid_bench.config import RunSpec, generation_seed, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError

SMALL = ["--param", "train.epochs=1", "--param", "shapes.train_per_class=3",
         "--param", "shapes.test_per_class=1"]


def generated(cache: Path) -> dict[str, float]:
    """Every generated image in the cache, with its modification time."""
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*.png")}


def run(tmp_path: Path, backbone: str, *args: str) -> str:
    result = CliRunner().invoke(main, ["run", "--method", "sgid", "--backbone", backbone,
                                       "--cache-dir", str(tmp_path / "cache"), *SMALL, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_per_run_generates_a_set_per_seed_and_shares_it_across_backbones(
        tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = run(tmp_path, "resnet50", "--seed", "0", "--seed", "1", "--param",
              "generation.seed=per-run")
    # Not a terminal: generation logs a plain line per chunk of 8 images, for each seed.
    chunks = re.findall(r"generating sgid  (\d+)/(\d+)  [\d.]+ images/s  ETA", out)
    total = int(chunks[-1][1])
    assert [int(d) for d, _ in chunks] == [*range(8, total, 8), total] * 2, out
    first = generated(cache)
    seeds = {name.rsplit("-s", 1)[1].removesuffix(".png") for name in first}
    assert seeds == {"0", "1"}
    per_seed = [sorted(n.rsplit("-s", 1)[0] for n in first if n.endswith(f"-s{s}.png"))
                for s in (0, 1)]
    assert per_seed[0] == per_seed[1]  # the same originals, one image per seed each
    # Another backbone, seed 1: the images of seed 1 are reused, nothing is generated.
    run(tmp_path, "vit", "--seed", "1", "--param", "generation.seed=per-run")
    assert generated(cache) == first


def test_fixed_shares_one_set_across_training_seeds(tmp_path: Path) -> None:
    run(tmp_path, "resnet50", "--seed", "0", "--seed", "1")
    names = generated(tmp_path / "cache")
    assert names
    assert all(n.endswith("-s0.png") for n in names)


def test_the_mode_is_in_the_config_hash_and_the_seed_follows_it() -> None:
    context = Context(profile="tiny")
    fixed = resolve(RunSpec(method="sgid"), context)
    per_run = resolve(RunSpec(method="sgid", params=["generation.seed=per-run"]), context)
    assert fixed.config["generation_seed"] == "fixed"
    assert fixed.config_hash != per_run.config_hash
    assert [generation_seed(fixed.config, s) for s in (0, 3)] == [0, 0]
    assert [generation_seed(per_run.config, s) for s in (0, 3)] == [0, 3]
    # Without an expand stage nothing is generated: the setting does not split cells.
    plain = resolve(RunSpec(method="randaugment"), context)
    same = resolve(RunSpec(method="randaugment", params=["generation.seed=per-run"]), context)
    assert plain.config_hash == same.config_hash
    with pytest.raises(UserError, match="generation.seed=fixed or generation.seed=per-run"):
        resolve(RunSpec(method="sgid", params=["generation.seed=sometimes"]), context)
