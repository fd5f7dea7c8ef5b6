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


# -- parameter errors, bounds, profiles and model overrides (what a user types) --------------


@pytest.mark.parametrize(("param", "bad"), [
    ("caption", "best"), ("prompt_mode", "all"), ("guidance_rule", "exact")])
def test_choice_errors_name_the_parameter_the_value_and_every_valid_value(
        param: str, bad: str) -> None:
    from sgid_bench_plugins.sgid import CAPTION_MODES, GUIDANCE_RULES, PROMPT_MODES

    valid = {"caption": CAPTION_MODES, "prompt_mode": PROMPT_MODES,
             "guidance_rule": GUIDANCE_RULES}[param]
    with pytest.raises(UserError) as err:
        SGID(**{param: bad})
    message = str(err.value)
    assert message.startswith(f"--param {param}={bad!r} is not valid")
    offered = message.split("use one of ", 1)[1].split(", ")
    assert offered == list(valid)
    for value in offered:  # every value the message suggests is accepted
        assert getattr(SGID(**{param: value}), param) == value


def test_label_template_error_gives_a_working_example() -> None:
    with pytest.raises(UserError) as err:
        SGID(label_template="A picture of a cat")
    message = str(err.value)
    assert message.startswith("--param label_template must contain {label}")
    default = SGID().label_template
    assert message.endswith(f"e.g. '{default}'")  # the example is the default template
    assert SGID(label_template=default).prompt("cat", None) == [("A picture of a cat", 1.5)]


def test_numeric_parameter_bounds() -> None:
    # The documented ranges, edges included: strength in (0, 1], steps >= 1, resolution a
    # positive multiple of 8, num_captions >= 1.
    for ok in ({"strength": 1.0}, {"strength": 1e-3}, {"steps": 1}, {"resolution": 8},
               {"resolution": 520}, {"num_captions": 1}):
        aug = SGID(**ok)
        assert all(getattr(aug, k) == v for k, v in ok.items())
    for strength in (0.0, -0.5, 1.01):
        with pytest.raises(UserError) as err:
            SGID(strength=strength)
        assert str(err.value).startswith(f"--param strength={strength} must be in (0, 1]")
    for bad in ({"steps": 0}, {"steps": -3}, {"resolution": 0}, {"resolution": 4},
                {"resolution": 12}, {"resolution": 500}):
        with pytest.raises(UserError) as err:
            SGID(**bad)
        assert str(err.value).startswith(
            "--param steps must be >= 1 and resolution a multiple of 8"), bad
    with pytest.raises(UserError) as err:
        SGID(num_captions=0)
    assert str(err.value).startswith("--param num_captions must be >= 1")


def test_quick_profile_uses_the_toy_worlds_settings_and_models() -> None:
    from sgid_bench_plugins.sgid import TINY_SETTINGS, WORLD_MODELS, WORLD_SETTINGS

    assert SGID.profile_params("quick", "world") == WORLD_SETTINGS
    assert SGID.profile_params("quick", "world")["scheduler"] == "dpm"
    assert SGID.profile_params("tiny", "shapes") == TINY_SETTINGS
    assert WORLD_SETTINGS != TINY_SETTINGS
    SGID(**SGID.profile_params("quick", "world"))  # valid parameters
    used = SGID().models_used(Context(profile="quick"))
    assert sorted(used) == ["captioner", "clip", "generator"]
    for role, model in used.items():
        assert model.startswith(f"world/{WORLD_MODELS[role]}@"), (role, model)


def test_each_model_override_replaces_only_its_role() -> None:
    paper = Context(profile="paper")
    assert SGID(caption_model="my/blip", clip_model="my/clip").models_used(paper) == {
        "generator": PAPER_MODELS["generator"], "captioner": "my/blip", "clip": "my/clip"}
    assert SGID(caption_model="my/blip").models_used(paper)["clip"] == PAPER_MODELS["clip"]


def test_scheduler_parameter_sets_the_generators_scheduler(context: Context) -> None:
    default = quick_sgid(context)._model("generator").scheduler
    ddim = quick_sgid(context, scheduler="ddim")._model("generator").scheduler
    assert type(ddim).__name__ == "DDIMScheduler"
    assert type(default).__name__ != "DDIMScheduler"  # "default" keeps the model's own


def test_caption_min_length_holds_even_when_blip_would_stop_at_once(
        context: Context, images: list[Image.Image], monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    # A BLIP that always wants to end the caption at once: its length is then exactly the
    # minimum (which counts the start token). The random-weight BLIP never stops early.
    model, processor = captioning._load_blip("tiny/blip", context)
    eager = copy.deepcopy(model)
    with torch.no_grad():
        eager.text_decoder.cls.predictions.bias[eager.config.text_config.sep_token_id] += 1e3
    monkeypatch.setattr(captioning, "_load_blip", lambda mid, ctx: (eager, processor))
    tok = processor.tokenizer
    for low in (4, 7):
        aug = quick_sgid(context, caption="beam", caption_min_length=low)
        pools = aug.caption_pools(images[:2], [0, 1], NAMES, torch.Generator())
        assert [len(tok(p[0], add_special_tokens=False).input_ids) for p in pools] == [low - 1] * 2


# -- caption sources and choice ------------------------------------------------------------


def test_nucleus_top_p_bounds_the_sampling(context: Context, images: list[Image.Image]
                                           ) -> None:
    def pools(caption: str, top_p: float, seed: int) -> list[list[str]]:
        aug = quick_sgid(context, caption=caption, top_p=top_p, num_captions=2)
        return aug.caption_pools(images, [0] * 4, NAMES, torch.Generator().manual_seed(seed))

    # With a vanishing top_p the nucleus is the single most likely token: no randomness.
    for caption in ("nucleus", "random"):
        assert pools(caption, 1e-6, 0) == pools(caption, 1e-6, 1)
    assert pools("nucleus", 0.9, 0) != pools("nucleus", 0.9, 1)


def test_nucleus_captions_follow_the_given_generator(context: Context,
                                                     images: list[Image.Image]) -> None:
    aug = quick_sgid(context, caption="nucleus")
    torch.manual_seed(11)
    first = aug.caption_pools(images, [0] * 4, NAMES, torch.Generator().manual_seed(4))
    torch.manual_seed(12)  # the global RNG plays no part
    again = aug.caption_pools(images, [0] * 4, NAMES, torch.Generator().manual_seed(4))
    other = aug.caption_pools(images, [0] * 4, NAMES, torch.Generator().manual_seed(5))
    assert first == again
    assert first != other


def test_beam_caption_is_the_top_beam_whatever_the_seed(context: Context,
                                                        images: list[Image.Image]) -> None:
    aug = quick_sgid(context, caption="beam")
    top = aug._model("captioner").beam(images, 1, aug.num_beams)
    for seed in range(3):
        assert aug.caption_pools(images, [0] * 4, NAMES,
                                 torch.Generator().manual_seed(seed)) == top
        chosen, _ = aug.choose_captions(images, [0] * 4, NAMES,
                                        torch.Generator().manual_seed(seed))
        assert chosen == [p[0] for p in top]


def test_random_caption_is_drawn_uniformly_from_the_generator(
        context: Context, images: list[Image.Image]) -> None:
    aug = quick_sgid(context, caption="random", num_captions=2)
    clip = aug._model("clip")
    not_best = 0
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        pools = aug.caption_pools(images, [0] * 4, NAMES, gen)
        picks = captioning.choose(pools, None, "random", gen)  # the same stream, continued
        torch.manual_seed(100 + seed)  # the global RNG plays no part
        chosen, s = aug.choose_captions(images, [0] * 4, NAMES,
                                        torch.Generator().manual_seed(seed))
        assert chosen == [p[j] for p, j in zip(pools, picks, strict=True)]
        scores = clip.image_text(images, pools)
        for sc, j, v in zip(scores, picks, s, strict=True):
            assert v == pytest.approx(sc[j], abs=1e-6)  # s* of the drawn caption
            not_best += sc[j] < max(sc)
    assert not_best > 0  # not the CLIP filter's choice


def test_random_caption_with_fixed_guidance_needs_no_clip(
        context: Context, images: list[Image.Image]) -> None:
    aug = quick_sgid(context, caption="random", guidance_mapping=False, guidance_scale=4.0)
    assert "clip" not in aug.models_used(context)
    chosen, s = aug.choose_captions(images, [0] * 4, NAMES, torch.Generator().manual_seed(0))
    assert all(isinstance(c, str) for c in chosen)
    assert s == [None] * 4
    aug.expand(images, [0, 1, 2, 0], NAMES, torch.Generator().manual_seed(0))
    assert [(i["score"], i["guidance"]) for i in aug.last_info] == [(None, 4.0)] * 4
    assert "clip" not in aug._models


# -- prompts and guidance at the edges -----------------------------------------------------


def test_caption_only_without_a_caption_is_the_empty_prompt() -> None:
    aug = SGID(prompt_mode="caption_only")
    assert aug.prompt("cat", None) == []
    assert aug.prompt("cat", "") == []
    assert aug.prompt("cat", "a cat") == [("a cat", 0.9)]


def test_an_empty_prompt_gets_guidance_one_and_no_score(
        context: Context, images: list[Image.Image]) -> None:
    for rule in ("diffusers", "literal"):
        aug = quick_sgid(context, prompt_mode="none", guidance_rule=rule)
        assert "clip" not in aug.models_used(context)
        aug.expand(images[:2], [0, 1], NAMES, torch.Generator().manual_seed(0))
        assert [(i["prompt"], i["score"], i["guidance"]) for i in aug.last_info] == [
            ("", None, 1.0)] * 2
    aug = quick_sgid(context, guidance_rule="literal")
    g, s = aug.guidance(images[:2], ["", "A picture of a red car"], [None, None])
    assert (g[0], s[0]) == (1.0, None)
    assert s[1] is not None
    assert g[1] == pytest.approx(-4 * s[1] ** 2 + 2 * s[1] + 1)


def test_sgid_output_is_img2img_of_its_prompt_at_the_noise_rate(
        context: Context, images: list[Image.Image]) -> None:
    # No caption and fixed guidance: the output is exactly one img2img call with the
    # weighted label sentence, at the given strength, from the expand generator.
    labels = [0, 1]
    outs = {}
    for strength in (0.25, 1.0):
        aug = quick_sgid(context, caption="none", guidance_mapping=False, strength=strength)
        outs[strength] = aug.expand(images[:2], labels, NAMES, torch.Generator().manual_seed(3))
        expected = diffusion.run(
            aug._model("generator"), "img2img",
            [[(f"A picture of a {NAMES[y]}", 1.5)] for y in labels], [7.5, 7.5],
            torch.Generator().manual_seed(3), images=images[:2], size=QUICK["resolution"],
            steps=QUICK["steps"], strength=strength)
        assert [o.tobytes() for o in outs[strength]] == [
            e.resize(im.size, Image.Resampling.BICUBIC).tobytes()
            for e, im in zip(expected, images, strict=False)]
    assert outs[0.25][0].tobytes() != outs[1.0][0].tobytes()


# -- filters and the augmenter protocol ------------------------------------------------------


@pytest.mark.parametrize(("flag", "key", "other"), [
    ("prompt_filter", "prompt_score", "original_score"),
    ("original_filter", "original_score", "prompt_score")])
def test_each_class_mean_filter_alone_records_its_score(
        context: Context, images: list[Image.Image], flag: str, key: str, other: str) -> None:
    aug = quick_sgid(context, **{flag: True})
    out = aug.expand(images[:2], [0, 1], NAMES, torch.Generator().manual_seed(0))
    assert all(o is not None for o in out)  # only the label filter drops during expand
    for info in aug.last_info:
        assert isinstance(info[key], float)
        assert other not in info


def test_an_augmenter_before_setup(images: list[Image.Image]) -> None:
    aug = SGID(**QUICK)
    assert aug.last_info == []  # the ReportsInfo hook holds a list from the start
    with pytest.raises(RuntimeError, match="sgid: call setup"):
        _ = aug.context
    with pytest.raises(RuntimeError, match="sgid: call setup"):
        aug.expand(images[:1], [0], NAMES, torch.Generator())
