"""The procedural world: exact captions, pure rendering, one-attribute edits, and the
target dataset's context shift."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from sgid_bench.world import scene


def test_render_is_a_pure_function_of_the_scene() -> None:
    s = scene.corpus_scenes(3)[2]
    a, b = np.asarray(scene.render(s)), np.asarray(scene.render(s))
    assert a.shape == (scene.SIZE, scene.SIZE, 3)
    assert np.array_equal(a, b)
    assert scene.corpus_scenes(3) == scene.corpus_scenes(3)


def test_caption_names_every_attribute() -> None:
    s = scene.Scene("star", "red", "small", "stripes", 0.25, 0.0, 0.0, 0.0, 1)
    assert scene.caption(s) == "a small red star on a striped background"
    assert set(scene.caption(s).split()) <= set(scene.vocabulary())


def test_corpus_covers_every_attribute_value() -> None:
    scenes = scene.corpus_scenes(600)
    for attr, values in (("shape", scene.SHAPES), ("colour", scene.COLOURS),
                         ("background", scene.BACKGROUNDS), ("size", scene.SIZES)):
        assert {getattr(s, attr) for s in scenes} == set(values), attr
    assert not any((s.colour, s.background) in scene.CLASHES for s in scenes)


def test_size_words_match_the_drawn_radius() -> None:
    for s in scene.corpus_scenes(200):
        lo, hi = scene.SIZES[s.size]
        assert lo <= s.radius <= hi
    small = [scene.mask(s).sum() for s in scene.corpus_scenes(300) if s.size == "small"]
    large = [scene.mask(s).sum() for s in scene.corpus_scenes(300) if s.size == "large"]
    assert np.mean(large) > 1.5 * np.mean(small)


@pytest.mark.parametrize("seed", range(20))
def test_an_edit_changes_only_the_named_attribute(seed: int) -> None:
    s = scene.corpus_scenes(20)[seed]
    instruction, e = scene.edit(s, np.random.default_rng(seed))
    changed = {f.name for f in fields(s) if getattr(s, f.name) != getattr(e, f.name)}
    if instruction.startswith("make it bigger") or instruction.startswith("make it smaller"):
        assert changed == {"size", "radius"}
    elif instruction.startswith("put it"):
        assert changed == {"background"}
        assert instruction == f"put it {scene.BACKGROUNDS[e.background]}"
    else:
        assert changed == {"colour"}
        assert instruction == f"make it {e.colour}"
    # Same geometry: the object covers the same pixels unless its size changed.
    if "size" not in changed:
        assert np.array_equal(scene.mask(s), scene.mask(e))


def test_target_train_and_test_contexts_differ() -> None:
    train = scene.target_scenes("train", 10)
    val = scene.target_scenes("val", 5)
    test = scene.target_scenes("test", 30)
    assert {s.background for s in train} | {s.background for s in val} == set(
        scene.TARGET_TRAIN_BACKGROUNDS)
    assert {s.background for s in test} == set(scene.BACKGROUNDS)
    # Balanced classes, label order interleaved.
    assert [s.label for s in train[:12]] == list(range(12))
    assert np.bincount([s.label for s in test]).tolist() == [30] * 12
    # Disjoint streams: no scene appears in two splits.
    seeds = [{s.seed for s in split} for split in (train, val, test)]
    assert not seeds[0] & seeds[1]
    assert not seeds[0] & seeds[2]
    assert not seeds[1] & seeds[2]


def test_world_dataset_plugin_serves_the_target_splits() -> None:
    from sgid_bench.plugins import dataset_class

    ds = dataset_class("world")(train_per_class=2, val_per_class=1, test_per_class=3)
    train, val, test = ds.load("train"), ds.load("val"), ds.load("test")
    assert (len(train), len(val), len(test)) == (24, 12, 36)
    assert train.class_names == list(scene.SHAPES)
    image, label = test.samples[5]
    expected = scene.render(scene.target_scenes("test", 3)[5])
    assert label == 5
    assert np.array_equal(np.asarray(image), np.asarray(expected))
