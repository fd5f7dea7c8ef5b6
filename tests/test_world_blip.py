"""The world's BLIP captioner trainer (:mod:`sgid_bench.world.train_blip`) at a tiny
scale: it saves a hub-layout captioner that the harness's ``Captioner`` decodes into clean
world captions, its loss falls, its tokenizer round-trips every caption, and it is
deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sgid_bench.world import scene, train_blip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float], list[str]]:
    out = tmp_path_factory.mktemp("world") / "blip"
    out.mkdir()
    lines: list[str] = []
    metrics = train_blip.build(out, world=out.parent, scale=0.004, log=lines.append)
    return out, metrics, lines


def _losses(lines: list[str]) -> list[float]:
    return [float(line.split(" loss ")[1].split()[0]) for line in lines if " loss " in line]


def test_build_trains_and_reports_metrics(built: tuple[Path, dict[str, float], list[str]]
                                          ) -> None:
    _, metrics, lines = built
    losses = _losses(lines)
    assert len(losses) >= 2
    assert losses[-1] < losses[0]
    for key in ("caption_class_accuracy", "caption_colour_accuracy",
                "caption_background_accuracy", "caption_wellformed_pct"):
        assert 0.0 <= metrics[key] <= 100.0


def test_saved_captioner_works_through_the_harness(
        built: tuple[Path, dict[str, float], list[str]]) -> None:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from sgid_bench_plugins.captioning import Captioner

    out = built[0]
    assert (out / "model.safetensors").is_file()
    model = BlipForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
    processor = BlipProcessor.from_pretrained(out, local_files_only=True)
    captioner = Captioner.from_parts(model, processor, "cpu", min_length=5, max_length=12)
    images = [scene.render(s) for s in scene.corpus_scenes(3, seed=99)]
    sampled = captioner.nucleus(images, 2, 0.9, torch.Generator().manual_seed(0))
    beams = captioner.beam(images, 3, 3)
    words = set(scene.vocabulary())
    for pool, k in ((sampled, 2), (beams, 3)):
        assert len(pool) == 3
        assert all(len(caps) == k for caps in pool)
        for caps in pool:
            for c in caps:
                assert c
                assert set(c.split()) <= words, c  # no [DEC] / [SEP] / [PAD] left


def test_tokenizer_round_trips_every_caption() -> None:
    processor = train_blip.make_processor()
    tok = processor.tokenizer
    captions = [scene.caption(s) for s in scene.corpus_scenes(300)]
    ids = train_blip.caption_ids(captions, tok)
    assert ids.shape == (300, train_blip.MAX_TOKENS)
    assert bool((ids[:, 0] == tok.convert_tokens_to_ids("[DEC]")).all())
    assert bool(((ids == tok.sep_token_id).sum(1) == 1).all())
    assert tok.batch_decode(ids, skip_special_tokens=True) == captions
    assert train_blip.parse(captions[0]) is not None
    assert train_blip.parse("a small red") is None


def test_pixel_values_match_the_processor() -> None:
    processor = train_blip.make_processor()
    images = [scene.render(s) for s in scene.corpus_scenes(4)]
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.allclose(train_blip.pixel_values(images, processor), expected, atol=1e-5)


def test_build_is_deterministic(tmp_path: Path) -> None:
    blobs = []
    for name in ("a", "b"):
        out = tmp_path / name / "blip"
        out.mkdir(parents=True)
        train_blip.build(out, world=out.parent, scale=0.001, log=lambda _: None)
        blobs.append((out / "model.safetensors").read_bytes())
    assert blobs[0] == blobs[1]


def _fake_world_vit(world: Path) -> Path:
    """A world ``vit`` component (:mod:`sgid_bench.world.train_vit`'s architecture and
    processor) with random weights, every parameter perturbed so that no layer norm is the
    identity and every bias matters."""
    from transformers import ViTImageProcessor, ViTModel

    from sgid_bench.world import train_vit

    path = world / "vit"
    path.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        vit = ViTModel(train_vit.vit_config(), add_pooling_layer=True)
        with torch.no_grad():
            for p in vit.parameters():
                p.add_(0.1 * torch.randn_like(p))
    vit.save_pretrained(path)
    size = {"height": scene.SIZE, "width": scene.SIZE}
    ViTImageProcessor(size=size, image_mean=list(train_vit.MEAN),
                      image_std=list(train_vit.STD)).save_pretrained(path)
    return path


def test_vision_encoder_starts_as_the_world_vit(tmp_path: Path) -> None:
    from transformers import ViTImageProcessor

    path = _fake_world_vit(tmp_path)
    loaded = train_blip.load_vit(tmp_path)
    assert loaded is not None
    assert train_blip.load_vit(tmp_path / "nowhere") is None
    vit = loaded[1]
    processor = train_blip.make_processor(path)
    model = train_blip.make_model(vit).eval()
    images = [scene.render(s) for s in scene.corpus_scenes(6, seed=11)]
    vit_pixels = ViTImageProcessor.from_pretrained(path)(images=images,
                                                         return_tensors="pt")["pixel_values"]
    blip_pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.allclose(blip_pixels, vit_pixels, atol=1e-6)
    with torch.no_grad():
        ours = model.vision_model(pixel_values=blip_pixels).last_hidden_state
        theirs = vit(pixel_values=vit_pixels).last_hidden_state
    assert ours.shape == theirs.shape == (6, 65, 96)
    assert float((ours - theirs).abs().max()) < 1e-5
    assert float(theirs.abs().mean()) > 0.1  # not a trivially small output


def test_build_from_the_world_vit(tmp_path: Path) -> None:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from sgid_bench.world import train_vit

    _fake_world_vit(tmp_path)
    out = tmp_path / "blip"
    out.mkdir()
    lines: list[str] = []
    metrics = train_blip.build(out, world=tmp_path, scale=0.002, log=lines.append)
    assert any("from the ViT" in line for line in lines)
    assert 0.0 <= metrics["caption_class_accuracy"] <= 100.0
    model = BlipForConditionalGeneration.from_pretrained(out, local_files_only=True)
    vision = model.config.vision_config
    vit = train_vit.vit_config()
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads,
            vision.intermediate_size, vision.patch_size, vision.image_size) == (
        vit.hidden_size, vit.num_hidden_layers, vit.num_attention_heads,
        vit.intermediate_size, vit.patch_size, vit.image_size)
    processor = BlipProcessor.from_pretrained(out, local_files_only=True)
    assert list(processor.image_processor.image_mean) == list(train_vit.MEAN)
    assert list(processor.image_processor.image_std) == list(train_vit.STD)
