"""Each generative method end to end on the tiny presets through the generation cache,
determinism, DiverseCaption's summaries, and the ``show`` / ``similarity`` commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sgid_bench.cache import expand_samples, generate
from sgid_bench.config import RunSpec, resolve
from sgid_bench.context import Context
from sgid_bench.plugins import augmenter_class
from sgid_bench_plugins import captioning
from sgid_bench_plugins.gen_baselines import TEXT2IMG_TEMPLATES, SGIDDiverseCaption

NAMES = ["red car", "tabby cat", "oak tree"]
METHODS = ["sgid", "text2img", "sgid_diversecaption", "sgid_instructpix2pix"]


def make_samples(n: int = 6, size: int = 32) -> list[tuple[Image.Image, int]]:
    rng = np.random.default_rng(2)
    return [(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)), i % 3)
            for i in range(n)]


def quick(method: str, context: Context, **params: Any) -> Any:
    cls = augmenter_class(method)
    aug = cls(**{**cls.profile_params("tiny", "shapes"), **params})
    aug.setup(context)
    return aug


@pytest.mark.parametrize("method", METHODS)
def test_method_end_to_end_through_the_cache(method: str, context: Context) -> None:
    samples = make_samples(6, size=24)
    aug = quick(method, context)
    first = generate(aug, samples, NAMES, key={"method": method}, seed=0, context=context)
    assert first.stats.expand_calls == 2  # batches [0, 4) and [4, 6)
    out = first.samples()
    assert [y for _, y in out] == [y for _, y in samples]
    for (im, _), (src, _) in zip(out, samples, strict=True):
        assert im.mode == "RGB"
        assert im.size == src.size  # generated at the method's resolution, returned at 24
        assert im.tobytes() != src.tobytes()
    for rec in first.records:
        info = rec.meta["info"]
        assert info["prompt"]
        assert isinstance(info["guidance"], float)
    again = generate(quick(method, context), samples, NAMES, key={"method": method}, seed=0,
                     context=context)
    assert again.stats.expand_calls == 0
    assert again.stats.reused == 6
    assert [im.tobytes() for im, _ in again.samples()] == [im.tobytes() for im, _ in out]


@pytest.mark.parametrize("method", ["sgid", "text2img"])
def test_same_seed_gives_identical_images(method: str, tmp_path: Path) -> None:
    samples = make_samples(4)
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        ctx = Context(cache_dir=tmp_path / name, gen_batch_size=4)
        out = expand_samples(quick(method, ctx), samples, NAMES, key={"m": method}, seed=seed,
                             context=ctx)
        runs.append([np.asarray(im) for im, _ in out])
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not all(np.array_equal(a, c) for a, c in zip(runs[0], runs[2], strict=True))


def test_sgid_prompt_holds_the_label_and_the_chosen_caption(context: Context) -> None:
    result = generate(quick("sgid", context), make_samples(3), NAMES, key={"m": 1}, seed=0,
                      context=context)
    for rec in result.records:
        info = rec.meta["info"]
        assert info["prompt"] == f"A picture of a {NAMES[rec.label]}, {info['caption']}"
        assert -1.0 <= info["score"] <= 1.0
    # A CLIP cosine per image, not one constant.
    assert len({round(r.meta["info"]["score"], 6) for r in result.records}) > 1


def test_text2img_prompts_come_from_the_label(context: Context) -> None:
    aug = quick("text2img", context, language_enhancement=False)
    aug.expand([im for im, _ in make_samples(3)], [0, 1, 2], NAMES,
               torch.Generator().manual_seed(0))
    options = [[t.format(label=n) for t in TEXT2IMG_TEMPLATES] for n in NAMES]
    assert [i["prompt"] in options[y] for i, y in zip(aug.last_info, [0, 1, 2],
                                                       strict=True)] == [True] * 3
    fixed = quick("text2img", context, template="a {label} in the snow",
                  language_enhancement=False)
    fixed.expand([im for im, _ in make_samples(2)], [0, 1], NAMES, torch.Generator())
    assert [i["prompt"] for i in fixed.last_info] == ["a red car in the snow",
                                                      "a tabby cat in the snow"]


def test_text2img_language_enhancement_writes_one_sampled_sentence_per_image(
        context: Context) -> None:
    from sgid_bench_plugins.language import LanguageModel

    aug = quick("text2img", context)
    assert aug.models_used(context)["text"] == "tiny/t5"
    labels = [0, 1, 2, 0]
    aug.expand([im for im, _ in make_samples(4)], labels, NAMES,
               torch.Generator().manual_seed(3))
    # The prompts are the language model's samples of "describe: {label}", drawn from the
    # same generator stream (the first draw of the batch).
    lm = LanguageModel("tiny/t5", context)
    expected = lm.sample([f"describe: {NAMES[y]}" for y in labels], 0.9,
                         torch.Generator().manual_seed(3))
    assert [i["prompt"] for i in aug.last_info] == [e or NAMES[y] for e, y in
                                                    zip(expected, labels, strict=True)]


def test_instructpix2pix_wraps_the_prompt_in_the_instruction(context: Context) -> None:
    aug = quick("sgid_instructpix2pix", context, edits="caption")
    aug.expand([im for im, _ in make_samples(2)], [0, 1], NAMES, torch.Generator())
    for info, name in zip(aug.last_info, NAMES, strict=False):
        assert info["prompt"] == f"turn it into A picture of a {name}, {info['caption']}"
        assert info["guidance"] == 7.5


def test_instructpix2pix_diversifying_edits_name_the_class(context: Context) -> None:
    from sgid_bench_plugins.gen_baselines import ALIA_EDITS

    aug = quick("sgid_instructpix2pix", context)
    assert "captioner" not in aug.models_used(context)  # no captions needed
    labels = [0, 1, 2, 0, 1, 2]
    aug.expand([im for im, _ in make_samples(6)], labels, NAMES,
               torch.Generator().manual_seed(1))
    prompts = [i["prompt"] for i in aug.last_info]
    for prompt, y in zip(prompts, labels, strict=True):
        assert prompt in [e.format(label=NAMES[y]) for e in ALIA_EDITS]
    assert len(set(prompts)) > 1  # drawn per image, not one edit for all


def test_summarize_takes_the_medoid_then_the_farthest() -> None:
    captions = ["a", "b", "c", "a", "d"]
    emb = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]]), dim=-1)
    # Unique: a, b, c, d; mean similarity is highest for d (between the two groups).
    assert captioning.summarize(captions, emb, 1) == ["d"]
    # Then the caption least similar to d (a), then the one farthest from both (c).
    assert captioning.summarize(captions, emb, 3) == ["d", "a", "c"]
    assert captioning.summarize(["", ""], emb[:2], 2) == []


def test_diversecaption_uses_its_class_summaries(context: Context) -> None:
    samples = make_samples(9)
    aug = quick("sgid_diversecaption", context)
    result = generate(aug, samples, NAMES, key={"m": "dc"}, seed=0, context=context)
    state = aug.state()["summaries"]
    assert sorted(state) == ["0", "1", "2"]
    assert all(1 <= len(s) <= aug.num_summaries for s in state.values()), state
    for rec in result.records:
        assert rec.meta["info"]["caption"] in state[str(rec.label)]
    # The summaries were stored once with the images and are reloaded, not recomputed.
    fresh = quick("sgid_diversecaption", context)
    samples_more = make_samples(10)
    generate(fresh, samples_more, NAMES, key={"m": "dc"}, seed=0, context=context)
    assert fresh.state()["summaries"] == state


def test_diversecaption_without_fit_summarises_the_batch(context: Context) -> None:
    aug: SGIDDiverseCaption = quick("sgid_diversecaption", context)
    aug.expand([im for im, _ in make_samples(4)], [0, 0, 1, 1], NAMES, torch.Generator())
    assert set(aug.summaries) == {0, 1}


def test_text2img_then_sgid_chain(context: Context) -> None:
    from sgid_bench.data import expand_chain

    resolved = resolve(RunSpec(method="text2img+sgid"), context)
    out = expand_chain(resolved, make_samples(3), NAMES, context, None)
    assert [y for _, y in out] == [0, 1, 2]
    keys = sorted(p.name for p in Path(context.cache_dir).iterdir())
    assert len(keys) == 2  # one cache entry per stage: text2img, then sgid on its images


def test_show_writes_a_grid_png(runner: Any, tmp_path: Path) -> None:
    from sgid_bench.visualize import show

    out = tmp_path / "grid.png"
    args = ["--method", "sgid", "--dataset", "shapes", "--n", "3", "-o", str(out),
            "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(show, args)
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.format == "PNG"
        # One 2.9-inch row (original | augmented) per image at 100 dpi, under the title.
        assert im.size == (640, round(100 * (2.9 * 3 + 1.0)))
    again = runner.invoke(show, args)  # cached: the same grid again
    assert again.exit_code == 0, again.output


def test_show_applies_transform_stages_and_rejects_batch_only_methods(
        runner: Any, tmp_path: Path) -> None:
    from sgid_bench.plugins import registry
    from sgid_bench.visualize import show

    names = registry().names("augmenter")
    if "randaugment" in names:
        out = tmp_path / "ra.png"
        result = runner.invoke(show, ["--method", "randaugment", "--n", "2", "-o", str(out),
                                      "--device", "cpu"])
        assert result.exit_code == 0, result.output
        assert out.is_file()
    if "cutmix" in names:
        result = runner.invoke(show, ["--method", "cutmix", "-o", str(tmp_path / "c.png"),
                                      "--device", "cpu"])
        assert result.exit_code == 1
        assert "no image-level stage" in result.output


def test_similarity_table_and_plot(runner: Any, tmp_path: Path) -> None:
    from sgid_bench.visualize import similarity

    out = tmp_path / "sim.png"
    result = runner.invoke(similarity, [
        "--method", "sgid", "--method", "text2img", "--dataset", "shapes", "--per-class", "1",
        "-o", str(out), "--device", "cpu", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "sgid" in result.output
    assert "text2img" in result.output
    assert "mean" in result.output
    (mean_row,) = [line for line in result.output.splitlines() if " mean " in line]
    sgid_mean, text2img_mean = (float(v) for v in re.findall(r"-?\d+\.\d{4}", mean_row))
    assert sgid_mean != text2img_mean  # img2img from the original vs text-only generation
    with Image.open(out) as im:
        assert im.format == "PNG"


def test_similarity_means_per_class() -> None:
    from sgid_bench.visualize import Shown, per_class_means

    im = Image.new("RGB", (4, 4))
    shown = [Shown(0, 0, im, im), Shown(1, 0, im, im), Shown(2, 1, im, None)]
    means, overall = per_class_means(shown, [0.5, 0.7, None])
    assert means == {0: pytest.approx(0.6)}
    assert overall == pytest.approx(0.6)


def test_tiny_generation_runs_single_threaded_and_restores_threads(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    from sgid_bench_plugins.gen_baselines import Text2Img

    seen = []
    original = Text2Img._expand

    def spy(self: Any, *args: Any) -> Any:
        seen.append(torch.get_num_threads())
        return original(self, *args)

    monkeypatch.setattr(Text2Img, "_expand", spy)
    torch.set_num_threads(2)
    quick("text2img", context).expand([im for im, _ in make_samples(1)], [0], NAMES,
                                      torch.Generator())
    assert seen == [1]
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("method", ["sgid", "text2img"])
def test_expand_rejects_labels_that_do_not_match_the_images(method: str,
                                                            context: Context) -> None:
    # One output per input: a labels list of another length is an error, never a silently
    # shorter (or label-shifted) batch.
    images = [im for im, _ in make_samples(3)]
    params = {"language_enhancement": False} if method == "text2img" else {}
    for labels in ([0, 1, 2, 0], [0, 1]):
        aug = quick(method, context, **params)
        with pytest.raises(ValueError, match="shorter|longer"):
            aug.expand(images, labels, NAMES, torch.Generator().manual_seed(0))


def test_instructpix2pix_edits_are_drawn_from_the_expand_generator(context: Context) -> None:
    images = [im for im, _ in make_samples(4)]
    labels = [0, 1, 2, 0]
    runs = []
    for global_seed, seed in ((5, 1), (6, 1), (5, 2)):
        aug = quick("sgid_instructpix2pix", context)
        torch.manual_seed(global_seed)  # the global RNG plays no part
        aug.expand(images, labels, NAMES, torch.Generator().manual_seed(seed))
        runs.append([i["prompt"] for i in aug.last_info])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_diversecaption_class_without_summaries_gets_the_label_prompt(
        context: Context) -> None:
    # An untrained summariser can leave a class with no caption: its images then get the
    # label sentence alone, with s* the similarity to that prompt.
    aug: SGIDDiverseCaption = quick("sgid_diversecaption", context, caption="clip_filter")
    aug.load_state({"summaries": {"0": [], "1": ["a shiny thing"]}})
    out = aug.expand([im for im, _ in make_samples(2)], [0, 1], NAMES, torch.Generator())
    assert all(o is not None for o in out)
    first, second = aug.last_info
    assert (first["caption"], first["prompt"]) == (None, "A picture of a red car")
    assert isinstance(first["score"], float)
    assert second["caption"] == "a shiny thing"
    assert second["prompt"] == "A picture of a tabby cat, a shiny thing"
