"""Issue 11 item 5: the training recipe details. The transformer recipes decay lr linearly
to 0 (transformers' image-classification example); MoEx acts at the stem unless told
otherwise; a micro-batch that splits the batch is part of the config hash."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sgid_bench.api import Backbone, Recipe
from sgid_bench.config import RunSpec, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.plugins import augmenter_class, backbone_class
from sgid_bench.train import FeatureHook, Trainer


class Linear(Backbone):
    name = "linear-test"

    def build(self, num_classes: int, context: Any) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, num_classes))


class Loader(list):  # type: ignore[type-arg]
    class dataset:  # noqa: N801
        epoch = 0


def loader(batches: int = 3) -> Loader:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 4, 4), generator=gen, dtype=torch.uint8)
    return Loader([(images, torch.arange(8) % 3)] * batches)


def fit(recipe: Recipe) -> list[dict[str, float]]:
    trainer = Trainer(Linear(), lambda: Linear().build(3, None), recipe, [], "cpu", 0,
                      lambda x: x.float() / 255, 3)
    return trainer.fit(loader(), loader()).history


def test_linear_schedule_reaches_zero_after_the_last_step() -> None:
    history = fit(Recipe(lr=0.01, epochs=4, schedule="linear"))
    # 3 steps per epoch, 12 in all: after epoch k, (12 - 3k) / 12 of the lr is left.
    assert [h["lr"] for h in history] == pytest.approx([0.0075, 0.005, 0.0025, 0.0])


def test_multistep_schedule_is_unchanged() -> None:
    history = fit(Recipe(optimizer="sgd", lr=0.1, epochs=3, milestones=(2,), gamma=0.1))
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.01, 0.01])


def test_linear_schedule_takes_no_milestones() -> None:
    with pytest.raises(UserError, match="milestones apply to schedule=multistep only"):
        Recipe(schedule="linear", milestones=(2,))
    with pytest.raises(UserError, match="unknown schedule; use one of multistep, linear"):
        Recipe(schedule="cosine")


@pytest.mark.parametrize("profile", ["tiny", "quick", "paper"])
@pytest.mark.parametrize(("backbone", "schedule"),
                         [("vit", "linear"), ("clip_vit", "linear"), ("resnet50", "multistep")])
def test_transformer_recipes_decay_linearly(profile: str, backbone: str, schedule: str) -> None:
    context = Context(profile=profile)
    for dataset in ("cifar10", "caltech101"):
        assert backbone_class(backbone)().recipe(context, dataset).schedule == schedule


def test_clip_vit_fine_tunes_in_the_paper_profile_and_probes_as_a_parameter() -> None:
    paper = resolve(RunSpec(backbone="clip_vit", profile="paper", dataset="cifar10"),
                    Context(profile="paper"))
    assert paper.backbone.mode == "finetune"  # type: ignore[attr-defined]
    probe = resolve(RunSpec(backbone="clip_vit", profile="paper", dataset="cifar10",
                            params=["mode=linear_probe"]), Context(profile="paper"))
    assert probe.backbone.mode == "linear_probe"  # type: ignore[attr-defined]
    assert probe.config_hash != paper.config_hash


# -- micro-batch -------------------------------------------------------------------------


def chash(micro_batch: int | None, **kw: Any) -> str:
    return resolve(RunSpec(**kw), Context(micro_batch=micro_batch)).config_hash


def test_a_micro_batch_that_splits_the_batch_enters_the_config_hash() -> None:
    batch = resolve(RunSpec(), Context()).recipe.batch_size
    assert chash(None) != chash(batch // 2)
    assert chash(batch // 2) != chash(batch // 4)
    assert chash(None) == chash(batch) == chash(batch * 2)  # holds the batch: no change


def test_micro_batches_change_batchnorm_training() -> None:
    # Why the hash needs it: BatchNorm statistics are per forward pass.
    def step(micro_batch: int | None) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4),
                                    torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))
        trainer = Trainer(Linear(), lambda: model, Recipe(optimizer="sgd", lr=0.5), [],
                          "cpu", 0, lambda x: x.float() / 255, 3, micro_batch=micro_batch)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        trainer._epoch(model, loader(1), opt, FeatureHook(Linear(), model, []), 0)
        return model[3].weight.detach().clone()

    assert not torch.allclose(step(None), step(2))


# -- MoEx layer --------------------------------------------------------------------------


def features_seen(layer: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the features MoEx receives in a training forward pass of the tiny ResNet, the
    output of its stem computed directly: conv1, bn1, relu, max-pool)."""
    context = Context(profile="tiny")
    backbone = backbone_class("resnet50")()
    torch.manual_seed(0)
    model: Any = backbone.build(3, context)
    moex = augmenter_class("moex")(p=1.0, **({} if layer is None else {"layer": layer}))
    seen: list[torch.Tensor] = []
    original = moex.features

    def spy(features: torch.Tensor, targets: torch.Tensor, generator: Any) -> Any:
        seen.append(features.detach().clone())
        return original(features, targets, generator)

    moex.features = spy  # type: ignore[method-assign]
    hook = FeatureHook(backbone, model, [moex])
    hook.targets, hook.gen = torch.eye(3)[[0, 1]], torch.Generator().manual_seed(0)
    model.train()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model(x)
    hook.remove()
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    assert len(seen) == 1
    return seen[0], stem


def test_moex_acts_at_the_stem_by_default() -> None:
    assert augmenter_class("moex")().layer == "stem"
    features, stem = features_seen(None)
    torch.testing.assert_close(features, stem)
    torch.testing.assert_close(features_seen("stem")[0], stem)


def test_moex_layer_is_a_parameter() -> None:
    features, stem = features_seen("layer2")
    assert features.shape[-1] == stem.shape[-1] // 2  # stage 2 halves the resolution


@pytest.mark.parametrize("name", ["resnet50", "vit", "clip_vit"])
def test_an_unknown_layer_names_the_known_ones(name: str) -> None:
    backbone = backbone_class(name)()
    model = backbone.build(3, Context(profile="tiny"))
    with pytest.raises(UserError, match="no feature layer 'C9': use --param layer=stem or "):
        FeatureHook(backbone, model, [augmenter_class("moex")(layer="C9")])


def test_linear_schedule_with_one_step_per_epoch_reaches_zero() -> None:
    trainer = Trainer(Linear(), lambda: Linear().build(3, None),
                      Recipe(lr=0.01, epochs=2, schedule="linear"), [], "cpu", 0,
                      lambda x: x.float() / 255, 3)
    history = trainer.fit(loader(1), loader(1)).history
    assert [h["lr"] for h in history] == pytest.approx([0.005, 0.0])
