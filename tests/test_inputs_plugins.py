"""Issue 12 item 17: a broken third-party plugin is named and left out; the others work."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from sgid_bench import plugins
from sgid_bench.errors import UserError
from sgid_bench.plugins import collect, make_plugin_manager

GOOD = """
import sgid_bench

class Good(sgid_bench.Augmenter):
    name = "good_one"
    def mix(self, images, targets, generator):
        return images, targets

@sgid_bench.hookimpl
def register_augmenters(register):
    register(Good)
"""

HOOK_RAISES = """
import sgid_bench

class Half(sgid_bench.Backbone):
    name = "half_backbone"

@sgid_bench.hookimpl
def register_backbones(register):
    register(Half)

@sgid_bench.hookimpl
def register_datasets(register):
    raise KeyError("no such dataset table")
"""

BAD_DEFAULT = """
import sgid_bench

class Odd(sgid_bench.Augmenter):
    name = "odd"
    def __init__(self, where: object = object()):
        self.where = where
    def mix(self, images, targets, generator):
        return images, targets

@sgid_bench.hookimpl
def register_augmenters(register):
    register(Odd)
"""


def _install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modules: dict[str, str]) -> None:
    """Fake distributions ``pkg-<name>`` with an entry point to module ``<name>``, on top of
    the installed ones."""
    for name, body in modules.items():
        (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in modules:
        monkeypatch.delitem(sys.modules, name, raising=False)
    real = plugins.entry_points()
    fake = [(importlib.metadata.EntryPoint(name, name, plugins.GROUP), f"pkg-{name}")
            for name in modules]
    monkeypatch.setattr(plugins, "entry_points", lambda: real + fake)


def test_module_raising_at_import_is_named_and_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install(tmp_path, monkeypatch, {"boom_plugin": "raise RuntimeError('no GPU driver')",
                                     "good_plugin": GOOD})
    reg = collect(make_plugin_manager())
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "boom_plugin" in ln)
    assert "'pkg-boom_plugin'" in line
    assert "RuntimeError: no GPU driver" in line
    assert "SGID_BENCH_BLOCK_PLUGINS=boom_plugin" in line
    assert "Traceback" not in err
    assert reg.broken == [line.removeprefix("sgid-bench: warning: ")]
    # The other plugins, built-in and third-party, keep working.
    assert "good_one" in reg.entries["augmenter"]
    assert "cutmix" in reg.entries["augmenter"]


def test_blocking_the_broken_plugin_silences_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install(tmp_path, monkeypatch, {"boom_plugin": "raise RuntimeError('no GPU driver')"})
    monkeypatch.setenv("SGID_BENCH_BLOCK_PLUGINS", "boom_plugin")
    reg = collect(make_plugin_manager())
    assert reg.broken == []
    assert "boom_plugin" not in capsys.readouterr().err


def test_register_hook_raising_leaves_only_that_plugin_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install(tmp_path, monkeypatch, {"hook_plugin": HOOK_RAISES, "good_plugin": GOOD})
    reg = collect(make_plugin_manager())
    line = next(ln for ln in capsys.readouterr().err.splitlines() if "hook_plugin" in ln)
    assert "'pkg-hook_plugin'" in line
    assert "register_datasets raised KeyError" in line
    # Not half registered: its backbone (registered before the failing hook) is gone too.
    assert "half_backbone" not in reg.entries["backbone"]
    assert "good_one" in reg.entries["augmenter"]
    assert "resnet50" in reg.entries["backbone"]


def test_cli_list_survives_a_broken_plugin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sgid_bench.cli import main

    _install(tmp_path, monkeypatch, {"boom_plugin": "import no_such_module_xyz"})
    plugins.registry.cache_clear()
    try:
        result = CliRunner().invoke(main, ["list"])
    finally:
        plugins.registry.cache_clear()
    assert result.exit_code == 0, result.output
    assert "cutmix" in result.output


def test_non_json_parameter_default_is_refused_naming_the_plugin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, monkeypatch, {"odd_plugin": BAD_DEFAULT})
    with pytest.raises(UserError, match=r"'pkg-odd_plugin': augmenter 'odd' parameter "
                                        r"'where' has a default .* not JSON"):
        collect(make_plugin_manager())
