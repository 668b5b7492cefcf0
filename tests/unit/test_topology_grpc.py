"""GetTopology over real gRPC: what standalone agents poll (nodes, ports, subnets) and the
revision that makes an unchanged poll cost nothing."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipcontroller.servicer import TOPOLOGY_TTL
from tests.lab.controller import running_controller, sqlite_url


def after_ttl() -> None:
    """Snapshots are shared for TOPOLOGY_TTL: wait one out to see a change."""
    time.sleep(TOPOLOGY_TTL + 0.05)


@pytest.fixture
def stubs(tmp_path: Path) -> Iterator[tuple[pb_grpc.IPControllerStub, pb_grpc.IPAdminStub]]:
    with running_controller(sqlite_url(tmp_path), "--heartbeat-seconds", "1") as ctl:
        ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}")
        yield pb_grpc.IPControllerStub(ch), pb_grpc.IPAdminStub(ch)
        ch.close()


def register(ctl: pb_grpc.IPControllerStub, name: str, ip: str, gateway: bool = False) -> None:
    ctl.RegisterNode(pb.RegisterNodeRequest(node=pb.NodeInfo(
        name=name, underlay_ip=ip, gateway=gateway, datapath="standalone",
        gateway_cidrs=["172.30.0.0/24"] if gateway else [])))


def test_topology_has_nodes_ports_subnets_and_a_stable_revision(stubs) -> None:  # type: ignore[no-untyped-def]
    ctl, admin = stubs
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
    admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.70.0.0/24"))
    register(ctl, "h1", "172.31.0.1", gateway=True)
    register(ctl, "h2", "172.31.0.2")
    port = ctl.AllocatePort(pb.AllocateRequest(
        container_id="c1", ifname="eth0", node="h2", pool="p",
        pod=pb.PodRef(namespace="ns", name="a", uid="u1"))).port

    t1 = ctl.GetTopology(pb.TopologyRequest(node="h1"))
    assert not t1.unchanged and t1.revision > 0
    assert {(n.name, n.underlay_ip, n.state) for n in t1.nodes} == {
        ("h1", "172.31.0.1", "ready"), ("h2", "172.31.0.2", "ready")}
    assert [n.gateway_cidrs for n in t1.nodes if n.gateway] == [["172.30.0.0/24"]]
    assert [(p.port_id, p.mac, list(p.ips), p.node) for p in t1.ports] == [
        (port.id, port.mac, ["10.70.0.2"], "h2")]
    assert [(s.cidr, s.gateway, s.pool) for s in t1.subnets] == [
        ("10.70.0.0/24", "10.70.0.1", "p")]

    # a heartbeat moves last_seen only: same revision, and the answer is cut down
    register(ctl, "h2", "172.31.0.2")
    after_ttl()
    t2 = ctl.GetTopology(pb.TopologyRequest(node="h1", since_revision=t1.revision))
    assert t2.unchanged and t2.revision == t1.revision and not t2.nodes and not t2.ports

    # a port released: a new revision with the full answer
    ctl.ReleasePort(pb.ReleaseRequest(container_id="c1", ifname="eth0"))
    after_ttl()
    t3 = ctl.GetTopology(pb.TopologyRequest(node="h1", since_revision=t1.revision))
    assert not t3.unchanged and t3.revision != t1.revision and not t3.ports
    assert len(t3.nodes) == 2

    # a node deleted: a new revision without it
    admin.DeleteNode(pb.DeleteNodeRequest(name="h2"))
    after_ttl()
    t4 = ctl.GetTopology(pb.TopologyRequest(node="h1", since_revision=t3.revision))
    assert [n.name for n in t4.nodes] == ["h1"]


def test_a_node_going_stale_changes_the_revision(stubs) -> None:  # type: ignore[no-untyped-def]
    ctl, _ = stubs
    register(ctl, "h1", "172.31.0.1")
    register(ctl, "h2", "172.31.0.2")
    t1 = ctl.GetTopology(pb.TopologyRequest(node="h1"))
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:   # h1 keeps beating, h2 went quiet (3 x 1 s)
        register(ctl, "h1", "172.31.0.1")
        t2 = ctl.GetTopology(pb.TopologyRequest(node="h1", since_revision=t1.revision))
        if not t2.unchanged:
            break
        time.sleep(0.3)
    assert not t2.unchanged
    assert {n.name: n.state for n in t2.nodes} == {"h1": "ready", "h2": "stale"}
