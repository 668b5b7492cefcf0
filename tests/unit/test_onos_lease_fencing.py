"""The drain lease on the store's clock and fenced by its token (issue 12): two replicas whose
clocks disagree by an hour still agree on who holds the lease, and a worker that lost the
lease while it waited on ONOS retires nothing the new holder has claimed. On every store two
replicas can share: one MemoryOutbox object, a SQLite file, a PostgreSQL database."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipam.onos import OnosClient, OnosPort, SyncWorker, to_payload
from ipam.onos.memory_outbox import MemoryOutbox
from ipam.onos.outbox import OutboxStore
from ipam.store.sql import SqlStore
from onos_emulator import EmulatorServer
from tests.lab.helpers import wait_until


def _port(i: int) -> OnosPort:
    return OnosPort(f"port-{i}", f"ns_pod-{i}", "net-1", f"0a:00:00:00:00:{i:02x}",
                    (("sub-1", f"10.20.0.{i + 2}"),), f"uid-{i}")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path
             ) -> Iterator[tuple[OutboxStore, OutboxStore]]:
    """Two replicas' handles on one store."""
    if request.param == "memory":
        ob = MemoryOutbox()
        yield ob, ob
        return
    url = (f"sqlite:///{tmp_path}/ipam.db" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    a = SqlStore(url)
    b = SqlStore(url, migrate=False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _add(store: OutboxStore, p: OnosPort) -> None:
    if isinstance(store, MemoryOutbox):
        store.add("port", p.id, "upsert", to_payload(p), time.time())
        return
    assert isinstance(store, SqlStore)
    with store.transaction() as uow:
        uow.add_outbox("port", p.id, "upsert", to_payload(p), time.time())


def test_a_replica_whose_clock_is_an_hour_ahead_cannot_steal_a_live_lease(
        replicas: tuple[OutboxStore, OutboxStore], emu: EmulatorServer) -> None:
    a_store, b_store = replicas
    _add(a_store, _port(1))
    with OnosClient(emu.url, "onos", "rocks") as client:
        a = SyncWorker(a_store, client, "replica-a", lease_ttl=60.0)
        b = SyncWorker(b_store, client, "replica-b", lease_ttl=60.0,
                       clock=lambda: time.time() + 3600.0)
        assert a.run_once() == 1 and a.status().leader
        _add(a_store, _port(2))
        assert b.run_once() == 0
        assert not b.status().leader
        assert b_store.lease_holder() == "replica-a" == a_store.lease_holder()
        assert [r.object_id for r in b_store.outbox_rows()] == ["port-2"]
        assert a.run_once() == 1 and a.status().leader


class _GatedClient:
    """The real client, whose first port upsert waits at a gate: the worker is stuck on ONOS
    while its lease runs out and another replica takes over."""

    def __init__(self, client: OnosClient) -> None:
        self.client = client
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls: list[str] = []

    def upsert_port(self, p: OnosPort) -> str:
        self.calls.append(p.id)
        if len(self.calls) == 1:
            self.entered.set()
            assert self.gate.wait(60)
        return self.client.upsert_port(p)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_a_worker_that_lost_the_lease_mid_batch_cannot_complete_the_new_holders_rows(
        replicas: tuple[OutboxStore, OutboxStore], emu: EmulatorServer) -> None:
    a_store, b_store = replicas
    for i in (1, 2, 3):
        _add(a_store, _port(i))
    with OnosClient(emu.url, "onos", "rocks") as client:
        gated = _GatedClient(client)
        a = SyncWorker(a_store, gated, "replica-a", lease_ttl=0.5)
        done: list[int] = []
        t = threading.Thread(target=lambda: done.append(a.run_once()))
        t.start()
        try:
            assert gated.entered.wait(30)
            # a is inside its first call; its lease runs out and replica-b takes over
            assert wait_until(lambda: b_store.lease_holder() == "", 30.0)
            assert b_store.acquire_lease("replica-b", 60.0) > 0
            claimed = b_store.claim("replica-b", 10, time.time())
            assert [i.object_id for i in claimed] == ["port-1", "port-2", "port-3"]
        finally:
            gated.gate.set()
            t.join(30)
        assert done == [0]                       # its completion was refused: it stopped
        assert not a.status().leader
        assert gated.calls == ["port-1"]         # and sent nothing more
        assert [r.object_id for r in b_store.outbox_rows()] == ["port-1", "port-2", "port-3"]
        b = SyncWorker(b_store, client, "replica-b", lease_ttl=60.0)
        b.drain(timeout=30)
        assert b_store.outbox_rows() == []
        assert set(emu.snapshot()["ports"]) == {"port-1", "port-2", "port-3"}
