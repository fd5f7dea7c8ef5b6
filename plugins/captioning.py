"""Captions and CLIP scores for the generative augmenters: BLIP captions (nucleus sampling
and beam search), CLIP image-text / image-image similarities, caption choice, the image
filters of the paper's appendix, and the per-class caption summaries of DiverseCaption.

Heavy libraries are imported inside functions (``sgid-bench list`` imports this module).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from sgid_bench.context import Context


class Captioner:
    """BLIP image captioning (``BlipForConditionalGeneration``) with the paper's two
    decoding modes; caption length is bounded by ``min_length`` / ``max_length`` tokens."""

    def __init__(self, model_id: str, context: Context, min_length: int = 5,
                 max_length: int = 20) -> None:
        model, processor = _load_blip(model_id, context)
        self._init(model, processor, context.device, min_length, max_length)

    def _init(self, model: Any, processor: Any, device: str, min_length: int,
              max_length: int) -> None:
        self.model, self.processor, self.device = model, processor, device
        self.min_length, self.max_length = min_length, max_length

    @classmethod
    def from_parts(cls, model: Any, processor: Any, device: str, min_length: int = 5,
                   max_length: int = 20) -> Captioner:
        """A captioner around an already built BLIP (benchmarks with random weights)."""
        self = cls.__new__(cls)
        self._init(model, processor, device, min_length, max_length)
        return self

    def _generate(self, images: Sequence[Image.Image], **kwargs: Any) -> list[str]:
        import torch

        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(pixel_values=pixels, min_length=self.min_length,
                                      max_length=self.max_length, **kwargs)
        return [c.strip() for c in self.processor.batch_decode(out, skip_special_tokens=True)]

    def nucleus(self, images: Sequence[Image.Image], k: int, top_p: float,
                generator: torch.Generator) -> list[list[str]]:
        """``k`` captions per image by nucleus sampling; randomness drawn from ``generator``
        (``generate`` samples from torch's global RNG, so it runs in a seeded fork)."""
        import torch

        if k <= 0:
            return [[] for _ in images]
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        # Sampling draws from the RNG of the model's device: fork and seed that one too.
        cuda = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            flat = self._generate(images, do_sample=True, top_p=top_p, top_k=0,
                                  num_return_sequences=k)
        return [flat[i * k:(i + 1) * k] for i in range(len(images))]

    def beam(self, images: Sequence[Image.Image], k: int, num_beams: int) -> list[list[str]]:
        """The ``k`` best beams per image. Beam search returns at most ``num_beams``
        distinct sequences, so ``min(k, num_beams)`` captions come back."""
        n = min(k, num_beams)
        if n <= 0:
            return [[] for _ in images]
        flat = self._generate(images, num_beams=num_beams, num_return_sequences=n,
                              do_sample=False)
        return [flat[i * n:(i + 1) * n] for i in range(len(images))]


@functools.lru_cache(maxsize=2)
def _blip(path: str, device: str) -> tuple[Any, Any]:
    # Cached per process (hashable arguments): one BLIP shared by every augmenter.
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from sgid_bench_plugins.diffusion import quiet_libraries

    quiet_libraries()
    half = device.startswith("cuda")
    kwargs: dict[str, Any] = {"dtype": torch.float16} if half else {}
    model: Any = BlipForConditionalGeneration.from_pretrained(path, local_files_only=True,
                                                              **kwargs)
    processor = BlipProcessor.from_pretrained(path, local_files_only=True)
    return model.to(device).eval(), processor


def _load_blip(model_id: str, context: Context) -> tuple[Any, Any]:
    from sgid_bench.models import resolve

    return _blip(str(resolve(model_id, context, kind="blip", role="captioner")), context.device)


class ClipScorer:
    """Cosine similarities in CLIP space (open_clip, via ``sgid_bench.openclip``)."""

    def __init__(self, model_id: str, context: Context) -> None:
        from sgid_bench.openclip import load_open_clip

        self.model: Any
        self.model, self.preprocess, self.tokenizer = load_open_clip(model_id, context)
        self.device = context.device

    @classmethod
    def from_parts(cls, model: Any, preprocess: Any, tokenizer: Any, device: str) -> ClipScorer:
        """A scorer around an already built open_clip model (benchmarks)."""
        self = cls.__new__(cls)
        self.model, self.preprocess, self.tokenizer = model.to(device).eval(), preprocess, tokenizer
        self.device = device
        return self

    def images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised image embeddings (N, D)."""
        import torch

        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images])
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            feats = self.model.encode_image(batch.to(self.device, dtype))
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, D)."""
        import torch

        with torch.inference_mode():
            feats = self.model.encode_text(self.tokenizer(list(texts)).to(self.device))
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    def image_text(self, images: Sequence[Image.Image], texts: Sequence[Sequence[str]]
                   ) -> list[list[float]]:
        """s(image_i, text) for every text of ``texts[i]``."""
        img = self.images(images)
        flat = [t for ts in texts for t in ts]
        if not flat:
            return [[] for _ in images]
        txt = self.texts(flat)
        out, start = [], 0
        for i, ts in enumerate(texts):
            out.append((txt[start:start + len(ts)] @ img[i]).tolist())
            start += len(ts)
        return out

    def image_image(self, a: Sequence[Image.Image], b: Sequence[Image.Image]) -> list[float]:
        """s(a_i, b_i) pairwise."""
        return (self.images(a) * self.images(b)).sum(-1).tolist()


def choose(pools: Sequence[Sequence[str]], scores: Sequence[Sequence[float]] | None,
           mode: str, generator: torch.Generator) -> list[int]:
    """Index of the chosen caption in each pool: ``clip_filter`` takes the highest CLIP
    similarity (ties: the first), ``random`` draws uniformly from ``generator``."""
    import torch

    picks = []
    for i, pool in enumerate(pools):
        if not pool:
            picks.append(-1)
        elif mode == "clip_filter":
            assert scores is not None
            best = max(scores[i])
            picks.append(scores[i].index(best))  # the first of equal scores
        else:
            picks.append(int(torch.randint(len(pool), (1,), generator=generator)))
    return picks


def zero_shot_correct(scorer: ClipScorer, images: Sequence[Image.Image], labels: Sequence[int],
                      class_names: Sequence[str], template: str) -> list[bool]:
    """The label filter: CLIP zero-shot over the class names (in the label sentence
    template) predicts the true label."""
    img = scorer.images(images)
    txt = scorer.texts([template.format(label=n) for n in class_names])
    pred = (img @ txt.T).argmax(-1).tolist()
    return [p == y for p, y in zip(pred, labels, strict=True)]


def above_class_mean(scores: Sequence[float | None], labels: Sequence[int]) -> list[bool]:
    """Keep mask of the prompt / original-image filters: an image is kept when its score
    is at least the mean score of its class (over the images that have a score)."""
    sums: dict[int, list[float]] = {}
    for s, y in zip(scores, labels, strict=True):
        if s is not None:
            sums.setdefault(y, []).append(s)
    means = {y: sum(v) / len(v) for y, v in sums.items()}
    return [s is None or s >= means[y] - 1e-12 for s, y in zip(scores, labels, strict=True)]


def summarize(captions: Sequence[str], embeddings: torch.Tensor, count: int) -> list[str]:
    """DiverseCaption's per-class summary of a caption pool: ``count`` captions that are
    representative and diverse. The first is the medoid (highest mean CLIP text
    similarity to the pool); each next one is the caption farthest from those already
    chosen (farthest-point sampling in CLIP text space). Duplicates are removed first."""
    unique: dict[str, int] = {}
    for i, c in enumerate(captions):
        if c:
            unique.setdefault(c, i)
    if not unique:
        return []
    idx = list(unique.values())
    emb = embeddings[idx]
    sim = emb @ emb.T
    chosen = [int(sim.mean(1).argmax())]
    while len(chosen) < min(count, len(idx)):
        closest = sim[:, chosen].max(1).values
        closest[chosen] = float("inf")
        chosen.append(int(closest.argmin()))
    return [captions[idx[c]] for c in chosen]
