"""SGID (semantic-guided generative image augmentation) and the three generative
baselines: Text2Img, SGID+DiverseCaption and SGID+InstructPix2Pix.

Every part of SGID is a parameter with the paper's value as default; the paper profile
sets the per-dataset choices of the paper's Table 8. Models load on the first ``expand``
(``setup`` only keeps the context), so a run whose images are all cached loads nothing.

Beyond the ``expand`` contract these classes offer three optional hooks that
:mod:`sgid_bench.cache` uses: ``last_info`` (per-image metadata of the last ``expand``:
prompt, caption, s*, g, filter scores), ``select(infos, labels)`` (the class-mean image
filters, which need every image of a class) and ``fit`` / ``load_state`` (DiverseCaption's
per-class caption summaries, computed once over the whole dataset).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sgid_bench.api import Augmenter
from sgid_bench.errors import UserError
from sgid_bench_plugins.diffusion import check_scheduler, guidance_from_score

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from sgid_bench.context import Context

#: Model ids per role: the paper's models (the paper cites OpenAI's CLIP for s*; LAION's
#: ViT-B-32/laion2b_s34b_b79k is an option: --param clip_model=...), the toy world's
#: trained components (quick profile) and the tiny random presets (tiny profile, tests).
PAPER_MODELS = {
    "generator": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "captioner": "Salesforce/blip-image-captioning-base",
    "clip": "ViT-B-32/openai",
    "pix2pix": "timbrooks/instruct-pix2pix",
}
WORLD_MODELS = {
    "generator": "stable-diffusion",
    "captioner": "blip",
    "clip": "clip",
    "pix2pix": "instruct-pix2pix",
}
TINY_MODELS = {
    "generator": "tiny/stable-diffusion",
    "captioner": "tiny/blip",
    "clip": "tiny/open_clip",
    "pix2pix": "tiny/instruct-pix2pix",
}
CAPTION_MODES = ("random", "clip_filter", "nucleus", "beam", "none")
GUIDANCE_RULES = ("diffusers", "literal")
PROMPT_MODES = ("none", "caption_only", "label_only", "complete")

#: The paper's Table 8: per-dataset caption choice and prompt weighting.
TABLE8: dict[str, dict[str, Any]] = {
    "cifar100": {"caption": "nucleus", "prompt_weighting": True},
    "cifar10": {"caption": "clip_filter", "prompt_weighting": True},
    "caltech101": {"caption": "nucleus", "prompt_weighting": False},
    "stanford_cars": {"caption": "none", "prompt_weighting": False},
    "flowers102": {"caption": "clip_filter", "prompt_weighting": True},
    "oxford_pets": {"caption": "beam", "prompt_weighting": False},
    "dtd": {"caption": "clip_filter", "prompt_weighting": True},
}
#: Tiny profile: tiny resolution, few denoising steps and captions (about a minute for
#: a few hundred 32x32 images on 2 CPU cores).
TINY_SETTINGS = {"resolution": 32, "steps": 4, "num_captions": 2, "caption_max_length": 12}
#: Quick profile (the toy world): its 32 px models with DPM-Solver++ at 20 steps (10
#: denoising steps at strength 0.5). Measured on the world's Stable Diffusion: img2img at
#: strength 0.5 keeps the judged class of 92.7 % of images (PNDM at 4 steps: 71.9 %).
WORLD_SETTINGS = {"resolution": 32, "steps": 20, "scheduler": "dpm", "num_captions": 4,
                  "caption_max_length": 16}


def small_settings(profile: str) -> dict[str, Any]:
    """The generative settings of the small profiles (quick: the world; tiny)."""
    return dict(WORLD_SETTINGS if profile == "quick" else TINY_SETTINGS)


def model_for(role: str, override: str, context: Context) -> str:
    """The model id of ``role``: the user's override, else the profile's default."""
    from sgid_bench.models import for_profile, pin

    if override:  # pinned to the weights on disk, like the profile's own ids
        return pin(override, context)
    return for_profile(context, tiny=TINY_MODELS[role], world=WORLD_MODELS[role],
                       paper=PAPER_MODELS[role])


def _choice(param: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UserError(f"--param {param}={value!r} is not valid: use one of {', '.join(allowed)}")


@dataclass(eq=False)
class _Generative(Augmenter):
    """Shared state of the diffusion-based augmenters (not registered itself)."""

    group: ClassVar[str] = "generative"

    def __post_init__(self) -> None:
        self._context: Context | None = None
        self.last_info: list[dict[str, Any]] = []

    def setup(self, context: Context) -> None:
        self._context = context

    @property
    def context(self) -> Context:
        if self._context is None:
            raise RuntimeError(f"{self.name}: call setup(context) before expand")
        return self._context

    @contextlib.contextmanager
    def threads(self) -> Iterator[None]:
        """Small-profile models on CPU run single-threaded: their operations are far too small for
        intra-op threads, which only add synchronisation (a quick SGID generation of 648
        images took 27 s with 1 thread and 116 s with 2 on 2 cores). Restored after."""
        import torch

        if not (self.context.small and self.context.device == "cpu"):
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def expand(self, images: Sequence[Image.Image], labels: Sequence[int],
               class_names: Sequence[str], generator: torch.Generator) -> list[Any]:
        """One augmented image per input (None when a filter drops it)."""
        with self.threads():
            return self._expand(images, labels, class_names, generator)

    def _expand(self, images: Sequence[Image.Image], labels: Sequence[int],
                class_names: Sequence[str], generator: torch.Generator) -> list[Any]:
        raise NotImplementedError

    @staticmethod
    def _back_to_size(outs: Sequence[Image.Image], src: Sequence[Image.Image]) -> list[Any]:
        from PIL import Image

        return [o.resize(s.size, Image.Resampling.BICUBIC) for o, s in zip(outs, src, strict=True)]


@dataclass(eq=False)
class SGID(_Generative):
    """Semantic-guided img2img: prompt = label sentence + ", " + BLIP caption, label and
    caption token embeddings weighted, guidance g = -4 s*^2 + 2 s* + 1 from the caption's
    CLIP similarity s*, Stable Diffusion img2img at noise rate ``strength``."""

    name: ClassVar[str] = "sgid"
    description: ClassVar[str] = (
        "SGID: label + BLIP caption prompt, weighted embeddings, CLIP-mapped guidance, SD img2img."
    )
    version: ClassVar[str] = "2"
    kind: ClassVar[str] = "img2img"

    label_template: str = "A picture of a {label}"
    caption: str = "clip_filter"  # random | clip_filter | nucleus | beam | none
    num_captions: int = 10  # k captions by nucleus sampling and k by beam search
    top_p: float = 0.9
    num_beams: int = 3
    caption_min_length: int = 5
    caption_max_length: int = 20
    prompt_mode: str = "complete"  # none | caption_only | label_only | complete
    prompt_weighting: bool = True
    label_weight: float = 1.5
    caption_weight: float = 0.9
    guidance_mapping: bool = True  # g from s*; off: the fixed guidance_scale
    # How a mapped g <= 1 acts. "diffusers" (default): as in stock diffusers, which the
    # authors ran, guidance is off for g <= 1 (the conditional prediction alone, i.e. g = 1).
    # "literal": noise = uncond + g (cond - uncond) for every g, also g < 1 (and g < 0 for
    # s* > 0.809), which moves towards the unconditional prediction.
    guidance_rule: str = "diffusers"
    guidance_scale: float = 7.5
    strength: float = 0.5  # noise rate n of img2img
    steps: int = 100
    scheduler: str = "default"
    resolution: int = 512
    label_filter: bool = False
    prompt_filter: bool = False
    original_filter: bool = False
    generator_model: str = ""  # "" = the profile's model
    caption_model: str = ""
    clip_model: str = ""

    caption_modes: ClassVar[tuple[str, ...]] = CAPTION_MODES

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("caption", self.caption, self.caption_modes)
        _choice("prompt_mode", self.prompt_mode, PROMPT_MODES)
        _choice("guidance_rule", self.guidance_rule, GUIDANCE_RULES)
        check_scheduler(self.scheduler)
        if "{label}" not in self.label_template:
            raise UserError("--param label_template must contain {label}, "
                            "e.g. 'A picture of a {label}'")
        if not 0.0 < self.strength <= 1.0:
            raise UserError(f"--param strength={self.strength} must be in (0, 1]")
        if self.steps < 1 or self.resolution < 8 or self.resolution % 8:
            raise UserError("--param steps must be >= 1 and resolution a multiple of 8")
        if self.num_captions < 1:
            raise UserError("--param num_captions must be >= 1")
        self._models: dict[str, Any] = {}

    @classmethod
    def profile_params(cls, profile: str, dataset: str) -> dict[str, Any]:
        if profile == "paper":
            return dict(TABLE8.get(dataset, {}))
        return small_settings(profile)

    # -- which models this configuration needs -------------------------------------------

    @property
    def uses_captions(self) -> bool:
        return self.prompt_mode in ("caption_only", "complete") and self.caption != "none"

    @property
    def uses_clip(self) -> bool:
        scored = self.uses_captions and self.caption == "clip_filter"
        mapped = self.guidance_mapping and self.prompt_mode != "none"
        return scored or mapped or self.label_filter or self.prompt_filter or self.original_filter

    def roles(self) -> dict[str, str]:
        """Role -> the override parameter's value, for the models this config loads."""
        roles = {"pix2pix" if self.kind == "pix2pix" else "generator": self.generator_model}
        if self.uses_captions:
            roles["captioner"] = self.caption_model
        if self.uses_clip:
            roles["clip"] = self.clip_model
        return roles

    def models_used(self, context: Context) -> dict[str, str]:
        return {role: model_for(role, o, context) for role, o in self.roles().items()}

    def provide(self, role: str, model: Any) -> None:
        """Use an already built model for ``role`` (generator / pix2pix: a guided pipeline,
        captioner: a ``Captioner``, clip: a ``ClipScorer``), e.g. random-weight
        full-size models in the benchmark."""
        self._models[role] = model

    def _model(self, role: str) -> Any:
        # Loaded on first use (see the module docstring), then kept.
        if role not in self._models:
            from sgid_bench_plugins import captioning, diffusion

            mid = self.models_used(self.context)[role]
            if role in ("generator", "pix2pix"):
                self._models[role] = diffusion.load_pipeline(mid, self.kind, self.context,
                                                             self.scheduler)
            elif role == "captioner":
                self._models[role] = captioning.Captioner(
                    mid, self.context, self.caption_min_length, self.caption_max_length)
            else:
                self._models[role] = captioning.ClipScorer(mid, self.context)
        return self._models[role]

    # -- captions, prompts, guidance --------------------------------------------------------

    def caption_pools(self, images: Sequence[Image.Image], labels: Sequence[int],
                      class_names: Sequence[str], generator: torch.Generator) -> list[list[str]]:
        """Candidate captions per image: one nucleus or one beam caption, or (random /
        clip_filter) k nucleus-sampled plus the beam-search captions."""
        cap = self._model("captioner")
        if self.caption == "nucleus":
            return cap.nucleus(images, 1, self.top_p, generator)
        if self.caption == "beam":
            return cap.beam(images, 1, self.num_beams)
        nucleus = cap.nucleus(images, self.num_captions, self.top_p, generator)
        beam = cap.beam(images, self.num_captions, self.num_beams)
        return [n + b for n, b in zip(nucleus, beam, strict=True)]

    def choose_captions(self, images: Sequence[Image.Image], labels: Sequence[int],
                        class_names: Sequence[str], generator: torch.Generator
                        ) -> tuple[list[str | None], list[float | None]]:
        """The chosen caption per image and its CLIP similarity s* (None when unscored)."""
        from sgid_bench_plugins.captioning import choose

        n = len(images)
        if not self.uses_captions:
            return [None] * n, [None] * n
        pools = self.caption_pools(images, labels, class_names, generator)
        scores = None
        if self.caption == "clip_filter" or self.guidance_mapping:
            scores = self._model("clip").image_text(images, pools)
        mode = "clip_filter" if self.caption == "clip_filter" else "random"
        picks = choose(pools, scores, mode, generator)
        captions = [p[j] if j >= 0 else None for p, j in zip(pools, picks, strict=True)]
        chosen = [scores[i][j] if scores is not None and j >= 0 else None
                  for i, j in enumerate(picks)]
        return captions, chosen

    def prompt(self, label: str, caption: str | None) -> list[tuple[str, float]]:
        """The weighted pieces of one prompt for the ablation ``prompt_mode``."""
        lw, cw = (self.label_weight, self.caption_weight) if self.prompt_weighting else (1.0, 1.0)
        sentence = (self.label_template.format(label=label), lw)
        cap = (caption, cw) if caption else None
        if self.prompt_mode == "none":
            return []
        if self.prompt_mode == "caption_only":
            return [cap] if cap else []
        if self.prompt_mode == "label_only" or cap is None:  # complete without a caption
            return [sentence]
        return [sentence, (", ", 1.0), cap]

    def guidance(self, images: Sequence[Image.Image], texts: Sequence[str],
                 scores: Sequence[float | None]) -> tuple[list[float], list[float | None]]:
        """Guidance scale per image, and the s* it was mapped from.

        Mapping on: g = -4 s*^2 + 2 s* + 1 with s* the chosen caption's CLIP similarity;
        without a caption (label only, caption none) s* is the similarity of the image to
        the prompt text; with an empty prompt g = 1 (the two branches are equal anyway)."""
        if not self.guidance_mapping:
            return [self.guidance_scale] * len(texts), list(scores)
        s = list(scores)
        missing = [i for i, v in enumerate(s) if v is None and texts[i]]
        if missing:
            found = self._model("clip").image_text([images[i] for i in missing],
                                                   [[texts[i]] for i in missing])
            for i, v in zip(missing, found, strict=True):
                s[i] = v[0]
        g = [guidance_from_score(v) if v is not None else 1.0 for v in s]
        if self.guidance_rule == "diffusers":
            g = [max(x, 1.0) for x in g]  # g <= 1: guidance off, conditional prediction
        return g, s

    # -- the expand stage ------------------------------------------------------------------

    def _expand(self, images: Sequence[Image.Image], labels: Sequence[int],
                class_names: Sequence[str], generator: torch.Generator) -> list[Any]:
        from sgid_bench_plugins import diffusion

        src = [im.convert("RGB") for im in images]
        pipe = self._model(self.role)  # the generator first: a missing model fails early
        captions, scores = self.choose_captions(src, labels, class_names, generator)
        prompts = self.prompts(labels, captions, class_names, generator)
        texts = ["".join(t for t, _ in p) for p in prompts]
        g, s = self.guidance(src, texts, scores)
        outs = diffusion.run(pipe, self.kind, prompts, g, generator,
                             images=src, **self.run_kwargs())
        outs = self._back_to_size(outs, src)
        self.last_info = [{"prompt": t, "caption": c, "score": v, "guidance": gi}
                          for t, c, v, gi in zip(texts, captions, s, g, strict=True)]
        keep = self.filter_scores(outs, src, labels, class_names, texts)
        return [o if k else None for o, k in zip(outs, keep, strict=True)]

    def prompts(self, labels: Sequence[int], captions: Sequence[str | None],
                class_names: Sequence[str], generator: torch.Generator
                ) -> list[list[tuple[str, float]]]:
        """The weighted prompt of every image of a batch."""
        return [self.wrap(self.prompt(class_names[y], c))
                for y, c in zip(labels, captions, strict=True)]

    @property
    def role(self) -> str:
        return "pix2pix" if self.kind == "pix2pix" else "generator"

    def wrap(self, pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """Hook for subclasses that embed the prompt in a longer text."""
        return pieces

    def run_kwargs(self) -> dict[str, Any]:
        return {"size": self.resolution, "steps": self.steps, "strength": self.strength}

    # -- image filters (appendix) -----------------------------------------------------------

    def filter_scores(self, outs: Sequence[Image.Image], src: Sequence[Image.Image],
                      labels: Sequence[int], class_names: Sequence[str],
                      texts: Sequence[str]) -> list[bool]:
        """Apply the label filter; record the scores the class-mean filters need in
        ``last_info``. Returns the keep mask of the label filter."""
        keep = [True] * len(outs)
        if not (self.label_filter or self.prompt_filter or self.original_filter):
            return keep
        from sgid_bench_plugins.captioning import zero_shot_correct

        clip = self._model("clip")
        if self.label_filter:
            keep = zero_shot_correct(clip, outs, labels, class_names, self.label_template)
        if self.prompt_filter:
            sims = clip.image_text(outs, [[t] for t in texts])
            for info, v in zip(self.last_info, sims, strict=True):
                info["prompt_score"] = v[0]  # one text per image: one score each
        if self.original_filter:
            for info, v in zip(self.last_info, clip.image_image(outs, src), strict=True):
                info["original_score"] = v
        return keep

    def select(self, infos: Sequence[dict[str, Any]], labels: Sequence[int]) -> list[bool]:
        """Keep mask of the prompt and original-image filters over a whole generated set:
        an image stays when its score is at least its class's mean (over the images the
        label filter kept). Infos of dropped images are ``{"dropped": True, ...}``."""
        from sgid_bench_plugins.captioning import above_class_mean

        keep = [not i.get("dropped") for i in infos]
        for flag, key in ((self.prompt_filter, "prompt_score"),
                          (self.original_filter, "original_score")):
            if flag:
                scores = [i.get(key) if k else None for i, k in zip(infos, keep, strict=True)]
                mask = above_class_mean(scores, labels)
                keep = [k and m for k, m in zip(keep, mask, strict=True)]
        return keep
