"""Issue 12 items 5 and 19: generation and the batch size; corrupt metadata; a read-only
complete cache."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_cache import KEY, NAMES, Shift, folder, make_samples, pixels

from sgid_bench.cache import cache_path, effective_key, expand_samples, generate
from sgid_bench.config import RunSpec, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError


class PerImageShift(Shift):
    """Shift drawing each image's offset from its own generator."""

    name = "per_image_shift_test"
    per_image_generators = True

    def expand(self, images: list[Image.Image], labels: list[int], class_names: list[str],
               generator: Any) -> list[Image.Image | None]:
        import torch

        assert isinstance(generator, list)
        assert len(generator) == len(images)
        self.calls.append(list(labels))
        shifts = [int(torch.randint(1, self.amount, (1,), generator=g)) for g in generator]
        return [Image.eval(im, lambda v, k=k: (v + k) % 256)
                for im, k in zip(images, shifts, strict=True)]


def _run(aug: Shift, tmp_path: Path, batch: int, name: str) -> list[tuple[bytes, int]]:
    ctx = Context(cache_dir=tmp_path / name, gen_batch_size=batch)
    return pixels(expand_samples(aug, make_samples(10), NAMES, key=KEY, seed=0, context=ctx))


def test_per_image_generation_does_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    runs = {b: _run(PerImageShift(), tmp_path, b, f"c{b}") for b in (1, 3, 8)}
    assert runs[1] == runs[3] == runs[8]


def test_batch_generators_key_on_a_non_default_batch_size(tmp_path: Path) -> None:
    # One shared cache: batch 4 must not reuse images generated with batch 8.
    eight, four = Context(cache_dir=tmp_path, gen_batch_size=8), Context(
        cache_dir=tmp_path, gen_batch_size=4)
    assert cache_path(effective_key(Shift, KEY, eight), eight) != cache_path(
        effective_key(Shift, KEY, four), four)
    assert effective_key(Shift, KEY, eight) == KEY  # the default keeps existing caches
    assert effective_key(PerImageShift, KEY, four) == KEY
    expand_samples(Shift(), make_samples(10), NAMES, key=KEY, seed=0, context=eight)
    again = Shift()
    fresh = pixels(expand_samples(again, make_samples(10), NAMES, key=KEY, seed=0,
                                  context=four))
    assert again.calls  # generated anew, not read from batch 8's images
    assert fresh == _run(Shift(), tmp_path, 4, "clean4")


def test_config_hash_keys_on_the_batch_size_of_batch_dependent_methods() -> None:
    def chash(method: str, batch: int) -> str:
        return resolve(RunSpec(method=method), Context(gen_batch_size=batch)).config_hash

    assert chash("text2img", 8) != chash("text2img", 4)
    assert chash("none", 8) == chash("none", 4)  # no generation: the batch size is moot


@pytest.mark.parametrize("content", ["null", "[]", "\"x\"", "{\"label\": 1}", "\x00garbage"])
def test_corrupt_metadata_is_regenerated(context: Context, content: str) -> None:
    samples = make_samples(8)
    first = expand_samples(Shift(), samples, NAMES, key=KEY, seed=0, context=context)
    (folder(context) / "0000002-s0.json").write_text(content)
    again = Shift()
    result = generate(again, samples, NAMES, key=KEY, seed=0, context=context)
    assert result.stats.corrupted == 1
    assert result.stats.generated == 1  # only image 2, redone with its batch
    assert again.calls == [[0, 1, 2, 0]]
    assert pixels(result.samples()) == pixels(first)


def test_null_fit_state_is_fitted_again(context: Context) -> None:
    class Fitted(Shift):
        def fit(self, samples: Any, class_names: Any, generator: Any) -> dict[str, int]:
            return {"n": len(samples)}

        def load_state(self, state: dict[str, int]) -> None:
            self.n = state["n"]

    expand_samples(Fitted(), make_samples(4), NAMES, key=KEY, seed=0, context=context)
    root = folder(context)
    (root / "fit-s0.json").write_text("null")
    (root / "0000000-s0.json").unlink()
    expand_samples(Fitted(), make_samples(4), NAMES, key=KEY, seed=0, context=context)
    assert json.loads((root / "fit-s0.json").read_text()) == {"n": 4}


def _read_only(path: Path) -> None:
    for here, _, files in os.walk(path):
        for name in files:
            os.chmod(Path(here) / name, stat.S_IRUSR)
        os.chmod(here, stat.S_IRUSR | stat.S_IXUSR)


def _writable(path: Path) -> None:
    for here, _, _ in os.walk(path):
        os.chmod(here, stat.S_IRWXU)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_complete_cache_is_read_and_incomplete_one_is_a_clear_error(
        tmp_path: Path) -> None:
    ctx = Context(cache_dir=tmp_path / "cache", gen_batch_size=4)
    first = expand_samples(Shift(), make_samples(8), NAMES, key=KEY, seed=0, context=ctx)
    _read_only(tmp_path / "cache")
    try:
        again = expand_samples(Shift(), make_samples(8), NAMES, key=KEY, seed=0, context=ctx)
        assert pixels(again) == pixels(first)
        with pytest.raises(UserError, match="cannot be written .* misses 2 image"):
            expand_samples(Shift(), make_samples(10), NAMES, key=KEY, seed=0, context=ctx)
    finally:
        _writable(tmp_path / "cache")


def test_generation_lock_on_a_read_only_cache_goes_on_without_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sgid_bench import executors

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", refuse)
    entered = []
    with executors.generation_lock(Context(cache_dir=tmp_path / "ro"), "k"):
        entered.append(True)
    assert entered == [True]


def test_complete_cache_is_read_without_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Any write raises, as on a read-only file system (this also holds when tests run as
    # root, where chmod does not stop writes).
    from sgid_bench import cache

    ctx = Context(cache_dir=tmp_path / "cache", gen_batch_size=4)
    first = expand_samples(Shift(), make_samples(8), NAMES, key=KEY, seed=0, context=ctx)

    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(cache, "_atomic_write", read_only)
    monkeypatch.setattr(Path, "mkdir", read_only)
    monkeypatch.setattr(cache.tempfile, "TemporaryFile", read_only)
    again = expand_samples(Shift(), make_samples(8), NAMES, key=KEY, seed=0, context=ctx)
    assert pixels(again) == pixels(first)
    with pytest.raises(UserError, match="cannot be written .* misses 2 image"):
        expand_samples(Shift(), make_samples(10), NAMES, key=KEY, seed=0, context=ctx)


def test_a_batch_size_of_one_generates_one_image_per_call(tmp_path: Path) -> None:
    ctx = Context(cache_dir=tmp_path, gen_batch_size=1)
    key = effective_key(Shift, KEY, ctx)
    assert key == {**KEY, "gen_batch_size": 1}
    # Nothing below one: a zero or negative batch size means one image a call.
    assert effective_key(Shift, KEY, Context(cache_dir=tmp_path, gen_batch_size=0)) == key
    aug = Shift()
    result = generate(aug, make_samples(3), NAMES, key=KEY, seed=0, context=ctx)
    assert aug.calls == [[0], [1], [2]]
    assert result.path == cache_path(key, ctx)
    zero = Shift()
    generate(zero, make_samples(3), NAMES, key=KEY, seed=0,
             context=Context(cache_dir=tmp_path, gen_batch_size=0))
    assert zero.calls == []  # the same images as batch size 1: read from the cache


class Streams(Shift):
    """Records the seed of every generator expand is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seeds: list[Any] = []

    def expand(self, images: list[Image.Image], labels: list[int], class_names: list[str],
               generator: Any) -> list[Image.Image | None]:
        self.seeds.append([g.initial_seed() for g in generator]
                          if isinstance(generator, list) else generator.initial_seed())
        return list(images)


class PerImageStreams(Streams):
    per_image_generators = True


def test_generation_streams_are_derived_from_seed_and_index(tmp_path: Path) -> None:
    # The streams are part of what a cache folder holds, and its key does not name the
    # code version: a generation resumed by another version must draw the same streams,
    # or one folder would mix images of two. Batch generators are seeded from
    # ("expand", seed, first index of the batch), per-image ones from ("expand", seed,
    # index) -- the documented (seed, index) seeding.
    from sgid_bench.rng import derive_seed

    ctx = Context(cache_dir=tmp_path, gen_batch_size=4)
    batch = Streams()
    generate(batch, make_samples(10), NAMES, key=KEY, seed=3, context=ctx)
    assert batch.seeds == [derive_seed("expand", 3, b) for b in (0, 4, 8)]
    per_image = PerImageStreams()
    generate(per_image, make_samples(10), NAMES, key=KEY, seed=3, context=ctx)
    assert per_image.seeds == [[derive_seed("expand", 3, i) for i in range(b, min(b + 4, 10))]
                               for b in (0, 4, 8)]


def test_per_image_generation_depends_on_the_seed(tmp_path: Path) -> None:
    def run(seed: int) -> list[tuple[bytes, int]]:
        ctx = Context(cache_dir=tmp_path / f"s{seed}", gen_batch_size=4)
        return pixels(expand_samples(PerImageShift(), make_samples(6), NAMES, key=KEY,
                                     seed=seed, context=ctx))

    assert run(0) != run(1)


def test_a_read_only_cache_folder_is_found_before_any_model_is_loaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the cache is read-only (a shared, mounted cache); the temp folder is writable.
    import errno
    import tempfile

    cache_dir = tmp_path / "cache"
    real = tempfile.TemporaryFile

    def temporary_file(*args: Any, dir: Any = None, **kwargs: Any) -> Any:
        if dir is not None and Path(dir).is_relative_to(cache_dir):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    aug = Shift()
    with pytest.raises(UserError, match=r"generation cache .* cannot be written \(Read-only "
                                        r"file system\) and misses 4 image\(s\): make it "
                                        r"writable or pass another --cache-dir"):
        expand_samples(aug, make_samples(4), NAMES, key=KEY, seed=0,
                       context=Context(cache_dir=cache_dir, gen_batch_size=4))
    assert (aug.setups, aug.calls) == (0, [])
