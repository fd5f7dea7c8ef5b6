"""The world's captioner: a transformers ``BlipForConditionalGeneration`` trained on the
corpus (``render(s) -> caption(s)``), the toy stand-in for BLIP.

Vision encoder: as the real BLIP starts its ViT from an ImageNet-pretrained one, this one
starts from the world's pretrained ViT (``world / "vit"``, the ``ViTModel`` saved by
:mod:`sgid_bench.world.train_vit`, built before the captioner): BLIP's vision config takes
the ViT's widths, depth, heads, patch and image size, and :func:`load_vit_weights` copies
its weights over (query / key / value into BLIP's fused ``qkv``; the ViT's final layer norm
becomes ``post_layernorm``), so before fine-tuning BLIP's ``last_hidden_state`` is the ViT's.
The pixel normalisation difference (the ViT was trained on mean = std = 0.5, BLIP's image
processor defaults to CLIP's mean / std) is handled by saving the ``BlipImageProcessor``
with the ViT's mean / std (:func:`make_processor`), so the weights need no folding. Without
``world / "vit"`` (e.g. a test world) the vision encoder is trained from scratch
(:data:`HIDDEN` x :data:`VISION_LAYERS`, position embeddings from :data:`POSITION_INIT`):
it learns colour, size and context quickly but the shape slowly (32 % class accuracy at
``scale=1.0``).

What is trained: the whole model (the ViT image encoder at :data:`VISION_LR_FACTOR` times
the learning rate when pretrained, and the BERT-style text decoder with cross-attention to
the image tokens, from scratch) with BLIP's captioning loss (next-token cross entropy of
``[DEC] caption [SEP]`` given the image), plus an auxiliary shape-classification loss on
the image encoder's final CLS token (:data:`AUX_WEIGHT`; a linear head that is discarded,
so the saved model is a plain ``BlipForConditionalGeneration``). The image-text matching
heads of the real BLIP are not part of ``BlipForConditionalGeneration`` and are not needed
for captioning. After training, the LM head's bias of the special tokens that never occur
in a caption is set to -1e4 (:func:`forbid_special_tokens`).

Tokenizer: a ``BertTokenizer`` over a word vocabulary (the BERT specials, every word of
:func:`scene.vocabulary`, then ``[DEC]`` / ``[ENC]``) loaded with ``bos_token="[DEC]"``:
the construction of :func:`sgid_bench.tiny_generative.build_blip`, so the harness decodes
the captions exactly as it decodes a hub BLIP's (``[DEC]`` starts, ``[SEP]`` ends).

Sizes: 32x32 images in 4x4 patches (64 image tokens: the shapes are a few pixels wide, so
coarser patches lose the difference between e.g. a hexagon and a circle); the vision
encoder is the world ViT's (hidden 96 x 4 layers, 3 heads, MLP 384), the text decoder
``hidden=96`` x 2 layers, 4 heads: about 0.77 M parameters (3.1 MB of fp32 safetensors).
The captions are a fixed 8-word grammar, so the decoder needs little capacity; the cost is
in the 65-token ViT.

Training: :data:`DEFAULT_IMAGES` corpus images (rendered once), :data:`DEFAULT_STEPS`
AdamW steps of :data:`BATCH` images, linear warm-up then cosine decay; both counts are
multiplied by ``scale``. Measured at ``scale=1.0`` on this machine (2 CPU cores, one torch
thread): see :data:`MEASURED`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sgid_bench.models import transformers_progress_off
from sgid_bench.world import scene
from sgid_bench.world.train_judge import batch_indices, warmup_cosine

#: Training steps and corpus images at ``scale=1.0``.
DEFAULT_STEPS = 1600
DEFAULT_IMAGES = 24000
BATCH = 64
LR = 1e-3
WARMUP = 0.05
#: Held-out images for the final metrics (not scaled below :data:`MIN_EVAL`).
EVAL_IMAGES = 300
MIN_EVAL = 24
#: Seeds: weights / batch order, and the held-out corpus stream.
SEED = 0
EVAL_SEED = scene.CORPUS_SEED + 1000
#: Learning rate of the vision encoder when it starts from the world's ViT, as a fraction
#: of :data:`LR` (the text decoder, trained from scratch, always runs at :data:`LR`).
VISION_LR_FACTOR = 0.3
#: Weight of the auxiliary shape-classification loss on the image encoder's pooled output
#: (the head is discarded): it makes the ViT learn the shapes several times sooner than
#: the caption loss alone does (0: caption loss only).
AUX_WEIGHT = 1.0
#: The ViT's position embeddings start as this times a 2-D sine-cosine table (MAE's)
#: instead of BLIP's default (normal with std ``vision_config.initializer_range`` = 1e-10,
#: i.e. zeros: meant for loading pretrained weights, it leaves a ViT trained from scratch
#: blind to where its patches are); 0 keeps BLIP's default.
POSITION_INIT = 0.2
#: Development aid: every this many steps, log the class accuracy of 100 held-out images
#: (0: never).
PROBE_EVERY = 0
#: Tokens of a caption: ``[DEC]`` + at most 8 words + ``[SEP]``.
MAX_TOKENS = 12
#: Widths and depths (see the module docstring).
HIDDEN = 96
VISION_LAYERS = 3
TEXT_LAYERS = 2
PATCH = 4
#: Measured at scale=1.0 (1600 steps), 1 torch thread, on this machine (2 cores shared with
#: other jobs), vision encoder from a world ViT of 96.3 % held-out shape accuracy. The
#: captioner's class accuracy follows its ViT's (86.0 % from a 78.9 % ViT at 1000 steps;
#: from scratch, without a ViT: 32.3 %).
MEASURED = ("560 s wall on the loaded machine; held-out beam captions (300 images): class "
            "97.3%, colour 100%, background 99.7%, size 99.7%, exact 96.7%, well-formed 100%")

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def vocabulary() -> list[str]:
    """The tokenizer's vocab.txt lines, in id order."""
    return [*SPECIALS, *scene.vocabulary(), "[DEC]", "[ENC]"]


def make_tokenizer() -> Any:
    """BLIP's BERT tokenizer over the world's words, ``[DEC]`` as bos."""
    from transformers import BertTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_text("\n".join(vocabulary()) + "\n")
        return BertTokenizer.from_pretrained(tmp, bos_token="[DEC]")


def make_processor(vit: Path | None = None) -> Any:
    """``BlipProcessor``: a 32x32 ``BlipImageProcessor`` with its default (CLIP) mean / std,
    or with the mean / std of the ViT saved in ``vit`` (whose weights the vision encoder
    starts from, so that it sees the pixels normalised as in its pretraining)."""
    from transformers import BlipImageProcessor, BlipProcessor

    size = {"height": scene.SIZE, "width": scene.SIZE}
    norm: dict[str, Any] = {}
    if vit is not None:
        from transformers import ViTImageProcessor

        vit_processor = ViTImageProcessor.from_pretrained(vit, local_files_only=True)
        norm = {"image_mean": list(vit_processor.image_mean),
                "image_std": list(vit_processor.image_std)}
    return BlipProcessor(image_processor=BlipImageProcessor(size=size, **norm),
                         tokenizer=make_tokenizer())


def vision_config_from_vit(vit_config: Any) -> dict[str, Any]:
    """BLIP ``vision_config`` entries that make its vision encoder the same network as a
    transformers ``ViTModel`` of ``vit_config`` (same widths, depth, heads, patches, layer
    norm epsilon and activation)."""
    return {
        "hidden_size": vit_config.hidden_size,
        "intermediate_size": vit_config.intermediate_size,
        "num_hidden_layers": vit_config.num_hidden_layers,
        "num_attention_heads": vit_config.num_attention_heads,
        "image_size": vit_config.image_size,
        "patch_size": vit_config.patch_size,
        "layer_norm_eps": vit_config.layer_norm_eps,
        "hidden_act": vit_config.hidden_act,
    }


def make_model(vit: Any = None) -> Any:
    """A freshly initialised (seeded by the caller) captioner; given a ``ViTModel``, its
    vision encoder has the ViT's shape and weights (:func:`load_vit_weights`)."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    ids = {tok: i for i, tok in enumerate(vocabulary())}
    hidden = HIDDEN
    vision: dict[str, Any] = {
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": VISION_LAYERS,
        "num_attention_heads": 4,
        "image_size": scene.SIZE,
        "patch_size": PATCH,
    }
    if vit is not None:
        vision = vision_config_from_vit(vit.config)
    config = BlipConfig(
        text_config={
            "vocab_size": len(ids),
            "hidden_size": hidden,
            "encoder_hidden_size": vision["hidden_size"],
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": TEXT_LAYERS,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
            "bos_token_id": ids["[DEC]"],
            "eos_token_id": ids["[SEP]"],
            "sep_token_id": ids["[SEP]"],
            "pad_token_id": ids["[PAD]"],
        },
        vision_config=vision,
        projection_dim=hidden,
    )
    model = BlipForConditionalGeneration(config)
    _set_generation_config(model)
    if vit is not None:
        load_vit_weights(model.vision_model, vit)
    elif POSITION_INIT:
        import torch

        emb = model.vision_model.embeddings.position_embedding
        with torch.no_grad():
            emb[0, 1:] = POSITION_INIT * _sincos_2d(hidden, scene.SIZE // PATCH)
            emb[0, 0] = 0.0
    return model


def load_vit_weights(vision_model: Any, vit: Any) -> None:
    """Copy a transformers ``ViTModel``'s weights into a ``BlipVisionModel`` of the same
    shape (:func:`vision_config_from_vit`), so that BLIP's ``last_hidden_state`` equals the
    ViT's for the same ``pixel_values``: patch conv, CLS token, position embeddings; per
    layer the two layer norms, query / key / value stacked into BLIP's fused ``qkv`` (its
    output splits as ``(3, heads, head_dim)``: rows ``[q; k; v]``), the attention output
    projection and the MLP; the ViT's final layer norm becomes BLIP's ``post_layernorm``.
    The ViT's pooler has no BLIP counterpart and is dropped."""
    import torch

    src = vit.state_dict()  # transformers 5 module names (the checkpoint's keys differ)
    dst: dict[str, Any] = {
        "embeddings.class_embedding": src["embeddings.cls_token"],
        "embeddings.position_embedding": src["embeddings.position_embeddings"],
        "embeddings.patch_embedding.weight": src["embeddings.patch_embeddings.projection.weight"],
        "embeddings.patch_embedding.bias": src["embeddings.patch_embeddings.projection.bias"],
        "post_layernorm.weight": src["layernorm.weight"],
        "post_layernorm.bias": src["layernorm.bias"],
    }
    pairs = {"self_attn.projection": "attention.o_proj", "layer_norm1": "layernorm_before",
             "layer_norm2": "layernorm_after", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(vit.config.num_hidden_layers):
        a, b = f"layers.{i}.", f"encoder.layers.{i}."
        qkv = [a + f"attention.{n}_proj." for n in "qkv"]
        dst[b + "self_attn.qkv.weight"] = torch.cat([src[n + "weight"] for n in qkv])
        dst[b + "self_attn.qkv.bias"] = torch.cat(  # a ViT with qkv_bias=False has none
            [src.get(n + "bias", torch.zeros(vit.config.hidden_size)) for n in qkv])
        for kind in ("weight", "bias"):
            for blip_name, vit_name in pairs.items():
                dst[f"{b}{blip_name}.{kind}"] = src[f"{a}{vit_name}.{kind}"]
    vision_model.load_state_dict(dst, strict=True)  # raises on a missing or extra key


def load_vit(world: Path) -> tuple[Path, Any] | None:
    """The world's pretrained ViT (``world / "vit"``, :mod:`sgid_bench.world.train_vit`)
    as ``(its directory, ViTModel)``, or None when it has not been built."""
    path = world / "vit"
    if not (path / "config.json").is_file():
        return None
    from transformers import ViTModel

    with transformers_progress_off():
        vit = ViTModel.from_pretrained(path, local_files_only=True)
    return path, vit.eval()


def _sincos_2d(dim: int, grid: int) -> Any:
    """MAE's fixed 2-D sine-cosine position embedding, ``(grid * grid, dim)``, row-major
    patches as BLIP's patch embedding flattens them."""
    import torch

    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                            torch.arange(grid, dtype=torch.float64), indexing="ij")
    parts = []
    for coord in (xs.reshape(-1), ys.reshape(-1)):
        angles = coord[:, None] * omega[None, :]
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1).float()


def _set_generation_config(model: Any) -> None:
    """Generation defaults that match the training sequences (``[DEC] ... [SEP]``)."""
    text = model.config.text_config
    for gc in (model.generation_config, model.text_decoder.generation_config):
        gc.bos_token_id = text.bos_token_id
        gc.decoder_start_token_id = text.bos_token_id
        gc.eos_token_id = text.sep_token_id
        gc.pad_token_id = text.pad_token_id
        gc.max_length = 20


#: Output bias of the tokens a caption never contains (set after training).
FORBIDDEN_BIAS = -1e4


def forbid_special_tokens(model: Any) -> None:
    """Only words and ``[SEP]`` may be generated: the LM head's bias of every other special
    token is set to :data:`FORBIDDEN_BIAS` (a model trained briefly must not leak ``[ENC]``
    or ``[UNK]``, which ``skip_special_tokens`` keeps, into captions). Done on the weights
    because BLIP's ``generate`` runs its text decoder's own generation config, which
    ``save_pretrained`` does not keep."""
    import torch

    ids = [i for i, tok in enumerate(vocabulary())
           if tok in (*SPECIALS, "[DEC]", "[ENC]") and tok != "[SEP]"]
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[ids] = FORBIDDEN_BIAS


def pixel_values(images: Sequence[Any], processor: Any) -> Any:
    """The processor's normalisation, vectorised (identical to ``processor(images=...)``
    for 32x32 RGB images: rescale by 1/255, then the processor's mean / std)."""
    import numpy as np
    import torch

    ip = processor.image_processor
    x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images]))
    x = x.permute(0, 3, 1, 2).float() * float(ip.rescale_factor)
    mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


def caption_ids(captions: Sequence[str], tokenizer: Any) -> Any:
    """``[DEC] words [SEP] [PAD]...`` as a (N, MAX_TOKENS) long tensor."""
    import torch

    enc = tokenizer(list(captions), padding="max_length", max_length=MAX_TOKENS,
                    truncation=True, return_tensors="pt")
    ids = enc["input_ids"].clone()
    ids[:, 0] = tokenizer.bos_token_id  # [CLS] -> [DEC], as BLIP's training does
    assert bool((ids == tokenizer.unk_token_id).sum() == 0), "caption word not in the vocabulary"
    return torch.as_tensor(ids)


def parse(text: str) -> dict[str, str] | None:
    """The attributes named by a caption in the world's grammar, or None if it is not a
    well-formed world caption."""
    words = text.split()
    if len(words) < 5 or words[0] != "a":
        return None
    size, colour, shape, rest = words[1], words[2], words[3], " ".join(words[4:])
    backgrounds = {phrase: bg for bg, phrase in scene.BACKGROUNDS.items()}
    if size not in scene.SIZES or colour not in scene.COLOURS or shape not in scene.SHAPES:
        return None
    if rest not in backgrounds:
        return None
    return {"size": size, "colour": colour, "shape": shape, "background": backgrounds[rest]}


def evaluate(model: Any, processor: Any, scenes: Sequence[scene.Scene],
             batch: int = 100) -> dict[str, float]:
    """Beam-search (3 beams, best beam) caption accuracy per attribute, in percent, and
    the share of well-formed captions, as :class:`plugins.captioning.Captioner` decodes."""
    import torch

    hits = {"class": 0, "colour": 0, "background": 0, "size": 0, "exact": 0, "wellformed": 0}
    model.eval()
    for start in range(0, len(scenes), batch):
        part = scenes[start:start + batch]
        pixels = pixel_values([scene.render(s) for s in part], processor)
        with torch.inference_mode():
            out = model.generate(pixel_values=pixels, min_length=5, max_length=20,
                                 num_beams=3, num_return_sequences=1, do_sample=False)
        texts = [t.strip() for t in processor.batch_decode(out, skip_special_tokens=True)]
        for s, text in zip(part, texts, strict=True):
            got = parse(text)
            hits["exact"] += text == scene.caption(s)
            if got is None:
                continue
            hits["wellformed"] += 1
            hits["class"] += got["shape"] == s.shape
            hits["colour"] += got["colour"] == s.colour
            hits["background"] += got["background"] == s.background
            hits["size"] += got["size"] == s.size
    n = max(len(scenes), 1)
    return {f"caption_{k}_accuracy" if k not in ("wellformed",) else "caption_wellformed_pct":
            100.0 * v / n for k, v in hits.items()}


def build(out: Path, *, world: Path, scale: float = 1.0,
          log: Callable[[str], None] = print) -> dict[str, float]:
    """Train the captioner on the corpus, save model + processor into ``out`` with
    ``save_pretrained`` and return held-out caption accuracies (percent)."""
    import torch

    pretrained = load_vit(world)
    steps = max(1, round(DEFAULT_STEPS * scale))
    n_images = max(BATCH, round(DEFAULT_IMAGES * scale))
    n_eval = max(MIN_EVAL, round(EVAL_IMAGES * min(scale, 1.0)))
    t0 = time.perf_counter()
    processor = make_processor(pretrained[0] if pretrained else None)
    scenes = scene.corpus_scenes(n_images)
    pixels = pixel_values([scene.render(s) for s in scenes], processor)
    ids = caption_ids([scene.caption(s) for s in scenes], processor.tokenizer)
    pad = processor.tokenizer.pad_token_id
    shapes = torch.tensor([s.label for s in scenes])
    log(f"blip: {n_images} corpus images rendered in {time.perf_counter() - t0:.1f}s; "
        f"{steps} steps of {BATCH}; vision encoder "
        + (f"from the ViT in {pretrained[0]}" if pretrained else "from scratch"))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = make_model(pretrained[1] if pretrained else None)
        gen = torch.Generator().manual_seed(SEED + 1)
        # Auxiliary shape classifier on the image encoder's final CLS token (discarded).
        head = torch.nn.Linear(model.config.vision_config.hidden_size, len(scene.SHAPES))
        params = [*model.named_parameters(), *(("head." + n, p)
                                               for n, p in head.named_parameters())]
        vision_lr = LR * (VISION_LR_FACTOR if pretrained else 1.0)
        groups = []
        for decays in (True, False):
            for vision in (True, False):
                chosen = [p for n, p in params
                          if (p.ndim >= 2 and "embed" not in n) == decays
                          and n.startswith("vision_model.") == vision]
                groups.append({"params": chosen, "weight_decay": 0.05 if decays else 0.0,
                               "lr": vision_lr if vision else LR})
        opt = torch.optim.AdamW(groups, lr=LR)
        warm = max(1, round(WARMUP * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, warm, steps))
        model.train()
        every = max(1, steps // 20)
        probe = scene.corpus_scenes(100, seed=EVAL_SEED + 1)
        running = None
        for step, idx in enumerate(batch_indices(n_images, BATCH, steps, gen)):
            x = ids[idx]
            labels = x.masked_fill(x == pad, -100)
            # BlipForConditionalGeneration.forward, unrolled to reach the pooled image.
            vision = model.vision_model(pixel_values=pixels[idx])
            loss = model.text_decoder(input_ids=x, attention_mask=(x != pad).long(),
                                      encoder_hidden_states=vision.last_hidden_state,
                                      labels=labels, reduction="mean").loss
            if AUX_WEIGHT:
                cls = vision.last_hidden_state[:, 0]
                aux = torch.nn.functional.cross_entropy(head(cls), shapes[idx])
                loss = loss + AUX_WEIGHT * aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
            if step % every == 0 or step == steps - 1:
                log(f"blip: step {step + 1}/{steps} loss {loss.item():.4f} "
                    f"(avg {running:.4f}) {time.perf_counter() - t0:.0f}s")
            if PROBE_EVERY and (step + 1) % PROBE_EVERY == 0:
                acc = evaluate(model, processor, probe)["caption_class_accuracy"]
                model.train()
                log(f"blip: step {step + 1} held-out class accuracy {acc:.1f}%")
    model.eval()
    forbid_special_tokens(model)
    metrics = evaluate(model, processor, scene.corpus_scenes(n_eval, seed=EVAL_SEED))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    metrics["train_seconds"] = time.perf_counter() - t0
    log("blip: " + ", ".join(f"{k}={v:.1f}" for k, v in metrics.items()))
    return metrics
