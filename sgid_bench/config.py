"""From what the user asked (a :class:`RunSpec`) to the full resolved config of a run,
and its hash.

Parameters: ``--param key=value`` goes to the one component that takes ``key`` (an
augmenter of the method, the backbone, the dataset, or the training recipe ``train``);
``component.key=value`` names the component when several take the key.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from sgid_bench import __version__
from sgid_bench.api import REQUIRED, Augmenter, Backbone, Dataset, Plugin, Recipe
from sgid_bench.context import PROFILES, Context, default_profile
from sgid_bench.errors import UserError
from sgid_bench.plugins import augmenter_class, backbone_class, dataset_class

#: The dataset a run uses when none is named, per profile.
DEFAULT_DATASETS = {"quick": "world", "tiny": "shapes", "paper": "shapes"}
#: Fraction of train carved out for validation when a dataset has no official val split.
VAL_FRACTION = 0.1
#: Seed of generated (expand-stage) images under ``generation.seed=fixed`` (the default):
#: every training seed trains on the same generated images, so the cache is shared across
#: seeds and backbones, and a paired test over seeds conditions on one draw of the
#: generator. ``per-run``: the generation seed follows the training seed, so each seed has
#: its own generated set and the variance reported includes the generator's.
GEN_SEED = 0
GENERATION_SEEDS = ("fixed", "per-run")


def generation_seed(config: dict[str, Any], seed: int) -> int:
    """The seed of a run's generated images: fixed, or the run's training seed."""
    return seed if config.get("generation_seed") == "per-run" else GEN_SEED


@dataclass
class RunSpec:
    """What one ``sgid-bench run`` asks for, before resolution."""

    method: str = "none"
    backbone: str = "resnet50"
    dataset: str = ""  # "" = the profile's default dataset
    seed: int = 0
    profile: str = field(default_factory=default_profile)
    params: list[str] = field(default_factory=list)  # raw "key=value" strings

    def __post_init__(self) -> None:
        if not self.dataset:
            self.dataset = DEFAULT_DATASETS.get(self.profile, "world")


@dataclass
class Component:
    """A resolved plugin instance spec: name, version, params."""

    name: str
    version: str
    params: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": self.params}


class SetupOnce:
    """Calls ``plugin.setup(context)`` once per (plugin, context), however many stages of
    a run need the plugin: the harness keeps this record, so a plugin carries none of it.
    A setup that raises is not recorded (the next call tries again)."""

    def __init__(self) -> None:
        self._done: list[tuple[Plugin, Context]] = []

    def __call__(self, plugin: Plugin, context: Context) -> None:
        if not self.done(plugin, context):
            plugin.setup(context)
            self._done.append((plugin, context))

    def done(self, plugin: Plugin, context: Context) -> bool:
        # Identity, not equality: plugins and contexts compare equal across runs.
        return any(p is plugin and c is context for p, c in self._done)


@dataclass
class Resolved:
    """A resolved run: plugin instances, recipe, and the config dict that is hashed
    (everything that determines the result except the seed). ``setup`` sets up this run's
    plugins, each once."""

    spec: RunSpec
    augmenters: list[Augmenter]
    backbone: Backbone
    dataset: Dataset
    recipe: Recipe
    config: dict[str, Any]
    setup: SetupOnce = field(default_factory=SetupOnce, repr=False, compare=False)

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces: the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise _NotFinite(text)
    return value


class _NotFinite(Exception):
    pass


def _no_constant(text: str) -> Any:
    raise _NotFinite(text)


def parse_value(text: str) -> Any:
    """``--param`` values: JSON where it parses (numbers, true/false, lists), else a string.

    NaN and infinities are refused: no parameter means anything by them, and PostgreSQL's
    JSON cannot store them."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except _NotFinite as exc:
        raise UserError(f"--param value {text!r}: {exc} is not a finite number; "
                        "give a finite value") from None
    except ValueError:
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text


def parse_params(raw: list[str]) -> list[tuple[str | None, str, Any]]:
    """``["a=1", "sgid.strength=0.5"]`` -> ``[(None, "a", 1), ("sgid", "strength", 0.5)]``."""
    out: list[tuple[str | None, str, Any]] = []
    for item in raw:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"malformed --param {item!r}: use --param key=value")
        target, dot, name = key.rpartition(".")
        if dot and not (target and name):  # ".p=1" or "sgid.=1"
            raise UserError(f"malformed --param {item!r}: use --param key=value or "
                            "component.key=value")
        out.append((target if dot else None, name, parse_value(value.strip())))
    return out


def split_method(method: str) -> list[str]:
    """``"sgid+randaugment"`` -> ``["sgid", "randaugment"]``."""
    parts = [p.strip() for p in method.split("+")]
    if any(not p for p in parts):
        raise UserError(f"malformed method {method!r}: join method names with '+', e.g. a+b")
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        # Parameters are per component name: a+a could not tell the two apart.
        raise UserError(f"method {method!r} combines {', '.join(repeated)} with itself: "
                        "name each method once (e.g. --method none or --method a+b)")
    return parts


def _coerce(owner: str, key: str, value: Any, default: Any) -> Any:
    # Keep the type of the default so "3" and 3 hash the same and typos fail early.
    if default is None or default is REQUIRED or isinstance(value, type(default)):
        return value
    if isinstance(default, bool):
        raise UserError(f"--param {owner}.{key} must be true or false, got {value!r}")
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    raise UserError(
        f"--param {owner}.{key} must be a {type(default).__name__}, got {value!r}"
    )


def resolve(spec: RunSpec, context: Context) -> Resolved:
    """Resolve a spec to plugin classes, full parameters, recipe and config dict.

    Raises :class:`UserError` for unknown names, malformed or unknown parameters."""
    if spec.profile not in PROFILES:
        raise UserError(f"unknown profile {spec.profile!r}; known profiles: {', '.join(PROFILES)}")
    aug_classes = [augmenter_class(n) for n in split_method(spec.method)]
    bb_cls = backbone_class(spec.backbone)
    ds_name, _, ds_path = spec.dataset.partition(":")
    ds_cls = dataset_class(ds_name)

    # Parameter tables per component, in resolution order: defaults < profile < user.
    comps: dict[str, dict[str, Any]] = {}
    defaults: dict[str, dict[str, Any]] = {}
    for cls in [*aug_classes, bb_cls, ds_cls]:
        defaults[cls.name] = cls.param_defaults()
        comps[cls.name] = {**defaults[cls.name], **cls.profile_params(spec.profile, ds_name)}
    if ds_path:
        if "path" not in defaults[ds_cls.name]:
            raise UserError(f"dataset {ds_name!r} takes no path: use --dataset {ds_name}")
        comps[ds_cls.name]["path"] = ds_path
    aliases = {"backbone": bb_cls.name, "dataset": ds_cls.name}

    recipe_fields = {f.name for f in fields(Recipe)}
    recipe_updates: dict[str, Any] = {}

    generation = "fixed"
    for target, key, value in parse_params(spec.params):
        target = aliases.get(target, target) if target else None
        if target == "generation":
            if key != "seed" or value not in GENERATION_SEEDS:
                raise UserError(f"--param generation.{key}={value!r}: use generation.seed="
                                + " or generation.seed=".join(GENERATION_SEEDS))
            generation = value
            continue
        if target == "train" or (target is None and key in recipe_fields):
            if key not in recipe_fields:
                raise UserError(
                    f"unknown --param train.{key}; training parameters: "
                    + ", ".join(sorted(recipe_fields))
                )
            recipe_updates[key] = value
            continue
        owners = [n for n in comps if (target in (None, n)) and key in defaults[n]]
        if target is not None and target not in comps:
            raise UserError(
                f"--param {target}.{key}: {target!r} is not part of this run; "
                f"components: {', '.join([*comps, 'train'])}"
            )
        if not owners:
            where = target or " / ".join(comps)
            takes = {n: sorted(defaults[n]) for n in comps if target in (None, n)}
            listing = "; ".join(f"{n} takes {', '.join(k) or 'nothing'}" for n, k in takes.items())
            raise UserError(f"unknown parameter {key!r} for {where}: {listing}")
        if len(owners) > 1:
            raise UserError(
                f"parameter {key!r} is taken by {' and '.join(owners)}: "
                f"prefix it, e.g. --param {owners[0]}.{key}=..."
            )
        comps[owners[0]][key] = _coerce(owners[0], key, value, defaults[owners[0]][key])

    missing = [f"{n}.{k}" for n, p in comps.items() for k, v in p.items() if v is REQUIRED]
    if missing:
        raise UserError(f"missing required parameter(s) {', '.join(missing)}: set --param")

    def component(cls: type[Any]) -> Component:
        return Component(cls.name, str(cls.version), comps[cls.name])

    try:
        augmenters = [cls(**comps[cls.name]) for cls in aug_classes]
        backbone = bb_cls(**comps[bb_cls.name])
        dataset = ds_cls(**comps[ds_cls.name])
    except (TypeError, ValueError) as exc:
        raise UserError(f"invalid parameter: {exc}") from None
    recipe = backbone.recipe(context, ds_name)
    recipe = replace(recipe, **{k: _coerce("train", k, v, getattr(recipe, k))
                                for k, v in recipe_updates.items()})
    models: dict[str, str] = {}
    for plugin in [*augmenters, backbone]:
        models.update({f"{plugin.name}.{role}": mid
                       for role, mid in plugin.models_used(context).items()})
    config = {
        "harness": __version__,
        # Never empty: split_method gives at least one name ("none" is a plugin too).
        "method": "+".join(a.name for a in augmenters),
        "augmenters": [component(cls).as_dict() for cls in aug_classes],
        "backbone": component(bb_cls).as_dict(),
        "dataset": component(ds_cls).as_dict(),
        "profile": spec.profile,
        "recipe": recipe.as_dict(),
        "val_fraction": VAL_FRACTION,
        # Without an expand stage nothing is generated: the setting cannot change a result.
        "generation_seed": generation if any("expand" in c.stages() for c in aug_classes)
        else "fixed",
        "models": models,
    }
    config.update(_batch_setting(aug_classes, context))
    config.update(_micro_batch_setting(recipe, context))
    return Resolved(spec, augmenters, backbone, dataset, recipe, config)


def _micro_batch_setting(recipe: Recipe, context: Context) -> dict[str, Any]:
    """The micro-batch, when it splits the recipe's batch: BatchNorm statistics (and a
    features stage's draws) are per forward pass, so gradient accumulation over smaller
    passes is a different training; a micro-batch that holds the whole batch changes
    nothing and keeps the hash."""
    size = context.micro_batch
    return {"micro_batch": int(size)} if size and size < recipe.batch_size else {}


def _batch_setting(aug_classes: list[type[Augmenter]], context: Context) -> dict[str, Any]:
    """The generation batch size, when generated images depend on it (an expand stage
    without per-image generators) and it is not the default: results made with other
    batch sizes are different results."""
    from sgid_bench.cache import batch_dependent, effective_key

    dependent = [c for c in aug_classes if "expand" in c.stages() and batch_dependent(c)]
    return effective_key(dependent[0], {}, context) if dependent else {}
