"""The toy world's supervised ViT (:mod:`sgid_bench.world.train_vit`) and the judge
(:mod:`sgid_bench.world.train_judge`) at a tiny scale."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sgid_bench.world import scene, train_judge, train_vit

SCALE = 0.0125  # 10 steps


def _losses(lines: list[str]) -> list[float]:
    return [float(m.group(1)) for line in lines if (m := re.search(r"loss ([0-9.]+)", line))]


def _build(module, out: Path) -> tuple[dict[str, float], list[str]]:
    out.mkdir()
    lines: list[str] = []
    metrics = module.build(out, world=out.parent, scale=SCALE, log=lines.append)
    return metrics, lines


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float], list[str]]:
    out = tmp_path_factory.mktemp("world") / "vit"
    return (out, *_build(train_vit, out))


def test_vit_loads_as_headless_checkpoint(vit) -> None:
    from transformers import ViTImageProcessor, ViTModel

    from sgid_bench.backbone_modules import load_vit_classifier

    out, metrics, _ = vit
    model = ViTModel.from_pretrained(out)
    assert model.pooler is not None
    classifier = load_vit_classifier(out, 5)
    processor = ViTImageProcessor.from_pretrained(out)
    images = [scene.render(s) for s in scene.corpus_scenes(2, seed=99)]
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixels, train_judge.normalise(train_judge.render_tensor(
        scene.corpus_scenes(2, seed=99)), train_vit.MEAN, train_vit.STD), atol=1e-5)
    with torch.no_grad():
        assert classifier(pixel_values=pixels).logits.shape == (2, 5)
    assert set(metrics) == {"heldout_shape_acc", "heldout_colour_acc", "heldout_size_acc",
                            "heldout_background_acc", "target_linear_probe_top1"}


def test_vit_loss_decreases(vit) -> None:
    losses = _losses(vit[2])
    assert len(losses) >= 6
    assert sum(losses[-3:]) < sum(losses[:3])


def test_vit_deterministic(vit, tmp_path: Path) -> None:
    out = vit[0]
    _build(train_vit, tmp_path / "vit")
    assert (out / "model.safetensors").read_bytes() == \
        (tmp_path / "vit" / "model.safetensors").read_bytes()


def test_judge_builds_loads_and_is_deterministic(tmp_path: Path) -> None:
    metrics, lines = _build(train_judge, tmp_path / "a")
    _build(train_judge, tmp_path / "b")
    weights = train_judge.WEIGHTS_FILE
    assert (tmp_path / "a" / weights).read_bytes() == (tmp_path / "b" / weights).read_bytes()
    losses = _losses(lines)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert 0.0 <= metrics["heldout_shape_acc"] <= 100.0
    predict = train_judge.load_judge(tmp_path / "a")
    scenes = scene.corpus_scenes(5, seed=99)
    images = [scene.render(s) for s in scenes]
    images[0] = images[0].resize((64, 64))  # other sizes are resized
    labels = predict(images)
    assert labels.shape == (5,)
    assert labels.dtype == np.int64
    assert ((0 <= labels) & (labels < len(scene.SHAPES))).all()
    assert predict([]).shape == (0,)
