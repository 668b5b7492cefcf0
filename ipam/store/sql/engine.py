"""The SQL engine: connections, the one SQLite writer, and transactions whose contention of
any kind surfaces as `Busy` (which the service retries).

Correctness rests on the database, not on the process: unique constraints, row locks and
conditional updates (see uow.py). What this module adds is how transactions are run: on
SQLite, one writer, taken in-process first, on one long-lived connection; on PostgreSQL a
connection pool. A lost race, a deadlock, a serialization failure or SQLite busy all become
`Busy`, from whichever layer raised them (Core, or the raw statements of the pod path).
"""
from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError

from ... import deadline
from ...errors import Busy
from ..signal import SignalHub
from .uow import SqlUnitOfWork, driver_connection

log = logging.getLogger(__name__)

# Where a PostgreSQL connection's info names the unit of work whose statements wait (uow.py).
_QUEUED_ON = "ecnet_queued_on"


def connection_gone(dbapi_conn: Any) -> bool:
    """Whether an idle psycopg connection is known dead without asking the server: closed,
    broken, or its socket readable (an idle session is sent nothing but the server's
    termination notice, or EOF). A network that went silent is left to TCP keepalives and
    the first statement's error (Busy), as a ping would have been."""
    if dbapi_conn.closed or dbapi_conn.broken:
        return True
    try:
        fd = dbapi_conn.pgconn.socket
    except Exception:  # noqa: BLE001 - psycopg's error for a connection without a socket
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def _pg_transient_errors() -> tuple[type[Exception], ...]:
    """psycopg's classes for SQLSTATE 40001 (serialization), 40P01 (deadlock), 55P03 (lock
    not available) and 57014 (statement timeout): worth a retry. Imported only for a
    PostgreSQL URL (an extra)."""
    from psycopg import errors as pg
    return (pg.SerializationFailure, pg.DeadlockDetected, pg.LockNotAvailable,
            pg.QueryCanceled)


@dataclass(frozen=True)
class PgTimeouts:
    """How long a PostgreSQL session may wait, in seconds. Without them one stuck
    transaction holding the configuration row blocks every worker (health checks and reads
    too), and the allocations queued behind it commit long after their callers gave up."""

    lock: float = 5.0            # a row lock: then 55P03, which is Busy (retried)
    statement: float = 30.0      # any one statement
    idle_in_transaction: float = 60.0   # a session that began and went quiet (a hung peer)
    connect: int = 5
    keepalive_idle: int = 30     # TCP keepalives: a database host gone silent is noticed
    keepalive_interval: int = 10
    keepalive_count: int = 3

    def connect_args(self) -> dict[str, Any]:
        """psycopg's connect() arguments: the timeouts as session settings (libpq options)."""
        def ms(seconds: float) -> int:
            return max(1, int(seconds * 1000))
        options = (f"-c lock_timeout={ms(self.lock)} -c statement_timeout={ms(self.statement)}"
                   f" -c idle_in_transaction_session_timeout={ms(self.idle_in_transaction)}")
        return {"connect_timeout": self.connect, "options": options, "keepalives": 1,
                "keepalives_idle": self.keepalive_idle,
                "keepalives_interval": self.keepalive_interval,
                "keepalives_count": self.keepalive_count}


def _busy(what: str, exc: BaseException) -> Busy:
    """`Busy` saying only `what`: the database's own text (a constraint's DETAIL names key
    values) goes to the debug log, never to the caller."""
    log.debug("%s: %s", what, exc)
    return Busy(f"{what}; retry")


class SqlEngine:
    """Owns the SQLAlchemy engine; `tx(write)` runs one transaction."""

    def __init__(self, url: str, *, pool_size: int = 8,
                 timeouts: PgTimeouts | None = None) -> None:
        self.url = url
        self.postgres = url.startswith("postgresql")
        self.sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.postgres:
            # No pool_pre_ping: its ping is a round trip on every checkout (6 % of the
            # controller's samples under load); `_setup_postgres` checks the socket instead.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size,
                          connect_args=(timeouts or PgTimeouts()).connect_args())
        self.engine: Engine = create_engine(url, **kwargs)
        self._dbapi: Any = self.engine.dialect.loaded_dbapi
        self._driver_error: type[Exception] = self._dbapi.Error
        self._transient: tuple[type[Exception], ...] = (
            _pg_transient_errors() if self.postgres else ())
        # SQLite has one writer; taking it in-process first avoids busy-waiting on the file
        # lock, and BEGIN IMMEDIATE avoids read-to-write upgrade deadlocks across processes.
        self._write_lock = threading.Lock() if self.sqlite else None
        # ...and every write goes through one long-lived connection. In WAL mode a connection
        # drops its whole page cache whenever another connection wrote since its last
        # transaction, so writes spread over a pool would each start cold (measured: ~3x the
        # CPU per allocation under concurrent load); the one writer keeps its cache warm.
        self._writer: Connection | None = None
        # The change-log signals of this process's tailers (SQLite: PostgreSQL notifies).
        self.commits = SignalHub()
        if self.sqlite:
            self._setup_sqlite()
        if self.postgres:
            self._setup_postgres()

    def _setup_sqlite(self) -> None:
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.info.get("ecnet_begin", "DEFERRED")
            driver_connection(conn).execute(f"BEGIN {mode}")

    def _setup_postgres(self) -> None:
        @event.listens_for(self.engine, "checkout")
        def _on_checkout(dbapi_conn: Any, _rec: Any, _proxy: Any) -> None:
            # The pool hands out no connection the server has closed (restarted, crashed,
            # terminated it): an idle connection has nothing to read, so a readable socket
            # is the server's goodbye (or EOF). No round trip; SQLAlchemy then connects anew.
            if connection_gone(dbapi_conn):
                raise DisconnectionError("the server closed this pooled connection")

        @event.listens_for(self.engine, "before_execute")
        def _before_core(conn: Connection, *_args: Any) -> None:
            # A Core statement of an admin path must come after the pod path's queued ones.
            uow = conn.info.get(_QUEUED_ON)
            if uow is not None:
                uow.send_queued()

    def _sqlite_writer(self) -> Connection:
        """The one write connection (created again if an error invalidated it)."""
        w = self._writer
        if w is not None and not (w.closed or w.invalidated) and \
                driver_connection(w).in_transaction:
            w.invalidate()   # left inside a transaction somehow: never build on that
        if w is None or w.closed or w.invalidated:
            w = self.engine.connect()
            w.info["ecnet_begin"] = "IMMEDIATE"
            # Room for the hot index pages of a large pool (allocated as used, not upfront).
            driver_connection(w).execute("PRAGMA cache_size=-65536")
            self._writer = w
        return w

    @contextmanager
    def tx(self, write: bool, consistent: bool = False) -> Iterator[SqlUnitOfWork]:
        """One transaction. `consistent` (reads): every statement sees the same snapshot
        (REPEATABLE READ on PostgreSQL; a SQLite read transaction always does)."""
        if write and self._write_lock is not None:
            with self._write_lock:
                writer = self._sqlite_writer()
                try:
                    with self._in_tx(writer) as uow:
                        yield uow
                    if uow.logged:
                        self.commits.fire()   # the tailers read the log now, not at the poll
                except BaseException:
                    # A failed rollback must not leave the one writer inside a transaction
                    # (every later BEGIN would fail): drop it, the next write opens another.
                    if writer.invalidated or driver_connection(writer).in_transaction:
                        writer.invalidate()
                        self._writer = None
                    raise
            return
        try:
            conn_cm = self.engine.connect()
        except OperationalError as exc:
            # The server is down or restarting (PostgreSQL crashed, failed over): no
            # transaction began, so the caller may retry at once, and a pod gets "try again
            # later" instead of an internal error. The checkout's socket check drops the
            # pool's dead connections once it is back.
            raise _busy("database unreachable", exc) from exc
        with conn_cm as conn:
            if self.sqlite:
                conn.info["ecnet_begin"] = "DEFERRED"
            if consistent and self.postgres:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with self._in_tx(conn, own_begin=self.postgres and not consistent) as uow:
                yield uow

    @contextmanager
    def _in_tx(self, conn: Connection, own_begin: bool = False) -> Iterator[SqlUnitOfWork]:
        """One transaction on `conn`; contention of any kind becomes `Busy`.

        `own_begin` (PostgreSQL): the transaction's BEGIN is ours, queued to go with its first
        statement in one round trip, instead of psycopg's, which is a round trip of its own.
        The driver is in autocommit mode meanwhile (it sends no BEGIN; it still sends COMMIT
        or ROLLBACK for a transaction in progress), and every statement of the transaction
        goes after the queued BEGIN: the unit of work's own and, through the `before_execute`
        listener, Core's. A statement that ran outside it (a bug: it has committed on its
        own by then) raises rather than let the transaction go on as if it held it (uow.py)."""
        uow: SqlUnitOfWork | None = None
        raw = driver_connection(conn) if own_begin else None
        if raw is not None:
            raw.autocommit = True
        try:
            with conn.begin():
                uow = SqlUnitOfWork(conn, self.postgres, lambda exc: self._as_busy(conn, exc))
                if self.postgres:
                    conn.info[_QUEUED_ON] = uow
                if raw is not None:
                    uow.begin_later()
                yield uow
                if uow.lost:
                    # A caller may have taken that savepoint's error as its own and gone on.
                    raise Busy("a savepoint could not be rolled back; nothing committed")
                deadline.check_before_commit()
                uow.finish(time.time())   # PostgreSQL: the COMMIT too, with the last writes
        except (DBAPIError, self._driver_error) as exc:
            busy = self._as_busy(conn, exc)
            if busy is not None:
                raise busy from exc
            raise
        finally:
            if uow is not None:
                uow.discard_queued()
                if self.postgres and not conn.invalidated:
                    conn.info.pop(_QUEUED_ON, None)
            if raw is not None and not conn.invalidated:
                self._leave_autocommit(conn, raw)

    @staticmethod
    def _leave_autocommit(conn: Connection, raw: Any) -> None:
        """Back to the driver's own transactions for whoever uses the connection next (a
        migration, a consistent read); a connection that cannot is not pooled again."""
        try:
            raw.autocommit = False
        except Exception as exc:  # noqa: BLE001 - psycopg's error for a connection not idle
            log.debug("connection left in autocommit mode, dropped: %s", exc)
            conn.invalidate(exc)

    def _as_busy(self, conn: Connection, exc: BaseException) -> Busy | None:
        """The `Busy` a database error means (contention of any kind, a lost connection),
        None for any other error: for a whole transaction and for one savepoint in it."""
        if isinstance(exc, DBAPIError):
            return _busy("database contention", exc) if self._is_transient(exc) else None
        if isinstance(exc, self._driver_error):
            # Raised by the raw statements of the pod path, which Core never saw.
            if self.postgres and driver_connection(conn).broken:
                conn.invalidate(exc)
                return _busy("database connection lost", exc)
            if self._is_transient_driver(exc):
                return _busy("database contention", exc)
        return None

    def _is_transient(self, exc: DBAPIError) -> bool:
        if isinstance(exc, IntegrityError):
            return True  # lost an insert race; the retry will see the winner's row
        if exc.connection_invalidated:
            return True  # the database went away; the retry gets a fresh connection
        if isinstance(exc.orig, self._transient):
            return True
        return isinstance(exc, OperationalError) and "locked" in str(exc).lower()

    def _is_transient_driver(self, exc: Exception) -> bool:
        """The same test for errors raised by the raw statements of the pod path."""
        if isinstance(exc, (self._dbapi.IntegrityError, *self._transient)):
            return True
        text = str(exc).lower()
        return isinstance(exc, self._dbapi.OperationalError) and ("locked" in text
                                                                   or "busy" in text)

    def close(self) -> None:
        if self._write_lock is not None:
            with self._write_lock:
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
        self.engine.dispose()
