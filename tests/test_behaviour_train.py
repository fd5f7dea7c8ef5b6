"""What the trainer does with a model, on tasks small enough to know the answer (issue 13):
the best validation epoch and lr are kept, evaluation runs in eval mode on unaugmented
images, training augmentations are per sample, per epoch and seeded, and the targets the
mix / features stages make are the ones the loss sees."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image

from sgid_bench.api import Augmenter, Backbone, FeatureLayer, Recipe
from sgid_bench.data import ImageSet
from sgid_bench.train import (
    DivergedError,
    Trainer,
    evaluate,
    make_optimizer,
    normalizer,
    soft_cross_entropy,
)

SIDE = 4


class Linear(Backbone):
    """A linear classifier of 3 x 4 x 4 images; the features stage runs on its input."""

    name = "linear-behaviour"

    def build(self, num_classes, context):  # type: ignore[no-untyped-def]
        return torch.nn.Sequential(torch.nn.Identity(), torch.nn.Flatten(),
                                   torch.nn.Linear(3 * SIDE * SIDE, num_classes))

    def feature_layer(self, model, layer="stem"):  # type: ignore[no-untyped-def]
        return FeatureLayer(model[0], channel_dim=1)


def fixed_model() -> torch.nn.Module:
    """Zero weights and a bias towards class 1: it predicts class 1 everywhere (50 % on
    the balanced task) until it learns."""
    model = Linear().build(2, None)
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.copy_(torch.tensor([0.0, 0.1]))
    return model


def task(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """An easy task: class 0 images are red, class 1 green (uint8), alternating."""
    labels = torch.arange(n) % 2
    images = torch.zeros(n, 3, SIDE, SIDE, dtype=torch.uint8)
    images[labels == 0, 0] = 255
    images[labels == 1, 1] = 255
    return images, labels


class Loader:
    """Train batches as the trainer sees them (``dataset.epoch`` is set per epoch); from
    epoch ``flip_at`` on the labels are swapped, so validation accuracy falls."""

    def __init__(self, steps: int = 4, flip_at: int = 10**9) -> None:
        self.images, self.labels = task()
        self.steps, self.flip_at = steps, flip_at
        self.dataset = SimpleNamespace(epoch=0)

    def __iter__(self):  # type: ignore[no-untyped-def]
        flipped = self.dataset.epoch >= self.flip_at
        for _ in range(self.steps):
            yield self.images, (1 - self.labels) if flipped else self.labels

    def __len__(self) -> int:
        return self.steps


def val() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [task()]


def scale(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255


def trainer(recipe: Recipe, augmenters: list[Any] = (), build: Any = fixed_model,  # type: ignore[assignment]
            seed: int = 0, **kwargs: Any) -> Trainer:
    return Trainer(Linear(), build, recipe, list(augmenters), "cpu", seed, scale, 2, **kwargs)


def sgd(**kwargs: Any) -> Recipe:
    return Recipe(**{"optimizer": "sgd", "lr": 0.5, "momentum": 0.0, "epochs": 2, **kwargs})


def top1(model: torch.nn.Module, labels_flipped: bool = False) -> float:
    images, labels = task()
    return evaluate(model, [(images, 1 - labels if labels_flipped else labels)], scale,
                    "cpu", 2).top1


# -- model selection ----------------------------------------------------------------------


def test_the_best_validation_epoch_is_returned_not_the_last() -> None:
    fit = trainer(sgd(epochs=5)).fit(Loader(flip_at=2), val())
    scores = [h["val_top1"] for h in fit.history]
    assert scores[:2] == [100.0, 100.0]  # learnt, then unlearnt from epoch 2 on
    assert scores[-1] == 0.0
    assert fit.best_epoch == 0  # ties keep the earlier epoch
    assert fit.val.top1 == 100.0
    assert top1(fit.model) == 100.0  # the weights are that epoch's, not the last ones
    assert [h["epoch"] for h in fit.history] == [0, 1, 2, 3, 4]


def test_the_lr_grid_keeps_the_best_validation_lr() -> None:
    # From the fixed start (50 %), only lr 0.5 learns the task within two epochs.
    fit = trainer(sgd(lr_grid=(1e-6, 0.5, 1e-5))).fit(Loader(), val())
    assert fit.lr == 0.5
    assert fit.val.top1 == 100.0
    assert top1(fit.model) == 100.0
    worst_last = trainer(sgd(lr_grid=(0.5, 1e-6))).fit(Loader(), val())
    assert worst_last.lr == 0.5


def test_lr_grid_ties_keep_the_first_lr() -> None:
    fit = trainer(sgd(lr_grid=(0.4, 0.5))).fit(Loader(), val())
    assert fit.val.top1 == 100.0
    assert fit.lr == 0.4


def test_a_diverging_lr_loses_and_all_diverging_is_an_error() -> None:
    fit = trainer(sgd(lr_grid=(1e38, 0.5))).fit(Loader(), val())
    assert fit.lr == 0.5
    with pytest.raises(DivergedError, match="training diverged at epoch 1"):
        trainer(sgd(lr=1e38)).fit(Loader(), val())


def test_each_lr_starts_from_the_same_initial_weights() -> None:
    def random_start() -> torch.nn.Module:
        return Linear().build(2, None)

    starts: list[torch.Tensor] = []

    def recording() -> torch.nn.Module:
        model = random_start()
        starts.append(model[2].weight.detach().clone())
        return model

    trainer(sgd(lr_grid=(0.1, 0.2), epochs=1), build=recording, seed=3).fit(Loader(), val())
    assert len(starts) == 2
    assert torch.equal(starts[0], starts[1])
    trainer(sgd(epochs=1), build=recording, seed=4).fit(Loader(), val())
    assert not torch.equal(starts[0], starts[2])  # the seed sets them


def test_progress_counts_epochs_over_the_whole_grid() -> None:
    events: list[tuple[Any, ...]] = []
    trainer(sgd(lr_grid=(0.1, 0.5)), progress=lambda kind, done, total, **info: events.append(
        (kind, done, total, info.get("lr"), info.get("epoch")))).fit(Loader(steps=2), val())
    epochs = [e[1:4] for e in events if e[0] == "epoch"]
    assert epochs == [(1, 4, 0.1), (2, 4, 0.1), (3, 4, 0.5), (4, 4, 0.5)]
    batches = [(e[1], e[2], e[4]) for e in events if e[0] == "batch"]
    assert batches[:4] == [(1, 2, 0), (2, 2, 0), (1, 2, 1), (2, 2, 1)]


# -- train and eval modes -----------------------------------------------------------------


class ModeRecorder(torch.nn.Module):
    """Records ``self.training`` at each forward pass (a real module, no mock)."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return x


def test_training_runs_in_train_mode_and_validation_in_eval_mode() -> None:
    recorder = ModeRecorder()

    def build() -> torch.nn.Module:
        model = fixed_model()
        model[0] = recorder
        return model

    trainer(sgd(epochs=2), build=build).fit(Loader(steps=1), val())
    assert recorder.modes == [True, False, True, False]


def test_evaluation_switches_dropout_and_batchnorm_to_eval_mode() -> None:
    model = fixed_model()
    with torch.no_grad():
        model[2].weight.copy_(torch.zeros(2, 3, SIDE, SIDE).index_fill_(1, torch.tensor([0]), 0)
                              .flatten(1))
        model[2].weight[0, : SIDE * SIDE] = 1.0  # red -> class 0
        model[2].weight[1, SIDE * SIDE : 2 * SIDE * SIDE] = 1.0  # green -> class 1
    norm = torch.nn.BatchNorm1d(2)
    # Dropout with p = 1 zeroes every logit in train mode (then class 0 wins every tie).
    net = torch.nn.Sequential(model, norm, torch.nn.Dropout(p=1.0))
    net.train()
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    images, labels = task()
    ev = evaluate(net, [(images, labels)], scale, "cpu", 2)
    assert ev.top1 == 100.0
    for key, value in norm.state_dict().items():  # running statistics untouched
        assert torch.equal(value, before[key]), key


# -- the targets the loss sees ------------------------------------------------------------


class SwapPairs(Augmenter):
    """A mix stage that reverses the batch order of images and targets together: a
    consistent mix, so the model still learns the task, unless only one of the two
    reaches the loss (then it learns the swapped labels)."""

    name = "swap-pairs"

    def mix(self, images, targets, generator):  # type: ignore[no-untyped-def]
        return images.flip(0), targets.flip(0)


class AllClassOne(Augmenter):
    """A mix stage that relabels every image class 1."""

    name = "all-class-one"

    def mix(self, images, targets, generator):  # type: ignore[no-untyped-def]
        return images, torch.eye(targets.shape[1])[[1] * len(targets)]


class SwapFeatures(Augmenter):
    """A features stage that reverses the batch order of features and targets."""

    name = "swap-features"

    def features(self, features, targets, generator):  # type: ignore[no-untyped-def]
        return features.flip(0), targets.flip(0)


class RelabelFeatures(Augmenter):
    """A features stage that relabels every sample class 1."""

    name = "relabel-features"

    def features(self, features, targets, generator):  # type: ignore[no-untyped-def]
        return features, torch.eye(targets.shape[1])[[1] * len(targets)]


def test_mix_stage_targets_are_what_the_loss_sees() -> None:
    relabelled = trainer(sgd(epochs=2), [AllClassOne()]).fit(Loader(), val())
    # It learnt "everything is class 1": right on class 1 only.
    assert evaluate(relabelled.model, val(), scale, "cpu", 2).per_class == {"0": 0.0,
                                                                           "1": 100.0}


def test_mix_stage_images_and_targets_travel_together() -> None:
    # Images and targets are [x0, x1, ...] with a 2-periodic order, so reversing an even
    # batch swaps every image's partner class: only both together keep the task.
    fit = trainer(sgd(epochs=2), [SwapPairs()]).fit(Loader(), val())
    assert top1(fit.model) == 100.0
    flipped = trainer(sgd(epochs=2), [SwapPairs(), SwapPairs(), SwapPairs()]).fit(Loader(), val())
    assert top1(flipped.model) == 100.0  # each mix stage applied once, in turn


def test_mix_stages_apply_in_order() -> None:
    # Relabel then swap: the targets are all class 1 anyway; swap then relabel likewise;
    # relabel must not be dropped wherever it stands.
    for stages in ([AllClassOne(), SwapPairs()], [SwapPairs(), AllClassOne()]):
        fit = trainer(sgd(epochs=2), stages).fit(Loader(), val())
        per_class = evaluate(fit.model, val(), scale, "cpu", 2).per_class
        assert per_class == {"0": 0.0, "1": 100.0}


def test_features_stage_targets_are_what_the_loss_sees() -> None:
    relabelled = trainer(sgd(epochs=2), [RelabelFeatures()]).fit(Loader(), val())
    assert evaluate(relabelled.model, val(), scale, "cpu", 2).per_class == {"0": 0.0,
                                                                           "1": 100.0}
    swapped = trainer(sgd(epochs=2), [SwapFeatures()]).fit(Loader(), val())
    assert top1(swapped.model) == 100.0


def test_features_stage_targets_reach_the_loss_with_micro_batches() -> None:
    fit = trainer(sgd(epochs=2), [RelabelFeatures()], micro_batch=3).fit(Loader(), val())
    assert evaluate(fit.model, val(), scale, "cpu", 2).per_class == {"0": 0.0, "1": 100.0}


class Draws(Augmenter):
    """A mix stage that records one draw of the generator it is given per batch."""

    name = "draws"

    def __init__(self) -> None:
        self.draws: list[int] = []

    def mix(self, images, targets, generator):  # type: ignore[no-untyped-def]
        self.draws.append(int(torch.randint(0, 2**62, (), generator=generator)))
        return images, targets


def test_each_batch_has_its_own_seeded_random_stream() -> None:
    def draws(seed: int) -> list[int]:
        stage = Draws()
        trainer(sgd(epochs=2), [stage], seed=seed).fit(Loader(steps=3), val())
        return stage.draws

    first = draws(0)
    assert len(first) == len(set(first)) == 6  # every step of every epoch differs
    assert draws(0) == first
    assert set(draws(1)).isdisjoint(first)


def test_label_smoothing_reaches_the_loss() -> None:
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    ref = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.2)
    ours = soft_cross_entropy(logits, torch.nn.functional.one_hot(labels, 4).float(), 0.2)
    torch.testing.assert_close(ours, ref)
    # A smoothed loss never drives the logits apart forever: the model trained with it
    # keeps smaller weights than the one trained without.
    plain = trainer(sgd(epochs=3)).fit(Loader(), val()).model
    smooth = trainer(sgd(epochs=3, label_smoothing=0.5)).fit(Loader(), val()).model
    assert smooth[2].weight.abs().sum() < plain[2].weight.abs().sum()


# -- optimiser, schedule, normalisation, evaluation ---------------------------------------


def test_optimizers_take_the_recipe_settings() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = make_optimizer(sgd(lr=0.3, momentum=0.7, weight_decay=0.01), params)
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.3, 0.7, 0.01)
    adam = make_optimizer(Recipe(optimizer="adamw", lr=0.02, weight_decay=0.05), params)
    assert isinstance(adam, torch.optim.AdamW)
    assert (adam.param_groups[0]["lr"], adam.param_groups[0]["weight_decay"]) == (0.02, 0.05)


def test_milestones_lower_the_lr() -> None:
    # With lr 0.5 the task is learnt in one epoch; labels flip at epoch 1, but from there the
    # lr is 0.5 * 1e-6: the flip is not learnt and validation stays at 100 %.
    fit = trainer(sgd(epochs=3, milestones=(1,), gamma=1e-6)).fit(Loader(flip_at=1), val())
    assert [h["val_top1"] for h in fit.history] == [100.0, 100.0, 100.0]
    unscheduled = trainer(sgd(epochs=3)).fit(Loader(flip_at=1), val())
    assert unscheduled.history[-1]["val_top1"] == 0.0


def test_normalizer_scales_to_unit_range_then_standardises() -> None:
    class Norm(Linear):
        def normalization(self):  # type: ignore[no-untyped-def]
            return (0.5, 0.25, 0.0), (0.5, 0.25, 2.0)

    normalize = normalizer(Norm(), "cpu")
    images = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1)
    expected = torch.tensor([(0 - 0.5) / 0.5, (1 - 0.25) / 0.25, (0.2 - 0.0) / 2.0])
    torch.testing.assert_close(normalize(images).flatten(), expected)


def test_evaluate_loss_top5_and_default_class_names() -> None:
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0, -1], [0.0, 1, 2, 3, 4, 5, 6]])

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return logits[: len(x)]

    labels = torch.tensor([4, 1])  # 5th choice (top-5 hit), then 6th choice (miss)
    ev = evaluate(Fixed(), [(torch.zeros(2, 3, 1, 1), labels)], lambda x: x, "cpu", 7)
    assert ev.top1 == 0.0
    assert ev.top5 == 50.0
    assert ev.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))
    assert ev.per_class == {"1": 0.0, "4": 0.0}  # classes without images are left out


def test_evaluate_counts_over_every_batch() -> None:
    images, labels = task()
    model = trainer(sgd(epochs=2)).fit(Loader(), val()).model
    half = len(labels) // 2
    wrong = 1 - labels[half:]
    ev = evaluate(model, [(images[:half], labels[:half]), (images[half:], wrong)], scale,
                  "cpu", 2)
    assert ev.top1 == 50.0
    assert ev.per_class == {"0": 50.0, "1": 50.0}


# -- per-sample training augmentation ---------------------------------------------------


def pictures(n: int = 6, same: bool = False) -> list[tuple[Image.Image, int]]:
    out = []
    for i in range(n):
        pixels = torch.randint(0, 256, (8, 8, 3), generator=torch.Generator().manual_seed(
            0 if same else i), dtype=torch.uint8)
        out.append((Image.fromarray(pixels.numpy(), "RGB"), i % 3))
    return out


def items(dataset: ImageSet, epoch: int) -> list[torch.Tensor]:
    dataset.epoch = epoch
    return [dataset[i][0] for i in range(len(dataset))]


def test_training_augmentation_differs_per_epoch_and_is_seeded() -> None:
    samples = pictures()
    first = items(ImageSet(samples, 8, True, seed=0), 0)
    assert all(torch.equal(a, b) for a, b in zip(first, items(ImageSet(samples, 8, True,
                                                                       seed=0), 0), strict=True))
    next_epoch = items(ImageSet(samples, 8, True, seed=0), 1)
    other_seed = items(ImageSet(samples, 8, True, seed=1), 0)
    assert sum(not torch.equal(a, b) for a, b in zip(first, next_epoch, strict=True)) >= 4
    assert sum(not torch.equal(a, b) for a, b in zip(first, other_seed, strict=True)) >= 4


def test_each_sample_draws_its_own_augmentation() -> None:
    same = pictures(same=True)  # six identical images
    out = items(ImageSet(same, 8, True, seed=0), 0)
    assert len({tuple(t.flatten().tolist()) for t in out}) >= 4


def test_evaluation_images_are_not_augmented() -> None:
    from torchvision.transforms import v2

    samples = pictures()
    originals = [v2.functional.pil_to_tensor(im) for im, _ in samples]
    for epoch in (0, 3):
        evaluated = items(ImageSet(samples, 8, False, seed=0), epoch)
        assert all(torch.equal(a, b) for a, b in zip(evaluated, originals, strict=True))
    trained = items(ImageSet(samples, 8, True, seed=0), 0)
    assert not all(torch.equal(a, b) for a, b in zip(trained, originals, strict=True))


def test_transform_stages_run_on_training_images_only() -> None:
    class Blank(Augmenter):
        name = "blank"

        def transform(self, image, generator):  # type: ignore[no-untyped-def]
            return torch.zeros_like(image)

    samples = pictures()
    trained = items(ImageSet(samples, 8, True, [Blank()], seed=0), 0)
    assert all(int(t.sum()) == 0 for t in trained)
    evaluated = items(ImageSet(samples, 8, False, [Blank()], seed=0), 0)
    assert all(int(t.sum()) > 0 for t in evaluated)


def test_images_held_in_memory_equal_images_decoded_on_the_fly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sgid_bench import data

    samples = pictures()
    held = ImageSet(samples, 6, True, seed=2)
    assert held.in_memory
    monkeypatch.setattr(data, "IN_MEMORY_BYTES", 0)
    decoded = ImageSet(samples, 6, True, seed=2)
    assert not decoded.in_memory
    for i in range(len(samples)):
        a, b = held[i], decoded[i]
        assert torch.equal(a[0], b[0])
        assert a[1] == b[1] == samples[i][1]
        assert a[0].shape == (3, 6, 6)  # resized to the backbone's size


# -- throughput, reported losses and progress ---------------------------------------------


class Ticking(torch.nn.Module):
    """An identity layer whose forward pass takes ``per_image`` seconds of a fake clock per
    image (training and evaluation alike)."""

    def __init__(self, clock: SimpleNamespace, per_image: float) -> None:
        super().__init__()
        self.clock, self.per_image = clock, per_image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.now += self.per_image * len(x)
        return x


def timed_fit(monkeypatch: pytest.MonkeyPatch, per_image: float,
              events: list[tuple[Any, ...]]) -> Any:
    from sgid_bench import train as train_module

    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=lambda: clock.now))

    def build() -> torch.nn.Module:
        model = fixed_model()
        model[0] = Ticking(clock, per_image)
        return model

    def progress(kind: str, done: int, total: int, **info: Any) -> None:
        events.append((kind, done, total, info))

    return trainer(sgd(epochs=2), build=build, progress=progress).fit(Loader(steps=3), val())


def test_images_per_s_counts_training_images_over_training_time_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Half a second per training image: 2 images/s, whatever evaluation takes.
    events: list[tuple[Any, ...]] = []
    fit = timed_fit(monkeypatch, 0.5, events)
    assert fit.images_per_s == pytest.approx(2.0)
    epochs = [e for e in events if e[0] == "epoch"]
    assert [e[3]["images_per_s"] for e in epochs] == pytest.approx([2.0, 2.0])
    batches = [e for e in events if e[0] == "batch"]
    assert len(batches) == 6
    assert [e[3]["images_per_s"] for e in batches] == pytest.approx([2.0] * 6)


def test_a_clock_that_does_not_advance_reports_zero_images_per_s(
        monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[Any, ...]] = []
    fit = timed_fit(monkeypatch, 0.0, events)
    assert fit.images_per_s == 0.0
    assert len(events) == 8
    assert all(e[3]["images_per_s"] == 0.0 for e in events)


class Batches(list):  # type: ignore[type-arg]
    """Fixed train batches with the ``dataset.epoch`` attribute the trainer sets."""

    dataset = SimpleNamespace(epoch=0)


@pytest.mark.parametrize(("sizes", "micro_batch"), [((5, 2), 2), ((5, 2), None), ((1,), None)])
def test_train_loss_is_the_mean_loss_over_the_epochs_images(
        sizes: tuple[int, ...], micro_batch: int | None) -> None:
    # Three classes, but the batches hold classes 0 and 1 only; batches of unequal size,
    # split into micro-batches or not. A negligible lr keeps the weights: the train loss is
    # the mean cross-entropy of the initial model over every image of the epoch.
    torch.manual_seed(5)
    start = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIDE * SIDE, 3))
    gen = torch.Generator().manual_seed(2)
    batches = Batches()
    for size in sizes:
        images = torch.randint(0, 256, (size, 3, SIDE, SIDE), generator=gen, dtype=torch.uint8)
        batches.append((images, torch.arange(size) % 2))
    events: list[tuple[Any, ...]] = []
    fit = Trainer(Linear(), lambda: copy.deepcopy(start), sgd(lr=1e-30, epochs=2), [], "cpu",
                  0, scale, 3, micro_batch=micro_batch,
                  progress=lambda kind, done, total, **info: events.append((kind, info))
                  ).fit(batches, batches)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(start(scale(images)), labels))
    assert [h["train_loss"] for h in fit.history] == pytest.approx([expected] * 2, rel=1e-5)
    reported = [info for kind, info in events if kind == "epoch"]
    assert [r["train_loss"] for r in reported] == [h["train_loss"] for h in fit.history]
    assert [r["val_top1"] for r in reported] == [h["val_top1"] for h in fit.history]
    assert [r["lr"] for r in reported] == [1e-30, 1e-30]


def test_fit_one_alone_reports_epoch_k_of_its_own_epochs() -> None:
    events: list[tuple[Any, ...]] = []
    t = trainer(sgd(epochs=3), progress=lambda kind, done, total, **info: events.append(
        (kind, done, total)))
    t.fit_one(Loader(steps=1), val(), sgd(epochs=3))
    assert [e[1:] for e in events if e[0] == "epoch"] == [(1, 3), (2, 3), (3, 3)]


class DrawsFeatures(Augmenter):
    """A features stage that records one draw of the generator it is given per pass."""

    name = "draws-features"

    def __init__(self) -> None:
        self.draws: list[int] = []

    def features(self, features, targets, generator):  # type: ignore[no-untyped-def]
        self.draws.append(int(torch.randint(0, 2**62, (), generator=generator)))
        return features, targets


def test_stage_random_streams_do_not_depend_on_the_global_rng() -> None:
    # A backbone whose construction draws from torch's global RNG (any real one does) must
    # not change what the mix and features stages draw: their streams come from the seed.
    def draws(consume: int) -> tuple[list[int], list[int]]:
        mix, feats = Draws(), DrawsFeatures()

        def build() -> torch.nn.Module:
            torch.rand(consume)
            return fixed_model()

        trainer(sgd(epochs=2), [mix, feats], build=build).fit(Loader(steps=2), val())
        return mix.draws, feats.draws

    quiet, noisy = draws(0), draws(1000)
    assert len(quiet[0]) == len(quiet[1]) == 4
    assert quiet == noisy


def test_batch_streams_are_independent_of_the_sample_augmentation_streams() -> None:
    # The per-sample transform of sample i at epoch e and the mix stage of batch i at
    # epoch e must not draw the same numbers.
    class SampleDraws(Augmenter):
        name = "sample-draws"

        def __init__(self) -> None:
            self.draws: set[int] = set()

        def transform(self, image, generator):  # type: ignore[no-untyped-def]
            self.draws.add(int(torch.randint(0, 2**62, (), generator=generator)))
            return image

    class MixDraws(Augmenter):
        name = "mix-draws"

        def __init__(self) -> None:
            self.draws: list[int] = []

        def mix(self, images, targets, generator):  # type: ignore[no-untyped-def]
            self.draws += torch.randint(0, 2**62, (3,), generator=generator).tolist()
            return images, targets

    samples = pictures(4)
    sample_stage, mix = SampleDraws(), MixDraws()
    dataset = ImageSet(samples, 8, True, [sample_stage], seed=0)
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=1)

    class Conv(Linear):
        def build(self, num_classes, context):  # type: ignore[no-untyped-def]
            return torch.nn.Sequential(torch.nn.Identity(), torch.nn.AdaptiveAvgPool2d(1),
                                       torch.nn.Flatten(), torch.nn.Linear(3, num_classes))

    Trainer(Conv(), lambda: Conv().build(3, None), sgd(epochs=2), [mix], "cpu", 0, scale,
            3).fit(train_loader, [task()])
    assert len(mix.draws) == 24
    assert len(sample_stage.draws) == 8
    assert sample_stage.draws.isdisjoint(mix.draws)
