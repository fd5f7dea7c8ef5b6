"""Base classes of the three plugin kinds: Augmenter, Backbone, Dataset.

This module must stay import-light (no torch at import time): ``sgid-bench list`` loads
every plugin module, and plugin modules subclass these classes at import.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from sgid_bench.errors import UserError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from sgid_bench.context import Context

class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Stands for a parameter without a default in :meth:`Plugin.param_defaults`.
REQUIRED: Any = _Required()

#: The four stages an Augmenter may implement; the harness calls only the defined ones.
STAGES = ("expand", "transform", "mix", "features")


class Plugin:
    """What every plugin class shares: a unique ``name``, a description and a version.

    ``version`` goes into the config hash, so bumping it makes a new leaderboard cell.
    Parameters are the keyword arguments of ``__init__`` (with defaults); the harness
    introspects them to validate ``--param key=value``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        """The ``__init__`` keyword parameters and their defaults (:data:`REQUIRED` if none)."""
        sig = inspect.signature(cls.__init__)
        out: dict[str, Any] = {}
        for p in list(sig.parameters.values())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[p.name] = REQUIRED if p.default is p.empty else p.default
        return out

    @classmethod
    def profile_params(cls, profile: str, dataset: str) -> dict[str, Any]:
        """Parameter values a profile sets for a dataset (e.g. the paper's Table 8).

        Resolution order: ``__init__`` defaults, then these, then the user's ``--param``.
        """
        return {}

    def setup(self, context: Context) -> None:  # noqa: B027 - optional hook
        """Called once before use with the run's :class:`~sgid_bench.context.Context`
        (profile, device, model resolver, cache dir). Load heavy models here, not in
        ``__init__``, so listing and validating stays instant."""

    def models_used(self, context: Context) -> dict[str, str]:
        """Model ids this plugin will load, ``{role: id}``; stored with every result and
        part of the config hash so tiny and real models never share a leaderboard cell."""
        return {}


class Augmenter(Plugin):
    """An augmentation method. Implement any of these stages (define only those you use);
    each is spelled out, with its types, by a protocol below, which is what the harness
    and a type checker test a class against:

    - ``expand(images, labels, class_names, generator) -> list[PIL.Image | None]``
      (:class:`ExpandStage`): offline, one new image per input (generative methods). The
      harness batches, caches on disk and resumes. ``images`` are RGB PIL images,
      ``labels`` ints, ``generator`` a CPU ``torch.Generator`` seeded for this batch (a
      list, one per image: see ``per_image_generators``).
    - ``transform(image, generator) -> image`` (:class:`TransformStage`): per training
      sample, uint8 CHW tensor in and out.
    - ``mix(images, targets, generator) -> (images, targets)`` (:class:`MixStage`): per
      batch; images float NCHW (normalised), targets N x C probabilities.
    - ``features(features, targets, generator) -> (features, targets)``
      (:class:`FeatureStage`): inside the network, on the output of the backbone layer
      named by :attr:`layer` (:meth:`Backbone.feature_layer`); ``features`` is channels
      first (N x C x ...): the harness moves the channels of an N x L x D output to dim 1
      and back.

    An ``expand`` stage may also offer the cache hooks :class:`ReportsInfo` (per-image
    metadata), :class:`SelectsImages` (a filter over the whole generated set) and
    :class:`FitsDataset` (dataset-level preparation, computed once and stored).

    ``group`` places the method in the leaderboard (backbone, perturbation, generative).

    ``per_image_generators = True`` makes ``expand``'s ``generator`` a list with one
    ``torch.Generator`` per input, seeded from (generation seed, image index); an augmenter
    that draws image i's randomness from ``generator[i]`` alone (diffusers pipelines take
    such a list) makes images that do not depend on ``--gen-batch-size``. Without it, the
    images depend on the batching, so a non-default batch size is part of the cache key and
    of the config hash.
    """

    group: ClassVar[str] = "perturbation"
    per_image_generators: ClassVar[bool] = False
    #: Where a ``features`` stage acts: a layer name :meth:`Backbone.feature_layer`
    #: knows. ``stem`` (the output of the input stem) is MoEx's official default; a
    #: method that takes the layer as a parameter sets ``self.layer`` in ``__init__``.
    layer: str = "stem"

    @classmethod
    def stages(cls) -> tuple[str, ...]:
        """The stages this class defines, in pipeline order."""
        return tuple(s for s in STAGES if callable(getattr(cls, s, None)))


# The stage contracts. ``runtime_checkable``: the harness finds a plugin's stages with
# ``isinstance(augmenter, MixStage)`` (the method exists and is not None), and a type
# checker checks an implementation's signature against them. Annotations only: this
# module imports neither torch nor PIL.


@runtime_checkable
class ExpandStage(Protocol):
    """``expand``: one new image per input, ``None`` to drop it (a filter)."""

    def expand(self, images: Sequence[Image.Image], labels: Sequence[int],
               class_names: Sequence[str],
               generator: torch.Generator | Sequence[torch.Generator]
               ) -> Sequence[Image.Image | None]:
        """``generator`` is one ``torch.Generator`` for the batch, or one per image when
        the class sets ``per_image_generators = True``."""
        ...


@runtime_checkable
class TransformStage(Protocol):
    """``transform``: one training sample, every epoch."""

    def transform(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 CHW in, uint8 CHW out; draw randomness from ``generator`` only."""
        ...


@runtime_checkable
class MixStage(Protocol):
    """``mix``: one training batch, after normalisation."""

    def mix(self, images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float NCHW images and N x C probability targets in; the same shapes out."""
        ...


@runtime_checkable
class FeatureStage(Protocol):
    """``features``: the output of the backbone layer named ``layer``, in training only."""

    layer: str

    def features(self, features: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Channels-first features (N x C x ...) and N x C targets in; the same out."""
        ...


@runtime_checkable
class ReportsInfo(Protocol):
    """An ``expand`` stage's metadata: after each ``expand``, one JSON-able dict per input
    (prompt, caption, scores...), stored beside the image and handed to ``select``."""

    last_info: list[dict[str, Any]]


@runtime_checkable
class SelectsImages(Protocol):
    """A filter that needs the whole generated set (a class-mean threshold)."""

    def select(self, infos: Sequence[dict[str, Any]], labels: Sequence[int]) -> Sequence[bool]:
        """The keep mask over every input, given each one's ``last_info`` (plus
        ``dropped``) and label; called on cached images too."""
        ...


@runtime_checkable
class FitsDataset(Protocol):
    """Dataset-level preparation before the first ``expand`` (per-class summaries),
    computed once per generation key and seed and stored as JSON."""

    def fit(self, samples: Sequence[tuple[Image.Image, int]], class_names: Sequence[str],
            generator: torch.Generator) -> Any:
        """Prepare from the whole training set; returns the JSON-able state."""
        ...

    def load_state(self, state: Any) -> None:
        """Restore what ``fit`` returned (a resumed or repeated generation)."""
        ...


#: The optimizers the trainer builds (``Recipe.optimizer``).
OPTIMIZERS = ("sgd", "adamw")
#: The learning-rate schedules (``Recipe.schedule``): ``multistep`` multiplies lr by
#: ``gamma`` at each of ``milestones`` (epochs; none: a constant lr); ``linear`` decays it
#: linearly to 0 over every optimizer step (Hugging Face's ``get_scheduler("linear")``,
#: the schedule of transformers' image-classification example).
SCHEDULES = ("multistep", "linear")


@dataclass(frozen=True)
class Recipe:
    """A training recipe. ``lr_grid`` (if not empty) is searched on the validation split
    and the best lr is kept; ``schedule`` is one of :data:`SCHEDULES`: ``milestones`` are
    epochs where lr is multiplied by ``gamma`` (``multistep`` only), ``linear`` decays lr
    to 0 by the last step; ``label_smoothing`` mixes the training targets with the
    uniform distribution.

    Every field is checked by type and range when a recipe is made (a backbone's default
    or ``--param train.key=value``), so a bad value is a :class:`UserError` before any run
    is stored, never a failed run with a raw error."""

    optimizer: str = "adamw"  # "sgd" | "adamw"
    lr: float = 1e-3
    epochs: int = 3
    batch_size: int = 64
    weight_decay: float = 0.0
    momentum: float = 0.9
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    lr_grid: tuple[float, ...] = ()
    label_smoothing: float = 0.0
    schedule: str = "multistep"

    def __post_init__(self) -> None:
        first = next(_recipe_problems(self), None)
        if first is not None:
            name, problem = first
            raise UserError(f"invalid training parameter {name}={getattr(self, name)!r}: "
                            f"{problem}; set a valid one with --param train.{name}=...")
        # Normalise what the checks accepted (1 -> 1.0, [30, 60] -> (30, 60)) so equal
        # recipes hash the same.
        for name in ("lr", "weight_decay", "momentum", "gamma", "label_smoothing"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "milestones", tuple(self.milestones))
        object.__setattr__(self, "lr_grid", tuple(float(v) for v in self.lr_grid))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _recipe_problems(r: Recipe) -> Iterator[tuple[str, str]]:
    """(field, what is wrong) for every invalid field of ``r``."""
    if r.optimizer not in OPTIMIZERS:
        yield "optimizer", f"unknown optimizer; use one of {', '.join(OPTIMIZERS)}"
    if r.schedule not in SCHEDULES:
        yield "schedule", f"unknown schedule; use one of {', '.join(SCHEDULES)}"
    elif r.schedule == "linear" and r.milestones:
        yield "schedule", ("milestones apply to schedule=multistep only; drop them "
                           "(train.milestones=[])")
    for name in ("epochs", "batch_size"):
        if not _is_int(getattr(r, name)) or getattr(r, name) < 1:
            yield name, "must be an integer >= 1"
    for name in ("lr", "gamma"):
        if not _is_number(getattr(r, name)) or getattr(r, name) <= 0:
            yield name, "must be a finite number > 0"
    if not _is_number(r.weight_decay) or r.weight_decay < 0:
        yield "weight_decay", "must be a finite number >= 0"
    if not _is_number(r.momentum) or not 0 <= r.momentum < 1:
        yield "momentum", "must be a number in [0, 1)"
    if not _is_number(r.label_smoothing) or not 0 <= r.label_smoothing < 1:
        yield "label_smoothing", "must be a number in [0, 1)"
    ms = r.milestones
    if not isinstance(ms, (tuple, list)) or not all(_is_int(m) and m > 0 for m in ms) or any(
            a >= b for a, b in zip(ms, ms[1:], strict=False)):
        yield "milestones", "must be a list of increasing positive epochs, e.g. [30, 60]"
    if not isinstance(r.lr_grid, (tuple, list)) or not all(
            _is_number(v) and v > 0 for v in r.lr_grid):
        yield "lr_grid", "must be a list of finite learning rates > 0"


@dataclass
class FeatureLayer:
    """Where the ``features`` stage runs: a submodule of the built model whose output is
    rewritten, and which dim of that output holds channels (1 for NCHW, -1 for N x L x D)."""

    module: Any  # torch.nn.Module
    channel_dim: int = 1


def named_layer(backbone: str, layers: dict[str, FeatureLayer], name: str) -> FeatureLayer:
    """``layers[name]`` for :meth:`Backbone.feature_layer`; an unknown name is a
    :class:`UserError` listing the known ones."""
    if name not in layers:
        raise UserError(f"backbone {backbone!r} has no feature layer {name!r}: use "
                        f"--param layer={' or layer='.join(layers)}")
    return layers[name]


class Backbone(Plugin):
    """A classifier. ``build`` returns an ``nn.Module`` mapping float NCHW images
    (normalised with :meth:`normalization`) of :meth:`input_size` to logits."""

    def build(self, num_classes: int, context: Context) -> torch.nn.Module:
        raise NotImplementedError

    def input_size(self, context: Context) -> int:
        """Side of the square input in pixels for this profile."""
        raise NotImplementedError

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel applied to [0, 1] images."""
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def recipe(self, context: Context, dataset: str) -> Recipe:
        """The default training recipe for a profile and dataset."""
        return Recipe()

    def feature_layer(self, model: torch.nn.Module, layer: str = "stem"
                      ) -> FeatureLayer | None:
        """The layer of ``model`` named ``layer`` where a ``features`` stage (MoEx) acts,
        or None when this backbone exposes none. Names: ``stem`` (the output of the input
        stem: a ResNet's conv1-bn-relu, a ViT's patch embedding) and ``layer1``,
        ``layer2``... (a ResNet's stages, a transformer's blocks). An unknown name raises
        :class:`UserError` listing the known ones."""
        return None

    def trainable_parameters(self, model: torch.nn.Module) -> Sequence[torch.nn.Parameter]:
        """Parameters the optimizer updates (a linear probe returns only the head)."""
        return [p for p in model.parameters() if p.requires_grad]


@dataclass
class Split:
    """One split of a dataset: indexable ``(PIL.Image RGB, int)`` pairs plus the classes."""

    samples: Sequence[tuple[Image.Image, int]]
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


class Dataset(Plugin):
    """A labelled image dataset. ``load(split)`` returns a :class:`Split` for ``"train"``,
    ``"test"`` and, when listed in ``splits``, ``"val"``; without an official validation
    split the harness carves a seeded one out of train (never selecting on test).

    A dataset whose files are missing raises :class:`sgid_bench.errors.UserError` naming
    the expected location and how to obtain the files.
    """

    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def class_names(self) -> list[str]:
        raise NotImplementedError

    def load(self, split: str) -> Split:
        raise NotImplementedError
