"""Tiny presets of the generative models: Stable Diffusion, BLIP captioning and
InstructPix2Pix.

Each builder writes the REAL library classes with tiny configs and seeded random weights
(the way the diffusers and transformers test suites build their tiny models) with
``save_pretrained``; the augmenters then load them with ``from_pretrained`` like any
model. Tokenizers are built offline: the CLIP BPE tokenizer from open_clip's bundled
vocabulary, and BLIP's BERT tokenizer from a word list taken from that same vocabulary.
Tiny models produce noise images and random captions: they exercise the pipeline only.

Imported lazily by :func:`sgid_bench.models.ensure_tiny`, never at CLI start.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

from sgid_bench.models import tiny_builder

#: Side of the images the tiny models are built for (the quick profile's resolution).
TINY_RESOLUTION = 32
_SEED = 0
#: UNet / VAE widths: half of the diffusers test models' (32, 64), so a quick run
#: generates a few hundred 32x32 images in well under a minute on 2 CPU cores.
_CHANNELS = (16, 32)
_GROUPS = 8
#: Size of the word list of the tiny BLIP tokenizer (most frequent CLIP BPE words).
_BLIP_WORDS = 2000


def _clip_bpe() -> tuple[dict[str, int], list[str]]:
    """vocab.json / merges.txt content of the CLIP tokenizer, from open_clip's BPE file
    (the same construction as open_clip's SimpleTokenizer)."""
    import open_clip.tokenizer as oct

    lines = gzip.open(oct.default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab = list(oct.bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_clip_tokenizer(directory: Path) -> None:
    """Save a ``CLIPTokenizer`` (the real 49408-token BPE vocabulary) into ``directory``."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    tokenizer.save_pretrained(directory)


def _sd_components(unet_in_channels: int) -> dict[str, object]:
    """Tiny Stable Diffusion parts: UNet, VAE, CLIP text encoder, tokenizer, scheduler."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(_SEED)
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 2,
        in_channels=unet_in_channels,
        out_channels=4,
        block_out_channels=_CHANNELS,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=_GROUPS,
    )
    torch.manual_seed(_SEED)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=_CHANNELS,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=_GROUPS,
        sample_size=TINY_RESOLUTION,
    )
    torch.manual_seed(_SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder,
            "scheduler": sd_scheduler()}


def sd_scheduler() -> Any:
    """The scheduler configuration of Stable Diffusion v1-5 itself (PNDM)."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )


def _save_pipeline(pipeline_cls: type, directory: Path, unet_in_channels: int) -> None:
    import torch
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    # Seeded in a fork of the global RNG: building a preset leaves the caller's RNG alone.
    with torch.random.fork_rng(devices=[]):
        components = _sd_components(unet_in_channels)
    pipe = pipeline_cls(
        **components,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory)


@tiny_builder("stable-diffusion")
def build_stable_diffusion(directory: Path) -> None:
    """A tiny Stable Diffusion (v1 layout), loadable by the txt2img and img2img pipelines."""
    from diffusers import StableDiffusionPipeline

    _save_pipeline(StableDiffusionPipeline, directory, unet_in_channels=4)


@tiny_builder("instruct-pix2pix")
def build_instruct_pix2pix(directory: Path) -> None:
    """A tiny InstructPix2Pix: the same parts with an 8-channel UNet input (noisy latents
    concatenated with the encoded source image)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    _save_pipeline(StableDiffusionInstructPix2PixPipeline, directory, unet_in_channels=8)


def _blip_words() -> list[str]:
    # Whole lowercase words of the CLIP BPE vocabulary, most frequent merges first, so
    # random captions read as English words rather than word pieces.
    vocab, _ = _clip_bpe()
    words = [t[:-4] for t in vocab if t.endswith("</w>") and t[:-4].isalpha() and t[:-4].islower()]
    seen: dict[str, None] = {}
    for w in words[512:]:  # skip the single-character byte tokens
        seen.setdefault(w, None)
    return list(seen)[:_BLIP_WORDS]


@tiny_builder("blip")
def build_blip(directory: Path) -> None:
    """A tiny ``BlipForConditionalGeneration`` with its processor (BERT tokenizer with
    BLIP's ``[DEC]`` start token, BLIP image processor)."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = [*specials, *_blip_words(), "[DEC]", "[ENC]"]
    with tempfile.TemporaryDirectory() as tmp:
        # Written as vocab.txt and loaded, as BLIP's own BERT tokenizer is.
        (Path(tmp) / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizer.from_pretrained(tmp, bos_token="[DEC]")
    ids = {tok: i for i, tok in enumerate(vocab)}
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "encoder_hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "bos_token_id": ids["[DEC]"],
            "eos_token_id": ids["[SEP]"],
            "sep_token_id": ids["[SEP]"],
            "pad_token_id": ids["[PAD]"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": TINY_RESOLUTION,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = BlipForConditionalGeneration(config)
    image_processor = BlipImageProcessor(size={"height": TINY_RESOLUTION, "width": TINY_RESOLUTION})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    model.save_pretrained(directory)


@tiny_builder("t5")
def build_t5(directory: Path) -> None:
    """A tiny random ``T5ForConditionalGeneration`` with a word-level BERT tokenizer: the
    architecture and tokenizer of the toy world's language model, untrained."""
    import torch

    from sgid_bench.world.train_text import make_model, make_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = make_model()
    model.save_pretrained(directory)
    make_tokenizer().save_pretrained(directory)
