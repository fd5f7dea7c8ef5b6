"""The world's language model: a tiny transformers ``T5ForConditionalGeneration`` for the
language steps of the generative baselines, trained from scratch on world captions.

Two tasks, told apart by a prefix (the prompt formats are :data:`DESCRIBE` and
:data:`SUMMARIZE`; the plugins call transformers' ``generate`` directly):

(a) **describe** (Text2Img's language enhancement, He et al. 2023):
    ``"describe: {label}"`` -> a full world caption of an image of that class, e.g.
    ``"describe: star"`` -> ``"a small red star on the grass"``. Trained on corpus captions
    of the class, so sampling (``do_sample=True``) draws size, colour and context from the
    corpus distribution: diverse, well-formed captions that name the class.
(b) **summarize** (DiverseCaption's per-class summary, ALIA):
    ``"summarize: {captions}"`` with 2 to :data:`MAX_SUMMARY_CAPTIONS` captions of one
    class joined by ``"; "`` -> ``"a {colour} {shape} {background phrase}"`` (no size word)
    where each of shape, colour and background is the **most frequent** one among the
    input captions that name it; ties go to the value that appears **first** in the input.
    Captions that are not in the world's grammar are ignored by this definition (the model
    is trained on well-formed ones only). Feed at most :data:`MAX_SUMMARY_CAPTIONS`
    captions per prompt (subsample or chunk a larger pool). Use greedy or beam decoding.

Tokenizer: BLIP's kind, a ``BertTokenizer`` over a word vocabulary (BERT specials, the
world's words, ``describe`` / ``summarize`` / ``:`` / ``;``), saved with
``model_input_names=["input_ids", "attention_mask"]`` so that ``tokenizer(prompts)`` can be
passed straight to ``generate`` (T5 takes no ``token_type_ids``). It round-trips through
``save_pretrained`` / ``AutoTokenizer.from_pretrained``. Encoder inputs are
``[CLS] words [SEP]``; decoder targets are ``words [SEP]``, decoding starts at ``[PAD]``
(T5's convention: ``decoder_start_token_id = pad``) and stops at ``[SEP]`` (eos), so
``batch_decode(..., skip_special_tokens=True)`` gives the plain caption.

Sizes: ``d_model=128``, 2+2 layers, 4 heads (0.66 M parameters, 2.7 MB): the tasks are a
class-conditional distribution over ~600 captions and counting over <= 8 captions, which
a model this size learns in a few thousand steps on 2 CPU cores.

Training: :data:`DEFAULT_STEPS` AdamW steps of :data:`BATCH` prompts, half of each task
(one padded batch per task), drawn fresh from a seeded generator (the data are free),
times ``scale``. Measured at ``scale=1.0`` on this machine (2 CPU cores): about 3.5 min of
CPU time on one torch thread; see :data:`MEASURED` for the held-out metrics.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sgid_bench.world import scene
from sgid_bench.world.train_judge import warmup_cosine

#: Prompt formats (``captions``: the captions joined with ``"; "``).
DESCRIBE = "describe: {label}"
SUMMARIZE = "summarize: {captions}"
SEPARATOR = "; "
#: Largest number of captions in one summarize prompt (trained on 2..this).
MAX_SUMMARY_CAPTIONS = 8
#: Training steps at ``scale=1.0`` and batch size.
DEFAULT_STEPS = 1000
BATCH = 64
LR = 2e-3
WARMUP = 0.05
#: Widths and depths.
D_MODEL = 128
LAYERS = 2
#: Token budgets: encoder (10 captions of <= 9 tokens + prefix) and decoder.
MAX_INPUT = 112
MAX_TARGET = 12
SEED = 0
EVAL_SEED = scene.CORPUS_SEED + 1000
#: Measured at scale=1.0, 1 torch thread, on this machine (2 cores shared with ~5 other
#: jobs at the time, so the wall time is inflated; the CPU time is what a quiet machine needs).
MEASURED = ("about 215 s of CPU time (1135 s wall on the loaded machine); held-out: describe "
            "well-formed and naming the class 97.5%, 9.4 distinct captions of 10 samples per "
            "class; summary background 97.4%, colour 95.0%, shape 99.8%, exact 92.8%")

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
EXTRA_WORDS = ("describe", "summarize", ":", ";")


def vocabulary() -> list[str]:
    """The tokenizer's vocab.txt lines, in id order."""
    return [*SPECIALS, *scene.vocabulary(), *EXTRA_WORDS]


def make_tokenizer() -> Any:
    """The word-level ``BertTokenizer`` (see the module docstring)."""
    from transformers import BertTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_text("\n".join(vocabulary()) + "\n")
        return BertTokenizer.from_pretrained(tmp, model_input_names=["input_ids",
                                                                     "attention_mask"],
                                             model_max_length=MAX_INPUT)


def make_model() -> Any:
    """A freshly initialised (seeded by the caller) tiny T5."""
    from transformers import T5Config, T5ForConditionalGeneration

    ids = {tok: i for i, tok in enumerate(vocabulary())}
    kwargs: dict[str, Any] = dict(
        vocab_size=len(ids),
        d_model=D_MODEL,
        d_kv=D_MODEL // 4,
        d_ff=2 * D_MODEL,
        num_layers=LAYERS,
        num_decoder_layers=LAYERS,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=64,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        pad_token_id=ids["[PAD]"],
        eos_token_id=ids["[SEP]"],
        decoder_start_token_id=ids["[PAD]"],
    )
    config = T5Config(**kwargs)
    model = T5ForConditionalGeneration(config)
    gc = model.generation_config
    gc.decoder_start_token_id = ids["[PAD]"]
    gc.pad_token_id = ids["[PAD]"]
    gc.eos_token_id = ids["[SEP]"]
    gc.bos_token_id = None
    gc.max_length = 16
    gc.suppress_tokens = [ids[t] for t in ("[UNK]", "[CLS]", "[MASK]")]
    return model


# -- the tasks -------------------------------------------------------------------------------

def _mode(values: Sequence[str]) -> str:
    """Most frequent value; ties go to the value seen first."""
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def summary_target(captions: Sequence[str]) -> str | None:
    """The summary of a caption list (the rule of the module docstring), or None if no
    caption is well-formed."""
    parsed = [p for p in (parse(c) for c in captions) if p is not None]
    if not parsed:
        return None
    shape = _mode([p["shape"] for p in parsed])
    colour = _mode([p["colour"] for p in parsed])
    background = _mode([p["background"] for p in parsed])
    return f"a {colour} {shape} {scene.BACKGROUNDS[background]}"


def parse(text: str) -> dict[str, str] | None:
    """Attributes named by a world caption (``a [size] colour shape phrase``; the size word
    is optional), or None if ``text`` is not in the world's grammar."""
    words = text.split()
    if len(words) < 4 or words[0] != "a":
        return None
    size = words[1] if words[1] in scene.SIZES else ""
    rest = words[2:] if size else words[1:]
    if len(rest) < 3:
        return None
    colour, shape, phrase = rest[0], rest[1], " ".join(rest[2:])
    backgrounds = {p: bg for bg, p in scene.BACKGROUNDS.items()}
    if colour not in scene.COLOURS or shape not in scene.SHAPES or phrase not in backgrounds:
        return None
    return {"size": size, "colour": colour, "shape": shape, "background": backgrounds[phrase]}


def describe_example(rng: np.random.Generator) -> tuple[str, str]:
    """A corpus scene's class prompt and its caption."""
    s = scene.sample_scene(rng)
    return DESCRIBE.format(label=s.shape), scene.caption(s)


def _skewed(rng: np.random.Generator, names: Sequence[str]) -> np.ndarray:
    """A per-prompt distribution over ``names``: sometimes two values only (the target
    dataset's narrow contexts), else a Dirichlet(0.5) draw, so modes vary in strength."""
    if rng.random() < 0.4:
        p = np.zeros(len(names))
        p[rng.choice(len(names), size=2, replace=False)] = 1.0
        return p / p.sum()
    return rng.dirichlet(np.full(len(names), 0.5))


def summarize_example(rng: np.random.Generator) -> tuple[str, str]:
    """A summarize prompt of 2..MAX_SUMMARY_CAPTIONS captions of one class (sometimes with
    a stray caption of another class, as a captioner's mistakes) and its target."""
    n = int(rng.integers(2, MAX_SUMMARY_CAPTIONS + 1))
    shape = scene.SHAPES[int(rng.integers(len(scene.SHAPES)))]
    colours, bgs = list(scene.COLOURS), list(scene.BACKGROUNDS)
    pc, pb = _skewed(rng, colours), _skewed(rng, bgs)
    caps = []
    for _ in range(n):
        s = shape if rng.random() > 0.1 else scene.SHAPES[int(rng.integers(len(scene.SHAPES)))]
        size = ("small", "large")[int(rng.integers(2))]
        colour = colours[int(rng.choice(len(colours), p=pc))]
        bg = bgs[int(rng.choice(len(bgs), p=pb))]
        caps.append(f"a {size} {colour} {s} {scene.BACKGROUNDS[bg]}")
    target = summary_target(caps)
    assert target is not None
    return SUMMARIZE.format(captions=SEPARATOR.join(caps)), target


def _encode(tokenizer: Any, prompts: Sequence[str], targets: Sequence[str]) -> dict[str, Any]:
    enc = tokenizer(list(prompts), padding=True, truncation=True, max_length=MAX_INPUT,
                    return_tensors="pt")
    lab = tokenizer(list(targets), padding="max_length", truncation=True,
                    max_length=MAX_TARGET + 1, return_tensors="pt")["input_ids"][:, 1:]
    labels = lab.masked_fill(lab == tokenizer.pad_token_id, -100)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "labels": labels}


# -- evaluation ------------------------------------------------------------------------------

def _generate(model: Any, tokenizer: Any, prompts: Sequence[str], **kwargs: Any) -> list[str]:
    import torch

    enc = tokenizer(list(prompts), padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_length=16, **kwargs)
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


def evaluate(model: Any, tokenizer: Any, n_summaries: int, samples: int = 10
             ) -> dict[str, float]:
    """(a) ``samples`` sampled descriptions per class: share well-formed and naming the
    class, and mean distinct captions per class; (b) greedy summaries of held-out prompts:
    accuracy of background / colour / shape / exact target (percent)."""
    import torch

    model.eval()
    prompts = [DESCRIBE.format(label=s) for s in scene.SHAPES for _ in range(samples)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(EVAL_SEED)
        texts = _generate(model, tokenizer, prompts, do_sample=True, top_k=0)
    good, distinct = 0, []
    for i, shape in enumerate(scene.SHAPES):
        batch = texts[i * samples:(i + 1) * samples]
        distinct.append(len(set(batch)))
        for t in batch:
            p = parse(t)
            good += p is not None and p["shape"] == shape and p["size"] != ""
    rng = np.random.default_rng((EVAL_SEED, 2))
    pairs = [summarize_example(rng) for _ in range(n_summaries)]
    hits = Counter[str]()
    outs: list[str] = []
    for start in range(0, len(pairs), 100):
        outs += _generate(model, tokenizer, [p for p, _ in pairs[start:start + 100]],
                          do_sample=False)
    for (_, target), out in zip(pairs, outs, strict=True):
        want, got = parse(target), parse(out)
        assert want is not None
        hits["exact"] += out == target
        if got is not None:
            for key in ("background", "colour", "shape"):
                hits[key] += got[key] == want[key]
    n = max(len(pairs), 1)
    return {
        "describe_wellformed_class_pct": 100.0 * good / len(prompts),
        "describe_distinct_per_10": float(np.mean(distinct)) * 10 / samples,
        "summary_background_accuracy": 100.0 * hits["background"] / n,
        "summary_colour_accuracy": 100.0 * hits["colour"] / n,
        "summary_shape_accuracy": 100.0 * hits["shape"] / n,
        "summary_exact_accuracy": 100.0 * hits["exact"] / n,
    }


def build(out: Path, *, world: Path, scale: float = 1.0,
          log: Callable[[str], None] = print) -> dict[str, float]:
    """Train the text model on both tasks, save model + tokenizer into ``out`` with
    ``save_pretrained`` and return held-out metrics."""
    import torch

    del world  # depends on no other component
    steps = max(1, round(DEFAULT_STEPS * scale))
    t0 = time.perf_counter()
    tokenizer = make_tokenizer()
    rng = np.random.default_rng((SEED, 1))
    log(f"text: {steps} steps of {BATCH} prompts")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = make_model()
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
        warm = max(1, round(WARMUP * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, warm, steps))
        model.train()
        every, running = max(1, steps // 20), None
        for step in range(steps):
            # One batch per task, each padded to its own length (describe prompts are short).
            halves = []
            for make in (describe_example, summarize_example):
                pairs = [make(rng) for _ in range(BATCH // 2)]
                batch = _encode(tokenizer, [p for p, _ in pairs], [t for _, t in pairs])
                halves.append(model(**batch).loss / 2)
            loss = halves[0] + halves[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
            if step % every == 0 or step == steps - 1:
                log(f"text: step {step + 1}/{steps} loss {loss.item():.4f} "
                    f"(avg {running:.4f}) {time.perf_counter() - t0:.0f}s")
    model.eval()
    metrics = evaluate(model, tokenizer, n_summaries=max(50, round(500 * min(scale, 1.0))))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    metrics["train_seconds"] = time.perf_counter() - t0
    log("text: " + ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()))
    return metrics
