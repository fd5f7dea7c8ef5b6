"""Issue 12 items 14 and 15: label smoothing is used; a diverging run fails clearly."""

from __future__ import annotations

import pytest
import torch

from sgid_bench.api import Augmenter, Backbone, Recipe
from sgid_bench.errors import UserError
from sgid_bench.train import DivergedError, Trainer, soft_cross_entropy


class Linear(Backbone):
    name = "linear-test"

    def build(self, num_classes, context):  # type: ignore[no-untyped-def]
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, num_classes))


class Loader(list):  # type: ignore[type-arg]
    class dataset:  # noqa: N801
        epoch = 0


def loader() -> Loader:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 4, 4), generator=gen, dtype=torch.uint8)
    return Loader([(images, torch.arange(12) % 3)] * 2)


def trainer(recipe: Recipe) -> Trainer:
    return Trainer(Linear(), lambda: Linear().build(3, None), recipe, [], "cpu", 0,
                   lambda x: x.float() / 255, 3)


def test_label_smoothing_matches_torch() -> None:
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 1, 1, 2])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.2)
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot, 0.2), expected)


def test_label_smoothing_changes_training() -> None:
    plain = trainer(Recipe(epochs=1, lr=0.1)).fit(loader(), loader())
    smooth = trainer(Recipe(epochs=1, lr=0.1, label_smoothing=0.5)).fit(loader(), loader())
    assert plain.history[0]["train_loss"] != smooth.history[0]["train_loss"]


def test_nan_loss_fails_the_run_naming_the_epoch() -> None:
    with pytest.raises(DivergedError, match=r"diverged at epoch 1 \(loss (nan|inf)\): lower "
                                            "the learning rate") as err:
        trainer(Recipe(optimizer="sgd", epochs=2, lr=1e38, momentum=0.0)).fit(loader(),
                                                                                loader())
    assert isinstance(err.value, UserError)  # recorded as failed with this one line


def test_a_diverging_lr_of_a_grid_loses_instead_of_failing() -> None:
    result = trainer(Recipe(optimizer="sgd", epochs=1, lr=0.1, momentum=0.0,
                            lr_grid=(1e38, 0.1))).fit(loader(), loader())
    assert result.lr == 0.1


class NaNMix(Augmenter):
    name = "nan_mix"

    def mix(self, images, targets, generator):  # type: ignore[no-untyped-def]
        return images * float("nan"), targets


def test_a_mix_stage_producing_nan_fails_the_run() -> None:
    t = Trainer(Linear(), lambda: Linear().build(3, None), Recipe(epochs=1), [NaNMix()],
                "cpu", 0, lambda x: x.float() / 255, 3)
    with pytest.raises(DivergedError, match="epoch 1"):
        t.fit(loader(), loader())


def test_unknown_optimizer_and_schedule_name_the_known_ones() -> None:
    from types import SimpleNamespace

    import torch

    from sgid_bench.train import make_optimizer, make_schedule

    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match=r"unknown optimizer 'lamb'; use sgd or adamw"):
        make_optimizer(SimpleNamespace(optimizer="lamb", lr=0.1), params)  # type: ignore[arg-type]
    opt = torch.optim.SGD(params, lr=0.1)
    with pytest.raises(ValueError, match=r"unknown schedule 'cosine'; use multistep or linear"):
        make_schedule(SimpleNamespace(schedule="cosine"), opt, 3)  # type: ignore[arg-type]


def test_divergence_message_names_epoch_loss_and_both_remedies() -> None:
    from sgid_bench.train import DivergedError, check_finite

    check_finite(1.5, 0)
    with pytest.raises(DivergedError, match=(
            r"^training diverged at epoch 3 \(loss nan\): lower the learning rate "
            r"\(--param train\.lr=\.\.\.\) or check the method's mix / features stage$")):
        check_finite(float("nan"), 2)


def test_a_backbone_without_feature_layers_names_the_features_stages() -> None:
    import torch

    from sgid_bench.api import Backbone
    from sgid_bench.train import FeatureHook

    class NoLayers(Backbone):
        name = "no-layers"

        def build(self, num_classes, context):  # type: ignore[no-untyped-def]
            return torch.nn.Linear(1, 1)

        def feature_layer(self, model, layer="stem"):  # type: ignore[no-untyped-def]
            return None

    class Named:
        name = "moex"
        layer = "stem"

    class Nameless:
        layer = "stem"

    with pytest.raises(UserError, match=(
            r"^backbone 'no-layers' exposes no feature layer for moex, Nameless: use another "
            r"backbone or method$")):
        FeatureHook(NoLayers(), torch.nn.Linear(1, 1), [Named(), Nameless()])  # type: ignore[list-item]
