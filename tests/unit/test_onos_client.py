"""OnosClient against the emulator: upsert, idempotent delete, and the error mapping."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ipam.onos import (
    OnosAuthError,
    OnosClient,
    OnosNetwork,
    OnosPort,
    OnosRejected,
    OnosSubnet,
    OnosUnavailable,
    network_body,
    port_body,
    read_password,
    subnet_body,
)
from onos_emulator import EmulatorServer
from tests.lab.helpers import free_port

SECRET = "s3cr3t-Pa55w0rd"
NET = OnosNetwork("net-1", "pod-net", 4242, 1450, ("sub-1",))
SUB = OnosSubnet("sub-1", "pod-net-10.20.0.0/24", "net-1", "10.20.0.0/24", "10.20.0.1", 4,
                 (("10.20.0.2", "10.20.0.254"),))
PORT = OnosPort("port-1", "default_web-0", "net-1", "0a:11:22:33:44:55",
                (("sub-1", "10.20.0.7"),), "uid-1", host_id="node-a")


@pytest.fixture
def emu(make_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    return make_emulator(password=SECRET, viewer_user="viewer", viewer_password="look")


@pytest.fixture
def client(emu: EmulatorServer) -> Iterator[OnosClient]:
    with OnosClient(emu.url, "onos", SECRET, timeout=2.0) as c:
        yield c


def test_bodies_match_the_contract_examples() -> None:
    n = network_body(NET)["network"]
    assert n["provider:network_type"] == "vxlan"
    assert n["provider:segmentation_id"] == "4242"  # a string, as ONOS parses it
    assert n["tenant_id"] == "ecnet" and n["status"] == "ACTIVE" and n["subnets"] == ["sub-1"]
    assert n["mtu"] == 1450 and n["admin_state_up"] is True and n["router:external"] is False
    s = subnet_body(SUB)["subnet"]
    assert s["allocation_pools"] == [{"start": "10.20.0.2", "end": "10.20.0.254"}]
    assert s["ip_version"] == 4 and s["enable_dhcp"] is False and s["host_routes"] == []
    p = port_body(PORT)["port"]
    assert p["fixed_ips"] == [{"subnet_id": "sub-1", "ip_address": "10.20.0.7"}]
    assert p["binding:host_id"] == "node-a" and p["device_id"] == "uid-1"
    assert p["device_owner"] == "compute:kubernetes"
    assert p["binding:vnic_type"] == "normal" and p["binding:vif_type"] == "ovs"
    assert p["status"] == "ACTIVE" and p["tenant_id"] == "ecnet"
    assert p["port_security_enabled"] is False and p["binding:profile"] == {}


def test_upsert_posts_then_puts(emu: EmulatorServer, client: OnosClient) -> None:
    assert client.upsert_network(NET) == "created"
    assert client.upsert_subnet(SUB) == "created"
    assert client.upsert_port(PORT) == "created"
    moved = replace(PORT, host_id="node-b")
    assert client.upsert_port(moved) == "updated"
    assert client.upsert_network(NET) == "updated"  # network duplicates name the name
    assert client.upsert_subnet(SUB) == "updated"
    counts = emu.calls()["counts"]
    assert counts == {"POST networks 201": 1, "POST subnets 201": 1, "POST ports 201": 1,
                      "POST ports 400": 1, "PUT ports 200": 1, "POST networks 400": 1,
                      "PUT networks 200": 1, "POST subnets 400": 1, "PUT subnets 200": 1}
    state = emu.snapshot()
    assert state["ports"]["port-1"] == port_body(moved)["port"]
    assert state["networks"]["net-1"] == network_body(NET)["network"]
    assert state["subnets"]["sub-1"] == subnet_body(SUB)["subnet"]


def test_delete_is_idempotent(emu: EmulatorServer, client: OnosClient) -> None:
    client.upsert_port(PORT)
    client.delete_port("port-1")
    client.delete_port("port-1")
    client.delete_subnet("never")
    client.delete_network("never")
    assert emu.snapshot()["ports"] == {}
    assert emu.calls()["counts"]["DELETE ports 204"] == 2


def test_network_in_use_is_a_rejection_flagged_in_use(client: OnosClient) -> None:
    client.upsert_network(NET)
    client.upsert_subnet(SUB)
    client.upsert_port(PORT)
    with pytest.raises(OnosRejected) as ei:
        client.delete_network("net-1")
    assert ei.value.status == 409 and ei.value.in_use and "still in use" in ei.value.message
    client.delete_port("port-1")
    client.delete_network("net-1")


def test_bad_payload_is_rejected_with_status_and_message(client: OnosClient) -> None:
    bad = replace(PORT, network_id="")
    with pytest.raises(OnosRejected) as ei:
        client.upsert_port(bad)
    assert ei.value.status == 400
    assert ei.value.message == "OpenStack port network ID cannot be null"
    assert not ei.value.retryable and not ei.value.in_use


def test_wrong_password_is_auth_error(emu: EmulatorServer) -> None:
    with OnosClient(emu.url, "onos", "not-" + SECRET) as c, pytest.raises(OnosAuthError) as ei:
        c.upsert_port(PORT)
    assert ei.value.status == 401


def test_viewer_role_is_auth_error(emu: EmulatorServer) -> None:
    with OnosClient(emu.url, "viewer", "look") as c, pytest.raises(OnosAuthError) as ei:
        c.delete_port("port-1")
    assert ei.value.status == 403
    assert "insufficient privilege" in str(ei.value)


def test_stopped_server_is_unavailable_quickly(emu: EmulatorServer, client: OnosClient) -> None:
    client.upsert_port(PORT)  # leaves a pooled keep-alive connection behind
    emu.stop()
    for _ in range(2):  # the stale pooled connection, then a refused new one
        t0 = time.monotonic()
        with pytest.raises(OnosUnavailable):
            client.delete_port("port-1")
        assert time.monotonic() - t0 < 1.0
    emu.start()
    client.delete_port("port-1")  # reconnects by itself


def test_never_started_is_unavailable() -> None:
    with OnosClient(f"http://127.0.0.1:{free_port()}", "onos", "rocks", timeout=1.0) as c:
        t0 = time.monotonic()
        with pytest.raises(OnosUnavailable):
            c.upsert_network(NET)
        assert time.monotonic() - t0 < 1.0


def test_5xx_is_unavailable(emu: EmulatorServer, client: OnosClient) -> None:
    emu.set_faults("error500")
    with pytest.raises(OnosUnavailable) as ei:
        client.upsert_port(PORT)
    assert ei.value.status == 500 and ei.value.retryable


def test_connection_reset_is_unavailable(emu: EmulatorServer, client: OnosClient) -> None:
    emu.set_faults("reset")
    with pytest.raises(OnosUnavailable):
        client.upsert_port(PORT)
    emu.set_faults("none")
    assert client.upsert_port(PORT) == "created"


def test_slow_beyond_timeout_is_unavailable_then_upsert_converges(emu: EmulatorServer) -> None:
    with OnosClient(emu.url, "onos", SECRET, timeout=0.2) as c:
        emu.set_faults("slow", delay=0.6)
        t0 = time.monotonic()
        with pytest.raises(OnosUnavailable) as ei:
            c.upsert_port(PORT)
        assert time.monotonic() - t0 < 0.5
        assert "timeout" in str(ei.value)
        # ONOS applied the POST after we gave up: the retry must take the PUT path.
        for _ in range(50):
            if emu.snapshot()["ports"]:
                break
            time.sleep(0.05)
        emu.set_faults("none")
        assert c.upsert_port(PORT) == "updated"


def test_password_never_in_repr_str_or_errors(emu: EmulatorServer,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    bad = "not-" + SECRET
    with OnosClient(emu.url, "onos", bad, timeout=0.5) as c:
        texts += [repr(c), str(c)]
        with pytest.raises(OnosAuthError) as e1:
            c.upsert_port(PORT)
        emu.stop()
        with pytest.raises(OnosUnavailable) as e2:
            c.upsert_port(PORT)
        for e in (e1.value, e2.value):
            texts += [str(e), repr(e), repr(e.args), str(e.__cause__), str(e.__context__)]
    texts.append(caplog.text)
    for t in texts:
        assert SECRET not in t and bad not in t
    assert "onos" in repr(c)


def test_credentials_in_url_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError) as ei:
        OnosClient(f"http://onos:{SECRET}@127.0.0.1:8181", "onos", SECRET)
    assert SECRET not in str(ei.value)


def test_read_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "pw"
    f.write_text("  from-file\n")
    monkeypatch.setenv("ECNET_ONOS_PASSWORD", "from-env")
    assert read_password(str(f)) == "from-file"
    assert read_password(None) == "from-env"
    monkeypatch.setenv("OTHER_PW", "other")
    assert read_password(None, env_var="OTHER_PW") == "other"
    monkeypatch.delenv("ECNET_ONOS_PASSWORD")
    assert read_password(None) == "rocks"
    with pytest.raises(OSError):
        read_password(str(f) + ".missing")


class _DrippingServer:
    """A real HTTP server on loopback that answers one byte at a time, `interval` apart: in
    its status line and headers ("headers") or in its body ("body"). Each byte arrives well
    within any per-read timeout; only a deadline on the whole call ends it. `finished` tells
    whether it got to send the whole answer before the client hung up."""

    ANSWER_HEAD = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"

    def __init__(self, where: str, interval: float = 0.2) -> None:
        import socket
        import threading
        self.where, self.interval = where, interval
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.finished: bool | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)                     # the request (small: one recv)
            body = b'{"id":"x"}' + b" " * 40
            head = self.ANSWER_HEAD + f"Content-Length: {len(body)}\r\n\r\n".encode()
            drip, rest = (head + body, b"") if self.where == "headers" else (body, head)
            try:
                if rest:
                    conn.sendall(rest)
                for i in range(len(drip)):
                    conn.sendall(drip[i:i + 1])
                    time.sleep(self.interval)     # the server's pace, not a test wait
                self.finished = True
            except OSError:                       # the client hung up
                self.finished = False

    def close(self) -> None:
        self.thread.join(60)
        self.sock.close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_dripping_server_cannot_outlive_the_call_timeout(where: str) -> None:
    """~60 bytes at 0.2 s each is ~12 s of answer against a 1 s timeout. httpx bounds each
    read only, so the call used to wait for all of it (and succeed); the total deadline ends
    it, and the server sees the client hang up before its answer is complete."""
    server = _DrippingServer(where)
    try:
        with OnosClient(server.url, "onos", "rocks", timeout=1.0) as c:
            with pytest.raises(OnosUnavailable) as e:
                c.upsert_port(PORT)
        assert e.value.ambiguous           # the request was sent: it may still land
        assert "timeout" in str(e.value)
    finally:
        server.close()
    assert server.finished is False
