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
called the mutated function. Results: ``mutmut results`` / ``mutmut show NAME`` in
``build/mutation``; the score line is printed at the end.
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
WORK = ROOT / "build" / "mutation"
#: Repository folder -> the folder it is imported as (pyproject's package-dir).
LAYOUT = {"sgid_bench": "sgid_bench", "leaderboard": "sgid_bench/leaderboard",
          "plugins": "sgid_bench_plugins", "tests": "tests"}

#: Core module -> (its path in the import layout, the tests that cover it).
MODULES: dict[str, tuple[str, list[str]]] = {
    "data": ("sgid_bench/data.py", ["tests/test_behaviour_splits.py", "tests/test_train.py",
                                    "tests/test_behaviour_train.py"]),
    "train": ("sgid_bench/train.py", ["tests/test_train.py", "tests/test_behaviour_train.py"]),
    "config": ("sgid_bench/config.py", ["tests/test_config.py", "tests/test_inputs_config.py",
                                        "tests/test_behaviour_hashing.py"]),
    "cache": ("sgid_bench/cache.py", ["tests/test_cache.py", "tests/test_inputs_cache.py",
                                      "tests/test_behaviour_hashing.py"]),
    "store": ("sgid_bench/store.py", ["tests/test_store.py", "tests/test_store_claims.py",
                                      "tests/test_store_access.py", "tests/test_store_spool.py",
                                      "tests/test_behaviour_store.py"]),
    "stats": ("sgid_bench/leaderboard/stats.py", ["tests/test_stats.py",
                                                  "tests/test_stats_family.py",
                                                  "tests/test_behaviour_stats.py"]),
    "table": ("sgid_bench/leaderboard/table.py", ["tests/test_leaderboard.py",
                                                  "tests/test_stats_family.py",
                                                  "tests/test_select.py"]),
    "perturbation": ("sgid_bench_plugins/perturbation.py",
                     ["tests/test_perturbation.py", "tests/test_behaviour_perturbation.py"]),
    "sgid": ("sgid_bench_plugins/sgid.py", ["tests/test_generative.py",
                                            "tests/test_gen_methods.py"]),
    "diffusion": ("sgid_bench_plugins/diffusion.py", ["tests/test_generative.py",
                                                      "tests/test_generation_seed.py"]),
}


def stage() -> None:
    """Copy the packages into ``build/mutation`` as they are imported (no mutmut cache
    is kept: a new run starts from the current sources and tests)."""
    if WORK.exists():
        shutil.rmtree(WORK)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src, dst in LAYOUT.items():
        shutil.copytree(ROOT / src, WORK / dst, ignore=ignore, dirs_exist_ok=True)


def mutmut_section(modules: list[str] | None) -> dict[str, object]:
    """``[tool.mutmut]`` of pyproject.toml, narrowed to ``modules`` and their tests."""
    section = dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"])
    if modules:
        section["only_mutate"] = [MODULES[m][0] for m in modules]
        tests = sorted({t for m in modules for t in MODULES[m][1] if (ROOT / t).exists()})
        section["pytest_add_cli_args_test_selection"] = tests
    return section


def write_pyproject(section: dict[str, object]) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    # JSON scalars and lists of strings/numbers/booleans are valid TOML values.
    lines = ["[tool.mutmut]", *(f"{k} = {json.dumps(v)}" for k, v in section.items()), ""]
    (WORK / "pyproject.toml").write_text(text.rstrip() + "\n\n" + "\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES),
                        help="mutate only this core module (repeatable); default: all")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--list", action="store_true", help="list the modules and tests")
    args = parser.parse_args()
    if args.list:
        for name, (path, tests) in MODULES.items():
            print(f"{name:13} {path:40} {' '.join(tests)}")
        return 0
    stage()
    write_pyproject(mutmut_section(args.module))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    mutmut = [sys.executable, "-m", "mutmut"]
    rc = subprocess.call([*mutmut, "run", "--max-children", str(args.max_children)],
                         cwd=WORK, env=env)
    subprocess.call([*mutmut, "export-cicd-stats"], cwd=WORK, env=env)
    stats = WORK / "mutants" / "mutmut-cicd-stats.json"
    if stats.exists():
        s = json.loads(stats.read_text())
        tested = s["killed"] + s["survived"] + s.get("timeout", 0)
        print(f"mutation score: {s['killed'] + s.get('timeout', 0)}/{tested} killed "
              f"({s['survived']} survived, {s.get('no_tests', 0)} not covered, "
              f"{s.get('suspicious', 0)} suspicious) -- details: cd {WORK} && mutmut results")
    return rc


if __name__ == "__main__":
    sys.exit(main())
