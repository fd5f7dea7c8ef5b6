"""``nn.Module`` pieces of the built-in backbones (``plugins/backbones.py`` imports this
lazily, because importing torch there would slow ``sgid-bench list``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck


class SlimBottleneck(Bottleneck):
    """torchvision's Bottleneck without the 4x channel expansion.

    The quick profile's ResNet uses it: with expansion 4 the 1x1 projections to 256..2048
    channels cost ~1 GFLOP per 32 px image (fwd+bwd) even with one block per stage; without
    it the same layout costs ~0.17 GFLOP and trains the embedded dataset in seconds."""

    expansion = 1
