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
