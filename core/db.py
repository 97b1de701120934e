"""Database access: one SQLAlchemy engine for SQLite (default) or PostgreSQL (psycopg 3)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from .errors import Unavailable
from .migrations import MIGRATIONS, version_table
from .ref import database_failure
from .settings import redact_url

log = logging.getLogger("lora_studio.db")

CONNECT_TIMEOUT_S = 10  # seconds to reach PostgreSQL before a start-up or request fails


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """An aware datetime (comparable with others); SQLite hands back naive datetimes stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC."""
    return None if value is None else as_utc(value).astimezone(timezone.utc).isoformat()


def normalize_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain postgres URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Database:
    def __init__(self, url: str):
        url = normalize_url(url)
        self.url_for_logs = redact_url(url)
        if url.startswith("sqlite"):
            path = sa.engine.make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            _sqlite_transactions(self.engine)
        else:
            # a server behind a firewall that drops packets would otherwise hang start-up (and each request)
            # for the operating system's TCP timeout, minutes; a connect_timeout in the URL wins
            timeout = {} if "connect_timeout" in sa.engine.make_url(url).query else {"connect_timeout": CONNECT_TIMEOUT_S}
            self.engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=timeout)
        self.is_postgres = self.engine.dialect.name == "postgresql"

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A connection inside a transaction, committed on exit (rolled back on error). The database
        going away meanwhile (server down, connection terminated, SQLite file unreadable) is a 503
        `database_unavailable` for the caller, not an internal error; the pool replaces the dead
        connection (pool_pre_ping), so the next request works once the database is back."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
            log.warning("database failure: %s", database_failure(e))  # the log gets PostgreSQL's detail lines
            raise Unavailable(f"the database failed ({database_failure(e, brief=True)}); try again",
                              code="database_unavailable") from None

    def migrate(self) -> int:
        """Apply pending migrations; concurrent start-ups are serialised. Returns the version."""
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(84010001)"))
            version_table.create(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(version_table.c.version))).scalar() or 0
            for version, description, apply in MIGRATIONS:
                if version > current:
                    log.info("applying migration %d: %s", version, description)
                    apply(conn)
                    conn.execute(version_table.insert().values(version=version, description=description,
                                                               applied_at=utcnow()))
                    current = version
        return current

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_transactions(engine: sa.Engine) -> None:
    """Make pysqlite transactional for DDL too, take the write lock at BEGIN (no lock-upgrade
    deadlocks between threads), wait for locks instead of failing, and enforce foreign keys."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
