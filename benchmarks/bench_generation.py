"""Generation speed: SGID against a bare diffusers img2img call with identical inputs.

Measured side by side in one run, per image (median of ``--repeats``):
- bare: ``StableDiffusionImg2ImgPipeline`` with the same prompts (as strings), images,
  strength, steps and resolution, guidance 7.5 (classifier-free guidance on, so the UNet
  sees the same 2B batch as SGID's guided pipeline);
- SGID generator only: the guided pipeline with weighted prompt embeddings and a
  per-image guidance tensor (the cost of the pipeline changes alone);
- SGID full: ``expand`` (BLIP captions, CLIP caption filter, weighting, guidance mapping,
  img2img);
and SGID's batch 8 against 8 calls of batch 1.

``--size tiny`` uses the tiny presets; ``--size full`` builds random-weight models of the
real sizes (SD v1-5 UNet / VAE / CLIP ViT-L text encoder, BLIP base, CLIP ViT-B/32),
which needs a GPU to run at the paper's 512 px and 100 steps (on CPU, lower
``--resolution`` and ``--steps``). BLIP keeps the tiny word list as vocabulary (the BERT
vocabulary is not available offline); the decoder's other sizes are BLIP base's.

    python benchmarks/bench_generation.py --size tiny
    python benchmarks/bench_generation.py --size full --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--resolution", type=int, default=None,
                   help="generation side [tiny: 32, full: 512]")
    p.add_argument("--steps", type=int, default=None, help="denoising steps [tiny: 20, full: 100]")
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--captions", type=int, default=None, help="k captions per mode [2 / 10]")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    return p.parse_args(argv)


def timed(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time of each callable after one warm-up call each; the callables are
    measured in turn within every repeat, so a change in machine load hits all alike."""
    import torch

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def full_size_models(device: str, tmp: Path) -> dict[str, Any]:
    """Random-weight models of the paper's sizes (nothing downloaded)."""
    import diffusers
    import open_clip
    import torch
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
    )

    from sgid_bench.tiny_generative import write_clip_tokenizer
    from sgid_bench_plugins.captioning import Captioner, ClipScorer
    from sgid_bench_plugins.diffusion import guided_class

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    write_clip_tokenizer(tmp / "clip-tokenizer")
    components = {
        "unet": diffusers.UNet2DConditionModel(sample_size=64, cross_attention_dim=768),
        "vae": diffusers.AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512),
        "text_encoder": CLIPTextModel(CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12,
            num_hidden_layers=12, projection_dim=768, hidden_act="quick_gelu")),
        "tokenizer": CLIPTokenizer.from_pretrained(tmp / "clip-tokenizer"),
        "scheduler": diffusers.PNDMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False),
        "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
    }
    guided = guided_class("img2img")(**components).to(device, dtype)
    guided.set_progress_bar_config(disable=True)

    tiny_blip = BlipProcessor.from_pretrained(_tiny_path("blip"))
    tok = tiny_blip.tokenizer
    blip = BlipForConditionalGeneration(BlipConfig(text_config={
        "vocab_size": len(tok), "bos_token_id": tok.bos_token_id,
        "sep_token_id": tok.sep_token_id, "eos_token_id": tok.sep_token_id,
        "pad_token_id": tok.pad_token_id})).to(device, dtype).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tok)
    clip, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    return {
        "generator": guided,
        "captioner": Captioner.from_parts(blip, processor, device),
        "clip": ClipScorer.from_parts(clip.to(dtype), preprocess,
                                      open_clip.get_tokenizer("ViT-B-32"), device),
    }


def _tiny_path(name: str) -> Path:
    from sgid_bench.context import Context
    from sgid_bench.models import resolve

    return resolve(f"tiny/{name}", Context())


def measure(args: argparse.Namespace, device: str, tmp: Path) -> dict[str, Any]:
    """Per-image seconds of the four variants on identical inputs."""
    import diffusers
    import numpy as np
    import torch
    from PIL import Image

    from sgid_bench.context import Context
    from sgid_bench_plugins import diffusion
    from sgid_bench_plugins.sgid import SGID

    aug = SGID(resolution=args.resolution, steps=args.steps, strength=args.strength,
               num_captions=args.captions)
    aug.setup(Context(device=device, gen_batch_size=args.batch))
    if args.size == "full":
        for role, model in full_size_models(device, tmp).items():
            aug.provide(role, model)
    pipe = aug._model("generator")
    bare = diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)
    bare.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    side = args.resolution
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
              for _ in range(args.batch)]
    labels = [i % 3 for i in range(args.batch)]
    names = ["red car", "tabby cat", "oak tree"]
    gen = torch.Generator().manual_seed
    aug.expand(images, labels, names, gen(0))  # the prompts and guidance SGID builds
    texts = [i["prompt"] for i in aug.last_info]
    pieces = [aug.prompt(names[y], i["caption"]) for y, i in zip(labels, aug.last_info,
                                                                   strict=True)]
    g = [i["guidance"] for i in aug.last_info]
    n = len(images)
    seconds = timed({
        "bare": lambda: bare(prompt=texts, image=images, strength=args.strength,
                             num_inference_steps=args.steps, guidance_scale=7.5,
                             generator=gen(0)),
        "generator": lambda: diffusion.run(pipe, "img2img", pieces, g, gen(0), images=images,
                                           size=side, steps=args.steps,
                                           strength=args.strength),
        "full": lambda: aug.expand(images, labels, names, gen(0)),
        "batch1": lambda: [aug.expand(images[i:i + 1], labels[i:i + 1], names, gen(i))
                           for i in range(n)],
    }, args.repeats)
    return {name: t / n for name, t in seconds.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from sgid_bench_plugins.diffusion import quiet_libraries

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = args.size == "tiny"
    args.resolution = args.resolution or (32 if tiny else 512)
    args.steps = args.steps or (20 if tiny else 100)
    args.captions = args.captions or (2 if tiny else 10)
    with tempfile.TemporaryDirectory() as tmp:
        t = measure(args, device, Path(tmp))
    print(f"device {device} ({torch.get_num_threads()} CPU threads), size {args.size}, "
          f"{args.resolution}px, {args.steps} steps x strength {args.strength}, "
          f"{args.captions}+{min(args.captions, 3)} captions, batch {args.batch}, "
          f"median of {args.repeats}")
    print(f"{'per image':<36}{'seconds':>10}{'ratio':>8}")
    for label, key, ref in [("bare diffusers img2img", "bare", "bare"),
                            ("SGID generator (guided, weighted)", "generator", "bare"),
                            ("SGID full expand", "full", "bare"),
                            ("SGID full expand, batch 1", "batch1", "full")]:
        print(f"{label:<36}{t[key]:>10.4f}{t[key] / t[ref]:>8.2f}")
    print(f"overhead: SGID generator / bare {t['generator'] / t['bare']:.2f}x, SGID full / "
          f"bare {t['full'] / t['bare']:.2f}x; batch {args.batch} over batch 1: "
          f"{t['batch1'] / t['full']:.2f}x faster")


if __name__ == "__main__":
    main()
