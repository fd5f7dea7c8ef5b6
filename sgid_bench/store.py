"""The results store: one row per (config hash, seed), SQLAlchemy 2.0 typed ORM.

Default ``sqlite:///sgid-bench.db`` in the working directory (WAL); any SQLAlchemy URL via
``--db`` or ``SGID_BENCH_DB`` (PostgreSQL for shared use). A run is *claimed* atomically
before it starts, so two workers never run the same (config hash, seed).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sgid_bench.errors import UserError

DEFAULT_URL = "sqlite:///sgid-bench.db"
#: Bumped with each entry of MIGRATIONS (SQLite ``PRAGMA user_version``).
SCHEMA_VERSION = 1
RUNNING, DONE, FAILED = "running", "done", "failed"


def default_url() -> str:
    return os.environ.get("SGID_BENCH_DB") or DEFAULT_URL


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
    seed: Mapped[int]
    method: Mapped[str] = mapped_column(String(200), index=True)
    backbone: Mapped[str] = mapped_column(String(100), index=True)
    dataset: Mapped[str] = mapped_column(String(500), index=True)
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
    dataset: Mapped[str] = mapped_column(String(500))
    seed: Mapped[int]
    params: Mapped[dict[str, Any]]
    models: Mapped[dict[str, Any]]
    path: Mapped[str] = mapped_column(Text)
    images: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# Small ordered migrations keyed by SQLite's user_version; index i upgrades i -> i+1.
MIGRATIONS: list[str] = []


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


class Store:
    """Typed access to the results database."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        try:
            self.engine: Engine = create_engine(self.url)
        except (ArgumentError, ImportError) as exc:
            raise UserError(
                f"cannot use database URL {self.url!r} ({exc}); pass a SQLAlchemy URL such "
                "as sqlite:///results.db or postgresql+psycopg://user@host/db"
            ) from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    # Workers opening a fresh database together would race to create tables.
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(5120931)")
                Base.metadata.create_all(conn)
            self._migrate()
        except OperationalError as exc:
            reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
            raise UserError(
                f"cannot open database {self.url!r}: {reason}; pass a writable location "
                "with --db or SGID_BENCH_DB"
            ) from None

    def close(self) -> None:
        """Close pooled connections (PostgreSQL warns about connections left open)."""
        self.engine.dispose()

    def _migrate(self) -> None:
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.begin() as conn:
            current = conn.exec_driver_sql("PRAGMA user_version").scalar() or 0
            for statement in MIGRATIONS[current:]:
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(f"PRAGMA user_version={SCHEMA_VERSION}")

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
        concurrent workers never duplicate a run. A failed row is re-claimed."""
        now = utcnow()
        values = dict(fields, status=RUNNING, error=None, host=socket.gethostname(),
                      pid=os.getpid(), started_at=now, finished_at=None, wall_time_s=None,
                      top1=None, top5=None, loss=None, per_class=None, extra=None)
        self.reap_interrupted()
        try:
            with self.session() as s:
                s.add(Run(config_hash=config_hash, seed=seed, **values))
            return self.get(config_hash, seed).id  # type: ignore[union-attr]
        except IntegrityError:
            pass
        allowed = [FAILED, DONE] if force else [FAILED]
        with self.session() as s:
            # A conditional UPDATE is atomic on SQLite and PostgreSQL: one claimer wins.
            result = s.execute(
                update(Run)
                .where(Run.config_hash == config_hash, Run.seed == seed,
                       Run.status.in_(allowed))
                .values(**values)
                .returning(Run.id)
            )
            row = result.first()
        return row[0] if row else None

    def finish(self, run_id: int, **metrics: Any) -> None:
        """Record a run as done with its metrics (one transaction)."""
        now = utcnow()
        with self.session() as s:
            run = s.get_one(Run, run_id)
            for key, value in metrics.items():
                setattr(run, key, value)
            run.status, run.finished_at = DONE, now
            run.wall_time_s = (now - _aware(run.started_at)).total_seconds()

    def fail(self, run_id: int, error: str) -> None:
        """Record a run as failed with its error."""
        now = utcnow()
        with self.session() as s:
            run = s.get_one(Run, run_id)
            run.status, run.error, run.finished_at = FAILED, error, now
            run.wall_time_s = (now - _aware(run.started_at)).total_seconds()

    def reap_interrupted(self) -> int:
        """Mark failed the rows left running by dead processes of this host."""
        host = socket.gethostname()
        with self.session() as s:
            rows = s.scalars(select(Run).where(Run.status == RUNNING, Run.host == host)).all()
            dead = [r for r in rows if r.pid is not None and not process_alive(r.pid)]
            for r in dead:
                r.status, r.finished_at = FAILED, utcnow()
                r.error = f"interrupted: process {r.pid} on {host} ended before finishing"
        return len(dead)

    def runs(self, status: str | None = DONE, **filters: Any) -> Sequence[Run]:
        """Runs matching column filters (a list value means any of)."""
        stmt = select(Run).order_by(Run.id)
        if status:
            stmt = stmt.where(Run.status == status)
        for key, value in filters.items():
            if value is None:
                continue
            col = getattr(Run, key)
            stmt = stmt.where(col.in_(value) if isinstance(value, (list, tuple)) else col == value)
        with self.session() as s:
            return s.scalars(stmt).all()


def _aware(dt: datetime) -> datetime:
    # SQLite returns naive datetimes; they were written as UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still finish its run."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed child that its parent has not reaped yet is a zombie: it answers kill(0)
    # but will never finish its run.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state follows the command name in parentheses, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
