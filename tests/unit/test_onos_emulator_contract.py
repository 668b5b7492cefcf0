"""The ONOS emulator answers exactly as shared/onos-contract.md (sections 3, 4, 7) says ONOS does.

Everything goes over real HTTP on loopback, as the sync worker's traffic does.
"""
from __future__ import annotations

import copy
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from onos_emulator import EmulatorServer
from tests.lab.helpers import free_port

APP = "/onos/openstacknetworking"
NET_ID = "6b0c7a0e-1f0e-4c53-9c51-6d1b2f7f1a01"
SUBNET_ID = "8e3a7c7d-5a0b-4f2b-9a7e-1c2d3e4f5a61"
PORT_ID = "65c0ee9f-d634-4522-8954-51021b570b0d"

NETWORK = {"network": {
    "id": NET_ID, "name": "pod-net-a", "admin_state_up": True, "status": "ACTIVE",
    "shared": False, "tenant_id": "k8s", "provider:network_type": "vxlan",
    "provider:segmentation_id": "100", "router:external": False, "mtu": 1450,
    "subnets": [SUBNET_ID]}}
SUBNET = {"subnet": {
    "id": SUBNET_ID, "name": "pod-subnet-a", "network_id": NET_ID, "tenant_id": "k8s",
    "cidr": "10.20.0.0/24", "gateway_ip": "10.20.0.1", "ip_version": 4, "enable_dhcp": False,
    "dns_nameservers": [], "allocation_pools": [{"start": "10.20.0.2", "end": "10.20.0.254"}],
    "host_routes": []}}
PORT = {"port": {
    "id": PORT_ID, "name": "default_nginx-7d9", "network_id": NET_ID, "tenant_id": "k8s",
    "mac_address": "fa:16:3e:c9:cb:f0", "admin_state_up": True, "status": "ACTIVE",
    "fixed_ips": [{"subnet_id": SUBNET_ID, "ip_address": "10.20.0.7"}],
    "device_id": "pod-uid", "device_owner": "compute:kubernetes", "binding:host_id": "node-1",
    "binding:vnic_type": "normal", "binding:vif_type": "ovs", "binding:vif_details": {},
    "binding:profile": {}, "security_groups": [], "allowed_address_pairs": [],
    "port_security_enabled": False}}
BODIES = {"networks": NETWORK, "subnets": SUBNET, "ports": PORT}


def body(coll: str, **changes: Any) -> dict[str, Any]:
    b = copy.deepcopy(BODIES[coll])
    inner = next(iter(b.values()))
    for k, v in changes.items():
        k = k.replace("__", ":")
        if v is ...:
            inner.pop(k, None)
        else:
            inner[k] = v
    return b


@pytest.fixture
def onos(emu: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url + APP, auth=("onos", "rocks"), timeout=5.0) as c:
        yield c


def assert_error(r: httpx.Response, status: int, message: str | None = None) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    data = r.json()
    assert set(data) == {"code", "message"}
    assert data["code"] == status and isinstance(data["message"], str)
    if message is not None:
        assert data["message"] == message
    return str(data["message"])


def assert_stack_frame(r: httpx.Response) -> None:
    msg = assert_error(r, 400)
    assert ".java:" in msg and msg.endswith(")"), msg


# ------------------------------------------------------------------ auth (section 3)

def test_missing_credentials_401_basic_realm_karaf_not_json(emu: EmulatorServer) -> None:
    for method in ("POST", "PUT", "DELETE", "GET"):
        path = f"{APP}/ports" if method == "POST" else f"{APP}/ports/{PORT_ID}"
        r = httpx.request(method, emu.url + path, json=PORT)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Basic realm="karaf"'
        assert not r.headers["content-type"].startswith("application/json")
        with pytest.raises(ValueError):
            r.json()
    assert emu.snapshot()["ports"] == {}


def test_wrong_password_401_even_on_unknown_paths(emu: EmulatorServer) -> None:
    for path in (f"{APP}/ports", f"{APP}/nosuch"):
        r = httpx.post(emu.url + path, json=PORT, auth=("onos", "wrong"))
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Basic realm="karaf"'
    r = httpx.post(emu.url + f"{APP}/ports", json=PORT, auth=("karaf", "rocks"))
    assert r.status_code == 401


def test_viewer_writes_get_403_with_the_onos_message(emu: EmulatorServer,
                                                     onos: httpx.Client) -> None:
    assert onos.post("/ports", json=PORT).status_code == 201
    with httpx.Client(base_url=emu.url + APP, auth=("viewer", "look")) as viewer:
        assert_error(viewer.post("/networks", json=NETWORK), 403,
                     "User has insufficient privilege for this request")
        assert_error(viewer.put(f"/ports/{PORT_ID}", json=PORT), 403,
                     "User has insufficient privilege for this request")
        assert_error(viewer.delete(f"/ports/{PORT_ID}"), 403,
                     "User has insufficient privilege for this request")
        # Matching runs before the role filter: unknown paths and GETs are still 404/405.
        assert_error(viewer.get("/ports"), 405)
        assert_error(viewer.post("/nosuch", json={}), 404)
    state = emu.snapshot()
    assert state["networks"] == {} and PORT_ID in state["ports"]


# ------------------------------------------------------------------ routing (section 7.1)

@pytest.mark.parametrize("path", ["/networks", "/subnets", "/ports", f"/networks/{NET_ID}",
                                  f"/subnets/{SUBNET_ID}", f"/ports/{PORT_ID}"])
def test_get_is_405_there_is_no_read_back(onos: httpx.Client, path: str) -> None:
    assert_error(onos.get(path), 405, "HTTP 405 Method Not Allowed")


def test_wrong_method_on_collection_or_item_is_405(onos: httpx.Client) -> None:
    assert_error(onos.delete("/ports"), 405)
    assert_error(onos.put("/ports", json=PORT), 405)
    assert_error(onos.post(f"/ports/{PORT_ID}", json=PORT), 405)
    assert_error(onos.patch(f"/ports/{PORT_ID}", json=PORT), 405)


@pytest.mark.parametrize("path", [f"{APP}/nosuch", f"{APP}/ports/a/b", f"{APP}", "/onos/v1/x",
                                  "/nothing/here"])
def test_unknown_paths_404_json(emu: EmulatorServer, path: str) -> None:
    r = httpx.post(emu.url + path, json={}, auth=("onos", "rocks"))
    assert_error(r, 404, "HTTP 404 Not Found")
    assert r.json() == {"code": 404, "message": "HTTP 404 Not Found"}


# ------------------------------------------------------------------ media type and parsing

def test_post_put_without_json_content_type_415(onos: httpx.Client) -> None:
    raw = json.dumps(PORT).encode()
    assert_error(onos.post("/ports", content=raw, headers={"Content-Type": "text/plain"}), 415)
    assert_error(onos.post("/ports", content=raw, headers={"Content-Type": ""}), 415)
    assert_error(onos.put(f"/ports/{PORT_ID}", content=raw,
                          headers={"Content-Type": "application/xml"}), 415)
    r = onos.post("/ports", content=raw,
                  headers={"Content-Type": "application/json; charset=UTF-8"})
    assert r.status_code == 201


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"[]", b"null", b'"port"',
                                 json.dumps(PORT["port"]).encode(),      # wrapper missing
                                 json.dumps({"network": PORT["port"]}).encode(),  # wrong one
                                 json.dumps({"port": PORT["port"], "x": 1}).encode(),
                                 b'{"port": "abc"}', b'{"port": []}',
                                 b'{"port": {"id": "p", "network_id": "n", "mtu": NaN}}'])
def test_malformed_bodies_400_stack_frame(onos: httpx.Client, raw: bytes) -> None:
    r = onos.post("/ports", content=raw, headers={"Content-Type": "application/json"})
    assert_stack_frame(r)


@pytest.mark.parametrize("coll,changes", [
    ("ports", {"fixed_ips": "10.0.0.1"}),
    ("ports", {"fixed_ips": ["10.0.0.1"]}),
    ("ports", {"name": {"a": 1}}),
    ("ports", {"binding__profile": []}),
    ("networks", {"mtu": "big"}),
    ("networks", {"subnets": "one"}),
    ("subnets", {"allocation_pools": {"start": "a", "end": "b"}}),
    ("subnets", {"cidr": ["10.0.0.0/24"]}),
])
def test_wrong_types_400_stack_frame(onos: httpx.Client, coll: str,
                                     changes: dict[str, Any]) -> None:
    assert_stack_frame(onos.post(f"/{coll}", json=body(coll, **changes)))


def test_jackson_coercions_are_accepted(emu: EmulatorServer, onos: httpx.Client) -> None:
    r = onos.post("/networks", json=body("networks", id=42, mtu="1450",
                                         provider__segmentation_id=100, admin_state_up="true"))
    assert r.status_code == 201
    assert r.headers["location"].endswith("/networks/42")
    assert "42" in emu.snapshot()["networks"]


def test_unknown_fields_are_ignored(emu: EmulatorServer, onos: httpx.Client) -> None:
    b = body("ports", extra_dhcp_opts=[], created_at="2024-01-01T00:00:00Z",
             **{"trunkport:type": "x"}, zzz_unknown={"nested": [1, 2]})
    assert onos.post("/ports", json=b).status_code == 201
    assert emu.snapshot()["ports"][PORT_ID]["mac_address"] == "fa:16:3e:c9:cb:f0"


# ------------------------------------------------------------------ create (section 4, 7.4)

@pytest.mark.parametrize("coll,obj_id", [("networks", NET_ID), ("subnets", SUBNET_ID),
                                         ("ports", PORT_ID)])
def test_create_201_empty_body_absolute_location(emu: EmulatorServer, onos: httpx.Client,
                                                 coll: str, obj_id: str) -> None:
    r = onos.post(f"/{coll}", json=BODIES[coll])
    assert r.status_code == 201
    assert r.content == b""
    assert r.headers["location"] == f"{emu.url}{APP}/{coll}/{obj_id}"
    inner = next(iter(BODIES[coll].values()))
    assert emu.snapshot()[coll][obj_id] == inner


@pytest.mark.parametrize("coll,changes,message", [
    ("networks", {"id": ...}, "OpenStack network ID cannot be null"),
    ("networks", {"id": ""}, "OpenStack network ID cannot be null"),
    ("subnets", {"id": ...}, "OpenStack subnet ID cannot be null"),
    ("subnets", {"network_id": ...}, "OpenStack subnet network ID cannot be null"),
    ("subnets", {"network_id": ""}, "OpenStack subnet network ID cannot be null"),
    ("subnets", {"cidr": ...}, "OpenStack subnet CIDR cannot be null"),
    ("subnets", {"cidr": None}, "OpenStack subnet CIDR cannot be null"),
    ("ports", {"id": ...}, "OpenStack port ID cannot be null"),
    ("ports", {"id": None}, "OpenStack port ID cannot be null"),
    ("ports", {"network_id": ...}, "OpenStack port network ID cannot be null"),
])
def test_missing_required_fields_400_exact_texts(emu: EmulatorServer, onos: httpx.Client,
                                                 coll: str, changes: dict[str, Any],
                                                 message: str) -> None:
    assert_error(onos.post(f"/{coll}", json=body(coll, **changes)), 400, message)
    if "id" not in changes:  # the same checks run on update
        onos.post(f"/{coll}", json=BODIES[coll])
        item = next(iter(BODIES[coll].values()))["id"]
        assert_error(onos.put(f"/{coll}/{item}", json=body(coll, **changes)), 400, message)
    assert emu.snapshot()[coll] in ({}, {next(iter(BODIES[coll].values()))["id"]:
                                         next(iter(BODIES[coll].values()))})


def test_duplicates_400_networks_name_the_name(onos: httpx.Client) -> None:
    for coll in ("networks", "subnets", "ports"):
        assert onos.post(f"/{coll}", json=BODIES[coll]).status_code == 201
    assert_error(onos.post("/networks", json=NETWORK), 400, "pod-net-a already exists")
    assert_error(onos.post("/subnets", json=SUBNET), 400, f"{SUBNET_ID} already exists")
    assert_error(onos.post("/ports", json=PORT), 400, f"{PORT_ID} already exists")
    # Keyed by id: another name under the same id is still a duplicate, named by the new name.
    assert_error(onos.post("/networks", json=body("networks", name="other")), 400,
                 "other already exists")
    # ...and a new id with an existing name is fine.
    assert onos.post("/networks", json=body("networks", id="net-2")).status_code == 201


def test_no_referential_validation(emu: EmulatorServer, onos: httpx.Client) -> None:
    assert onos.post("/ports", json=body("ports", network_id="no-such-net",
                                         fixed_ips=[{"subnet_id": "nope",
                                                     "ip_address": "300.1.1.1"}],
                                         mac_address="not-a-mac")).status_code == 201
    assert onos.post("/subnets", json=body("subnets", network_id="ghost")).status_code == 201
    assert onos.post("/networks", json=body("networks", subnets=["ghost"])).status_code == 201
    state = emu.snapshot()
    assert len(state["ports"]) == len(state["subnets"]) == len(state["networks"]) == 1


# ------------------------------------------------------------------ update (section 7.5)

def test_update_200_empty_and_stores_body(emu: EmulatorServer, onos: httpx.Client) -> None:
    assert onos.post("/ports", json=PORT).status_code == 201
    r = onos.put(f"/ports/{PORT_ID}", json=body("ports", **{"binding:host_id": "node-2"}))
    assert r.status_code == 200 and r.content == b""
    assert emu.snapshot()["ports"][PORT_ID]["binding:host_id"] == "node-2"


def test_update_missing_400_does_not_exist(onos: httpx.Client) -> None:
    assert_error(onos.put(f"/ports/{PORT_ID}", json=PORT), 400, f"{PORT_ID} does not exist")
    assert_error(onos.put(f"/subnets/{SUBNET_ID}", json=SUBNET), 400,
                 f"{SUBNET_ID} does not exist")
    assert_error(onos.put(f"/networks/{NET_ID}", json=NETWORK), 400, "pod-net-a does not exist")
    assert_error(onos.put(f"/networks/{NET_ID}", json=body("networks", id="")), 400,
                 "OpenStack network ID cannot be null")
    assert_stack_frame(onos.put(f"/ports/{PORT_ID}", json=PORT["port"]))


def test_update_uses_body_id_not_path_id(emu: EmulatorServer, onos: httpx.Client) -> None:
    assert onos.post("/ports", json=PORT).status_code == 201
    r = onos.put("/ports/some-other-id", json=body("ports", name="renamed"))
    assert r.status_code == 200
    ports = emu.snapshot()["ports"]
    assert set(ports) == {PORT_ID} and ports[PORT_ID]["name"] == "renamed"


# ------------------------------------------------------------------ delete (section 7.6)

def test_delete_204_also_when_absent(emu: EmulatorServer, onos: httpx.Client) -> None:
    for coll in ("ports", "subnets", "networks"):
        r = onos.delete(f"/{coll}/never-existed")
        assert r.status_code == 204 and r.content == b""
    for coll in ("networks", "subnets", "ports"):
        onos.post(f"/{coll}", json=BODIES[coll])
    for coll, obj_id in (("ports", PORT_ID), ("subnets", SUBNET_ID), ("networks", NET_ID)):
        assert onos.delete(f"/{coll}/{obj_id}").status_code == 204
        assert onos.delete(f"/{coll}/{obj_id}").status_code == 204
    assert emu.snapshot() == {"networks": {}, "subnets": {}, "ports": {}}


def test_network_in_use_409_only_with_subnet_and_port(emu: EmulatorServer,
                                                      onos: httpx.Client) -> None:
    # Only a port on it: not "in use".
    onos.post("/networks", json=NETWORK)
    onos.post("/ports", json=PORT)
    assert onos.delete(f"/networks/{NET_ID}").status_code == 204
    # Only a subnet on it: not "in use" either.
    onos.delete(f"/ports/{PORT_ID}")
    onos.post("/networks", json=NETWORK)
    onos.post("/subnets", json=SUBNET)
    assert onos.delete(f"/networks/{NET_ID}").status_code == 204
    # Subnet and port (referencing it by network_id; the network object need not even exist).
    onos.post("/networks", json=NETWORK)
    onos.post("/ports", json=PORT)
    r = onos.delete(f"/networks/{NET_ID}")
    msg = assert_error(r, 409)
    # ONOS formats "OpenStack network %s %s" with " still in use": two spaces, for real.
    assert msg == f"OpenStack network {NET_ID}  still in use"
    assert NET_ID in emu.snapshot()["networks"]
    # Subnets and ports are never "in use".
    assert onos.delete(f"/subnets/{SUBNET_ID}").status_code == 204
    assert onos.delete(f"/networks/{NET_ID}").status_code == 204


# ------------------------------------------------------------------ HTTP plumbing and hooks

def test_keep_alive_serves_many_requests_on_one_connection(emu: EmulatorServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    headers = {"Authorization": "Basic b25vczpyb2Nrcw==", "Content-Type": "application/json"}
    conn.request("POST", f"{APP}/ports", json.dumps(PORT), headers)
    sock = conn.sock
    r1 = conn.getresponse()
    assert r1.status == 201 and r1.read() == b""
    conn.request("DELETE", f"{APP}/ports/x", headers=headers)
    r2 = conn.getresponse()
    assert r2.status == 204 and r2.read() == b""
    conn.request("GET", f"{APP}/ports", headers=headers)
    r3 = conn.getresponse()
    assert r3.status == 405 and json.loads(r3.read())["code"] == 405
    conn.request("POST", f"{APP}/ports", "{", headers)  # body consumed even on errors
    r4 = conn.getresponse()
    assert r4.status == 400 and json.loads(r4.read())["code"] == 400
    assert conn.sock is sock  # never reconnected
    conn.close()


def test_hooks_state_calls_reset_need_no_auth(emu: EmulatorServer, onos: httpx.Client) -> None:
    onos.post("/ports", json=PORT)
    onos.post("/ports", json=PORT)
    onos.delete(f"/ports/{PORT_ID}")
    calls = httpx.get(emu.url + "/_emulator/calls").json()
    assert calls["counts"] == {"POST ports 201": 1, "POST ports 400": 1, "DELETE ports 204": 1}
    assert calls["total"] == 3
    assert calls["by_object"] == {f"POST ports/{PORT_ID}": 2, f"DELETE ports/{PORT_ID}": 1}
    onos.post("/networks", json=NETWORK)
    state = httpx.get(emu.url + "/_emulator/state").json()
    assert state == {"networks": {NET_ID: NETWORK["network"]}, "subnets": {}, "ports": {}}
    assert httpx.post(emu.url + "/_emulator/reset").status_code == 204
    assert httpx.get(emu.url + "/_emulator/state").json() == {"networks": {}, "subnets": {},
                                                               "ports": {}}
    assert httpx.get(emu.url + "/_emulator/calls").json()["total"] == 0


def test_fault_injection_modes(emu: EmulatorServer, onos: httpx.Client) -> None:
    def faults(**spec: Any) -> None:
        r = httpx.post(emu.url + "/_emulator/faults", json=spec)
        assert r.status_code == 200, r.text

    faults(mode="error500", rate=1.0)
    assert_error(onos.post("/ports", json=PORT), 500)
    faults(mode="unauthorized")
    r = onos.post("/ports", json=PORT)
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="karaf"'
    faults(mode="reset")
    with pytest.raises(httpx.TransportError):
        onos.post("/ports", json=PORT)
    faults(mode="slow", delay=0.3)
    t0 = time.monotonic()
    assert onos.post("/ports", json=PORT).status_code == 201  # slow, then applied
    assert time.monotonic() - t0 >= 0.3
    faults(mode="error500", rate=0.5, seed=7)
    codes = [onos.delete(f"/ports/{i}").status_code for i in range(40)]
    assert 5 < codes.count(500) < 35 and set(codes) == {204, 500}
    faults(mode="none")
    assert onos.delete("/ports/x").status_code == 204
    assert httpx.post(emu.url + "/_emulator/faults", json={"mode": "bogus"}).status_code == 400
    counts = emu.calls()["counts"]
    assert counts["POST ports reset"] == 1 and counts["POST ports 401"] == 1


def test_stop_drops_keep_alive_connections_and_restart_keeps_state(emu: EmulatorServer,
                                                                  onos: httpx.Client) -> None:
    assert onos.post("/ports", json=PORT).status_code == 201
    emu.stop()
    with pytest.raises(httpx.TransportError):
        onos.delete("/ports/x")
    emu.start()
    assert onos.post("/ports", json=PORT).status_code == 400  # still there: duplicate


def test_cli_serves_with_configured_users() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "onos_emulator", "--listen", f"127.0.0.1:{port}",
         "--user", "admin", "--password", "pw", "--viewer-user", "v", "--viewer-password", "vp",
         "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}{APP}"
        for _ in range(100):
            try:
                r = httpx.post(url + "/ports", json=PORT, auth=("admin", "pw"), timeout=1)
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        else:
            pytest.fail("emulator CLI did not start")
        assert r.status_code == 201
        assert httpx.post(url + "/ports", json=PORT, auth=("onos", "rocks")).status_code == 401
        assert httpx.delete(url + f"/ports/{PORT_ID}", auth=("v", "vp")).status_code == 403
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_chunked_request_body_is_read(emu: EmulatorServer, onos: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        raw = json.dumps(PORT).encode()
        yield raw[:10]
        yield raw[10:]

    r = onos.post("/ports", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 201
    assert onos.delete(f"/ports/{PORT_ID}").status_code == 204  # same connection still sane
