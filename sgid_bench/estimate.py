"""Wall-time estimate of a sweep plan: ``sgid-bench sweep FILE --dry-run --estimate``.

Cost model: a training run costs ``epochs x lr-grid size x (train + generated images) x 3
x forward FLOPs of the backbone at its input size`` plus a forward pass over validation
per epoch and over test once; a generation costs, per image, the UNet forward FLOPs x 2
(classifier-free guidance) x denoising steps (x strength for img2img) plus the VAE. The
forward FLOPs are counted by torch's ``FlopCounterMode`` on the real architectures built
on the meta device (no weights, no memory), and divided by the FLOP/s this machine
reaches, measured in a few seconds:

- on CUDA, with the real architectures at the profile's sizes (random weights: speed does
  not depend on the values), fp16 for generation and bf16 autocast for training;
- on a CPU, with small stand-ins (a slim ResNet, a small UNet) whose FLOP/s is scaled to
  the real architectures: an order-of-magnitude figure, and the output says so.

Runs already done and generations already cached cost nothing (the plan knows them).
Captioning, language models and data loading are not counted (small next to the UNet and
the training, but not zero).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Official training-split sizes (train + val where the paper trains on both) and test
#: sizes of the paper's datasets; caltech101 uses 30 training images per class.
DATASET_SIZES: dict[str, tuple[int, int]] = {
    "cifar100": (50000, 10000), "cifar10": (50000, 10000), "caltech101": (3030, 5647),
    "stanford_cars": (8144, 8041), "flowers102": (2040, 6149), "oxford_pets": (3680, 3669),
    "dtd": (3760, 1880),
}
#: Fraction of training images the harness holds out for validation when there is none.
VAL_SHARE = 0.1


@dataclass
class Rates:
    """FLOP/s this machine reaches, and how they were measured."""

    train: float
    generate: float
    how: str


@dataclass
class Estimate:
    generation_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    training_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    runs: int = 0
    generations: int = 0
    note: str = ""

    @property
    def total_s(self) -> float:
        return sum(self.generation_s.values()) + sum(self.training_s.values())


# -- FLOPs of the real architectures (meta device, cached on disk) -------------------------

def _forward_flops(build: Callable[[], Any], inputs: Callable[[], tuple[Any, dict[str, Any]]]
                   ) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), torch.no_grad():
        model = build().eval()  # batch norm in train mode refuses one image
        args, kwargs = inputs()
        with FlopCounterMode(display=False) as counter:
            model(*args, **kwargs)
    return float(counter.get_total_flops())


def _resnet50() -> Any:
    from torchvision.models import resnet50

    return resnet50(num_classes=100)


def _vit() -> Any:
    from transformers import ViTConfig, ViTModel

    return ViTModel(ViTConfig())


def _clip_visual() -> Any:
    import open_clip

    cfg = open_clip.get_model_config("ViT-B-32")
    return open_clip.CLIP(**cfg).visual


def _unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=64, cross_attention_dim=768)


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(128, 256, 512, 512),
                         down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2)


def _image(size: int) -> Callable[[], tuple[Any, dict[str, Any]]]:
    import torch

    return lambda: ((torch.empty(1, 3, size, size),), {})


def _flop_table() -> dict[str, Callable[[], float]]:
    import torch

    def unet_inputs() -> tuple[Any, dict[str, Any]]:
        return ((torch.empty(1, 4, 64, 64), torch.tensor([1])),
                {"encoder_hidden_states": torch.empty(1, 77, 768)})

    def vae_roundtrip() -> float:
        # img2img encodes the source and decodes the result: one full pass of the VAE.
        return _forward_flops(_vae, lambda: ((torch.empty(1, 3, 512, 512),), {}))

    return {
        "resnet50@32": lambda: _forward_flops(_resnet50, _image(32)),
        "resnet50@224": lambda: _forward_flops(_resnet50, _image(224)),
        "vit@224": lambda: _forward_flops(_vit, lambda: ((), {"pixel_values": torch.empty(
            1, 3, 224, 224)})),
        "clip_vit@224": lambda: _forward_flops(_clip_visual, _image(224)),
        "unet": lambda: _forward_flops(_unet, unet_inputs),
        "vae": vae_roundtrip,
    }


def flops(name: str, home: Path) -> float:
    """Forward FLOPs per image of ``name`` (cached in ``<home>/estimate-flops.json``: they
    are constants of the architectures)."""
    path = home / "estimate-flops.json"
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if name not in cache:
        cache[name] = _flop_table()[name]()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cache, indent=1))
        except OSError:
            pass
    return float(cache[name])


# -- calibration ---------------------------------------------------------------------------

def _rate(step: Callable[[], None], flops_per_step: float, seconds: float,
          sync: Callable[[], None]) -> float:
    step()  # warm-up (allocations, kernel selection)
    sync()
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        step()
        n += 1
    sync()
    return flops_per_step * n / (time.perf_counter() - start)


def calibrate(device: str, seconds: float = 2.0) -> Rates:
    """Measure training and generation FLOP/s on ``device`` (see the module docstring)."""
    import torch

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        train_model, size, batch = _resnet50(), 224, 64
        unet = _unet().to(device, torch.float16).eval()
        latent, text = (torch.randn(8, 4, 64, 64, device=device, dtype=torch.float16),
                        torch.randn(8, 77, 768, device=device, dtype=torch.float16))
        how = f"measured on {torch.cuda.get_device_name(0)} with the real architectures"
    else:
        from torch import nn
        from torchvision.models.resnet import ResNet

        from sgid_bench.backbone_modules import SlimBottleneck
        from sgid_bench.replicate import _unet as small_unet

        train_model = ResNet(SlimBottleneck, [1, 1, 1, 1], num_classes=10, width_per_group=16)
        train_model.conv1 = nn.Conv2d(3, train_model.conv1.out_channels, 3, 1, 1, bias=False)
        size, batch = 32, 16
        unet = small_unet(True, 4).eval()
        latent, text = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
        how = ("on this CPU with small stand-in models, scaled to the real architectures by "
               "FLOPs: an order of magnitude only (a CPU is not how the paper runs; run "
               "with --device cuda on a GPU machine for a real calibration)")
    train_model = train_model.to(device).train()
    opt = torch.optim.SGD(train_model.parameters(), lr=0.01)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    per_image = _forward_flops(lambda: _copy_arch(train_model), _image(size))

    def train_step() -> None:
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16,
                            enabled=cuda):
            loss = nn_loss(train_model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t = torch.zeros(latent.shape[0], dtype=torch.long, device=device)
    unet_flops = _forward_flops(lambda: _copy_arch(unet), lambda: (
        (torch.empty(latent.shape), torch.zeros(latent.shape[0], dtype=torch.long)),
        {"encoder_hidden_states": torch.empty(text.shape)})) / latent.shape[0]

    def gen_step() -> None:
        with torch.inference_mode():
            unet(latent, t, encoder_hidden_states=text)

    train = _rate(train_step, 3 * per_image * batch, seconds, sync)
    generate = _rate(gen_step, unet_flops * latent.shape[0], seconds, sync)
    return Rates(train, generate, how)


def nn_loss(logits: Any, y: Any) -> Any:
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), y)


def _copy_arch(model: Any) -> Any:
    """The same architecture on the meta device (for counting FLOPs)."""
    import copy

    return copy.deepcopy(model).to("meta").eval()


# -- the estimate --------------------------------------------------------------------------

def estimate(plan: Any, context: Any, rates: Rates) -> Estimate:
    """Seconds of generation and training per dataset for the plan's work still to do."""
    from sgid_bench.config import resolve

    home = Path(context.home)
    out = Estimate(note=rates.how)
    cells: dict[str, Any] = {}

    def resolved(spec: Any) -> Any:
        key = json.dumps([spec.method, spec.backbone, spec.dataset, spec.params])
        if key not in cells:
            cells[key] = resolve(spec, context.for_run(spec.profile, spec.dataset, spec.seed))
        return cells[key]

    for gen in plan.generations.values():
        if gen.cached:
            continue
        r = resolved(gen.spec)
        images = _sizes(gen.spec.dataset)[0]
        stages = r.augmenters[-1:] if gen.after else r.augmenters
        for aug in stages:
            if "expand" not in aug.stages():
                continue
            out.generation_s[gen.spec.dataset] += images * _gen_flops(aug, home) / rates.generate
        out.generations += 1
    for job in plan.todo:
        r = resolved(job.spec)
        train_n, test_n = _sizes(job.spec.dataset)
        generated = train_n if job.generation else 0
        recipe = r.config["recipe"]
        grid = max(1, len(recipe.get("lr_grid") or ()))
        size = r.backbone.input_size(context.for_run(job.spec.profile, job.spec.dataset, 0))
        f = flops(f"{r.backbone.name}@{size}", home) if r.backbone.name in (
            "resnet50", "vit", "clip_vit") else flops("resnet50@224", home)
        seen = recipe["epochs"] * grid * ((train_n * (1 - VAL_SHARE) + generated) * 3
                                          + train_n * VAL_SHARE)
        out.training_s[job.spec.dataset] += (seen + test_n) * f / rates.train
        out.runs += 1
    return out


def _sizes(dataset: str) -> tuple[int, int]:
    return DATASET_SIZES.get(dataset.partition(":")[0], (1000, 1000))


def _gen_flops(aug: Any, home: Path) -> float:
    """FLOPs of one generated image of ``aug`` at the real SD v1 sizes."""
    steps = float(getattr(aug, "steps", 50))
    if getattr(aug, "kind", "") == "img2img":
        steps *= float(getattr(aug, "strength", 1.0))
    res = float(getattr(aug, "resolution", 512)) / 512
    unet = flops("unet", home) * 2 * steps  # two branches of classifier-free guidance
    if getattr(aug, "kind", "") == "pix2pix":
        unet *= 1.5  # InstructPix2Pix guides three branches (text, image, none)
    return (unet + flops("vae", home)) * res * res


def _clock(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:,.1f} h" if hours >= 1 else f"{seconds / 60:.1f} min"


def render(est: Estimate, device: str) -> Any:
    from rich.table import Table

    table = Table("dataset", "generation", "training", "total",
                  title=f"estimated wall time on {device} (one worker; work to do only)")
    for ds in sorted(set(est.generation_s) | set(est.training_s)):
        g, t = est.generation_s.get(ds, 0.0), est.training_s.get(ds, 0.0)
        table.add_row(ds, _clock(g), _clock(t), _clock(g + t))
    g, t = sum(est.generation_s.values()), sum(est.training_s.values())
    table.add_row("total", _clock(g), _clock(t), _clock(g + t), style="bold")
    return table


def summary(est: Estimate) -> str:
    g, t = sum(est.generation_s.values()), sum(est.training_s.values())
    return (f"estimate: generation {_clock(g)} ({est.generations} generation jobs to do), "
            f"training {_clock(t)} ({est.runs} runs to do), total {_clock(g + t)} on one "
            f"worker; calibrated {est.note}")
