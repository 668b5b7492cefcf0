"""The agent's CNI edge without root: `serve_one` turns every failure into a CNI error
object with the right code, and the socket server survives clients that misbehave. The
handler runs with fakes for the controller, OVSDB and netlink; the real ones are exercised
in tests/functional and tests/e2e."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cni.agent import server as agent_server
from cni.agent.handler import AgentConfig, CniHandler
from cni.agent.server import AgentServer, serve_one
from cni.agent.wire import encode_request
from ecnet_api.v1 import ecnet_pb2 as pb
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
    def doom_host_end(self, name: str) -> bool:
        return False

    def reap_doomed(self) -> bool:
        return False

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
