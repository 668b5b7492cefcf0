"""The controller over real gRPC on loopback, with a real SQLite store."""
from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipam import errors as ipam_errors
from ipam.onos import errors as onos_errors
from tests.lab.controller import running_controller, sqlite_url
from tests.lab.helpers import wait_for


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
    """The legacy reason (class name in "ecnet-error"), what agents one release older read."""
    return dict(err.trailing_metadata() or ()).get("ecnet-error", "")  # type: ignore[attr-defined]


def error_detail(err: grpc.RpcError) -> pb.ErrorDetail | None:
    """The reason in the rich status, decoded with grpcio-status alone (not our decoder)."""
    rich = rpc_status.from_call(err)  # type: ignore[arg-type]
    found = [d for d in (rich.details if rich is not None else ())
             if d.Is(pb.ErrorDetail.DESCRIPTOR)]
    if not found:
        return None
    detail = pb.ErrorDetail()
    found[0].Unpack(detail)
    return detail


def reason(err: grpc.RpcError) -> int:
    detail = error_detail(err)
    assert detail is not None, "no ErrorDetail in the status"
    assert detail.message == err.details()  # type: ignore[attr-defined]
    return detail.code


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
    assert reason(ei.value) == pb.ERROR_CODE_NOT_FOUND
    with pytest.raises(grpc.RpcError) as ei:
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="x", policy="bogus")))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(ei.value) == pb.ERROR_CODE_INVALID_ARGUMENT
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
    admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.31.0.0/30"))
    ctl.AllocatePort(alloc("c1"))
    with pytest.raises(grpc.RpcError) as ei:
        ctl.AllocatePort(alloc("c2"))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_class(ei.value) == "PoolExhausted"
    assert reason(ei.value) == pb.ERROR_CODE_POOL_EXHAUSTED
    with pytest.raises(grpc.RpcError) as ei:
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.31.0.0/24"))
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS and "overlaps" in ei.value.details()
    assert reason(ei.value) == pb.ERROR_CODE_ALREADY_EXISTS


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
    assert reason(err.value) == pb.ERROR_CODE_POLICY_CONFLICT
    new = alloc("new", pool="web")
    new.product_type, new.config_pool = "light-vm", "web"
    got = ctl.AllocatePort(new).port
    assert got.ips[0].address.startswith("10.32.0.")  # the annotated type beat the netconf pool


# ------------------------------------------------- reasons as codes, across versions
# The reason each IPAM/ONOS class becomes, as wire numbers: pinned here, so a renumbered
# value or a remapped class fails. Keyed by the class object: renaming a class keeps its row.
PINNED_CODES: dict[type[Exception], int] = {
    ipam_errors.InvalidArgument: 2, ipam_errors.NotFound: 3, ipam_errors.AlreadyExists: 4,
    ipam_errors.PolicyConflict: 5, ipam_errors.InUse: 6, ipam_errors.PoolExhausted: 7,
    ipam_errors.Busy: 8, onos_errors.OnosError: 9, onos_errors.OnosAuthError: 10,
    onos_errors.OnosRejected: 11,
}
# What controllers before ErrorCode sent in "ecnet-error" for each reason (68ca517,
# ipcontroller/errors.py: the name of the class its table matched).
PINNED_LEGACY_NAMES: dict[int, str] = {
    0: "Internal", 1: "Internal", 2: "InvalidArgument", 3: "NotFound", 4: "AlreadyExists",
    5: "PolicyConflict", 6: "InUse", 7: "PoolExhausted", 8: "Busy", 9: "OnosError",
    10: "OnosAuthError", 11: "OnosRejected",
    # Newer than every older controller: the name of the reason, which older agents decide
    # by status alone (PERMISSION_DENIED: not retried).
    12: "PermissionDenied",
}


def _subclasses(root: type[Exception]) -> set[type[Exception]]:
    out = set()
    todo = [root]
    while todo:
        for sub in todo.pop().__subclasses__():
            out.add(sub)
            todo.append(sub)
    return out


def test_every_ipam_error_class_has_its_own_stable_code() -> None:
    from ipcontroller.errors import REFUSAL_BY_ERROR
    product = {c for c in _subclasses(ipam_errors.IpamError) | _subclasses(onos_errors.OnosError)
               | {onos_errors.OnosError} if c.__module__.startswith("ipam.")}
    # Every class the IPAM raises has its own row (none falls through to INTERNAL), except
    # OnosUnavailable: it is what the OnosError row means.
    assert product - {onos_errors.OnosUnavailable} == set(REFUSAL_BY_ERROR)
    assert {cls: int(code) for cls, (_, code) in REFUSAL_BY_ERROR.items()} == PINNED_CODES
    codes = [code for _, code in REFUSAL_BY_ERROR.values()]
    assert len(set(codes)) == len(codes)                   # distinct: a code names one reason
    assert pb.ERROR_CODE_UNSPECIFIED not in codes and pb.ERROR_CODE_INTERNAL not in codes


def test_a_renamed_class_changes_no_code_and_no_legacy_name() -> None:
    from ipcontroller.errors import refusal_for
    renamed = type("NoAddressesLeft", (ipam_errors.PoolExhausted,), {})
    r = refusal_for(renamed("pool 'p' has no free IPv4 address"))
    assert (r.status, r.code) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  pb.ERROR_CODE_POOL_EXHAUSTED)
    assert dict(r.trailing_metadata())["ecnet-error"] == "PoolExhausted"
    assert refusal_for(onos_errors.OnosUnavailable("down")).code == pb.ERROR_CODE_ONOS_UNAVAILABLE


def test_a_bug_is_internal_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    from ipcontroller.errors import refusal_for
    with caplog.at_level(logging.ERROR, logger="ipcontroller.errors"):
        r = refusal_for(TypeError("unhashable type: 'list'"))
    assert (r.status, r.code, r.message) == (grpc.StatusCode.INTERNAL, pb.ERROR_CODE_INTERNAL,
                                             "internal error: TypeError")
    assert dict(r.trailing_metadata())["ecnet-error"] == "Internal"
    assert len(caplog.records) == 1 and caplog.records[0].exc_info


def test_legacy_names_cover_every_code_and_match_older_controllers() -> None:
    from ipcontroller.refusal import LEGACY_NAMES
    assert {int(c): n for c, n in LEGACY_NAMES.items()} == PINNED_LEGACY_NAMES
    assert set(PINNED_LEGACY_NAMES) == set(pb.ErrorCode.values())


# The agent one release older (68ca517 cni/agent/controller.py), frozen: the CNI code it gave
# for a refusal, from the class name alone, else from the status.
OLD_AGENT_BY_CLASS = {"PoolExhausted": 100, "PolicyConflict": 101, "InUse": 101,
                      "AlreadyExists": 101, "NotFound": 102, "InvalidArgument": 7, "Busy": 11}


def old_agent_cni_code(err: grpc.RpcError) -> int:
    name = error_class(err)
    if name in OLD_AGENT_BY_CLASS:
        return OLD_AGENT_BY_CLASS[name]
    retryable = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                 grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
    return 11 if err.code() in retryable else 999  # type: ignore[attr-defined]


def test_old_and_new_agents_get_the_same_cni_codes_from_this_controller(stubs) -> None:  # type: ignore[no-untyped-def]
    """Both read this controller's refusals (the new agent the ErrorDetail, the old one the
    legacy name) and give the pod the same CNI code."""
    from cni.agent.controller import to_cni_error
    ctl, admin, _ = stubs
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
    admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.33.0.0/30"))
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="vm", policy="fixed",
                                                       product_type="light-vm")))
    ctl.AllocatePort(alloc("c1"))
    conflict = alloc("c3")
    conflict.product_type = "light-vm"
    calls = {
        "not found": (lambda: ctl.AllocatePort(alloc("c9", pool="nope")), 102),
        "exhausted": (lambda: ctl.AllocatePort(alloc("c2")), 100),
        "conflict": (lambda: ctl.AllocatePort(conflict), 101),
        "invalid": (lambda: ctl.RegisterNode(pb.RegisterNodeRequest(
            node=pb.NodeInfo(name="h", underlay_ip="bogus"))), 7),
        "exists": (lambda: admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p"))), 101),
        "in use": (lambda: admin.DeletePool(pb.DeletePoolRequest(name="p")), 101),
    }
    for what, (call, cni_code) in calls.items():
        with pytest.raises(grpc.RpcError) as ei:
            call()
        assert error_detail(ei.value) is not None, what
        assert to_cni_error(ei.value, "ctl").code == cni_code, what
        assert old_agent_cni_code(ei.value) == cni_code, what


def test_start_up_failures_an_operator_fixes_are_one_line(tmp_path: Path) -> None:
    """A taken port is the environment's fault: one line and exit 1, no traceback; a bad
    flag is refused before anything starts."""
    import socket
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[2]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "ipcontroller.daemon", "--listen",
                            f"127.0.0.1:{port}", "--db", "memory://"], cwd=root,
                           capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.splitlines()[-1] == f"ecnet-ipcontroller: cannot listen on 127.0.0.1:{port}"
    p = subprocess.run([sys.executable, "-m", "ipcontroller.daemon", "--db", "memory://",
                        "--metrics-listen", "127.0.0.1:metrics"], cwd=root,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--metrics-listen takes HOST:PORT" in p.stderr


def test_watch_streams_hold_threads_of_their_own_not_the_workers(tmp_path: Path) -> None:
    """One worker and two open watch streams: unary calls still run (a stream is a coroutine
    on the server's loop, ipcontroller.calls); on the workers they would wait forever."""
    with running_controller(sqlite_url(tmp_path), "--workers", "1") as ctl:
        ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}")
        ctl_stub, admin = pb_grpc.IPControllerStub(ch), pb_grpc.IPAdminStub(ch)
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.97.0.0/24"))
        streams = [ctl_stub.WatchTopology(pb.WatchTopologyRequest(node=f"n{i}"), timeout=30)
                   for i in range(2)]
        for s in streams:
            next(s)   # each stream is open and served: it holds its thread now
        assert ctl_stub.AllocatePort(alloc("c1"), timeout=10).port.id
        assert admin.ListPools(pb.ListPoolsRequest(), timeout=10).pools
        for s in streams:
            s.cancel()
        ch.close()


def test_calls_beyond_the_backlog_limit_are_refused_at_once_with_busy(tmp_path: Path) -> None:
    """--max-concurrent-rpcs counts the calls the workers run or queue (ipcontroller.admission):
    with one there (held by SQLite's write lock, taken by another connection), the next is
    refused at once with
    RESOURCE_EXHAUSTED and the reason BUSY; once the first is done, calls pass again and
    the count is back to zero."""
    import sqlite3
    db = sqlite_url(tmp_path)
    with running_controller(db, "--workers", "1", "--max-concurrent-rpcs", "1") as ctl:
        ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}")
        ctl_stub, admin = pb_grpc.IPControllerStub(ch), pb_grpc.IPAdminStub(ch)
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.98.0.0/24"))
        other = sqlite3.connect(db[len("sqlite:///"):], isolation_level=None)
        other.execute("BEGIN IMMEDIATE")   # the file's write lock: the allocation waits
        slow = ctl_stub.AllocatePort.future(alloc("slow"), timeout=30)
        admission = ctl.admission
        wait_for(lambda: admission.pending == 1, 10, "the allocation to hold the worker")
        with pytest.raises(grpc.RpcError) as err:
            admin.ListPools(pb.ListPoolsRequest(), timeout=10)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(err.value) == pb.ERROR_CODE_BUSY
        other.execute("ROLLBACK")
        other.close()
        assert slow.result(timeout=30).port.id
        wait_for(lambda: admission.pending == 0, 10, "the worker to be free")
        assert admin.ListPools(pb.ListPoolsRequest(), timeout=10).pools
        ch.close()
