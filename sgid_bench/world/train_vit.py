"""The toy world's ViT: a transformers ``ViTModel`` pre-trained with supervised labels.

The stand-in for ``google/vit-base-patch16-224-in21k`` (ImageNet-21k supervised
pretraining): a ViT trained on freshly rendered corpus scenes with four classification
heads at once (shape, colour, size, background), so its features know every attribute of
the world, not only the target's labels. The heads are read from the final (layer-normed)
CLS token, the feature ``ViTForImageClassification`` classifies, and are discarded: only
the ``ViTModel`` is saved (with its pooler, as the hub checkpoint has one; the pooler is
not trained and the harness drops it) plus a ``ViTImageProcessor`` (32 x 32, mean = std =
0.5, as :func:`sgid_bench.tiny_vision.build_tiny_vit`).

Sizes: 32 px, patch 4 (64 tokens), hidden 96, 4 layers, 3 heads, MLP 384 (~0.46 M
parameters): big enough to learn every attribute of the corpus, small enough that the
benchmark fine-tunes it in seconds.
Measured at ``scale=1.0`` (2000 steps) on this machine: 33 min wall on one thread of the
shared, loaded CPU (~18 min of CPU time). Metrics of that build: held-out corpus accuracy
shape 96.3 %, colour 100 %, size 99.9 %, background 100 %; linear probe on the target
dataset 91.4 % (800 steps gave shape 79.0 %, probe 59.7 %).

Loads through :func:`sgid_bench.backbone_modules.load_vit_classifier`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgid_bench.models import transformers_progress_off
from sgid_bench.world import scene
from sgid_bench.world.train_judge import (
    batch_indices,
    lr_at,
    normalise,
    progress_logger,
    render_tensor,
    scaled,
)

if TYPE_CHECKING:
    import torch

#: Training steps and batch size at ``scale=1.0``.
DEFAULT_STEPS = 2000
BATCH = 128
#: Distinct rendered training scenes at ``scale=1.0`` (~2.6 passes over them).
CORPUS_SIZE = 40_000
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 0.05
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
SEED = 3301
TRAIN_SEED = scene.CORPUS_SEED + 3200
HELDOUT_SEED = scene.CORPUS_SEED + 1000
HELDOUT_SIZE = 2000
#: The pretraining heads: attribute -> its values (label order).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": scene.SHAPES,
    "colour": tuple(scene.COLOURS),
    "size": tuple(scene.SIZES),
    "background": tuple(scene.BACKGROUNDS),
}
#: Linear probe on the target dataset (frozen CLS features).
PROBE_STEPS = 300
PROBE_LR = 1e-2


def vit_config() -> Any:
    from transformers import ViTConfig

    return ViTConfig(image_size=scene.SIZE, patch_size=4, hidden_size=96, num_hidden_layers=4,
                     num_attention_heads=3, intermediate_size=384)


def _labels(scenes: list[scene.Scene]) -> dict[str, torch.Tensor]:
    import torch

    return {name: torch.tensor([values.index(getattr(s, name)) for s in scenes])
            for name, values in ATTRIBUTES.items()}


def _features(vit: Any, images: torch.Tensor) -> torch.Tensor:
    """The CLS feature ``ViTForImageClassification`` classifies, for uint8 images."""
    return vit(pixel_values=normalise(images, MEAN, STD)).last_hidden_state[:, 0]


def build(out: Path, *, world: Path, scale: float = 1.0,
          log: Callable[[str], None] = print) -> dict[str, float]:
    """Pre-train the toy ViT on the corpus, save the headless model into ``out`` and return
    metrics in percent: the held-out accuracy of each pretraining head (``heldout_<attr>_acc``)
    and ``target_linear_probe_top1`` (a linear head on frozen features, trained on the target
    train split, 12 per class, tested on the test split, 30 per class)."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from transformers import ViTImageProcessor, ViTModel

    del world  # depends on no other component
    steps = scaled(DEFAULT_STEPS, scale, 10)
    n_train = scaled(CORPUS_SIZE, scale, 256)
    log(f"vit: rendering {n_train} corpus scenes")
    train_scenes = scene.corpus_scenes(n_train, seed=TRAIN_SEED)
    images = render_tensor(train_scenes)
    labels = _labels(train_scenes)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        gen = torch.Generator().manual_seed(SEED)
        vit = ViTModel(vit_config(), add_pooling_layer=True)
        hidden = vit.config.hidden_size
        heads = nn.ModuleDict({name: nn.Linear(hidden, len(values))
                               for name, values in ATTRIBUTES.items()})
        params = list(vit.named_parameters()) + list(heads.named_parameters())
        decay = [p for n, p in params if p.ndim >= 2 and "embeddings" not in n]
        keep = [p for n, p in params if not (p.ndim >= 2 and "embeddings" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                 {"params": keep, "weight_decay": 0.0}], lr=LEARNING_RATE)
        report = progress_logger(log, steps, max(1, steps // 20))
        vit.train()
        for step, idx in enumerate(batch_indices(n_train, BATCH, steps, gen)):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, LEARNING_RATE)
            feats = _features(vit, images[idx])
            loss = sum(F.cross_entropy(heads[name](feats), labels[name][idx])
                       for name in ATTRIBUTES)
            assert isinstance(loss, torch.Tensor)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            report(step, loss.item())
        vit.eval()
        with transformers_progress_off():
            vit.save_pretrained(out)
        processor = ViTImageProcessor(size={"height": scene.SIZE, "width": scene.SIZE},
                                      image_mean=list(MEAN), image_std=list(STD))
        processor.save_pretrained(out)

        metrics: dict[str, float] = {}
        held = scene.corpus_scenes(scaled(HELDOUT_SIZE, scale, 240), seed=HELDOUT_SEED)
        with torch.no_grad():
            feats = _features(vit, render_tensor(held))
        for name, truth in _labels(held).items():
            pred = heads[name](feats).argmax(1)
            metrics[f"heldout_{name}_acc"] = float(100 * (pred == truth).float().mean())
        metrics["target_linear_probe_top1"] = linear_probe(vit, log=log)
    return metrics


def linear_probe(vit: Any, *, log: Callable[[str], None] = print) -> float:
    """Top-1 (percent) of a linear head on frozen CLS features: trained on the target train
    split (12 per class), tested on its test split (30 per class, every context)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    train = scene.target_scenes("train", 12)
    test = scene.target_scenes("test", 30)
    with torch.no_grad():
        x_train = _features(vit, render_tensor(train))
        x_test = _features(vit, render_tensor(test))
    y_train = torch.tensor([s.label for s in train])
    y_test = torch.tensor([s.label for s in test])
    head = nn.Linear(x_train.shape[1], len(scene.SHAPES))
    opt = torch.optim.Adam(head.parameters(), lr=PROBE_LR, weight_decay=1e-4)
    for _ in range(PROBE_STEPS):
        loss = F.cross_entropy(head(x_train), y_train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float(100 * (head(x_test).argmax(1) == y_test).float().mean())
    log(f"vit: linear probe on the target dataset: {acc:.1f} %")
    return acc
