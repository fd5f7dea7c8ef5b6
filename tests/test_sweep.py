"""Sweep files, planning against the store, shared generation, the local and Ray executors
and the ``sweep`` command."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

import sgid_bench
from sgid_bench.config import RunSpec
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.executors import Settings, run_local, run_ray
from sgid_bench.plugins import Entry, registry
from sgid_bench.store import DONE, FAILED, Store
from sgid_bench.sweep import (
    BUSY,
    DONE_BEFORE,
    FAILED_BEFORE,
    TODO,
    expand,
    find_sweep_file,
    load_sweep,
    make_plan,
)
from sgid_bench.sweep_command import shareable_url, sweep

REFERENCE = Path("/work/shared/reference/sgid_paper_table1.csv")
#: Small runs: one epoch on 10 train / 2 test images per class of the embedded dataset.
TINY = """
[params]
train.epochs = 1
shapes.train_per_class = 10
shapes.test_per_class = 2
"""


def write(path: Path, methods: list[str], seeds: Any = 1, backbones: tuple[str, ...] = (
        "clip_vit",), extra: str = TINY) -> Path:
    path.write_text(f"[sweep]\nmethods = {methods!r}\nbackbones = {list(backbones)!r}\n"
                    f"datasets = ['shapes']\nseeds = {seeds!r}\n{extra}")
    return path


class Mirror(sgid_bench.Augmenter):
    """An expand stage that is cheap to run: the mirror image of each input."""

    name = "mirror"
    group = "generative"
    calls: ClassVar[Counter[str]] = Counter()

    def __init__(self, flip: bool = True) -> None:
        self.flip = flip

    def expand(self, images: list[Any], labels: list[int], class_names: list[str],
               generator: Any) -> list[Any]:
        from PIL import ImageOps

        Mirror.calls["images"] += len(images)
        return [ImageOps.mirror(im) if self.flip else im.copy() for im in images]


class Broken(sgid_bench.Augmenter):
    """An expand stage that always fails."""

    name = "broken"
    group = "generative"

    def expand(self, images: list[Any], labels: list[int], class_names: list[str],
               generator: Any) -> list[Any]:
        raise RuntimeError("the generator exploded")


class NaNMix(sgid_bench.Augmenter):
    """A mix stage whose images are NaN: the loss diverges at once."""

    name = "nan_mix"

    def mix(self, images: Any, targets: Any, generator: Any) -> tuple[Any, Any]:
        return images * float("nan"), targets


@pytest.fixture
def test_plugins(monkeypatch: pytest.MonkeyPatch) -> type[Mirror]:
    """Mirror, Broken and NaNMix registered in this process (Ray workers do not see
    them)."""
    augmenters = registry().entries["augmenter"]
    monkeypatch.setitem(augmenters, "mirror", Entry(Mirror, "tests"))
    monkeypatch.setitem(augmenters, "broken", Entry(Broken, "tests"))
    monkeypatch.setitem(augmenters, "nan_mix", Entry(NaNMix, "tests"))
    Mirror.calls.clear()
    return Mirror


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture
def context() -> Context:
    return Context(profile="tiny", device="cpu")


# -- sweep files ---------------------------------------------------------------------------


def test_scoped_params_and_grid(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", ["none", "cutmix"], seeds=2, extra="""
[params]
"train.epochs" = 1
cutmix.p = 1.0
[grid]
cutmix.alpha = [0.5, 2.0]
""")
    sw = load_sweep(path)
    assert sw.seeds == [0, 1]
    assert sw.params == {"train.epochs": 1, "cutmix.p": 1.0}  # both TOML spellings
    specs = expand(sw)
    # none: 2 seeds; cutmix: 2 alphas x 2 seeds. cutmix's params never reach "none".
    assert [s.params for s in specs if s.method == "none"] == [["train.epochs=1"]] * 2
    cutmix = sorted((s.seed, tuple(s.params)) for s in specs if s.method == "cutmix")
    assert cutmix == [(seed, ("train.epochs=1", "cutmix.p=1.0", f"cutmix.alpha={a}"))
                      for seed in (0, 1) for a in (0.5, 2.0)]


@pytest.mark.parametrize(("text", "message"), [
    ("[sweep]\nmethods = 'none'\n", "methods must be a non-empty list"),
    ("[sweep]\nmethod = ['none']\n", "unknown keys method"),
    ("[sweep]\nprofile = 'fast'\n", "unknown profile 'fast'"),
    ("[sweep]\nseeds = [0, 'a']\n", "seeds must be a list of integers"),
    ("[sweep]\n[grid]\n'train.epochs' = 3\n", "must be a non-empty list"),
    ("[sweep]\n[resources]\nnum_gpus = 'one'\n", "num_gpus are numbers"),
    ("[sweeps]\n", "unknown tables sweeps"),
    ("[sweep\n", "invalid TOML"),
])
def test_bad_sweep_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_sweep(path)


def test_unknown_sweep_name_lists_the_shipped_ones() -> None:
    with pytest.raises(UserError, match="paper, published, quick"):
        find_sweep_file("nope")


def test_paper_sweep_is_the_papers_grid() -> None:
    sw = load_sweep(find_sweep_file("paper"))
    with REFERENCE.open() as f:
        rows = list(csv.DictReader(f))
    assert sw.profile == "paper"
    assert sorted(sw.methods) == sorted({r["method"] for r in rows})
    assert sorted(sw.backbones) == sorted({r["backbone"] for r in rows})
    assert sorted(sw.datasets) == sorted({r["dataset"] for r in rows} - {"average"})
    assert len(sw.seeds) == 5
    # sgid.strength is selected on validation from [0.3, 0.5, 0.7] for the 4 methods with
    # an sgid stage: 2 more settings each.
    assert sw.select == {"sgid.strength": [0.3, 0.5, 0.7]}
    assert len(expand(sw)) == (12 + 4 * 2) * 3 * 7 * 5


def test_paper_dry_run_prints_the_plan_offline(runner: CliRunner, db_url: str) -> None:
    result = runner.invoke(sweep, ["paper", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert ("2100 runs: 12 methods x 3 backbones x 7 datasets (252 cells) x 5 seeds, "
            "select over sgid.strength") in result.output
    assert "to run 2100" in result.output
    # Per dataset: sgid at 3 strengths (shared by sgid+moex and sgid+randaugment),
    # text2img+sgid at 3 strengths, text2img, diversecaption, instructpix2pix: 9, and
    # generation.seed=per-run gives each of the 5 seeds its own.
    assert "generation jobs: 315 (0 already cached), shared by 1575 training runs" in (
        result.output)
    store = Store(db_url)
    assert store.runs(status=None) == []  # nothing ran
    store.close()


# -- planning ------------------------------------------------------------------------------


def _fields(spec: RunSpec) -> dict[str, Any]:
    return {"method": spec.method, "backbone": spec.backbone, "dataset": spec.dataset,
            "profile": spec.profile, "config": {}, "models": {}, "tiny_models": True,
            "versions": {}, "git_revision": None}


def test_plan_skips_done_and_retries_failed_only_on_resume(
        tmp_path: Path, store: Store, context: Context) -> None:
    sw = load_sweep(write(tmp_path / "s.toml", ["none", "cutmix"], seeds=2))
    plan = make_plan(sw, store, context)
    assert [j.state for j in plan.jobs] == [TODO] * 4
    done, failed, running = plan.jobs[0], plan.jobs[1], plan.jobs[2]
    store.finish(store.claim(done.config_hash, done.spec.seed, **_fields(done.spec)), top1=1.0)
    store.fail(store.claim(failed.config_hash, failed.spec.seed, **_fields(failed.spec)), "x")
    store.claim(running.config_hash, running.spec.seed, **_fields(running.spec))  # alive: us

    states = [j.state for j in make_plan(sw, store, context).jobs]
    assert states == [DONE_BEFORE, FAILED_BEFORE, BUSY, TODO]
    assert [j.state for j in make_plan(sw, store, context, resume=True).jobs] == [
        DONE_BEFORE, TODO, BUSY, TODO]
    assert [j.state for j in make_plan(sw, store, context, force=True).jobs] == [
        TODO, TODO, BUSY, TODO]


def test_plan_removes_duplicate_configs(tmp_path: Path, store: Store, context: Context) -> None:
    # 0 and 0.0 are the same label smoothing: the same config hash, one run per seed.
    path = write(tmp_path / "s.toml", ["none"], seeds=2,
                 extra=TINY + "[grid]\ntrain.label_smoothing = [0, 0.0, 0.1]\n")
    plan = make_plan(load_sweep(path), store, context)
    assert (len(plan.jobs), plan.duplicates) == (4, 2)
    assert len({(j.config_hash, j.spec.seed) for j in plan.jobs}) == 4


def test_plan_names_the_grid_point_that_does_not_resolve(
        tmp_path: Path, store: Store, context: Context) -> None:
    path = write(tmp_path / "s.toml", ["none", "cutmix"], extra="[params]\nalpha = 2.0\n")
    with pytest.raises(UserError, match="none / clip_vit / shapes alpha=2.0: unknown parameter"):
        make_plan(load_sweep(path), store, context)


def test_generation_is_planned_once_and_chains_wait_for_their_upstream(
        tmp_path: Path, store: Store, context: Context, test_plugins: Any) -> None:
    path = write(tmp_path / "s.toml", ["mirror", "mirror+cutmix", "none"], seeds=2,
                 backbones=("clip_vit", "resnet50"),
                 extra=TINY + "[grid]\nmirror.flip = [true, false]\n")
    plan = make_plan(load_sweep(path), store, context)
    gens = list(plan.generations.values())
    # One generation per flip value, shared by both backbones, seeds and methods.
    assert len(gens) == 2
    assert [g.runs for g in gens] == [8, 8]
    assert {j.generation for j in plan.jobs if j.spec.method == "none"} == {None}


def test_upstream_generation_is_scheduled_first(
        tmp_path: Path, store: Store, context: Context, test_plugins: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Mirror2(Mirror):
        name = "mirror2"

    monkeypatch.setitem(registry().entries["augmenter"], "mirror2", Entry(Mirror2, "tests"))
    path = write(tmp_path / "s.toml", ["mirror+mirror2", "mirror"])
    plan = make_plan(load_sweep(path), store, context)
    (first_id, first), (_, second) = plan.generations.items()
    assert (first.spec.method, second.spec.method) == ("mirror", "mirror+mirror2")
    assert (first.after, second.after) == (None, first_id)
    assert first_id == f"{first.key}-s{first.seed}"
    assert second.chain[0] == first.key


# -- executing -----------------------------------------------------------------------------


def test_local_sweep_generates_once_and_shares_the_images(
        tmp_path: Path, runner: CliRunner, db_url: str, test_plugins: type[Mirror]) -> None:
    path = write(tmp_path / "s.toml", ["mirror", "mirror+cutmix"], seeds=2)
    result = runner.invoke(sweep, [str(path)])
    assert result.exit_code == 0, result.output
    assert "4 done, 0 failed" in result.output
    store = Store(db_url)
    runs = store.runs()
    assert len(runs) == 4
    train_images = runs[0].extra["train_images"]
    # Four training runs, one generation: each train image was mirrored exactly once.
    assert test_plugins.calls["images"] == train_images
    assert {r.extra["generated_images"] for r in runs} == {train_images}
    # The cache knows it: a forced dry run plans the generation as cached.
    again = runner.invoke(sweep, [str(path), "--dry-run", "--force"])
    assert "generation jobs: 1 (1 already cached), shared by 4 training runs" in again.output
    store.close()


def test_rerun_skips_finished_runs(tmp_path: Path, runner: CliRunner, db_url: str) -> None:
    path = write(tmp_path / "s.toml", ["none"], seeds=2)
    assert runner.invoke(sweep, [str(path)]).exit_code == 0
    store = Store(db_url)
    before = {(r.seed, r.finished_at) for r in store.runs()}
    result = runner.invoke(sweep, [str(path)])
    assert result.exit_code == 0, result.output
    assert "already done 2, failed earlier 0, running elsewhere 0, to run 0" in result.output
    assert {(r.seed, r.finished_at) for r in store.runs()} == before
    store.close()


def test_failed_run_is_recorded_and_the_sweep_goes_on(
        tmp_path: Path, runner: CliRunner, db_url: str, test_plugins: Any) -> None:
    # A mix stage that makes the loss NaN fails while training (issue 12 item 15).
    path = write(tmp_path / "s.toml", ["nan_mix", "none"])
    result = runner.invoke(sweep, [str(path), "--db", db_url, "--threads", "1"])
    assert result.exit_code == 1
    assert "1 done, 1 failed" in result.output
    assert "diverged at epoch" in result.output, result.output
    # The hint repeats the user's own options, so the retry goes to the same store.
    assert f"sgid-bench sweep {path} --db {db_url} --threads 1 --resume" in (
        " ".join(result.output.split()))
    store = Store(db_url)
    (failed,) = store.runs(status=FAILED)
    assert "lower the learning rate" in failed.error
    assert len(store.runs(status=DONE)) == 1
    # Without --resume the failure stays; with it, the run is tried again.
    assert "failed earlier 1, running elsewhere 0, to run 0" in runner.invoke(
        sweep, [str(path)]).output
    retried = runner.invoke(sweep, [str(path), "--resume"])
    assert "0 done, 1 failed" in retried.output
    store.close()


def test_failed_generation_fails_its_runs_without_running_them(
        tmp_path: Path, runner: CliRunner, db_url: str, test_plugins: Any) -> None:
    path = write(tmp_path / "s.toml", ["broken", "broken+cutmix", "none"])
    result = runner.invoke(sweep, [str(path)])
    assert result.exit_code == 1
    assert "1 done, 2 failed" in result.output
    assert "1 generation(s), 1 failed" in result.output
    store = Store(db_url)
    errors = {r.method: r.error for r in store.runs(status=FAILED)}
    assert set(errors) == {"broken", "broken+cutmix"}
    assert all("generation failed: RuntimeError: the generator exploded" in e
               for e in errors.values())
    store.close()


def test_ray_and_local_give_identical_results_per_seed(
        tmp_path: Path, context: Context) -> None:
    path = write(tmp_path / "s.toml", ["none"], seeds=2)
    results = {}
    for executor in ("local", "ray"):
        url = f"sqlite:///{tmp_path / executor}.db"
        store = Store(url)
        plan = make_plan(load_sweep(path), store, context)
        settings = Settings(url, context)
        if executor == "ray":
            report = run_ray(plan, settings, plan.sweep.resources, num_cpus=2)
        else:
            report = run_local(plan, settings)
        assert Counter(o.status for _, o in report.outcomes) == {DONE: 2}
        results[executor] = {(r.seed, r.config_hash): (r.top1, r.per_class, r.loss)
                             for r in store.runs()}
        store.close()
    assert len(results["ray"]) == 2
    for key, (top1, per_class, loss) in results["local"].items():
        assert results["ray"][key][:2] == (top1, per_class)  # identical predictions
        # A Ray task computes with its own thread count (num_cpus): float sums may
        # differ in the last digits.
        assert results["ray"][key][2] == pytest.approx(loss, rel=1e-5)


# -- command details -----------------------------------------------------------------------


def test_shareable_url(tmp_path: Path) -> None:
    assert shareable_url("sqlite:///r.db", "ray") == f"sqlite:///{tmp_path / 'r.db'}"
    url = "postgresql+psycopg://u:pw@db/sgid"
    assert shareable_url(url, "ray") == url
    with pytest.raises(UserError, match="in-memory"):
        shareable_url("sqlite://", "ray")


def test_address_needs_ray(runner: CliRunner) -> None:
    result = runner.invoke(sweep, ["quick", "--address", "auto"])
    assert result.exit_code == 1
    assert "Error: --address needs --executor ray" in result.output


def test_live_view_counts_and_eta(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from sgid_bench.executors import GenResult
    from sgid_bench.run import Outcome
    from sgid_bench.sweep import GenJob, Job
    from sgid_bench.sweep_command import LiveView

    out = io.StringIO()
    spec = RunSpec("sgid", "vit", "shapes", 0)
    jobs = [Job(spec, "a"), Job(spec, "b"), Job(spec, "c")]
    gen = GenJob("k", spec)
    with LiveView(Console(file=out, force_terminal=True, width=150), 3, 1) as view:
        view("slots", None, 2)
        for item in (gen, *jobs):
            view("start", item, None)
        view("finish", gen, GenResult("k", 4, 1.0))
        view("finish", jobs[0], Outcome(DONE, "a", 1, {"top1": 50.0}))
        view("finish", jobs[1], Outcome(FAILED, "b", 2, error="boom"))
        fields = view.progress.tasks[1].fields
        assert (fields["done"], fields["failed"], fields["running"]) == (1, 1, 1)
        assert view.progress.tasks[1].completed == 2
    assert "runs" in out.getvalue()
    assert "eta" in out.getvalue()

    log = io.StringIO()
    quiet = LiveView(Console(file=log, force_terminal=False), 1, 0)
    assert not quiet.live  # not a terminal: one line per finished run on stderr instead
