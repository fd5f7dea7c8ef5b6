"""The three backbones of the paper: ResNet-50 from scratch, ViT-B/16 (ImageNet-21k) and
CLIP ViT-B/32 (LAION-2B).

``sgid-bench list`` imports this module, so torch / torchvision / transformers / open_clip
are imported inside methods only. The ``nn.Module`` wrappers live in
:mod:`sgid_bench.backbone_modules`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sgid_bench
from sgid_bench.api import Backbone, FeatureLayer, Recipe, named_layer
from sgid_bench.errors import UserError

if TYPE_CHECKING:
    import torch

    from sgid_bench.context import Context

#: Datasets the paper trains at their native 32 px (everything else at 224 px).
SMALL_IMAGE_DATASETS = ("cifar10", "cifar100")
#: Up to this side a ResNet gets the CIFAR stem (3x3 stride-1 conv, no max-pool): the
#: ImageNet stem would shrink a 32 px image to 8 px before the first stage.
CIFAR_STEM_MAX_SIZE = 64
MODES = ("finetune", "linear_probe")

# The paper's transformer schedule (ViT-B/16 and CLIP ViT-B/32 share it), after
# transformers' image-classification example: AdamW with the lr decaying linearly to 0
# over the training steps (the example's get_scheduler("linear"), no warmup). Every
# transformer recipe, the small profiles' too, decays the same way.
_PAPER_SMALL = Recipe(optimizer="adamw", lr=5e-5, epochs=3, batch_size=64, schedule="linear")
_PAPER_OTHER = Recipe(optimizer="adamw", lr=1e-4, epochs=15, batch_size=64,
                      lr_grid=(1e-4, 3e-4, 1e-3, 3e-3), schedule="linear")
_QUICK_TRANSFORMER = Recipe(optimizer="adamw", lr=1e-3, epochs=5, batch_size=64,
                            schedule="linear")
# The toy world (quick profile): 120 training images, so small batches and more epochs.
# Measured on the world's `world` dataset (seed 0, no augmentation): a linear probe of the
# world-pretrained towers beats fine-tuning them (ViT 46.7 vs 36.7 %, CLIP 56.4 vs 38.1 %
# at their best lr), so the quick profile probes; fine-tuning is --param mode=finetune.
# Those were at a constant lr; the linear decay gives (seed 0, probe) ViT 51.1 vs 49.4 %,
# CLIP 53.3 vs 56.4 %: --param train.schedule=multistep restores the constant lr.
_WORLD_TRANSFORMER = Recipe(optimizer="adamw", lr=3e-3, epochs=30, batch_size=16,
                            schedule="linear")
_WORLD_RESNET = Recipe(optimizer="adamw", lr=2e-3, epochs=30, batch_size=16, weight_decay=5e-4)


class ResNet50(Backbone):
    name = "resnet50"
    description = ("ResNet-50 trained from scratch (torchvision); CIFAR stem for small "
                   "images. Quick profile: a slim one-block-per-stage torchvision ResNet.")

    def models_used(self, context: Context) -> dict[str, str]:
        # Trained from scratch in every profile: the id names the architecture only.
        slim = "tiny/resnet50" if context.model_set == "tiny" else "torchvision/resnet50-slim"
        return {"backbone": slim if context.small else "torchvision/resnet50"}

    def input_size(self, context: Context) -> int:
        if context.small or context.dataset in SMALL_IMAGE_DATASETS:
            return 32
        return 224

    def build(self, num_classes: int, context: Context) -> torch.nn.Module:
        from torch import nn
        from torchvision.models import resnet50
        from torchvision.models.resnet import ResNet

        from sgid_bench.backbone_modules import SlimBottleneck

        if context.small:
            # torchvision's ResNet with bottleneck blocks, one per stage, a quarter of the
            # width and no 4x expansion: ~600 32 px images x 5 epochs train in seconds.
            model = ResNet(SlimBottleneck, [1, 1, 1, 1], num_classes=num_classes,
                           width_per_group=16)
        else:
            model = resnet50(weights=None, num_classes=num_classes)
        if self.input_size(context) <= CIFAR_STEM_MAX_SIZE:
            model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1,
                                    padding=1, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
            model.maxpool = nn.Identity()
        return model

    def recipe(self, context: Context, dataset: str) -> Recipe:
        if context.model_set == "world":
            return _WORLD_RESNET
        if context.small:
            # AdamW converges in a few epochs from scratch where SGD needs hundreds.
            return Recipe(optimizer="adamw", lr=2e-3, epochs=8, batch_size=64,
                          weight_decay=5e-4)
        return Recipe(optimizer="sgd", lr=0.1, epochs=300, batch_size=256, weight_decay=5e-4,
                      momentum=0.9, milestones=(150, 225), gamma=0.1)

    def feature_layer(self, model: torch.nn.Module, layer: str = "stem") -> FeatureLayer:
        # The stem ends with the max-pool (an Identity in the CIFAR stem), as in MoEx's
        # official ResNet; layer1..layer4 are the stages. All NCHW.
        layers = {"stem": model.maxpool, **{f"layer{k}": getattr(model, f"layer{k}")
                                            for k in range(1, 5)}}
        return named_layer(self.name, {k: FeatureLayer(m, channel_dim=1)
                                       for k, m in layers.items()}, layer)


class _Transformer(Backbone):
    """What ViT and CLIP-ViT share: the ``mode`` parameter and the paper's schedule."""

    def __init__(self, mode: str = "finetune") -> None:
        if mode not in MODES:
            raise UserError(f"unknown mode {mode!r} for backbone {self.name!r}; "
                            f"use --param mode={' or mode='.join(MODES)}")
        self.mode = mode

    @classmethod
    def profile_params(cls, profile: str, dataset: str) -> dict[str, Any]:
        return {"mode": "linear_probe"} if profile == "quick" else {}

    def recipe(self, context: Context, dataset: str) -> Recipe:
        if context.model_set == "world":
            return _WORLD_TRANSFORMER
        if context.small:
            return _QUICK_TRANSFORMER
        return _PAPER_SMALL if dataset in SMALL_IMAGE_DATASETS else _PAPER_OTHER

    def _freeze_for_mode(self, model: Any, head: torch.nn.Module) -> None:
        # Frozen parameters drop out of the base class's trainable_parameters().
        if self.mode == "linear_probe":
            model.requires_grad_(False)
            head.requires_grad_(True)


class ViT(_Transformer):
    name = "vit"
    description = ("ViT-B/16 pre-trained on ImageNet-21k (transformers), fine-tuned or "
                   "linear-probed (--param mode=linear_probe).")
    paper_model = "google/vit-base-patch16-224-in21k"

    def models_used(self, context: Context) -> dict[str, str]:
        from sgid_bench.models import for_profile

        return {"backbone": for_profile(context, tiny="tiny/vit", world="vit",
                                        paper=self.paper_model)}

    def input_size(self, context: Context) -> int:
        from sgid_bench.tiny_vision import TINY_IMAGE_SIZE

        return TINY_IMAGE_SIZE if context.small else 224

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        # The in21k checkpoint's image processor: mean = std = 0.5.
        from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD

        return tuple(IMAGENET_STANDARD_MEAN), tuple(IMAGENET_STANDARD_STD)

    def setup(self, context: Context) -> None:
        # Fail before training starts when the weights are not available offline.
        from sgid_bench.models import resolve

        resolve(self.models_used(context)["backbone"], context, kind="vit", role="vit backbone")

    def build(self, num_classes: int, context: Context) -> torch.nn.Module:
        from sgid_bench.backbone_modules import HFImageClassifier, load_vit_classifier
        from sgid_bench.models import resolve

        path = resolve(self.models_used(context)["backbone"], context, kind="vit",
                       role="vit backbone")
        model = HFImageClassifier(load_vit_classifier(path, num_classes))
        self._freeze_for_mode(model, model.model.classifier)  # type: ignore[arg-type]
        return model

    def feature_layer(self, model: torch.nn.Module, layer: str = "stem") -> FeatureLayer:
        # The stem: patch + position embeddings (with the class token), where MoEx's
        # official transformer code acts; layerK: encoder block K. All N x L x D.
        from sgid_bench.backbone_modules import vit_layers

        wrapped: Any = model.model  # the ViTForImageClassification inside the wrapper
        blocks = vit_layers(wrapped.vit)
        layers = {"stem": wrapped.vit.embeddings,
                  **{f"layer{k + 1}": b for k, b in enumerate(blocks)}}
        return named_layer(self.name, {k: FeatureLayer(m, channel_dim=-1)
                                       for k, m in layers.items()}, layer)


class CLIPViT(_Transformer):
    name = "clip_vit"
    description = ("CLIP ViT-B/32 image tower (OpenCLIP, LAION-2B) with a linear head, "
                   "fine-tuned or linear-probed (--param mode=linear_probe).")
    paper_model = "ViT-B-32/laion2b_s34b_b79k"

    def models_used(self, context: Context) -> dict[str, str]:
        from sgid_bench.models import for_profile

        return {"backbone": for_profile(context, tiny="tiny/open_clip", world="clip",
                                        paper=self.paper_model)}

    def input_size(self, context: Context) -> int:
        from sgid_bench.tiny_vision import TINY_IMAGE_SIZE

        return TINY_IMAGE_SIZE if context.small else 224

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        return tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD)

    def setup(self, context: Context) -> None:
        # Fail before training starts when the weights are not available offline.
        from sgid_bench.openclip import locate

        locate(self.models_used(context)["backbone"], context, role="clip_vit backbone")

    def build(self, num_classes: int, context: Context) -> torch.nn.Module:
        from sgid_bench.backbone_modules import ImageTowerClassifier
        from sgid_bench.openclip import load_open_clip

        clip, _, _ = load_open_clip(self.models_used(context)["backbone"], context,
                                    device="cpu")
        # Keep the image tower only: the text tower is not used for classification.
        visual: Any = clip.visual
        model = ImageTowerClassifier(visual, num_classes)
        model.train()
        self._freeze_for_mode(model, model.head)
        return model

    def feature_layer(self, model: torch.nn.Module, layer: str = "stem") -> FeatureLayer:
        # The stem: the patch embedding (conv1, NCHW). Not after the position embedding
        # as in MoEx's official transformer code: open_clip applies ln_pre right there,
        # which would normalise the exchanged moments away (and after ln_pre every token
        # has the same moments). layerK: resblock K (batch-first, N x L x D).
        visual: Any = model.visual
        blocks = {f"layer{k + 1}": FeatureLayer(b, channel_dim=-1)
                  for k, b in enumerate(visual.transformer.resblocks)}
        return named_layer(self.name, {"stem": FeatureLayer(visual.conv1, channel_dim=1),
                                       **blocks}, layer)


@sgid_bench.hookimpl
def register_backbones(register: Any) -> None:
    register(ResNet50)
    register(ViT)
    register(CLIPViT)
