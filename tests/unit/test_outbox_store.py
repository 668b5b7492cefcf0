"""The OutboxStore conformance suite: every store the ONOS sync drains (the memory store, SQLite,
PostgreSQL, and the bare MemoryOutbox) keeps the same rules for rows, the lease and state."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipam.onos.memory_outbox import MemoryOutbox
from ipam.onos.outbox import OutboxStore
from ipam.store import Store
from ipam.store.memory import MemoryStore
from ipam.store.sql import SqlStore

Add = Callable[[str, str, str, "dict[str, Any] | None", float], None]


@pytest.fixture(params=["memory-outbox", "memory", "sqlite", "postgres"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[OutboxStore, Add]]:
    """(the OutboxStore, how the producer adds a row to it): the bare MemoryOutbox, and each
    store of the conformance suite, whose rows the IPAM adds inside its transactions."""
    if request.param == "memory-outbox":
        ob = MemoryOutbox()
        yield ob, lambda *row: None if ob.add(*row) else None
        return
    store: Store = (MemoryStore() if request.param == "memory" else
                    SqlStore(f"sqlite:///{tmp_path}/ipam.db") if request.param == "sqlite" else
                    SqlStore(request.getfixturevalue("pg_url")))

    def add(kind: str, object_id: str, op: str, payload: dict[str, Any] | None,
            now: float) -> None:
        with store.transaction() as uow:
            uow.add_outbox(kind, object_id, op, payload, now)
    try:
        yield store, add
    finally:
        store.close()


def test_claim_gives_only_the_oldest_due_row_of_each_object(
        outbox: tuple[OutboxStore, Add]) -> None:
    ob, add = outbox
    add("port", "a", "upsert", {"port": {"id": "a"}}, 10.0)
    add("port", "b", "upsert", {"port": {"id": "b"}}, 11.0)
    add("port", "a", "delete", None, 12.0)
    add("network", "n", "upsert", {"network": {"id": "n"}}, 13.0)
    items = ob.claim("h", 10, 100.0)
    assert [(i.kind, i.object_id, i.op) for i in items] == [
        ("port", "a", "upsert"), ("port", "b", "upsert"), ("network", "n", "upsert")]
    assert items[0].payload == {"port": {"id": "a"}} and items[0].attempts == 0
    assert [i.object_id for i in ob.claim("h", 2, 100.0)] == ["a", "b"]     # limit
    assert ob.claim("h", 10, 10.5) == [items[0]]                            # due only
    first = items[0]
    ob.retry_later(first.id, "x" * 3000, 200.0, failed=True)
    # The younger delete of "a" waits behind its retrying upsert, due or not.
    assert [i.object_id for i in ob.claim("h", 10, 100.0)] == ["b", "n"]
    row = ob.outbox_rows()[0]
    assert (row.id, row.attempts, row.next_attempt_at, row.failed) == (first.id, 1, 200.0, True)
    assert len(row.last_error) == 2000
    st = ob.stats(20.0)
    assert (st.pending, st.failed, st.oldest_pending_seconds) == (4, 1, 10.0)
    assert st.last_error.startswith("xxx")
    ob.complete(first.id)
    assert [(i.object_id, i.op) for i in ob.claim("h", 10, 100.0)] == [
        ("b", "upsert"), ("a", "delete"), ("n", "upsert")]
    assert [r.op for r in ob.outbox_rows()] == ["upsert", "delete", "upsert"]


def test_pending_ids_by_kind_and_among_ids(outbox: tuple[OutboxStore, Add]) -> None:
    ob, add = outbox
    assert ob.pending_ids("port") == set()
    for oid in ("a", "b", "c"):
        add("port", oid, "delete", None, 1.0)
    add("subnet", "a", "delete", None, 1.0)
    assert ob.pending_ids("port") == {"a", "b", "c"}
    assert ob.pending_ids("port", ["b", "z"]) == {"b"}
    assert ob.pending_ids("subnet") == {"a"} and ob.pending_ids("network") == set()
    assert ob.stats(1.0) == (4, 0, 0.0, "")


def test_one_lease_holder_at_a_time(outbox: tuple[OutboxStore, Add]) -> None:
    ob, _ = outbox
    assert ob.lease_holder(0.0) == ""
    assert ob.acquire_lease("r1", 10.0, 100.0)
    assert not ob.acquire_lease("r2", 10.0, 105.0)
    assert ob.lease_holder(105.0) == "r1"
    assert ob.acquire_lease("r1", 10.0, 108.0)            # renewed: until 118
    assert not ob.acquire_lease("r2", 10.0, 117.0)
    assert ob.lease_holder(119.0) == ""
    assert ob.acquire_lease("r2", 10.0, 119.0)            # expired: taken over
    assert ob.lease_holder(120.0) == "r2"


def test_state_keys_are_kept(outbox: tuple[OutboxStore, Add]) -> None:
    ob, _ = outbox
    assert ob.get_state("resync-requests") is None
    ob.set_state("resync-requests", "1")
    ob.set_state("resync-requests", "2")
    ob.set_state("last-resync", "12.5")
    assert (ob.get_state("resync-requests"), ob.get_state("last-resync")) == ("2", "12.5")
