"""The shipped toy world: the quick profile loads it by id and digest, a damaged copy is
refused with a one-line error, and ``world build`` never overwrites what it should not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgid_bench.cli import main
from sgid_bench.config import RunSpec, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.models import resolve as resolve_model
from sgid_bench.world import shipped_dir
from sgid_bench.world.build import COMPONENTS, file_hashes, read_manifest, world_id

SHIPPED = read_manifest(shipped_dir())["components"]
#: Components a quick run loads (the judge only measures).
RUN_COMPONENTS = [c for c in COMPONENTS if c != "judge"]


@pytest.fixture
def quick(tmp_path: Path) -> Context:
    return Context(profile="quick", cache_dir=tmp_path / "cache")


def test_every_component_is_shipped_and_matches_its_manifest() -> None:
    assert set(SHIPPED) == set(COMPONENTS)
    for name, entry in SHIPPED.items():
        assert file_hashes(shipped_dir() / name) == entry["files"], name
    total = sum(p.stat().st_size for p in shipped_dir().rglob("*") if p.is_file())
    assert total < 60 * 2**20  # a few tens of MB at most


@pytest.mark.parametrize(("method", "backbone", "roles"), [
    ("sgid", "vit", {"sgid.generator": "stable-diffusion", "sgid.captioner": "blip",
                     "sgid.clip": "clip", "vit.backbone": "vit"}),
    ("text2img", "clip_vit", {"text2img.generator": "stable-diffusion", "text2img.text": "text",
                              "clip_vit.backbone": "clip"}),
    ("sgid_instructpix2pix", "resnet50", {"sgid_instructpix2pix.pix2pix": "instruct-pix2pix"}),
])
def test_quick_profile_runs_on_the_world_models(method: str, backbone: str,
                                                 roles: dict[str, str], quick: Context) -> None:
    models = resolve(RunSpec(method=method, backbone=backbone, profile="quick"),
                     quick).config["models"]
    for role, component in roles.items():
        assert models[role] == f"world/{component}@{SHIPPED[component]['digest'][:12]}"
    assert RunSpec(profile="quick").dataset == "world"


def damaged_world(tmp_path: Path, name: str) -> Context:
    world = tmp_path / "world"
    shutil.copytree(shipped_dir() / name, world / name)
    (world / "manifest.json").write_text(json.dumps({"components": {name: SHIPPED[name]}}))
    return Context(profile="quick", world_dir=world)


def test_a_corrupted_weight_file_is_refused_with_the_rebuild_command(tmp_path: Path) -> None:
    context = damaged_world(tmp_path, "text")
    mid = world_id("text", context)
    assert resolve_model(mid, context) == context.world_dir / "text"  # intact: loads
    weights = context.world_dir / "text" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"corrupted or partial \(model.safetensors does not "
                       r"match its hash\).*world build --only text"):
        resolve_model(mid, context)


def test_a_partial_component_names_the_missing_file(tmp_path: Path) -> None:
    context = damaged_world(tmp_path, "text")
    (context.world_dir / "text" / "config.json").unlink()  # type: ignore[operator]
    with pytest.raises(UserError, match="missing config.json"):
        resolve_model(world_id("text", context), context)


def test_results_of_another_world_build_are_not_silently_loaded(tmp_path: Path) -> None:
    context = damaged_world(tmp_path, "text")
    with pytest.raises(UserError, match="holds another build of text"):
        resolve_model("world/text@000000000000", context)


def test_a_missing_world_says_how_to_build_it(tmp_path: Path) -> None:
    context = Context(profile="quick", world_dir=tmp_path / "nothing")
    with pytest.raises(UserError, match="world build --only clip"):
        world_id("clip", context)


def test_world_build_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["world", "build", "--out", str(out), "--only", "judge",
                                       "--scale", "0.001"])
    assert result.exit_code == 1
    assert "not empty" in result.output
    assert "Traceback" not in result.output
    assert (out / "notes.txt").read_text() == "mine"


def test_world_build_adds_a_component_and_refuses_to_rebuild_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["world", "build", "--out", str(out), "--only", "judge", "--scale", "0.002"]
    assert runner.invoke(main, args).exit_code == 0
    manifest = read_manifest(out)["components"]
    assert set(manifest) == {"judge"}
    assert file_hashes(out / "judge") == manifest["judge"]["files"]
    assert "judge" in (out / "REPORT.md").read_text()
    again = runner.invoke(main, args)
    assert again.exit_code == 1
    assert "already holds judge" in again.output
    # pix2pix is fine-tuned from Stable Diffusion: asking for it alone says what is missing.
    lone = runner.invoke(main, ["world", "build", "--out", str(out), "--only",
                                "instruct-pix2pix"])
    assert lone.exit_code == 1
    assert "needs stable-diffusion" in lone.output
