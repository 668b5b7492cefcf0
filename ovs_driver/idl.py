"""One python-ovs ``Idl`` per client, kept current by one thread of its own.

python-ovs (``ovs.db.idl``) owns the protocol: framing, reconnect with backoff,
the monitor (``monitor_cond_since`` with resync after a reconnect), the replica and
the datum codec. What this module adds is the threading the Idl does not have:

- One lock (a Condition) guards the Idl. The IDL thread holds it while
  ``Idl.run()`` applies what the server sent, and releases it while it sleeps in
  ``poll``. A caller holds it while it reads the replica or builds and sends a
  transaction.
- Every ``run()`` wakes the waiters, so waiting for a reply, for the replica to
  catch up or for ovs-vswitchd is an event, never a sleep loop.
- Transactions from several threads are in flight at once, pipelined on the one
  connection (python-ovs keeps them apart by request id). ovsdbapp instead commits
  them one by one inside its connection thread, behind a queue.

- A plan that lost a race (a ``Row.verify`` failed, or an insert hit a unique
  index) is planned again once the replica has moved on (``transact``).

Everything that crosses out of here is an ``OvsError``; python-ovs objects (rows)
are reached through the small :class:`IdlRow` protocol so ``Any`` stays at the edge.
The few python-ovs internals used are used here only: ``Idl._session`` (is the
connection up, is anything left unsent), ``Row._data`` and ``Row._table`` (the
committed datums, for O(1) membership and in the notify hook).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar, cast

import ovs.db.data
import ovs.db.idl
import ovs.db.types
import ovs.jsonrpc
import ovs.poller
import ovs.stream
import ovs.timeval
import ovs.util

from ovs_driver import jsonparse
from ovs_driver.errors import OvsConnectionError, OvsError, OvsTimeout, OvsTransactionError

log = logging.getLogger(__name__)

T = TypeVar("T")
Txn = ovs.db.idl.Transaction
RETRIES = 3
# A lost race is usually settled at once (the winner's update reaches us before the
# answer that we lost); this bounds the wait for the replica to catch up before a retry.
_CATCH_UP = 1.0


def col(row: IdlRow, column: str) -> Any:
    """A column's committed value, read straight off python-ovs's datum: scalars as
    they are, maps as dicts, other sets (optional columns too) as lists, references as
    uuids. ``row.column`` gives the same (references as rows) via ``Row.__getattr__``,
    which also merges a transaction's pending writes and so converts a map three
    times: ~50 us for a port's external_ids, paid per interface by every scan. Never
    a pending write."""
    datum = row._data[column]
    if datum.type.is_map():
        return {k.value: v.value for k, v in datum.values.items()}
    if datum.type.is_scalar():
        value = datum.as_scalar()
        return datum.type.key.default() if value is None else value
    return [k.value for k in datum.values]


class IdlRow(Protocol):
    """A row of the replica (``ovs.db.idl.Row``): columns are attributes, written
    inside a transaction; read them with :func:`col`."""

    uuid: uuid.UUID

    def __getattr__(self, column: str) -> Any: ...
    def __setattr__(self, column: str, value: Any) -> None: ...
    def verify(self, column_name: str) -> None: ...
    def addvalue(self, column_name: str, key: Any) -> None: ...
    def delvalue(self, column_name: str, key: Any) -> None: ...
    def setkey(self, column_name: str, key: Any, value: Any) -> None: ...
    def increment(self, column_name: str) -> None: ...


@dataclass
class TxnBuilder:
    """The transaction a plan is building: inserts by table name, and whether it asked
    for an increment (python-ovs allows one per transaction)."""

    raw: Any  # ovs.db.idl.Transaction
    idl: Any  # ovs.db.idl.Idl
    increments: bool = False

    def insert(self, table: str) -> IdlRow:
        return cast(IdlRow, self.raw.insert(self.idl.tables[table]))

    def increment(self, row: IdlRow, column: str) -> None:
        row.increment(column)
        self.increments = True


@dataclass(frozen=True)
class Committed(Generic[T]):
    """A committed (or, UNCHANGED, unneeded) transaction and what its plan returned."""

    value: T
    increment: int | None  # the incremented column's new value; None if nothing was sent
    _raw: Any

    def real_uuid(self, provisional: uuid.UUID) -> uuid.UUID:
        """The uuid the server gave a row this transaction inserted; any other uuid
        is returned as it is."""
        real = self._raw.get_insert_uuid(provisional)
        return real if real is not None else provisional


def parse_txn_error(text: str) -> tuple[str, Any]:
    """python-ovs keeps the failed op's reply as JSON text (``{"error": ..., "details":
    ...}``); split it into OVSDB's short error tag and its details."""
    try:
        doc = json.loads(text)
    except ValueError:
        return text, None
    if isinstance(doc, dict):
        return str(doc.get("error", text)), doc.get("details")
    return text, None


def is_lost_race(error: str, details: Any) -> bool:
    """A constraint violation that another writer caused: the row we inserted already
    exists under a unique index (Bridge/Port/Interface ``name``), or a second root row
    (``Open_vSwitch`` has maxRows 1). The unique index is the server-side precondition
    here: re-planning from a caught-up replica turns the insert into an update."""
    text = str(details or "")
    return error == "constraint violation" and (
        "for index on column" in text or "schema-defined limit" in text)


def fetch_schema(remote: str, db: str, timeout: float) -> Any:
    """The server's own schema (``get_schema``), so the replica matches the server and
    an unreachable remote fails the constructor at once, not after a timeout."""
    deadline = ovs.timeval.msec() + int(timeout * 1000)
    err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote),
                                               int(timeout * 1000))
    if err:
        raise OvsConnectionError(f"cannot connect to ovsdb-server remote={remote}: "
                                 f"{_describe(err)}")
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        request = ovs.jsonrpc.Message.create_request("get_schema", [db])
        err = rpc.send(request)
        while not err:
            err, msg = rpc.recv()
            if err == errno.EAGAIN:
                if ovs.timeval.msec() >= deadline:
                    raise OvsTimeout(f"no schema from ovsdb-server after {timeout}s "
                                     f"remote={remote}")
                poller = ovs.poller.Poller()
                rpc.run()
                rpc.wait(poller)
                rpc.recv_wait(poller)
                poller.timer_wait_until(deadline)
                poller.block()
                err = 0
                continue
            if msg is not None and msg.id == request.id:
                if msg.type != ovs.jsonrpc.Message.T_REPLY:
                    raise OvsConnectionError(f"get_schema {db} refused remote={remote}: "
                                             f"{msg.error}")
                return msg.result
        raise OvsConnectionError(f"get_schema failed remote={remote}: {_describe(err)}")
    finally:
        rpc.close()


def _describe(err: int) -> str:
    return "connection closed by the server" if err == ovs.util.EOF else os.strerror(err)


class _NamedIdl(ovs.db.idl.Idl):  # type: ignore[misc]
    """python-ovs's Idl plus a name -> uuid map for each table in ``named``, kept by
    the ``notify`` hook python-ovs calls for every row the server creates, changes or
    deletes. Cheaper than python-ovs's custom indexes (sortedcontainers), which take
    a row out and put it back on every change of any of its columns: a port's ofport
    or a bridge's port list. After a resync python-ovs drops its rows without a
    notice, so an entry may outlive its row: lookups check the row is still there."""

    def __init__(self, remote: str, helper: Any, named: Iterable[str]) -> None:
        super().__init__(remote, helper)
        self.names: dict[str, dict[str, uuid.UUID]] = {t: {} for t in named}

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        names = self.names.get(row._table.name)
        if names is None:
            return
        if event == ovs.db.idl.ROW_UPDATE:
            # ``updates`` holds the old values of the changed columns only.
            if "name" not in updates._data:
                return
            if names.get(col(updates, "name")) == row.uuid:
                del names[col(updates, "name")]  # renamed (never by us; an operator may)
        elif event == ovs.db.idl.ROW_DELETE:
            if names.get(col(row, "name")) == row.uuid:
                del names[col(row, "name")]
            return
        names[col(row, "name")] = row.uuid


class IdlConnection:
    """A python-ovs Idl on ``remote``, monitoring only ``columns``, with rows of the
    ``named`` tables found by name without a scan. Thread-safe."""

    def __init__(self, remote: str, db: str, columns: Mapping[str, Sequence[str]],
                 named: Iterable[str], timeout: float) -> None:
        self.remote = remote
        jsonparse.install()
        helper = ovs.db.idl.SchemaHelper(schema_json=fetch_schema(remote, db, timeout))
        for table, cols in columns.items():
            helper.register_columns(table, list(cols))
        self._idl = _NamedIdl(remote, helper, named)
        self._cond = threading.Condition()
        self._closed = False
        self._failure: BaseException | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._loop, name="ovsdb-idl", daemon=True)
        self._thread.start()
        try:
            with self._cond:
                self._wait_synced(timeout)
        except OvsError:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._wake()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)
        with self._cond:
            self._idl.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._closed:
                        return
                    self._idl.run()
                    self._cond.notify_all()
                    poller = ovs.poller.Poller()
                    self._idl.wait(poller)
                    poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
                poller.block()
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
        except Exception as exc:  # noqa: BLE001 - kept and raised to every caller
            # A python-ovs failure in the IDL thread would otherwise leave callers
            # waiting for updates that never come; they fail fast instead.
            log.exception("ovsdb IDL thread failed remote=%s", self.remote)
            with self._cond:
                self._failure = exc
                self._cond.notify_all()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # a full pipe already wakes it; a closed one means it has stopped

    # -- state (lock held) -------------------------------------------------------------

    def _usable(self) -> None:
        if self._closed:
            raise OvsConnectionError(f"client closed remote={self.remote}")
        if self._failure is not None:
            raise OvsConnectionError(f"IDL thread failed remote={self.remote}: "
                                     f"{self._failure!r}")

    def _synced(self) -> bool:
        # run() restarts the monitor in the same call that sees a new connection, so
        # under the lock "connected and monitoring" never means a stale replica.
        return (self._idl._session.is_connected()
                and self._idl.state == self._idl.IDL_S_MONITORING)

    def _moved_on(self, seqno: int) -> bool:
        """The replica has changed since ``seqno`` (or waiting is pointless)."""
        return self._idl.change_seqno != seqno or self._closed or self._failure is not None

    def _wait_synced(self, timeout: float) -> None:
        self._usable()
        if not self._cond.wait_for(
                lambda: self._synced() or self._closed or self._failure is not None,
                timeout):
            raise OvsConnectionError(f"no current view of ovsdb-server remote={self.remote} "
                                     f"(not connected for {timeout}s)")
        self._usable()

    # -- reads -------------------------------------------------------------------------

    def read(self, fn: Callable[[], T], timeout: float) -> T:
        """``fn()`` under the lock, on a replica that is current (connected and
        monitoring), waiting up to ``timeout`` for one."""
        with self._cond:
            self._wait_synced(timeout)
            return fn()

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Block until ``predicate()`` (evaluated under the lock after every update)
        holds; OvsTimeout names ``what``."""
        with self._cond:
            self._usable()
            ok = self._cond.wait_for(
                lambda: predicate() or self._closed or self._failure is not None, timeout)
            self._usable()
        if not ok:
            raise OvsTimeout(f"timed out after {timeout}s waiting for {what} "
                             f"remote={self.remote}")

    def rows(self, table: str) -> Iterable[IdlRow]:
        """Every row of ``table`` (lock held)."""
        return cast(Iterable[IdlRow], self._idl.tables[table].rows.values())

    def row(self, table: str, row_uuid: uuid.UUID) -> IdlRow | None:
        return cast("IdlRow | None", self._idl.tables[table].rows.get(row_uuid))

    def by_name(self, table: str, name: str) -> IdlRow | None:
        """The row named ``name`` (lock held)."""
        row_uuid = self._idl.names[table].get(name)
        row = self._idl.tables[table].rows.get(row_uuid) if row_uuid is not None else None
        return cast(IdlRow, row) if row is not None and col(row, "name") == name else None

    @staticmethod
    def refers_to(row: IdlRow, column: str, target: IdlRow) -> bool:
        """``target`` is among the rows ``row`` references in ``column``, in O(1) on
        python-ovs's committed datum instead of converting the whole set to rows (a
        bridge's ``ports`` is one entry per pod). Outside a transaction's writes."""
        return ovs.db.data.Atom(ovs.db.types.UuidType, target.uuid) in row._data[column]

    def root(self) -> IdlRow | None:
        """The Open_vSwitch row; None in a database nobody has initialised."""
        return next(iter(self.rows("Open_vSwitch")), None)

    # -- transactions ------------------------------------------------------------------

    def transact(self, what: str, plan: Callable[[TxnBuilder], T | None],
                 timeout: float) -> Committed[T] | None:
        """Plan and commit one transaction; None when the plan finds nothing to do.

        ``plan`` runs under the lock on a current replica and writes rows; it calls
        ``Row.verify`` on what its decision rests on. A failed verify (TRY_AGAIN), a
        lost insert race or a connection that dropped before the answer means: wait
        until the replica has moved on, plan again. Any other failure raises, with
        OVSDB's text (ovsdbapp's ``check_error`` defaults to off; here it cannot).
        """
        last = ""
        for attempt in range(RETRIES):
            with self._cond:
                outcome = self._attempt(what, plan, timeout)
                if not isinstance(outcome, _Replan):
                    return outcome
                last = outcome.reason
                log.debug("ovsdb replanning what=%r attempt=%d: %s", what, attempt, last)
                self._cond.wait_for(partial(self._moved_on, outcome.seqno),
                                    min(_CATCH_UP, timeout))
        raise OvsTransactionError(f"{what}: lost {RETRIES} races in a row (last: {last})")

    def _attempt(self, what: str, plan: Callable[[TxnBuilder], T | None],
                 timeout: float) -> Committed[T] | None | _Replan:
        """One plan and commit (lock held)."""
        self._wait_synced(timeout)
        seqno = self._idl.change_seqno
        txn = TxnBuilder(Txn(self._idl), self._idl)
        txn.raw.add_comment(f"ecnet: {what}")
        t0 = time.perf_counter()
        try:
            value = plan(txn)
            if value is None:
                txn.raw.abort()
                return None
            status = txn.raw.commit()
        except BaseException:
            txn.raw.abort()
            raise
        if self._idl._session.get_backlog():
            self._wake()  # not all sent: the IDL thread must poll for POLLOUT too
        if status == Txn.INCOMPLETE:
            self._cond.wait_for(
                lambda: txn.raw.commit() != Txn.INCOMPLETE
                or not self._idl._session.is_connected()
                or self._closed or self._failure is not None, timeout)
            status = txn.raw.commit()
        if status in (Txn.SUCCESS, Txn.UNCHANGED):
            inc = (txn.raw.get_increment_new_value()
                   if status == Txn.SUCCESS and txn.increments else None)
            log.debug("ovsdb transact what=%r status=%s ms=%.2f", what, status,
                      (time.perf_counter() - t0) * 1000)
            return Committed(value, inc, txn.raw)
        if status == Txn.INCOMPLETE:
            self._usable()
            if not self._idl._session.is_connected():
                raise OvsConnectionError(
                    f"{what}: connection lost before ovsdb-server answered (the change "
                    f"may or may not be committed) remote={self.remote}")
            raise OvsTimeout(f"{what}: no answer from ovsdb-server in {timeout}s "
                             f"remote={self.remote}")
        if status == Txn.TRY_AGAIN:
            return _Replan("a precondition (verify) failed or the connection dropped", seqno)
        if status == Txn.ERROR:
            error, details = parse_txn_error(txn.raw.get_error())
            if is_lost_race(error, details):
                return _Replan(f"{error}: {details}", seqno)
            raise OvsTransactionError(f"{what}: {error}" + (f": {details}" if details else ""),
                                      error=error, details=details)
        raise OvsTransactionError(f"{what}: transaction {status}", error=status)


@dataclass(frozen=True)
class _Replan:
    """An attempt that lost a race: why, and the replica's seqno it planned on."""

    reason: str
    seqno: int
