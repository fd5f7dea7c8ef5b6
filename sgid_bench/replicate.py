"""Replica checkpoints of the paper's models: ``sgid-bench models replicate DIR``.

A replica of a model id is a folder ``DIR/<model id>`` with the file names, folder layout
and config keys of the published hub snapshot and seeded random weights, written with the
libraries' own classes (``save_pretrained`` / safetensors) like the tiny presets of
:mod:`sgid_bench.tiny_generative`. ``size="full"`` is the real architecture (timing and
memory are the real ones); ``size="small"`` keeps every file and config key with shrunk
widths and depths (tests). Each replica holds :data:`sgid_bench.models.REPLICA_MARKER`, so
loading pins its id as ``<id>+replica@<digest>``: a run on a replica is marked in the
store and never shares a leaderboard cell with runs on the published weights.

What cannot be reproduced offline, and is therefore only shaped like the original: the
tokenizers' vocabularies of BLIP (BERT) and T5 (SentencePiece: written as tokenizer.json,
no spiece.model), and the second, non-harness copies of the weights some snapshots carry
(pytorch_model.bin beside model.safetensors, single-file .ckpt, the HF CLIPModel copy of
the LAION repo, flax/tf weights). Those files are not written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sgid_bench.errors import UserError
from sgid_bench.models import PAPER_KINDS, REPLICA_MARKER, transformers_progress_off

SIZES = ("full", "small")
#: Seed of every replica's random weights (same bytes on every machine and run).
SEED = 0
#: Small-size widths: every config key is kept, only these shrink.
_SMALL_UNET = (32, 32, 64, 64)
_SMALL_VAE = (16, 16, 32, 32)
_SMALL_GROUPS = 8


def paper_model_ids() -> dict[str, list[str]]:
    """Every model id the paper profile uses -> the roles that use it (from the plugins'
    own tables, so a changed paper model is replicated without editing this module)."""
    from sgid_bench_plugins.backbones import CLIPViT, ViT
    from sgid_bench_plugins.language import PAPER_TEXT
    from sgid_bench_plugins.sgid import PAPER_MODELS

    roles: dict[str, list[str]] = {}
    for role, mid in PAPER_MODELS.items():
        roles.setdefault(mid, []).append(f"sgid.{role}")
    for task, mid in PAPER_TEXT.items():
        roles.setdefault(mid, []).append(f"language.{task}")
    roles.setdefault(ViT.paper_model, []).append("vit.backbone")
    roles.setdefault(CLIPViT.paper_model, []).append("clip_vit.backbone")
    # The LAION CLIP is also SGID's documented alternative scorer (--param clip_model=...).
    return roles


def replicate(directory: Path, size: str = "small", model_ids: Sequence[str] = (),
              force: bool = False, log: Callable[[str], None] | None = None) -> list[Path]:
    """Write replicas of ``model_ids`` (default: every paper model) under ``directory``;
    returns their folders. An existing replica of the same size and seed is kept unless
    ``force``; a folder holding real weights is never overwritten."""
    if size not in SIZES:
        raise UserError(f"unknown replica size {size!r}: use full or small")
    ids = list(model_ids) or list(paper_model_ids())
    unknown = [m for m in ids if m not in PAPER_KINDS]
    if unknown:
        raise UserError(f"no replica writer for {', '.join(unknown)}; known model ids: "
                        f"{', '.join(PAPER_KINDS)}")
    out = []
    for mid in ids:
        target = directory / mid
        out.append(target)
        if _up_to_date(target, mid, size, force):
            if log:
                log(f"{mid}: replica ({size}) already in {target}")
            continue
        if log:
            log(f"{mid}: writing a {size} replica to {target}")
        _write_atomically(target, mid, size)
    return out


def _up_to_date(target: Path, mid: str, size: str, force: bool) -> bool:
    if not target.exists():
        return False
    marker = target / REPLICA_MARKER
    if not marker.is_file():
        raise UserError(f"{target} exists and is not a replica (no {REPLICA_MARKER}): it may "
                        "hold real weights; choose another directory or remove it yourself")
    info = json.loads(marker.read_text())
    same = info.get("size") == size and info.get("seed") == SEED and info.get("model_id") == mid
    return same and not force


def _write_atomically(target: Path, mid: str, size: str) -> None:
    """Written aside, then renamed: an interrupted replicate leaves no half a replica."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with transformers_progress_off():
            WRITERS[PAPER_KINDS[mid]](tmp, mid, size == "small")
        marker = {"model_id": mid, "size": size, "seed": SEED,
                  "note": "random weights in the published layout (sgid-bench models "
                          "replicate): for tests and timing only, never for results"}
        (tmp / REPLICA_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _seeded(build: Callable[[], Any]) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build()


# -- Stable Diffusion v1-5 and InstructPix2Pix ----------------------------------------------

def _unet(small: bool, in_channels: int) -> Any:
    from diffusers import UNet2DConditionModel

    # UNet2DConditionModel's defaults are SD v1's UNet (320/640/1280/1280, 2 layers per
    # block, 8 head dim) except these two: SD v1 cross-attends to CLIP ViT-L/14 text states
    # (768) on 64x64 latents (512 px).
    kwargs: dict[str, Any] = {"sample_size": 64, "in_channels": in_channels,
                              "cross_attention_dim": 768}
    if small:
        kwargs.update(block_out_channels=_SMALL_UNET, layers_per_block=1,
                      norm_num_groups=_SMALL_GROUPS, cross_attention_dim=32)
    return _seeded(lambda: UNet2DConditionModel(**kwargs))


def _vae(small: bool) -> Any:
    from diffusers import AutoencoderKL

    # SD v1's autoencoder (f=8, 4 latent channels). sample_size is not knowable offline
    # (512 is the v1-5 value as we know it; the pipelines do not read it).
    kwargs: dict[str, Any] = {
        "block_out_channels": _SMALL_VAE if small else (128, 256, 512, 512),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 1 if small else 2, "latent_channels": 4, "sample_size": 512,
        "norm_num_groups": _SMALL_GROUPS if small else 32,
    }
    return _seeded(lambda: AutoencoderKL(**kwargs))


def _clip_text(small: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    # SD v1's text encoder is OpenAI CLIP ViT-L/14's text tower (CLIPTextConfig's defaults
    # are ViT-B/32's). Its published config keeps OpenAI's token ids 0/2/1 for bos/eos/pad.
    config = CLIPTextConfig(hidden_size=32 if small else 768,
                            intermediate_size=37 if small else 3072,
                            num_attention_heads=4 if small else 12,
                            num_hidden_layers=2 if small else 12,
                            projection_dim=32 if small else 768, hidden_act="quick_gelu",
                            bos_token_id=0, eos_token_id=2, pad_token_id=1)
    return _seeded(lambda: CLIPTextModel(config))


def _safety_checker(small: bool) -> Any:
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPConfig

    # CompVis's checker: a CLIP ViT-L/14 image tower. The harness never loads it
    # (safety_checker=None), but the published snapshot has it, so the replica does too.
    vision = ({"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
               "num_hidden_layers": 2, "patch_size": 14} if small else
              {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
               "num_hidden_layers": 24, "patch_size": 14})
    text = ({"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
             "num_hidden_layers": 2} if small else {"hidden_size": 768,
                                                    "intermediate_size": 3072,
                                                    "num_attention_heads": 12})
    config = CLIPConfig(text_config=text, vision_config=vision,
                        projection_dim=32 if small else 768)
    return _seeded(lambda: StableDiffusionSafetyChecker(config))


def _write_pipeline(directory: Path, small: bool, pix2pix: bool) -> None:
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
    )
    from transformers import CLIPImageProcessor, CLIPTokenizer

    from sgid_bench.tiny_generative import sd_scheduler, write_clip_tokenizer
    from sgid_bench_plugins.diffusion import diffusers_deprecations_off

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp))  # the real 49408-token CLIP BPE vocabulary
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    scheduler = sd_scheduler()
    if pix2pix:
        # timbrooks/instruct-pix2pix ships the Euler ancestral scheduler on SD's betas.
        with diffusers_deprecations_off():
            scheduler = EulerAncestralDiscreteScheduler.from_config(scheduler.config)
    cls: Any = StableDiffusionInstructPix2PixPipeline if pix2pix else StableDiffusionPipeline
    pipe = cls(vae=_vae(small), text_encoder=_clip_text(small), tokenizer=tokenizer,
               unet=_unet(small, 8 if pix2pix else 4), scheduler=scheduler,
               safety_checker=_safety_checker(small),
               feature_extractor=CLIPImageProcessor(),  # defaults = the 224 px CLIP one
               requires_safety_checker=True)
    pipe.save_pretrained(directory)
    _clip_tokenizer_files(directory / "tokenizer", tokenizer)


def _special_tokens_map(directory: Path, tokenizer: Any) -> None:
    """``special_tokens_map.json`` as the hub snapshots have it (transformers 5 keeps the
    special tokens in tokenizer_config.json only)."""
    tokens = {k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    (directory / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2) + "\n")


def _clip_tokenizer_files(directory: Path, tokenizer: Any) -> None:
    """The published SD tokenizer folder: vocab.json + merges.txt (no tokenizer.json)."""
    from sgid_bench.tiny_generative import _clip_bpe

    vocab, merges = _clip_bpe()
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    _special_tokens_map(directory, tokenizer)
    (directory / "tokenizer.json").unlink(missing_ok=True)


# -- BLIP captioning -----------------------------------------------------------------------

def _word_list(count: int) -> list[str]:
    """``count`` distinct lowercase words from CLIP's BPE vocabulary (offline), then
    numbered fillers: the stand-in for vocabularies that cannot be had offline."""
    from sgid_bench.tiny_generative import _clip_bpe

    vocab, _ = _clip_bpe()
    words = dict.fromkeys(t[:-4] for t in vocab
                          if t.endswith("</w>") and t[:-4].isalpha() and t[:-4].islower())
    out = list(words)[:count]
    return out + [f"word{i}" for i in range(count - len(out))]


def _write_blip(directory: Path, small: bool) -> None:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        )

    # BERT-base-uncased's vocabulary layout: [PAD] 0, [unused*] 1-99, [UNK] 100, [CLS] 101,
    # [SEP] 102, [MASK] 103, words up to 30522, then BLIP's [DEC] (bos, 30522) and [ENC].
    # The words themselves are not knowable offline (see _word_list).
    specials = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]",
                "[MASK]"]
    vocab = specials + _word_list(30522 - len(specials))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizer.from_pretrained(tmp)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    # BlipConfig's defaults are blip-image-captioning-base (ViT-B/16 at 384 px, BERT-base
    # text decoder, vocab 30524).
    config = BlipConfig()
    if small:
        config = BlipConfig(
            text_config={"hidden_size": 32, "encoder_hidden_size": 32, "intermediate_size": 37,
                         "num_hidden_layers": 2, "num_attention_heads": 4},
            vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                           "num_attention_heads": 4},
            projection_dim=32, image_text_hidden_size=32)
    model = _seeded(lambda: BlipForConditionalGeneration(config))
    model.save_pretrained(directory)
    # The published files: the image processor's preprocessor_config.json and the BERT
    # tokenizer's files (vocab.txt included), no processor_config.json.
    BlipImageProcessor().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    _special_tokens_map(directory, tokenizer)


# -- ViT-B/16 (ImageNet-21k) ---------------------------------------------------------------

def _write_vit(directory: Path, small: bool) -> None:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel
    from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD

    # ViTConfig's defaults are ViT-B/16 at 224 px; the in21k checkpoint is a headless
    # ViTModel with its pooler.
    config = ViTConfig()
    if small:
        config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64)
    model = _seeded(lambda: ViTModel(config, add_pooling_layer=True))
    model.save_pretrained(directory)
    ViTImageProcessor(image_mean=IMAGENET_STANDARD_MEAN,
                      image_std=IMAGENET_STANDARD_STD).save_pretrained(directory)


# -- OpenCLIP ViT-B/32 ---------------------------------------------------------------------

def open_clip_config(model_id: str, small: bool) -> dict[str, Any]:
    """The hub's ``open_clip_config.json`` of ``model_id`` (open_clip's own model config
    and the tag's preprocessing); small: the same keys with shrunk towers."""
    import open_clip

    from sgid_bench.openclip import split_id

    name, tag = split_id(model_id)
    model_cfg = open_clip.get_model_config(name)
    pre = open_clip.get_pretrained_cfg(name, tag)
    if pre.get("quick_gelu"):  # OpenAI's weights were trained with QuickGELU
        model_cfg["quick_gelu"] = True
    if small:
        model_cfg["embed_dim"] = 32
        model_cfg["vision_cfg"].update(layers=2, width=32, head_width=16)
        model_cfg["text_cfg"].update(width=32, heads=2, layers=2)
    preprocess = {"mean": list(pre["mean"]), "std": list(pre["std"]),
                  "interpolation": pre.get("interpolation", "bicubic"),
                  "resize_mode": pre.get("resize_mode", "shortest")}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}


def _write_open_clip(directory: Path, model_id: str, small: bool) -> None:
    import open_clip
    from safetensors.torch import save_file

    config = open_clip_config(model_id, small)
    model = _seeded(lambda: open_clip.CLIP(**config["model_cfg"]))
    (directory / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))


# -- T5 (FLAN-T5-base, T5-base fine-tuned on CommonGen) ------------------------------------

def _t5_config(model_id: str, small: bool) -> Any:
    from transformers import T5Config

    if model_id == "google/flan-t5-base":
        # T5 v1.1 (FLAN): gated GELU, untied embeddings, d_ff 2048.
        arch: dict[str, Any] = {"feed_forward_proj": "gated-gelu", "d_ff": 2048,
                                "tie_word_embeddings": False}
    else:
        # Original T5-base: ReLU, d_ff 3072, tied embeddings.
        arch = {"feed_forward_proj": "relu", "d_ff": 3072, "tie_word_embeddings": True}
    sizes = ({"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2,
              "num_heads": 4} if small else {"d_model": 768, "d_kv": 64, "num_layers": 12,
                                             "num_decoder_layers": 12, "num_heads": 12})
    ids: dict[str, Any] = {"decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1}
    return T5Config(**{**arch, **sizes, **ids}, vocab_size=32128)


def _write_t5(directory: Path, model_id: str, small: bool) -> None:
    from transformers import T5ForConditionalGeneration, T5Tokenizer

    # T5's SentencePiece unigram layout: <pad> 0, </s> 1, <unk> 2, 31997 pieces, then 100
    # <extra_id_*>. The real pieces and scores are not knowable offline (see _word_list);
    # with no sentencepiece here the tokenizer is saved as tokenizer.json (no spiece.model).
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"\u2581{w}", -float(i + 1)) for i, w in enumerate(_word_list(32000 - 3))]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=100)
    model = _seeded(lambda: T5ForConditionalGeneration(_t5_config(model_id, small)))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _special_tokens_map(directory, tokenizer)


WRITERS: dict[str, Callable[[Path, str, bool], None]] = {
    "stable_diffusion": lambda d, m, s: _write_pipeline(d, s, pix2pix=False),
    "instruct_pix2pix": lambda d, m, s: _write_pipeline(d, s, pix2pix=True),
    "blip": lambda d, m, s: _write_blip(d, s),
    "vit": lambda d, m, s: _write_vit(d, s),
    "open_clip": _write_open_clip,
    "t5": _write_t5,
}


# -- command line: sgid-bench models replicate ---------------------------------------------

def _click() -> Any:
    import click

    @click.group("models")
    def models() -> None:
        """Local copies of the paper profile's models."""

    @models.command("replicate")
    @click.argument("directory", type=click.Path(file_okay=False))
    @click.argument("model_ids", nargs=-1)
    @click.option("--size", type=click.Choice(SIZES), default="small", show_default=True,
                  help="full: the real architectures (timing, memory); small: same files "
                  "and config keys, shrunk widths (tests).")
    @click.option("--force", is_flag=True, help="Write existing replicas again.")
    def replicate_command(directory: str, model_ids: tuple[str, ...], size: str,
                          force: bool) -> None:
        """Write random-weight replicas of the paper's models (default: all of them) to
        DIRECTORY/<model id>, in the published layout; use with --models-dir DIRECTORY.

        Runs on replicas are marked in the store (<id>+replica@<digest>) and never share a
        leaderboard cell with runs on the published weights: for tests and timing only."""
        try:
            folders = replicate(Path(directory), size, model_ids, force,
                                log=lambda m: click.echo(m, err=True))
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
        for folder in folders:
            click.echo(str(folder))

    return models


models = _click()
