"""Stable Diffusion side of the generative augmenters: loading, weighted prompt
embeddings, and pipelines whose classifier-free guidance follows the guidance scale
exactly (including g <= 1 and a different g per image).

Heavy libraries are imported inside functions: this module is imported by the plugin
classes, which ``sgid-bench list`` loads.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from sgid_bench.context import Context

#: A prompt as weighted pieces, e.g. [("A picture of a cat", 1.5), (", ", 1.0), ("a cat
#: on a sofa", 0.9)]; the pieces are joined without separators.
WeightedPrompt = Sequence[tuple[str, float]]

#: ``scheduler`` parameter -> diffusers class name; "default" keeps the model's own.
SCHEDULERS = {
    "default": None,
    "pndm": "PNDMScheduler",
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
}

KINDS = ("img2img", "text2img", "pix2pix")


def guidance_from_score(score: float) -> float:
    """The paper's guidance mapping g = -4 s^2 + 2 s + 1 of a CLIP similarity s.

    g peaks at 1.25 for s = 0.25, is 1 at s = 0 and s = 0.5, and drops below 1 (guidance
    towards the unconditional prediction) for s > 0.5."""
    return -4.0 * score * score + 2.0 * score + 1.0


def check_scheduler(name: str) -> None:
    from sgid_bench.errors import UserError

    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {name!r}: use one of {', '.join(SCHEDULERS)}")


@functools.cache
def guided_class(kind: str) -> Any:
    """A subclass of the diffusers pipeline ``kind`` whose classifier-free guidance is
    always on, so ``noise = uncond + g * (cond - uncond)`` is applied for every g.

    Stock diffusers switches guidance off when ``guidance_scale <= 1``, which would turn
    the paper's mapped g (often ~1) into "conditional only" for g < 1. The scale may also
    be a tensor of shape (B, 1, 1, 1): the pipelines multiply it elementwise, so each image
    of a batch gets its own g."""
    import diffusers

    base = {
        "img2img": diffusers.StableDiffusionImg2ImgPipeline,
        "text2img": diffusers.StableDiffusionPipeline,
        "pix2pix": diffusers.StableDiffusionInstructPix2PixPipeline,
    }[kind]

    class Guided(base):  # type: ignore[valid-type, misc]
        @property
        def do_classifier_free_guidance(self) -> bool:
            return True

    Guided.__name__ = Guided.__qualname__ = f"Guided{base.__name__}"
    return Guided


@dataclass
class Components:
    """The loaded model parts of a Stable Diffusion family checkpoint."""

    modules: dict[str, Any]
    device: str
    dtype: Any  # torch.dtype


def quiet_libraries() -> None:
    """Silence the libraries' own loading bars and info logs: the cache shows progress."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()


@contextlib.contextmanager
def diffusers_deprecations_off() -> Iterator[None]:
    """No DeprecationWarning from diffusers inside: the Euler schedulers build their sigmas
    with np.array(tensor), which numpy 2 flags on every construction (not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="diffusers.*")
        yield


def dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """``from_pretrained`` dtype argument: diffusers renamed ``torch_dtype`` to ``dtype``."""
    import diffusers.utils.deprecation_utils as dep

    return {"dtype": dtype} if hasattr(dep, "_resolve_dtype") else {"torch_dtype": dtype}


@functools.lru_cache(maxsize=4)
def _load(path: str, kind: str, device: str, half: bool) -> Components:
    # Cached per process: `text2img+sgid` loads Stable Diffusion once for both stages.
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    quiet_libraries()
    dtype = torch.float16 if half else torch.float32
    with diffusers_deprecations_off():  # InstructPix2Pix ships an Euler scheduler
        pipe = guided_class(kind).from_pretrained(
            path, **dtype_kwarg(dtype), safety_checker=None, requires_safety_checker=False,
            local_files_only=True,
        )
    pipe.to(device)
    # SDPA explicitly (it is also diffusers' default on torch 2).
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    return Components(dict(pipe.components), device, dtype)


def load_pipeline(model_id: str, kind: str, context: Context, scheduler: str = "default") -> Any:
    """A guided pipeline of ``kind`` ("img2img", "text2img", "pix2pix") for ``model_id``,
    on the context's device (fp16 on CUDA), with its own scheduler instance.

    ``text2img`` shares the img2img checkpoint (same Stable Diffusion)."""
    import diffusers

    from sgid_bench.models import resolve

    check_scheduler(scheduler)
    stored = "pix2pix" if kind == "pix2pix" else "img2img"
    arch = "instruct_pix2pix" if stored == "pix2pix" else "stable_diffusion"
    path = resolve(model_id, context, kind=arch,
                   role="pix2pix generator" if stored == "pix2pix" else "generator")
    half = context.device.startswith("cuda")
    parts = _load(str(path), stored, context.device, half)
    modules = dict(parts.modules)
    # Schedulers keep per-call state: never share one between pipelines.
    sched_cls = SCHEDULERS[scheduler]
    base_sched = modules["scheduler"]
    cls = getattr(diffusers, sched_cls) if sched_cls else type(base_sched)
    with diffusers_deprecations_off():
        modules["scheduler"] = cls.from_config(base_sched.config)
    pipe = guided_class(kind)(**modules)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode_weighted(pipe: Any, prompts: Sequence[WeightedPrompt]) -> torch.Tensor:
    """Text-encoder embeddings (B, L, D) of prompts given as weighted pieces: each piece's
    token embeddings are multiplied by its weight (start / end / padding tokens keep 1).

    Pieces are tokenized separately and concatenated, so every token's piece is known
    exactly; CLIP's pre-tokenizer splits at spaces and punctuation, so for the prompts
    built here this gives the same tokens as tokenizing the joined text."""
    import torch

    ids, weights = token_weights(pipe.tokenizer, prompts)
    device = pipe.text_encoder.device
    with torch.no_grad():
        hidden = pipe.text_encoder(torch.tensor(ids, device=device))[0]
    w = torch.tensor(weights, device=device, dtype=hidden.dtype).unsqueeze(-1)
    return hidden * w


def token_weights(tokenizer: Any, prompts: Sequence[WeightedPrompt]) -> tuple[list[list[int]],
                                                                              list[list[float]]]:
    """Token ids padded to the tokenizer's length, and one weight per token."""
    length = tokenizer.model_max_length
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    all_ids, all_w = [], []
    for pieces in prompts:
        ids, w = [bos], [1.0]
        for text, weight in pieces:
            toks = tokenizer(text, add_special_tokens=False).input_ids  # "" gives []
            ids += toks
            w += [float(weight)] * len(toks)
        ids, w = ids[: length - 1] + [eos], w[: length - 1] + [1.0]
        all_ids.append(ids + [pad] * (length - len(ids)))
        all_w.append(w + [1.0] * (length - len(w)))
    return all_ids, all_w


def unconditional(pipe: Any, batch: int) -> torch.Tensor:
    """Embeddings of the empty prompt, the unconditional branch of guidance."""
    return encode_weighted(pipe, [[]] * batch)  # no pieces: start, end and padding only


def guidance_tensor(pipe: Any, scales: Sequence[float]) -> torch.Tensor:
    """Per-image guidance scales as a (B, 1, 1, 1) tensor on the UNet's device and dtype."""
    import torch

    return torch.tensor(list(scales), device=pipe.unet.device, dtype=pipe.unet.dtype).view(
        -1, 1, 1, 1
    )


def run(
    pipe: Any,
    kind: str,
    prompts: Sequence[WeightedPrompt],
    guidance: Sequence[float],
    generator: torch.Generator,
    *,
    images: Sequence[Image.Image] | None = None,
    size: int = 512,
    steps: int = 50,
    strength: float = 0.5,
    image_guidance: float = 1.5,
) -> list[Image.Image]:
    """One batched call of a guided pipeline; returns PIL images at ``size``.

    ``guidance`` holds one g per prompt, applied exactly (g = 1 is the conditional
    prediction, g < 1 moves towards the unconditional one)."""
    import torch

    batch = len(prompts)
    kwargs: dict[str, Any] = dict(
        prompt_embeds=encode_weighted(pipe, prompts),
        negative_prompt_embeds=unconditional(pipe, batch),
        guidance_scale=guidance_tensor(pipe, guidance),
        num_inference_steps=steps,
        generator=generator,
        output_type="pil",
    )
    if kind == "text2img":
        kwargs.update(height=size, width=size)
    else:
        if images is None or len(images) != batch:
            raise ValueError(f"{kind} needs one source image per prompt")
        kwargs["image"] = [im.convert("RGB").resize((size, size)) for im in images]
        if kind == "img2img":
            kwargs["strength"] = strength
        else:
            kwargs["image_guidance_scale"] = image_guidance
    with torch.inference_mode(), diffusers_deprecations_off():  # Euler's set_timesteps
        return list(pipe(**kwargs).images)
