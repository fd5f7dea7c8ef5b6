"""SGID's parts on the tiny presets: prompts and token weights, the guidance mapping and
guidance applied exactly (g <= 1, mixed-g batches), caption choice, image filters,
parameters, profiles and models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sgid_bench.config import RunSpec, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench_plugins import captioning, diffusion
from sgid_bench_plugins.gen_baselines import SGIDInstructPix2Pix
from sgid_bench_plugins.sgid import PAPER_MODELS, SGID, TABLE8, TINY_MODELS
from sgid_bench_plugins.sgid import TINY_SETTINGS as QUICK

NAMES = ["red car", "tabby cat", "oak tree"]


@pytest.fixture
def images() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]


@pytest.fixture
def pipe(context: Context) -> Any:
    return diffusion.load_pipeline("tiny/stable-diffusion", "img2img", context)


def quick_sgid(context: Context, **params: Any) -> SGID:
    aug = SGID(**{**QUICK, **params})
    aug.setup(context)
    return aug


# -- prompts and token weights -------------------------------------------------------------


def test_prompt_modes_and_weights() -> None:
    sgid = SGID()
    assert sgid.prompt("cat", "a cat on a mat") == [
        ("A picture of a cat", 1.5), (", ", 1.0), ("a cat on a mat", 0.9)]
    assert SGID(prompt_mode="label_only").prompt("cat", "a cat on a mat") == [
        ("A picture of a cat", 1.5)]
    assert SGID(prompt_mode="caption_only").prompt("cat", "a cat on a mat") == [
        ("a cat on a mat", 0.9)]
    assert SGID(prompt_mode="none").prompt("cat", "a cat on a mat") == []
    assert sgid.prompt("cat", None) == [("A picture of a cat", 1.5)]
    assert SGID(prompt_weighting=False).prompt("cat", "x y") == [
        ("A picture of a cat", 1.0), (", ", 1.0), ("x y", 1.0)]


def test_weighted_embeddings_scale_exactly_the_label_and_caption_tokens(pipe: Any) -> None:
    label, caption = "A picture of a red car", "a car parked on the street"
    weighted = diffusion.encode_weighted(pipe, [[(label, 1.5), (", ", 1.0), (caption, 0.9)]])
    plain = diffusion.encode_weighted(pipe, [[(label, 1.0), (", ", 1.0), (caption, 1.0)]])
    reference, _ = pipe.encode_prompt(f"{label}, {caption}", "cpu", 1, False)
    assert torch.equal(plain, reference)  # same tokens as the joined prompt

    tok = pipe.tokenizer
    n_label = len(tok(label, add_special_tokens=False).input_ids)
    n_cap = len(tok(caption, add_special_tokens=False).input_ids)
    ids, _ = diffusion.token_weights(tok, [[(label, 1.5), (", ", 1.0), (caption, 0.9)]])
    label_pos = list(range(1, 1 + n_label))
    cap_pos = list(range(2 + n_label, 2 + n_label + n_cap))
    assert tok.decode([ids[0][i] for i in label_pos]) == label.lower()
    assert tok.decode([ids[0][i] for i in cap_pos]) == caption
    ratio = torch.ones(weighted.shape[1])
    ratio[label_pos], ratio[cap_pos] = 1.5, 0.9
    torch.testing.assert_close(weighted[0], plain[0] * ratio[:, None])
    other = [i for i in range(weighted.shape[1]) if i not in label_pos + cap_pos]
    assert torch.equal(weighted[0, other], plain[0, other])


# -- guidance --------------------------------------------------------------------------------


def test_guidance_mapping() -> None:
    g = diffusion.guidance_from_score
    assert g(0.0) == 1.0
    assert g(0.25) == pytest.approx(1.25)  # the maximum
    assert g(0.5) == pytest.approx(1.0)
    assert g(1.0) == pytest.approx(-1.0)
    assert g(0.3) == pytest.approx(-4 * 0.09 + 0.6 + 1)


def _latents(pipe: Any, images: list[Image.Image], cond: torch.Tensor, uncond: torch.Tensor,
             scale: Any, seeds: list[int], steps: int = 4) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    out = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=scale,
               image=images, strength=0.5, num_inference_steps=steps, generator=gens,
               output_type="latent")
    return out.images


def test_guidance_of_one_is_the_conditional_prediction(pipe: Any, images: list[Image.Image]
                                                       ) -> None:
    import diffusers

    stock = diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)
    stock.set_progress_bar_config(disable=True)
    cond = diffusion.encode_weighted(pipe, [[("A picture of a red car", 1.0)]] * 2)
    uncond = diffusion.unconditional(pipe, 2)
    guided = _latents(pipe, images[:2], cond, uncond, diffusion.guidance_tensor(pipe, [1, 1]),
                      [0, 1])
    # Stock diffusers turns guidance off at g = 1: the conditional branch only.
    conditional = _latents(stock, images[:2], cond, uncond, 1.0, [0, 1])
    torch.testing.assert_close(guided, conditional, atol=1e-4, rtol=1e-4)
    # And g = 0 is the unconditional branch only.
    zero = _latents(pipe, images[:2], cond, uncond, diffusion.guidance_tensor(pipe, [0, 0]),
                    [0, 1])
    unconditional = _latents(stock, images[:2], uncond, uncond, 1.0, [0, 1])
    torch.testing.assert_close(zero, unconditional, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(zero, guided, atol=1e-3)


def test_guidance_below_one_interpolates_towards_unconditional(
        pipe: Any, images: list[Image.Image]) -> None:
    cond = diffusion.encode_weighted(pipe, [[("A picture of a tabby cat", 1.0)]])
    uncond = diffusion.unconditional(pipe, 1)
    # One denoising step (4 steps x strength 0.5 = 2; use 2 x 0.5 = 1): the update is
    # affine in the guided noise prediction, so latents interpolate linearly in g.
    lat = {g: _latents(pipe, images[:1], cond, uncond, diffusion.guidance_tensor(pipe, [g]),
                       [7], steps=2) for g in (0.0, 0.4, 1.0)}
    gap = (lat[1.0] - lat[0.0]).abs().max().item()
    assert gap > 1e-2  # the two branches really differ, so the check below can fail
    torch.testing.assert_close(lat[0.4], 0.6 * lat[0.0] + 0.4 * lat[1.0], atol=gap * 1e-2,
                               rtol=0)


def test_a_batch_with_different_guidance_per_image(pipe: Any, images: list[Image.Image]
                                                   ) -> None:
    cond = diffusion.encode_weighted(pipe, [[("A picture of a red car", 1.0)],
                                            [("A picture of an oak tree", 1.0)]])
    uncond = diffusion.unconditional(pipe, 2)
    both = _latents(pipe, images[:2], cond, uncond, diffusion.guidance_tensor(pipe, [0.6, 3.0]),
                    [3, 4])
    for i, (g, seed) in enumerate([(0.6, 3), (3.0, 4)]):
        alone = _latents(pipe, images[i:i + 1], cond[i:i + 1], uncond[:1],
                         diffusion.guidance_tensor(pipe, [g]), [seed])
        torch.testing.assert_close(both[i:i + 1], alone, atol=1e-4, rtol=1e-4)


def test_sgid_maps_each_images_caption_score_to_its_guidance(
        context: Context, images: list[Image.Image]) -> None:
    aug = quick_sgid(context, caption="clip_filter", guidance_rule="literal")
    aug.expand(images, [0, 1, 2, 0], NAMES, torch.Generator().manual_seed(0))
    for info in aug.last_info:
        s = info["score"]
        assert info["guidance"] == pytest.approx(-4 * s * s + 2 * s + 1)
    fixed = quick_sgid(context, guidance_mapping=False, guidance_scale=3.0)
    fixed.expand(images, [0, 1, 2, 0], NAMES, torch.Generator().manual_seed(0))
    assert [i["guidance"] for i in fixed.last_info] == [3.0] * 4


def test_diffusers_rule_turns_guidance_off_at_or_below_one(
        context: Context, images: list[Image.Image]) -> None:
    from sgid_bench_plugins.sgid import SGID

    assert SGID().guidance_rule == "diffusers"
    aug = quick_sgid(context, caption="clip_filter")
    scores = [-0.2, 0.1, 0.25, 0.6, 0.9]
    g, s = aug.guidance(images[:1] * 5, ["x"] * 5, scores)
    assert s == scores
    assert g == pytest.approx([1.0, 1.16, 1.25, 1.0, 1.0])
    literal = quick_sgid(context, caption="clip_filter", guidance_rule="literal")
    g, _ = literal.guidance(images[:1] * 5, ["x"] * 5, scores)
    assert g == pytest.approx([-4 * v * v + 2 * v + 1 for v in scores])
    assert g[-1] < 0  # s* > 0.809 gives a negative scale under the literal rule


def test_without_caption_the_score_is_the_prompt_similarity(
        context: Context, images: list[Image.Image]) -> None:
    aug = quick_sgid(context, caption="none")
    aug.expand(images[:2], [0, 1], NAMES, torch.Generator().manual_seed(0))
    clip = aug._model("clip")
    for im, info, name in zip(images, aug.last_info, NAMES, strict=False):
        assert info["caption"] is None
        assert info["prompt"] == f"A picture of a {name}"
        assert info["score"] == pytest.approx(clip.image_text([im], [[info["prompt"]]])[0][0],
                                              abs=1e-5)


# -- captions --------------------------------------------------------------------------------


def test_choose_takes_the_highest_score_or_a_seeded_random_one() -> None:
    pools = [["a", "b", "c"], ["d", "e"], []]
    scores = [[0.1, 0.3, 0.2], [0.5, 0.5], []]
    assert captioning.choose(pools, scores, "clip_filter", torch.Generator()) == [1, 0, -1]
    picks = [captioning.choose(pools, None, "random", torch.Generator().manual_seed(s))
             for s in range(20)]
    assert all(0 <= p[0] < 3 and 0 <= p[1] < 2 for p in picks)
    assert len({tuple(p) for p in picks}) > 1
    assert picks[3] == captioning.choose(pools, None, "random",
                                         torch.Generator().manual_seed(3))


def test_clip_filter_picks_the_caption_most_similar_to_the_image(
        context: Context, images: list[Image.Image]) -> None:
    aug = quick_sgid(context, caption="clip_filter", num_captions=3)
    labels = [0, 1, 2, 0]
    pools = aug.caption_pools(images, labels, NAMES, torch.Generator().manual_seed(5))
    assert all(len(p) == 3 + 3 for p in pools)  # 3 nucleus + 3 beams (num_beams 3)
    scores = aug._model("clip").image_text(images, pools)
    chosen, s = aug.choose_captions(images, labels, NAMES, torch.Generator().manual_seed(5))
    for pool, sc, c, v in zip(pools, scores, chosen, s, strict=True):
        best = max(range(len(pool)), key=lambda j, sc=sc: sc[j])
        assert c == pool[best]
        assert v == pytest.approx(max(sc), abs=1e-6)


def test_caption_sources(context: Context, images: list[Image.Image]) -> None:
    nucleus = quick_sgid(context, caption="nucleus")
    pools = nucleus.caption_pools(images, [0] * 4, NAMES, torch.Generator().manual_seed(0))
    assert [len(p) for p in pools] == [1] * 4
    beam = quick_sgid(context, caption="beam")
    one = beam.caption_pools(images, [0] * 4, NAMES, torch.Generator().manual_seed(0))
    two = beam.caption_pools(images, [0] * 4, NAMES, torch.Generator().manual_seed(9))
    assert one == two  # beam search is deterministic
    for p in one:
        assert 5 <= len(p[0].split()) + 1 <= QUICK["caption_max_length"]


# -- image filters ---------------------------------------------------------------------------


def test_label_filter_keeps_images_clip_classifies_correctly(
        context: Context, images: list[Image.Image]) -> None:
    aug = quick_sgid(context)
    clip = aug._model("clip")
    text = clip.texts([f"A picture of a {n}" for n in NAMES])
    pred = (clip.images(images) @ text.T).argmax(-1).tolist()
    labels = [pred[0], pred[1], (pred[2] + 1) % 3, (pred[3] + 2) % 3]
    assert captioning.zero_shot_correct(clip, images, labels, NAMES, aug.label_template) == [
        True, True, False, False]

    plain = quick_sgid(context).expand(images, labels, NAMES, torch.Generator().manual_seed(2))
    filtered = quick_sgid(context, label_filter=True).expand(images, labels, NAMES,
                                                             torch.Generator().manual_seed(2))
    expected = captioning.zero_shot_correct(clip, plain, labels, NAMES, aug.label_template)
    assert [o is not None for o in filtered] == expected
    for a, b in zip(plain, filtered, strict=True):
        assert b is None or a.tobytes() == b.tobytes()


def test_class_mean_filters() -> None:
    assert captioning.above_class_mean([0.1, 0.3, 0.2, 0.9, 0.5, None], [0, 0, 0, 1, 1, 1]) == [
        False, True, True, True, False, True]
    aug = SGID(prompt_filter=True, original_filter=True)
    infos = [
        {"prompt_score": 0.1, "original_score": 0.9},
        {"prompt_score": 0.3, "original_score": 0.1},
        {"prompt_score": 0.2, "original_score": 0.8},
        {"prompt_score": 0.9, "original_score": 0.2, "dropped": True},  # not in the means
    ]
    # prompt: mean of (.1, .3, .2) = .2 keeps 1, 2; original over those: mean .45 keeps 2.
    assert aug.select(infos, [0, 0, 0, 0]) == [False, False, True, False]
    assert SGID().select(infos, [0, 0, 0, 0]) == [True, True, True, False]


def test_prompt_and_original_filters_through_the_cache(
        context: Context, images: list[Image.Image]) -> None:
    from sgid_bench.cache import generate

    aug = quick_sgid(context, prompt_filter=True, original_filter=True)
    samples = [(im, y) for im, y in zip(images * 2, [0, 0, 1, 1, 0, 0, 1, 1], strict=True)]
    result = generate(aug, samples, NAMES, key={"t": "filters"}, seed=0, context=context)
    clip = aug._model("clip")
    for rec, (src, _) in zip(result.records, samples, strict=True):
        info = rec.meta["info"]
        assert info["prompt_score"] == pytest.approx(
            clip.image_text([rec.image], [[info["prompt"]]])[0][0], abs=1e-4)
        assert info["original_score"] == pytest.approx(
            clip.image_image([rec.image], [src])[0], abs=1e-4)
    infos = [r.meta["info"] for r in result.records]
    labels = [r.label for r in result.records]
    keep = captioning.above_class_mean([i["prompt_score"] for i in infos], labels)
    keep2 = captioning.above_class_mean(
        [i["original_score"] if k else None for i, k in zip(infos, keep, strict=True)], labels)
    assert [r.kept for r in result.records] == [a and b for a, b in zip(keep, keep2,
                                                                          strict=True)]
    assert 0 < sum(r.kept for r in result.records) < len(samples)


# -- parameters, profiles, models ----------------------------------------------------------


def test_invalid_parameters_are_user_errors(context: Context) -> None:
    with pytest.raises(UserError, match="clip_filter"):
        resolve(RunSpec(method="sgid", params=["caption=best"]), context)
    with pytest.raises(UserError, match="prompt_mode"):
        resolve(RunSpec(method="sgid", params=["prompt_mode=all"]), context)
    with pytest.raises(UserError, match="scheduler"):
        resolve(RunSpec(method="sgid", params=["scheduler=fancy"]), context)
    with pytest.raises(UserError, match="strength"):
        SGID(strength=1.5)
    with pytest.raises(UserError, match="instruction"):
        SGIDInstructPix2Pix(instruction="no placeholder")


def test_profiles_follow_table8(context: Context) -> None:
    assert SGID.profile_params("paper", "cifar10") == {"caption": "clip_filter",
                                                       "prompt_weighting": True}
    assert SGID.profile_params("paper", "oxford_pets") == {"caption": "beam",
                                                           "prompt_weighting": False}
    assert SGID.profile_params("paper", "stanford_cars")["caption"] == "none"
    assert set(TABLE8) == {"cifar10", "cifar100", "caltech101", "stanford_cars", "flowers102",
                           "oxford_pets", "dtd"}
    quick = resolve(RunSpec(method="sgid", dataset="shapes"), context)
    params = quick.config["augmenters"][0]["params"]
    assert params["steps"] == QUICK["steps"]
    assert params["strength"] == 0.5
    assert params["caption"] == "clip_filter"


def test_models_used_and_config_hash_per_profile(context: Context) -> None:
    assert SGID().models_used(context) == {"generator": TINY_MODELS["generator"],
                                           "captioner": TINY_MODELS["captioner"],
                                           "clip": TINY_MODELS["clip"]}
    paper = Context(profile="paper")
    assert SGID().models_used(paper) == {"generator": PAPER_MODELS["generator"],
                                         "captioner": PAPER_MODELS["captioner"],
                                         "clip": PAPER_MODELS["clip"]}
    bare = SGID(caption="none", guidance_mapping=False)
    assert bare.models_used(paper) == {"generator": PAPER_MODELS["generator"]}
    assert SGIDInstructPix2Pix().models_used(paper)["pix2pix"] == PAPER_MODELS["pix2pix"]
    assert SGID(generator_model="my/sd").models_used(paper)["generator"] == "my/sd"
    quick = resolve(RunSpec(method="sgid"), context)
    real = resolve(RunSpec(method="sgid", profile="paper"), Context(profile="paper"))
    assert quick.config["models"]["sgid.generator"] == TINY_MODELS["generator"]
    assert quick.config_hash != real.config_hash


@pytest.mark.parametrize(("method", "model"), [
    ("sgid", PAPER_MODELS["generator"]),
    ("text2img", PAPER_MODELS["generator"]),
    ("sgid_diversecaption", PAPER_MODELS["generator"]),
    ("sgid_instructpix2pix", PAPER_MODELS["pix2pix"]),
])
def test_paper_profile_offline_names_the_model_and_how_to_get_it(
        tmp_path: Path, images: list[Image.Image], method: str, model: str) -> None:
    from sgid_bench.cache import expand_samples
    from sgid_bench.plugins import augmenter_class

    context = Context(profile="paper", models_dir=tmp_path / "models",
                      cache_dir=tmp_path / "cache")
    aug = augmenter_class(method)(**augmenter_class(method).profile_params("paper", "cifar10"))
    aug.setup(context)
    with pytest.raises(UserError) as err:
        expand_samples(aug, [(images[0], 0)], NAMES, key={"m": method}, seed=0, context=context)
    message = str(err.value)
    assert model in message
    assert "hf download" in message
    assert "--models-dir" in message


def test_plugin_modules_import_without_heavy_libraries() -> None:
    code = ("import sys, sgid_bench_plugins.generative as g; "
            "heavy = {'torch', 'diffusers', 'transformers', 'open_clip'} & set(sys.modules); "
            "assert not heavy, heavy; print(len(g.AUGMENTERS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "4"
