"""The results store: one row per (config hash, seed), SQLAlchemy 2.0 typed ORM.

Default ``sqlite:///sgid-bench.db`` in the working directory (WAL); any SQLAlchemy URL via
``--db`` or ``SGID_BENCH_DB`` (PostgreSQL for shared use). A run is *claimed* atomically
before it starts, so two workers never run the same (config hash, seed). A claim carries
a random token (checked when the result is written) and a heartbeat: a claim whose
heartbeat is older than the lease is reclaimed, whatever host or container it came from.
A result that cannot be written (the database is down, the disk is full) goes to a local
spool file and is recorded later. The schema is versioned by Alembic
(``sgid_bench/migrations``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sgid_bench.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///sgid-bench.db"
#: The newest migration in sgid_bench/migrations/versions (a test keeps them in step).
HEAD = "0002"
#: Seconds without a heartbeat after which a running claim may be taken over.
DEFAULT_LEASE_S = 300.0
#: Waits between the attempts to write a result before it goes to the spool.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
RUNNING, DONE, FAILED = "running", "done", "failed"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_WAL_ATTEMPTS = 5  # tries to switch a new SQLite file to WAL while others open it too
_PG_LOCK = 5120931  # advisory lock id that serialises schema work on PostgreSQL
# Columns that identify an sgid-bench ``runs`` table written before migrations existed.
_LEGACY_COLUMNS = {"config_hash", "seed", "method", "backbone", "status", "config", "started_at"}


def default_url() -> str:
    return os.environ.get("SGID_BENCH_DB") or DEFAULT_URL


def default_lease() -> float:
    """``$SGID_BENCH_LEASE`` (seconds) or 300."""
    raw = os.environ.get("SGID_BENCH_LEASE")
    try:
        lease = float(raw) if raw else DEFAULT_LEASE_S
    except ValueError:
        lease = -1.0
    if not lease > 0 or math.isinf(lease):
        raise UserError(f"SGID_BENCH_LEASE={raw!r} is not a number of seconds > 0; set it to "
                        f"e.g. {DEFAULT_LEASE_S:g} or unset it")
    return lease


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Run(Base):
    """One training run of (method, backbone, dataset, seed) under a resolved config."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("config_hash", "seed", name="uq_run_config_seed"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(200), index=True)
    backbone: Mapped[str] = mapped_column(String(100), index=True)
    dataset: Mapped[str] = mapped_column(Text, index=True)  # imagefolder:/any/long/path
    profile: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(10), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]]
    models: Mapped[dict[str, Any]]
    tiny_models: Mapped[bool]
    versions: Mapped[dict[str, Any]]
    git_revision: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int | None]
    # Where ``pid`` means something (kernel boot and PID namespace): a PID is judged
    # dead only by a process that sees the same PIDs.
    pid_scope: Mapped[str | None] = mapped_column(String(100))
    claim_token: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    wall_time_s: Mapped[float | None] = mapped_column(Float)
    top1: Mapped[float | None] = mapped_column(Float)
    top5: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    per_class: Mapped[dict[str, Any] | None]
    # Everything else a run measured: validation accuracy, chosen lr, epochs, throughput.
    extra: Mapped[dict[str, Any] | None]


class Generation(Base):
    """One cached set of generated images (expand stage) for a dataset split."""

    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64), unique=True)
    method: Mapped[str] = mapped_column(String(200), index=True)
    dataset: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any]]
    models: Mapped[dict[str, Any]]
    path: Mapped[str] = mapped_column(Text)
    images: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


#: Which sgid-bench last migrated the schema: named in the error an older one gives.
INFO = Table("sgid_bench_info", Base.metadata, Column("key", String(50), primary_key=True),
             Column("value", Text, nullable=False))


class NoStore(UserError):
    """A reading command found no results database (or an empty one) where it looked."""


class ClaimLost(UserError):
    """This worker's claim was taken over (its heartbeat was older than the lease)."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Per connection and write-free: journal_mode=WAL (a write) is set once, on open.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def redact(message: str, url: str | None = None) -> str:
    """``message`` with the password of ``url`` (and of any URL in it) replaced by ***."""
    if url:
        try:
            password = make_url(url).password
        except ArgumentError:
            password = None
        if password:
            message = message.replace(str(password), "***")
            message = message.replace(quote(str(password), safe=""), "***")
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", message)


class Store:
    """Typed access to the results database.

    ``readonly`` (reading commands) opens an existing SQLite file with ``mode=ro`` and a
    PostgreSQL session read-only, and never creates or migrates anything."""

    def __init__(self, url: str | None = None, *, readonly: bool = False,
                 lease_s: float | None = None) -> None:
        self.url = url or default_url()
        self.readonly = readonly
        self.lease_s = default_lease() if lease_s is None else lease_s
        self.retry_delays: Sequence[float] = RETRY_DELAYS
        # Claims this Store made: token and row values, for the checked finish and spool.
        self._claims: dict[int, tuple[str, dict[str, Any]]] = {}
        self._spool_checked = False
        parsed = self._parse()
        self.display_url = parsed.render_as_string(hide_password=True)
        self.sqlite_path = _sqlite_path(parsed)
        self.engine: Engine = self._create_engine(parsed)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._open()
        except DBAPIError as exc:
            self.engine.dispose()
            raise UserError(self._describe(exc)) from None
        except BaseException:
            self.engine.dispose()
            raise

    # -- opening ------------------------------------------------------------------------

    @property
    def where(self) -> str:
        """The database as messages name it: the SQLite file, else the URL sans password."""
        return str(self.sqlite_path) if self.sqlite_path else self.display_url

    @property
    def identity(self) -> str:
        """Which database this is, independent of the working directory (for the spool)."""
        if self.sqlite_path:
            return f"sqlite:///{self.sqlite_path.resolve()}"
        return self.display_url

    @property
    def in_memory(self) -> bool:
        return self.engine.dialect.name == "sqlite" and self.sqlite_path is None

    def discard_warning(self) -> str | None:
        """What to tell a user whose results will not outlive the command (``sqlite://``)."""
        if not self.in_memory:
            return None
        return ("Warning: --db sqlite:// is an in-memory database: every result is discarded "
                "when this command ends; pass a file, e.g. --db sqlite:///sgid-bench.db")

    def _parse(self) -> URL:
        try:
            return make_url(self.url)
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise UserError(
                f"cannot use database URL {redact(self.url)!r}: pass a SQLAlchemy URL such "
                "as sqlite:///results.db or postgresql+psycopg://user@host/db") from None

    def _create_engine(self, parsed: URL) -> Engine:
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        backend = parsed.get_backend_name()
        if self.readonly and backend == "sqlite" and self.sqlite_path:
            parsed = self._readonly_sqlite(parsed, self.sqlite_path)
        elif self.readonly and backend == "postgresql":
            kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
        try:
            engine = create_engine(parsed, **kwargs)
        except (ArgumentError, ImportError) as exc:
            raise UserError(
                f"cannot use database URL {self.display_url!r} ({redact(str(exc), self.url)});"
                " pass a SQLAlchemy URL such as sqlite:///results.db or "
                "postgresql+psycopg://user@host/db") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def _readonly_sqlite(self, parsed: URL, path: Path) -> URL:
        if not path.is_file():
            raise NoStore(f"no results database at {path}: run `sgid-bench run` or "
                            "`sgid-bench sweep` first, or pass --db (or set SGID_BENCH_DB) to "
                            "the store your runs wrote to")
        # Rebuilt even from a file: URI, whose own query may lack mode=ro (or say rw).
        return parsed.set(database=f"file:{quote(str(path.resolve()))}",
                          query={**parsed.query, "mode": "ro", "uri": "true"})

    def _open(self) -> None:
        if self.engine.dialect.name == "sqlite":
            self._check_integrity()
        with self.engine.connect() as conn:
            state = self._schema_state(conn)
        if state == "current":
            return
        if self.readonly and state == "empty":
            raise NoStore(f"no sgid-bench results in {self.where}: run `sgid-bench run` or "
                          "`sgid-bench sweep` first, or pass --db to the store your runs "
                          "wrote to")
        if self.readonly:
            raise UserError(f"database {self.where} has an older schema: upgrade it once "
                            "with a writing command, e.g. sgid-bench runs reap --db "
                            f"{self.display_url}")
        with self.engine.connect() as conn:
            self._lock_schema(conn)
            state = self._schema_state(conn)  # another process may have just done it
            if state != "current":
                self._upgrade(conn, legacy=state == "legacy")
            conn.commit()

    def _check_integrity(self) -> None:
        if self.sqlite_path and not self.sqlite_path.exists():
            return
        with self.engine.connect() as conn:
            result = conn.exec_driver_sql("PRAGMA quick_check").scalar()
        if result != "ok":  # quick_check's finding may span lines: the message is one
            raise UserError(self._corrupt(" ".join(str(result).split())))

    def _corrupt(self, reason: str) -> str:
        return (f"database {self.where} is corrupted or not a SQLite file ({reason}); nothing "
                "was written to it: restore it from a backup or pass another --db")

    def _schema_state(self, conn: Connection) -> str:
        """current | empty | legacy (pre-migration sgid-bench) | behind; raises for a newer
        sgid-bench's database or another application's."""
        tables = set(inspect(conn).get_table_names())
        revision = None
        if "alembic_version" in tables:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if revision == HEAD:
            return "current"
        if revision is None:
            return self._unversioned_state(conn, tables)
        if revision in _known_revisions():
            return "behind"
        if INFO.name not in tables:
            raise UserError(self._foreign(f"its schema is revision {revision} of another "
                                          "application"))
        writer = conn.execute(select(INFO.c.value).where(INFO.c.key == "version")).scalar()
        from sgid_bench import __version__

        raise UserError(f"database {self.where} was created by a newer sgid-bench "
                        f"{writer or ''} (schema {revision}; this is sgid-bench {__version__}, "
                        f"schema {HEAD}); upgrade: pip install -U sgid-bench".replace("  ", " "))

    def _unversioned_state(self, conn: Connection, tables: set[str]) -> str:
        if "runs" in tables:
            columns = {c["name"] for c in inspect(conn).get_columns("runs")}
            if _LEGACY_COLUMNS <= columns:
                return "legacy"
            raise UserError(self._foreign("its `runs` table has other columns"))
        mine = {"generations", INFO.name}
        others = {t for t in tables - mine if not t.startswith("sqlite_")}
        if others and self.engine.dialect.name == "sqlite":
            raise UserError(self._foreign(f"it holds tables {', '.join(sorted(others))}"))
        return "empty"

    def _foreign(self, why: str) -> str:
        return (f"database {self.where} is not an sgid-bench results store ({why}); nothing "
                "was written to it: pass another --db")

    def _lock_schema(self, conn: Connection) -> None:
        """Serialise schema work between processes opening the store at once."""
        if self.engine.dialect.name == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_LOCK})"))
        elif self.engine.dialect.name == "sqlite":
            if not self.in_memory:
                self._set_wal(conn)
            # Take the write lock before looking: concurrent creators queue here.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @staticmethod
    def _set_wal(conn: Connection) -> None:
        # Persistent, and only outside a transaction. SQLite answers "locked" at once,
        # without its busy timeout, while another opener holds the write lock: wait for
        # that lock the way that does honour the timeout, then try again.
        for attempt in range(_WAL_ATTEMPTS):
            try:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                conn.commit()
                return
            except OperationalError:
                conn.rollback()
                if attempt == _WAL_ATTEMPTS - 1:
                    raise
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                conn.rollback()

    def _upgrade(self, conn: Connection, legacy: bool) -> None:
        from alembic import command
        from alembic.config import Config

        from sgid_bench import __version__

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        if legacy:
            command.stamp(config, "0001")
        command.upgrade(config, "head")
        conn.execute(INFO.delete().where(INFO.c.key == "version"))
        conn.execute(INFO.insert().values(key="version", value=__version__))

    def _describe(self, exc: DBAPIError) -> str:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        reason = redact(reason, self.url)
        if self.engine.dialect.name == "sqlite" and self.sqlite_path and (
                "not a database" in reason or "malformed" in reason):
            return self._corrupt(reason)
        return (f"cannot open database {self.where}: {reason}; check that it is reachable "
                "and writable, or pass another location with --db or SGID_BENCH_DB")

    def close(self) -> None:
        """Close pooled connections (PostgreSQL warns about connections left open)."""
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions.begin() as session:
            yield session

    # -- runs -------------------------------------------------------------------------

    def get(self, config_hash: str, seed: int) -> Run | None:
        with self.session() as s:
            return s.scalar(select(Run).where(Run.config_hash == config_hash, Run.seed == seed))

    def claim(self, config_hash: str, seed: int, force: bool = False, **fields: Any) -> int | None:
        """Mark (config_hash, seed) running for this process and return its row id.

        Returns None when it is already done (unless ``force``) or running elsewhere, so
        concurrent workers never duplicate a run. A failed row is re-claimed, and so is a
        running one whose heartbeat is older than the lease (reaped first)."""
        check_storable(seed, fields.get("config"))
        now, token = utcnow(), secrets.token_hex(16)
        values = dict(fields, status=RUNNING, error=None, host=socket.gethostname(),
                      pid=os.getpid(), pid_scope=pid_scope(), claim_token=token,
                      heartbeat_at=now, started_at=now, finished_at=None, wall_time_s=None,
                      top1=None, top5=None, loss=None, per_class=None, extra=None)
        self.reap()
        run_id = self._insert_claim(config_hash, seed, values)
        if run_id is None:
            allowed = [FAILED, DONE] if force else [FAILED]
            with self.session() as s:
                # A conditional UPDATE is atomic on SQLite and PostgreSQL: one claimer wins.
                row = s.execute(
                    update(Run)
                    .where(Run.config_hash == config_hash, Run.seed == seed,
                           Run.status.in_(allowed))
                    .values(**values)
                    .returning(Run.id)
                ).first()
            run_id = row[0] if row else None
        if run_id is not None:
            self._claims[run_id] = (token, {"config_hash": config_hash, "seed": seed, **values})
        return run_id

    def _insert_claim(self, config_hash: str, seed: int, values: dict[str, Any]) -> int | None:
        try:
            with self.session() as s:
                run = Run(config_hash=config_hash, seed=seed, **values)
                s.add(run)
                s.flush()
                return run.id
        except IntegrityError:
            return None

    def heartbeat(self, run_id: int) -> bool:
        """Renew this process's claim on ``run_id``; False when it is no longer ours."""
        token = self._token(run_id)
        with self.session() as s:
            stmt = update(Run).where(Run.id == run_id, Run.status == RUNNING)
            if token is not None:
                stmt = stmt.where(Run.claim_token == token)
            return s.execute(stmt.values(heartbeat_at=utcnow())).rowcount == 1  # type: ignore[attr-defined, no-any-return]

    @contextmanager
    def keep_alive(self, run_id: int, interval_s: float | None = None) -> Iterator[None]:
        """Heartbeat ``run_id`` from a daemon thread while the block runs."""
        if self.in_memory:  # no other process can see it, and threads get other databases
            yield
            return
        stop = threading.Event()
        every = interval_s or max(1.0, self.lease_s / 10)

        def beat() -> None:
            while not stop.wait(every):
                try:
                    if not self.heartbeat(run_id):
                        return  # taken over: the finish will say so
                except DBAPIError:
                    continue  # the database is away for now; the lease allows for it

        thread = threading.Thread(target=beat, name=f"sgid-bench-heartbeat-{run_id}",
                                  daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def finish(self, run_id: int, **metrics: Any) -> None:
        """Record a run as done with its metrics (one transaction), retrying while the
        database is unavailable and spooling the result to a local file if it stays so.
        Raises :class:`ClaimLost` when another worker took the run over."""
        values = {k: _finite_json(v) if isinstance(v, (dict, list)) else v
                  for k, v in metrics.items()}
        self._write_result(run_id, DONE, values)

    def fail(self, run_id: int, error: str) -> None:
        """Record a run as failed with its error (unless another worker took it over)."""
        try:
            self._write_result(run_id, FAILED, {"error": error})
        except ClaimLost:
            log.warning("run %s was taken over by another worker; its failure here is not "
                        "recorded", run_id)

    def _write_result(self, run_id: int, status: str, values: dict[str, Any]) -> None:
        finished = utcnow()
        last: DBAPIError | None = None
        for delay in (0.0, *self.retry_delays):
            time.sleep(delay)
            try:
                self._apply_result(run_id, status, values, finished)
                return
            except DBAPIError as exc:
                if not _transient(exc):
                    raise
                last = exc
        assert last is not None
        path = self._spool(run_id, status, values, finished)
        reason = redact(str(last.orig).strip().splitlines()[0] if last.orig else str(last),
                        self.url)
        raise UserError(f"could not record run {run_id} in {self.where} ({reason}); the "
                        f"result is saved in {path}: record it with `sgid-bench runs "
                        "import-spool` once the database is back (the next run also does)")

    def _apply_result(self, run_id: int, status: str, values: dict[str, Any],
                      finished: datetime) -> None:
        token = self._token(run_id)
        with self.session() as s:
            started = s.scalar(select(Run.started_at).where(Run.id == run_id))
            stmt = update(Run).where(Run.id == run_id)
            if token is not None:
                stmt = stmt.where(Run.claim_token == token, Run.status == RUNNING)
            wall = (finished - _aware(started)).total_seconds() if started else None
            count = s.execute(stmt.values(status=status, finished_at=finished,
                                          wall_time_s=wall, **values)).rowcount  # type: ignore[attr-defined]
        if count != 1:
            raise ClaimLost(
                f"run {run_id} was taken over by another worker (no heartbeat from here for "
                f"over the lease of {self.lease_s:g} s), so this result was not recorded; if "
                "workers are busy for longer, raise SGID_BENCH_LEASE")

    def _token(self, run_id: int) -> str | None:
        claim = self._claims.get(run_id)
        return claim[0] if claim else None

    # -- reaping ------------------------------------------------------------------------

    def reap(self, quiet: bool = False) -> list[str]:
        """Mark failed the running claims that will never finish: their process is dead
        (judged only where its PID is ours to judge) or their heartbeat is older than the
        lease. Returns (and logs) one line per reclaimed run."""
        if self.readonly:
            return []
        now, scope = utcnow(), pid_scope()
        cutoff = now - timedelta(seconds=self.lease_s)
        with self.session() as s:
            rows = s.scalars(select(Run).where(Run.status == RUNNING)).all()
        reclaimed = []
        for row in rows:
            reason = self._stale(row, scope, cutoff)
            if reason and self._mark_reaped(row, reason, now):
                line = (f"reclaimed run {row.id} ({row.method} / {row.backbone} / "
                        f"{row.dataset} / seed {row.seed}): {reason}")
                reclaimed.append(line)
                if not quiet:
                    log.warning("%s", line)
        return reclaimed

    def reap_interrupted(self) -> int:
        """:meth:`reap`, returning how many runs it reclaimed."""
        return len(self.reap())

    def _stale(self, row: Run, scope: str | None, cutoff: datetime) -> str | None:
        space, _, started = (row.pid_scope or "").partition("#")
        same_scope = (row.host == socket.gethostname() and scope is not None
                      and space == scope.partition("#")[0])
        if same_scope and row.pid is not None and not process_alive(row.pid, started or None):
            return f"interrupted: process {row.pid} on {row.host} ended before finishing"
        beat = _aware(row.heartbeat_at or row.started_at)
        if beat < cutoff:
            return (f"interrupted: no heartbeat from process {row.pid} on {row.host} since "
                    f"{beat:%Y-%m-%d %H:%M:%S} UTC (lease {self.lease_s:g} s)")
        return None

    def _mark_reaped(self, row: Run, reason: str, now: datetime) -> bool:
        # Conditional on the claim being unchanged: a finish or a new claim in between wins.
        # (Comparing with a None token renders IS NULL.)
        same = Run.claim_token == row.claim_token
        with self.session() as s:
            result = s.execute(update(Run).where(Run.id == row.id, Run.status == RUNNING, same)
                               .values(status=FAILED, error=reason, finished_at=now))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- reading ------------------------------------------------------------------------

    def runs(self, status: str | None = DONE, *,
             on_invalid: Callable[[int, str], None] | None = None,
             **filters: Any) -> Sequence[Run]:
        """Runs matching column filters (a list value means any of). With ``on_invalid``,
        a row that cannot be read (invalid JSON) is skipped and reported to it."""
        stmt = select(Run).order_by(Run.id)
        if status:
            stmt = stmt.where(Run.status == status)
        for key, value in filters.items():
            if value is None:
                continue
            col = getattr(Run, key)
            stmt = stmt.where(col.in_(value) if isinstance(value, (list, tuple)) else col == value)
        try:
            with self.session() as s:
                return s.scalars(stmt).all()
        except ValueError:
            if on_invalid is None:
                raise
        return self._readable_runs(stmt, on_invalid)

    def _readable_runs(self, stmt: Any, on_invalid: Callable[[int, str], None]) -> list[Run]:
        # One bad row spoils the whole result: read the rows one by one to skip it alone.
        with self.session() as s:
            ids = s.scalars(stmt.with_only_columns(Run.id)).all()
        out = []
        for run_id in ids:
            try:
                with self.session() as s:
                    out.append(s.get_one(Run, run_id))
            except ValueError as exc:
                on_invalid(run_id, f"{type(exc).__name__}: {exc}")
        return out

    # -- spool --------------------------------------------------------------------------

    def _spool(self, run_id: int, status: str, values: dict[str, Any],
               finished: datetime) -> Path | str:
        token, row = self._claims.get(run_id, (None, {}))
        record = {"kind": "sgid-bench result", "db": self.identity, "run_id": run_id,
                  "claim_token": token, "status": status, "finished_at": finished,
                  "values": _finite_json(values), "row": row}
        payload = json.dumps(record, default=_json_default, allow_nan=False, indent=1)
        name = f"{finished:%Y%m%dT%H%M%S%f}-run{run_id}-{secrets.token_hex(4)}.json"
        for directory in spool_dirs():
            try:
                directory.mkdir(parents=True, exist_ok=True)
                tmp = directory / f".{name}.tmp"
                tmp.write_text(payload, encoding="utf-8")
                os.replace(tmp, directory / name)
                return directory / name
            except OSError:
                continue
        # Nowhere to write: the result goes out in the error message rather than be lost.
        return "(no writable spool directory) " + json.dumps(record, default=_json_default,
                                                             allow_nan=False)

    def import_spool(self, quiet: bool = False) -> list[str]:
        """Record the spooled results meant for this database; one line per file."""
        self._spool_checked = True
        lines = []
        for path in sorted(p for d in spool_dirs() if d.is_dir() for p in d.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                lines.append(f"{path}: unreadable ({exc}); left in place")
                continue
            if record.get("kind") != "sgid-bench result" or record.get("db") != self.identity:
                continue
            outcome = self._import_record(record)
            if not outcome.startswith("kept"):  # a kept file waits for the next import
                path.unlink(missing_ok=True)
            lines.append(f"{path}: run {record['run_id']} {outcome}")
        for line in lines if not quiet else []:
            log.warning("%s", line)
        return lines

    def import_spool_once(self) -> None:
        """:meth:`import_spool` the first time it is called on this Store."""
        if not self._spool_checked and not self.readonly:
            self.import_spool()

    def _import_record(self, record: dict[str, Any]) -> str:
        row_values = {k: _from_json(k, v) for k, v in (record.get("row") or {}).items()}
        values = dict(record["values"], status=record["status"],
                      finished_at=_from_json("finished_at", record["finished_at"]))
        token = record.get("claim_token")
        with self.session() as s:
            row = None
            if row_values:
                row = s.scalar(select(Run).where(Run.config_hash == row_values["config_hash"],
                                                 Run.seed == row_values["seed"]))
            elif record.get("run_id") is not None:
                row = s.get(Run, record["run_id"])
            if row is None:
                if not row_values:
                    return "discarded (its row is gone and the spool file lacks it)"
                s.add(Run(**{**row_values, **values}))
                return f"recorded as {record['status']} (row re-created)"
            if row.claim_token != token and row.status == DONE:
                return "discarded (already done by another worker)"
            if row.claim_token != token and row.status == RUNNING:
                return "kept (running in another worker now; import again later)"
            if row.claim_token != token and record["status"] == FAILED:
                return "discarded (a failure superseded by a later claim)"
            for key, value in values.items():
                setattr(row, key, value)
            row.wall_time_s = (_aware(values["finished_at"])
                               - _aware(row.started_at)).total_seconds()
            return f"recorded as {record['status']}"


def _sqlite_path(parsed: URL) -> Path | None:
    """The file of a SQLite URL; None for in-memory databases and other backends."""
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database.startswith("file:"):
        database = database[5:].partition("?")[0]
        if parsed.query.get("mode") == "memory":
            return None
    if not database or database == ":memory:":
        return None
    return Path(database)


def _known_revisions() -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}


def _transient(exc: DBAPIError) -> bool:
    """Whether waiting may help: a lost connection, a locked or full database."""
    return isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated


def check_storable(seed: int, config: Any) -> None:
    """What every database can store: a 64-bit seed, finite numbers in the config."""
    if not -(2**63) <= seed < 2**63:
        raise UserError(f"seed {seed} does not fit in 64 bits; pass a seed below 2**63")
    bad = _non_finite(config, "")
    if bad:
        raise UserError(f"parameter {bad} is not a finite number (NaN or infinity cannot be "
                        "stored as JSON); pass a finite value")


def _non_finite(value: Any, path: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path.lstrip('.')}={value}"
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, (list, tuple)) else ())
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]")
        if found:
            return found
    return None


def _finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities as null (PostgreSQL's JSON rejects them) and
    numpy scalars as Python numbers (a metric computed with numpy)."""
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot spool a {type(value).__name__}")


def _from_json(key: str, value: Any) -> Any:
    if key.endswith("_at") and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value


def spool_dirs() -> list[Path]:
    """Where results that could not be recorded wait: ``$SGID_BENCH_HOME/spool``, else the
    temporary directory."""
    import tempfile

    from sgid_bench.context import default_home

    return [default_home() / "spool", Path(tempfile.gettempdir()) / "sgid-bench-spool"]


def _aware(dt: datetime) -> datetime:
    # SQLite returns naive datetimes; they were written as UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def pid_scope() -> str | None:
    """This process's PID space and start: ``<boot id>/<PID namespace>#<start time>``
    (None off Linux). Two containers with one hostname have different namespaces; two
    hosts, different boots; a PID reused by a later process, a different start time."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}#{process_start_time('self')}"
    except OSError:
        return None


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which is in parentheses and
    may itself hold spaces): [0] the state, [19] the start time; None without /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_start_time(pid: int | str) -> str:
    """Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    if fields is None:
        raise OSError(f"no /proc entry for process {pid}")
    return fields[19]


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` of this host may still finish its run; with ``started``
    (its recorded start time), a process that now holds a reused PID is not it."""
    if pid == os.getpid():
        return True
    fields = _stat_fields(pid)
    if started is not None and fields is not None and fields[19] != started:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed child that its parent has not reaped yet is a zombie: it answers kill(0)
    # but will never finish its run. Without /proc, kill(0) decides.
    return fields is None or fields[0] not in ("Z", "X")
