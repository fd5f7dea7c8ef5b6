"""The training and evaluation loop: soft-target cross-entropy, mix and features stages,
model selection on validation (never on test), lr grid search on validation."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sgid_bench.api import Augmenter, Backbone, FeatureLayer, FeatureStage, MixStage, Recipe
from sgid_bench.errors import UserError
from sgid_bench.rng import generator

if TYPE_CHECKING:
    import torch

#: progress(kind, done, total, **info): kind "batch" (within the current epoch; info:
#: images_per_s, epoch) or "epoch" (over every epoch of the run, lr grid included; info:
#: train_loss, val_top1, images_per_s, lr). Listeners ignore info keys they do not know.
Progress = Callable[..., None]


@dataclass
class Evaluation:
    top1: float  # percent
    top5: float  # percent
    loss: float
    per_class: dict[str, float] = field(default_factory=dict)


@dataclass
class FitResult:
    model: Any
    lr: float
    best_epoch: int
    val: Evaluation
    images_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)


class FeatureHook:
    """Runs the ``features`` stages on backbone layers' outputs during training, each on
    the layer its ``layer`` names (MoEx: the stem by default), in the stages' order within
    a layer.

    Targets travel through the hook because a features stage (MoEx) mixes labels."""

    def __init__(self, backbone: Backbone, model: Any, stages: Sequence[FeatureStage]) -> None:
        self.stages = list(stages)
        self.targets: Any = None
        self.gen: Any = None
        self.layers: dict[str, FeatureLayer] = {}
        self.handles: list[Any] = []
        for name in dict.fromkeys(stage.layer for stage in self.stages):
            layer = backbone.feature_layer(model, name)
            if layer is None:
                raise UserError(f"backbone {backbone.name!r} exposes no feature layer for "
                                f"{', '.join(_name(s) for s in self.stages)}: use another "
                                "backbone or method")
            self.layers[name] = layer
            at = [s for s in self.stages if s.layer == name]
            self.handles.append(layer.module.register_forward_hook(
                lambda module, args, output, at=at, layer=layer:
                self._rewrite(module, output, at, layer)))

    @property
    def layer(self) -> FeatureLayer | None:
        """The first stage's layer (None without stages)."""
        return next(iter(self.layers.values()), None)

    def _rewrite(self, module: Any, output: Any, stages: list[FeatureStage],
                 layer: FeatureLayer) -> Any:
        if not module.training or self.targets is None:
            return None
        first = output[0] if isinstance(output, tuple) else output
        tokens = layer.channel_dim in (-1, first.dim() - 1)
        feats = first.transpose(1, -1) if tokens else first
        for stage in stages:
            feats, self.targets = stage.features(feats, self.targets, self.gen)
        feats = feats.transpose(1, -1) if tokens else feats
        return (feats, *output[1:]) if isinstance(output, tuple) else feats

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _name(stage: object) -> str:
    return str(getattr(stage, "name", type(stage).__name__))


class DivergedError(UserError):
    """The training loss became NaN or infinite: the run is recorded as failed with this
    one-line message (never as done); the fix is the user's (a lower lr)."""


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against probability targets (mixed by the mix / features stages),
    smoothed towards the uniform distribution by ``label_smoothing``."""
    import torch

    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[1]
    return -(targets * torch.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def check_finite(loss: float, epoch: int) -> None:
    """Stop a run whose loss is NaN / inf: its weights are garbage from here on."""
    if not math.isfinite(loss):
        raise DivergedError(f"training diverged at epoch {epoch + 1} (loss {loss}): lower the "
                            "learning rate (--param train.lr=...) or check the method's "
                            "mix / features stage")


def make_optimizer(recipe: Recipe, params: Sequence[Any]) -> Any:
    import torch

    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use sgd or adamw")


@dataclass
class Schedule:
    """The recipe's lr schedule: ``step()`` after every optimizer step, ``epoch()`` after
    every epoch; each schedule advances on its own clock."""

    scheduler: Any  # torch.optim.lr_scheduler.LRScheduler
    per_step: bool

    def step(self) -> None:
        if self.per_step:
            self.scheduler.step()

    def epoch(self) -> None:
        if not self.per_step:
            self.scheduler.step()


def make_schedule(recipe: Recipe, optimizer: Any, steps_per_epoch: int) -> Schedule:
    """``multistep``: torch's MultiStepLR over epochs. ``linear``: transformers'
    ``get_scheduler("linear")`` without warmup (the image-classification example's
    default), from ``recipe.lr`` down to 0 after the last of ``epochs x steps_per_epoch``
    optimizer steps."""
    import torch

    if recipe.schedule == "linear":
        from transformers import get_scheduler

        total = recipe.epochs * max(steps_per_epoch, 1)
        return Schedule(get_scheduler("linear", optimizer, num_warmup_steps=0,
                                      num_training_steps=total), per_step=True)
    if recipe.schedule == "multistep":
        return Schedule(torch.optim.lr_scheduler.MultiStepLR(
            optimizer, list(recipe.milestones), recipe.gamma), per_step=False)
    raise ValueError(f"unknown schedule {recipe.schedule!r}; use multistep or linear")


def current_lr(optimizer: Any) -> float:
    return float(optimizer.param_groups[0]["lr"])


class Trainer:
    """Trains one model on prepared loaders."""

    def __init__(self, backbone: Backbone, build: Callable[[], Any], recipe: Recipe,
                 augmenters: Sequence[Augmenter], device: str, seed: int,
                 normalize: Any, num_classes: int, progress: Progress | None = None,
                 micro_batch: int | None = None) -> None:
        self.backbone, self.build, self.recipe = backbone, build, recipe
        self.mixers = [a for a in augmenters if isinstance(a, MixStage)]
        self.featurers = [a for a in augmenters if isinstance(a, FeatureStage)]
        self.device, self.seed, self.normalize = device, seed, normalize
        self.num_classes, self.progress = num_classes, progress
        self.micro_batch = micro_batch

    def fit(self, train: Any, val: Any) -> FitResult:
        """Train with the recipe's lr, or each lr of ``lr_grid``, keeping the best model by
        validation top-1."""
        grid = self.recipe.lr_grid or (self.recipe.lr,)
        best: FitResult | None = None
        diverged: DivergedError | None = None
        for index, lr in enumerate(grid):
            try:
                result = self.fit_one(train, val, replace(self.recipe, lr=lr),
                                      (index * self.recipe.epochs, len(grid) * self.recipe.epochs))
            except DivergedError as exc:  # in a grid, a diverging lr is a losing candidate
                diverged = exc
                continue
            if best is None or result.val.top1 > best.val.top1:
                best = result
        if best is None:
            assert diverged is not None
            raise diverged
        return best

    def fit_one(self, train: Any, val: Any, recipe: Recipe,
                epochs_before_total: tuple[int, int] | None = None) -> FitResult:
        """One training at ``recipe.lr``; ``epochs_before_total``: (epochs already run,
        epochs in all) of the lr grid this training is part of, for progress."""
        import torch

        from sgid_bench.rng import seed_everything

        seed_everything(self.seed)  # same seed -> same initial weights
        model = self.build().to(self.device)
        model = model.to(memory_format=torch.channels_last)
        opt = make_optimizer(recipe, self.backbone.trainable_parameters(model))
        sched = make_schedule(recipe, opt, len(train))
        hook = FeatureHook(self.backbone, model, self.featurers)
        best_state, best_eval, best_epoch, history = None, None, -1, []
        seen, seconds = 0, 0.0
        try:
            for epoch in range(recipe.epochs):
                train.dataset.epoch = epoch
                start = time.perf_counter()
                loss, n = self._epoch(model, train, opt, hook, epoch, sched)
                seconds += time.perf_counter() - start
                seen += n
                sched.epoch()
                ev = evaluate(model, val, self.normalize, self.device, self.num_classes)
                history.append({"epoch": epoch, "train_loss": loss, "val_top1": ev.top1,
                                "lr": current_lr(opt)})
                if best_eval is None or ev.top1 > best_eval.top1:
                    best_eval, best_epoch = ev, epoch
                    best_state = copy.deepcopy(model.state_dict())
                if self.progress:
                    before, total = epochs_before_total or (0, recipe.epochs)
                    self.progress("epoch", before + epoch + 1, total, train_loss=loss,
                                  val_top1=ev.top1, images_per_s=seen / seconds if seconds
                                  else 0.0, lr=recipe.lr)
        finally:
            hook.remove()
        assert best_eval is not None, "recipe.epochs must be >= 1"
        assert best_state is not None
        model.load_state_dict(best_state)
        return FitResult(model, recipe.lr, best_epoch, best_eval,
                         seen / seconds if seconds else 0.0, history)

    def _epoch(self, model: Any, loader: Any, opt: Any, hook: FeatureHook, epoch: int,
               schedule: Schedule | None = None) -> tuple[float, int]:
        import torch

        model.train()
        total, count = 0.0, 0
        cuda = self.device.startswith("cuda")
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
        start = time.perf_counter()
        for step, (images, labels) in enumerate(loader):
            gen = generator(self.seed, "batch", epoch, step)
            x = self.normalize(images.to(self.device, non_blocking=True))
            t = torch.nn.functional.one_hot(labels, self.num_classes).float().to(self.device)
            for mixer in self.mixers:
                x, t = mixer.mix(x, t, gen)
            x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            chunks = self._chunks(x.shape[0])
            for sl in chunks:
                hook.targets, hook.gen = t[sl], gen
                with amp:
                    logits = model(x[sl])
                loss = soft_cross_entropy(logits, hook.targets, self.recipe.label_smoothing)
                loss = loss * (sl.stop - sl.start) / len(x)
                value = float(loss.detach())
                check_finite(value, epoch)
                loss.backward()
                total += value * len(x)
            hook.targets = None
            opt.step()
            if schedule is not None:
                schedule.step()
            count += len(x)
            if self.progress:
                elapsed = time.perf_counter() - start
                self.progress("batch", step + 1, len(loader), epoch=epoch,
                              images_per_s=count / elapsed if elapsed else 0.0)
        return total / max(count, 1), count

    def _chunks(self, n: int) -> list[slice]:
        # Gradient accumulation: micro-batches when the recipe's batch does not fit.
        size = self.micro_batch or n
        return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def evaluate(model: Any, loader: Any, normalize: Any, device: str, num_classes: int,
             class_names: Sequence[str] | None = None) -> Evaluation:
    """Top-1 / top-5 accuracy (percent), mean loss and per-class accuracy."""
    import torch

    model.eval()
    correct1 = correct5 = 0
    loss_sum, n = 0.0, 0
    hits = torch.zeros(num_classes)
    counts = torch.zeros(num_classes)
    with torch.no_grad():
        for images, labels in loader:
            x = normalize(images.to(device))
            logits = model(x).float().cpu()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            k = min(5, num_classes)
            topk = logits.topk(k, dim=1).indices
            ok1 = topk[:, 0] == labels
            correct1 += int(ok1.sum())
            correct5 += int((topk == labels[:, None]).any(dim=1).sum())
            hits.index_add_(0, labels, ok1.float())
            counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float))
            n += len(labels)
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    per_class = {names[c]: round(100.0 * float(hits[c] / counts[c]), 4)
                 for c in range(num_classes) if counts[c] > 0}
    return Evaluation(100.0 * correct1 / max(n, 1), 100.0 * correct5 / max(n, 1),
                      loss_sum / max(n, 1), per_class)


def normalizer(backbone: Backbone, device: str) -> Callable[[Any], Any]:
    """uint8 NCHW -> float, scaled to [0, 1] and normalised with the backbone's mean/std."""
    import torch

    mean_, std_ = backbone.normalization()
    mean = torch.tensor(mean_, device=device).view(1, -1, 1, 1)
    std = torch.tensor(std_, device=device).view(1, -1, 1, 1)

    def normalize(images: Any) -> Any:
        return (images.float() / 255.0 - mean) / std

    return normalize
