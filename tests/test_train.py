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


class DoubleChannelZero:
    """A features stage that doubles channel 0 (dim 1 of what it sees) and records the
    shape it sees."""

    name = "double-channel-zero"
    layer = "stem"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def features(self, features, targets, generator):  # type: ignore[no-untyped-def]
        self.shapes.append(tuple(features.shape))
        out = features.clone()
        out[:, 0] = out[:, 0] * 2
        return out, targets


class Emit(torch.nn.Module):
    """The layer under the hook: returns its input, alone or first in a tuple."""

    def __init__(self, extra: tuple[object, ...] | None = None) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: torch.Tensor) -> object:
        return x if self.extra is None else (x, *self.extra)


class At(Backbone):
    """A backbone whose feature layer is a given one."""

    name = "at-test"

    def __init__(self, layer: FeatureLayer | None) -> None:
        self.at = layer

    def build(self, num_classes, context):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def feature_layer(self, model, layer="stem"):  # type: ignore[no-untyped-def]
        return self.at


def rewritten(x: torch.Tensor, channel_dim: int,
              extra: tuple[object, ...] | None = None) -> tuple[object, DoubleChannelZero]:
    module = Emit(extra)
    stage = DoubleChannelZero()
    hook = FeatureHook(At(FeatureLayer(module, channel_dim)), module, [stage])  # type: ignore[list-item]
    hook.targets = torch.eye(3)[: len(x)]
    module.train()
    out = module(x)
    hook.remove()
    return out, stage


def test_feature_hook_rewrites_the_first_element_of_a_tuple_output() -> None:
    x = torch.randn(2, 3, 4, 5)
    aux = torch.ones(1)
    out, stage = rewritten(x, 1, ("aux", aux))
    assert isinstance(out, tuple)
    assert len(out) == 3
    expected = x.clone()
    expected[:, 0] *= 2
    torch.testing.assert_close(out[0], expected)
    assert out[1] == "aux"
    assert out[2] is aux
    assert stage.shapes == [(2, 3, 4, 5)]


@pytest.mark.parametrize("channel_dim", [-1, 2])
def test_feature_hook_gives_token_layers_channels_first_and_restores_them(
        channel_dim: int) -> None:
    # N x L x D tokens (channels last): the stage sees N x D x L, the model N x L x D back.
    x = torch.randn(2, 5, 3)
    out, stage = rewritten(x, channel_dim)
    assert stage.shapes == [(2, 3, 5)]
    expected = x.clone()
    expected[:, :, 0] *= 2  # channel 0 of every token
    torch.testing.assert_close(out, expected)


def test_feature_hook_leaves_channels_first_sequences_alone() -> None:
    x = torch.randn(2, 3, 5)  # N x C x L, channels at dim 1
    out, stage = rewritten(x, 1)
    assert stage.shapes == [(2, 3, 5)]
    expected = x.clone()
    expected[:, 0] *= 2
    torch.testing.assert_close(out, expected)


def test_feature_hook_is_inert_until_targets_are_given() -> None:
    model = Linear().build(3, None)
    hook = FeatureHook(Linear(), model, [Doubler()])  # type: ignore[list-item]
    assert hook.layer is not None
    assert hook.layer.module is model[0]
    model.train()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model[1](x.flatten(1)))
    hook.remove()
    assert FeatureHook(Linear(), model, []).layer is None


def test_evaluate_averages_loss_and_counts_top5_over_every_batch() -> None:
    table = torch.tensor([[5.0, 4, 3, 2, 1, 0, -1], [0.0, 1, 2, 3, 4, 5, 6],
                          [1.0, 0, 0, 0, 0, 0, 0]])

    class Lookup(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return table[x.flatten(1)[:, 0].long()]

    def batch(rows: list[int], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(rows).view(-1, 1, 1, 1), torch.tensor(labels)

    # Row 0 / label 4: top-5 hit; row 1 / label 1: miss; row 2 / label 0: top-1 hit.
    loader = [batch([0, 2], [4, 0]), batch([1], [1])]
    ev = evaluate(Lookup(), loader, lambda x: x, "cpu", 7)
    logits = table[[0, 2, 1]]
    labels = torch.tensor([4, 0, 1])
    assert ev.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))
    assert ev.top1 == pytest.approx(100 / 3)
    assert ev.top5 == pytest.approx(200 / 3)
    one = evaluate(Lookup(), [batch([2], [0])], lambda x: x, "cpu", 7)
    assert (one.top1, one.top5) == (100.0, 100.0)
    one_loss = torch.nn.functional.cross_entropy(table[[2]], torch.tensor([0]))
    assert one.loss == pytest.approx(float(one_loss))
    # Per-class accuracy in percent, to 4 decimals: one of three class-0 images right.
    thirds = evaluate(Lookup(), [batch([2, 1, 1], [0, 0, 0])], lambda x: x, "cpu", 7)
    assert thirds.per_class == {"0": 33.3333}
