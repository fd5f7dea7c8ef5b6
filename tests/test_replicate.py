"""Replica checkpoints (sgid-bench models replicate): the published layout, seeded random
weights, the replica mark and the pinned ids that keep replicas apart from real weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from dataset_fixtures import small_replicas

from sgid_bench.cli import main
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.models import PAPER_KINDS, REPLICA_MARKER, base_id, content_hash, pin, resolve

#: The files of the published hub snapshots the harness reads (and their companions).
PIPELINE = ["model_index.json", "feature_extractor/preprocessor_config.json",
            "safety_checker/config.json", "safety_checker/model.safetensors",
            "scheduler/scheduler_config.json", "text_encoder/config.json",
            "text_encoder/model.safetensors", "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
            "tokenizer/vocab.json", "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors"]
EXPECTED = {
    "stable_diffusion": PIPELINE,
    "instruct_pix2pix": PIPELINE,
    "blip": ["config.json", "model.safetensors", "preprocessor_config.json",
             "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
             "vocab.txt"],
    "vit": ["config.json", "model.safetensors", "preprocessor_config.json"],
    "t5": ["config.json", "generation_config.json", "model.safetensors",
           "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"],
    "open_clip": ["open_clip_config.json", "open_clip_model.safetensors"],
}


@pytest.fixture
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_replicas(tmp_path_factory)


def test_every_paper_model_has_the_published_files(replicas: Path) -> None:
    from sgid_bench.replicate import paper_model_ids

    assert set(paper_model_ids()) == set(PAPER_KINDS)  # nothing the profile uses is left out
    for mid, kind in PAPER_KINDS.items():
        folder = replicas / mid
        missing = [f for f in EXPECTED[kind] if not (folder / f).is_file()]
        assert not missing, (mid, missing)
        marker = json.loads((folder / REPLICA_MARKER).read_text())
        assert marker["model_id"] == mid
        assert marker["size"] == "small"


def test_small_keeps_the_real_shapes_that_matter(replicas: Path) -> None:
    def cfg(rel: str) -> dict:
        return json.loads((replicas / rel).read_text())

    sd = cfg("stable-diffusion-v1-5/stable-diffusion-v1-5/unet/config.json")
    assert (sd["in_channels"], sd["sample_size"], len(sd["down_block_types"])) == (4, 64, 4)
    assert cfg("timbrooks/instruct-pix2pix/unet/config.json")["in_channels"] == 8
    assert "EulerAncestral" in cfg("timbrooks/instruct-pix2pix/scheduler/"
                                   "scheduler_config.json")["_class_name"]
    assert cfg("Salesforce/blip-image-captioning-base/config.json")["vision_config"][
        "image_size"] == 384
    vit = cfg("google/vit-base-patch16-224-in21k/config.json")
    assert (vit["image_size"], vit["patch_size"]) == (224, 16)
    openai = cfg("ViT-B-32/openai/open_clip_config.json")["model_cfg"]
    laion = cfg("ViT-B-32/laion2b_s34b_b79k/open_clip_config.json")["model_cfg"]
    assert openai["vision_cfg"]["patch_size"] == 32
    assert openai.get("quick_gelu") is True
    assert "quick_gelu" not in laion  # LAION trained with plain GELU
    assert cfg("google/flan-t5-base/config.json")["feed_forward_proj"] == "gated-gelu"


def test_full_configs_are_the_real_architectures() -> None:
    import open_clip

    from sgid_bench.replicate import _t5_config, open_clip_config

    cfg = open_clip_config("ViT-B-32/laion2b_s34b_b79k", small=False)["model_cfg"]
    assert cfg == open_clip.get_model_config("ViT-B-32")
    t5 = _t5_config("google/flan-t5-base", small=False)
    assert (t5.d_model, t5.num_layers, t5.num_heads, t5.d_ff) == (768, 12, 12, 2048)


def test_pinned_id_marks_the_replica_and_loads_its_folder(replicas: Path, tmp_path: Path
                                                          ) -> None:
    ctx = Context(profile="paper", home=tmp_path, models_dir=replicas)
    mid = "google/vit-base-patch16-224-in21k"
    pinned = pin(mid, ctx)
    digest = content_hash(replicas / mid, "vit", ctx)[:16]
    assert pinned == f"{mid}+replica@{digest}"
    assert base_id(pinned) == mid
    assert resolve(pinned, ctx) == replicas / mid
    # A model that is not here keeps its bare id (the run then says how to get it).
    assert pin("google/flan-t5-base", Context(profile="paper", home=tmp_path,
                                              models_dir=tmp_path / "none")) == (
        "google/flan-t5-base")


def test_content_hash_follows_the_weights(replicas: Path, tmp_path: Path) -> None:
    ctx = Context(profile="paper", home=tmp_path, models_dir=tmp_path)
    copy = tmp_path / "vit"
    shutil.copytree(replicas / "google/vit-base-patch16-224-in21k", copy)
    before = content_hash(copy, "vit", ctx)
    (copy / "preprocessor_config.json").write_text("{}")  # not a weight file
    assert content_hash(copy, "vit", ctx) == before
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert content_hash(copy, "vit", ctx) != before


def test_replicate_never_overwrites_real_weights(tmp_path: Path) -> None:
    from sgid_bench.replicate import replicate

    (tmp_path / "google/flan-t5-base").mkdir(parents=True)
    with pytest.raises(UserError, match="not a replica"):
        replicate(tmp_path, "small", ["google/flan-t5-base"])
    result = CliRunner().invoke(main, ["models", "replicate", str(tmp_path), "nobody/model"])
    assert result.exit_code == 1
    assert "no replica writer" in result.output


@pytest.mark.slow
def test_full_size_replicas(tmp_path: Path) -> None:
    """The real architectures (~13 GB written): parameter counts of the published models."""
    from safetensors import safe_open

    from sgid_bench.replicate import replicate

    replicate(tmp_path, "full")

    def params(path: Path) -> int:
        with safe_open(str(path), "pt") as f:
            return sum(f.get_slice(k).get_shape().numel() if hasattr(
                f.get_slice(k).get_shape(), "numel") else _numel(f.get_slice(k).get_shape())
                for k in f.keys())

    unet = params(tmp_path / "stable-diffusion-v1-5/stable-diffusion-v1-5/unet/"
                  "diffusion_pytorch_model.safetensors")
    assert 855e6 < unet < 865e6  # SD v1's UNet: 859.5 M
    vit = params(tmp_path / "google/vit-base-patch16-224-in21k/model.safetensors")
    assert 85e6 < vit < 87.5e6  # ViT-B/16 with pooler: 86.4 M


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def test_content_hashes_are_remembered_and_only_new_ones_written(
        replicas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sgid_bench import models

    ctx = Context(profile="paper", home=tmp_path, models_dir=tmp_path)
    copy = tmp_path / "vit"
    shutil.copytree(replicas / "google/vit-base-patch16-224-in21k", copy)
    first = content_hash(copy, "vit", ctx)
    remembered = tmp_path / "model-hashes.json"
    assert str((copy / "model.safetensors").resolve()) in remembered.read_text()
    written = remembered.stat().st_mtime_ns
    monkeypatch.setattr(models, "_MEMO", {})  # a new process: only the file remembers
    assert content_hash(copy, "vit", ctx) == first
    assert remembered.stat().st_mtime_ns == written  # nothing new: not rewritten
