"""SGID's mechanism, measured on the toy world's trained models (not plumbing).

Each test states one causal claim of the paper and checks it on real generations of the
world's Stable Diffusion, judged by the world's independent classifier (the judge):
similarity -> guidance -> closeness to the original, label over caption weighting ->
label accuracy, label filter -> wrong-class images dropped. Each margin is below the
effect measured on the shipped world (see each test); images, prompts and noise are fixed,
so a broken mechanism (weights not applied, the mapping inverted, the filter keeping
everything) fails: each of those was checked to fail its test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sgid_bench.context import Context
from sgid_bench.world import scene as sc
from sgid_bench.world.build import world_component, world_id
from sgid_bench.world.train_judge import load_judge

# diffusers' DPM-Solver converts its torch schedule with np.array(..., copy=False) semantics.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

NAMES = list(sc.SHAPES)


class World:
    """The world's SGID models and 4 target training images per class."""

    def __init__(self, cache: Path) -> None:
        from sgid_bench_plugins.sgid import SGID

        self.context = Context(profile="quick", cache_dir=cache)
        self.judge = load_judge(world_component(world_id("judge", self.context), self.context))
        scenes = sc.target_scenes("train", 4)
        self.images = [sc.render(s) for s in scenes]
        self.labels = np.array([NAMES.index(s.shape) for s in scenes])
        self.captions = [sc.caption(s) for s in scenes]
        # Each image paired with the caption of an image 7 places on: another class.
        self.other = self.captions[7:] + self.captions[:7]
        assert np.all(np.roll(self.labels, -7) != self.labels)
        self.sgid = SGID(**SGID.profile_params("quick", "world"))
        self.sgid.setup(self.context)

    def sgid_with(self, **params: Any) -> Any:
        from sgid_bench_plugins.sgid import SGID

        method = SGID(**{**SGID.profile_params("quick", "world"), **params})
        method.setup(self.context)
        for role in ("generator", "clip"):  # share the loaded models
            method.provide(role, self.sgid._model(role))
        return method

    def generate(self, prompts: Sequence[Any], guidance: Sequence[float],
                 strength: float) -> list[Any]:
        from sgid_bench_plugins import diffusion

        with self.sgid.threads():
            return diffusion.run(self.sgid._model("generator"), "img2img", prompts, guidance,
                                 torch.Generator().manual_seed(0), images=self.images,
                                 size=32, steps=20, strength=strength)

    def label_accuracy(self, images: Sequence[Any]) -> float:
        return float((self.judge(images) == self.labels).mean())

    def change(self, images: Sequence[Any]) -> float:
        """Mean absolute pixel change (0-255) from the originals."""
        return float(np.mean([np.abs(np.asarray(o, float) - np.asarray(i, float)).mean()
                              for o, i in zip(images, self.images, strict=True)]))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("world-cache"))


def test_a_better_caption_gets_a_higher_similarity_and_a_lower_guidance(world: World) -> None:
    sgid = world.sgid_with(guidance_rule="literal")
    clip = sgid._model("clip")
    own = [v[0] for v in clip.image_text(world.images, [[c] for c in world.captions])]
    other = [v[0] for v in clip.image_text(world.images, [[c] for c in world.other])]
    higher = np.array(own) > np.array(other)
    assert higher.mean() >= 0.9  # the world CLIP matches an image to its own caption
    texts = [""] * len(own)  # unused: every score is given
    g_own, _ = sgid.guidance(world.images, texts, own)
    g_other, _ = sgid.guidance(world.images, texts, other)
    # g = -4s^2 + 2s + 1 decreases for s > 1/4: where the own caption is the better one
    # and both lie on that branch, its guidance is lower.
    branch = higher & (np.array(other) > 0.25)
    assert branch.sum() >= 5
    assert np.all(np.array(g_own)[branch] < np.array(g_other)[branch])


def test_mapped_guidance_keeps_images_closer_to_the_original(world: World) -> None:
    """The mapped g (at most 1.25) against the fixed g = 7.5 of plain img2img, same
    prompts and noise: measured 10.2 vs 13.7 mean absolute change on the shipped world."""
    sgid = world.sgid_with()
    prompts = [sgid.prompt(NAMES[y], c) for y, c in zip(world.labels, world.captions, strict=True)]
    texts = ["".join(t for t, _ in p) for p in prompts]
    own = [v[0] for v in sgid._model("clip").image_text(world.images,
                                                          [[c] for c in world.captions])]
    mapped, _ = sgid.guidance(world.images, texts, own)
    assert max(mapped) <= 1.25
    near = world.change(world.generate(prompts, mapped, 0.5))
    far = world.change(world.generate(prompts, [sgid.guidance_scale] * len(prompts), 0.5))
    assert near < far - 0.5


def test_label_weighting_raises_the_label_accuracy_of_generated_images(world: World) -> None:
    """Captions of another class conflict with the label; weighting the label sentence
    over the caption makes the label win more often than the reverse weighting. Measured
    on the shipped world at strength 0.9, g 3: label 2.0 / caption 0.5 gives 83 % of
    images judged as the label, 0.5 / 2.0 gives 71 % (unweighted 77 %; the paper's 1.5 /
    0.9 also 77 %: on this world its weights change little, and weights of 3 and more
    push the embeddings out of what the UNet was trained on)."""
    accuracy = {}
    for label_weight, caption_weight in ((2.0, 0.5), (0.5, 2.0)):
        sgid = world.sgid_with(label_weight=label_weight, caption_weight=caption_weight)
        prompts = [sgid.prompt(NAMES[y], c)
                   for y, c in zip(world.labels, world.other, strict=True)]
        accuracy[label_weight] = world.label_accuracy(
            world.generate(prompts, [3.0] * len(prompts), 0.9))
    assert accuracy[2.0] >= accuracy[0.5] + 0.08


def test_the_label_filter_drops_images_of_the_wrong_class(world: World) -> None:
    """At strength 0.9 with conflicting captions many images change class. The filter
    (CLIP zero-shot against the label) keeps mostly right ones: measured 87 % of the 38
    kept vs 40 % of the 10 dropped images judged as their label."""
    sgid = world.sgid_with(label_filter=True)
    prompts = [sgid.prompt(NAMES[y], c) for y, c in zip(world.labels, world.other, strict=True)]
    outs = world.generate(prompts, [3.0] * len(prompts), 0.9)
    texts = ["".join(t for t, _ in p) for p in prompts]
    sgid.last_info = [{} for _ in outs]
    keep = np.array(sgid.filter_scores(outs, world.images, list(world.labels), NAMES, texts))
    right = world.judge(outs) == world.labels
    assert 0 < keep.sum() < len(keep)
    assert right[keep].mean() >= right[~keep].mean() + 0.2
