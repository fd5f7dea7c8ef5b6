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

    :param register: callable taking one Augmenter subclass.
    :return: nothing; the return value is ignored.
    """


@hookspec
def register_backbones(register: Callable[[type[Any]], None]) -> None:
    """Register classifier backbones.

    Call ``register(cls)`` once per class. ``cls`` subclasses :class:`sgid_bench.Backbone`,
    has a unique ``name`` (the ``--backbone`` key) and builds an ``nn.Module`` for a number
    of classes, with its input size and a training recipe per profile.

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
