"""Tiny presets of the vision backbones: ``tiny/vit`` and ``tiny/open_clip``.

Each is the real architecture (transformers ``ViTModel``, open_clip ``CLIP``) built from a
small config with seeded random weights and written to disk in the same layout as the
real checkpoint, so the backbones load it through the same code path as the paper's
weights (``from_pretrained`` / open_clip ``local-dir:``). They exercise the pipeline only.

Importing this module registers the builders with :func:`sgid_bench.models.tiny_builder`;
torch and friends are imported inside the builders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sgid_bench.models import tiny_builder

#: Input side of both tiny presets (the embedded dataset's image size).
TINY_IMAGE_SIZE = 32
#: Fixed seeds of the random weights: a preset is the same bytes on every machine.
VIT_SEED = 1234
OPEN_CLIP_SEED = 4321


@tiny_builder("vit")
def build_tiny_vit(directory: Path) -> None:
    """A 2-layer ViT saved like ``google/vit-base-patch16-224-in21k``: a ``ViTModel`` with
    its pooler (no classification head; the backbone adds one at load time) and the image
    processor config."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel
    from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD

    config = ViTConfig(image_size=TINY_IMAGE_SIZE, patch_size=4, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(VIT_SEED)
        model = ViTModel(config, add_pooling_layer=True)
    model.save_pretrained(directory)
    processor = ViTImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
                                  image_mean=IMAGENET_STANDARD_MEAN,
                                  image_std=IMAGENET_STANDARD_STD)
    processor.save_pretrained(directory)


def tiny_open_clip_config() -> dict[str, Any]:
    """open_clip hub-style config (``open_clip_config.json``) of the tiny CLIP.

    The text tower keeps the real vocabulary size and context length so the stock
    ``SimpleTokenizer`` (bundled with open_clip, offline) tokenizes for it."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return {
        "model_cfg": {
            "embed_dim": 32,
            "vision_cfg": {"image_size": TINY_IMAGE_SIZE, "layers": 2, "width": 32,
                           "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
                         "heads": 2, "layers": 2},
        },
        "preprocess_cfg": {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD)},
    }


@tiny_builder("open_clip")
def build_tiny_open_clip(directory: Path) -> None:
    """A 2-layer open_clip ``CLIP`` saved like a hub checkpoint
    (``open_clip_config.json`` + ``open_clip_model.safetensors``)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    config = tiny_open_clip_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(OPEN_CLIP_SEED)
        model = open_clip.CLIP(**config["model_cfg"])
    (directory / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
