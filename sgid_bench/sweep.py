"""Sweeps: a TOML grid over methods, backbones, datasets, seeds and params, expanded to
run specs, de-duplicated by (config hash, seed) and planned against the results store.

Sweep file format (see ``sgid_bench/sweeps/paper.toml`` and ``quick.toml``)::

    [sweep]
    name = "demo"                    # optional, shown in the plan
    profile = "quick"                # quick | tiny | paper
    methods = ["none", "sgid", "sgid+randaugment"]
    backbones = ["resnet50"]
    datasets = ["shapes"]
    seeds = [0, 1, 2]                # or a count: seeds = 3 means 0, 1, 2

    [params]                         # --param for every run that has the component
    "train.epochs" = 2               # component.key = value; "train" is the recipe
    sgid.strength = 0.5              # only runs whose method includes sgid get this one

    [grid]                           # lists: one run per combination (cartesian product)
    "moex.p" = [0.5, 1.0]            # expanded only for runs that include moex

    [select]                         # like [grid], but a setting chosen on validation:
    sgid.strength = [0.3, 0.5, 0.7]  # the leaderboard (--select-by val, its default) shows
                                     # per dataset the value with the best validation mean

    [resources]                      # per task on Ray (the local executor ignores them)
    num_cpus = 1
    num_gpus = 0                     # e.g. 1 or 0.5 on a GPU cluster
    max_retries = 1                  # Ray retries of a task whose worker died

A key with a component prefix (a method part, the backbone or dataset name, ``backbone``,
``dataset`` or ``train``) applies only to runs that include that component; a bare key
applies to every run and must be taken by exactly one of its components.

Planning: finished (config hash, seed) pairs are skipped; runs that failed (or were
interrupted) earlier are retried only with ``resume``; ``force`` re-runs everything.
Generation (the expand stages) is planned once per distinct generation key and shared by
every training run that needs it.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sgid_bench.config import (
    DEFAULT_DATASETS,
    RunSpec,
    config_hash,
    generation_seed,
    resolve,
    split_method,
)
from sgid_bench.context import PROFILES, Context, default_profile
from sgid_bench.errors import UserError
from sgid_bench.store import DONE, FAILED, RUNNING, Store

SWEEP_KEYS = ("name", "profile", "methods", "backbones", "datasets", "seeds")
TABLES = ("sweep", "params", "grid", "select", "resources")
#: Components every run has, besides its method parts, backbone and dataset names.
ALWAYS = ("train", "backbone", "dataset", "generation")
# Job states in a plan.
TODO, DONE_BEFORE, FAILED_BEFORE, BUSY = "to run", "done", "failed earlier", "running"


@dataclass
class Resources:
    """What each Ray task asks the scheduler for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 1


@dataclass
class Sweep:
    """A parsed sweep file."""

    name: str
    profile: str
    methods: list[str]
    backbones: list[str]
    datasets: list[str]
    seeds: list[int]
    params: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    grid: dict[str, list[Any]] = field(default_factory=dict)  # dotted key -> values
    #: Settings chosen on validation: expanded like ``grid``, collapsed by the leaderboard.
    select: dict[str, list[Any]] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    path: str = ""


def find_sweep_file(name: str) -> Path:
    """A sweep file path, or the name of a shipped sweep (``paper``, ``quick``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = resources.files("sgid_bench") / "sweeps" / f"{name.removesuffix('.toml')}.toml"
    if shipped.is_file():
        return Path(str(shipped))
    known = sorted(p.name.removesuffix(".toml") for p in
                   (resources.files("sgid_bench") / "sweeps").iterdir()
                   if p.name.endswith(".toml"))
    raise UserError(f"sweep file {name!r} not found: pass a path to a .toml file or a "
                    f"shipped sweep ({', '.join(known)})")


def load_sweep(path: str | Path) -> Sweep:
    """Parse and validate a sweep file; errors name the file and the fix."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"sweep file {path} is not a text file (not UTF-8): pass a sweep "
                        ".toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"sweep file {path}: invalid TOML ({exc})") from None
    where = f"sweep file {path}"
    _no_unknown(where, "tables", data, TABLES)
    top = data.get("sweep")
    if not isinstance(top, dict):
        raise UserError(f"{where}: missing [sweep] table with methods, backbones, datasets")
    _no_unknown(f"{where} [sweep]", "keys", top, SWEEP_KEYS)
    seeds = top.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    profile = top.get("profile") or default_profile()
    if profile not in PROFILES:
        raise UserError(f"{where}: unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    sweep = Sweep(
        name=str(top.get("name", path.stem)),
        profile=profile,
        methods=_names(where, top, "methods", ["none"]),
        backbones=_names(where, top, "backbones", ["resnet50"]),
        datasets=_names(where, top, "datasets", [DEFAULT_DATASETS.get(profile, "world")]),
        seeds=_ints(where, "seeds", seeds),
        params=_flatten(data.get("params", {})),
        grid=_flatten(data.get("grid", {})),
        select=_flatten(data.get("select", {})),
        resources=_resources(where, data.get("resources", {})),
        path=str(path),
    )
    for table, axes in (("grid", sweep.grid), ("select", sweep.select)):
        for key, values in axes.items():
            if not isinstance(values, list) or not values:
                raise UserError(f"{where} [{table}]: {key} must be a non-empty list of values")
    _check_select(where, sweep)
    _check_targets(where, sweep)
    return sweep


def components(sweep: Sweep) -> list[str]:
    """Every component name some run of the sweep has (what a key prefix may name)."""
    names = [p for m in sweep.methods for p in split_method(m)]
    names += sweep.backbones + [d.partition(":")[0] for d in sweep.datasets] + list(ALWAYS)
    return list(dict.fromkeys(names))


def _check_targets(where: str, sweep: Sweep) -> None:
    """A prefixed key must reach some run: a misspelled prefix ("trian.epochs") would
    otherwise apply to no run, silently."""
    known = components(sweep)
    for table, keys in (("params", sweep.params), ("grid", sweep.grid),
                        ("select", sweep.select)):
        for key in keys:
            target, dot, _ = key.rpartition(".")
            if dot and target not in known:
                raise UserError(f"{where} [{table}]: {key!r} applies to no run: no component "
                                f"{target!r} in this sweep; components: {', '.join(known)}")


def _check_select(where: str, sweep: Sweep) -> None:
    """A selected key is a method's own parameter (what the leaderboard selects among),
    prefixed, and set nowhere else in the file."""
    methods = {p for m in sweep.methods for p in split_method(m)}
    for key in sweep.select:
        target, dot, _ = key.rpartition(".")
        if not dot or target not in methods:
            names = ", ".join(sorted(methods))
            raise UserError(f"{where} [select]: {key!r} must name a method's parameter with "
                            f"its method, e.g. sgid.strength (methods: {names}); use [grid] "
                            "for other settings")
        if key in sweep.params or key in sweep.grid:
            raise UserError(f"{where}: {key!r} is in [select] and in "
                            f"{'[params]' if key in sweep.params else '[grid]'}: keep one")


def _no_unknown(where: str, what: str, table: dict[str, Any], known: tuple[str, ...]) -> None:
    extra = sorted(set(table) - set(known))
    if extra:
        raise UserError(f"{where}: unknown {what} {', '.join(extra)}; known: {', '.join(known)}")


def _names(where: str, table: dict[str, Any], key: str, default: list[str]) -> list[str]:
    value = table.get(key, default)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: [sweep] {key} must be a non-empty list of names")
    return list(dict.fromkeys(value))


def _ints(where: str, key: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UserError(f"{where}: [sweep] {key} must be a list of integers or a count")
    return list(dict.fromkeys(value))


def _resources(where: str, table: dict[str, Any]) -> Resources:
    _no_unknown(f"{where} [resources]", "keys", table, ("num_cpus", "num_gpus", "max_retries"))
    try:
        res = Resources(**{k: type(getattr(Resources, k))(v) for k, v in table.items()})
    except (TypeError, ValueError):
        raise UserError(f"{where} [resources]: num_cpus, num_gpus are numbers and "
                        "max_retries an integer") from None
    if res.num_cpus < 0 or res.num_gpus < 0 or res.max_retries < 0:
        raise UserError(f"{where} [resources]: values must not be negative")
    return res


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    # TOML turns `sgid.strength = 1` into {"sgid": {"strength": 1}}; both spellings
    # (dotted and quoted "sgid.strength") end up as the dotted key.
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def param_text(key: str, value: Any) -> str:
    """A TOML value as the ``key=value`` text of ``--param`` (parsed back by config)."""
    if isinstance(value, str):
        return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


def _applies(key: str, components: set[str]) -> bool:
    target, dot, _ = key.rpartition(".")
    return not dot or target in components


def expand(sweep: Sweep) -> list[RunSpec]:
    """Every run spec of the grid, in method, backbone, dataset, grid point, seed order
    (not yet de-duplicated: different spellings may resolve to the same config)."""
    specs: list[RunSpec] = []
    for method, backbone, dataset in itertools.product(
            sweep.methods, sweep.backbones, sweep.datasets):
        components = {*split_method(method), backbone, dataset.partition(":")[0], *ALWAYS}
        fixed = [param_text(k, v) for k, v in sweep.params.items() if _applies(k, components)]
        axes = {k: v for k, v in {**sweep.grid, **sweep.select}.items()
                if _applies(k, components)}
        for point in itertools.product(*axes.values()):
            params = fixed + [param_text(k, v) for k, v in zip(axes, point, strict=True)]
            specs.extend(RunSpec(method, backbone, dataset, seed, sweep.profile, params)
                         for seed in sweep.seeds)
    return specs


@dataclass
class Job:
    """One training run of the plan."""

    spec: RunSpec
    config_hash: str
    state: str = TODO
    generation: str | None = None  # id (gen_id) of the generation it needs, if any
    error: str | None = None  # the earlier error of a failed run


@dataclass
class GenJob:
    """One distinct generation (expand stages up to a chain position) of the plan."""

    key: str
    spec: RunSpec  # any training spec that needs it: generate(spec) fills the cache
    chain: list[str] = field(default_factory=list)  # keys of its stages, this one last
    seed: int = 0  # the generation seed (config.generation_seed)
    after: str | None = None  # the upstream generation (e.g. text2img before text2img+sgid)
    runs: int = 0  # training runs (to run) that need it
    cached: bool = False


@dataclass
class Plan:
    """The de-duplicated runs of a sweep, their state in the store, and the generations
    the runs still to do need (in dependency order)."""

    sweep: Sweep
    jobs: list[Job]
    generations: dict[str, GenJob]
    duplicates: int = 0

    @property
    def todo(self) -> list[Job]:
        return [j for j in self.jobs if j.state == TODO]

    def counts(self) -> dict[str, int]:
        states = Counter(j.state for j in self.jobs)
        return {"total": len(self.jobs), "done": states[DONE_BEFORE],
                "failed": states[FAILED_BEFORE], "running": states[BUSY],
                "to_run": states[TODO], "duplicates": self.duplicates,
                "generations": len(self.generations),
                "generations_cached": sum(g.cached for g in self.generations.values())}


def gen_id(key: str, seed: int) -> str:
    """A plan's id of one generation: its cache key hash and generation seed."""
    return f"{key}-s{seed}"


def generation_keys(resolved: Any, context: Context) -> list[str]:
    """Hashes of the cache keys of each expand stage of a resolved run, in chain order."""
    from sgid_bench import data

    return [config_hash(key) for key in data.generation_keys(resolved, context)]


def make_plan(sweep: Sweep, store: Store, context: Context, *, resume: bool = False,
              force: bool = False) -> Plan:
    """Resolve every grid point (no model weights are loaded), de-duplicate by
    (config hash, seed) and mark each run by its state in the store.

    Raises :class:`UserError` naming the grid point when a spec does not resolve."""
    jobs: list[Job] = []
    seen: set[tuple[str, int]] = set()
    chains: dict[str, list[str]] = {}
    gen_seeds: dict[str, int] = {}
    resolved_cells: dict[str, tuple[str, list[str], dict[str, Any]]] = {}
    duplicates = 0
    for spec in expand(sweep):
        # The config excludes the seed: resolve once per grid cell, not once per seed.
        cell = json.dumps([spec.method, spec.backbone, spec.dataset, spec.params])
        if cell not in resolved_cells:
            ctx = context.for_run(spec.profile, spec.dataset, spec.seed)
            try:
                resolved = resolve(spec, ctx)
            except UserError as exc:
                raise UserError(f"sweep {sweep.name}: {spec.method} / {spec.backbone} / "
                                f"{spec.dataset} {' '.join(spec.params)}: {exc}") from None
            resolved_cells[cell] = (resolved.config_hash, generation_keys(resolved, ctx),
                                    resolved.config)
        chash, keys, config = resolved_cells[cell]
        if (chash, spec.seed) in seen:
            duplicates += 1
            continue
        seen.add((chash, spec.seed))
        gen_seed = generation_seed(config, spec.seed)
        # One generation per (key, seed): with generation.seed=per-run each seed has its own.
        jobs.append(Job(spec, chash, generation=gen_id(keys[-1], gen_seed) if keys else None))
        chains[chash], gen_seeds[gen_id(keys[-1], gen_seed) if keys else ""] = keys, gen_seed
    _mark_states(jobs, store, resume=resume, force=force)
    plan = Plan(sweep, jobs, {}, duplicates)
    _plan_generations(plan, chains, gen_seeds, store, context)
    return plan


def _mark_states(jobs: list[Job], store: Store, *, resume: bool, force: bool) -> None:
    rows = store.runs(status=None, config_hash=sorted({j.config_hash for j in jobs}))
    by_key = {(r.config_hash, r.seed): r for r in rows}
    for job in jobs:
        row = by_key.get((job.config_hash, job.spec.seed))
        if row is None:
            continue
        if row.status == RUNNING:
            job.state = BUSY
        elif row.status == DONE and not force:
            job.state = DONE_BEFORE
        elif row.status == FAILED and not (resume or force):
            job.state, job.error = FAILED_BEFORE, row.error


def _plan_generations(plan: Plan, chains: dict[str, list[str]], gen_seeds: dict[str, int],
                      store: Store, context: Context) -> None:
    from sgid_bench.store import Generation

    for job in plan.todo:
        if job.generation is not None:
            chain, seed = chains[job.config_hash], gen_seeds[job.generation]
            gen = plan.generations.setdefault(
                job.generation, GenJob(chain[-1], job.spec, chain=chain, seed=seed))
            gen.runs += 1
    # A chain waits for the longest upstream chain this plan also generates
    # (text2img+sgid after text2img), so the shared stage is generated once.
    for gen in plan.generations.values():
        gen.after = next((gen_id(k, gen.seed) for k in reversed(gen.chain[:-1])
                          if gen_id(k, gen.seed) in plan.generations), None)
    plan.generations = dict(sorted(plan.generations.items(), key=lambda kv: len(kv[1].chain)))
    if not plan.generations:
        return
    from sqlalchemy import select

    # The cache records a finished generation under this key (sgid_bench.cache).
    store_keys = {config_hash({"key": g.key, "seed": g.seed}): k
                  for k, g in plan.generations.items()}
    with store.session() as s:
        done = set(s.scalars(select(Generation.cache_key).where(
            Generation.cache_key.in_(list(store_keys)), Generation.status == DONE)))
    assert context.cache_dir is not None
    for store_key, key in store_keys.items():
        gen = plan.generations[key]
        gen.cached = store_key in done and (context.cache_dir / gen.key).is_dir()
