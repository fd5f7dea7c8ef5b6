"""The toy world's judge: an independent shape classifier that MEASURES generated images.

A small ResNet (torchvision's ``BasicBlock``, one block per stage, widths 16-32-64-128,
CIFAR stem: a 3x3 stride-1 convolution and no max-pool, ~0.3 M parameters) trained with
cross-entropy on freshly rendered corpus images (every shape in every colour, size and
context) for the shape label only. It plays the paper's "independent classifier trained on
real images": it never sees a generated image, so the share of text2img outputs it labels
as the prompted class is an honest measure of the generators. Mild blur / noise
augmentation keeps it from failing on the slightly soft images a generator makes.

Sizes: the task is easy for a convnet (held-out accuracy ~99 %), so the network is kept
as small as reaches it; one step of 128 images costs ~0.15 s on 2 cores.
Measured at ``scale=1.0`` on this machine: 4.1 min of CPU time on one thread (rendering
the 40k scenes included; wall time was longer on the shared, overloaded CPU); held-out
corpus shape accuracy 99.95 %, target test set 100 %.

Saved as ``model.safetensors`` + ``config.json``; :func:`load_judge` turns the folder into
a function from PIL images to predicted labels. The rendering / schedule helpers here are
shared by the other vision trainers (:mod:`.train_clip`, :mod:`.train_vit`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sgid_bench.world import scene

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

#: Training steps and batch size at ``scale=1.0``.
DEFAULT_STEPS = 800
BATCH = 128
#: Distinct rendered training scenes at ``scale=1.0`` (~2.6 passes over them).
CORPUS_SIZE = 40_000
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 5e-4
#: Stage widths of the ResNet (one BasicBlock each).
WIDTHS = (16, 32, 64, 128)
#: Input normalisation (the same as the toy ViT's).
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
#: Seeds: weights / batches, training corpus, held-out corpus.
SEED = 3101
TRAIN_SEED = scene.CORPUS_SEED + 3000
HELDOUT_SEED = scene.CORPUS_SEED + 1000
HELDOUT_SIZE = 2000

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


# -- helpers shared by the vision trainers ------------------------------------------------


def render_tensor(scenes: Sequence[scene.Scene]) -> torch.Tensor:
    """The scenes' images as one ``uint8`` tensor ``N x 3 x SIZE x SIZE``."""
    import torch

    pixels = np.stack([np.asarray(scene.render(s), dtype=np.uint8) for s in scenes])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def pil_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images (resized to SIZE if needed) as ``uint8`` ``N x 3 x SIZE x SIZE``."""
    import torch
    from PIL import Image as PILImage

    arrays = []
    for img in images:
        img = img.convert("RGB")
        if img.size != (scene.SIZE, scene.SIZE):
            img = img.resize((scene.SIZE, scene.SIZE), PILImage.Resampling.BICUBIC)
        arrays.append(np.asarray(img, dtype=np.uint8))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def normalise(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8`` images -> float, ``(x / 255 - mean) / std`` per channel."""
    import torch

    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - m) / s


def lr_at(step: int, total: int, peak: float, warmup_frac: float = 0.05) -> float:
    """Linear warm-up then cosine decay to zero."""
    warmup = max(1, int(total * warmup_frac))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(step: int, warm: int, total: int) -> float:
    """The lr factor of ``step``: linear warm-up over ``warm`` steps, then cosine decay to
    zero at ``total`` (a ``LambdaLR`` factor; the BLIP and T5 trainers)."""
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def batch_indices(n: int, batch: int, steps: int, gen: Any) -> Iterator[Any]:
    """``steps`` batches of indices into ``n`` items: a fresh seeded permutation whenever
    the current one has fewer than ``batch`` left (the tail is skipped)."""
    import torch

    order, cursor = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        yield order[cursor:cursor + batch]
        cursor += batch


def scaled(n: int, scale: float, minimum: int) -> int:
    return max(minimum, int(round(n * scale)))


def progress_logger(log: Callable[[str], None], total: int,
                    every: int) -> Callable[[int, float], None]:
    """``report(step, loss)``: logs ``step i/N loss x elapsed ts`` every ``every`` steps
    (and at the first and last step), averaging the losses in between."""
    start = time.perf_counter()
    losses: list[float] = []

    def report(step: int, loss: float) -> None:
        losses.append(loss)
        if step == 0 or (step + 1) % every == 0 or step + 1 == total:
            mean = sum(losses) / len(losses)
            losses.clear()
            log(f"step {step + 1}/{total} loss {mean:.4f} "
                f"elapsed {time.perf_counter() - start:.1f}s")

    return report


# -- the judge -----------------------------------------------------------------------------


def build_network(config: dict[str, Any]) -> nn.Module:
    """The judge ResNet from its ``config.json`` (random weights)."""
    from torch import nn
    from torchvision.models.resnet import BasicBlock

    widths = [int(w) for w in config["widths"]]
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                               nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
    cin = widths[0]
    for i, width in enumerate(widths):
        stride = 1 if i == 0 else 2
        down = None
        if stride != 1 or cin != width:
            down = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False),
                                 nn.BatchNorm2d(width))
        layers.append(BasicBlock(cin, width, stride, down))
        cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, int(config["num_classes"]))]
    return nn.Sequential(*layers)


def judge_config() -> dict[str, Any]:
    return {"architecture": "resnet-basicblock-cifar", "widths": list(WIDTHS),
            "num_classes": len(scene.SHAPES), "labels": list(scene.SHAPES),
            "image_size": scene.SIZE, "mean": list(MEAN), "std": list(STD)}


def _augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Float images in 0..255: a random share blurred a little, plus a little noise."""
    import torch
    import torch.nn.functional as F

    n = batch.shape[0]
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :]) / 16.0
    blurred = F.conv2d(F.pad(batch, (1, 1, 1, 1), mode="replicate"),
                       kernel.expand(3, 1, 3, 3).contiguous(), groups=3)
    amount = torch.rand(n, 1, 1, 1, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) < 0.4)
    out = batch * (1 - amount) + blurred * amount
    sigma = torch.rand(n, 1, 1, 1, generator=gen) * 6.0
    return (out + torch.randn(out.shape, generator=gen) * sigma).clamp(0, 255)


def build(out: Path, *, world: Path, scale: float = 1.0,
          log: Callable[[str], None] = print) -> dict[str, float]:
    """Train the judge on the corpus and save it into ``out``; held-out metrics."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    del world  # the judge depends on no other component
    steps = scaled(DEFAULT_STEPS, scale, 10)
    n_train = scaled(CORPUS_SIZE, scale, 256)
    config = judge_config()
    log(f"judge: rendering {n_train} corpus scenes")
    train_scenes = scene.corpus_scenes(n_train, seed=TRAIN_SEED)
    images = render_tensor(train_scenes)
    labels = torch.tensor([s.label for s in train_scenes])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        gen = torch.Generator().manual_seed(SEED)
        model = build_network(config)
        opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        report = progress_logger(log, steps, max(1, steps // 20))
        model.train()
        for step, idx in enumerate(batch_indices(n_train, BATCH, steps, gen)):
            x = _augment(images[idx].float(), gen)
            x = (x / 255.0 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
                1, 3, 1, 1)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, LEARNING_RATE)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            report(step, loss.item())
    model.eval()
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))

    held = scene.corpus_scenes(scaled(HELDOUT_SIZE, scale, 240), seed=HELDOUT_SEED)
    target = scene.target_scenes("test", 30)
    return {
        "heldout_shape_acc": _accuracy(model, config, held),
        "target_test_acc": _accuracy(model, config, target),
    }


def _predict(model: nn.Module, config: dict[str, Any], batch: torch.Tensor) -> np.ndarray:
    import torch

    preds = []
    with torch.no_grad():
        for i in range(0, batch.shape[0], 256):
            x = normalise(batch[i:i + 256], config["mean"], config["std"])
            preds.append(model(x).argmax(1))
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


def _accuracy(model: nn.Module, config: dict[str, Any], scenes: Sequence[scene.Scene]) -> float:
    preds = _predict(model, config, render_tensor(scenes))
    return float(100.0 * np.mean(preds == np.array([s.label for s in scenes])))


def load_judge(directory: Path) -> Callable[[Sequence[Image.Image]], np.ndarray]:
    """The saved judge as ``predict(images) -> int array of shape labels`` (label order
    :data:`scene.SHAPES`); images of another size are resized to 32 x 32."""
    from safetensors.torch import load_file

    config = json.loads((Path(directory) / CONFIG_FILE).read_text())
    model = build_network(config)
    model.load_state_dict(load_file(str(Path(directory) / WEIGHTS_FILE)))
    model.eval()

    def predict(images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros(0, dtype=np.int64)
        return _predict(model, config, pil_tensor(images)).astype(np.int64)

    return predict
