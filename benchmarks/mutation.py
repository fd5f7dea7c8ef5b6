"""Mutation testing of the core modules with mutmut (``tox -e mutation``).

mutmut names a mutant by the path of its file (``plugins/sgid.py`` -> ``plugins.sgid``)
and puts its ``mutants/`` copy first on ``sys.path``; this repository maps ``plugins/`` to
``sgid_bench_plugins`` and ``leaderboard/`` to ``sgid_bench.leaderboard`` (see
``[tool.setuptools.package-dir]``), so mutated copies there would never be imported.
This script therefore lays the packages out as they are imported, in
``build/mutation/``, with ``pyproject.toml``, and runs ``mutmut run`` there with the
``[tool.mutmut]`` settings of ``pyproject.toml``.

    python benchmarks/mutation.py                      # every core module (hours on 2 cores)
    python benchmarks/mutation.py --module perturbation --module stats
    python benchmarks/mutation.py --list               # module names and their tests

With ``--module``, only those modules are mutated and only their targeted tests
(:data:`MODULES`) are run; mutmut itself runs, for each mutant, only the tests that
called the mutated function. Each selection has its own folder,
``build/mutation/<modules>`` (``all`` without ``--module``); running the same selection
again resumes it: mutmut keeps the verdicts of mutants whose function did not change and
collects coverage again for new tests, so after adding a test only what it may change is
run again (``--fresh`` starts over). Results: ``mutmut results`` / ``mutmut show NAME`` in
that folder; the score line is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "mutation"
#: Repository folder -> the folder it is imported as (pyproject's package-dir).
LAYOUT = {"sgid_bench": "sgid_bench", "leaderboard": "sgid_bench/leaderboard",
          "plugins": "sgid_bench_plugins", "tests": "tests"}

#: Core module -> (its path in the import layout, the tests that cover it).
MODULES: dict[str, tuple[str, list[str]]] = {
    "data": ("sgid_bench/data.py", ["tests/test_behaviour_splits.py", "tests/test_train.py",
                                    "tests/test_behaviour_train.py", "tests/test_pipeline_data.py",
                                    "tests/test_inputs_datasets.py"]),
    "train": ("sgid_bench/train.py", ["tests/test_train.py", "tests/test_behaviour_train.py",
                                      "tests/test_pipeline_train.py",
                                      "tests/test_inputs_train.py"]),
    "config": ("sgid_bench/config.py", ["tests/test_config.py", "tests/test_inputs_config.py",
                                        "tests/test_behaviour_hashing.py"]),
    "cache": ("sgid_bench/cache.py", ["tests/test_cache.py", "tests/test_inputs_cache.py",
                                      "tests/test_behaviour_hashing.py"]),
    "store": ("sgid_bench/store.py", ["tests/test_store.py", "tests/test_store_claims.py",
                                      "tests/test_store_access.py", "tests/test_store_spool.py",
                                      "tests/test_behaviour_store.py", "tests/test_store_schema.py",
                                      "tests/test_inputs_memory_db.py"]),
    "stats": ("sgid_bench/leaderboard/stats.py", ["tests/test_stats.py",
                                                  "tests/test_stats_family.py",
                                                  "tests/test_behaviour_stats.py"]),
    "table": ("sgid_bench/leaderboard/table.py", ["tests/test_leaderboard.py",
                                                  "tests/test_stats_family.py",
                                                  "tests/test_select.py", "tests/test_tables.py"]),
    "perturbation": ("sgid_bench_plugins/perturbation.py",
                     ["tests/test_perturbation.py", "tests/test_behaviour_perturbation.py"]),
    "sgid": ("sgid_bench_plugins/sgid.py", ["tests/test_generative.py",
                                            "tests/test_gen_methods.py"]),
    "diffusion": ("sgid_bench_plugins/diffusion.py", ["tests/test_generative.py",
                                                      "tests/test_generation_seed.py"]),
}


def stage(work: Path, fresh: bool) -> None:
    """Copy the current sources and tests into ``work`` as they are imported; mutmut's
    own results (``work/mutants``) are kept unless ``fresh``."""
    if fresh and work.exists():
        shutil.rmtree(work)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src, dst in LAYOUT.items():
        if (work / dst).exists():
            shutil.rmtree(work / dst)  # files deleted in the repository go too
        shutil.copytree(ROOT / src, work / dst, ignore=ignore, dirs_exist_ok=True)


def mutmut_section(modules: list[str] | None) -> dict[str, object]:
    """``[tool.mutmut]`` of pyproject.toml, narrowed to ``modules`` and their tests."""
    section = dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"])
    if modules:
        section["only_mutate"] = [MODULES[m][0] for m in modules]
        tests = sorted({t for m in modules for t in MODULES[m][1] if (ROOT / t).exists()})
        section["pytest_add_cli_args_test_selection"] = tests
    return section


def write_pyproject(work: Path, section: dict[str, object]) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    # JSON scalars and lists of strings/numbers/booleans are valid TOML values.
    lines = ["[tool.mutmut]", *(f"{k} = {json.dumps(v)}" for k, v in section.items()), ""]
    (work / "pyproject.toml").write_text(text.rstrip() + "\n\n" + "\n".join(lines))


def survived(work: Path, env: dict[str, str]) -> list[str]:
    """Names of the mutants whose last verdict in ``work`` is "survived" or "no tests" (a
    test added since may now cover them)."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=work, env=env,
                         capture_output=True, text=True).stdout
    return [line.strip().rpartition(":")[0] for line in out.splitlines()
            if line.strip().endswith((": survived", ": no tests"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES),
                        help="mutate only this core module (repeatable); default: all")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fresh", action="store_true",
                        help="discard earlier results of this selection")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="after resuming, test the earlier survivors and uncovered "
                             "mutants again (new tests do not reset mutmut's verdicts)")
    parser.add_argument("--list", action="store_true", help="list the modules and tests")
    args = parser.parse_args()
    if args.list:
        for name, (path, tests) in MODULES.items():
            print(f"{name:13} {path:40} {' '.join(tests)}")
        return 0
    work = BUILD / ("-".join(sorted(set(args.module))) if args.module else "all")
    stage(work, args.fresh)
    write_pyproject(work, mutmut_section(args.module))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    mutmut = [sys.executable, "-m", "mutmut"]
    run = [*mutmut, "run", "--max-children", str(args.max_children)]
    rc = subprocess.call(run, cwd=work, env=env)
    if args.rerun_survivors:
        survivors = survived(work, env)
        if survivors:
            rc = subprocess.call([*run, *survivors], cwd=work, env=env)
    subprocess.call([*mutmut, "export-cicd-stats"], cwd=work, env=env)
    stats = work / "mutants" / "mutmut-cicd-stats.json"
    if stats.exists():
        s = json.loads(stats.read_text())
        tested = s["killed"] + s["survived"] + s.get("timeout", 0)
        print(f"mutation score: {s['killed'] + s.get('timeout', 0)}/{tested} killed "
              f"({s['survived']} survived, {s.get('no_tests', 0)} not covered, "
              f"{s.get('suspicious', 0)} suspicious) -- details: cd {work} && mutmut results")
    return rc


if __name__ == "__main__":
    sys.exit(main())
