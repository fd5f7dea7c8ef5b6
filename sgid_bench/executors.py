"""Executors of a sweep plan: ``local`` (sequential, in this process) and ``ray`` (one task
per generation and per training run; training tasks depend on the generation they need).

Both run the same two task functions, which rebuild everything they need from picklable
:class:`Settings` (the store URL and the context), so a Ray worker on any node works like
the local loop. Two processes never generate the same images at once: a generation runs
under an exclusive lock file in the cache directory, and the second process then finds
the images cached.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgid_bench.config import RunSpec, resolve
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.run import Outcome, execute, generate
from sgid_bench.store import DONE, FAILED, RUNNING, Store, process_alive
from sgid_bench.sweep import GenJob, Job, Plan, Resources

#: Size of the Ray cluster started when no --address is given.
LOCAL_RAY_CPUS = 2
_STORES: dict[str, Store] = {}


@dataclass
class Settings:
    """Everything a task needs, picklable: where results go and the run context."""

    db_url: str
    context: Context
    force: bool = False


@dataclass
class GenResult:
    """What a generation task reports."""

    key: str
    images: int = 0
    seconds: float = 0.0
    error: str | None = None


def _store(url: str) -> Store:
    # One engine per process and URL: Ray reuses a worker process for many tasks.
    if url not in _STORES:
        _STORES[url] = Store(url)
    return _STORES[url]


def close_stores() -> None:
    """Close the connections of the stores tasks opened in this process."""
    while _STORES:
        _STORES.popitem()[1].close()


@contextmanager
def generation_lock(context: Context, key: str) -> Iterator[None]:
    """Hold an exclusive lock on generation ``key`` in this cache directory.

    The kernel drops the lock when its process dies, so a killed worker never leaves a
    generation locked. A cache where no lock file can be made (read-only) goes on without
    one: no process can write there, so none races; a complete cache is only read, and an
    incomplete one fails with the cache's own one-line error."""
    import fcntl

    assert context.cache_dir is not None
    path = Path(context.cache_dir) / ".locks" / f"{key}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - closed below
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def generate_task(key: str, spec: RunSpec, settings: Settings,
                  upstream: GenResult | None = None) -> GenResult:
    """Fill the cache for one generation; errors are returned, never raised, so the runs
    that depend on it are recorded as failed instead of vanishing."""
    if upstream is not None and upstream.error:
        return GenResult(key, error=upstream.error)
    start = time.perf_counter()
    context = settings.context.for_run(spec.profile, spec.dataset, spec.seed)
    _worker_threads(context)
    try:
        with generation_lock(context, key):
            images = generate(spec, store=_store(settings.db_url), context=context)
    except Exception as exc:  # reported to every dependent run and stored with it
        return GenResult(key, error=f"generation failed: {type(exc).__name__}: {exc}")
    return GenResult(key, images, time.perf_counter() - start)


def _worker_threads(context: Context) -> None:
    """Torch threads of a task: a Ray worker is its own process, where the driver's
    setting does not reach; Ray sets ``OMP_NUM_THREADS`` to the task's CPUs, which
    :func:`~sgid_bench.rng.default_threads` honours, so workers never oversubscribe."""
    from sgid_bench.rng import default_threads, set_threads

    set_threads(default_threads(context.profile, context.device))


def run_task(spec: RunSpec, config_hash: str, settings: Settings,
             generation: GenResult | None = None) -> Outcome:
    """Execute one training run; a failure is recorded in the store and returned."""
    store, context = _store(settings.db_url), settings.context
    _worker_threads(context)
    if generation is not None and generation.error:
        return record_failure(spec, generation.error, store, context, force=settings.force)
    try:
        return execute(spec, store=store, context=context, force=settings.force)
    except UserError as exc:  # found after the claim: already recorded as failed
        return Outcome(FAILED, config_hash, error=str(exc))
    except Exception as exc:  # a bug before the run started: report, keep sweeping
        return Outcome(FAILED, config_hash, error="".join(
            traceback.format_exception_only(exc)).strip())


def record_failure(spec: RunSpec, error: str, store: Store, context: Context,
                   force: bool = False) -> Outcome:
    """Record a run that could not start (its generation failed) as failed, so the store
    shows it and ``--resume`` retries it."""
    from sgid_bench.run import claim_columns

    resolved = resolve(spec, context.for_run(spec.profile, spec.dataset, spec.seed))
    chash, models = resolved.config_hash, resolved.config["models"]
    run_id = store.claim(chash, spec.seed, force=force, **claim_columns(resolved))
    if run_id is None:
        return Outcome("busy", chash, models=models)
    store.fail(run_id, error)
    return Outcome(FAILED, chash, run_id, error=error, models=models)


def lost_worker(job: Job, error: str, store: Store, context: Context) -> Outcome:
    """The outcome of a task whose worker died: its row, if this host claimed it, is
    reaped to failed; a run that never started is recorded as failed."""
    store.reap_interrupted()
    row = store.get(job.config_hash, job.spec.seed)
    if row is None:
        return record_failure(job.spec, error, store, context)
    if row.status == DONE:
        return Outcome(DONE, job.config_hash, row.id, {"top1": row.top1})
    if row.status == RUNNING and row.host == socket.gethostname() and _gone(row.pid):
        # Ray saw the worker die before the store's reaper could: the process may still
        # be exiting, or a zombie (which still answers kill -0).
        store.fail(row.id, f"interrupted: process {row.pid} on {row.host} ended before "
                   f"finishing ({error})")
        row = store.get(job.config_hash, job.spec.seed)
        assert row is not None
    if row.status == RUNNING:  # claimed on another host: its own reaper will see to it
        return Outcome(FAILED, job.config_hash, row.id, error=error)
    return Outcome(FAILED, job.config_hash, row.id, error=row.error or error)


def _gone(pid: int | None, wait_s: float = 10.0) -> bool:
    """Whether process ``pid`` of this host has ended, waiting up to ``wait_s`` for a
    process being killed to finish exiting (zombies count as ended; Linux /proc)."""
    if pid is None:
        return False
    deadline = time.monotonic() + wait_s
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class Report:
    """Outcomes of the runs a sweep executed, in completion order."""

    outcomes: list[tuple[Job, Outcome]] = field(default_factory=list)
    generations: list[GenResult] = field(default_factory=list)

    @property
    def failures(self) -> list[tuple[Job, Outcome]]:
        return [(j, o) for j, o in self.outcomes if o.status == FAILED]


#: ``listener(event, item, payload)``: ("slots", None, parallel tasks), ("start", job,
#: None), ("finish", job, Outcome or GenResult). Feeds the live view.
Listener = Callable[[str, "Job | GenJob | None", Any], None]


def _quiet(event: str, item: Job | GenJob | None, payload: Any) -> None:
    return None


def run_local(plan: Plan, settings: Settings, listener: Listener = _quiet) -> Report:
    """Run the plan sequentially in this process; each generation before the first run
    that needs it."""
    report = Report()
    results: dict[str, GenResult] = {}
    listener("slots", None, 1)

    def ensure(key: str) -> GenResult:
        if key not in results:
            gen = plan.generations[key]
            upstream = ensure(gen.after) if gen.after else None
            listener("start", gen, None)
            results[key] = generate_task(key, gen.spec, settings, upstream)
            report.generations.append(results[key])
            listener("finish", gen, results[key])
        return results[key]

    for job in plan.todo:
        generation = ensure(job.generation) if job.generation else None
        listener("start", job, None)
        outcome = run_task(job.spec, job.config_hash, settings, generation)
        report.outcomes.append((job, outcome))
        listener("finish", job, outcome)
    return report


def run_ray(plan: Plan, settings: Settings, resources: Resources, address: str | None = None,
            listener: Listener = _quiet, num_cpus: int = LOCAL_RAY_CPUS) -> Report:
    """Run the plan on Ray: generation tasks first, each training task depending on the
    generation it needs. Starts a local cluster of ``num_cpus`` CPUs without ``address``
    (and stops it at the end); joins an existing cluster (``auto``, ``ray://...``) with."""
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install 'sgid-bench[ray]'") from None
    own = not ray.is_initialized()
    if own:
        _init_ray(ray, address, num_cpus)
    try:
        return _submit_and_wait(ray, plan, settings, resources, listener)
    finally:
        if own:
            ray.shutdown()


def _init_ray(ray: Any, address: str | None, num_cpus: int) -> None:
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.ERROR}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "a local cluster"
        raise UserError(f"cannot start Ray on {where} ({exc}); check --address "
                        "(auto or ray://host:10001) or drop it to run locally") from None


def infeasible(resources: Resources, nodes: list[dict[str, float]]) -> str | None:
    """Why no node of a cluster (each node's total resources, Ray's ``CPU`` / ``GPU``)
    can run a task asking for ``resources``, or None when one can. Ray would queue such a
    task forever, in silence."""
    asked = {"CPU": resources.num_cpus, "GPU": resources.num_gpus}
    if any(all(node.get(k, 0.0) >= v for k, v in asked.items()) for node in nodes):
        return None
    biggest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    return (f"every Ray task of this sweep asks for {resources.num_cpus:g} CPU(s) and "
            f"{resources.num_gpus:g} GPU(s), but no node of the cluster has that much "
            f"({len(nodes)} node(s); the largest has {biggest.get('CPU', 0.0):g} CPU(s) and "
            f"{biggest.get('GPU', 0.0):g} GPU(s)): lower num_cpus / num_gpus in the sweep's "
            "[resources], or add nodes (--num-cpus for the local cluster)")


def _slots(resources: Resources, total: dict[str, float]) -> int:
    """How many tasks the cluster runs at once (the rest wait for resources)."""
    fits = [total.get(k, 0.0) // v for k, v in
            (("CPU", resources.num_cpus), ("GPU", resources.num_gpus)) if v > 0]
    return int(min(fits)) if fits else 0


def _submit_and_wait(ray: Any, plan: Plan, settings: Settings, resources: Resources,
                     listener: Listener) -> Report:
    nodes = [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
    problem = infeasible(resources, nodes)
    if problem:
        raise UserError(problem)
    opts = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus,
            "max_retries": resources.max_retries}
    gen_remote = ray.remote(generate_task).options(**opts)
    run_remote = ray.remote(run_task).options(**opts)
    report = Report()
    gen_refs: dict[str, Any] = {}
    for key, gen in plan.generations.items():
        # An ObjectRef argument makes Ray run this task only after its upstream finished.
        gen_refs[key] = gen_remote.remote(key, gen.spec, settings,
                                          gen_refs.get(gen.after) if gen.after else None)
    pending: dict[Any, Job | GenJob] = {ref: plan.generations[k] for k, ref in gen_refs.items()}
    for job in plan.todo:
        ref = run_remote.remote(job.spec, job.config_hash, settings,
                                gen_refs.get(job.generation) if job.generation else None)
        pending[ref] = job
    listener("slots", None, _slots(resources, ray.cluster_resources()))
    for item in pending.values():
        listener("start", item, None)
    store = _store(settings.db_url)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                item = pending.pop(ref)
                _collect(ray, ref, item, report, store, settings, listener)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return report


def _collect(ray: Any, ref: Any, item: Job | GenJob, report: Report, store: Store,
             settings: Settings, listener: Listener) -> None:
    try:
        result = ray.get(ref)
    except ray.exceptions.RayError as exc:  # the worker died (or a dependency's did)
        reason = f"worker lost: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        if isinstance(item, GenJob):
            result = GenResult(item.key, error=reason)
        else:
            result = lost_worker(item, reason, store, settings.context)
    if isinstance(item, GenJob):
        report.generations.append(result)
    else:
        report.outcomes.append((item, result))
    listener("finish", item, result)


