"""Train the world's Stable Diffusion: a diffusers v1-layout pipeline at 32x32.

What is trained, on what:

1. an ``AutoencoderKL`` (2 blocks: scale factor 2, 16x16x4 latents) on corpus renders with
   an L2 + L1 reconstruction loss and a small KL term; then frozen, and its
   ``scaling_factor`` set from the latent standard deviation of the corpus (as Stable
   Diffusion's 0.18215 was chosen);
2. a ``UNet2DConditionModel`` (three levels 16/8/4, cross-attention at 8x8 and 4x4) by the
   DDPM noise-prediction loss on Stable Diffusion v1-5's noise schedule (scaled_linear
   0.00085..0.012, 1000 steps), conditioned on a FROZEN pretrained text encoder as in real
   Stable Diffusion: the text tower of the world's CLIP (component ``"clip"``, trained
   contrastively on the world's captions and label sentences) converted exactly into a
   transformers ``CLIPTextModel`` (:func:`text_encoder_from_open_clip`; the pipelines use
   its ``last_hidden_state``, i.e. after the final layer norm). Prompts are the corpus
   captions, the label sentences ("A picture of a star"), and both joined as SGID writes
   them; 10% are dropped to "" so classifier-free guidance works. The UNet's weights are an
   EMA of training. The text encoder's outputs are computed once per distinct prompt.

The tokenizer is the CLIP BPE (``CLIPTokenizer``) pruned to the world's words
(:func:`pruned_clip_bpe`: byte tokens, the merges those words use, the special tokens; ~830
tokens): it tokenises the world's text exactly as the full 49408-token CLIP tokenizer does
(the tests check it), and its token table is the matching rows of the CLIP table. This
keeps each pipeline's text encoder at 0.8 MB instead of 13 MB (the full table is
49408 x 64); rows the world's text never uses were never trained in the CLIP anyway.

Saved with ``StableDiffusionPipeline.save_pretrained`` and Stable Diffusion v1-5's PNDM
scheduler configuration, so it loads like ``runwayml/stable-diffusion-v1-5``.

Why the sizes: the UNet (1.7M parameters, 32/64/64 channels, cross-attention dim = the CLIP
text width 64) and the VAE (16/32 channels, 0.17M) are what trains enough steps in the CPU
budget; 16x16x4 latents (3x compression) keep the small shapes' outlines. The pipeline is
~8.5 MB (UNet 6.8, text encoder 0.8, VAE 0.7).

Timing (one thread; two threads on a busy machine were 5x slower from OpenMP waits).
Measured at scale=1.0 on this machine (2 cores shared with other jobs): VAE 1500 steps
and UNet 5400 steps (batch 48, ~0.46 CPU-s per step) in 2934 s, evaluation ~1 min; the
whole build 50 min wall (VAE 600 / UNet 3600 steps gave img2img class kept 86.5 %, now
92.7 %). ``scale``
multiplies every step count and corpus size.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Steps at scale=1.0.
VAE_STEPS = 1500
UNET_STEPS = 5400
#: Corpus size at scale=1.0 (distinct scenes the VAE latents are cached for).
CORPUS = 24000
VAE_BATCH = 32
UNET_BATCH = 48
UNET_LR = 2e-3
EMA_DECAY = 0.999
#: The component whose text tower is the (frozen) text encoder.
CLIP_COMPONENT = "clip"
#: Fraction of prompts dropped to "" (classifier-free guidance).
CAPTION_DROPOUT = 0.1
#: Inference defaults measured for the quick profile (see the build's metrics).
QUICK_SCHEDULER = "dpm"
QUICK_STEPS = 10
_SEED = 1234
_CHECKPOINT_EVERY = 200
RESOLUTION = 32


def _log_every(total: int) -> int:
    return max(1, total // 20)


def to_tensor(images: Sequence[Any]) -> Any:
    """PIL RGB images -> float tensor (B, 3, H, W) in [-1, 1]."""
    import torch

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def make_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=RESOLUTION,
    )


def world_words() -> list[str]:
    """Every word the pruned tokenizer must tokenise exactly as the full CLIP one."""
    from sgid_bench.world import scene as sc

    return sc.vocabulary()


def pruned_clip_bpe(words: Sequence[str]) -> tuple[dict[str, int], list[str], list[int]]:
    """The CLIP BPE restricted to ``words``: (vocab, merges, old id of each new id).

    Keeps the 512 byte tokens, every merge of the full CLIP merge list whose two halves and
    result are symbol spans of one of ``words`` (in the full list's order, so ranks keep
    their order) and the two special tokens. Greedy BPE on a word then applies exactly the
    merges it applies with the full list (the lowest-ranked applicable merge is always
    kept), so the world's text tokenises to the same tokens; any other text falls back to
    shorter pieces."""
    from sgid_bench.tiny_generative import _clip_bpe

    full_vocab, merges = _clip_bpe()
    wanted: set[tuple[str, str]] = set()
    for w in words:
        sym = list(w.lower())
        sym[-1] += "</w>"
        n = len(sym)
        for i in range(n):
            for k in range(i + 1, n):
                for j in range(k + 1, n + 1):
                    wanted.add(("".join(sym[i:k]), "".join(sym[k:j])))
    kept = [m for m in merges if tuple(m.split()) in wanted]
    tokens = list(full_vocab)[:512] + ["".join(m.split()) for m in kept]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    tokens = list(dict.fromkeys(tokens))
    return ({t: i for i, t in enumerate(tokens)}, kept, [full_vocab[t] for t in tokens])


def load_tokenizer(words: Sequence[str] | None = None) -> Any:
    """The CLIP BPE tokenizer (``CLIPTokenizer``): the full 49408-token one, or pruned to
    ``words`` (:func:`pruned_clip_bpe`)."""
    import json
    import tempfile

    from transformers import CLIPTokenizer

    from sgid_bench.tiny_generative import write_clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        if words is None:
            write_clip_tokenizer(Path(tmp))
        else:
            vocab, merges, _ = pruned_clip_bpe(words)
            (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
            (Path(tmp) / "merges.txt").write_text(
                "#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=77)


def text_encoder_from_open_clip(clip_dir: Path, keep_ids: Sequence[int] | None = None) -> Any:
    """The text tower of the open_clip CLIP in ``clip_dir`` (hub layout) as a transformers
    ``CLIPTextModel`` with the same weights (``last_hidden_state`` = open_clip's per-token
    output after ``ln_final``). ``keep_ids``: keep only these rows of the token table (new
    id i = old id ``keep_ids[i]``), for a pruned tokenizer."""
    import json

    import torch
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = json.loads((Path(clip_dir) / "open_clip_config.json").read_text())["model_cfg"]
    text = cfg["text_cfg"]
    sd = load_file(str(Path(clip_dir) / "open_clip_model.safetensors"))
    width, layers = int(text["width"]), int(text["layers"])
    table = sd["token_embedding.weight"]
    if keep_ids is not None:
        table = table[torch.tensor(list(keep_ids))]
    quick = bool(cfg.get("quick_gelu", False))
    config = CLIPTextConfig(
        vocab_size=table.shape[0], hidden_size=width,
        intermediate_size=int(width * text.get("mlp_ratio", 4.0)),
        num_hidden_layers=layers, num_attention_heads=int(text.get("heads", 8)),
        max_position_embeddings=int(text.get("context_length", 77)),
        hidden_act="quick_gelu" if quick else "gelu", layer_norm_eps=1e-5,
        projection_dim=int(cfg["embed_dim"]), bos_token_id=table.shape[0] - 2,
        eos_token_id=table.shape[0] - 1, pad_token_id=table.shape[0] - 1,
    )
    new = {"text_model.embeddings.token_embedding.weight": table,
           "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
           "text_model.final_layer_norm.weight": sd["ln_final.weight"],
           "text_model.final_layer_norm.bias": sd["ln_final.bias"]}
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                     ("mlp.c_proj", "mlp.fc2"), ("attn.out_proj", "self_attn.out_proj")):
            for kind in ("weight", "bias"):
                new[f"{dst}{b}.{kind}"] = sd[f"{src}{a}.{kind}"]
        for kind in ("weight", "bias"):
            qkv = sd[f"{src}attn.in_proj_{kind}"].chunk(3, dim=0)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), qkv, strict=True):
                new[f"{dst}self_attn.{name}.{kind}"] = part
    model = CLIPTextModel(config)
    # The state dict's keys carry the "text_model." prefix or not depending on the
    # transformers version; match whichever this one uses.
    prefix = "text_model." if any(k.startswith("text_model.")
                                  for k in model.state_dict()) else ""
    missing, unexpected = model.load_state_dict(
        {prefix + k.removeprefix("text_model."): v.contiguous().clone()
         for k, v in new.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"open_clip -> CLIPTextModel: missing {missing}, extra {unexpected}")
    return model.eval().requires_grad_(False)


class TextCache:
    """Frozen text encoder outputs (77 x hidden ``last_hidden_state``) of prompts, computed
    once per distinct prompt with the pipeline's tokenizer (padding to 77 with its pad
    token, as the pipelines do)."""

    def __init__(self, tokenizer: Any, text_encoder: Any) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.cache: dict[str, Any] = {}

    def __call__(self, prompts: Sequence[str]) -> Any:
        import torch

        missing = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=77,
                                 truncation=True, return_tensors="pt").input_ids
            with torch.no_grad():
                hidden = self.text_encoder(ids)[0]
            self.cache.update(zip(missing, hidden, strict=True))
        return torch.stack([self.cache[p] for p in prompts])


def make_unet(cross_attention_dim: int, in_channels: int = 4) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=RESOLUTION // 2,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def alphas_cumprod() -> Any:
    """ᾱ_t of the SD v1-5 schedule (scaled_linear 0.00085..0.012, 1000 steps)."""
    import torch

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def frozen_text_encoder(world: Path) -> tuple[Any, Any]:
    """(tokenizer, text encoder): the world CLIP's text tower (``world / "clip"``) as a
    frozen ``CLIPTextModel``, its token table and the CLIP BPE pruned to the world's words."""
    clip_dir = Path(world) / CLIP_COMPONENT
    if not (clip_dir / "open_clip_model.safetensors").is_file():
        raise FileNotFoundError(f"{clip_dir}: build the world's CLIP first (component "
                                f"{CLIP_COMPONENT!r}); Stable Diffusion uses its text tower")
    words = world_words()
    _, _, keep = pruned_clip_bpe(words)
    return load_tokenizer(words), text_encoder_from_open_clip(clip_dir, keep)


def render_all(scenes: Sequence[Any]) -> Any:
    """Scenes -> tensor (N, 3, 32, 32) in [-1, 1]."""
    from sgid_bench.world import scene as sc

    return to_tensor([sc.render(s) for s in scenes])


def encode_latents(vae: Any, pixels: Any, batch: int = 256) -> tuple[Any, Any]:
    """Posterior mean and std (unscaled) of ``pixels`` under a frozen VAE."""
    import torch

    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            dist = vae.encode(pixels[i : i + batch]).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def prompt_for(s: Any, r: float) -> str:
    """The training prompt of a scene for a uniform draw ``r``: "" (dropout), the label
    sentence, the caption, or SGID's "label sentence, caption"."""
    from sgid_bench.world import scene as sc

    if r < CAPTION_DROPOUT:
        return ""
    if r < 0.3:
        return sc.label_sentence(s.shape)
    if r < 0.75:
        return sc.caption(s)
    return f"{sc.label_sentence(s.shape)}, {sc.caption(s)}"


def lr_at(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Checkpoint:
    """Periodic training state in ``out / "_checkpoint"``, so a crash resumes exactly (the
    data and noise of step k depend only on k); removed when the build finishes."""

    def __init__(self, out: Path, name: str) -> None:
        self.path = out / "_checkpoint" / f"{name}.pt"

    def load(self) -> dict[str, Any] | None:
        import torch

        if self.path.exists():
            return torch.load(self.path, weights_only=False)
        return None

    def save(self, state: dict[str, Any]) -> None:
        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.path.parent, ignore_errors=True)


def _step_generator(seed: int, step: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def train_vae(pixels: Any, steps: int, out: Path, log: Callable[[str], None]) -> Any:
    import torch

    torch.manual_seed(_SEED)
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    ckpt = Checkpoint(out, "vae")
    start = 0
    if (state := ckpt.load()) is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        log(f"vae: resumed at step {start}")
    t0 = time.time()
    every = _log_every(steps)
    for step in range(start, steps):
        g = _step_generator(_SEED + 1, step)
        idx = torch.randint(len(pixels), (VAE_BATCH,), generator=g)
        x = pixels[idx]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, 2e-3, warmup=50)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g)
        rec = vae.decode(z).sample
        kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
        loss = (rec - x).pow(2).mean() + 0.5 * (rec - x).abs().mean() + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % every == 0 or step == steps - 1:
            log(f"vae step {step + 1}/{steps} loss {loss.item():.5f} kl {kl.item():.3f} "
                f"{time.time() - t0:.0f}s")
        if (step + 1) % _CHECKPOINT_EVERY == 0 and step + 1 < steps:
            ckpt.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1})
    vae.eval().requires_grad_(False)
    return vae


def train_unet(unet: Any, encode: Callable[[Sequence[str]], Any], data: Callable[..., Any],
               steps: int, out: Path, name: str, log: Callable[[str], None], *,
               lr: float = UNET_LR, batch: int = UNET_BATCH,
               warmup: int = 100) -> tuple[Any, list[float]]:
    """DDPM noise-prediction training of ``unet`` on the SD v1-5 schedule, conditioned on a
    frozen text encoder (``encode(prompts) -> (B, 77, hidden)``). ``data(step, generator,
    batch) -> (latents, prompts, cond)``: scaled target latents, prompt strings, and the extra
    input channels (or None). Returns the EMA UNet and the logged losses."""
    import copy

    import torch

    acp = alphas_cumprod()
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    ckpt = Checkpoint(out, name)
    start = 0
    if (state := ckpt.load()) is not None:
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        log(f"{name}: resumed at step {start}")
    unet.train()
    t0, c0 = time.time(), time.process_time()
    every = _log_every(steps)
    losses: list[float] = []
    running = 0.0
    for step in range(start, steps):
        g = _step_generator(_SEED + 2, step)
        latents, prompts, cond = data(step, g, batch)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=min(warmup, max(1, steps // 10)))
        t = torch.randint(0, 1000, (batch,), generator=g)
        noise = torch.randn(latents.shape, generator=g)
        a = acp[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        if cond is not None:
            noisy = torch.cat([noisy, cond], dim=1)
        pred = unet(noisy, t, encode(prompts)).sample
        loss = (pred - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        running = loss.item() if step == start else 0.9 * running + 0.1 * loss.item()
        if step % every == 0 or step == steps - 1:
            losses.append(running)
            log(f"{name} step {step + 1}/{steps} loss {running:.4f} "
                f"{time.time() - t0:.0f}s (cpu {time.process_time() - c0:.0f}s)")
        if (step + 1) % _CHECKPOINT_EVERY == 0 and step + 1 < steps:
            ckpt.save({"unet": unet.state_dict(), "ema": ema.state_dict(),
                       "opt": opt.state_dict(), "step": step + 1})
    return ema.eval(), losses


# -- evaluation -----------------------------------------------------------------------------


def load_judge_or_train(world: Path, scale: float, log: Callable[[str], None]) -> Callable[
        [list[Any]], np.ndarray]:
    """The world's independent classifier (``world / "judge"``) if built, else a throwaway
    small CNN trained here on corpus renders (never saved)."""
    judge_dir = world / "judge"
    if judge_dir.is_dir() and any(judge_dir.iterdir()):
        try:
            from sgid_bench.world.train_judge import load_judge  # type: ignore[import-not-found]

            log("evaluation: using world/judge")
            return load_judge(judge_dir)  # type: ignore[no-any-return]
        except ImportError:
            pass
    return train_throwaway_judge(scale, log)


@functools.cache
def train_throwaway_judge(scale: float, log: Callable[[str], None]) -> Callable[
        [list[Any]], np.ndarray]:
    import torch
    from torch import nn

    from sgid_bench.world import scene as sc

    n = max(240, int(8000 * scale))
    scenes = sc.corpus_scenes(n, seed=sc.CORPUS_SEED + 500)
    x = render_all(scenes)
    y = torch.tensor([s.label for s in scenes])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED + 9)
        net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, len(sc.SHAPES)),
        )
        opt = torch.optim.Adam(net.parameters(), 2e-3)
        epochs = 6
        for _ in range(epochs):
            perm = torch.randperm(n)
            for i in range(0, n, 64):
                idx = perm[i : i + 64]
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()

    def judge(images: list[Any]) -> np.ndarray:
        with torch.no_grad():
            return net(to_tensor(images)).argmax(1).numpy()

    log("evaluation: trained a throwaway CNN judge")
    return judge


def _generator(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed)


def set_scheduler(pipe: Any, name: str) -> None:
    import diffusers

    cls = {"pndm": "PNDMScheduler", "ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler",
           "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler"}[name]
    pipe.scheduler = getattr(diffusers, cls).from_config(pipe.scheduler.config)


def evaluate_sd(out: Path, world: Path, scale: float, log: Callable[[str], None]) -> dict[
        str, float]:
    """Held-out quality of the saved pipeline, judged by an independent classifier."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    from sgid_bench.world import scene as sc

    judge = load_judge_or_train(world, scale, log)
    per_class = max(1, int(round(8 * min(1.0, scale * 4))))
    held = sc.corpus_scenes(per_class * len(sc.SHAPES), seed=sc.CORPUS_SEED + 1000)
    real = [sc.render(s) for s in held]
    labels = np.array([s.label for s in held])
    metrics: dict[str, float] = {
        "judge_accuracy_real": float((judge(real) == labels).mean() * 100)}

    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    classes = np.arange(per_class * len(sc.SHAPES)) % len(sc.SHAPES)
    label_prompts = [sc.label_sentence(sc.SHAPES[c]) for c in classes]

    def t2i(prompts: list[str], guidance: float, steps: int, sched: str, seed: int = 0) -> Any:
        set_scheduler(pipe, sched)
        with torch.inference_mode():
            return pipe(prompts, height=RESOLUTION, width=RESOLUTION, num_inference_steps=steps,
                        guidance_scale=guidance, generator=_generator(seed)).images

    # Scheduler / steps sweep of text2img from the label sentence at guidance 3.
    # A tiny (test) build checks that the pipelines run; a real one sweeps the settings.
    full = scale >= 0.05
    sweep = ([("pndm", 4), ("pndm", 10), ("ddim", 10), ("dpm", 10), ("dpm", 5)] if full
             else [("dpm", 10)])
    for sched, steps in sweep:
        t0 = time.time()
        images = t2i(label_prompts, 3.0, steps, sched)
        dt = time.time() - t0
        acc = float((judge(images) == classes).mean() * 100)
        metrics[f"t2i_label_acc_g3_{sched}{steps}"] = acc
        log(f"eval text2img {sched} {steps} steps g=3: {acc:.1f}% "
            f"({len(images) / dt:.1f} img/s)")
        if sched == QUICK_SCHEDULER and steps == QUICK_STEPS:
            metrics["t2i_images_per_s_quick"] = len(images) / dt
    for g in (1.0, 5.0, 7.5) if full else ():
        images = t2i(label_prompts, g, QUICK_STEPS, QUICK_SCHEDULER)
        acc = float((judge(images) == classes).mean() * 100)
        metrics[f"t2i_label_acc_g{g:g}"] = acc
        log(f"eval text2img label sentence g={g}: {acc:.1f}%")
    images = t2i([sc.caption(s) for s in held], 3.0, QUICK_STEPS, QUICK_SCHEDULER)
    metrics["t2i_caption_acc_g3"] = float((judge(images) == labels).mean() * 100)
    log(f"eval text2img captions g=3: {metrics['t2i_caption_acc_g3']:.1f}%")

    i2i: Any = StableDiffusionImg2ImgPipeline(**pipe.components)
    i2i.set_progress_bar_config(disable=True)
    prompts = [f"{sc.label_sentence(s.shape)}, {sc.caption(s)}" for s in held]
    src = np.stack([np.asarray(im, dtype=np.float32) for im in real])
    # (scheduler, steps, strength, guidance): the harness's quick profile (PNDM, 4 steps,
    # so 2 denoising steps at strength 0.5) and the recommended quick setting.
    i2i_settings = [("dpm", 2 * QUICK_STEPS, 0.5, 1.25), ("pndm", 4, 0.5, 1.25),
                    ("dpm", 2 * QUICK_STEPS, 0.5, 3.0)]
    for sched, steps, strength, g in i2i_settings if full else i2i_settings[:1]:
        set_scheduler(i2i, sched)
        with torch.inference_mode():
            images = i2i(prompts, image=real, strength=strength, guidance_scale=g,
                         num_inference_steps=steps, generator=_generator(1)).images
        kept = float((judge(images) == labels).mean() * 100)
        change = float(np.abs(np.stack([np.asarray(im, dtype=np.float32) for im in images])
                              - src).mean())
        key = f"i2i_s{strength:g}_g{g:g}" + ("" if sched == QUICK_SCHEDULER else f"_{sched}{steps}")
        metrics[f"{key}_class_kept"] = kept
        metrics[f"{key}_mean_abs_change"] = change
        log(f"eval img2img {sched} {steps} strength {strength} g={g}: class kept {kept:.1f}%, "
            f"mean |change| {change:.1f}/255")
    return metrics


def reconstruction_error(vae: Any, scale: float) -> float:
    """Mean absolute reconstruction error (0..255) of held-out renders through the VAE."""
    import torch

    from sgid_bench.world import scene as sc

    x = render_all(sc.corpus_scenes(max(64, int(512 * scale)), seed=sc.CORPUS_SEED + 1000))
    with torch.no_grad():
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    return float((rec - x).abs().mean() * 127.5)


def build(out: Path, *, world: Path, scale: float = 1.0,
          log: Callable[[str], None] = print) -> dict[str, float]:
    """Train and save the world's Stable Diffusion into ``out``; held-out metrics."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    from sgid_bench.tiny_generative import sd_scheduler
    from sgid_bench.world import scene as sc

    out = Path(out)
    t_start = time.time()
    n = max(256, int(CORPUS * scale))
    vae_steps = max(4, int(VAE_STEPS * scale))
    unet_steps = max(4, int(UNET_STEPS * scale))
    with torch.random.fork_rng(devices=[]):
        scenes = sc.corpus_scenes(n)
        pixels = render_all(scenes)
        log(f"rendered {n} corpus scenes")
        trained_vae = out / "_checkpoint" / "vae"
        if (trained_vae / "config.json").is_file():
            vae = AutoencoderKL.from_pretrained(trained_vae).eval().requires_grad_(False)
            log("vae: trained one loaded from the checkpoint")
        else:
            vae = train_vae(pixels, vae_steps, out, log)
        metrics = {"vae_recon_mae_255": reconstruction_error(vae, scale)}
        mean, std = encode_latents(vae, pixels)
        scaling = float(1.0 / mean.std())
        vae.register_to_config(scaling_factor=scaling)
        # Kept until the build ends (a resumed build skips the VAE; a running one can be
        # evaluated from its UNet checkpoint).
        vae.save_pretrained(trained_vae)
        metrics["vae_scaling_factor"] = scaling
        log(f"vae: recon MAE {metrics['vae_recon_mae_255']:.2f}/255, scaling factor "
            f"{scaling:.4f} ({time.time() - t_start:.0f}s)")
        tokenizer, text_encoder = frozen_text_encoder(world)
        encode = TextCache(tokenizer, text_encoder)
        metrics["text_hidden"] = float(text_encoder.config.hidden_size)
        torch.manual_seed(_SEED + 4)
        unet = make_unet(text_encoder.config.hidden_size)

        def data(step: int, g: Any, batch: int) -> tuple[Any, list[str], None]:
            idx = torch.randint(n, (batch,), generator=g)
            r = torch.rand(batch, generator=g).tolist()
            z = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)
            return z * scaling, [prompt_for(scenes[i], ri) for i, ri in
                                 zip(idx.tolist(), r, strict=True)], None

        ema, losses = train_unet(unet, encode, data, unet_steps, out, "unet", log)
        metrics["unet_loss_first"] = losses[0]
        metrics["unet_loss_last"] = losses[-1]
        pipe: Any = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=ema,
            scheduler=sd_scheduler(), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(out)
        Checkpoint(out, "unet").clear()
        metrics["train_seconds"] = time.time() - t_start
        log(f"saved Stable Diffusion to {out} ({metrics['train_seconds']:.0f}s)")
        metrics.update(evaluate_sd(out, world, scale, log))
    return metrics


def build_stable_diffusion(out: Path, *, world: Path, scale: float = 1.0,
                           log: Callable[[str], None] = print) -> dict[str, float]:
    """Component "stable-diffusion" (the same as :func:`build`)."""
    return build(out, world=world, scale=scale, log=log)


def build_instruct_pix2pix(out: Path, *, world: Path, scale: float = 1.0,
                           log: Callable[[str], None] = print) -> dict[str, float]:
    """Component "instruct-pix2pix": :func:`sgid_bench.world.train_pix2pix.build`."""
    from sgid_bench.world.train_pix2pix import build as build_pix2pix

    return build_pix2pix(out, world=world, scale=scale, log=log)
