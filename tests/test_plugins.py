"""Hooks, entry-point loading, duplicate names, blocking, misspelled hooks."""

from __future__ import annotations

import inspect
import types
from pathlib import Path

import pluggy
import pytest

import sgid_bench
from sgid_bench import hookspecs
from sgid_bench.errors import UserError
from sgid_bench.plugins import collect, make_plugin_manager, registry

README = Path(__file__).resolve().parents[1] / "README.md"


def plugin_module(name: str, body: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(body, module.__dict__)  # noqa: S102 - builds a throwaway plugin module
    return module


MIXUP_TWIN = """
import sgid_bench

class Twin(sgid_bench.Augmenter):
    name = "twin"
    def mix(self, images, targets, generator):
        return images, targets

@sgid_bench.hookimpl
def register_augmenters(register):
    register(Twin)
"""


def test_builtins_register_through_entry_points() -> None:
    reg = registry()
    for name in ("none", "random_erasing", "cutmix", "moex", "randaugment"):
        assert reg.entries["augmenter"][name].package == "sgid-bench"
    for name in ("resnet50", "vit", "clip_vit"):
        assert reg.entries["backbone"][name].package == "sgid-bench"
    assert reg.entries["dataset"]["shapes"].package == "sgid-bench"


def test_third_party_package_registers_with_its_name() -> None:
    entry = registry().entries["augmenter"]["mixup"]
    assert entry.package == "sgid-bench-mixup"
    assert entry.cls.stages() == ("mix",)


def test_duplicate_names_name_both_packages() -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(plugin_module("first", MIXUP_TWIN), name="pkg_first")
    pm.register(plugin_module("second", MIXUP_TWIN), name="pkg_second")
    with pytest.raises(UserError, match="duplicate augmenter name 'twin'") as err:
        collect(pm)
    assert "pkg_first" in str(err.value)
    assert "pkg_second" in str(err.value)


def test_registering_a_non_plugin_class_is_refused() -> None:
    pm = make_plugin_manager(load_entrypoints=False)
    body = "import sgid_bench\n@sgid_bench.hookimpl\ndef register_backbones(register):\n" \
           "    register(dict)\n"
    pm.register(plugin_module("bad", body), name="bad_pkg")
    with pytest.raises(UserError, match="does not subclass sgid_bench.Backbone"):
        collect(pm)


def test_blocked_plugins_are_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGID_BENCH_BLOCK_PLUGINS", "mixup")
    reg = collect(make_plugin_manager())
    assert "mixup" not in reg.entries["augmenter"]
    assert "cutmix" in reg.entries["augmenter"]


def test_misspelled_hook_fails_loudly() -> None:
    pm = pluggy.PluginManager("sgid_bench")
    pm.add_hookspecs(hookspecs)
    body = "import sgid_bench\n@sgid_bench.hookimpl\ndef register_augmentors(register):\n" \
           "    pass\n"
    pm.register(plugin_module("typo", body))
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_hook_tracing_writes_calls(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SGID_BENCH_TRACE_HOOKS", "1")
    collect(make_plugin_manager())
    assert "register_augmenters" in capsys.readouterr().err


@pytest.mark.parametrize("hook", ["register_augmenters", "register_backbones",
                                  "register_datasets"])
def test_every_hook_is_documented(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc
    assert ":param register:" in doc
    assert hook in README.read_text()


def test_public_api_matches_design() -> None:
    assert sgid_bench.hookimpl is hookspecs.hookimpl
    for name in ("Augmenter", "Backbone", "Dataset"):
        assert isinstance(getattr(sgid_bench, name), type)
