"""Train the world's InstructPix2Pix: a diffusers ``StableDiffusionInstructPix2PixPipeline``.

What is trained, on what: the world's Stable Diffusion (``world / "stable-diffusion"``, built
by :mod:`sgid_bench.world.train_diffusion`) is turned into an InstructPix2Pix model as the
paper does: its UNet gets 8 input channels (noisy target latents concatenated with the
unscaled latents of the source image), the 4 new input channels zero-initialised, and it is
fine-tuned on edit pairs of the world (:func:`scene.edit`: "make it
blue", "put it on the grass", "make it bigger"; the same geometry re-rendered with one
attribute changed) by the DDPM noise-prediction loss. The instruction and the source image
are each dropped (5% text only, 5% image only, 5% both) so both guidance scales work.
The VAE and the text encoder (the world CLIP's text tower with the pruned CLIP tokenizer)
are the Stable Diffusion ones, frozen, and saved as copies (0.7 + 0.8 MB).

Why the sizes: the same UNet as the Stable Diffusion component (the
fine-tuning starts from it); the step count fits the CPU budget.

Measured at scale=1.0 on this machine (2 shared cores): ~10 min of training plus ~1 min of
evaluation. ``scale`` multiplies the step count and the number of edit pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Steps and distinct edit pairs at scale=1.0.
STEPS = 1200
PAIRS = 8000
BATCH = 48
LR = 1e-3
#: Probability of dropping each conditioning (and both) during training.
DROPOUT = 0.05
_SEED = 4321


def expand_unet(unet: Any) -> Any:
    """An 8-input-channel copy of ``unet``: the source-image channels zero-initialised."""
    import torch
    from diffusers import UNet2DConditionModel

    config = dict(unet.config)
    config["in_channels"] = 8
    wide = UNet2DConditionModel.from_config(config)
    state = unet.state_dict()
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, torch.zeros_like(w)], dim=1)
    wide.load_state_dict(state)
    return wide


def object_colour_hits(sources: list[Any], images: list[Any], colour: str) -> np.ndarray:
    """Per image: is the object's mean colour (pixels inside the source scene's mask)
    nearest to ``colour`` among the world's colours?"""
    from sgid_bench.world import scene as sc

    names = list(sc.COLOURS)
    table = np.array([sc.COLOURS[c] for c in names], dtype=np.float32)
    hits = []
    for s, im in zip(sources, images, strict=True):
        m = sc.mask(s)[..., 0] > 0.8
        mean = np.asarray(im, dtype=np.float32)[m].mean(0)
        hits.append(names[int(np.argmin(((table - mean) ** 2).sum(1)))] == colour)
    return np.array(hits)


def evaluate(out: Path, world: Path, scale: float, log: Callable[[str], None]) -> dict[
        str, float]:
    """"make it blue" on held-out scenes: object turned blue, class kept, rest kept."""
    import torch
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from sgid_bench.world import scene as sc
    from sgid_bench.world.train_diffusion import (
        QUICK_STEPS,
        load_judge_or_train,
        set_scheduler,
    )

    judge = load_judge_or_train(world, scale, log)
    n = max(12, int(96 * min(1.0, scale * 4)))
    pool = sc.corpus_scenes(4 * n, seed=sc.CORPUS_SEED + 1000)
    held = [s for s in pool if s.colour != "blue" and s.background != "sky"][:n]
    src = [sc.render(s) for s in held]
    labels = np.array([s.label for s in held])
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        out, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    metrics: dict[str, float] = {}
    # (scheduler, steps, text guidance, image guidance); PNDM 3 steps is the harness's
    # quick profile.
    settings = [("dpm", 2 * QUICK_STEPS, 7.5, 1.5), ("euler_a", 2 * QUICK_STEPS, 7.5, 1.5),
                ("dpm", 2 * QUICK_STEPS, 3.0, 1.5), ("pndm", 3, 7.5, 1.5),
                ("dpm", QUICK_STEPS, 7.5, 1.5)]
    for sched, steps, g, ig in settings if scale >= 0.05 else settings[:1]:
        set_scheduler(pipe, sched)
        t0 = time.time()
        with torch.inference_mode():
            images = pipe(["make it blue"] * len(src), image=src, guidance_scale=g,
                          image_guidance_scale=ig, num_inference_steps=steps,
                          generator=torch.Generator().manual_seed(0)).images
        dt = time.time() - t0
        key = f"{sched}{steps}_g{g:g}_ig{ig:g}"
        metrics[f"blue_rate_{key}"] = float(object_colour_hits(held, images, "blue").mean() * 100)
        metrics[f"class_kept_{key}"] = float((judge(images) == labels).mean() * 100)
        bg_change = []
        for s, a, b in zip(held, src, images, strict=True):
            m = sc.mask(s)[..., 0] < 0.05
            diff = np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))
            bg_change.append(diff[m].mean())
        metrics[f"background_mean_abs_change_{key}"] = float(np.mean(bg_change))
        metrics[f"images_per_s_{key}"] = len(images) / dt
        log(f"eval pix2pix {key}: blue {metrics[f'blue_rate_{key}']:.1f}%, class kept "
            f"{metrics[f'class_kept_{key}']:.1f}%, background change "
            f"{metrics[f'background_mean_abs_change_{key}']:.1f}/255 "
            f"({len(images) / dt:.1f} img/s)")
    return metrics


def build(out: Path, *, world: Path, scale: float = 1.0,
          log: Callable[[str], None] = print) -> dict[str, float]:
    """Fine-tune world/"stable-diffusion" into an InstructPix2Pix saved in ``out``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    from sgid_bench.tiny_generative import sd_scheduler
    from sgid_bench.world import scene as sc
    from sgid_bench.world.train_diffusion import (
        Checkpoint,
        TextCache,
        encode_latents,
        render_all,
        train_unet,
    )

    out = Path(out)
    sd = Path(world) / "stable-diffusion"
    t_start = time.time()
    steps = max(4, int(STEPS * scale))
    n = max(128, int(PAIRS * scale))
    with torch.random.fork_rng(devices=[]):
        vae = AutoencoderKL.from_pretrained(sd / "vae").eval().requires_grad_(False)
        text_encoder = CLIPTextModel.from_pretrained(sd / "text_encoder").eval()
        text_encoder.requires_grad_(False)
        tokenizer = CLIPTokenizer.from_pretrained(sd / "tokenizer")
        unet = expand_unet(UNet2DConditionModel.from_pretrained(sd / "unet"))
        scaling = float(vae.config.scaling_factor)
        rng = np.random.default_rng(_SEED)
        sources = sc.corpus_scenes(n, seed=sc.CORPUS_SEED + 2000)
        pairs = [sc.edit(s, rng) for s in sources]
        instructions = [p[0] for p in pairs]
        src_mode, _ = encode_latents(vae, render_all(sources))
        tgt_mean, tgt_std = encode_latents(vae, render_all([p[1] for p in pairs]))
        log(f"encoded {n} edit pairs ({time.time() - t_start:.0f}s)")

        def data(step: int, g: Any, batch: int) -> tuple[Any, list[str], Any]:
            idx = torch.randint(n, (batch,), generator=g)
            r = torch.rand(batch, generator=g)
            z = tgt_mean[idx] + tgt_std[idx] * torch.randn(tgt_mean[idx].shape, generator=g)
            drop_text = r < 2 * DROPOUT
            drop_image = (r >= DROPOUT) & (r < 3 * DROPOUT)
            cond = src_mode[idx] * (~drop_image).float().view(-1, 1, 1, 1)
            prompts = ["" if d else instructions[i] for i, d in
                       zip(idx.tolist(), drop_text.tolist(), strict=True)]
            return z * scaling, prompts, cond

        torch.manual_seed(_SEED)
        ema, losses = train_unet(unet, TextCache(tokenizer, text_encoder), data, steps, out,
                                 "pix2pix", log, lr=LR, batch=BATCH)
        pipe: Any = StableDiffusionInstructPix2PixPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=ema,
            scheduler=sd_scheduler(), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(out)
        Checkpoint(out, "pix2pix").clear()
        metrics = {"loss_first": losses[0], "loss_last": losses[-1],
                   "train_seconds": time.time() - t_start}
        log(f"saved InstructPix2Pix to {out} ({metrics['train_seconds']:.0f}s)")
        metrics.update(evaluate(out, world, scale, log))
    return metrics
