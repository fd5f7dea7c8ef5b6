"""The plugin manager: loads every module registered under the ``sgid_bench`` entry-point
group (built-ins included, the same path as third parties) and collects the classes they
register into three registries.

A plugin that fails (its module raises at import, or its register hook raises) is left
out with a one-line warning on stderr naming its package, entry point and error; every
other plugin keeps working.

Environment:
- ``SGID_BENCH_BLOCK_PLUGINS``: comma-separated entry-point names not to load.
- ``SGID_BENCH_TRACE_HOOKS``: when set, every hook call is traced to stderr.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from sgid_bench import hookspecs
from sgid_bench.api import Augmenter, Backbone, Dataset, Plugin
from sgid_bench.errors import UserError

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
    """Name -> registered class, per kind; ``broken``: the plugins left out, one line
    each."""

    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    broken: list[str] = field(default_factory=list)

    def get(self, kind: str, name: str) -> type[Any]:
        try:
            return self.entries[kind][name].cls
        except KeyError:
            raise unknown_name(kind, name, self.entries[kind]) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])


def _folded(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def suggestions(name: str, known: list[str]) -> list[str]:
    """Known names the user probably meant: those equal up to case and ``-``/``_``
    (``SGID``, ``random-erasing``), else the closest spellings."""
    folded = {_folded(k): k for k in known}
    if _folded(name) in folded:
        return [folded[_folded(name)]]
    close = difflib.get_close_matches(_folded(name), list(folded), n=3, cutoff=0.6)
    return [folded[c] for c in close]


def unknown_name(kind: str, name: str, known: Any) -> UserError:
    """'unknown augmenter 'SGID'; known augmenters: ...; did you mean 'sgid'?'."""
    names = sorted(known)
    guess = suggestions(name, names)
    hint = ("; did you mean " + " or ".join(repr(g) for g in guess) + "?") if guess else ""
    return UserError(f"unknown {kind} {name!r}; known {kind}s: "
                     f"{', '.join(names) or '(none installed)'}{hint}")


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus which package gave each plugin and which failed to load."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.packages: dict[str, str] = {}  # plugin name -> distribution name
        self.broken: list[str] = []


def entry_points() -> list[tuple[importlib.metadata.EntryPoint, str]]:
    """Every ``sgid_bench`` entry point installed, with the name of its distribution."""
    found = []
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == GROUP:
                found.append((ep, str(dist.metadata["Name"])))
    return found


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _left_out(package: str, entry_point: str, why: str) -> str:
    return (f"plugin package {package!r} (entry point {entry_point!r}) left out: {why}; "
            f"fix or uninstall it, or skip it with SGID_BENCH_BLOCK_PLUGINS={entry_point}")


def _load_entrypoints(pm: PluginManager) -> None:
    # pluggy's load_setuptools_entrypoints stops at the first module that raises: load
    # one by one, so a broken plugin is named and left out while the others work.
    for ep, package in entry_points():
        if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # anything a third-party module may raise at import
            _warn(pm.broken, _left_out(package, ep.name, f"import failed ({_one_line(exc)})"))
            continue
        pm.packages[ep.name] = package


def _warn(broken: list[str], message: str) -> None:
    broken.append(message)
    print(f"sgid-bench: warning: {message}", file=sys.stderr)


def make_plugin_manager(load_entrypoints: bool = True) -> PluginManager:
    """A fresh plugin manager with the hookspecs added and, by default, every installed
    plugin loaded (those that fail to import are left out with a warning)."""
    pm = PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    blocked = [n for n in os.environ.get("SGID_BENCH_BLOCK_PLUGINS", "").split(",") if n]
    for name in blocked:
        pm.set_blocked(name.strip())
    if load_entrypoints:
        _load_entrypoints(pm)
    # A misspelled hook implementation fails loudly instead of silently never running.
    pm.check_pending()
    if os.environ.get("SGID_BENCH_TRACE_HOOKS"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm


def _owner(pm: pluggy.PluginManager, plugin: object) -> str:
    name = pm.get_name(plugin)
    packages = getattr(pm, "packages", {})
    if name in packages:
        return str(packages[name])
    return str(name or getattr(plugin, "__name__", repr(plugin)))


def collect(pm: pluggy.PluginManager) -> Registry:
    """Call the three register hooks plugin by plugin and build the registry.

    Raises :class:`UserError` on a duplicate name (naming both packages) or an invalid
    class; a hook that raises anything else leaves its plugin out with a warning."""
    registry = Registry(broken=list(getattr(pm, "broken", [])))
    plugins = pm.get_plugins()
    added: dict[int, list[tuple[str, str]]] = {}  # plugin -> (kind, name) it registered
    failed: set[int] = set()
    for kind, hook_name in _HOOKS.items():
        for plugin in plugins:
            if id(plugin) in failed:  # it raised in an earlier hook
                continue
            # One plugin at a time, through pluggy (so tracing sees it), to know the owner.
            others = [p for p in plugins if p is not plugin]
            caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
            package = _owner(pm, plugin)
            pending: dict[str, Entry] = {}
            try:
                caller(register=_registrar(registry, kind, package, pending))
            except UserError:
                raise
            except Exception as exc:  # a third-party hook's bug must not stop the others
                # Left out entirely, not half registered.
                for k, name in added.pop(id(plugin), []):
                    del registry.entries[k][name]
                failed.add(id(plugin))
                _warn(registry.broken, _left_out(package, str(pm.get_name(plugin)),
                                                 f"{hook_name} raised {_one_line(exc)}"))
                continue
            registry.entries[kind].update(pending)
            added.setdefault(id(plugin), []).extend((kind, n) for n in pending)
    return registry


def _registrar(registry: Registry, kind: str, package: str,
               pending: dict[str, Entry]) -> Callable[[type[Any]], None]:
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
        existing = registry.entries[kind].get(cls.name) or pending.get(cls.name)
        if existing is not None and existing.cls is not cls:
            raise UserError(
                f"duplicate {kind} name {cls.name!r}: registered by both "
                f"{existing.package!r} and {package!r}; uninstall one or block it with "
                "SGID_BENCH_BLOCK_PLUGINS"
            )
        _check_defaults(cls, kind, package)
        pending[cls.name] = Entry(cls, package)

    return register


def _check_defaults(cls: type[Any], kind: str, package: str) -> None:
    """Parameter defaults go into the stored config as JSON: refuse any that is not."""
    from sgid_bench.api import REQUIRED

    try:
        defaults = cls.param_defaults()
    except (TypeError, ValueError) as exc:
        raise UserError(f"plugin package {package!r}: {kind} {cls.name!r} has parameters "
                        f"that cannot be read ({exc}); block it with "
                        "SGID_BENCH_BLOCK_PLUGINS") from None
    for key, value in defaults.items():
        if value is REQUIRED or value is None:
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise UserError(
                f"plugin package {package!r}: {kind} {cls.name!r} parameter {key!r} has a "
                f"default {value!r} that is not JSON (numbers, strings, booleans, lists); "
                "fix the plugin or block it with SGID_BENCH_BLOCK_PLUGINS") from None


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
