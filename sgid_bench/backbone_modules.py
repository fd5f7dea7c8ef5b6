"""``nn.Module`` pieces of the built-in backbones (``plugins/backbones.py`` imports this
lazily, because importing torch there would slow ``sgid-bench list``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from sgid_bench.models import transformers_progress_off


class SlimBottleneck(Bottleneck):
    """torchvision's Bottleneck without the 4x channel expansion.

    The quick profile's ResNet uses it: with expansion 4 the 1x1 projections to 256..2048
    channels cost ~1 GFLOP per 32 px image (fwd+bwd) even with one block per stage; without
    it the same layout costs ~0.17 GFLOP and trains the embedded dataset in seconds."""

    expansion = 1


class HFImageClassifier(nn.Module):
    """A transformers image classifier as the harness expects it: images in, logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).logits


class ImageTowerClassifier(nn.Module):
    """An open_clip image tower followed by a linear head on its (projected) embedding."""

    def __init__(self, visual: Any, num_classes: int) -> None:
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(int(visual.output_dim), num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(images))


def vit_layers(vit: Any) -> nn.ModuleList:
    """The encoder layers of a transformers ``ViTModel`` (``layers`` since transformers 5,
    ``encoder.layer`` before)."""
    layers = getattr(vit, "layers", None)
    return layers if layers is not None else vit.encoder.layer


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


#: What loading a headless checkpoint into ViTForImageClassification is expected to report.
_EXPECTED = {"missing_keys": ("classifier.",), "unexpected_keys": ("pooler.", "vit.pooler."),
             "mismatched_keys": ("classifier.",)}


def load_vit_classifier(path: Path, num_classes: int) -> Any:
    """``ViTForImageClassification`` from a (headless) checkpoint with a new head.

    transformers reports the new head (and the unused pooler) as a warning on every load;
    that report is expected here, so it is dropped and only anything else is logged."""
    from transformers import ViTForImageClassification

    hf_logger = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReport()
    hf_logger.addFilter(drop)
    try:
        with transformers_progress_off():
            loaded: Any = ViTForImageClassification.from_pretrained(
                path, num_labels=num_classes, ignore_mismatched_sizes=True,
                output_loading_info=True)
    finally:
        hf_logger.removeFilter(drop)
    model, info = loaded
    surprises = {kind: [_key_name(k) for k in info.get(kind, ())
                        if not _key_name(k).startswith(_EXPECTED[kind])]
                 for kind in _EXPECTED}
    if any(surprises.values()):
        logging.getLogger(__name__).warning("loading ViT from %s: %s", path, surprises)
    return model


def _key_name(key: Any) -> str:
    # mismatched_keys holds (name, checkpoint shape, model shape) tuples.
    return key[0] if isinstance(key, tuple) else str(key)
