"""The language model of the generative baselines: a transformers seq2seq model
(``AutoModelForSeq2SeqLM``) that turns a label into sentences (Text2Img's language
enhancement) or a class's captions into summaries (DiverseCaption, as ALIA does).

Model ids per profile: the paper's word-to-sentence T5 (fine-tuned on CommonGen, as He et
al. 2023 use), the toy world's trained T5 (quick) and a tiny random one (tiny). Heavy
libraries are imported inside functions (``sgid-bench list`` imports this module).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from sgid_bench.context import Context

#: Role -> model id per model set.
PAPER_TEXT = {"describe": "mrm8488/t5-base-finetuned-common_gen",
              "summarize": "google/flan-t5-base"}
#: Prompt formats per model set: CommonGen takes space-separated concepts; FLAN-T5 follows
#: instructions; the world's model was trained on ``describe:`` / ``summarize:`` prompts.
PAPER_PROMPTS = {"describe": "{label}",
                 "summarize": "Summarize the setting of these photo captions: {captions}"}
WORLD_PROMPTS = {"describe": "describe: {label}", "summarize": "summarize: {captions}"}
#: Captions joined into one summarize prompt, and at most this many per prompt.
SEPARATOR = "; "
MAX_CAPTIONS = 8


def model_id(task: str, override: str, context: Context) -> str:
    """The model id of ``task`` ("describe" or "summarize") for the context's profile."""
    from sgid_bench.models import for_profile, pin

    if override:  # pinned to the weights on disk, like the profile's own ids
        return pin(override, context)
    return for_profile(context, tiny="tiny/t5", world="text", paper=PAPER_TEXT[task])


def prompt_format(task: str, override: str, context: Context) -> str:
    if override:
        return override
    return PAPER_PROMPTS[task] if context.model_set == "paper" else WORLD_PROMPTS[task]


class LanguageModel:
    """Generation with a seq2seq model: seeded sampling or beam search."""

    def __init__(self, mid: str, context: Context, max_length: int = 24) -> None:
        from sgid_bench.models import resolve

        path = resolve(mid, context, role="language model")
        self.model, self.tokenizer = _load(str(path), context.device)
        self.device, self.max_length = context.device, max_length

    def _generate(self, prompts: Sequence[str], **kwargs: Any) -> list[str]:
        import torch

        enc = self.tokenizer(list(prompts), padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            # A few tokens at least: an empty sentence or summary is never what is asked.
            out = self.model.generate(**enc, max_length=self.max_length, min_new_tokens=3,
                                      **kwargs)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def sample(self, prompts: Sequence[str], top_p: float, generator: torch.Generator
               ) -> list[str]:
        """One nucleus-sampled output per prompt; randomness from ``generator`` (generate
        samples from torch's global RNG, so it runs in a seeded fork)."""
        import torch

        if not prompts:
            return []
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        cuda = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            return self._generate(prompts, do_sample=True, top_p=top_p, top_k=0)

    def beam(self, prompts: Sequence[str], num_beams: int = 3) -> list[str]:
        """The best beam per prompt (deterministic)."""
        if not prompts:
            return []
        return self._generate(prompts, num_beams=num_beams, do_sample=False)


@functools.lru_cache(maxsize=2)
def _load(path: str, device: str) -> tuple[Any, Any]:
    # Cached per process: Text2Img and DiverseCaption share one model.
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from sgid_bench_plugins.diffusion import quiet_libraries

    quiet_libraries()
    model: Any = AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.to(device).eval(), tokenizer


def summary_prompts(captions: Sequence[str], count: int, template: str) -> list[str]:
    """Up to ``count`` summarize prompts over a caption pool: the pool is dealt round-robin
    into ``count`` groups of at most :data:`MAX_CAPTIONS` captions, so each summary sees a
    different part of the pool (ALIA summarises a class's captions into a few settings)."""
    pool = [c for c in captions if c]
    groups: list[list[str]] = [[] for _ in range(min(count, len(pool)))]
    for i, c in enumerate(pool):
        group = groups[i % len(groups)]
        if len(group) < MAX_CAPTIONS:
            group.append(c)
    return [template.format(captions=SEPARATOR.join(g)) for g in groups if g]
