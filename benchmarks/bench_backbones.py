"""Training throughput of each backbone at its real architecture size (random weights):
the module that ``Backbone.build()`` returns, trained by the harness's own data pipeline and
epoch loop (``ImageSet`` + ``Trainer``), against a plain PyTorch loop (torchvision
transforms, cross-entropy) on the same module and images. Prints images/s and the harness overhead
ratio (harness time / plain time; target <= 1.05).

The paper profile's checkpoints are stood in for by random-weight checkpoints of the real
architectures (ViT-B/16 from ``ViTConfig()``, open_clip ``ViT-B-32``), written once into
``--models-dir`` (a temporary folder by default), so ``build()`` runs its real loading path.

    python benchmarks/bench_backbones.py [--steps 3] [--batch-size 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from sgid_bench.api import Backbone
from sgid_bench.context import Context
from sgid_bench.data import ImageSet, base_augmentation
from sgid_bench.plugins import backbone_class
from sgid_bench.train import FeatureHook, Trainer, make_optimizer, normalizer

BACKBONES = ("resnet50", "vit", "clip_vit")
NUM_CLASSES = 100


def write_random_checkpoints(models_dir: Path) -> None:
    """Random-weight stand-ins for the paper's checkpoints, in their on-disk layouts."""
    vit_dir = models_dir / "google/vit-base-patch16-224-in21k"
    if not (vit_dir / "config.json").is_file():
        from transformers import ViTConfig, ViTModel

        from sgid_bench.models import transformers_progress_off

        with transformers_progress_off():
            ViTModel(ViTConfig(), add_pooling_layer=True).save_pretrained(vit_dir)
    clip_dir = models_dir / "ViT-B-32/laion2b_s34b_b79k"
    if not (clip_dir / "open_clip_config.json").is_file():
        import open_clip
        from safetensors.torch import save_file

        cfg = open_clip.get_model_config("ViT-B-32")
        model = open_clip.CLIP(**cfg)
        clip_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(clip_dir / "open_clip_model.safetensors"))
        (clip_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))


def make_samples(n: int, size: int) -> list[tuple[Image.Image, int]]:
    """Random RGB images at the backbone's input size, random labels (seeded)."""
    rng = np.random.default_rng(0)
    return [(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)),
             int(rng.integers(NUM_CLASSES))) for _ in range(n)]


def harness_epoch(backbone: Backbone, model: torch.nn.Module, samples: list[Any],
                  context: Context, dataset: str, batch: int) -> Callable[[], None]:
    """One epoch exactly as a run trains: the harness's ImageSet (per-sample seeded crop and
    flip), its DataLoader settings, and Trainer's epoch (soft targets, recipe optimizer)."""
    recipe = replace(backbone.recipe(context, dataset), batch_size=batch)
    size = backbone.input_size(context)
    normalize = normalizer(backbone, context.device)
    trainer = Trainer(backbone, lambda: model, recipe, [], context.device, 0, normalize,
                      NUM_CLASSES)
    loader = DataLoader(ImageSet(samples, size, True, [], 0), batch_size=batch, shuffle=True,
                        drop_last=True, pin_memory=context.device.startswith("cuda"))
    opt = make_optimizer(recipe, backbone.trainable_parameters(model))
    hook = FeatureHook(backbone, model, [])

    def epoch() -> None:
        trainer._epoch(model, loader, opt, hook, 0)

    return epoch


def plain_epoch(backbone: Backbone, model: torch.nn.Module, samples: list[Any],
                context: Context, dataset: str, batch: int) -> Callable[[], None]:
    """The textbook loop on the same module and images: a torchvision transform per sample,
    every parameter, integer-label cross-entropy."""
    recipe = backbone.recipe(context, dataset)
    size = backbone.input_size(context)
    mean, std = backbone.normalization()
    tf = v2.Compose([v2.PILToTensor(), base_augmentation(size), v2.ToDtype(torch.float32, True),
                     v2.Normalize(mean, std)])
    class Plain(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(samples)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return tf(samples[i][0]), samples[i][1]

    loader = DataLoader(Plain(), batch_size=batch, shuffle=True, drop_last=True,
                        pin_memory=context.device.startswith("cuda"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=recipe.lr, momentum=0.9) if recipe.optimizer == "sgd"
           else torch.optim.AdamW(params, lr=recipe.lr))
    device = torch.device(context.device)

    def epoch() -> None:
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with autocast(device):
                logits = model(x)
            F.cross_entropy(logits.float(), y).backward()
            opt.step()

    return epoch


def autocast(device: torch.device) -> Any:
    # Both loops run under the same precision: bf16 autocast on CUDA, fp32 on CPU.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def timed(epoch: Callable[[], None], device: torch.device) -> float:
    """Seconds for one epoch."""
    sync(device)
    start = time.perf_counter()
    epoch()
    sync(device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, context: Context, args: argparse.Namespace) -> dict[str, float]:
    backbone = backbone_class(name)()
    torch.manual_seed(0)
    model = backbone.build(NUM_CLASSES, context).to(args.device)
    size = backbone.input_size(context)
    samples = make_samples(args.batch_size * args.steps, size)
    loops = {kind: make(backbone, model, samples, context, args.dataset, args.batch_size)
             for kind, make in (("harness", harness_epoch), ("plain", plain_epoch))}
    device = torch.device(args.device)
    for epoch in loops.values():  # warm-up: allocator, kernels, optimizer state
        timed(epoch, device)
    # Alternate the two loops so drifting machine load hits both alike; keep the median.
    times: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(args.rounds):
        for key, epoch in loops.items():
            times[key].append(timed(epoch, device))
    per_epoch = {k: statistics.median(v) for k, v in times.items()}
    n = len(samples)
    return {"input": size, "harness_ips": n / per_epoch["harness"],
            "plain_ips": n / per_epoch["plain"],
            "ratio": per_epoch["harness"] / per_epoch["plain"]}


def main(argv: list[str] | None = None) -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20 if cuda else 2,
                        help="batches per timed epoch")
    parser.add_argument("--rounds", type=int, default=5 if cuda else 3,
                        help="alternating rounds per loop (the median is reported)")
    parser.add_argument("--batch-size", type=int, default=64 if cuda else 4)
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--dataset", default="flowers102",
                        help="sets the paper recipe and ResNet's input size (cifar*: 32 px)")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="where the random-weight checkpoints are kept (default: temp)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-backbones-") as tmp:
        models_dir = args.models_dir or Path(tmp)
        write_random_checkpoints(models_dir)
        context = Context(profile="paper", device=args.device, dataset=args.dataset,
                          models_dir=models_dir, home=Path(tmp))
        print(f"device {args.device}, batch {args.batch_size}, {args.rounds} rounds x "
              f"{args.steps} steps, paper architectures with random weights")
        print(f"{'backbone':<10} {'input':>5} {'harness img/s':>14} {'plain img/s':>12} "
              f"{'ratio':>6}")
        for name in args.backbones.split(","):
            r = measure(name, context, args)
            print(f"{name:<10} {r['input']:>5} {r['harness_ips']:>14.2f} "
                  f"{r['plain_ips']:>12.2f} {r['ratio']:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
