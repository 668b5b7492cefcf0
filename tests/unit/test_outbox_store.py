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
from tests.lab.helpers import wait_until

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
    token = ob.acquire_lease("h", 60.0)
    assert ob.retry_later(first.id, "x" * 3000, 200.0, failed=True, token=token)
    # The younger delete of "a" waits behind its retrying upsert, due or not.
    assert [i.object_id for i in ob.claim("h", 10, 100.0)] == ["b", "n"]
    row = ob.outbox_rows()[0]
    assert (row.id, row.attempts, row.next_attempt_at, row.failed) == (first.id, 1, 200.0, True)
    assert len(row.last_error) == 2000
    st = ob.stats(20.0)
    assert (st.pending, st.failed, st.oldest_pending_seconds) == (4, 1, 10.0)
    assert st.last_error.startswith("xxx")
    assert ob.complete(first.id, token)
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
    """On the store's own clock (the database's): nobody passes a time in."""
    ob, _ = outbox
    assert ob.lease_holder() == ""
    t1 = ob.acquire_lease("r1", 60.0)
    assert t1 > 0
    assert ob.acquire_lease("r2", 60.0) == 0
    assert ob.lease_holder() == "r1"
    assert ob.acquire_lease("r1", 0.3) == t1              # renewed: same token, 0.3 s left
    assert wait_until(lambda: ob.lease_holder() == "", 30.0)
    t2 = ob.acquire_lease("r2", 60.0)                     # expired: taken over
    assert t2 > t1 and ob.lease_holder() == "r2"
    assert ob.acquire_lease("r1", 60.0) == 0


def test_a_stale_token_retires_nothing(outbox: tuple[OutboxStore, Add]) -> None:
    """The fence: once another holder took the lease, the old token completes, reschedules
    and dead-letters nothing; the rows stay for the new holder."""
    ob, add = outbox
    add("port", "a", "upsert", {"port": {"id": "a"}}, 1.0)
    add("port", "b", "upsert", {"port": {"id": "b"}}, 1.0)
    old = ob.acquire_lease("r1", 0.2)
    (a, b) = ob.claim("r1", 10, 100.0)
    assert wait_until(lambda: ob.lease_holder() == "", 30.0)
    new = ob.acquire_lease("r2", 60.0)
    assert new > old
    assert not ob.complete(a.id, old)
    assert not ob.retry_later(b.id, "late", 500.0, failed=True, token=old, rejected=True)
    assert not ob.dead_letter(b.id, "late", 2.0, old)
    assert ob.drop_superseded(old) == 0
    assert [(r.id, r.attempts) for r in ob.outbox_rows()] == [(a.id, 0), (b.id, 0)]
    assert ob.complete(a.id, new)
    assert [r.id for r in ob.outbox_rows()] == [b.id]


def test_rejected_rows_are_superseded_and_dead_lettered(
        outbox: tuple[OutboxStore, Add]) -> None:
    ob, add = outbox
    token = ob.acquire_lease("h", 60.0)
    add("subnet", "s", "upsert", {"subnet": {"id": "s"}}, 1.0)
    add("port", "p", "upsert", {"port": {"id": "p"}}, 2.0)
    (s, p) = ob.claim("h", 10, 100.0)
    assert ob.retry_later(s.id, "rejected: no", 500.0, True, token, rejected=True)
    assert ob.retry_later(p.id, "unavailable", 500.0, False, token)
    assert ob.drop_superseded(token) == 0                  # nothing newer yet
    add("subnet", "s", "delete", None, 3.0)
    assert ob.drop_superseded(token) == 1                  # the delete replaces it
    assert [(r.kind, r.op) for r in ob.outbox_rows()] == [("port", "upsert"),
                                                          ("subnet", "delete")]
    (row,) = [r for r in ob.outbox_rows() if r.kind == "port"]
    assert (row.attempts, row.rejections) == (1, 0)
    assert ob.retry_later(p.id, "rejected: bad", 500.0, True, token, rejected=True)
    assert ob.claim("h", 10, 600.0)[0].rejections == 1
    assert ob.dead_letter(p.id, "rejected: bad", 7.0, token)
    assert [r.kind for r in ob.outbox_rows()] == ["subnet"]
    (dead,) = ob.dead_letters()
    assert (dead.id, dead.kind, dead.object_id, dead.op, dead.attempts, dead.last_error,
            dead.created_at, dead.dead_at) == (p.id, "port", "p", "upsert", 3,
                                               "rejected: bad", 2.0, 7.0)
    assert dead.payload == {"port": {"id": "p"}} and ob.dead_letter_count() == 1
    assert ob.retry_dead_letters(None, 8.0) == 1
    assert ob.dead_letter_count() == 0
    back = [r for r in ob.outbox_rows() if r.kind == "port"]
    assert [(r.op, r.attempts, r.rejections, r.failed) for r in back] == [
        ("upsert", 0, 0, False)]
    assert back[0].id > p.id and back[0].payload == {"port": {"id": "p"}}
    # Dead again, then a newer row of the port: retrying the old one would overtake it.
    assert ob.dead_letter(back[0].id, "rejected: bad", 9.0, token)
    add("port", "p", "delete", None, 10.0)
    assert ob.retry_dead_letters([back[0].id], 11.0) == 0
    assert ob.dead_letters() == []
    assert [(r.kind, r.op) for r in ob.outbox_rows()] == [("subnet", "delete"),
                                                          ("port", "delete")]
    assert ob.dead_letter(ob.outbox_rows()[0].id, "x", 12.0, token)
    assert not ob.skip_dead_letter(999_999)
    assert ob.skip_dead_letter(ob.dead_letters()[0].id) and ob.dead_letter_count() == 0


def test_state_keys_are_kept(outbox: tuple[OutboxStore, Add]) -> None:
    ob, _ = outbox
    assert ob.get_state("resync-requests") is None
    ob.set_state("resync-requests", "1")
    ob.set_state("resync-requests", "2")
    ob.set_state("last-resync", "12.5")
    assert (ob.get_state("resync-requests"), ob.get_state("last-resync")) == ("2", "12.5")
