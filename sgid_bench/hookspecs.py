"""Hook specifications: the plugin documentation of sgid-bench.

A plugin is a module (registered under the ``sgid_bench`` entry-point group) that
implements any of these hooks with :data:`sgid_bench.hookimpl`. Hooks are always called
with keyword arguments, so an implementation may accept fewer arguments than the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("sgid_bench")
hookimpl = pluggy.HookimplMarker("sgid_bench")


@hookspec
def register_augmenters(register: Callable[[type[Any]], None]) -> None:
    """Register augmentation methods.

    Call ``register(cls)`` once per class. ``cls`` subclasses :class:`sgid_bench.Augmenter`,
    has a unique ``name`` (the ``--method`` key) and implements any of the stages
    ``expand``, ``transform``, ``mix`` and ``features``; its ``__init__`` keyword arguments
    are the parameters a user sets with ``--param key=value``.

    Each stage, and each optional hook of an ``expand`` stage (``last_info``, ``select``,
    ``fit`` with ``load_state``), is a typed protocol in :mod:`sgid_bench.api`
    (:class:`~sgid_bench.api.ExpandStage`, :class:`~sgid_bench.api.TransformStage`,
    :class:`~sgid_bench.api.MixStage`, :class:`~sgid_bench.api.FeatureStage`,
    :class:`~sgid_bench.api.ReportsInfo`, :class:`~sgid_bench.api.SelectsImages`,
    :class:`~sgid_bench.api.FitsDataset`): the harness calls a stage when the instance
    matches its protocol (the method exists and is not None), and mypy checks an
    implementation's signature against it. A ``features`` stage acts on the backbone layer
    named by its ``layer`` attribute (``"stem"`` unless set). ``setup(context)`` is called
    once per run, before the first stage that needs the plugin.

    :param register: callable taking one Augmenter subclass.
    :return: nothing; the return value is ignored.
    """


@hookspec
def register_backbones(register: Callable[[type[Any]], None]) -> None:
    """Register classifier backbones.

    Call ``register(cls)`` once per class. ``cls`` subclasses :class:`sgid_bench.Backbone`,
    has a unique ``name`` (the ``--backbone`` key) and builds an ``nn.Module`` for a number
    of classes, with its input size and a training recipe per profile
    (:class:`sgid_bench.api.Recipe`: optimizer, lr and its ``schedule``, epochs, batch).
    ``feature_layer(model, layer)`` names the layers a ``features`` stage may act on:
    ``stem`` at least.

    :param register: callable taking one Backbone subclass.
    :return: nothing; the return value is ignored.
    """


@hookspec
def register_datasets(register: Callable[[type[Any]], None]) -> None:
    """Register datasets.

    Call ``register(cls)`` once per class. ``cls`` subclasses :class:`sgid_bench.Dataset`,
    has a unique ``name`` (the ``--dataset`` key) and yields ``(PIL image, int label)``
    pairs per split with human-readable class names (prompts are built from them).

    :param register: callable taking one Dataset subclass.
    :return: nothing; the return value is ignored.
    """
