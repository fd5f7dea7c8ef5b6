"""Daily use (issue 14): threads, reproducible numbers, progress off a terminal, the
end-of-run summary, result files, `runs` / `runs show`, did-you-mean, `list --params`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from sgid_bench.cli import RunProgress, main
from sgid_bench.rng import default_threads
from sgid_bench.store import DONE, Store

#: A tiny run in a few seconds: 2 epochs on 3 training images per class.
SMALL = ["--param", "train.epochs=2", "--param", "train_per_class=3",
         "--param", "test_per_class=2"]


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(main, list(args), catch_exceptions=False)


def stored(status: str | None = None, **filters: object) -> list:
    return list(Store(os.environ["SGID_BENCH_DB"]).runs(status, **filters))


def test_threads_are_recorded_but_do_not_change_the_config_hash(runner: CliRunner) -> None:
    first = invoke(runner, "run", "--threads", "2", "--seed", "0", *SMALL)
    second = invoke(runner, "run", "--threads", "1", "--seed", "1", *SMALL)
    assert first.exit_code == second.exit_code == 0, first.output + second.output
    by_seed = {r.seed: r for r in stored()}
    assert by_seed[0].config_hash == by_seed[1].config_hash
    assert by_seed[0].extra["threads"] == 2
    assert by_seed[1].extra["threads"] == 1
    assert "deterministic" in by_seed[0].extra["determinism"]


def test_default_threads_never_oversubscribe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads("quick", "cpu") == default_threads("tiny", "cpu") == 1
    assert default_threads("paper", "cuda") == 1
    assert default_threads("paper", "cpu") == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # what Ray and slurm set per worker
    assert default_threads("paper", "cpu") == default_threads("tiny", "cpu") == 3


def test_the_same_config_and_seed_gives_identical_numbers(runner: CliRunner) -> None:
    assert invoke(runner, "run", "--method", "randaugment", *SMALL).exit_code == 0
    (first,) = stored()
    top1, loss, history = first.top1, first.loss, first.extra["history"]
    assert invoke(runner, "run", "--method", "randaugment", "--force", *SMALL).exit_code == 0
    (again,) = stored()
    assert again.finished_at != first.finished_at  # it really ran again
    assert (again.top1, again.loss, again.extra["history"]) == (top1, loss, history)
    assert torch.are_deterministic_algorithms_enabled()


def test_each_run_is_written_as_json_in_the_harness_layout(runner: CliRunner,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = invoke(runner, "run", "--seed", "3", "--output-dir", str(out), *SMALL)
    assert result.exit_code == 0, result.output
    (row,) = stored()
    path = out / "resnet50" / "shapes" / "none" / row.config_hash[:12] / "seed3.json"
    record = json.loads(path.read_text())
    assert record["config_hash"] == row.config_hash
    assert record["config"] == row.config
    assert record["metrics"]["top1"] == row.top1
    assert record["metrics"]["threads"] == 1
    assert [h["epoch"] for h in record["history"]] == [0, 1]
    assert record["versions"] == row.versions
    assert record["versions"]["torch"]
    assert record["models"] == {"resnet50.backbone": "tiny/resnet50"}
    assert [p.name for p in path.parent.iterdir()] == ["seed3.json"]  # no temp file left


def test_the_default_output_dir_is_under_the_working_directory(runner: CliRunner,
                                                               tmp_path: Path) -> None:
    assert invoke(runner, "run", *SMALL).exit_code == 0
    assert len(list((tmp_path / "sgid-bench-results").rglob("seed0.json"))) == 1


def test_a_multi_seed_run_ends_with_a_summary_and_a_paired_test(runner: CliRunner) -> None:
    from scipy.stats import ttest_rel

    seeds = ["--seed", "0", "--seed", "1", "--seed", "2"]
    alone = invoke(runner, "run", "--method", "randaugment", *seeds, *SMALL)
    assert "summary of the seeds just run" in alone.stdout
    assert "Hint:" in alone.stderr
    assert "--method none" in alone.stderr
    invoke(runner, "run", "--method", "none", *seeds, *SMALL)
    again = invoke(runner, "run", "--method", "randaugment", *seeds, *SMALL)
    method = {r.seed: r.top1 for r in stored(method="randaugment")}
    none = {r.seed: r.top1 for r in stored(method="none")}
    p = ttest_rel([method[s] for s in range(3)], [none[s] for s in range(3)]).pvalue
    gain = sum(method[s] - none[s] for s in range(3)) / 3
    assert f"{gain:+.2f} (n=3)" in again.stdout
    assert f"{p:.3g}" in again.stdout
    assert "8.33" in again.stdout  # chance: 12 classes
    assert "Hint:" not in again.stderr


def test_a_none_run_of_another_recipe_is_not_a_baseline(runner: CliRunner) -> None:
    invoke(runner, "run", "--method", "none", "--seed", "0", "--seed", "1", *SMALL,
           "--param", "train.lr=0.01")
    result = invoke(runner, "run", "--method", "randaugment", "--seed", "0", "--seed", "1",
                    *SMALL)
    assert "Hint:" in result.stderr


def test_runs_lists_failures_with_their_error_and_show_reads_a_hash_back(
        runner: CliRunner) -> None:
    runner.invoke(main, ["run", "--method", "mixup", "--param", "alpha=-1", *SMALL])
    invoke(runner, "run", *SMALL)
    failed = invoke(runner, "runs", "--status", "failed")
    assert "mixup" in failed.stdout
    assert "ValueError" in failed.stdout
    assert "none" not in failed.stdout
    listing = invoke(runner, "runs", "list")
    assert "mixup" in listing.stdout
    assert "done" in listing.stdout
    (done,) = stored(status=DONE)
    shown = invoke(runner, "runs", "show", f"#{done.config_hash[:7]}")
    assert shown.exit_code == 0
    assert done.config_hash in shown.stdout
    assert json.loads(shown.stdout[shown.stdout.index("{"):]) == done.config
    missing = runner.invoke(main, ["runs", "show", "zzzz"])
    assert missing.exit_code == 1
    assert "no stored run" in missing.output


def test_runs_show_refuses_an_ambiguous_prefix(runner: CliRunner) -> None:
    invoke(runner, "run", *SMALL)
    invoke(runner, "run", "--method", "randaugment", *SMALL)
    result = runner.invoke(main, ["runs", "show", ""])
    assert result.exit_code == 1
    hashes = {r.config_hash for r in stored()}
    common = os.path.commonprefix(sorted(hashes))
    result = runner.invoke(main, ["runs", "show", common or "#"])
    assert result.exit_code == 1
    assert "matches 2 configs" in result.output or "give a config hash" in result.output


def test_progress_off_a_terminal_is_one_timestamped_line_per_epoch(runner: CliRunner) -> None:
    result = invoke(runner, "run", *SMALL)
    lines = [line for line in result.stderr.splitlines() if " epoch " in line]
    assert len(lines) == 2
    assert lines[0][:4].isdigit()
    assert "epoch 1/2" in lines[0]
    assert "images/s" in lines[0]
    assert "val " in lines[1]
    assert "loss " in lines[1]
    assert "eta " in lines[1]
    quiet = invoke(runner, "run", "--force", "--quiet", *SMALL)
    assert quiet.stderr == ""
    assert "top-1" in quiet.stdout


def test_the_batches_bar_restarts_every_epoch() -> None:
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with RunProgress(console, "run") as listener:
        assert listener is not None
        listener("phase", 0, 0, phase="train")
        for epoch in range(2):
            for step in range(3):
                listener("batch", step + 1, 3, epoch=epoch, images_per_s=10.0)
            if epoch == 0:
                first = listener.bar.tasks[listener.tasks["batch"]]
                assert first.finished
            listener("epoch", epoch + 1, 2, train_loss=1.0, val_top1=50.0, images_per_s=9.0)
            if epoch == 0:
                listener("batch", 1, 3, epoch=1, images_per_s=10.0)
                task = listener.bar.tasks[listener.tasks["batch"]]
                assert task.completed == 1
                assert not task.finished
        epochs = listener.bar.tasks[listener.tasks["epoch"]]
        assert epochs.completed == 2
        assert "val 50.00%" in epochs.fields["info"]


@pytest.mark.parametrize(("args", "guess"), [
    (["--method", "SGID"], "did you mean 'sgid'?"),
    (["--method", "random-erasing"], "did you mean 'random_erasing'?"),
    (["--method", "none+randaugmnt"], "did you mean 'randaugment'?"),
    (["--backbone", "ResNet50"], "did you mean 'resnet50'?"),
    (["--dataset", "Shapes"], "did you mean 'shapes'?"),
])
def test_unknown_names_suggest_the_known_one(runner: CliRunner, args: list[str],
                                             guess: str) -> None:
    result = runner.invoke(main, ["run", *args])
    assert result.exit_code == 1
    assert guess in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_bad_name_fails_before_torch_is_imported(tmp_path: Path) -> None:
    code = ("import sys\nfrom sgid_bench.cli import main\n"
            "try:\n    main(['run', '--method', 'SGID'])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert "exit 1 False" in done.stdout, done.stdout + done.stderr
    assert "did you mean 'sgid'?" in done.stderr


def test_list_params_shows_defaults_and_the_papers_values(runner: CliRunner) -> None:
    result = invoke(runner, "list", "--params")
    assert result.exit_code == 0
    line = next(x for x in result.stdout.splitlines() if "│ strength" in x and "sgid " in x)
    assert "0.5" in line
    assert "stanford_cars" in result.stdout  # a per-dataset paper value (Table 8)


def test_the_summary_uses_every_seed_when_the_baseline_pairs_only_in_part() -> None:
    from rich.console import Console
    from scipy.stats import ttest_ind
    from test_leaderboard import add_run

    from sgid_bench.summary import render, summarize

    store = Store(os.environ["SGID_BENCH_DB"])
    none = {0: 60.0, 1: 62.5, 2: 61.0}
    method = {0: 66.0, 1: 67.5, 3: 65.0, 4: 68.5}  # shares seeds 0 and 1 only
    for seed, value in none.items():
        add_run(store, "none", "shapes", seed, value)
    for seed, value in method.items():
        add_run(store, "randaugment", "shapes", seed, value)
    (line,) = summarize(list(store.runs(DONE, method="randaugment")), store)
    ref = ttest_ind(list(method.values()), list(none.values()), equal_var=False)
    assert line.gain is not None
    assert line.gain.test == "Welch t"
    assert line.gain.n == 7  # every result of both sides, none dropped
    assert line.gain.p == pytest.approx(ref.pvalue)
    assert line.gain.mean == pytest.approx(66.75 - 61.1666666)
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render([line]))
    text = console.export_text()
    assert f"{ref.pvalue:.3g} (Welch t)" in text
    assert "+5.58 (n=7)" in text
    assert line.hint is None


def test_the_summary_says_why_a_gain_is_untested_and_what_to_run() -> None:
    from test_leaderboard import add_run

    from sgid_bench.summary import summarize

    store = Store(os.environ["SGID_BENCH_DB"])
    add_run(store, "none", "shapes", 0, 60.0)
    for seed in (0, 1):
        add_run(store, "randaugment", "shapes", seed, 65.0 + seed)
    (line,) = summarize(list(store.runs(DONE, method="randaugment")), store)
    assert line.gain is not None
    assert line.gain.p is None
    assert line.gain.reason == "too few seeds"
    assert line.hint is not None
    assert "--method none" in line.hint
    assert "--seed 1" in line.hint
    assert "--seed 0" not in line.hint
