"""The pod path's round trips to PostgreSQL, pinned: on PostgreSQL an allocation's cost is its
round trips (each a wake-up of the controller's worker, the server and the interpreter lock),
and the group commit runs one transaction at a time, so a statement added to the pod path
slows every allocation. Counted on the wire: libpq's protocol trace of every connection of the
store (an SQLAlchemy `connect` listener turns it on), where each round trip is one Sync (the
extended protocol) or one simple Query message (which may carry several statements) from
the client.

Also what the fewer round trips must not cost: a write sent later (with the next statement
or the COMMIT) still fails its own request alone, and a pooled connection the server closed
is replaced at checkout (no ping), not handed out to fail.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from ipam.batching import Pending
from ipam.domain import AllocationRequest, Node, PodIdentity
from ipam.errors import Busy
from ipam.service import IpamService
from ipam.store.sql import SqlStore
from tests.lab.helpers import wait_until

# BEGIN with the configuration generation; the request's port; the port row; the free range;
# the address with the change log (lock, row, NOTIFY) and the COMMIT.
ALLOCATE = 5
# BEGIN with the configuration; the port; the quarantine with the port's conditional delete;
# the change log with the COMMIT.
RELEASE = 4
# Per request of a batch: SAVEPOINT with the port lookup, the port row, the free range, the
# address with RELEASE SAVEPOINT. Around them: BEGIN with the configuration, and the change
# log with the COMMIT.
PER_BATCHED = 4
BATCH = 2


class WireCount:
    """Round trips of every connection of one store, read off libpq's trace file."""

    def __init__(self, store: SqlStore, path: Path) -> None:
        self.file = open(path, "w+")  # noqa: SIM115 - closed by close()
        self.path = path

        @event.listens_for(store.engine, "connect")
        def _trace(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.pgconn.trace(self.file.fileno())
            dbapi_conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        store.engine.dispose()   # connections made from now on are traced

    def during(self, fn: Any) -> tuple[int, Any]:
        start = os.path.getsize(self.path)
        out = fn()
        with open(self.path) as f:
            f.seek(start)
            lines = f.read().splitlines()
        return sum(1 for ln in lines
                   if ln.startswith("F\t") and ln.split("\t")[2] in ("Sync", "Query")), out

    def close(self) -> None:
        self.file.close()


def _req(cid: str) -> AllocationRequest:
    return AllocationRequest(container_id=cid, ifname="eth0", pool="p",
                             pod=PodIdentity("ns", cid, f"u-{cid}"), node="n1")


@pytest.fixture
def traced(pg_url: str, tmp_path: Path) -> Iterator[tuple[IpamService, WireCount]]:
    store = SqlStore(pg_url)
    wire = WireCount(store, tmp_path / "libpq.trace")
    svc = IpamService(store)
    svc.create_pool("p", "dynamic", quarantine_seconds=30)
    svc.create_subnet("p", "10.97.0.0/16")
    # Warm: the configuration snapshot loaded, psycopg's statements prepared (after 5 uses
    # each: the prepare is a round trip of its own, once per connection).
    for i in range(8):
        svc.allocate(_req(f"warm{i}"))
        svc.release(f"warm{i}", "eth0")
        svc._alloc._allocate_together([Pending(_req(f"warm{i}-{j}"), None) for j in range(2)])
    try:
        yield svc, wire
    finally:
        wire.close()
        store.close()


def test_an_allocation_and_a_release_take_their_round_trips(
        traced: tuple[IpamService, WireCount]) -> None:
    svc, wire = traced
    for i in range(3):
        trips, alloc = wire.during(lambda i=i: svc.allocate(_req(f"a{i}")))
        assert not alloc.existing
        assert trips == ALLOCATE, f"allocation {i}: {trips} round trips"
        trips, rel = wire.during(lambda i=i: svc.release(f"a{i}", "eth0"))
        assert rel.outcome == "quarantined"
        assert trips == RELEASE, f"release {i}: {trips} round trips"


def test_a_batch_takes_four_round_trips_per_request(
        traced: tuple[IpamService, WireCount]) -> None:
    svc, wire = traced
    for n in (2, 3, 4):
        jobs = [Pending(_req(f"b{n}-{i}"), None) for i in range(n)]
        trips, out = wire.during(lambda jobs=jobs: svc._alloc._allocate_together(jobs))
        assert not any(isinstance(a, Exception) for a in out)
        assert trips == BATCH + PER_BATCHED * n, f"batch of {n}: {trips} round trips"


def _plant_address(pg_url: str, offset: int) -> None:
    """An addresses row the free ranges know nothing about: the next allocation of that
    offset fails on the unique constraint, in its deferred insert."""
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as conn:
        conn.execute("INSERT INTO addresses (subnet_id, \"offset\", ip, state, port_id,"
                     " generation, free_at, note) SELECT subnet_id, %s, '10.97.0.250',"
                     " 'reserved', NULL, 0, 0, 'planted' FROM free_ranges LIMIT 1", (offset,))


def _lowest_free(pg_url: str) -> int:
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT min(first_off) FROM free_ranges").fetchone()
        assert row is not None
        return int(row[0])


def test_a_write_sent_later_still_fails_its_own_request_alone(
        traced: tuple[IpamService, WireCount], pg_url: str) -> None:
    svc, _ = traced
    first = _lowest_free(pg_url)
    _plant_address(pg_url, first + 1)
    before = {p.container_id for p, _ in svc.list_ports()}
    a, b = svc._alloc._allocate_together([Pending(_req("ok"), None),
                                          Pending(_req("clash"), None)])
    assert not isinstance(a, Exception) and a.port.addresses[0].offset == first
    assert isinstance(b, Busy)
    # Alone too: the address insert goes with the COMMIT, and fails the whole transaction.
    with pytest.raises(Busy):
        svc._alloc._allocate_alone(_req("clash-alone"))
    assert {p.container_id for p, _ in svc.list_ports()} == before | {"ok"}
    assert _lowest_free(pg_url) == first + 1   # what the failed ones took went back


def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout(
        traced: tuple[IpamService, WireCount], pg_url: str) -> None:
    svc, _ = traced
    admin = pg_url.replace("postgresql+psycopg://", "postgresql://")

    def others() -> int:
        with psycopg.connect(admin, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                               " current_database() AND pid <> pg_backend_pid()").fetchone()
            return int(row[0]) if row else 0

    assert others() >= 1   # the store's pooled connections
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
                     " current_database() AND pid <> pg_backend_pid()")
    assert wait_until(lambda: others() == 0, timeout=10)
    t0 = time.monotonic()
    alloc = svc.allocate(_req("after-terminate"))   # no Busy: no dead connection handed out
    assert not alloc.existing and time.monotonic() - t0 < 5
    svc.release("after-terminate", "eth0")


def test_the_default_workers_follow_the_database_and_the_pool_follows_them() -> None:
    from ipcontroller.daemon import PG_WORKERS, SQLITE_WORKERS, parse_args
    assert parse_args(["--db", "sqlite:////tmp/x/ipam.db"]).workers == SQLITE_WORKERS
    assert parse_args(["--db", "postgresql+psycopg://u@h/db"]).workers == PG_WORKERS
    assert parse_args(["--db", "postgresql+psycopg://u@h/db", "--workers", "3"]).workers == 3
    with pytest.raises(SystemExit):
        parse_args(["--workers", "-1"])


def test_the_controllers_pool_has_a_connection_for_every_worker(pg_url: str) -> None:
    from ipam.store import open_store
    from ipcontroller.daemon import PG_WORKERS, pool_size_for
    assert pool_size_for(PG_WORKERS) == PG_WORKERS + 4 and pool_size_for(1) == 8
    store = open_store(pg_url, pool_size=pool_size_for(PG_WORKERS))
    try:
        assert isinstance(store, SqlStore)
        assert store.engine.pool.size() == PG_WORKERS + 4  # type: ignore[attr-defined]
    finally:
        store.close()


def test_a_first_block_that_fails_before_its_first_statement_keeps_the_transaction(
        pg_url: str) -> None:
    """A savepoint block that is the transaction's first thing and fails before it sends
    anything: its SAVEPOINT was dropped unsent, and so was the queued BEGIN before it, so
    the ROLLBACK TO that followed went out with no transaction open (the server refused it,
    the caller got that error instead of its own, and nothing after it was atomic)."""
    store = SqlStore(pg_url)
    try:
        with store.transaction() as uow:
            with pytest.raises(LookupError), uow.savepoint():
                raise LookupError("the block's own failure")
            assert not uow.lost
            uow.upsert_node(Node("sp-first", "192.0.2.1"))
            assert uow.raw.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE
        with store.read() as uow:
            assert uow.get_node("sp-first") is not None
    finally:
        store.close()


def test_a_write_transaction_that_does_nothing_costs_no_round_trip(
        traced: tuple[IpamService, WireCount]) -> None:
    """Its BEGIN was queued and never sent; finishing it sent "BEGIN; COMMIT" anyway."""
    svc, wire = traced

    def nothing() -> None:
        with svc.store.transaction():
            pass
    trips, _ = wire.during(nothing)
    assert trips == 0


@pytest.mark.parametrize("ending", ["commit", "a queued write fails", "the caller raises"])
def test_a_connection_goes_back_to_the_pool_as_the_driver_expects_it(
        pg_url: str, ending: str) -> None:
    """The driver is in autocommit mode while our BEGIN runs the transaction: however the
    transaction ends, the connection must be back in the driver's own mode, idle, before
    anyone else takes it (a consistent read's REPEATABLE READ, a migration), or the next
    user's statements would each commit on their own."""
    store = SqlStore(pg_url, pool_size=1)
    try:
        with store.transaction() as uow:     # the pool's one connection, warm
            uow.upsert_node(Node("pool-state", "192.0.2.2"))
        first = None
        if ending == "commit":
            with store.transaction() as uow:
                first = uow.raw
                uow.upsert_node(Node("pool-state", "192.0.2.3"))
        elif ending == "a queued write fails":
            with pytest.raises(psycopg.errors.DivisionByZero), store.transaction() as uow:
                first = uow.raw
                uow._later("SELECT 1 / 0")        # sent with the COMMIT, fails there
        else:
            with pytest.raises(LookupError), store.transaction() as uow:
                first = uow.raw
                uow.upsert_node(Node("pool-state", "192.0.2.4"))
                raise LookupError("the caller's own failure")
        with store.engine.connect() as conn:     # whoever takes it next, Core's way
            driver = conn.connection.driver_connection
            assert driver is first               # the same connection, taken again
            assert driver.autocommit is False
            assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with store.consistent_read() as uow:
            iso = uow.raw.execute("SHOW transaction_isolation").fetchone()[0]
            assert iso == "repeatable read"
            node = uow.get_node("pool-state")
        assert node is not None
        want = "192.0.2.3" if ending == "commit" else "192.0.2.2"
        assert node.underlay_ip == want      # a failed transaction left nothing behind
    finally:
        store.close()
