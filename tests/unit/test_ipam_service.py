"""The store conformance suite: the allocator's behaviour on every store (memory, SQLite,
PostgreSQL). Each test asserts state through the service's own read paths and usage counts."""
from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from ipam.domain import AllocationRequest, PodIdentity
from ipam.errors import (
    AlreadyExists,
    InUse,
    InvalidArgument,
    NotFound,
    PolicyConflict,
    PoolExhausted,
)
from ipam.service import IpamService
from tests.lab.helpers import FakeClock


@pytest.fixture
def svc(store: Any, clock: FakeClock) -> IpamService:
    return IpamService(store, sync_enabled=True, clock=clock)


def req(cid: str, pool: str = "p", ns: str = "ns", name: str = "", uid: str = "",
        **kw: Any) -> AllocationRequest:
    return AllocationRequest(container_id=cid, ifname=kw.pop("ifname", "eth0"),
                             pod=PodIdentity(ns, name or f"pod-{cid}", uid or f"uid-{cid}"),
                             pool=pool, node=kw.pop("node", "n1"), **kw)


def ips(alloc: Any) -> list[str]:
    return [a.ip for a in alloc.port.addresses]


def usage(svc: IpamService, pool: str = "p") -> Any:
    return next(u for p, u, _ in svc.list_pools() if p.name == pool)


def test_pool_validation_changes_nothing(svc: IpamService) -> None:
    with pytest.raises(InvalidArgument, match="unknown policy"):
        svc.create_pool("p", "sometimes")
    with pytest.raises(InvalidArgument, match="invalid pool name"):
        svc.create_pool("has space", "dynamic")
    assert svc.list_pools() == []
    svc.create_pool("p", "dynamic")
    with pytest.raises(AlreadyExists):
        svc.create_pool("p", "fixed")
    assert [p.policy.value for p, _, _ in svc.list_pools()] == ["dynamic"]


def test_subnet_validation(svc: IpamService) -> None:
    svc.create_pool("p", "dynamic")
    with pytest.raises(NotFound):
        svc.create_subnet("nope", "10.0.0.0/24")
    with pytest.raises(InvalidArgument, match="invalid CIDR"):
        svc.create_subnet("p", "10.0.0.1/24")
    with pytest.raises(InvalidArgument, match="not inside"):
        svc.create_subnet("p", "10.0.0.0/24", gateway="10.0.1.1")
    svc.create_subnet("p", "10.0.0.0/24")
    svc.create_pool("q", "dynamic")
    with pytest.raises(AlreadyExists, match="overlaps"):
        svc.create_subnet("q", "10.0.0.128/25")
    assert [s.cidr for s, _, _ in svc.list_subnets()] == ["10.0.0.0/24"]


def test_allocate_is_idempotent_and_distinct(svc: IpamService) -> None:
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", "10.1.0.0/24")
    a = svc.allocate(req("c1"))
    again = svc.allocate(req("c1"))
    assert again.existing and again.port.id == a.port.id and ips(again) == ips(a)
    assert ips(a) == ["10.1.0.2"]  # .1 is the gateway
    many = [svc.allocate(req(f"c{i}")) for i in range(2, 40)]
    addrs = [ips(x)[0] for x in many] + ips(a)
    assert len(set(addrs)) == len(addrs)
    assert len({x.port.mac for x in many}) == len(many)
    u = usage(svc)
    assert (u.total, u.used, u.free, u.reserved) == (254, 39, 254 - 39 - 1, 1)


def test_same_container_other_pod_uid_is_refused(svc: IpamService) -> None:
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", "10.1.0.0/24")
    svc.allocate(req("c1", uid="u1"))
    with pytest.raises(PolicyConflict):
        svc.allocate(req("c1", uid="u2"))


def test_exhaustion_and_quarantine(svc: IpamService, clock: FakeClock) -> None:
    svc.create_pool("p", "dynamic", quarantine_seconds=60)
    svc.create_subnet("p", "10.2.0.0/29")  # .1 gateway, .2-.6 usable
    got = [ips(svc.allocate(req(f"c{i}")))[0] for i in range(5)]
    assert got == [f"10.2.0.{i}" for i in range(2, 7)]
    with pytest.raises(PoolExhausted, match="no free IPv4"):
        svc.allocate(req("c9"))
    assert svc.release("c0", "eth0").outcome == "quarantined"
    u = usage(svc)
    assert (u.used, u.quarantined, u.free) == (4, 1, 0)
    with pytest.raises(PoolExhausted):
        svc.allocate(req("c9"))  # quarantined, not reused at once
    clock.now += 61
    assert svc.sweep() == (1, 0)
    assert ips(svc.allocate(req("c9"))) == ["10.2.0.2"]
    assert usage(svc).free == 0


def test_release_is_forgiving(svc: IpamService) -> None:
    svc.create_pool("p", "dynamic", quarantine_seconds=0)
    svc.create_subnet("p", "10.3.0.0/24")
    assert not svc.release("never", "eth0").found
    svc.allocate(req("c1", uid="u1"))
    assert svc.release("c1", "eth0", pod_uid="other").outcome == "stale"
    assert svc.release("c1", "eth0", pod_uid="u1").outcome == "released"
    assert not svc.release("c1", "eth0").found
    assert usage(svc).used == 0


def test_dual_stack_one_address_per_family(svc: IpamService) -> None:
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", "10.4.0.0/24")
    svc.create_subnet("p", "fd00:4::/64")
    a = svc.allocate(req("c1"))
    versions = sorted(ipaddress.ip_address(ip).version for ip in ips(a))
    assert versions == [4, 6]


def test_pool_grows_by_adding_subnets(svc: IpamService) -> None:
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", "10.5.0.0/30")  # one usable besides the gateway
    svc.allocate(req("c1"))
    with pytest.raises(PoolExhausted):
        svc.allocate(req("c2"))
    svc.create_subnet("p", "10.5.1.0/30")
    assert ips(svc.allocate(req("c2"))) == ["10.5.1.2"]


def test_excludes_and_reservations(svc: IpamService) -> None:
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", "10.6.0.0/28", excludes=["10.6.0.2-10.6.0.4", "10.6.0.6"])
    assert svc.reserve("p", ["10.6.0.5"], note="printer") == 1
    assert ips(svc.allocate(req("c1"))) == ["10.6.0.7"]
    u = usage(svc)
    assert u.reserved == 1 + 3 + 1 + 1  # gateway, range, single, admin reservation
    with pytest.raises(InvalidArgument, match="not allocatable"):
        svc.reserve("p", ["10.6.0.3"])
    with pytest.raises(InUse):
        svc.reserve("p", ["10.6.0.7"])
    assert svc.reserve("p", ["10.6.0.5"], unreserve=True) == 1
    assert ips(svc.allocate(req("c2"))) == ["10.6.0.5"]


def test_requested_ip(svc: IpamService) -> None:
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", "10.7.0.0/24")
    assert ips(svc.allocate(req("c1", requested_ip="10.7.0.77"))) == ["10.7.0.77"]
    with pytest.raises(PolicyConflict, match="allocated"):
        svc.allocate(req("c2", requested_ip="10.7.0.77"))
    with pytest.raises(InvalidArgument, match="not in any subnet"):
        svc.allocate(req("c3", requested_ip="192.0.2.1"))


def test_fixed_keeps_ip_for_life(svc: IpamService) -> None:
    svc.create_pool("vm", "fixed")
    svc.create_subnet("vm", "10.8.0.0/24")
    bound = svc.bind("vm", "ns/vm-1", ip="10.8.0.50", hostname="vm-1")
    assert [a.ip for a in bound.addresses] == ["10.8.0.50"]
    a = svc.allocate(req("c1", pool="vm", name="vm-1", uid="u1", node="n1"))
    assert ips(a) == ["10.8.0.50"] and a.port.id == bound.id and a.port.hostname == "vm-1"
    # a second live pod for the same owner is refused: no two live pods on one IP
    with pytest.raises(PolicyConflict, match="held by live pod"):
        svc.allocate(req("c2", pool="vm", name="vm-1", uid="u2"))
    with pytest.raises(InUse):
        svc.unbind("vm", "ns/vm-1")
    assert svc.release("c1", "eth0").outcome == "kept"
    assert usage(svc, "vm").bound == 1
    moved = svc.allocate(req("c3", pool="vm", name="vm-1", uid="u3", node="n2"))
    assert ips(moved) == ["10.8.0.50"] and moved.port.node == "n2"
    assert moved.port.generation > a.port.generation
    svc.release("c3", "eth0")
    assert svc.unbind("vm", "ns/vm-1")
    assert usage(svc, "vm").used == 0


def test_sticky_member_gets_old_ip_until_retention(svc: IpamService, clock: FakeClock) -> None:
    svc.create_pool("db", "sticky", retention_seconds=300)
    svc.create_subnet("db", "10.9.0.0/24")
    first = svc.allocate(req("c1", pool="db", name="db-0"))
    svc.allocate(req("c2", pool="db", name="db-1"))
    svc.release("c1", "eth0")
    again = svc.allocate(req("c9", pool="db", name="db-0", uid="new"))
    assert ips(again) == ips(first)
    svc.release("c9", "eth0")
    clock.now += 301
    assert svc.sweep() == (0, 1)
    fresh = svc.allocate(req("c10", pool="db", name="db-0", uid="newer"))
    assert fresh.port.id != first.port.id


def test_product_type_and_namespace_default(svc: IpamService) -> None:
    svc.create_pool("web", "dynamic")
    svc.create_subnet("web", "10.10.0.0/24")
    svc.create_pool("vm", "fixed", product_type="light-vm")
    svc.create_subnet("vm", "10.11.0.0/24")
    with pytest.raises(InvalidArgument, match="no pool"):
        svc.allocate(req("c1", pool=""))
    svc.set_namespace_default("ns", "web")
    assert ips(svc.allocate(req("c1", pool="")))[0].startswith("10.10.")
    a = svc.allocate(req("c2", pool="", product_type="light-vm"))
    assert ips(a)[0].startswith("10.11.")
    with pytest.raises(PolicyConflict, match="has policy dynamic"):
        svc.allocate(req("c3", pool="web", product_type="fixed"))


def test_delete_subnet_with_ports_refused(svc: IpamService) -> None:
    svc.create_pool("p", "dynamic", quarantine_seconds=0)
    svc.create_subnet("p", "10.12.0.0/24")
    svc.allocate(req("c1"))
    with pytest.raises(InUse):
        svc.delete_subnet("10.12.0.0/24")
    with pytest.raises(InUse):
        svc.delete_pool("p")
    svc.release("c1", "eth0")
    svc.delete_subnet("10.12.0.0/24")
    svc.delete_pool("p")
    assert svc.list_pools() == []


def test_outbox_written_with_the_change(store: Any, svc: IpamService) -> None:
    svc.create_pool("p", "dynamic", quarantine_seconds=0)
    svc.create_subnet("p", "10.13.0.0/24")
    a = svc.allocate(req("c1"))
    rows = store.outbox_rows()
    kinds = [(r.kind, r.op) for r in rows]
    assert kinds[:3] == [("network", "upsert"), ("subnet", "upsert"), ("port", "upsert")]
    port_rows = [r for r in rows if r.kind == "port" and r.op == "upsert"]
    assert port_rows[0].payload["port"]["id"] == a.port.id
    svc.release("c1", "eth0")
    # The delete supersedes the port's pending upsert (test_outbox_coalesce.py).
    kinds = [(r.kind, r.op) for r in store.outbox_rows()]
    assert ("port", "delete") in kinds


def test_sql_store_survives_restart(tmp_path: Any) -> None:
    from ipam.store.sql import SqlStore
    url = f"sqlite:///{tmp_path}/r.db"
    s1 = IpamService(SqlStore(url))
    s1.create_pool("p", "dynamic")
    s1.create_subnet("p", "10.14.0.0/24")
    a = s1.allocate(req("c1"))
    s1.store.close()
    s2 = IpamService(SqlStore(url))
    again = s2.allocate(req("c1"))
    assert again.existing and ips(again) == ips(a)
    assert ips(s2.allocate(req("c2"))) != ips(a)


# ----------------------------------------------------------- request identity (issue 3)
def test_one_container_two_interfaces_two_ports(svc: IpamService) -> None:
    """A request is (pod UID, container id, ifname): eth0 and net1 of one pod are two ports."""
    svc.create_pool("p", "dynamic", quarantine_seconds=0)
    svc.create_subnet("p", "10.15.0.0/24")
    eth0 = svc.allocate(req("c1", ifname="eth0"))
    net1 = svc.allocate(req("c1", ifname="net1"))
    assert eth0.port.id != net1.port.id and ips(eth0) != ips(net1)
    assert svc.allocate(req("c1", ifname="net1")).port.id == net1.port.id
    assert svc.release("c1", "net1").outcome == "released"
    assert svc.get_port("c1", "eth0")[0].id == eth0.port.id
    assert usage(svc).used == 1


def test_bound_port_serves_one_interface(svc: IpamService) -> None:
    """A second interface of the same pod in the same sticky pool must not steal the first
    one's port (it used to move silently, and eth0's DEL then found nothing)."""
    svc.create_pool("db", "sticky")
    svc.create_subnet("db", "10.16.0.0/24")
    eth0 = svc.allocate(req("c1", pool="db", name="db-0", uid="u1", ifname="eth0"))
    with pytest.raises(PolicyConflict, match="second interface"):
        svc.allocate(req("c1", pool="db", name="db-0", uid="u1", ifname="net1"))
    assert svc.get_port("c1", "eth0")[0].id == eth0.port.id
    assert svc.release("c1", "eth0").outcome == "kept"


def test_recreated_sandbox_reattaches_and_old_del_is_a_no_op(svc: IpamService) -> None:
    """kubelet re-creates a pod's sandbox (same pod UID, new container id) before the old
    one's DEL arrives: the new container gets the bound address, the late DEL frees nothing."""
    svc.create_pool("db", "sticky")
    svc.create_subnet("db", "10.17.0.0/24")
    old = svc.allocate(req("old", pool="db", name="db-0", uid="u1"))
    new = svc.allocate(req("new", pool="db", name="db-0", uid="u1"))
    assert ips(new) == ips(old) and new.port.id == old.port.id
    assert new.port.container_id == "new"
    assert not svc.release("old", "eth0").found
    assert svc.get_port("new", "eth0")[0].state.value == "active"
    # Dynamic pools key by request only: a new sandbox is a new port, the old one's DEL frees.
    svc.create_pool("web", "dynamic", quarantine_seconds=0)
    svc.create_subnet("web", "10.18.0.0/24")
    a = svc.allocate(req("w-old", pool="web", name="web-0", uid="u2"))
    b = svc.allocate(req("w-new", pool="web", name="web-0", uid="u2"))
    assert ips(a) != ips(b)
    assert svc.release("w-old", "eth0").outcome == "released"
    assert usage(svc, "web").used == 1


# ------------------------------------------------------------- sticky retention (issue 3)
def test_sticky_retention_edges(svc: IpamService, clock: FakeClock) -> None:
    svc.create_pool("keep", "sticky")                         # retention 0: kept until unbound
    svc.create_subnet("keep", "10.19.0.0/24")
    svc.create_pool("db", "sticky", retention_seconds=300)
    svc.create_subnet("db", "10.20.0.0/24")
    kept = svc.allocate(req("k1", pool="keep", name="k-0"))
    svc.release("k1", "eth0")
    live = svc.allocate(req("d1", pool="db", name="db-live"))  # never idle: never expires
    idle = svc.allocate(req("d2", pool="db", name="db-idle"))
    svc.release("d2", "eth0")
    clock.now += 200
    # Coming back before retention ends restarts the clock from its next DEL.
    svc.allocate(req("d3", pool="db", name="db-idle", uid="again"))
    svc.release("d3", "eth0")
    clock.now += 200                                           # 400 s after the first DEL
    assert svc.sweep() == (0, 0)
    clock.now += 101
    assert svc.sweep() == (0, 1)                               # db-idle, 301 s after its DEL
    clock.now += 10_000
    assert svc.sweep() == (0, 0)
    assert ips(svc.allocate(req("k2", pool="keep", name="k-0", uid="x"))) == ips(kept)
    assert svc.get_port("d1", "eth0")[0].id == live.port.id
    fresh = svc.allocate(req("d4", pool="db", name="db-idle", uid="later"))
    assert fresh.port.id != idle.port.id
    assert usage(svc, "db").used == 2 and usage(svc, "keep").used == 1


# ------------------------------------------------------------------ IPv6 (issue 3)
def test_ipv6_only_pool_and_dual_stack_release(svc: IpamService) -> None:
    svc.create_pool("v6", "dynamic", quarantine_seconds=0)
    svc.create_subnet("v6", "fd00:21::/64")
    a = svc.allocate(req("c1", pool="v6"))
    assert ips(a) == ["fd00:21::2"]                       # ::1 is the gateway
    assert usage(svc, "v6").total == 1 << 32              # IPV6_SPAN: counts stay exact
    svc.create_pool("ds", "dynamic", quarantine_seconds=0)
    svc.create_subnet("ds", "10.22.0.0/24")
    svc.create_subnet("ds", "fd00:22::/64")
    b = svc.allocate(req("c2", pool="ds", requested_ip="fd00:22::99"))
    assert sorted(ips(b)) == ["10.22.0.2", "fd00:22::99"]
    assert usage(svc, "ds").used == 2
    assert svc.release("c2", "eth0").outcome == "released"
    assert usage(svc, "ds").used == 0
    assert sorted(ips(svc.allocate(req("c3", pool="ds")))) == ["10.22.0.2", "fd00:22::2"]


def test_dual_stack_exhausted_family_refuses_whole_port(svc: IpamService) -> None:
    svc.create_pool("ds", "dynamic", quarantine_seconds=0)
    svc.create_subnet("ds", "10.23.0.0/24")
    svc.create_subnet("ds", "fd00:23::/126")               # ::2 and ::3 allocatable
    svc.allocate(req("c1", pool="ds"))
    svc.allocate(req("c2", pool="ds"))
    with pytest.raises(PoolExhausted, match="IPv6"):
        svc.allocate(req("c3", pool="ds"))
    assert usage(svc, "ds").used == 4                      # nothing half-allocated


# --------------------------------------------------------------------- MACs (issue 3)
def test_mac_collision_draws_again_and_bound_mac_is_stable(svc: IpamService,
                                                            monkeypatch: Any) -> None:
    import ipam.allocation as service_mod
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", "10.24.0.0/24")
    first = svc.allocate(req("c1"))
    macs = iter([first.port.mac, first.port.mac, "0a:00:00:00:00:02"])
    monkeypatch.setattr(service_mod, "new_mac", lambda: next(macs))
    second = svc.allocate(req("c2"))                       # the store's unique MAC decides
    assert second.port.mac == "0a:00:00:00:00:02"
    monkeypatch.undo()
    svc.create_pool("vm", "fixed")
    svc.create_subnet("vm", "10.25.0.0/24")
    a = svc.allocate(req("v1", pool="vm", name="vm-1", uid="u1"))
    svc.release("v1", "eth0")
    b = svc.allocate(req("v2", pool="vm", name="vm-1", uid="u2", node="n2"))
    assert b.port.mac == a.port.mac and ips(b) == ips(a)


# ------------------------------------------- cached configuration, two replicas (issue 3)
def _replica(store: Any, clock: FakeClock) -> IpamService:
    """A second service on the same database with its own store object (its own cache)."""
    url = getattr(store, "url", None)
    if url is None:
        return IpamService(store, clock=clock)
    from ipam.store.sql import SqlStore
    return IpamService(SqlStore(url), clock=clock)


def test_replicas_see_each_others_admin_changes(store: Any, svc: IpamService,
                                                clock: FakeClock) -> None:
    other = _replica(store, clock)
    try:
        svc.create_pool("p", "dynamic", quarantine_seconds=0)
        svc.create_subnet("p", "10.26.0.0/30")
        assert ips(other.allocate(req("c1"))) == ["10.26.0.2"]   # other's first look
        with pytest.raises(PoolExhausted):
            svc.allocate(req("c2"))
        other.create_subnet("p", "10.26.1.0/30")                # grows the pool over there
        assert ips(svc.allocate(req("c2"))) == ["10.26.1.2"]
        svc.create_pool("q", "dynamic")
        svc.create_subnet("q", "10.27.0.0/24")
        svc.set_namespace_default("ns", "q")
        assert ips(other.allocate(req("c3", pool="")))[0].startswith("10.27.")
        other.release("c2", "eth0")
        svc.delete_subnet("10.26.1.0/30")
        with pytest.raises(PoolExhausted):
            other.allocate(req("c4"))                           # not from the deleted subnet
        svc.release("c1", "eth0")
        other.delete_subnet("10.26.0.0/30")
        other.delete_pool("p")
        with pytest.raises(NotFound):
            svc.allocate(req("c5"))
    finally:
        if other.store is not store:
            other.store.close()


def test_sqlite_writer_never_builds_on_a_dirty_connection(tmp_path: Any) -> None:
    """All SQLite writes share one connection; one left inside a transaction (a rollback that
    failed) is replaced instead of failing every later write."""
    from ipam.store.sql import SqlStore
    from ipam.store.sql.uow import driver_connection as _driver
    store = SqlStore(f"sqlite:///{tmp_path}/w.db")
    try:
        s = IpamService(store)
        s.create_pool("p", "dynamic")
        _driver(store._writer).execute("BEGIN")  # type: ignore[arg-type]
        s.create_pool("q", "dynamic")
        assert [p.name for p, _, _ in s.list_pools()] == ["p", "q"]
    finally:
        store.close()


def test_kept_release_unbinds_the_port_in_onos(store: Any, svc: IpamService) -> None:
    """A fixed owner's port stays, but ONOS must stop binding it to the gone pod and host."""
    svc.create_pool("p", "fixed")
    svc.create_subnet("p", "10.15.0.0/24")
    a = svc.allocate(req("c1", owner="vm-1"))
    assert svc.release("c1", "eth0").outcome == "kept"
    last = [r for r in store.outbox_rows() if r.kind == "port"][-1]
    assert (last.object_id, last.op) == (a.port.id, "upsert")
    body = last.payload["port"]
    assert body["device_id"] == "" and body["host_id"] == ""
    assert body["fixed_ips"] == [[a.port.addresses[0].subnet_id, ips(a)[0]]]


def test_deleting_the_last_subnet_deletes_the_network(store: Any, svc: IpamService) -> None:
    pool = svc.create_pool("p", "dynamic")
    svc.create_subnet("p", "10.16.0.0/24")
    svc.create_subnet("p", "10.16.1.0/24")
    svc.delete_subnet("10.16.0.0/24")
    net_rows = [r for r in store.outbox_rows() if r.kind == "network"]
    assert net_rows[-1].op == "upsert" and len(net_rows[-1].payload["network"]["subnet_ids"]) == 1
    svc.delete_subnet("10.16.1.0/24")
    last = [r for r in store.outbox_rows() if r.kind == "network"][-1]
    assert (last.object_id, last.op) == (pool.network_id, "delete")


def test_subnet_is_found_by_cidr_or_unambiguous_id_only(svc: IpamService) -> None:
    svc.create_pool("p", "dynamic")
    a = svc.create_subnet("p", "10.17.0.0/24")
    b = svc.create_subnet("p", "10.17.1.0/24")
    for bad in ("", "   ", a.id[:1], a.id[:7]):
        with pytest.raises((InvalidArgument, NotFound)):
            svc.delete_subnet(bad)
    assert {s.cidr for s, _, _ in svc.list_subnets()} == {a.cidr, b.cidr}  # nothing deleted
    svc.delete_subnet(a.id[:8])
    svc.delete_subnet(" 10.17.1.0/24 ")
    assert svc.list_subnets() == []


def test_a_bound_port_without_pod_uids_is_not_taken_over(svc: IpamService) -> None:
    """No UID on either side proves nothing: a second container for a live owner is
    refused, exactly as with differing UIDs."""
    svc.create_pool("p", "sticky")
    svc.create_subnet("p", "10.18.0.0/24")
    def no_uid(cid: str) -> AllocationRequest:
        return AllocationRequest(container_id=cid, ifname="eth0", pool="p", node="n1",
                                 pod=PodIdentity("ns", "db-0", ""))
    first = svc.allocate(no_uid("c1"))
    with pytest.raises(PolicyConflict, match="held by live pod"):
        svc.allocate(no_uid("c2"))
    svc.release("c1", "eth0")
    again = svc.allocate(no_uid("c2"))
    assert ips(again) == ips(first)


def test_pool_selection_first_match_wins(svc: IpamService) -> None:
    """Annotations (pool, the pool of a requested IP, product type) beat the network
    config's pool, which beats the namespace default."""
    svc.create_pool("web", "dynamic")
    svc.create_subnet("web", "10.19.0.0/24")
    svc.create_pool("vms", "fixed", product_type="light-vm")
    svc.create_subnet("vms", "10.19.1.0/24")
    svc.create_pool("group", "fixed", product_type="static-group")
    svc.create_subnet("group", "10.19.2.0/24")
    svc.create_pool("db", "sticky")
    svc.create_subnet("db", "10.19.3.0/24")
    svc.set_namespace_default("ns", "db")

    def pick(cid: str, **kw: Any) -> str:
        return ips(svc.allocate(req(cid, pool=kw.pop("pool", ""), **kw)))[0]

    assert pick("a1", config_pool="web").startswith("10.19.0.")       # netconf over default
    assert pick("a2").startswith("10.19.3.")                          # namespace default
    assert pick("a3", pool="vms", config_pool="web").startswith("10.19.1.")
    # an annotated product type beats a network-config pool of another policy, and the
    # product-type *name* picks between two pools of the same policy
    assert pick("a4", product_type="light-vm", config_pool="web").startswith("10.19.1.")
    assert pick("a5", product_type="static-group").startswith("10.19.2.")
    with pytest.raises(InvalidArgument, match="matches 2 pools"):
        pick("a6", product_type="fixed")
    # the requested address selects its own pool
    assert pick("a7", requested_ip="10.19.2.77", config_pool="web") == "10.19.2.77"
    with pytest.raises(NotFound, match="no pool has a subnet"):
        pick("a8", requested_ip="192.0.2.1")
    with pytest.raises(PolicyConflict, match="has policy fixed"):
        pick("a9", requested_ip="10.19.1.9", product_type="dynamic")
    with pytest.raises(NotFound, match="network config"):
        pick("a10", config_pool="nope")


def test_released_objects_are_kept_for_resync_then_pruned(svc: IpamService,
                                                          clock: FakeClock) -> None:
    pool = svc.create_pool("p", "dynamic", quarantine_seconds=0)
    sub = svc.create_subnet("p", "10.20.0.0/24")
    a = svc.allocate(req("c1"))
    svc.release("c1", "eth0")
    svc.delete_subnet(sub.id)
    assert svc.released_onos_objects() == {"port": [a.port.id], "subnet": [sub.id],
                                           "network": [pool.network_id]}
    svc.create_subnet("p", "10.20.1.0/24")          # the pool's network is live again
    assert svc.released_onos_objects()["network"] == []
    clock.now += 100
    b = svc.allocate(req("c2"))
    svc.release("c2", "eth0")
    # a periodic resync replays only what was released since the previous one
    assert svc.released_onos_objects(since=clock.now - 10)["port"] == [b.port.id]
    assert sorted(svc.released_onos_objects()["port"]) == sorted([a.port.id, b.port.id])
    clock.now += 7 * 24 * 3600 + 1
    svc.sweep()
    assert svc.released_onos_objects() == {"port": [], "subnet": [], "network": []}


def test_a_stateful_group_draws_from_its_own_pool(svc: IpamService) -> None:
    """A sticky pool with a group is reserved for that StatefulSet's members (namespace/
    set-name, from pod names set-name-<ordinal>); they draw from it first."""
    svc.create_pool("shared", "sticky")
    svc.create_subnet("shared", "10.21.0.0/24")
    svc.create_pool("db-ips", "sticky", group="shop/db")
    svc.create_subnet("db-ips", "10.21.1.0/28")
    svc.set_namespace_default("shop", "shared")
    member = svc.allocate(req("m0", pool="", ns="shop", name="db-0", product_type="sticky"))
    assert ips(member)[0].startswith("10.21.1.")
    assert ips(svc.allocate(req("m1", pool="", ns="shop", name="db-1")))[0].startswith("10.21.1.")
    other = svc.allocate(req("o0", pool="", ns="shop", name="cache-0", product_type="sticky"))
    assert ips(other)[0].startswith("10.21.0.")     # not a member: the shared pool
    with pytest.raises(PolicyConflict, match="reserved for group 'shop/db'"):
        svc.allocate(req("o1", pool="db-ips", ns="shop", name="cache-1"))
    with pytest.raises(InvalidArgument, match="only a sticky pool"):
        svc.create_pool("bad", "dynamic", group="shop/web")
    with pytest.raises(InvalidArgument, match="namespace/statefulset-name"):
        svc.create_pool("bad", "sticky", group="db")


def test_dynamic_pools_quarantine_60_s_by_default(svc: IpamService, clock: FakeClock) -> None:
    pool = svc.create_pool("p", "dynamic")
    assert pool.quarantine_seconds == 60
    svc.create_subnet("p", "10.22.0.0/29")          # five usable addresses
    first = ips(svc.allocate(req("c1")))
    svc.release("c1", "eth0")
    assert usage(svc).quarantined == 1
    others = [ips(svc.allocate(req(f"c{i}"))) for i in range(2, 6)]
    assert first not in others                      # the released one rests
    with pytest.raises(PoolExhausted):
        svc.allocate(req("c6"))
    clock.now += 59
    svc.sweep()
    with pytest.raises(PoolExhausted):
        svc.allocate(req("c6"))
    clock.now += 2
    assert svc.sweep()[0] == 1
    assert ips(svc.allocate(req("c6"))) == first


def test_active_endpoints_match_the_ports(svc: IpamService) -> None:
    """The topology's lean read agrees with the full port list, dual-stack included."""
    svc.create_pool("p", "dynamic", quarantine_seconds=0)
    svc.create_subnet("p", "10.23.0.0/24")
    svc.create_subnet("p", "fd00:23::/64")
    svc.create_pool("vm", "fixed")
    svc.create_subnet("vm", "10.24.0.0/24")
    for i in range(5):
        svc.allocate(req(f"c{i}", node=f"n{i % 2}"))
    svc.release("c2", "eth0")
    svc.bind("vm", "idle-owner")                      # idle: not in the topology
    want = sorted((p.id, p.mac, p.node, tuple(a.ip for a in p.addresses))
                  for p, _ in svc.list_ports(state="active"))
    got = svc.active_endpoints()
    assert got == want and len(got) == 4
    assert all(len(ips) == 2 and ":" not in ips[0] and ":" in ips[1] for *_, ips in got)


def test_a_bound_owner_gains_a_family_added_to_its_pool(svc: IpamService) -> None:
    svc.create_pool("vm", "fixed")
    svc.create_subnet("vm", "10.25.0.0/24")
    first = svc.allocate(req("c1", pool="vm", name="vm-1"))
    assert ips(first) == ["10.25.0.2"]
    svc.release("c1", "eth0")
    svc.create_subnet("vm", "fd00:25::/64")          # the pool grows dual-stack
    again = svc.allocate(req("c2", pool="vm", name="vm-1", uid="u-new"))
    assert ips(again)[0] == "10.25.0.2" and ips(again)[1].startswith("fd00:25::")
    svc.release("c2", "eth0")
    third = svc.allocate(req("c3", pool="vm", name="vm-1", uid="u-3"))
    assert ips(third) == ips(again)                  # kept, not drawn again
    assert usage(svc, "vm").used == 2                 # one address of each family
