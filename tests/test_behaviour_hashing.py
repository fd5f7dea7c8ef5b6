"""Config hashes and generation-cache keys (issue 13): everything that changes a result
changes the config hash (model ids and their pinned revisions included) and nothing else
does; model ids change the generation key; each generation batch draws from its own
random stream."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from PIL import Image

from sgid_bench.api import Augmenter
from sgid_bench.cache import DEFAULT_GEN_BATCH, effective_key, generate, key_hash
from sgid_bench.config import RunSpec, config_hash, generation_seed, resolve
from sgid_bench.context import Context
from sgid_bench.data import generation_keys


def spec(**kwargs: Any) -> RunSpec:
    return RunSpec(**{"method": "sgid", "backbone": "resnet50", "dataset": "shapes",
                      **kwargs})


def hash_of(context: Context, **kwargs: Any) -> str:
    return resolve(spec(**kwargs), context).config_hash


def keys_of(context: Context, **kwargs: Any) -> list[str]:
    resolved = resolve(spec(**kwargs), context)
    return [key_hash(k) for k in generation_keys(resolved, context)]


#: One change per entry, each of which changes what a run computes.
CHANGES: list[dict[str, Any]] = [
    {"params": ["generator_model=org/sd-v1-5"]},
    {"params": ["generator_model=org/sd-v1-5@0123456789abcdef"]},  # a pinned revision
    {"params": ["generator_model=org/sd-v1-5@fedcba9876543210"]},  # another revision
    {"params": ["caption_model=org/blip"]},
    {"params": ["clip_model=org/clip"]},
    {"params": ["strength=0.7"]},
    {"params": ["generation.seed=per-run"]},
    {"params": ["train.epochs=7"]},
    {"params": ["train.lr=0.123"]},
    {"params": ["train.batch_size=17"]},
    {"params": ["train.label_smoothing=0.1"]},
    {"params": ["train.weight_decay=0.01"]},
    {"params": ["dataset.train_per_class=7"]},
    {"backbone": "vit"},
    {"method": "text2img"},
    {"method": "sgid+randaugment"},
    {"method": "randaugment+sgid"},
]


def test_every_result_changing_setting_changes_the_config_hash(context: Context) -> None:
    base = hash_of(context)
    hashes = [hash_of(context, **c) for c in CHANGES]
    assert base not in hashes
    assert len(set(hashes)) == len(hashes), "two different settings share a hash"


def test_what_does_not_change_a_result_does_not_change_the_hash(context: Context) -> None:
    base = hash_of(context)
    assert hash_of(context, seed=5) == base  # the seed is stored beside the hash
    assert hash_of(context, params=["strength=0.5"]) == base  # the default, spelt out
    epochs = resolve(spec(), context).recipe.epochs
    assert hash_of(context, params=[f"train.epochs={epochs}"]) == base
    # generation.seed means nothing without an expand stage.
    plain = hash_of(context, method="cutmix")
    assert hash_of(context, method="cutmix", params=["generation.seed=per-run"]) == plain


def test_config_hash_is_the_sha256_of_canonical_json() -> None:
    import hashlib

    assert config_hash({"b": 1, "a": [1, 2]}) == config_hash({"a": [1, 2], "b": 1})
    assert config_hash({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_model_ids_and_revisions_change_the_generation_key(context: Context) -> None:
    base = keys_of(context)
    assert len(base) == 1
    keys = [keys_of(context, **c)[0] for c in CHANGES[:5]]
    assert base[0] not in keys
    assert len(set(keys)) == len(keys)


def test_generation_key_is_shared_across_seeds_and_backbones(context: Context) -> None:
    # Fixed generation seed (the default): every seed and backbone trains on the same
    # generated images, so they share the cache; training settings do not matter to it.
    base = keys_of(context)
    assert keys_of(context, seed=3) == base
    assert keys_of(context, backbone="vit") == base
    assert keys_of(context, params=["train.epochs=7"]) == base
    assert keys_of(context, params=["dataset.train_per_class=7"]) != base
    assert keys_of(context, dataset="shapes", params=["strength=0.7"]) != base


def test_chained_stages_key_on_every_stage_before_them(context: Context) -> None:
    first, second = keys_of(context, method="text2img+sgid")
    alone = keys_of(context, method="sgid")[0]
    assert second != alone  # SGID on Text2Img's images is not SGID on the originals
    other_first = keys_of(context, method="text2img+sgid", params=["text2img.steps=3"])
    assert other_first[0] != first
    assert other_first[1] != second


def test_generation_seed_follows_the_setting() -> None:
    assert generation_seed({"generation_seed": "fixed"}, 7) == 0
    assert generation_seed({"generation_seed": "per-run"}, 7) == 7
    assert generation_seed({}, 7) == 0


class Draws(Augmenter):
    """An expand stage recording one draw per generator it is given; the image is a
    grey level made of the draw, so images show their stream."""

    name = "draws"
    per_image_generators: ClassVar[bool] = False
    calls: ClassVar[list[list[int]]] = []

    def expand(self, images, labels, class_names, generator):  # type: ignore[no-untyped-def]
        gens = generator if isinstance(generator, list) else [generator] * len(images)
        values = [int(torch.randint(0, 256, (), generator=g)) for g in gens]
        Draws.calls.append(values)
        return [Image.new("RGB", (2, 2), (v, v, v)) for v in values]


class PerImageDraws(Draws):
    name = "per-image-draws"
    per_image_generators: ClassVar[bool] = True


def samples(n: int) -> list[tuple[Image.Image, int]]:
    return [(Image.new("RGB", (2, 2)), i % 2) for i in range(n)]


def draws(cls: type[Draws], tmp: Path, batch: int, seed: int = 0, n: int = 8) -> list[list[int]]:
    Draws.calls = []
    ctx = Context(cache_dir=tmp, gen_batch_size=batch)
    generate(cls(), samples(n), ["a", "b"], key={"k": 1}, seed=seed, context=ctx)
    return Draws.calls


def test_each_generation_batch_has_its_own_random_stream(tmp_path: Path) -> None:
    batches = draws(Draws, tmp_path / "a", batch=2)
    assert len(batches) == 4
    # One generator per batch: its images share it (successive draws), batches do not.
    streams = {tuple(b) for b in batches}
    assert len(streams) == 4
    assert draws(Draws, tmp_path / "b", batch=2) == batches  # reproducible
    assert draws(Draws, tmp_path / "c", batch=2, seed=1) != batches  # seeded


def test_per_image_generators_do_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    by_two = [v for b in draws(PerImageDraws, tmp_path / "a", batch=2) for v in b]
    by_eight = [v for b in draws(PerImageDraws, tmp_path / "b", batch=8) for v in b]
    assert by_two == by_eight
    assert len(set(by_two)) > 4  # one stream per image, not one shared


def test_the_batch_size_keys_batch_dependent_generation_only(context: Context) -> None:
    other = Context(cache_dir=context.cache_dir, gen_batch_size=DEFAULT_GEN_BATCH + 1)
    default = Context(cache_dir=context.cache_dir, gen_batch_size=DEFAULT_GEN_BATCH)
    assert effective_key(Draws, {"k": 1}, other) == {"k": 1, "gen_batch_size": 9}
    assert effective_key(Draws, {"k": 1}, default) == {"k": 1}
    assert effective_key(PerImageDraws, {"k": 1}, other) == {"k": 1}


@pytest.mark.parametrize("batch", [2, 3])
def test_a_resumed_generation_regenerates_the_same_images(tmp_path: Path, batch: int) -> None:
    ctx = Context(cache_dir=tmp_path, gen_batch_size=batch)
    first = generate(Draws(), samples(7), ["a", "b"], key={"k": 1}, seed=0, context=ctx)
    pixels = [r.image.getpixel((0, 0)) for r in first.records]  # type: ignore[union-attr]
    victim = sorted(first.path.glob("0000004-s0.*"))
    for path in victim:
        path.unlink()
    again = generate(Draws(), samples(7), ["a", "b"], key={"k": 1}, seed=0, context=ctx)
    assert again.stats.generated == 1
    assert [r.image.getpixel((0, 0)) for r in again.records] == pixels  # type: ignore[union-attr]


def test_the_default_generation_seed_spelt_out_keeps_the_hash(context: Context) -> None:
    assert resolve(spec(), context).config["generation_seed"] == "fixed"
    assert hash_of(context, params=["generation.seed=fixed"]) == hash_of(context)


def test_per_run_generation_follows_the_training_seed(context: Context) -> None:
    config = resolve(spec(params=["generation.seed=per-run", "strength=0.7"]), context).config
    assert config["generation_seed"] == "per-run"
    assert generation_seed(config, 7) == 7
    assert config["augmenters"][0]["params"]["strength"] == 0.7  # later params still apply
    plain = resolve(spec(method="cutmix", params=["generation.seed=per-run"]), context).config
    assert plain["generation_seed"] == "fixed"  # nothing generated: nothing to follow


def test_micro_batch_is_hashed_only_when_it_splits_the_batch(context: Context) -> None:
    batch = resolve(spec(method="cutmix"), context).recipe.batch_size

    def config(micro_batch: int | None) -> dict[str, Any]:
        return resolve(spec(method="cutmix"), replace(context, micro_batch=micro_batch)).config

    assert config(batch // 4)["micro_batch"] == batch // 4
    whole = [config(size) for size in (None, batch, 2 * batch)]
    assert all("micro_batch" not in c for c in whole)
    assert len({config_hash(c) for c in whole}) == 1
    assert config_hash(config(batch // 4)) != config_hash(whole[0])


def test_the_generation_batch_size_is_hashed_for_batch_dependent_generation_only(
        context: Context) -> None:
    def config(method: str, batch: int) -> dict[str, Any]:
        return resolve(spec(method=method), replace(context, gen_batch_size=batch)).config

    other = DEFAULT_GEN_BATCH + 1
    assert config("sgid", other)["gen_batch_size"] == other  # sgid: one generator per batch
    assert "gen_batch_size" not in config("sgid", DEFAULT_GEN_BATCH)
    assert "gen_batch_size" not in config("cutmix", other)  # no expand stage
    assert config_hash(config("cutmix", other)) == config_hash(config("cutmix", 1))


def test_values_json_cannot_hold_are_hashed_as_their_text() -> None:
    assert config_hash({"root": Path("/data/x")}) == config_hash({"root": "/data/x"})
