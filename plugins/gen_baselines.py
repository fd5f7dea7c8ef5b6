"""The generative baselines of the paper: Text2Img, SGID+DiverseCaption and
SGID+InstructPix2Pix (see :mod:`sgid_bench_plugins.sgid` for the shared machinery).

Each follows the work the SGID paper cites for it, and says where it departs:

- Text2Img (He et al. 2023, "Is synthetic data from generative models ready for image
  recognition?"): the label is turned into sentences by a language model (their
  "language enhancement": a word-to-sentence T5), and Stable Diffusion draws each.
- SGID+DiverseCaption (ALIA, Dunlap et al. 2023): a language model summarises each class's
  BLIP captions into a few descriptions; img2img then uses one of them per image. ALIA
  prompts a large LLM; here a seq2seq model (FLAN-T5 in the paper profile) does it.
- SGID+InstructPix2Pix (ALIA's editing baseline): diversifying edit instructions (a change
  of context, weather, background or style) applied by InstructPix2Pix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sgid_bench.errors import UserError
from sgid_bench.world import scene
from sgid_bench_plugins.diffusion import check_scheduler
from sgid_bench_plugins.sgid import (
    SGID,
    TABLE8,
    _choice,
    _Generative,
    model_for,
    small_settings,
)

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
    """Text-to-image with the same Stable Diffusion from label-derived sentences: no source
    image is used (only its label and size).

    ``language_enhancement`` (default, He et al. 2023): a seq2seq language model turns the
    label (in ``language_prompt``) into one sampled sentence per image. Off: a CLIP photo
    template per image (or the fixed ``template``)."""

    name: ClassVar[str] = "text2img"
    description: ClassVar[str] = (
        "Text2Img: a language model writes a sentence per label, Stable Diffusion draws it."
    )
    version: ClassVar[str] = "2"

    template: str = ""  # without language enhancement: "" = a random CLIP photo template
    language_enhancement: bool = True
    language_model: str = ""  # "" = the profile's
    language_prompt: str = ""  # "" = the profile's, e.g. "{label}" for CommonGen T5
    top_p: float = 0.9
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
        if self.language_prompt and "{label}" not in self.language_prompt:
            raise UserError("--param language_prompt must contain {label}, e.g. '{label}'")
        self._pipe: Any = None
        self._language: Any = None

    @classmethod
    def profile_params(cls, profile: str, dataset: str) -> dict[str, Any]:
        if profile == "paper":
            return {}
        if profile == "quick":
            # Measured on the world's Stable Diffusion: Euler ancestral, 20 steps, g 7.5
            # draws the requested class in 94.2 % of images (benchmarks/world/RESULTS.md).
            return {"resolution": 32, "steps": 20, "scheduler": "euler_a"}
        return {k: v for k, v in small_settings(profile).items() if k in ("resolution", "steps")}

    def models_used(self, context: Context) -> dict[str, str]:
        from sgid_bench_plugins.language import model_id

        used = {"generator": model_for("generator", self.generator_model, context)}
        if self.language_enhancement:
            used["text"] = model_id("describe", self.language_model, context)
        return used

    def captions(self, labels: Sequence[int], class_names: Sequence[str],
                 generator: torch.Generator) -> list[str]:
        import torch

        if self.language_enhancement:
            from sgid_bench_plugins.language import LanguageModel, prompt_format

            if self._language is None:
                self._language = LanguageModel(self.models_used(self.context)["text"],
                                               self.context)
            fmt = prompt_format("describe", self.language_prompt, self.context)
            prompts = [fmt.format(label=class_names[y]) for y in labels]
            sentences = self._language.sample(prompts, self.top_p, generator)
            # An empty sentence would be an unconditional image: fall back to the label.
            return [s or class_names[y] for s, y in zip(sentences, labels, strict=True)]
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
    captioned with ``num_captions`` nucleus samples each; the pool becomes
    ``num_summaries`` descriptions. ``summary=language_model`` (default, as ALIA does): a
    seq2seq language model summarises groups of the class's captions (beam search);
    ``summary=clip_medoid``: the captions that are representative and diverse in CLIP text
    space (the medoid, then farthest-point sampling). Each image then gets one summary:
    ``caption=random`` draws one, ``caption=clip_filter`` takes the one most similar to
    the image."""

    name: ClassVar[str] = "sgid_diversecaption"
    description: ClassVar[str] = (
        "SGID+DiverseCaption: SGID img2img with per-class summarised BLIP captions."
    )
    version: ClassVar[str] = "2"
    caption_modes: ClassVar[tuple[str, ...]] = ("random", "clip_filter")

    caption: str = "random"
    pool_per_class: int = 20
    num_summaries: int = 5
    summary: str = "language_model"  # language_model (ALIA) | clip_medoid
    summary_model: str = ""  # "" = the profile's language model
    summary_prompt: str = ""  # "" = the profile's, with {captions}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompt_mode not in ("caption_only", "complete"):
            raise UserError("sgid_diversecaption needs captions: prompt_mode complete or "
                            "caption_only")
        _choice("summary", self.summary, ("language_model", "clip_medoid"))
        if self.summary_prompt and "{captions}" not in self.summary_prompt:
            raise UserError("--param summary_prompt must contain {captions}")
        self.summaries: dict[int, list[str]] = {}

    def models_used(self, context: Context) -> dict[str, str]:
        from sgid_bench_plugins.language import model_id

        used = super().models_used(context)
        if self.summary == "language_model":
            used["text"] = model_id("summarize", self.summary_model, context)
        return used

    @classmethod
    def profile_params(cls, profile: str, dataset: str) -> dict[str, Any]:
        if profile == "paper":
            return {}
        return {**small_settings(profile), "pool_per_class": 4, "num_summaries": 2}

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
        if self.summary == "clip_medoid":
            return summarize(captions, self._model("clip").texts(captions), self.num_summaries)
        from sgid_bench_plugins.language import LanguageModel, prompt_format, summary_prompts

        if "text" not in self._models:
            self._models["text"] = LanguageModel(self.models_used(self.context)["text"],
                                                 self.context)
        fmt = prompt_format("summarize", self.summary_prompt, self.context)
        outs = self._models["text"].beam(summary_prompts(captions, self.num_summaries, fmt))
        summaries = list(dict.fromkeys(o for o in outs if o))  # distinct, in order
        # A model that says nothing (an untrained one) leaves the class's own captions.
        return summaries or list(dict.fromkeys(c for c in captions if c))[:self.num_summaries]

    def state(self) -> dict[str, Any]:
        return {"summaries": {str(y): s for y, s in sorted(self.summaries.items())}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.summaries = {int(y): list(s) for y, s in state["summaries"].items()}

    @property
    def uses_clip(self) -> bool:
        return self.summary == "clip_medoid" or super().uses_clip

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
    """SGID with InstructPix2Pix as the generator.

    ``edits=diversify`` (default, ALIA's editing baseline): each image gets one edit
    instruction drawn from ``edit_prompts`` (``{label}`` is the class name): a change of
    context, weather, background or style that keeps the class. ALIA derives its edits
    per dataset with an LLM from the dataset's captions; here the paper profile uses a
    fixed generic list and the quick profile the toy world's context and colour edits.
    ``edits=caption``: the instruction wraps SGID's prompt (label sentence + caption,
    weighted) in ``instruction``. Guidance is the fixed text / image guidance of
    InstructPix2Pix unless ``guidance_mapping`` is set."""

    name: ClassVar[str] = "sgid_instructpix2pix"
    description: ClassVar[str] = (
        "SGID+InstructPix2Pix: diversifying edit instructions (ALIA), InstructPix2Pix."
    )
    version: ClassVar[str] = "2"
    kind: ClassVar[str] = "pix2pix"

    edits: str = "diversify"  # diversify | caption
    edit_prompts: tuple[str, ...] = ()  # () = the profile's list
    instruction: str = "turn it into {prompt}"
    guidance_mapping: bool = False
    image_guidance_scale: float = 1.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("edits", self.edits, ("diversify", "caption"))
        if "{prompt}" not in self.instruction:
            raise UserError("--param instruction must contain {prompt}, "
                            "e.g. 'turn it into {prompt}'")

    @classmethod
    def profile_params(cls, profile: str, dataset: str) -> dict[str, Any]:
        if profile == "paper":
            return {**TABLE8.get(dataset, {}), "edit_prompts": ALIA_EDITS}
        if profile == "quick":
            return {**small_settings(profile), "edit_prompts": WORLD_EDITS}
        return {**small_settings(profile), "steps": 3, "edit_prompts": ALIA_EDITS}

    @property
    def uses_captions(self) -> bool:
        return self.edits == "caption" and super().uses_captions

    def prompts(self, labels: Sequence[int], captions: Sequence[str | None],
                class_names: Sequence[str], generator: torch.Generator
                ) -> list[list[tuple[str, float]]]:
        import torch

        if self.edits == "caption":
            return super().prompts(labels, captions, class_names, generator)
        edits = self.edit_prompts or ALIA_EDITS
        picks = torch.randint(len(edits), (len(labels),), generator=generator)
        return [[(edits[int(j)].format(label=class_names[y]), 1.0)]
                for j, y in zip(picks, labels, strict=True)]

    def wrap(self, pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
        before, _, after = self.instruction.partition("{prompt}")
        return [p for p in [(before, 1.0), *pieces, (after, 1.0)] if p[0]]

    def run_kwargs(self) -> dict[str, Any]:
        return {"size": self.resolution, "steps": self.steps,
                "image_guidance": self.image_guidance_scale}


#: ALIA-style diversifying edits that keep the class (a fixed, generic list).
ALIA_EDITS = (
    "put the {label} in the snow",
    "put the {label} in a forest",
    "put the {label} on a beach",
    "put the {label} in a city street",
    "put the {label} indoors",
    "make it at night",
    "make it a rainy day",
    "make it a sunny day",
    "make it a watercolor painting",
    "make it a pencil sketch",
)
#: The toy world's diversifying edits: every context, and every colour.
WORLD_EDITS = (*(f"put it {phrase}" for phrase in scene.BACKGROUNDS.values()),
               *(f"make it {c}" for c in scene.COLOURS))
