"""Issue 12 items 14 and 22: recipe fields validated in one place, bad devices, methods
combined with themselves and NaN / inf parameters rejected before anything is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sgid_bench.api import Augmenter, Recipe
from sgid_bench.cli import main
from sgid_bench.config import RunSpec, parse_value, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.options import check_device
from sgid_bench.plugins import Entry, registry
from sgid_bench.store import Store


@pytest.mark.parametrize(("param", "message"), [
    ("train.epochs=0", "epochs=0: must be an integer >= 1"),
    ("train.epochs=-3", "epochs=-3"),
    ("train.batch_size=0", "batch_size=0"),
    ("train.lr=0", "lr=0.0: must be a finite number > 0"),
    ("train.lr=-0.1", "lr=-0.1"),
    ("train.optimizer=adam", "unknown optimizer; use one of sgd, adamw"),
    ("train.milestones=[60, 30]", "milestones=(60, 30): must be a list of increasing"),
    ("train.milestones=[0, 5]", "milestones"),
    ("train.gamma=0", "gamma"),
    ("train.label_smoothing=1", "label_smoothing=1.0: must be a number in [0, 1)"),
    ("train.momentum=1.5", "momentum"),
    ("train.lr_grid=[0.1, -1]", "lr_grid"),
])
def test_bad_recipe_values_are_user_errors(param: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")) as err:
        resolve(RunSpec(params=[param]), Context())
    assert "--param train." in str(err.value)


def test_valid_recipe_values_are_normalised() -> None:
    recipe = resolve(RunSpec(params=["train.milestones=[2, 4]", "train.lr=1",
                                     "train.label_smoothing=0.1"]), Context()).recipe
    assert (recipe.milestones, recipe.lr, recipe.label_smoothing) == ((2, 4), 1.0, 0.1)
    assert Recipe(lr=1).as_dict() == Recipe(lr=1.0).as_dict()


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999", "[1, NaN]"])
def test_nan_and_inf_params_are_rejected_at_parse_time(text: str) -> None:
    with pytest.raises(UserError, match="not a finite number"):
        parse_value(text)


def test_nan_lr_is_rejected_before_a_run_is_stored(runner: CliRunner, db_url: str) -> None:
    result = runner.invoke(main, ["run", "--method", "none", "--backbone", "clip_vit",
                                  "--param", "train.lr=NaN"])
    assert result.exit_code == 1
    assert "not a finite number" in result.output
    assert "Traceback" not in result.output
    store = Store(db_url)
    assert store.runs(status=None) == []
    store.close()


def test_ordinary_values_still_parse() -> None:
    assert parse_value("0.5") == 0.5
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("nan") == "nan"  # not JSON: a string, for string parameters


@pytest.mark.parametrize("method", ["none+none", "cutmix+cutmix", "randaugment+cutmix+cutmix"])
def test_a_method_combined_with_itself_is_rejected(method: str) -> None:
    with pytest.raises(UserError, match="with itself"):
        resolve(RunSpec(method=method), Context())


def test_device_bogus_is_rejected() -> None:
    with pytest.raises(UserError, match="unknown --device 'bogus'"):
        check_device("bogus")


def test_device_cuda_without_cuda_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA is not available"):
        check_device("cuda")
    check_device("cuda", here=False)  # a Ray task's device is the cluster's business
    check_device("cpu")


def test_run_with_a_bad_device_stores_nothing(runner: CliRunner, db_url: str) -> None:
    result = runner.invoke(main, ["run", "--method", "none", "--device", "bogus"])
    assert result.exit_code == 1
    assert "unknown --device" in result.output
    store = Store(db_url)
    assert store.runs(status=None) == []
    store.close()


def _resolve(**kw: object) -> None:
    resolve(RunSpec(**{"backbone": "resnet50", "dataset": "shapes", **kw}),  # type: ignore[arg-type]
            Context())


def test_an_unknown_profile_is_a_user_error_before_anything_reads_the_dataset() -> None:
    # The harness builds the run's context from the spec, then resolves it.
    spec = RunSpec(profile="nope")
    with pytest.raises(UserError,
                       match="unknown profile 'nope'; known profiles: quick, tiny, paper"):
        resolve(spec, Context().for_run(spec.profile, spec.dataset, spec.seed))


def test_a_non_finite_value_error_names_the_value_and_the_fix() -> None:
    with pytest.raises(UserError, match=r"'\[1, NaN\]': NaN is not a finite number; give a finite"):
        parse_value("[1, NaN]")
    with pytest.raises(UserError, match="1e999 is not a finite number; give a finite value"):
        parse_value("1e999")


def test_a_method_combined_with_itself_names_the_repeats_and_the_fix() -> None:
    with pytest.raises(UserError,
                       match="combines cutmix, mixup with itself: name each method once"):
        _resolve(method="mixup+cutmix+mixup+cutmix")


@pytest.mark.parametrize("param", ["generation.seed=bogus", "generation.steps=fixed"])
def test_a_bad_generation_setting_lists_the_valid_ones(param: str) -> None:
    with pytest.raises(UserError, match=r"--param generation\..*: use generation.seed=fixed "
                                        r"or generation.seed=per-run$"):
        _resolve(method="sgid", params=[param])


def test_an_unknown_training_parameter_lists_the_training_parameters() -> None:
    with pytest.raises(UserError, match="unknown --param train.bogus; training parameters") as err:
        _resolve(params=["train.bogus=1"])
    listed = str(err.value).split("training parameters: ")[1].split(", ")
    assert listed == sorted(listed)
    assert {"epochs", "lr", "batch_size", "label_smoothing"} <= set(listed)


def test_an_unknown_component_lists_the_run_s_components() -> None:
    with pytest.raises(UserError, match="--param nope.p: 'nope' is not part of this run; "
                                        "components: cutmix, resnet50, shapes, train$"):
        _resolve(method="cutmix", params=["nope.p=1"])


def test_an_unknown_parameter_lists_what_each_component_takes() -> None:
    with pytest.raises(UserError, match="unknown parameter 'strength' for none / resnet50 / "
                                        "shapes: none takes nothing; resnet50 takes nothing; "
                                        "shapes takes test_per_class, train_per_class$"):
        _resolve(method="none", params=["strength=1"])
    with pytest.raises(UserError, match="unknown parameter 'strength' for cutmix: "
                                        "cutmix takes alpha, p$"):
        _resolve(method="cutmix", params=["cutmix.strength=1"])


def test_an_ambiguous_parameter_suggests_the_first_component_s_prefix() -> None:
    with pytest.raises(UserError, match=r"prefix it, e.g. --param random_erasing\.p=\.\.\.$"):
        _resolve(method="random_erasing+cutmix", params=["p=0.3"])


@pytest.mark.parametrize(("param", "message"), [
    ("cutmix.alpha=abc", "--param cutmix.alpha must be a float, got 'abc'"),
    ("alpha=[1, 2]", "--param cutmix.alpha must be a float, got [1, 2]"),
    ("train.epochs=abc", "--param train.epochs must be a int, got 'abc'"),
    ("train.lr=[1]", "--param train.lr must be a float"),
    ("random_erasing.scale=abc", "--param random_erasing.scale must be a tuple, got 'abc'"),
    ("sgid.prompt_weighting=3", "--param sgid.prompt_weighting must be true or false, got 3"),
])
def test_a_value_of_the_wrong_type_names_the_parameter_and_the_type(
        param: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("[", r"\[")):
        _resolve(method="cutmix+random_erasing+sgid", params=[param])


def test_a_value_a_plugin_refuses_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"invalid parameter: p must be in \[0, 1\], got 1.5"):
        _resolve(method="random_erasing", params=["p=1.5"])


def test_a_dataset_path_goes_to_the_dataset_that_takes_one(tmp_path: Path) -> None:
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "pics" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (4, 4)).save(tmp_path / "pics" / label / f"{i}.png")
    r = resolve(RunSpec(dataset=f"imagefolder:{tmp_path / 'pics'}"), Context())
    assert r.config["dataset"]["name"] == "imagefolder"
    assert r.config["dataset"]["params"]["path"] == str(tmp_path / "pics")
    assert r.dataset.class_names() == ["cat", "dog"]
    with pytest.raises(UserError, match="dataset 'shapes' takes no path: use --dataset shapes$"):
        resolve(RunSpec(dataset="shapes:/somewhere"), Context())


class NeedsModel(Augmenter):
    """A third-party method with parameters that have no default, or None."""

    name = "needs_model"

    def __init__(self, model: str, prompt: str, revision: str | None = None) -> None:
        self.model, self.prompt, self.revision = model, prompt, revision

    def transform(self, image, generator):  # type: ignore[no-untyped-def]
        return image


def test_required_parameters_must_be_given_and_none_defaults_take_any_type(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry().entries["augmenter"], NeedsModel.name,
                        Entry(NeedsModel, "tests"))
    with pytest.raises(UserError, match=r"missing required parameter\(s\) needs_model.model, "
                                        r"needs_model.prompt: set --param$"):
        _resolve(method="needs_model")
    with pytest.raises(UserError, match=r"missing required parameter\(s\) needs_model.prompt:"):
        _resolve(method="needs_model", params=["model=org/m"])
    r = resolve(RunSpec(method="needs_model", params=["model=org/m", "prompt=a photo",
                                                      "revision=abc"]), Context())
    assert r.config["augmenters"][0]["params"] == {"model": "org/m", "prompt": "a photo",
                                                   "revision": "abc"}
