"""Issue 12 items 14 and 22: recipe fields validated in one place, bad devices, methods
combined with themselves and NaN / inf parameters rejected before anything is stored."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sgid_bench.api import Recipe
from sgid_bench.cli import main
from sgid_bench.config import RunSpec, parse_value, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.options import check_device
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
