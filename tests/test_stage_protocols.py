"""Issue 13: the optional stage hooks are typed protocols of ``sgid_bench.api`` that the
harness tests plugins against; setup runs once per run, recorded by the harness (no
attribute stamped on a plugin)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from sgid_bench.api import (
    STAGES,
    Augmenter,
    ExpandStage,
    FeatureStage,
    FitsDataset,
    MixStage,
    Plugin,
    ReportsInfo,
    SelectsImages,
    TransformStage,
)
from sgid_bench.cache import expand_samples
from sgid_bench.config import RunSpec, SetupOnce
from sgid_bench.context import Context
from sgid_bench.plugins import augmenter_class, registry
from sgid_bench.run import execute
from sgid_bench.store import DONE, Store

PROTOCOLS = {"expand": ExpandStage, "transform": TransformStage, "mix": MixStage,
             "features": FeatureStage}


@pytest.mark.parametrize("name", sorted(registry().names("augmenter")))
def test_every_registered_augmenter_matches_the_protocols_of_its_stages(name: str) -> None:
    cls = augmenter_class(name)
    augmenter = cls(**{k: v for k, v in cls.param_defaults().items()})
    matched = tuple(s for s in STAGES if isinstance(augmenter, PROTOCOLS[s]))
    assert matched == cls.stages()


def test_the_generative_methods_offer_the_cache_hooks() -> None:
    sgid = augmenter_class("sgid")()
    assert isinstance(sgid, ReportsInfo)
    assert isinstance(sgid, SelectsImages)
    assert isinstance(augmenter_class("sgid_diversecaption")(), FitsDataset)
    assert not isinstance(augmenter_class("cutmix")(), FitsDataset | SelectsImages)


class Disabled(Augmenter):
    """A subclass that turns its parent's stage off with ``None``."""

    name = "disabled_test"
    mix = None  # type: ignore[assignment]


def test_a_stage_set_to_none_is_not_a_stage() -> None:
    assert not isinstance(Disabled(), MixStage)
    assert Disabled.stages() == ()


class Counted(Augmenter):
    """An expand stage that counts its setups."""

    name = "counted_test"
    group = "generative"

    def __init__(self) -> None:
        self.setups = 0

    def setup(self, context: Context) -> None:
        self.setups += 1

    def expand(self, images: Any, labels: Any, class_names: Any, generator: Any) -> list[Any]:
        return [Image.eval(im, lambda v: 255 - v) for im in images]


def samples(n: int = 6) -> list[tuple[Image.Image, int]]:
    return [(Image.new("RGB", (8, 8), (i * 20, 0, 0)), i % 2) for i in range(n)]


def test_the_cache_sets_up_once_per_run_and_stamps_nothing(context: Context) -> None:
    aug, once = Counted(), SetupOnce()
    before = set(vars(aug))
    for key in ({"k": 1}, {"k": 2}):  # two generations in one run
        expand_samples(aug, samples(), ["a", "b"], key=key, seed=0, context=context,
                       setup=once)
    assert aug.setups == 1
    assert set(vars(aug)) == before  # no bookkeeping attribute on the plugin
    assert once.done(aug, context)
    other = Context(cache_dir=context.cache_dir, gen_batch_size=4)
    once(aug, other)  # another context: set up again
    assert aug.setups == 2


def test_a_failed_setup_is_tried_again() -> None:
    class Flaky(Plugin):
        calls = 0

        def setup(self, context: Context) -> None:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("not yet")

    once, plugin, context = SetupOnce(), Flaky(), Context()
    with pytest.raises(RuntimeError):
        once(plugin, context)
    once(plugin, context)
    once(plugin, context)
    assert Flaky.calls == 2


def test_a_run_sets_up_each_plugin_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                        ) -> None:
    calls: Counter[str] = Counter()
    original = Plugin.setup

    def counting(self: Plugin, context: Context) -> None:
        calls[self.name] += 1

    # Every plugin of the run: the base-class setup and the overrides, counted per name.
    spec = RunSpec(method="moex", params=["train.epochs=1", "train_per_class=3",
                                          "test_per_class=2"])
    from sgid_bench.config import resolve

    resolved = resolve(spec, Context())
    for plugin in (resolved.backbone, resolved.dataset, *resolved.augmenters):
        cls = type(plugin)
        inner = cls.setup if cls.setup is not original else None

        def wrapped(self: Plugin, context: Context, inner: Any = inner) -> None:
            counting(self, context)
            if inner is not None:
                inner(self, context)

        monkeypatch.setattr(cls, "setup", wrapped)
    torch.manual_seed(0)
    outcome = execute(spec, store=Store(os.environ["SGID_BENCH_DB"]),
                      context=Context(cache_dir=tmp_path / "cache"))
    assert outcome.status == DONE, outcome.error
    assert calls == {resolved.backbone.name: 1, resolved.dataset.name: 1, "moex": 1}
