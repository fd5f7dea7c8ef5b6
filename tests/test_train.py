"""The training loop's pieces: soft targets, gradient accumulation, the features hook,
evaluation."""

from __future__ import annotations

import copy

import pytest
import torch

from sgid_bench.api import Backbone, FeatureLayer, Recipe
from sgid_bench.train import FeatureHook, Trainer, evaluate, soft_cross_entropy


class Linear(Backbone):
    name = "linear-test"

    def build(self, num_classes, context):  # type: ignore[no-untyped-def]
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, num_classes))

    def feature_layer(self, model, layer="stem"):  # type: ignore[no-untyped-def]
        return FeatureLayer(model[0], channel_dim=1)


def batches(n: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 4, 4), generator=gen, dtype=torch.uint8)
    return [(images, torch.arange(n) % 3)]


class Loader(list):  # type: ignore[type-arg]
    """Batches with the ``dataset.epoch`` attribute the trainer sets."""

    class dataset:  # noqa: N801
        epoch = 0


def one_step(micro_batch: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = Linear().build(3, None)
    trainer = Trainer(Linear(), lambda: model, Recipe(optimizer="sgd", lr=0.5, momentum=0.0),
                      [], "cpu", 0, lambda x: x.float() / 255, 3, micro_batch=micro_batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer._epoch(model, Loader(batches()), opt, FeatureHook(Linear(), model, []), 0)
    return model


def test_gradient_accumulation_matches_the_full_batch() -> None:
    full, accumulated = one_step(None), one_step(micro_batch=5)
    for a, b in zip(full.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    torch.manual_seed(0)
    start = Linear().build(3, None)
    assert not torch.allclose(start[1].weight, full[1].weight)  # the step did something


def test_soft_cross_entropy_equals_hard_cross_entropy_on_one_hot() -> None:
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 3, 1, 1, 2])
    hard = torch.nn.functional.cross_entropy(logits, labels)
    soft = soft_cross_entropy(logits, torch.nn.functional.one_hot(labels, 4).float())
    torch.testing.assert_close(soft, hard)


class Doubler:
    name = "doubler"
    layer = "stem"

    def features(self, features, targets, generator):  # type: ignore[no-untyped-def]
        return features * 2, targets.flip(0)


def test_feature_hook_rewrites_the_layer_output_and_the_targets() -> None:
    model = Linear().build(3, None)
    reference = copy.deepcopy(model)
    hook = FeatureHook(Linear(), model, [Doubler()])  # type: ignore[list-item]
    x = torch.randn(2, 3, 4, 4)
    targets = torch.eye(3)[:2]
    hook.targets = targets
    model.train()
    torch.testing.assert_close(model(x), reference[1](reference[0](x) * 2))
    torch.testing.assert_close(hook.targets, targets.flip(0))
    model.eval()  # evaluation never augments
    torch.testing.assert_close(model(x), reference(x))
    hook.remove()


def test_evaluate_counts_top1_top5_and_per_class() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Always predicts class 0 first, then 1.
            return torch.tensor([[2.0, 1.0, 0.0]]).repeat(len(x), 1)

    images = torch.zeros(4, 3, 1, 1, dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 2])
    ev = evaluate(Fixed(), [(images, labels)], lambda x: x.float(), "cpu", 3, ["a", "b", "c"])
    assert ev.top1 == pytest.approx(50.0)
    assert ev.top5 == pytest.approx(100.0)
    assert ev.per_class == {"a": 100.0, "b": 0.0, "c": 0.0}
