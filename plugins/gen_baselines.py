"""The generative baselines of the paper: Text2Img, SGID+DiverseCaption and
SGID+InstructPix2Pix (see :mod:`sgid_bench_plugins.sgid` for the shared machinery)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sgid_bench.errors import UserError
from sgid_bench_plugins.diffusion import check_scheduler
from sgid_bench_plugins.sgid import QUICK, SGID, TABLE8, _Generative, model_for

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from sgid_bench.context import Context

#: Label-derived captions of Text2Img: photo templates from CLIP's ImageNet prompt set.
TEXT2IMG_TEMPLATES = (
    "a photo of a {label}.",
    "a bright photo of a {label}.",
    "a dark photo of the {label}.",
    "a close-up photo of a {label}.",
    "a cropped photo of the {label}.",
    "a good photo of a {label}.",
    "a photo of the large {label}.",
    "a photo of the small {label}.",
    "a photo of a clean {label}.",
    "a photo of a dirty {label}.",
    "a blurry photo of the {label}.",
    "a low resolution photo of the {label}.",
    "a painting of a {label}.",
    "a rendering of a {label}.",
    "a drawing of a {label}.",
    "a sculpture of a {label}.",
)


@dataclass(eq=False)
class Text2Img(_Generative):
    """Text-to-image with the same Stable Diffusion from label-derived captions: no source
    image is used (only its label and size)."""

    name: ClassVar[str] = "text2img"
    description: ClassVar[str] = "Text2Img: Stable Diffusion text-to-image from label captions."
    version: ClassVar[str] = "1"

    template: str = ""  # "" = a random CLIP photo template per image; else one template
    guidance_scale: float = 7.5
    steps: int = 100
    scheduler: str = "default"
    resolution: int = 512
    generator_model: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scheduler(self.scheduler)
        if self.template and "{label}" not in self.template:
            raise UserError("--param template must contain {label}, e.g. 'a photo of a {label}'")
        if self.steps < 1 or self.resolution < 8 or self.resolution % 8:
            raise UserError("--param steps must be >= 1 and resolution a multiple of 8")
        self._pipe: Any = None

    @classmethod
    def profile_params(cls, profile: str, dataset: str) -> dict[str, Any]:
        return {} if profile == "paper" else {"resolution": 32, "steps": 4}

    def models_used(self, context: Context) -> dict[str, str]:
        return {"generator": model_for("generator", self.generator_model, context)}

    def captions(self, labels: Sequence[int], class_names: Sequence[str],
                 generator: torch.Generator) -> list[str]:
        import torch

        if self.template:
            return [self.template.format(label=class_names[y]) for y in labels]
        picks = torch.randint(len(TEXT2IMG_TEMPLATES), (len(labels),), generator=generator)
        return [TEXT2IMG_TEMPLATES[int(j)].format(label=class_names[y])
                for j, y in zip(picks, labels, strict=True)]

    def _expand(self, images: Sequence[Image.Image], labels: Sequence[int],
                class_names: Sequence[str], generator: torch.Generator) -> list[Any]:
        from sgid_bench_plugins import diffusion

        if self._pipe is None:
            mid = self.models_used(self.context)["generator"]
            self._pipe = diffusion.load_pipeline(mid, "text2img", self.context, self.scheduler)
        texts = self.captions(labels, class_names, generator)
        outs = diffusion.run(self._pipe, "text2img", [[(t, 1.0)] for t in texts],
                             [self.guidance_scale] * len(texts), generator,
                             size=self.resolution, steps=self.steps)
        self.last_info = [{"prompt": t, "caption": t, "score": None,
                           "guidance": self.guidance_scale} for t in texts]
        return self._back_to_size(outs, [im.convert("RGB") for im in images])


@dataclass(eq=False)
class SGIDDiverseCaption(SGID):
    """SGID whose caption is one of its class's summarised captions instead of the
    image's own: more diverse, less faithful augmentations.

    Summaries (``fit``): up to ``pool_per_class`` images per class (seeded choice) are
    captioned with ``num_captions`` nucleus samples each; per class, ``num_summaries``
    captions are kept that are representative and diverse in CLIP text space (the medoid,
    then farthest-point sampling). Each image then gets one summary: ``caption=random``
    draws one, ``caption=clip_filter`` takes the one most similar to the image."""

    name: ClassVar[str] = "sgid_diversecaption"
    description: ClassVar[str] = (
        "SGID+DiverseCaption: SGID img2img with per-class summarised BLIP captions."
    )
    caption_modes: ClassVar[tuple[str, ...]] = ("random", "clip_filter")

    caption: str = "random"
    pool_per_class: int = 20
    num_summaries: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompt_mode not in ("caption_only", "complete"):
            raise UserError("sgid_diversecaption needs captions: prompt_mode complete or "
                            "caption_only")
        self.summaries: dict[int, list[str]] = {}

    @classmethod
    def profile_params(cls, profile: str, dataset: str) -> dict[str, Any]:
        if profile == "paper":
            return {}
        return {**QUICK, "pool_per_class": 4, "num_summaries": 2}

    def fit(self, samples: Sequence[tuple[Image.Image, int]], class_names: Sequence[str],
            generator: torch.Generator) -> dict[str, Any]:
        """Per-class caption summaries over the whole set (JSON-able state)."""
        with self.threads():
            return self._fit(samples, class_names, generator)

    def _fit(self, samples: Sequence[tuple[Image.Image, int]], class_names: Sequence[str],
             generator: torch.Generator) -> dict[str, Any]:
        import torch

        self._model(self.role)  # the generator first: a missing model fails before work
        by_class: dict[int, list[int]] = {}
        for i in range(len(samples)):
            by_class.setdefault(int(samples[i][1]), []).append(i)
        for y, idx in sorted(by_class.items()):
            order = torch.randperm(len(idx), generator=generator)[: self.pool_per_class]
            pool = [samples[idx[int(j)]][0].convert("RGB") for j in order]
            self.summaries[y] = self._summarize(pool, generator)
        return self.state()

    def _summarize(self, images: Sequence[Image.Image], generator: torch.Generator) -> list[str]:
        from sgid_bench_plugins.captioning import summarize

        batch = self.context.gen_batch_size
        captions: list[str] = []
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            for caps in self._model("captioner").nucleus(chunk, self.num_captions, self.top_p,
                                                         generator):
                captions += caps
        if not any(captions):
            return []
        return summarize(captions, self._model("clip").texts(captions), self.num_summaries)

    def state(self) -> dict[str, Any]:
        return {"summaries": {str(y): s for y, s in sorted(self.summaries.items())}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.summaries = {int(y): list(s) for y, s in state["summaries"].items()}

    @property
    def uses_clip(self) -> bool:
        return True  # the summaries are chosen in CLIP text space

    def caption_pools(self, images: Sequence[Image.Image], labels: Sequence[int],
                      class_names: Sequence[str], generator: torch.Generator) -> list[list[str]]:
        # Without fit() (expand called directly), a class's pool is summarised from the
        # images of this batch.
        for y in sorted(set(labels) - set(self.summaries)):
            self.summaries[y] = self._summarize(
                [im for im, lab in zip(images, labels, strict=True) if lab == y], generator)
        return [list(self.summaries[y]) for y in labels]


@dataclass(eq=False)
class SGIDInstructPix2Pix(SGID):
    """SGID with InstructPix2Pix as the generator: the edit instruction wraps SGID's
    prompt (label sentence + caption, weighted) in ``instruction``; guidance is the fixed
    text / image guidance of InstructPix2Pix unless ``guidance_mapping`` is set."""

    name: ClassVar[str] = "sgid_instructpix2pix"
    description: ClassVar[str] = (
        "SGID+InstructPix2Pix: edit instructions from label + caption, InstructPix2Pix."
    )
    kind: ClassVar[str] = "pix2pix"

    instruction: str = "turn it into {prompt}"
    guidance_mapping: bool = False
    image_guidance_scale: float = 1.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if "{prompt}" not in self.instruction:
            raise UserError("--param instruction must contain {prompt}, "
                            "e.g. 'turn it into {prompt}'")

    @classmethod
    def profile_params(cls, profile: str, dataset: str) -> dict[str, Any]:
        if profile == "paper":
            return dict(TABLE8.get(dataset, {}))
        return {**QUICK, "steps": 3}

    def wrap(self, pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
        before, _, after = self.instruction.partition("{prompt}")
        return [p for p in [(before, 1.0), *pieces, (after, 1.0)] if p[0]]

    def run_kwargs(self) -> dict[str, Any]:
        return {"size": self.resolution, "steps": self.steps,
                "image_guidance": self.image_guidance_scale}
