"""--param parsing and routing, config resolution and hashing."""

from __future__ import annotations

import pytest

from sgid_bench.config import RunSpec, parse_params, parse_value, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError


def spec(**kw: object) -> RunSpec:
    base: dict[str, object] = {"method": "none", "backbone": "resnet50", "dataset": "shapes"}
    return RunSpec(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "value"), [("3", 3), ("0.5", 0.5), ("true", True),
                                             ("False", False), ("[1, 2]", [1, 2]),
                                             ("nucleus", "nucleus")])
def test_parse_value(text: str, value: object) -> None:
    assert parse_value(text) == value


@pytest.mark.parametrize("bad", ["novalue", "=3", ""])
def test_malformed_param_is_a_user_error(bad: str) -> None:
    with pytest.raises(UserError, match="malformed --param"):
        parse_params([bad])


def test_params_route_to_the_component_that_takes_them(context: Context) -> None:
    r = resolve(spec(method="random_erasing", params=["p=0.3"]), context)
    assert r.config["augmenters"][0]["params"]["p"] == 0.3


def test_ambiguous_param_asks_for_a_prefix(context: Context) -> None:
    with pytest.raises(UserError, match="taken by random_erasing and cutmix"):
        resolve(spec(method="random_erasing+cutmix", params=["p=0.3"]), context)


def test_prefixed_params_and_training_params(context: Context) -> None:
    r = resolve(spec(method="random_erasing+cutmix",
                     params=["cutmix.p=0.25", "train.epochs=2", "batch_size=16"]), context)
    assert r.config["augmenters"][1]["params"]["p"] == 0.25
    assert r.config["augmenters"][0]["params"]["p"] == 0.5
    assert r.recipe.epochs == 2
    assert r.recipe.batch_size == 16


def test_unknown_param_lists_what_is_taken(context: Context) -> None:
    with pytest.raises(UserError, match="unknown parameter 'strength'.*cutmix takes alpha, p"):
        resolve(spec(method="cutmix", params=["strength=0.5"]), context)


def test_wrong_type_is_a_user_error(context: Context) -> None:
    with pytest.raises(UserError, match="must be a float"):
        resolve(spec(method="cutmix", params=["cutmix.alpha=abc"]), context)


def test_unknown_names_list_the_known_ones(context: Context) -> None:
    with pytest.raises(UserError, match=r"unknown augmenter 'nope'; known augmenters: .*cutmix"):
        resolve(spec(method="nope"), context)
    with pytest.raises(UserError, match=r"unknown backbone 'nope'; known backbones: .*resnet50"):
        resolve(spec(backbone="nope"), context)
    with pytest.raises(UserError, match=r"unknown dataset 'nope'; known datasets: .*shapes"):
        resolve(spec(dataset="nope"), context)
    with pytest.raises(UserError, match="malformed method"):
        resolve(spec(method="cutmix+"), context)


def test_hash_is_stable_and_changes_with_what_matters(context: Context) -> None:
    a = resolve(spec(method="cutmix"), context).config_hash
    assert a == resolve(spec(method="cutmix", seed=3), context).config_hash  # seed not hashed
    assert a == resolve(spec(method="cutmix", params=["alpha=1"]), context).config_hash
    assert a != resolve(spec(method="cutmix", params=["alpha=0.4"]), context).config_hash
    assert a != resolve(spec(method="cutmix", profile="paper"), context).config_hash


def test_models_used_are_part_of_the_config(context: Context) -> None:
    quick = resolve(spec(backbone="vit"), context).config["models"]
    paper = resolve(spec(backbone="vit", profile="paper"), Context(profile="paper")).config
    assert quick["vit.backbone"].startswith("tiny/")
    assert not paper["models"]["vit.backbone"].startswith("tiny/")
