"""The toy world's CLIP trainer (:mod:`sgid_bench.world.train_clip`) at a tiny scale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sgid_bench.world import scene, train_clip
from sgid_bench.world.train_judge import normalise, render_tensor

SCALE = 0.005  # 10 steps on 256 scenes


def _build(out: Path) -> tuple[dict[str, float], list[str]]:
    out.mkdir()
    lines: list[str] = []
    metrics = train_clip.build(out, world=out.parent, scale=SCALE, log=lines.append)
    return metrics, lines


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float], list[str]]:
    out = tmp_path_factory.mktemp("world") / "clip"
    metrics, lines = _build(out)
    return out, metrics, lines


def _losses(lines: list[str]) -> list[float]:
    return [float(m.group(1)) for line in lines if (m := re.search(r"loss ([0-9.]+)", line))]


def test_saved_in_hub_layout_and_loads_with_open_clip(built) -> None:
    import open_clip

    out, metrics, _ = built
    assert sorted(p.name for p in out.iterdir()) == [train_clip.CONFIG_FILE,
                                                      train_clip.WEIGHTS_FILE]
    spec = f"local-dir:{out}"
    model, _, preprocess = open_clip.create_model_and_transforms(spec)
    tokenizer = open_clip.get_tokenizer(spec)
    scenes = scene.corpus_scenes(3, seed=99)
    pixels = torch.stack([preprocess(scene.render(s)) for s in scenes])
    # The saved preprocessing is exactly the training normalisation (no resampling at 32 px).
    cfg = train_clip.clip_config()["preprocess_cfg"]
    assert torch.allclose(pixels, normalise(render_tensor(scenes), cfg["mean"], cfg["std"]),
                          atol=1e-5)
    with torch.no_grad():
        image = model.encode_image(pixels)
        text = model.encode_text(tokenizer([scene.caption(s) for s in scenes]))
    assert image.shape == text.shape == (3, 64)
    for name in ("zero_shot_top1", "heldout_zero_shot_top1", "caption_retrieval_top1"):
        assert 0.0 <= metrics[name] <= 100.0


def test_short_text_encoding_is_exact(built) -> None:
    import open_clip

    out, _, _ = built
    spec = f"local-dir:{out}"
    model = open_clip.create_model_and_transforms(spec)[0].eval()
    tokens = open_clip.get_tokenizer(spec)(train_clip.all_captions()[:5] + ["A picture of a ring"])
    length = int(tokens.argmax(dim=-1).max()) + 1
    with torch.no_grad():
        full = model.encode_text(tokens)
        short = train_clip.encode_text_short(model, tokens[:, :length])
    assert length < 20
    assert torch.allclose(full, short, atol=1e-5)


def test_loss_decreases(built) -> None:
    losses = _losses(built[2])
    assert len(losses) >= 6
    assert sum(losses[-3:]) < sum(losses[:3])


def test_deterministic(built, tmp_path: Path) -> None:
    out, metrics, _ = built
    again, _ = _build(tmp_path / "clip")
    for name in (train_clip.CONFIG_FILE, train_clip.WEIGHTS_FILE):
        assert (out / name).read_bytes() == (tmp_path / "clip" / name).read_bytes()
    assert again == metrics
