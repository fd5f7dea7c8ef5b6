"""The plugin manager: loads every module registered under the ``sgid_bench`` entry-point
group (built-ins included, the same path as third parties) and collects the classes they
register into three registries.

Environment:
- ``SGID_BENCH_BLOCK_PLUGINS``: comma-separated entry-point names not to load.
- ``SGID_BENCH_TRACE_HOOKS``: when set, every hook call is traced to stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from sgid_bench import hookspecs
from sgid_bench.api import Augmenter, Backbone, Dataset, Plugin
from sgid_bench.errors import UserError, unknown

GROUP = "sgid_bench"
KINDS: dict[str, type[Plugin]] = {
    "augmenter": Augmenter,
    "backbone": Backbone,
    "dataset": Dataset,
}
_HOOKS = {
    "augmenter": "register_augmenters",
    "backbone": "register_backbones",
    "dataset": "register_datasets",
}


@dataclass
class Entry:
    """A registered class and the distribution (package) that gave it."""

    cls: type[Any]
    package: str


@dataclass
class Registry:
    """Name -> registered class, per kind."""

    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )

    def get(self, kind: str, name: str) -> type[Any]:
        try:
            return self.entries[kind][name].cls
        except KeyError:
            raise unknown(kind, name, self.entries[kind]) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])


def make_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager with the hookspecs added and, by default, every installed
    plugin loaded."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    blocked = [n for n in os.environ.get("SGID_BENCH_BLOCK_PLUGINS", "").split(",") if n]
    for name in blocked:
        pm.set_blocked(name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(GROUP)
    # A misspelled hook implementation fails loudly instead of silently never running.
    pm.check_pending()
    if os.environ.get("SGID_BENCH_TRACE_HOOKS"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm


def _owner(pm: pluggy.PluginManager, plugin: object) -> str:
    for plug, dist in pm.list_plugin_distinfo():
        if plug is plugin:
            return str(dist.project_name)
    return str(pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin)))


def collect(pm: pluggy.PluginManager) -> Registry:
    """Call the three register hooks plugin by plugin and build the registry.

    Raises :class:`UserError` on a duplicate name, naming both packages."""
    registry = Registry()
    plugins = pm.get_plugins()
    for kind, hook_name in _HOOKS.items():
        for plugin in plugins:
            # One plugin at a time, through pluggy (so tracing sees it), to know the owner.
            others = [p for p in plugins if p is not plugin]
            caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
            caller(register=_registrar(registry, kind, _owner(pm, plugin)))
    return registry


def _registrar(registry: Registry, kind: str, package: str) -> Callable[[type[Any]], None]:
    base = KINDS[kind]

    def register(cls: type[Any]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise UserError(
                f"plugin package {package!r} registered {cls!r} as a {kind}, "
                f"but it does not subclass sgid_bench.{base.__name__}"
            )
        if not cls.name or "+" in cls.name:
            raise UserError(
                f"plugin package {package!r} registered {cls.__name__} without a valid "
                "name: set a class attribute name = '...' (no '+')"
            )
        existing = registry.entries[kind].get(cls.name)
        if existing is not None and existing.cls is not cls:
            raise UserError(
                f"duplicate {kind} name {cls.name!r}: registered by both "
                f"{existing.package!r} and {package!r}; uninstall one or block it with "
                "SGID_BENCH_BLOCK_PLUGINS"
            )
        registry.entries[kind][cls.name] = Entry(cls, package)

    return register


@lru_cache(maxsize=1)
def registry() -> Registry:
    """The process-wide registry of installed plugins (loaded once)."""
    return collect(make_plugin_manager())


def augmenter_class(name: str) -> type[Augmenter]:
    return registry().get("augmenter", name)


def backbone_class(name: str) -> type[Backbone]:
    return registry().get("backbone", name)


def dataset_class(name: str) -> type[Dataset]:
    """Dataset by name; ``imagefolder:/path`` style names select the prefix's plugin."""
    return registry().get("dataset", name.split(":", 1)[0])
