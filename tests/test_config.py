"""--param parsing and routing, config resolution and hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgid_bench import __version__
from sgid_bench.api import Plugin
from sgid_bench.config import (
    VAL_FRACTION,
    RunSpec,
    SetupOnce,
    parse_params,
    parse_value,
    resolve,
)
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.plugins import augmenter_class, backbone_class, dataset_class


def spec(**kw: object) -> RunSpec:
    base: dict[str, object] = {"method": "none", "backbone": "resnet50", "dataset": "shapes"}
    return RunSpec(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "value"), [("3", 3), ("0.5", 0.5), ("true", True),
                                             ("False", False), ("True", True),
                                             ("TRUE", True), ("[1, 2]", [1, 2]),
                                             ("nucleus", "nucleus")])
def test_parse_value(text: str, value: object) -> None:
    assert parse_value(text) == value


@pytest.mark.parametrize("bad", ["novalue", "=3", "", ".p=0.3", "sgid.=0.3", " . =1"])
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


def test_params_split_on_the_first_equals_sign_and_unprefixed_keys_have_no_target() -> None:
    assert parse_params(["template=a {label}=b", "sgid.strength=0.5"]) == [
        (None, "template", "a {label}=b"), ("sgid", "strength", 0.5)]


def test_the_default_dataset_follows_the_profile() -> None:
    assert RunSpec(profile="tiny").dataset == "shapes"
    assert RunSpec(profile="paper").dataset == "shapes"
    assert RunSpec(profile="quick").dataset == "world"
    assert RunSpec(profile="tiny", dataset="cifar10").dataset == "cifar10"


def test_the_config_records_every_component_by_name_version_and_params(
        context: Context) -> None:
    # The stored config's layout: renaming a key would orphan every stored result's hash.
    r = resolve(spec(method="cutmix"), context)

    def component(cls: type[Plugin]) -> dict[str, object]:
        return {"name": cls.name, "version": str(cls.version), "params": cls.param_defaults()}

    assert r.config == {
        "harness": __version__,
        "method": "cutmix",
        "augmenters": [component(augmenter_class("cutmix"))],
        "backbone": component(backbone_class("resnet50")),
        "dataset": component(dataset_class("shapes")),
        "profile": "tiny",
        "recipe": r.recipe.as_dict(),
        "val_fraction": VAL_FRACTION,
        "generation_seed": "fixed",  # no expand stage: nothing generated
        "models": {"resnet50.backbone": "tiny/resnet50"},
    }
    assert r.config["augmenters"][0]["version"] == "1"


def test_the_method_is_recorded_in_the_order_given(context: Context) -> None:
    r = resolve(spec(method="random_erasing+cutmix"), context)
    assert r.config["method"] == "random_erasing+cutmix"
    assert [a["name"] for a in r.config["augmenters"]] == ["random_erasing", "cutmix"]
    assert resolve(spec(method="none"), context).config["method"] == "none"


def test_resolved_holds_the_spec_and_the_configured_instances(context: Context) -> None:
    asked = spec(method="cutmix", params=["cutmix.alpha=0.4", "dataset.train_per_class=7"])
    r = resolve(asked, context)
    assert r.spec is asked
    assert [type(a) for a in r.augmenters] == [augmenter_class("cutmix")]
    assert r.augmenters[0].alpha == 0.4  # type: ignore[attr-defined]
    assert isinstance(r.backbone, backbone_class("resnet50"))
    assert isinstance(r.dataset, dataset_class("shapes"))
    assert len(r.dataset.load("train").samples) == 7 * len(r.dataset.class_names())


def test_backbone_and_dataset_prefixes_name_the_run_s_components(context: Context) -> None:
    r = resolve(spec(backbone="vit", params=["backbone.mode=linear_probe",
                                             "dataset.test_per_class=3"]), context)
    assert r.config["backbone"]["params"]["mode"] == "linear_probe"
    assert r.config["dataset"]["params"]["test_per_class"] == 3


def test_profile_settings_depend_on_the_profile_and_the_dataset() -> None:
    # The paper profile applies Table 8 per dataset; the tiny one its small settings.
    paper = Context(profile="paper")
    caltech = resolve(spec(method="sgid", dataset="caltech101", profile="paper"), paper)
    cifar = resolve(spec(method="sgid", dataset="cifar10", profile="paper"), paper)
    tiny = resolve(spec(method="sgid", profile="tiny"), Context(profile="tiny"))
    params = [r.config["augmenters"][0]["params"] for r in (caltech, cifar, tiny)]
    assert [(p["caption"], p["prompt_weighting"]) for p in params[:2]] == [
        ("nucleus", False), ("clip_filter", True)]
    assert params[2]["steps"] < params[0]["steps"]


def test_the_training_recipe_depends_on_the_dataset() -> None:
    # The paper's transformer recipe for 32 px datasets is not the one for the others.
    paper = Context(profile="paper")
    cifar = resolve(spec(backbone="vit", dataset="cifar10", profile="paper"), paper)
    caltech = resolve(spec(backbone="vit", dataset="caltech101", profile="paper"), paper)
    assert cifar.recipe != caltech.recipe
    assert cifar.recipe == cifar.backbone.recipe(paper, "cifar10")


class Counting(Plugin):
    """Records the context of each setup; fails the first ``failures`` times."""

    name = "counting"

    def __init__(self, failures: int = 0) -> None:
        self.contexts: list[Context] = []
        self.failures = failures

    def setup(self, context: Context) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("setup failed")
        self.contexts.append(context)


def test_setup_once_sets_each_plugin_up_once_per_context(tmp_path: Path) -> None:
    setup = SetupOnce()
    first, second = Counting(), Counting()
    one, two = Context(cache_dir=tmp_path / "a"), Context(cache_dir=tmp_path / "a")
    setup(first, one)
    setup(first, one)
    assert first.contexts == [one]
    assert first.contexts[0] is one
    setup(second, one)  # another plugin in the same context
    assert second.contexts == [one]
    setup(first, two)  # the same plugin in another (equal) context
    assert len(first.contexts) == 2
    assert first.contexts[1] is two
    assert all(setup.done(p, c) for p, c in [(first, one), (first, two), (second, one)])
    assert not setup.done(second, two)


def test_a_failed_setup_is_tried_again(tmp_path: Path) -> None:
    setup, plugin, ctx = SetupOnce(), Counting(failures=1), Context(cache_dir=tmp_path)
    with pytest.raises(RuntimeError):
        setup(plugin, ctx)
    assert not setup.done(plugin, ctx)
    setup(plugin, ctx)
    assert plugin.contexts == [ctx]
