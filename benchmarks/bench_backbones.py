"""Training throughput of each backbone at its real architecture size (random weights):
the module that ``Backbone.build()`` returns, trained the way the harness trains it
(``trainable_parameters``, the recipe's optimizer, soft-target cross-entropy), against a
plain PyTorch loop on the same module and data. Prints images/s and the harness overhead
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
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from sgid_bench.api import Backbone
from sgid_bench.context import Context
from sgid_bench.plugins import backbone_class
from sgid_bench.train import make_optimizer, soft_cross_entropy

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


def harness_step(backbone: Backbone, model: torch.nn.Module, context: Context,
                 dataset: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step as the harness takes it (one-hot targets, recipe optimizer)."""
    opt = make_optimizer(backbone.recipe(context, dataset), backbone.trainable_parameters(model))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        targets = F.one_hot(y, NUM_CLASSES).float()
        opt.zero_grad(set_to_none=True)
        with autocast(x.device):
            logits = model(x)
        soft_cross_entropy(logits, targets).backward()
        opt.step()

    return step


def plain_step(model: torch.nn.Module, optimizer: str, lr: float
               ) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The textbook loop: every parameter, torch's optimizer, integer-label cross-entropy."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=lr, momentum=0.9) if optimizer == "sgd"
           else torch.optim.AdamW(params, lr=lr))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(x.device):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()

    return step


def autocast(device: torch.device) -> Any:
    # Both loops run under the same precision: bf16 autocast on CUDA, fp32 on CPU.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def timed(step: Callable[[torch.Tensor, torch.Tensor], None], x: torch.Tensor,
          y: torch.Tensor, steps: int) -> float:
    """Seconds per step over ``steps`` steps."""
    sync(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    sync(x.device)
    return (time.perf_counter() - start) / steps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, context: Context, args: argparse.Namespace) -> dict[str, float]:
    backbone = backbone_class(name)()
    torch.manual_seed(0)
    model = backbone.build(NUM_CLASSES, context).to(args.device)
    size = backbone.input_size(context)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, size, size, generator=gen).to(args.device)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=gen).to(args.device)
    recipe = backbone.recipe(context, args.dataset)
    steps = {"harness": harness_step(backbone, model, context, args.dataset),
             "plain": plain_step(model, recipe.optimizer, recipe.lr)}
    for step in steps.values():  # warm-up: allocator, kernels, optimizer state
        timed(step, x, y, 1)
    # Alternate the two loops so drifting machine load hits both alike; keep the median.
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            times[key].append(timed(step, x, y, args.steps))
    per_step = {k: statistics.median(v) for k, v in times.items()}
    return {"input": size, "harness_ips": args.batch_size / per_step["harness"],
            "plain_ips": args.batch_size / per_step["plain"],
            "ratio": per_step["harness"] / per_step["plain"]}


def main(argv: list[str] | None = None) -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20 if cuda else 2,
                        help="timed steps per round")
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
