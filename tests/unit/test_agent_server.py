"""The agent's CNI edge without root: `serve_one` turns every failure into a CNI error
object with the right code, and the socket server survives clients that misbehave. The
handler runs with fakes for the controller, OVSDB and netlink; the real ones are exercised
in tests/functional and tests/e2e."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.any_pb2 import Any as Any_
from google.rpc import status_pb2
from grpc_status import rpc_status

from cni.agent import server as agent_server
from cni.agent.controller import to_cni_error
from cni.agent.handler import AgentConfig, CniHandler
from cni.agent.server import AgentServer, serve_one
from cni.agent.wire import encode_request
from cni.errors import CniError
from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ovs_driver.errors import OvsConnectionError

CONF = {"cniVersion": "1.0.0", "name": "n", "type": "ecnet", "pool": "p"}


def env(cmd: str) -> dict[str, str]:
    return {"CNI_COMMAND": cmd, "CNI_CONTAINERID": "c0ffee", "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/var/run/netns/gone", "CNI_PATH": "/opt/cni/bin",
            "CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=a;K8S_POD_UID=u1"}


class DownOvs:
    def __getattr__(self, name: str) -> Any:
        def fail(*a: Any, **kw: Any) -> Any:
            raise OvsConnectionError("ovsdb-server is not answering")
        return fail


class FakeController:
    def __init__(self) -> None:
        self.released: list[str] = []

    def release(self, req: pb.ReleaseRequest) -> pb.ReleaseResponse:
        self.released.append(req.container_id)
        return pb.ReleaseResponse(found=True, outcome="released")

    def get_port(self, container_id: str, ifname: str) -> pb.Port:
        return pb.Port(id="2f1d0c3e-0000-4000-8000-000000000001", mac="02:00:00:00:00:01",
                       ips=[pb.IPConfig(address="10.0.0.2/24", gateway="10.0.0.1")])


class NoNetlink:
    def doom_host_end(self, name: str) -> None:
        return None

    def reap_doomed(self) -> bool:
        return False

    def watch_unregistered(self, *callbacks: Any) -> None:
        pass

    def links_gone(self, host_indexes: list[int]) -> set[int]:
        return set(host_indexes)

    def delete_pod_interface(self, *a: Any) -> bool:
        return False


def run(handler: CniHandler, cmd: str) -> tuple[int, dict[str, Any]]:
    raw = serve_one(handler, encode_request(env(cmd), json.dumps(CONF).encode()))
    head, _, body = raw.partition(b"\n")
    return int(head), (json.loads(body) if body else {})


@pytest.fixture
def handler() -> CniHandler:
    return CniHandler(AgentConfig(node="n1"), FakeController(), NoNetlink(),  # type: ignore[arg-type]
                      DownOvs())


def test_ovsdb_down_is_try_again_for_del_and_check(handler: CniHandler) -> None:
    for cmd in ("DEL", "CHECK"):
        rc, out = run(handler, cmd)
        assert rc == 1 and out["code"] == 11, out
        assert "OVSDB unavailable" in out["msg"]
    assert handler.controller.released == []  # type: ignore[attr-defined]  # DEL retried later


def test_undecodable_request_is_an_error_object(handler: CniHandler) -> None:
    head, _, body = serve_one(handler, b"garbage").partition(b"\n")
    assert head == b"1" and json.loads(body)["code"] == 6


def test_a_client_that_never_finishes_does_not_pin_a_worker(
        handler: CniHandler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_server, "REQUEST_READ_TIMEOUT", 0.3)
    path = str(tmp_path / "agent.sock")
    srv = AgentServer(path, handler, workers=1)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.connect(path)
        stuck.sendall(b"ECNET1 ")                # and never half-closes
        time.sleep(0.1)
        ok = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ok.settimeout(5)
        ok.connect(path)
        ok.sendall(encode_request({**env("VERSION")}, json.dumps(CONF).encode()))
        ok.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := ok.recv(65536):
            answer += chunk
        assert answer.startswith(b"0\n") and b"supportedVersions" in answer
        stuck.close()
        ok.close()
    finally:
        srv.shutdown_and_remove()


class Iface:
    def __init__(self, name: str, container: str) -> None:
        self.name = name
        self.external_ids = {"ecnet/container": container, "ecnet/ifname": "eth0"}


class TakenOverOvs:
    """The bound port's host end was found for the old container, then taken over by the
    new container's ADD before this DEL got the host name's lock."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def find_interfaces(self, **ids: str) -> list[Iface]:
        return [Iface("tapabcdef01-23", ids["ecnet/container"])]

    def get_interface(self, name: str) -> Iface:
        return Iface(name, "the-new-container")

    def delete_port(self, bridge: str, name: str) -> bool:
        self.deleted.append(name)
        return True


class RecordingNetlink(NoNetlink):
    def __init__(self) -> None:
        self.doomed: list[str] = []

    def doom_host_end(self, name: str) -> bool:
        self.doomed.append(name)
        return True


def test_del_leaves_a_port_another_container_took_over() -> None:
    ovs, nl, ctl = TakenOverOvs(), RecordingNetlink(), FakeController()
    h = CniHandler(AgentConfig(node="n1"), ctl, nl, ovs)  # type: ignore[arg-type]
    rc, out = run(h, "DEL")
    assert rc == 0, out
    assert ovs.deleted == [] and nl.doomed == []     # the live pod keeps its port and veth
    assert ctl.released == ["c0ffee"]                # the old container's release still runs
    h.teardown.stop()


# ------------------------------------------ refusals: ErrorCode -> CNI code, and skew
# The CNI code a pod gets for each ErrorCode (None: the gRPC status decides), pinned.
PINNED_CNI: dict[int, int | None] = {
    pb.ERROR_CODE_UNSPECIFIED: None, pb.ERROR_CODE_INTERNAL: None,
    pb.ERROR_CODE_INVALID_ARGUMENT: 7, pb.ERROR_CODE_NOT_FOUND: 102,
    pb.ERROR_CODE_ALREADY_EXISTS: 101, pb.ERROR_CODE_POLICY_CONFLICT: 101,
    pb.ERROR_CODE_IN_USE: 101, pb.ERROR_CODE_POOL_EXHAUSTED: 100, pb.ERROR_CODE_BUSY: 11,
    pb.ERROR_CODE_ONOS_UNAVAILABLE: None, pb.ERROR_CODE_ONOS_AUTH: None,
    pb.ERROR_CODE_ONOS_REJECTED: None, pb.ERROR_CODE_PERMISSION_DENIED: None,
}


def test_the_agent_maps_every_error_code() -> None:
    """Exhaustive: a value added to the proto fails here until the agent's table has it."""
    from cni.agent.controller import _CNI_BY_CODE
    assert set(_CNI_BY_CODE) == set(pb.ErrorCode.values()) == set(PINNED_CNI)
    assert {c: (k.code if k else None) for c, k in _CNI_BY_CODE.items()} == PINNED_CNI


class Refuser(pb_grpc.IPControllerServicer):
    """A controller that refuses every allocation with the trailing metadata it is given:
    an older controller (only "ecnet-error") or a newer one (a detail we may not know)."""

    def __init__(self) -> None:
        self.status = grpc.StatusCode.UNKNOWN
        self.message = ""
        self.metadata: tuple[tuple[str, str | bytes], ...] = ()

    def AllocatePort(self, request: pb.AllocateRequest, context: grpc.ServicerContext) -> Any:
        context.set_trailing_metadata(self.metadata)
        context.abort(self.status, self.message)


Refusing = tuple[Refuser, Any]


@pytest.fixture
def refuser() -> Iterator[Refusing]:
    servicer = Refuser()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_IPControllerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield servicer, pb_grpc.IPControllerStub(channel)
    finally:
        channel.close()
        server.stop(None)


def refused_with(refuser: Refusing, status: grpc.StatusCode, message: str,
                 *metadata: tuple[str, str | bytes]) -> CniError:
    """What the agent makes of one refusal (the client's edge, `to_cni_error`; its retry of
    UNAVAILABLE once the channel is ready is the client's business, not the mapping's)."""
    servicer, stub = refuser
    servicer.status, servicer.message, servicer.metadata = status, message, metadata
    with pytest.raises(grpc.RpcError) as ei:
        stub.AllocatePort(pb.AllocateRequest(container_id="c", ifname="eth0"), timeout=5)
    return to_cni_error(ei.value, "ctl")


# What controllers before ErrorCode sent (68ca517 ipcontroller/errors.py), and the CNI code
# the agent gave a pod then: an old controller's refusals still mean the same.
OLD_CONTROLLER = [
    ("NotFound", grpc.StatusCode.NOT_FOUND, 102),
    ("InvalidArgument", grpc.StatusCode.INVALID_ARGUMENT, 7),
    ("AlreadyExists", grpc.StatusCode.ALREADY_EXISTS, 101),
    ("PolicyConflict", grpc.StatusCode.FAILED_PRECONDITION, 101),
    ("InUse", grpc.StatusCode.FAILED_PRECONDITION, 101),
    ("PoolExhausted", grpc.StatusCode.RESOURCE_EXHAUSTED, 100),
    ("Busy", grpc.StatusCode.UNAVAILABLE, 11),
    ("OnosError", grpc.StatusCode.UNAVAILABLE, 11),
    ("OnosRejected", grpc.StatusCode.FAILED_PRECONDITION, 999),
    ("Internal", grpc.StatusCode.INTERNAL, 999),
]


@pytest.mark.parametrize("name,status,cni_code", OLD_CONTROLLER)
def test_an_older_controller_is_understood_by_its_class_name(
        refuser: Refusing, name: str, status: grpc.StatusCode,
        cni_code: int) -> None:
    err = refused_with(refuser, status, "pool 'p' says no", ("ecnet-error", name))
    assert err.code == cni_code
    if cni_code in (7, 100, 101, 102):
        assert err.msg == "pool 'p' says no"   # the controller's sentence reaches the pod


def rich(status: grpc.StatusCode, message: str, code: int) -> tuple[str, bytes]:
    detail = Any_()
    detail.Pack(pb.ErrorDetail(code=code, message=message))  # type: ignore[arg-type]
    st = rpc_status.to_status(status_pb2.Status(code=status.value[0], message=message,
                                                details=[detail]))
    return st.trailing_metadata[0]  # type: ignore[no-any-return]


def test_the_detail_wins_over_the_legacy_name(
        refuser: Refusing) -> None:
    """The agent reads the ErrorCode, not the name beside it: a controller whose class
    names drifted still gives the pod the code its ErrorCode means."""
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    err = refused_with(refuser, status, "no free address",
                       rich(status, "no free address", pb.ERROR_CODE_POOL_EXHAUSTED),
                       ("ecnet-error", "SomethingRenamed"))
    assert (err.code, err.msg) == (100, "no free address")


def test_a_code_this_agent_does_not_know_is_decided_by_the_status(
        refuser: Refusing) -> None:
    """A newer controller may add an ErrorCode: the agent treats it as no reason at all."""
    for status, cni_code in ((grpc.StatusCode.UNAVAILABLE, 11),
                             (grpc.StatusCode.FAILED_PRECONDITION, 999)):
        err = refused_with(refuser, status, "new reason", rich(status, "new reason", 4242))
        assert err.code == cni_code, status


def test_no_reason_at_all_is_decided_by_the_status(
        refuser: Refusing) -> None:
    assert refused_with(refuser, grpc.StatusCode.RESOURCE_EXHAUSTED, "proxy says").code == 11
    err = refused_with(refuser, grpc.StatusCode.PERMISSION_DENIED, "proxy says")
    assert (err.code, err.details) == (999, "PERMISSION_DENIED")


@contextmanager
def _serving(handler: CniHandler, tmp_path: Path, **kw: Any) -> Iterator[str]:
    """An AgentServer on a socket under tmp_path, serving until the block ends."""
    path = str(tmp_path / "agent.sock")
    srv = AgentServer(path, handler, **kw)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield path
    finally:
        srv.shutdown_and_remove()


@contextmanager
def _closing(socks: list[socket.socket]) -> Iterator[None]:
    """Close the sockets the block opened (before the server shuts down: its workers wait
    on them)."""
    try:
        yield
    finally:
        for s in socks:
            s.close()


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_client_dripping_bytes_is_dropped_at_the_whole_request_deadline(
        handler: CniHandler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_server, "REQUEST_READ_TIMEOUT", 1.0)
    dropped = threading.Event()
    with _serving(handler, tmp_path, workers=1) as path:
        drip = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        drip.connect(path)
        drip.settimeout(0.2)     # each byte comes well inside a per-read timeout
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15 and not dropped.is_set():
            try:
                drip.sendall(b"E")
                if drip.recv(1) == b"":
                    dropped.set()
            except TimeoutError:
                continue         # still open: the server is still reading
            except OSError:
                dropped.set()
        assert dropped.is_set(), "the dripping client held the worker for 15 s"
        assert time.monotonic() - t0 < 10
        drip.close()


def test_requests_beyond_the_queue_are_told_to_try_again(
        handler: CniHandler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_server, "REQUEST_READ_TIMEOUT", 30.0)
    held: list[socket.socket] = []
    with _serving(handler, tmp_path, workers=1, queue=1) as path, _closing(held):
        for _ in range(2):       # one on the worker, one waiting: neither finishes
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.sendall(b"ECNET1 ")
            held.append(s)
        extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        extra.settimeout(10)
        extra.connect(path)
        answer = _read_all(extra)
        assert answer.startswith(b"1\n"), answer
        assert json.loads(answer.split(b"\n", 1)[1])["code"] == 11
        extra.close()


def test_the_socket_is_created_private_not_chmodded(
        handler: CniHandler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat as st

    def no_chmod(*_a: object, **_k: object) -> None:
        raise AssertionError("chmod after bind: the socket was open until then")
    monkeypatch.setattr(os, "chmod", no_chmod)
    path = str(tmp_path / "agent.sock")
    srv = AgentServer(path, handler, workers=1)
    try:
        assert st.S_IMODE(os.lstat(path).st_mode) & 0o077 == 0
    finally:
        srv.server_close()
