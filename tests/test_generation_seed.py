"""``generation.seed``: fixed (one generated set shared by every training seed) or per-run
(each training seed its own set, still shared across backbones)."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sgid_bench.cli import main
from sgid_bench.config import RunSpec, generation_seed, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench_plugins import diffusion

SMALL = ["--param", "train.epochs=1", "--param", "shapes.train_per_class=3",
         "--param", "shapes.test_per_class=1"]


def generated(cache: Path) -> dict[str, float]:
    """Every generated image in the cache, with its modification time."""
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*.png")}


def run(tmp_path: Path, backbone: str, *args: str) -> str:
    result = CliRunner().invoke(main, ["run", "--method", "sgid", "--backbone", backbone,
                                       "--cache-dir", str(tmp_path / "cache"), *SMALL, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_per_run_generates_a_set_per_seed_and_shares_it_across_backbones(
        tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = run(tmp_path, "resnet50", "--seed", "0", "--seed", "1", "--param",
              "generation.seed=per-run")
    # Not a terminal: generation logs a plain line per chunk of 8 images, for each seed.
    chunks = re.findall(r"generating sgid  (\d+)/(\d+)  [\d.]+ images/s  ETA", out)
    total = int(chunks[-1][1])
    assert [int(d) for d, _ in chunks] == [*range(8, total, 8), total] * 2, out
    first = generated(cache)
    seeds = {name.rsplit("-s", 1)[1].removesuffix(".png") for name in first}
    assert seeds == {"0", "1"}
    per_seed = [sorted(n.rsplit("-s", 1)[0] for n in first if n.endswith(f"-s{s}.png"))
                for s in (0, 1)]
    assert per_seed[0] == per_seed[1]  # the same originals, one image per seed each
    # Another backbone, seed 1: the images of seed 1 are reused, nothing is generated.
    run(tmp_path, "vit", "--seed", "1", "--param", "generation.seed=per-run")
    assert generated(cache) == first


def test_fixed_shares_one_set_across_training_seeds(tmp_path: Path) -> None:
    run(tmp_path, "resnet50", "--seed", "0", "--seed", "1")
    names = generated(tmp_path / "cache")
    assert names
    assert all(n.endswith("-s0.png") for n in names)


def test_the_mode_is_in_the_config_hash_and_the_seed_follows_it() -> None:
    context = Context(profile="tiny")
    fixed = resolve(RunSpec(method="sgid"), context)
    per_run = resolve(RunSpec(method="sgid", params=["generation.seed=per-run"]), context)
    assert fixed.config["generation_seed"] == "fixed"
    assert fixed.config_hash != per_run.config_hash
    assert [generation_seed(fixed.config, s) for s in (0, 3)] == [0, 0]
    assert [generation_seed(per_run.config, s) for s in (0, 3)] == [0, 3]
    # Without an expand stage nothing is generated: the setting does not split cells.
    plain = resolve(RunSpec(method="randaugment"), context)
    same = resolve(RunSpec(method="randaugment", params=["generation.seed=per-run"]), context)
    assert plain.config_hash == same.config_hash
    with pytest.raises(UserError, match="generation.seed=fixed or generation.seed=per-run"):
        resolve(RunSpec(method="sgid", params=["generation.seed=sometimes"]), context)


# -- the Stable Diffusion side (sgid_bench_plugins.diffusion) on the tiny presets -----------
# Loading (model folders, schedulers), weighted prompt embeddings and the batched call
# whose images the generation cache stores for every seed.


@pytest.fixture
def sd(context: Context) -> Any:
    return diffusion.load_pipeline("tiny/stable-diffusion", "img2img", context)


def sources(n: int, seed: int = 1) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            for _ in range(n)]


def pixels(images: list[Image.Image]) -> list[bytes]:
    return [im.tobytes() for im in images]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_an_unknown_scheduler_error_offers_exactly_the_valid_names() -> None:
    with pytest.raises(UserError) as err:
        diffusion.check_scheduler("fancy")
    message = str(err.value)
    assert message.startswith("unknown scheduler 'fancy': use one of ")
    offered = message.split("use one of ", 1)[1].split(", ")
    assert offered == list(diffusion.SCHEDULERS)
    for name in offered:  # every name the message suggests is accepted
        diffusion.check_scheduler(name)


def test_each_scheduler_is_its_class_with_the_models_schedule_and_never_shared(
        context: Context, sd: Any) -> None:
    own = type(sd.scheduler).__name__
    assert own == "PNDMScheduler"  # the tiny preset ships Stable Diffusion's own
    for name, cls in diffusion.SCHEDULERS.items():
        pipes = [diffusion.load_pipeline("tiny/stable-diffusion", kind, context, scheduler=name)
                 for kind in ("img2img", "text2img")]
        for pipe in pipes:
            assert type(pipe.scheduler).__name__ == (cls or own), name
            # Built from the checkpoint's config: the model's training noise schedule.
            for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule"):
                assert pipe.scheduler.config[key] == sd.scheduler.config[key], (name, key)
        # Schedulers keep per-call state: every pipeline has its own instance.
        assert pipes[0].scheduler is not pipes[1].scheduler
        assert pipes[0].unet is pipes[1].unet  # the weights are loaded once


def test_a_model_folder_is_checked_against_the_kind_of_pipeline(context: Context) -> None:
    from sgid_bench.models import resolve

    sd_dir = str(resolve("tiny/stable-diffusion", context))
    p2p_dir = str(resolve("tiny/instruct-pix2pix", context))
    # A folder given by path loads as the pipeline asked for ...
    loaded = {kind: diffusion.load_pipeline(folder, kind, context) for kind, folder in (
        ("img2img", sd_dir), ("text2img", sd_dir), ("pix2pix", p2p_dir))}
    assert {k: type(p).__name__ for k, p in loaded.items()} == {
        "img2img": "GuidedStableDiffusionImg2ImgPipeline",
        "text2img": "GuidedStableDiffusionPipeline",
        "pix2pix": "GuidedStableDiffusionInstructPix2PixPipeline"}
    assert loaded["pix2pix"].unet.config.in_channels == 8
    # ... and the wrong architecture is a one-line error naming the role and the model.
    with pytest.raises(UserError, match=r"^pix2pix generator: .* is not a InstructPix2Pix "
                                        r".*its UNet takes 4 input channels"):
        diffusion.load_pipeline(sd_dir, "pix2pix", context)
    for kind in ("img2img", "text2img"):
        with pytest.raises(UserError, match=r"^generator: .* is not a Stable Diffusion "
                                            r".*its UNet takes 8 input channels"):
            diffusion.load_pipeline(p2p_dir, kind, context)


def test_the_pipeline_is_on_the_contexts_device_in_full_precision_off_cuda(
        tmp_path: Path) -> None:
    # "meta" (a device without data) stands in for an accelerator this machine lacks.
    context = Context(device="meta", cache_dir=tmp_path / "cache")
    pipe = diffusion.load_pipeline("tiny/stable-diffusion", "img2img", context)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        assert (part.device.type, part.dtype) == ("meta", torch.float32)


class Terminal(io.StringIO):
    """An interactive stderr: tqdm draws bars there unless told not to."""

    def isatty(self) -> bool:
        return True


def test_a_loaded_pipeline_draws_no_progress_bar_even_on_a_terminal(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = diffusion.load_pipeline("tiny/stable-diffusion", "text2img", context)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    out = diffusion.run(pipe, "text2img", [[("a cat", 1.0)]], [2.0], gen(0), size=16, steps=2)
    monkeypatch.undo()
    assert len(out) == 1
    assert "it/s" not in terminal.getvalue()
    assert "%|" not in terminal.getvalue()


def test_token_ids_are_the_tokenizers_own_padded_and_truncated_ones(sd: Any) -> None:
    tok = sd.tokenizer
    length = tok.model_max_length

    def own(text: str) -> list[int]:
        return tok(text, padding="max_length", max_length=length, truncation=True).input_ids

    short, long = "a red car", " ".join(["a cat on a sofa"] * 30)
    assert len(tok(long, add_special_tokens=False).input_ids) > length
    ids, w = diffusion.token_weights(tok, [[(short, 2.0)], [(long, 0.5)]])
    assert ids == [own(short), own(long)]
    n = len(tok(short, add_special_tokens=False).input_ids)
    # The weight is on exactly the prompt's tokens: start, end and padding keep 1.
    assert w[0] == [1.0] + [2.0] * n + [1.0] * (length - 1 - n)
    # A prompt over the tokenizer's length keeps its first tokens and its end token.
    assert w[1] == [1.0] + [0.5] * (length - 2) + [1.0]
    assert ids[1][-1] == tok.eos_token_id


def test_padding_uses_the_tokenizers_pad_token_or_else_its_end_token(sd: Any) -> None:
    import copy

    bang = copy.deepcopy(sd.tokenizer)
    bang.pad_token = "!"  # as the Stable Diffusion 2 tokenizers pad
    assert bang.pad_token_id != bang.eos_token_id
    ids, _ = diffusion.token_weights(bang, [[("a red car", 1.0)]])
    assert ids[0] == bang("a red car", padding="max_length",
                          max_length=bang.model_max_length).input_ids
    assert ids[0][-1] == bang.pad_token_id
    bare = copy.deepcopy(sd.tokenizer)
    bare.pad_token = None
    ids, _ = diffusion.token_weights(bare, [[("a red car", 1.0)]])
    assert ids[0] == diffusion.token_weights(sd.tokenizer, [[("a red car", 1.0)]])[0][0]
    assert ids[0][-1] == bare.eos_token_id


def test_the_unconditional_embedding_is_the_pipelines_own_empty_prompt(sd: Any) -> None:
    reference, _ = sd.encode_prompt("", "cpu", 3, False)
    assert torch.equal(diffusion.unconditional(sd, 3), reference)


def test_embeddings_and_guidance_follow_the_models_device_and_dtype(sd: Any) -> None:
    import copy

    prompt = [[("a red car", 1.5), (", ", 1.0), ("on a street", 0.9)]]
    plain = diffusion.encode_weighted(sd, prompt)
    assert plain.dtype == sd.text_encoder.dtype == torch.float32
    # A half-precision text encoder (fp16 on CUDA) gives embeddings in its own dtype.
    half = type(sd)(**{**sd.components,
                       "text_encoder": copy.deepcopy(sd.text_encoder).to(torch.bfloat16)})
    low = diffusion.encode_weighted(half, prompt)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), plain, atol=0.1, rtol=0.05)
    # Models on another device (here "meta", which has no data) get their inputs there.
    elsewhere = type(sd)(**{**sd.components,
                            "text_encoder": copy.deepcopy(sd.text_encoder).to("meta"),
                            "unet": copy.deepcopy(sd.unet).to("meta", torch.bfloat16)})
    emb = diffusion.encode_weighted(elsewhere, prompt)
    assert (emb.device.type, emb.shape) == ("meta", plain.shape)
    g = diffusion.guidance_tensor(elsewhere, [0.5, 2.0])
    assert (g.device.type, g.dtype, g.shape) == ("meta", torch.bfloat16, (2, 1, 1, 1))
    # Whole numbers too: one float per image, in the UNet's dtype, broadcastable per image.
    g = diffusion.guidance_tensor(sd, [1, 3])
    assert (g.device, g.dtype) == (sd.unet.device, sd.unet.dtype)
    assert g.flatten().tolist() == [1.0, 3.0]
    assert g.shape == (2, 1, 1, 1)


def test_dtype_kwarg_loads_in_that_dtype_without_a_deprecation(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    import diffusers.utils.deprecation_utils as dep

    from sgid_bench.models import resolve

    path = resolve("tiny/stable-diffusion", context)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = diffusion.guided_class("img2img").from_pretrained(
            path, **diffusion.dtype_kwarg(torch.bfloat16), safety_checker=None,
            requires_safety_checker=False, local_files_only=True)
    assert pipe.unet.dtype == pipe.text_encoder.dtype == pipe.vae.dtype == torch.bfloat16
    assert not [w for w in caught if "dtype" in str(w.message)]
    # A diffusers from before the rename (no _resolve_dtype) gets the old argument name.
    monkeypatch.delattr(dep, "_resolve_dtype")
    assert diffusion.dtype_kwarg(torch.float16) == {"torch_dtype": torch.float16}


def test_text2img_gives_one_image_per_prompt_at_the_size_reproducibly(context: Context
                                                                     ) -> None:
    pipe = diffusion.load_pipeline("tiny/stable-diffusion", "text2img", context)
    prompts = [[("a red car", 1.5)], [("a tabby cat", 1.5)]]

    def make(seed: int, size: int = 16) -> list[Image.Image]:
        return diffusion.run(pipe, "text2img", prompts, [2.0, 2.0], gen(seed), size=size,
                             steps=2)

    first = make(0)
    assert [(im.size, im.mode) for im in first] == [((16, 16), "RGB")] * 2
    assert pixels(make(0)) == pixels(first)  # the generator seed fixes the images
    assert pixels(make(1)) != pixels(first)
    assert [im.size for im in make(0, size=24)] == [(24, 24)] * 2


def test_run_applies_the_guidance_and_the_step_count(context: Context) -> None:
    pipe = diffusion.load_pipeline("tiny/stable-diffusion", "text2img", context)
    prompts = [[("a red car", 1.5)]]

    def make(g: float, **kw: Any) -> list[bytes]:
        return pixels(diffusion.run(pipe, "text2img", prompts, [g], gen(0), size=16, **kw))

    assert make(0.0, steps=2) != make(3.0, steps=2)
    default = make(2.0)  # 50 steps by default
    assert default == make(2.0, steps=50)
    assert default != make(2.0, steps=3)


def test_img2img_applies_the_strength_and_takes_any_image_mode(sd: Any) -> None:
    prompts = [[("a red car", 1.5)], [("a tabby cat", 1.5)]]
    src = sources(2)

    def make(images: list[Image.Image], **kw: Any) -> list[bytes]:
        return pixels(diffusion.run(sd, "img2img", prompts, [2.0, 2.0], gen(0), images=images,
                                    size=16, steps=4, **kw))

    default = make(src)  # strength 0.5 by default
    assert default == make(src, strength=0.5)
    assert default != make(src, strength=1.0)
    assert make(src, strength=0.25) != make(src, strength=1.0)
    # Grey and transparent sources are used as their RGB versions.
    odd = [src[0].convert("L"), src[1].convert("RGBA")]
    assert make(odd) == make([im.convert("RGB") for im in odd])


def test_pix2pix_applies_the_image_guidance(context: Context) -> None:
    pipe = diffusion.load_pipeline("tiny/instruct-pix2pix", "pix2pix", context)

    def make(**kw: Any) -> list[bytes]:
        return pixels(diffusion.run(pipe, "pix2pix", [[("make it red", 1.0)]], [2.0], gen(0),
                                    images=sources(1), size=16, steps=2, **kw))

    default = make()  # image guidance 1.5 by default
    assert default == make(image_guidance=1.5)
    assert default != make(image_guidance=3.0)
    assert make(image_guidance=1.0) != make(image_guidance=3.0)


@pytest.mark.parametrize("kind", ["img2img", "pix2pix"])
def test_image_kinds_need_one_source_image_per_prompt(context: Context, kind: str) -> None:
    model = "tiny/instruct-pix2pix" if kind == "pix2pix" else "tiny/stable-diffusion"
    pipe = diffusion.load_pipeline(model, kind, context)
    prompts = [[("a red car", 1.0)]] * 2
    for images in (None, sources(1), sources(3)):
        with pytest.raises(ValueError, match=f"^{kind} needs one source image per prompt$"):
            diffusion.run(pipe, kind, prompts, [2.0, 2.0], gen(0), images=images, size=16,
                          steps=2)
