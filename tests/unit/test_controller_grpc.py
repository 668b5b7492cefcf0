"""The controller over real gRPC on loopback, with a real SQLite store."""
from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from tests.lab.controller import running_controller, sqlite_url


@pytest.fixture
def stubs(tmp_path: Path):  # type: ignore[no-untyped-def]
    with running_controller(sqlite_url(tmp_path)) as ctl:
        ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}")
        yield pb_grpc.IPControllerStub(ch), pb_grpc.IPAdminStub(ch), ch
        ch.close()


def alloc(cid: str, pool: str = "p", uid: str = "") -> pb.AllocateRequest:
    return pb.AllocateRequest(container_id=cid, ifname="eth0", node="n1", pool=pool,
                              pod=pb.PodRef(namespace="ns", name=f"pod-{cid}",
                                            uid=uid or f"u-{cid}"))


def error_class(err: grpc.RpcError) -> str:
    return dict(err.trailing_metadata() or ()).get("ecnet-error", "")  # type: ignore[attr-defined]


def test_health_and_allocation_path(stubs) -> None:  # type: ignore[no-untyped-def]
    ctl, admin, ch = stubs
    h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
    assert h.status == health_pb2.HealthCheckResponse.SERVING
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic",
                                                       quarantine_seconds=0)))
    admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.30.0.0/24"))
    r1 = ctl.AllocatePort(alloc("c1"))
    assert r1.port.ips[0].address == "10.30.0.2/24" and r1.port.ips[0].gateway == "10.30.0.1"
    assert not r1.existing and r1.port.mac and r1.port.state == "active"
    r2 = ctl.AllocatePort(alloc("c1"))
    assert r2.existing and r2.port.id == r1.port.id
    got = ctl.GetPort(pb.GetPortRequest(container_id="c1", ifname="eth0"))
    assert got.port.id == r1.port.id
    ports = admin.ListPorts(pb.ListPortsRequest()).ports
    assert [p.id for p in ports] == [r1.port.id]
    rel = ctl.ReleasePort(pb.ReleaseRequest(container_id="c1", ifname="eth0"))
    assert rel.found and rel.outcome == "released"
    assert not ctl.ReleasePort(pb.ReleaseRequest(container_id="c1", ifname="eth0")).found
    usage = admin.ListPools(pb.ListPoolsRequest()).pools[0].usage
    assert (usage.total, usage.used, usage.free) == (254, 0, 253)


def test_errors_map_to_status_and_class(stubs) -> None:  # type: ignore[no-untyped-def]
    ctl, admin, _ = stubs
    with pytest.raises(grpc.RpcError) as ei:
        ctl.AllocatePort(alloc("c1", pool="nope"))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND and error_class(ei.value) == "NotFound"
    with pytest.raises(grpc.RpcError) as ei:
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="x", policy="bogus")))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
    admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.31.0.0/30"))
    ctl.AllocatePort(alloc("c1"))
    with pytest.raises(grpc.RpcError) as ei:
        ctl.AllocatePort(alloc("c2"))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_class(ei.value) == "PoolExhausted"
    with pytest.raises(grpc.RpcError) as ei:
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.31.0.0/24"))
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS and "overlaps" in ei.value.details()


def test_concurrent_allocations_are_distinct(stubs) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor
    ctl, admin, _ = stubs
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
    admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.32.0.0/22"))
    with ThreadPoolExecutor(16) as ex:
        res = list(ex.map(lambda i: ctl.AllocatePort(alloc(f"c{i}")), range(200)))
    addrs = [r.port.ips[0].address for r in res]
    assert len(set(addrs)) == 200


def test_node_registration(stubs) -> None:  # type: ignore[no-untyped-def]
    ctl, admin, _ = stubs
    r = ctl.RegisterNode(pb.RegisterNodeRequest(node=pb.NodeInfo(name="h1",
                                                                 underlay_ip="172.31.0.1")))
    assert r.heartbeat_seconds > 0 and r.node.state == "ready"
    assert [n.name for n in admin.ListNodes(pb.ListNodesRequest()).nodes] == ["h1"]
    with pytest.raises(grpc.RpcError) as ei:
        ctl.RegisterNode(pb.RegisterNodeRequest(node=pb.NodeInfo(name="h2",
                                                                 underlay_ip="bogus")))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_activity_summary_counts_and_reports_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    from ipcontroller.activity import ActivitySummary
    now = [0.0]
    summary = ActivitySummary(interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="ipcontroller.activity"):
        for _ in range(3):
            summary.note("allocate-new")
        summary.note("release-released")
        assert caplog.records == []            # nothing until the interval is over
        now[0] = 10.5
        summary.note("allocate-new")
        now[0] = 11.0
        summary.note("allocate-new")           # a new interval has begun: no second line
    assert [r.getMessage() for r in caplog.records] == [
        "activity in the last 10s: allocate-new=4 release-released=1"]


def test_old_and_new_agents_pool_fields(stubs) -> None:  # type: ignore[no-untyped-def]
    """An older agent sends one pick in `pool` (an explicit choice); a newer one sends the
    annotation and the network config's pool apart, and `pool` for older controllers."""
    ctl, admin, _ = stubs
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="web", policy="dynamic")))
    admin.CreateSubnet(pb.CreateSubnetRequest(pool="web", cidr="10.31.0.0/24"))
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="vm", policy="fixed",
                                                       product_type="light-vm")))
    admin.CreateSubnet(pb.CreateSubnetRequest(pool="vm", cidr="10.32.0.0/24"))
    old = alloc("old", pool="web")
    old.product_type = "light-vm"
    with pytest.raises(grpc.RpcError) as err:
        ctl.AllocatePort(old)
    assert error_class(err.value) == "PolicyConflict"
    new = alloc("new", pool="web")
    new.product_type, new.config_pool = "light-vm", "web"
    got = ctl.AllocatePort(new).port
    assert got.ips[0].address.startswith("10.32.0.")  # the annotated type beat the netconf pool
