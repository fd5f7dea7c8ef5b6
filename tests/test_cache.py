"""The generation cache: keying, reuse, resume, corruption, determinism, store records.

A small real augmenter (pixel shifts drawn from the batch generator) stands in for the
diffusion methods so these tests run in milliseconds; the methods themselves go through
the same cache in tests/test_gen_methods.py."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from sgid_bench.api import Augmenter
from sgid_bench.cache import cache_path, effective_key, expand_samples, generate, key_hash
from sgid_bench.config import config_hash
from sgid_bench.context import Context
from sgid_bench.store import Generation, Store

NAMES = ["circle", "square", "triangle"]


class Shift(Augmenter):
    """Adds a random offset (from the batch generator) to every pixel; records calls."""

    name = "shift_test"
    group = "generative"

    def __init__(self, amount: int = 50, drop_label: int = -1, fail_on_call: int = 0) -> None:
        self.amount, self.drop_label, self.fail_on_call = amount, drop_label, fail_on_call
        self.calls: list[list[int]] = []
        self.setups = 0
        self.probe: Callable[[], None] | None = None

    def setup(self, context: Context) -> None:
        self.setups += 1

    def expand(self, images: list[Image.Image], labels: list[int], class_names: list[str],
               generator: Any) -> list[Image.Image | None]:
        import torch

        self.calls.append(list(labels))
        if self.probe:
            self.probe()
        if self.fail_on_call and len(self.calls) == self.fail_on_call:
            raise RuntimeError("interrupted")
        shifts = torch.randint(1, self.amount, (len(images),), generator=generator).tolist()
        self.last_info = [{"prompt": f"shift {k}", "caption": class_names[y], "score": None}
                          for k, y in zip(shifts, labels, strict=True)]
        return [None if y == self.drop_label else Image.eval(im, lambda v, k=k: (v + k) % 256)
                for im, y, k in zip(images, labels, shifts, strict=True)]


def make_samples(n: int = 10) -> list[tuple[Image.Image, int]]:
    rng = np.random.default_rng(0)
    return [(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)), i % 3)
            for i in range(n)]


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context(cache_dir=tmp_path / "cache", gen_batch_size=4)


KEY = {"chain": [{"name": "shift_test", "version": "1", "params": {"amount": 50}}],
       "dataset": {"name": "toy", "version": "1", "params": {}}}


def folder(context: Context, key: dict[str, Any] = KEY) -> Path:
    """The cache folder of ``key`` for Shift (whose batch generators make a non-default
    batch size part of the key)."""
    return cache_path(effective_key(Shift, key, context), context)


def pixels(pairs: list[tuple[Image.Image, int]]) -> list[tuple[bytes, int]]:
    return [(im.tobytes(), y) for im, y in pairs]


def test_key_hash_changes_with_params_and_is_the_folder(context: Context) -> None:
    other = json.loads(json.dumps(KEY))
    other["chain"][0]["params"]["amount"] = 60
    assert key_hash(KEY) != key_hash(other)
    assert key_hash(KEY) == key_hash(json.loads(json.dumps(KEY))) == config_hash(KEY)
    expand_samples(Shift(), make_samples(4), NAMES, key=KEY, seed=0, context=context)
    expand_samples(Shift(), make_samples(4), NAMES, key=other, seed=0, context=context)
    folders = sorted(p.name for p in Path(context.cache_dir).iterdir())
    assert folders == sorted([folder(context).name, folder(context, other).name])
    assert json.loads((folder(context) / "key.json").read_text()) == effective_key(
        Shift, KEY, context)


def test_output_order_labels_and_metadata(context: Context) -> None:
    samples = make_samples(10)
    result = generate(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    assert [r.label for r in result.records] == [y for _, y in samples]
    for rec, (im, _) in zip(result.records, samples, strict=True):
        assert rec.image is not None
        assert rec.image.size == im.size
        assert rec.image.tobytes() != im.tobytes()
        assert rec.meta["info"]["prompt"].startswith("shift ")
        assert len(rec.meta["sha256"]) == 64
    # Batches cover fixed ranges of gen_batch_size images: 4 + 4 + 2.
    assert result.stats.expand_calls == 3
    assert result.stats.generated == 10


def test_second_call_generates_nothing(context: Context) -> None:
    samples = make_samples(10)
    first = expand_samples(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    again = Shift()
    second = expand_samples(again, samples, NAMES, key=KEY, seed=0, context=context)
    assert again.calls == []
    assert again.setups == 0
    assert pixels(second) == pixels(first)


def test_same_seed_same_images_other_seed_differs(tmp_path: Path) -> None:
    samples = make_samples(6)
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        ctx = Context(cache_dir=tmp_path / name, gen_batch_size=4)
        runs[name] = pixels(expand_samples(Shift(), samples, NAMES, key=KEY, seed=seed,
                                           context=ctx))
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_seeds_share_a_key_folder_without_mixing(context: Context) -> None:
    samples = make_samples(4)
    a = expand_samples(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    b = expand_samples(Shift(), samples, NAMES, key=KEY, seed=1, context=context)
    assert pixels(a) != pixels(b)
    files = {p.name for p in folder(context).glob("*.png")}
    assert "0000000-s0.png" in files
    assert "0000000-s1.png" in files


def test_resume_after_interruption_redoes_only_missing_batches(tmp_path: Path) -> None:
    samples = make_samples(10)
    ctx = Context(cache_dir=tmp_path / "cache", gen_batch_size=4)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate(Shift(fail_on_call=2), samples, NAMES, key=KEY, seed=0, context=ctx)
    resumed = Shift()
    result = generate(resumed, samples, NAMES, key=KEY, seed=0, context=ctx)
    # Batch [0, 4) was finished before the interruption; [4, 8) and [8, 10) remain.
    assert [len(c) for c in resumed.calls] == [4, 2]
    assert result.stats.reused == 4
    assert result.stats.generated == 6
    clean = expand_samples(Shift(), samples, NAMES, key=KEY, seed=0,
                           context=Context(cache_dir=tmp_path / "clean", gen_batch_size=4))
    assert pixels(result.samples()) == pixels(clean)


def test_corrupted_image_is_regenerated(context: Context) -> None:
    samples = make_samples(10)
    first = expand_samples(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    png = folder(context) / "0000005-s0.png"
    Image.new("RGB", (8, 8), "red").save(png)  # a valid PNG, but not the one recorded
    again = Shift()
    result = generate(again, samples, NAMES, key=KEY, seed=0, context=context)
    assert result.stats.corrupted == 1
    assert again.calls == [[1, 2, 0, 1]]  # only the batch [4, 8) holding image 5
    assert pixels(result.samples()) == pixels(first)


def test_truncated_metadata_counts_as_missing(context: Context) -> None:
    samples = make_samples(4)
    expand_samples(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    (folder(context) / "0000002-s0.json").write_text('{"index": 2, ')
    again = Shift()
    expand_samples(again, samples, NAMES, key=KEY, seed=0, context=context)
    assert len(again.calls) == 1


def test_dropped_images_are_omitted_and_remembered(context: Context) -> None:
    samples = make_samples(9)
    out = expand_samples(Shift(drop_label=1), samples, NAMES, key=KEY, seed=0, context=context)
    assert [y for _, y in out] == [0, 2, 0, 2, 0, 2]
    meta = json.loads((folder(context) / "0000001-s0.json").read_text())
    assert meta["dropped"] is True
    assert "sha256" not in meta
    again = Shift(drop_label=1)
    assert len(expand_samples(again, samples, NAMES, key=KEY, seed=0, context=context)) == 6
    assert again.calls == []


class KeepFirstOfClass(Shift):
    """A set-level selection hook, like the class-mean image filters."""

    def select(self, infos: list[dict[str, Any]], labels: list[int]) -> list[bool]:
        seen: set[int] = set()
        keep = []
        for y in labels:
            keep.append(y not in seen)
            seen.add(y)
        return keep


def test_select_hook_filters_the_whole_set(context: Context) -> None:
    out = expand_samples(KeepFirstOfClass(), make_samples(9), NAMES, key=KEY, seed=0,
                         context=context)
    assert [y for _, y in out] == [0, 1, 2]


class Fitted(Shift):
    """A dataset-level preparation hook, like DiverseCaption's caption summaries."""

    fits = 0

    def fit(self, samples: Any, class_names: list[str], generator: Any) -> dict[str, Any]:
        Fitted.fits += 1
        self.state = {"n": len(samples)}
        return self.state

    def load_state(self, state: dict[str, Any]) -> None:
        self.state = state


def test_fit_runs_once_and_its_state_is_reloaded_on_resume(context: Context) -> None:
    Fitted.fits = 0
    samples = make_samples(8)
    with pytest.raises(RuntimeError):
        generate(Fitted(fail_on_call=2), samples, NAMES, key=KEY, seed=0, context=context)
    resumed = Fitted()
    generate(resumed, samples, NAMES, key=KEY, seed=0, context=context)
    assert Fitted.fits == 1
    assert resumed.state == {"n": 8}
    assert (folder(context) / "fit-s0.json").is_file()


def test_generation_is_recorded_in_the_store(context: Context, db_url: str) -> None:
    store = Store(db_url)
    seen: list[str] = []

    def probe() -> None:
        with store.session() as s:
            seen.extend(s.scalars(select(Generation.status)))

    aug = Shift(drop_label=2)
    aug.probe = probe
    expand_samples(aug, make_samples(6), NAMES, key=KEY, seed=3, context=context, store=store)
    with store.session() as s:
        rows = s.scalars(select(Generation)).all()
        assert len(rows) == 1
        row = rows[0]
        assert (row.status, row.images, row.seed, row.method) == ("done", 4, 3, "shift_test")
        assert row.dataset == "toy"
        assert row.path == str(folder(context))
        assert row.params == {"amount": 50}
        assert row.finished_at is not None
    assert seen
    assert set(seen) == {"running"}
    # A second identical call keeps the one row.
    expand_samples(Shift(drop_label=2), make_samples(6), NAMES, key=KEY, seed=3,
                   context=context, store=store)
    with store.session() as s:
        assert len(s.scalars(select(Generation)).all()) == 1


class Wrong(Shift):
    def expand(self, images: Any, labels: Any, class_names: Any, generator: Any) -> list[Any]:
        return super().expand(images, labels, class_names, generator)[:-1]


def test_wrong_number_of_outputs_is_an_error(context: Context) -> None:
    with pytest.raises(RuntimeError, match="one per input"):
        expand_samples(Wrong(), make_samples(4), NAMES, key=KEY, seed=0, context=context)


def test_plain_progress_lines_when_stderr_is_not_a_terminal(
        context: Context, capfd: pytest.CaptureFixture[str]) -> None:
    # A pipe, nohup or slurm gets a timestamped line per generated chunk, never a bar.
    expand_samples(Shift(), make_samples(6), NAMES, key=KEY, seed=0, context=context)
    err = capfd.readouterr().err
    done = [int(d) for d in re.findall(r"generating \S+  (\d+)/6  [\d.]+ images/s  ETA", err)]
    assert done == [4, 6]  # batches of 4 (the context's gen_batch_size)
    assert "\x1b[" not in err  # no terminal control codes


# -- what the harness hands the augmenter's hooks ----------------------------------------


class Hooks(Shift):
    """Shift recording the context of each setup, its outputs and what its hooks get."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.contexts: list[Context] = []
        self.made: list[Image.Image | None] = []

    def setup(self, context: Context) -> None:
        super().setup(context)
        self.contexts.append(context)

    def expand(self, images: list[Image.Image], labels: list[int], class_names: list[str],
               generator: Any) -> list[Image.Image | None]:
        out = super().expand(images, labels, class_names, generator)
        self.made.extend(out)
        return out


def test_a_runs_setup_record_sets_the_augmenter_up_once_with_its_context(
        context: Context) -> None:
    from sgid_bench.config import SetupOnce

    aug, once = Hooks(), SetupOnce()
    other = {**KEY, "dataset": {"name": "other", "version": "1", "params": {}}}
    expand_samples(aug, make_samples(4), NAMES, key=KEY, seed=0, context=context, setup=once)
    expand_samples(aug, make_samples(4), NAMES, key=other, seed=0, context=context,
                   setup=once)
    assert len(aug.calls) == 2  # both keys generated...
    assert aug.contexts == [context]  # ...but the model was loaded once, for this context
    assert aug.contexts[0] is context
    assert once.done(aug, context)


def test_freshly_generated_images_are_handed_back_without_a_disk_round_trip(
        context: Context) -> None:
    aug = Hooks()
    result = generate(aug, make_samples(6), NAMES, key=KEY, seed=0, context=context)
    assert len(aug.made) == 6
    assert all(r.image is made for r, made in zip(result.records, aug.made, strict=True))


def test_records_carry_their_input_index_fresh_and_cached(context: Context) -> None:
    samples = make_samples(6)
    first = generate(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    again = generate(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    assert again.stats.reused == 6
    assert [r.index for r in first.records] == list(range(6))
    assert [r.index for r in again.records] == list(range(6))


def test_generate_needs_an_expand_stage(context: Context) -> None:
    class OnlyTransform(Augmenter):
        name = "only_transform_test"

        def transform(self, image: Any, generator: Any) -> Any:
            return image

    with pytest.raises(TypeError, match="'only_transform_test' has no expand stage"):
        generate(OnlyTransform(), make_samples(2), NAMES, key=KEY, seed=0, context=context)


def test_stats_time_the_generation_and_only_it(context: Context) -> None:
    import time

    samples = make_samples(6)
    start = time.perf_counter()
    first = generate(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    wall = time.perf_counter() - start
    assert isinstance(first.stats.seconds, float)
    assert 0.0 < first.stats.seconds <= wall
    assert generate(Shift(), samples, NAMES, key=KEY, seed=0,
                    context=context).stats.seconds == 0.0  # nothing generated


def test_progress_lines_name_the_method(context: Context,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    expand_samples(Shift(), make_samples(6), NAMES, key=KEY, seed=0, context=context)
    err = capfd.readouterr().err
    assert "generating shift_test  4/6  " in err
    assert "generating shift_test  6/6  " in err


# -- metadata and files ------------------------------------------------------------------


def test_metadata_records_where_each_image_came_from(context: Context) -> None:
    # The seed and the batch that made an image (its first index and size) are what it
    # takes to regenerate it; they are stored with it.
    samples = make_samples(10)
    generate(Shift(), samples, NAMES, key=KEY, seed=7, context=context)
    meta = json.loads((folder(context) / "0000005-s7.json").read_text())
    assert {k: meta[k] for k in ("index", "seed", "label", "dropped", "batch_first",
                                 "batch_size")} == {
        "index": 5, "seed": 7, "label": samples[5][1], "dropped": False, "batch_first": 4,
        "batch_size": 4}
    last = json.loads((folder(context) / "0000009-s7.json").read_text())
    assert (last["batch_first"], last["batch_size"]) == (8, 4)


class Cmyk(Shift):
    """An expand stage returning images in a mode PNG cannot hold."""

    def expand(self, images: list[Image.Image], labels: list[int], class_names: list[str],
               generator: Any) -> list[Image.Image | None]:
        out = super().expand(images, labels, class_names, generator)
        return [None if im is None else im.convert("CMYK") for im in out]


def test_images_of_any_mode_come_back_as_rgb_fresh_or_cached(context: Context) -> None:
    samples = make_samples(4)
    first = generate(Cmyk(), samples, NAMES, key=KEY, seed=0, context=context)
    again = Cmyk()
    cached = generate(again, samples, NAMES, key=KEY, seed=0, context=context)
    assert again.calls == []
    # The same images, in the same mode, whether generated now or read from the cache.
    for result in (first, cached):
        assert [r.image.mode for r in result.records if r.image] == ["RGB"] * 4
    assert [r.image.tobytes() for r in cached.records if r.image] == [
        r.image.tobytes() for r in first.records if r.image]


def test_every_corrupted_image_is_counted(context: Context) -> None:
    samples = make_samples(8)
    first = expand_samples(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    root = folder(context)
    for i in (0, 1):  # unreadable metadata
        (root / f"{i:07d}-s0.json").write_text('{"index": ')
    for i in (2, 3):  # metadata that is not a record
        (root / f"{i:07d}-s0.json").write_text("null")
    for i in (4, 5):  # an image that is not the one recorded
        Image.new("RGB", (8, 8), "red").save(root / f"{i:07d}-s0.png")
    result = generate(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    assert result.stats.corrupted == 6
    assert result.stats.generated == 6
    assert pixels(result.samples()) == pixels(first)


def test_a_missing_image_beside_its_metadata_is_regenerated(context: Context) -> None:
    samples = make_samples(8)
    first = expand_samples(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    (folder(context) / "0000006-s0.png").unlink()
    again = Shift()
    result = generate(again, samples, NAMES, key=KEY, seed=0, context=context)
    assert again.calls == [[1, 2, 0, 1]]  # the batch [4, 8)
    assert (result.stats.generated, result.stats.reused) == (1, 7)
    assert pixels(result.samples()) == pixels(first)


def test_writes_go_through_hidden_temp_files_beside_their_target(
        context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    # A rename is atomic only within one file system, so the temp file is made in the
    # target's folder; one an interrupted write leaves behind is hidden, named after
    # its target and never mistaken for an image or a record.
    import os

    from sgid_bench import cache

    renames: list[tuple[Path, Path]] = []
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        renames.append((Path(src), Path(dst)))
        real(src, dst)

    monkeypatch.setattr(cache.os, "replace", replace)
    expand_samples(Shift(), make_samples(2), NAMES, key=KEY, seed=0, context=context)
    assert {dst.name for _, dst in renames} == {
        "key.json", "0000000-s0.png", "0000000-s0.json", "0000001-s0.png", "0000001-s0.json"}
    for src, dst in renames:
        assert src.parent == dst.parent
        assert src.name.startswith(f".{dst.name}.")
        assert src.name.endswith(".tmp")
    assert not [p for p in folder(context).iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("cleanup_fails", [False, True])
def test_a_failed_write_raises_its_own_error_and_leaves_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cleanup_fails: bool) -> None:
    import errno

    from sgid_bench import cache

    def full(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.os, "replace", full)
    if cleanup_fails:  # the temp file cannot be removed either: the first error wins
        def refuse(path: Any) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(cache.os, "unlink", refuse)
    with pytest.raises(OSError, match="No space left on device"):
        cache._atomic_write(tmp_path / "record.json", b"{}")
    assert not (tmp_path / "record.json").exists()
    if not cleanup_fails:
        assert list(tmp_path.iterdir()) == []


def test_key_json_is_written_once_readable_and_independent_of_dict_order(
        tmp_path: Path) -> None:
    key = {**KEY, "where": tmp_path / "data"}  # a non-JSON value is recorded as its text
    reordered = dict(reversed(list(key.items())))
    paths = []
    for name, k in (("a", key), ("b", reordered)):
        ctx = Context(cache_dir=tmp_path / name, gen_batch_size=4)
        paths.append(generate(Shift(), make_samples(2), NAMES, key=k, seed=0,
                              context=ctx).path / "key.json")
    a, b = (p.read_bytes() for p in paths)
    assert a == b  # the same key gives the same file, whatever order it was built in
    assert json.loads(a)["where"] == str(tmp_path / "data")
    assert len(a.splitlines()) > 5  # one entry a line, for people to read
    # Resuming into the folder leaves the key's record as it is.
    before = paths[0].stat()
    ctx = Context(cache_dir=tmp_path / "a", gen_batch_size=4)
    assert generate(Shift(), make_samples(6), NAMES, key=key, seed=0,
                    context=ctx).stats.generated == 4
    after = paths[0].stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


# -- set-level hooks ---------------------------------------------------------------------


class SeesInfos(Shift):
    """A select hook recording what it is given; keeps everything."""

    def select(self, infos: list[dict[str, Any]], labels: list[int]) -> list[bool]:
        self.seen = [dict(i) for i in infos], list(labels)
        return [True] * len(labels)


def test_select_gets_each_inputs_info_and_drop_flag_fresh_and_cached(
        context: Context) -> None:
    samples = make_samples(6)
    fresh = SeesInfos(drop_label=1)
    generate(fresh, samples, NAMES, key=KEY, seed=0, context=context)
    infos, labels = fresh.seen
    assert labels == [y for _, y in samples]
    assert [i["dropped"] for i in infos] == [y == 1 for y in labels]
    assert all(i["prompt"].startswith("shift ") for i in infos)
    assert [i["caption"] for i in infos] == [NAMES[y] for y in labels]
    cached = SeesInfos(drop_label=1)
    generate(cached, samples, NAMES, key=KEY, seed=0, context=context)
    assert cached.calls == []
    assert cached.seen == fresh.seen  # read back from the records on disk


def test_a_select_mask_of_the_wrong_length_is_an_error(context: Context) -> None:
    class Short(Shift):
        def select(self, infos: list[dict[str, Any]], labels: list[int]) -> list[bool]:
            return [True] * (len(labels) - 1)

    with pytest.raises(ValueError, match="shorter"):
        expand_samples(Short(), make_samples(4), NAMES, key=KEY, seed=0, context=context)


class FitRecorder(Shift):
    """A fit hook recording its arguments."""

    def fit(self, samples: Any, class_names: list[str], generator: Any) -> dict[str, Any]:
        self.fitted = (list(class_names), generator.initial_seed())
        return {"n": len(samples)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.state = state


def test_fit_gets_the_class_names_and_the_seeds_fit_stream(context: Context) -> None:
    # The fit stream is part of what a cache folder holds (its key does not name the code
    # version): a fit redone after its state file was lost must give the same state.
    from sgid_bench.rng import derive_seed

    aug = FitRecorder()
    generate(aug, make_samples(4), NAMES, key=KEY, seed=5, context=context)
    assert aug.fitted == (NAMES, derive_seed("fit", 5))


# -- progress lines ----------------------------------------------------------------------


def _log_console(width: int = 60) -> tuple[Any, Any]:
    import io

    from rich.console import Console

    buf = io.StringIO()
    # A colour-capable console (as in a notebook): the line must stay plain text anyway.
    return Console(file=buf, width=width, force_terminal=True, color_system="standard"), buf


STAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"


def test_progress_line_reports_this_runs_rate_and_the_eta(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from sgid_bench import cache

    clock = [100.0]
    monkeypatch.setattr(cache, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    name = "sd[lora]-with-a-long-method-name"
    console, buf = _log_console()
    # Resumed with 4 of 968 images cached: the rate counts only what this run made.
    advance = cache._log_lines(console, name, 968, 4)
    clock[0] = 100.5
    advance(4)
    # A slow method (diffusion on a CPU): under one image a second still has an ETA.
    slow = cache._log_lines(console, "slow", 61, 0)
    clock[0] = 102.5
    slow(1)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2  # one line per chunk, never wrapped, even past the width
    assert re.fullmatch(rf"{STAMP}  generating {re.escape(name)}  8/968  8\.0 images/s  "
                        r"ETA 2:00", lines[0]), lines[0]
    assert re.fullmatch(rf"{STAMP}  generating slow  1/61  0\.5 images/s  ETA 2:00",
                        lines[1]), lines[1]
    assert "\x1b[" not in buf.getvalue()


def test_progress_eta_shows_minutes_and_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from sgid_bench import cache

    clock = [0.0]
    monkeypatch.setattr(cache, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    console, buf = _log_console(width=200)
    advance = cache._log_lines(console, "m", 1000, 0)
    clock[0] = 10.0
    advance(10)  # 1 image/s, 990 left: 16 min 30 s
    assert buf.getvalue().rstrip().endswith("10/1000  1.0 images/s  ETA 16:30")


# -- the store ---------------------------------------------------------------------------


class Models(Shift):
    """Shift whose model ids depend on the run's context, as real methods' do."""

    def models_used(self, context: Context) -> dict[str, str]:
        return {"generator": f"org/model-{context.profile}"}


@pytest.mark.parametrize(("key", "described"), [
    ({"k": 1}, ("shift_test", "", {})),
    ({"chain": "not a list", "dataset": "shapes"}, ("shift_test", "shapes", {})),
    ({"chain": [{"name": "text2img", "params": {"steps": 3}},
                {"name": "sgid", "params": {"strength": 0.5}}],
      "dataset": {"name": "toy", "version": "1"}},
     ("text2img+sgid", "toy", {"strength": 0.5})),
    ({"chain": [{"params": {"a": 1}}, {"name": "sgid"}], "dataset": {"version": "1"}},
     ("?+sgid", "", {})),
])
def test_the_store_describes_any_key(context: Context, db_url: str, key: dict[str, Any],
                                     described: tuple[str, str, dict[str, Any]]) -> None:
    store = Store(db_url)
    expand_samples(Models(), make_samples(2), NAMES, key=key, seed=0, context=context,
                   store=store)
    with store.session() as s:
        row = s.scalars(select(Generation)).one()
        assert (row.method, row.dataset, row.params) == described
        assert row.models == {"generator": f"org/model-{context.profile}"}


def test_the_store_row_is_the_one_the_sweep_planner_looks_up(
        context: Context, db_url: str) -> None:
    # sgid_bench.sweep finds a finished generation by config_hash({"key": <key hash>,
    # "seed": seed}); each (key, seed) has its own row.
    store = Store(db_url)
    other = {**KEY, "dataset": {"name": "other", "version": "1", "params": {}}}
    made = [(generate(Shift(), make_samples(2), NAMES, key=k, seed=seed, context=context,
                      store=store).path.name, seed) for k, seed in ((KEY, 0), (other, 0),
                                                                    (KEY, 1))]
    with store.session() as s:
        keys = set(s.scalars(select(Generation.cache_key)))
    assert keys == {config_hash({"key": h, "seed": seed}) for h, seed in made}
    assert len(keys) == 3


def test_a_rerun_shows_running_without_a_finish_time_until_done(
        context: Context, db_url: str) -> None:
    store = Store(db_url)
    seen: list[tuple[str, int, Any]] = []

    def probe() -> None:
        with store.session() as s:
            row = s.scalars(select(Generation)).one()
            seen.append((row.status, row.images, row.finished_at))

    first = Shift()
    first.probe = probe
    expand_samples(first, make_samples(4), NAMES, key=KEY, seed=0, context=context,
                   store=store)
    assert seen == [("running", 0, None)]  # nothing counted before it is done
    more = Shift()
    more.probe = probe
    expand_samples(more, make_samples(8), NAMES, key=KEY, seed=0, context=context,
                   store=store)
    assert seen[1][0] == "running"
    assert seen[1][2] is None  # the previous run's finish time is not this run's
    with store.session() as s:
        row = s.scalars(select(Generation)).one()
        assert (row.status, row.images) == ("done", 8)
        assert row.finished_at is not None


def _racing_store(store: Store, monkeypatch: pytest.MonkeyPatch, misses: int) -> None:
    """Make the first ``misses`` look-ups of the generation row miss it, as when another
    process inserts it between our look-up and our insert."""
    from contextlib import contextmanager

    real = store.session
    left = [misses]

    @contextmanager
    def session() -> Any:
        with real() as s:
            if left[0] > 0:
                left[0] -= 1
                s.scalar = lambda *a, **k: None  # type: ignore[method-assign]
            yield s

    monkeypatch.setattr(store, "session", session)


def test_a_concurrent_first_insert_makes_ours_an_update(
        context: Context, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(db_url)
    expand_samples(Shift(), make_samples(4), NAMES, key=KEY, seed=0, context=context,
                   store=store)
    _racing_store(store, monkeypatch, misses=1)
    expand_samples(Shift(), make_samples(6), NAMES, key=KEY, seed=0, context=context,
                   store=store)
    with store.session() as s:
        row = s.scalars(select(Generation)).one()
        assert (row.status, row.images) == ("done", 6)


def test_a_generation_the_store_keeps_refusing_is_a_clear_error(
        context: Context, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(db_url)
    expand_samples(Shift(), make_samples(2), NAMES, key=KEY, seed=0, context=context,
                   store=store)
    _racing_store(store, monkeypatch, misses=10)
    with pytest.raises(RuntimeError, match="cannot record generation [0-9a-f]{64} in the store"):
        expand_samples(Shift(), make_samples(4), NAMES, key=KEY, seed=0, context=context,
                       store=store)
