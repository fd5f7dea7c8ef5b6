"""The GPU check: the paper profile's speed and memory on one GPU, against bare baselines,
in one process and at most ~8 minutes (full-size replicas on a GPU).

Printed side by side:

1. generation: SGID's per-image time (``expand``: BLIP captions, CLIP filter, weighted
   prompt, guidance mapping, img2img) against a bare diffusers
   ``StableDiffusionImg2ImgPipeline`` call on the same images, steps, strength and size
   (fp16 and SDPA on CUDA), at batch 1 and batch 8;
2. training: ResNet-50 and ViT-B/16 images/s through the harness (``sgid-bench run`` with
   method none, data loading included) against a plain PyTorch loop on random tensors
   (bf16 autocast on CUDA, channels_last);
3. peak GPU memory of each measurement;
4. one paper-profile run end to end (sgid on the ViT) and its stored row.

Models are replicas (``sgid-bench models replicate``, random weights: speed and memory do
not depend on the values) written to ``--models-dir`` or reused from it. ``--size small``
runs the same code on a CPU with small replicas and tiny settings (the default test suite
does); ``--size full`` is the real thing (needs a GPU).

    python benchmarks/gpu_check.py --size full --models-dir /scratch/replicas
    python benchmarks/gpu_check.py --size small           # CPU, a minute or two
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Settings per size: generation (steps, side, images) and training (batch, steps).
SETTINGS = {
    "full": {"steps": 50, "resolution": 512, "strength": 0.5, "batches": (1, 8),
             "train_batch": 64, "train_steps": 20, "images_per_class": 16, "epochs": 1},
    "small": {"steps": 2, "resolution": 64, "strength": 0.5, "batches": (1, 2),
              "train_batch": 4, "train_steps": 2, "images_per_class": 3, "epochs": 1},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=tuple(SETTINGS), default="full")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--models-dir", default=None,
                   help="replicas are written here or reused [default: a temporary folder]")
    p.add_argument("--work-dir", default=None, help="store, data and cache [default: temp]")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measured(device: str, fn: Callable[[], Any]) -> tuple[float, float | None, Any]:
    """(seconds, peak GPU memory in GiB or None, result) of one call after a warm-up."""
    import torch

    fn()  # warm-up: allocations, cuDNN / SDPA kernel choice
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return seconds, peak, out


def write_images(root: Path, classes: int, per_class: int, side: int = 64) -> None:
    """An imagefolder dataset of random images (the harness's own loader reads it)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        for i in range(per_class):
            path = root / f"class{c}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)


# -- generation ----------------------------------------------------------------------------

def generation(context: Any, s: dict[str, Any]) -> list[dict[str, Any]]:
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0
    from PIL import Image

    from sgid_bench.config import RunSpec, resolve
    from sgid_bench.models import resolve as resolve_model
    from sgid_bench_plugins.diffusion import dtype_kwarg, quiet_libraries

    spec = RunSpec(method="sgid", backbone="resnet50", dataset="cifar10", profile="paper",
                   params=[f"steps={s['steps']}", f"resolution={s['resolution']}",
                           f"strength={s['strength']}"])
    ctx = context.for_run("paper", "cifar10", 0)
    sgid = resolve(spec, ctx).augmenters[0]
    sgid.setup(ctx)
    path = resolve_model(sgid.models_used(ctx)["generator"], ctx)
    half = context.device.startswith("cuda")
    from diffusers import StableDiffusionImg2ImgPipeline

    quiet_libraries()

    bare = StableDiffusionImg2ImgPipeline.from_pretrained(
        path, safety_checker=None, requires_safety_checker=False,
        **dtype_kwarg(torch.float16 if half else torch.float32)).to(context.device)
    bare.unet.set_attn_processor(AttnProcessor2_0())
    bare.set_progress_bar_config(disable=True)
    rows = []
    for batch in s["batches"]:
        images = [Image.new("RGB", (s["resolution"],) * 2, (40 * i % 255, 90, 160))
                  for i in range(batch)]
        labels, names = [0] * batch, ["cat"]

        def run_sgid(images: list[Any] = images, labels: list[int] = labels,
                     names: list[str] = names) -> Any:
            return sgid.expand(images, labels, names, torch.Generator().manual_seed(0))

        def run_bare(images: list[Any] = images, batch: int = batch) -> Any:
            return bare(prompt=["A picture of a cat"] * batch, image=images,
                        strength=s["strength"], num_inference_steps=s["steps"],
                        guidance_scale=7.5, generator=torch.Generator().manual_seed(0))

        t_sgid, m_sgid, _ = measured(context.device, run_sgid)
        t_bare, m_bare, _ = measured(context.device, run_bare)
        rows.append({"what": f"generation batch {batch} (s/image)",
                     "harness": t_sgid / batch, "bare": t_bare / batch,
                     "harness_peak_gib": m_sgid, "bare_peak_gib": m_bare})
    return rows


# -- training ------------------------------------------------------------------------------

def training(context: Any, s: dict[str, Any], data: Path, store: Any) -> list[dict[str, Any]]:
    import torch

    from sgid_bench.config import RunSpec
    from sgid_bench.run import execute

    rows = []
    for backbone in ("resnet50", "vit"):
        spec = RunSpec(method="none", backbone=backbone, dataset=f"imagefolder:{data}",
                       profile="paper", params=[f"train.epochs={s['epochs']}",
                                                f"train.batch_size={s['train_batch']}"])
        if context.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        outcome = execute(spec, store=store, context=context, force=True)
        peak = (torch.cuda.max_memory_allocated() / 2**30
                if context.device.startswith("cuda") else None)
        harness = outcome.metrics.get("extra", {}).get("images_per_s")
        if harness is None:
            row = store.get(outcome.config_hash, 0)
            harness = (row.extra or {}).get("images_per_s") if row else None
        plain, plain_peak = plain_loop(backbone, context, s)
        rows.append({"what": f"{backbone} training (images/s)", "harness": harness,
                     "bare": plain, "harness_peak_gib": peak, "bare_peak_gib": plain_peak,
                     "status": outcome.status})
    return rows


def plain_loop(backbone: str, context: Any, s: dict[str, Any]) -> tuple[float, float | None]:
    """images/s of a plain PyTorch loop on the backbone's own module (bf16 autocast on
    CUDA, channels_last), random tensors at the paper's input size."""
    import torch

    from sgid_bench.plugins import backbone_class

    ctx = context.for_run("paper", "imagefolder", 0)
    bb = backbone_class(backbone)()
    bb.setup(ctx)
    model = bb.build(10, ctx).to(context.device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size, batch = bb.input_size(ctx), s["train_batch"]
    x = torch.randn(batch, 3, size, size, device=context.device).to(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=context.device)
    cuda = context.device.startswith("cuda")

    def steps() -> None:
        for _ in range(s["train_steps"]):
            with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    seconds, peak, _ = measured(context.device, steps)
    return batch * s["train_steps"] / seconds, peak


# -- end to end ----------------------------------------------------------------------------

def end_to_end(context: Any, s: dict[str, Any], data: Path, store: Any) -> dict[str, Any]:
    from sgid_bench.config import RunSpec
    from sgid_bench.run import execute

    spec = RunSpec(method="sgid", backbone="vit", dataset=f"imagefolder:{data}",
                   profile="paper", params=[f"steps={s['steps']}",
                                            f"resolution={s['resolution']}",
                                            f"train.epochs={s['epochs']}"])
    start = time.perf_counter()
    outcome = execute(spec, store=store, context=context, force=True)
    row = store.get(outcome.config_hash, 0)
    return {"status": outcome.status, "seconds": time.perf_counter() - start,
            "profile": row.profile if row else None, "models": row.models if row else None,
            "error": outcome.error}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from sgid_bench.context import Context
    from sgid_bench.replicate import replicate
    from sgid_bench.store import Store

    args = parse_args(argv)
    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    s = SETTINGS[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        models = Path(args.models_dir or work / "models")
        started = time.perf_counter()
        replicate(models, args.size, log=print)
        print(f"replicas ready in {time.perf_counter() - started:.0f}s ({models})")
        data = work / "data" / "images"
        write_images(data, classes=2, per_class=s["images_per_class"])
        context = Context(profile="paper", device=device, home=work / "home",
                          models_dir=models, cache_dir=work / "cache")
        store = Store(f"sqlite:///{work / 'gpu_check.db'}")
        rows = generation(context, s) + training(context, s, data, store)
        e2e = end_to_end(context, s, data, store)
        store.close()
    report = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
              "size": args.size, "settings": s, "rows": rows, "end_to_end": e2e}
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def print_report(report: dict[str, Any]) -> None:
    print(f"\nGPU check on {report['device']} ({report['size']} replicas)")
    print(f"{'measurement':38} {'harness':>10} {'bare':>10} {'peak GiB h':>11} {'peak GiB b':>11}")
    for r in report["rows"]:
        print(f"{r['what']:38} {_fmt(r['harness']):>10} {_fmt(r['bare']):>10} "
              f"{_fmt(r['harness_peak_gib']):>11} {_fmt(r['bare_peak_gib']):>11}")
    e = report["end_to_end"]
    print(f"end to end (sgid / vit, paper profile): {e['status']} in {e['seconds']:.0f}s; "
          f"models {json.dumps(e['models'])}" + (f"; error {e['error']}" if e["error"] else ""))


if __name__ == "__main__":
    main()
