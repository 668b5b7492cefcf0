"""Owner annotations are tenant-scoped (issue 12): another namespace's owner, fixed IP or
sticky group is out of a pod's reach, on every store."""
from __future__ import annotations

from typing import Any

import pytest

from ipam.domain import AllocationRequest, PodIdentity
from ipam.errors import PolicyConflict
from ipam.service import IpamService
from tests.lab.helpers import FakeClock


@pytest.fixture
def svc(store: Any, clock: FakeClock) -> IpamService:
    return IpamService(store, clock=clock)


def req(cid: str, ns: str, name: str, owner: str = "", pool: str = "") -> AllocationRequest:
    return AllocationRequest(container_id=cid, ifname="eth0", node="n1", pool=pool,
                             pod=PodIdentity(ns, name, f"uid-{cid}"), owner=owner)


def test_another_namespaces_owner_gets_nothing(svc: IpamService) -> None:
    svc.create_pool("vm", "fixed")
    svc.create_subnet("vm", "10.40.0.0/24")
    mine = svc.allocate(req("t1", "t", "o1-pod", owner="t/o1", pool="vm"))
    svc.release("t1", "eth0")   # kept: tenant t's fixed IP waits for its owner
    with pytest.raises(PolicyConflict, match="namespace 't'"):
        svc.allocate(req("e1", "evil", "x", owner="t/o1", pool="vm"))
    # Nor by picking no pool: the refusal comes before placement.
    with pytest.raises(PolicyConflict):
        svc.allocate(req("e2", "evil", "x", owner="t/o1"))
    back = svc.allocate(req("t2", "t", "o1-pod", owner="t/o1", pool="vm"))
    assert back.port.id == mine.port.id


def test_an_admin_binding_without_namespace_belongs_to_its_first_claimer(
        svc: IpamService) -> None:
    svc.create_pool("vm", "fixed")
    svc.create_subnet("vm", "10.41.0.0/24")
    pinned = svc.bind("vm", "light-vm-7", "10.41.0.77")
    assert svc.allocate(req("t1", "t", "vm7", owner="light-vm-7", pool="vm")).port.id \
        == pinned.id
    svc.release("t1", "eth0")
    with pytest.raises(PolicyConflict, match="belongs to namespace 't'"):
        svc.allocate(req("e1", "evil", "x", owner="light-vm-7", pool="vm"))
    assert svc.allocate(req("t2", "t", "vm7", owner="light-vm-7", pool="vm")).port.id \
        == pinned.id


def test_another_namespaces_sticky_group_is_out_of_reach(svc: IpamService) -> None:
    svc.create_pool("db", "sticky", group="t/db")
    svc.create_subnet("db", "10.42.0.0/24")
    assert svc.allocate(req("t1", "t", "db-0")).pool.name == "db"
    # The owner spelling of t's group member: refused whether or not the pool is named.
    for pool in ("db", ""):
        with pytest.raises(PolicyConflict):
            svc.allocate(req(f"e-{pool}", "evil", "db-1", owner="t/db-1", pool=pool))
    # By its own name, evil/db-1 is in group evil/db: t's pool is not its own.
    with pytest.raises(PolicyConflict, match="reserved for group 't/db'"):
        svc.allocate(req("e3", "evil", "db-1", pool="db"))


def test_a_request_without_namespace_is_not_checked(svc: IpamService) -> None:
    """Runtimes outside Kubernetes (podman, containerd by hand) send no namespace."""
    svc.create_pool("vm", "fixed")
    svc.create_subnet("vm", "10.43.0.0/24")
    assert svc.allocate(req("c1", "", "", owner="t/o1", pool="vm")).port.owner == "t/o1"
