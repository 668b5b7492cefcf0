"""The outbox keeps what the newest state of each port needs, on every store: an outage with
pods coming and going leaves one row per port, and a rejected row is replaced by a newer one
instead of blocking its port forever."""
from __future__ import annotations

from collections import Counter
from typing import Any

from ipam.domain import AllocationRequest, PodIdentity
from ipam.service import IpamService
from tests.lab.helpers import FakeClock

N = 200


def _svc(store: Any, clock: FakeClock) -> IpamService:
    svc = IpamService(store, sync_enabled=True, clock=clock)
    svc.create_pool("p", "dynamic", quarantine_seconds=0)
    svc.create_subnet("p", "10.95.0.0/22")
    return svc


def _req(i: int) -> AllocationRequest:
    return AllocationRequest(container_id=f"c{i}", ifname="eth0", pool="p", node="n1",
                             pod=PodIdentity("ns", f"pod{i}", f"u{i}"))


def test_add_and_delete_while_onos_is_down_leave_one_row_per_port(
        store: Any, clock: FakeClock) -> None:
    svc = _svc(store, clock)
    for i in range(N):                      # nobody drains: ONOS is down
        svc.allocate(_req(i))
        svc.release(f"c{i}", "eth0")
    rows = store.outbox_rows()
    ports = Counter(r.object_id for r in rows if r.kind == "port")
    assert len(ports) == N and set(ports.values()) == {1}
    assert all(r.op == "delete" for r in rows if r.kind == "port")
    assert len(rows) == N + 2               # and the network's and the subnet's rows


def test_a_newer_row_supersedes_a_rejected_one(store: Any, clock: FakeClock) -> None:
    svc = _svc(store, clock)
    port = svc.allocate(_req(1)).port
    (row,) = [r for r in store.outbox_rows() if r.object_id == port.id]
    token = store.acquire_lease("h", 60.0)
    store.retry_later(row.id, "ONOS said 400", clock() + 3600, failed=True, token=token)
    svc.release("c1", "eth0")
    mine = [r for r in store.outbox_rows() if r.object_id == port.id]
    assert [(r.op, r.failed, r.attempts) for r in mine] == [("delete", False, 0)]
    due = store.claim("h", 100, clock())
    assert any(i.object_id == port.id and i.op == "delete" for i in due)
