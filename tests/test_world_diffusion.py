"""The world's Stable Diffusion and InstructPix2Pix trainers, at a tiny scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sgid_bench.world import scene as sc
from sgid_bench.world import train_diffusion as td
from sgid_bench.world import train_pix2pix as tp

SCALE = 0.004
# diffusers' DPM-Solver converts its torch schedule with np.array(..., copy=False) semantics.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def write_clip(directory: Path) -> None:
    """An untrained open_clip CLIP of the world's architecture, in the hub layout."""
    import json

    import open_clip
    from safetensors.torch import save_file

    from sgid_bench.world import train_clip as tc

    directory.mkdir(parents=True, exist_ok=True)
    config = tc.clip_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CLIP(**config["model_cfg"])
        # Non-trivial layer norms, so a swapped weight/bias in the conversion shows.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "ln_" in name:
                    p.add_(0.1 * torch.randn_like(p))
    (directory / tc.CONFIG_FILE).write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(directory / tc.WEIGHTS_FILE))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clipworld") / "clip"
    write_clip(path)
    return path


def world_texts() -> list[str]:
    texts = [sc.caption(s) for s in sc.corpus_scenes(40, seed=7)]
    texts += [sc.label_sentence(s) for s in sc.SHAPES]
    texts += [f"{sc.label_sentence('star')}, a small red star on a striped background",
              "make it blue", "put it on the grass", "make it bigger", "", "a photo of the"]
    return texts


def test_text_encoder_is_the_open_clip_text_tower(clip_dir: Path) -> None:
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{clip_dir}")
    model.eval()
    texts = world_texts()
    ids = open_clip.get_tokenizer(f"local-dir:{clip_dir}")(texts)
    # The full vocabulary: identical ids, identical per-token output after ln_final.
    full = td.text_encoder_from_open_clip(clip_dir)
    assert full.config.vocab_size == 49408
    assert full.config.hidden_act == "gelu"
    with torch.no_grad():
        x = model.token_embedding(ids) + model.positional_embedding
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        torch.testing.assert_close(full(ids).last_hidden_state, x, atol=1e-5, rtol=1e-5)
    hf_ids = td.load_tokenizer()(texts, padding="max_length", max_length=77,
                                 return_tensors="pt").input_ids
    # The pruned tokenizer and table: the same tokens up to end-of-text, the same features.
    _, _, keep = td.pruned_clip_bpe(td.world_words())
    assert len(keep) < 2000
    tok = td.load_tokenizer(td.world_words())
    pruned = td.text_encoder_from_open_clip(clip_dir, keep)
    p_ids = tok(texts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        h = pruned(p_ids).last_hidden_state
    for i, end in enumerate(ids.argmax(-1).tolist()):
        assert ids[i, : end + 1].tolist() == hf_ids[i, : end + 1].tolist()
        assert torch.tensor(keep)[p_ids[i, : end + 1]].tolist() == ids[i, : end + 1].tolist()
        torch.testing.assert_close(h[i, : end + 1], x[i, : end + 1], atol=1e-5, rtol=1e-5)
    # Text outside the world still tokenises (into shorter pieces).
    assert tok("a zebra!").input_ids[-1] == tok.eos_token_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory,
          clip_dir: Path) -> tuple[Path, dict, dict, list[str]]:
    root = clip_dir.parent
    lines: list[str] = []
    sd = root / "stable-diffusion"
    sd.mkdir()
    m_sd = td.build_stable_diffusion(sd, world=root, scale=SCALE, log=lines.append)
    p2p = root / "instruct-pix2pix"
    p2p.mkdir()
    m_p2p = td.build_instruct_pix2pix(p2p, world=root, scale=SCALE, log=lines.append)
    return root, m_sd, m_p2p, lines


def test_stable_diffusion_loads_and_generates(world: tuple[Path, dict, dict, list[str]]) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    root, metrics, _, _ = world
    path = root / "stable-diffusion"
    assert not (path / "_checkpoint").exists()
    assert (path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None,
                                                   requires_safety_checker=False)
    assert pipe.vae_scale_factor == 2
    assert pipe.tokenizer("a red star").input_ids[0] == pipe.tokenizer.bos_token_id
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
    # The frozen world CLIP text tower, unchanged by training.
    _, converted = td.frozen_text_encoder(root)
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(pipe.text_encoder.state_dict()[key], value, rtol=0, atol=0)
    assert pipe.vae.config.scaling_factor == pytest.approx(metrics["vae_scaling_factor"])
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["A picture of a star"] * 2, height=32, width=32, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (2, 32, 32, 3)
    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
    i2i.set_progress_bar_config(disable=True)
    src = sc.render(sc.corpus_scenes(1)[0])
    im = i2i("a red star", image=src, strength=0.5, num_inference_steps=4,
             generator=torch.Generator().manual_seed(0)).images[0]
    assert im.size == (32, 32)
    assert metrics["unet_loss_last"] < metrics["unet_loss_first"]
    for key in ("t2i_label_acc_g3_dpm10", "t2i_caption_acc_g3", "i2i_s0.5_g1.25_class_kept"):
        assert 0.0 <= metrics[key] <= 100.0


def test_pix2pix_loads_with_eight_channels(world: tuple[Path, dict, dict, list[str]]) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    root, _, metrics, lines = world
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        root / "instruct-pix2pix", safety_checker=None, requires_safety_checker=False)
    assert pipe.unet.config.in_channels == 8
    _, converted = td.frozen_text_encoder(root)
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(pipe.text_encoder.state_dict()[key], value, rtol=0, atol=0)
    pipe.set_progress_bar_config(disable=True)
    src = sc.render(sc.corpus_scenes(1)[0])
    im = pipe("make it blue", image=src, num_inference_steps=2,
              generator=torch.Generator().manual_seed(0)).images[0]
    assert im.size == (32, 32)
    assert metrics["loss_last"] < metrics["loss_first"]
    assert any(line.startswith("pix2pix step") for line in lines)


def test_expand_unet_starts_as_the_text_to_image_unet() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = td.make_unet(64).eval()
        wide = tp.expand_unet(unet).eval()
        x, src = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
        hidden = torch.randn(2, 77, 64)
    with torch.no_grad():
        a = unet(x, 10, hidden).sample
        b = wide(torch.cat([x, src], 1), 10, hidden).sample
    torch.testing.assert_close(a, b)


def test_training_is_deterministic(tmp_path: Path) -> None:
    pixels = td.render_all(sc.corpus_scenes(16))
    states = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        with torch.random.fork_rng(devices=[]):
            vae = td.train_vae(pixels, 2, tmp_path / run, lambda _: None)
        states.append(vae.state_dict())
    for key, value in states[0].items():
        torch.testing.assert_close(value, states[1][key], rtol=0, atol=0)


def test_object_colour_hits_sees_the_colour() -> None:
    s = sc.corpus_scenes(40)
    reds = [x for x in s if x.colour == "red"][:2]
    images = [sc.render(x) for x in reds]
    assert object_hits(reds, images, "red").all()
    assert not object_hits(reds, images, "blue").any()


def object_hits(scenes: list[sc.Scene], images: list, colour: str) -> np.ndarray:
    return tp.object_colour_hits(scenes, images, colour)
