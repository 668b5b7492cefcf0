"""ovs_driver against a real private userspace OVS (ovsdb-server + ovs-vswitchd in a
network namespace of their own). Every assertion about OVS state goes through
ovs-vsctl / ovs-ofctl / ovsdb-tool, never through the client under test.
"""
from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from ovs_driver import (
    OpenFlowBridge,
    OvsConnectionError,
    OvsdbClient,
    OvsFlowError,
    OvsNotFound,
    OvsTransactionError,
)
from tests.lab.ovs import (  # noqa: F401 - fixtures are used by name
    PrivateOvs,
    private_ovs,
    private_ovs_module,
    unique,
    vsctl,
    vsctl_rows,
)

pytestmark = [pytest.mark.root, pytest.mark.ovs]

Veth = Callable[[], str]


@pytest.fixture
def ovs(private_ovs_module: PrivateOvs) -> PrivateOvs:  # noqa: F811
    return private_ovs_module


@pytest.fixture
def client(ovs: PrivateOvs) -> Iterator[OvsdbClient]:
    with OvsdbClient(ovs.remote) as c:
        yield c


@pytest.fixture
def bridge(ovs: PrivateOvs, client: OvsdbClient) -> Iterator[str]:
    name = unique("brt")
    client.ensure_bridge(name)
    yield name
    vsctl(ovs.remote, "--if-exists", "del-br", name)


@pytest.fixture
def veth(ovs: PrivateOvs) -> Iterator[Veth]:
    """Make veth pairs inside the OVS namespace; returns the end to plug into OVS."""
    made: list[str] = []

    def make() -> str:
        name = unique("vt")
        assert ovs.netns is not None
        subprocess.run(["ip", "-n", ovs.netns, "link", "add", name, "type", "veth",
                        "peer", "name", f"{name}p"], check=True)
        subprocess.run(["ip", "-n", ovs.netns, "link", "set", name, "up"], check=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "-n", str(ovs.netns), "link", "del", name],
                       capture_output=True, check=False)


def iface(ovs: PrivateOvs, name: str) -> dict[str, object]:
    rows = vsctl_rows(ovs.remote, "find", "Interface", f"name={name}")
    assert len(rows) == 1, rows
    return rows[0]


def port_rows(ovs: PrivateOvs, name: str) -> list[dict[str, object]]:
    return vsctl_rows(ovs.remote, "find", "Port", f"name={name}")


def list_ports(ovs: PrivateOvs, bridge: str) -> list[str]:
    return vsctl(ovs.remote, "list-ports", bridge).split()


# -- bridges ------------------------------------------------------------------------

def test_ensure_bridge_creates_netdev_bridge(ovs: PrivateOvs, client: OvsdbClient) -> None:
    name = unique("brt")
    try:
        client.ensure_bridge(name, external_ids={"ecnet/role": "int"}, fail_mode="secure")
        client.ensure_bridge(name, external_ids={"ecnet/role": "int"}, fail_mode="secure")
        br = vsctl_rows(ovs.remote, "list", "Bridge", name)[0]
        assert br["datapath_type"] == "netdev"
        assert br["fail_mode"] == "secure"
        assert br["external_ids"] == {"ecnet/role": "int"}
        assert vsctl(ovs.remote, "list-br").split().count(name) == 1
        # Its internal port exists and ovs-vswitchd built it (LOCAL port).
        assert iface(ovs, name)["ofport"] == 65534
        assert client.bridge_exists(name)
        assert client.datapath_type(name) == "netdev"
        assert client.list_ports(name) == []

        # Changing one key keeps the others (ensure, not replace).
        client.ensure_bridge(name, external_ids={"ecnet/gen": "2"})
        br = vsctl_rows(ovs.remote, "list", "Bridge", name)[0]
        assert br["external_ids"] == {"ecnet/role": "int", "ecnet/gen": "2"}
    finally:
        assert client.delete_bridge(name) is True
    assert name not in vsctl(ovs.remote, "list-br").split()
    assert client.delete_bridge(name) is False
    assert not client.bridge_exists(name)
    with pytest.raises(OvsNotFound):
        client.datapath_type(name)


def test_ensure_bridge_on_an_empty_database() -> None:
    """No `ovs-vsctl init` and no vswitchd: the root row is created with the bridge
    (else OVSDB garbage-collects the unreferenced Bridge)."""
    d = tempfile.mkdtemp(prefix="ecnet-ovsdb-", dir="/tmp")
    db, sock = f"{d}/conf.db", f"{d}/db.sock"
    subprocess.run(["ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema"],
                   check=True)
    proc = subprocess.Popen(["ovsdb-server", db, f"--remote=punix:{sock}",
                             f"--unixctl={d}/ovsdb.ctl", "-vconsole:off"])
    try:
        for _ in range(200):
            if socket_ready(sock):
                break
            time.sleep(0.01)
        with OvsdbClient(f"unix:{sock}") as c:
            c.ensure_bridge("br-empty", wait_vswitchd=None)
            assert c.bridge_exists("br-empty")
        assert vsctl(f"unix:{sock}", "list-br").split() == ["br-empty"]
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(d, ignore_errors=True)


def socket_ready(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


# -- ports --------------------------------------------------------------------------

def test_add_port_with_external_ids(ovs: PrivateOvs, client: OvsdbClient, bridge: str,
                                    veth: Veth) -> None:
    name = veth()
    ids = {"iface-id": "0f4c7d1e-2b4a-4f1e-9a55-1c6f0d9e7a10", "attached-mac": "02:00:00:00:00:01",
           "ecnet/pod": "ns/pod-a", "ecnet/container": "c0ffee"}
    ofport = client.add_port(bridge, name, ids)
    assert ofport > 0
    row = iface(ovs, name)
    assert row["ofport"] == ofport
    assert row["external_ids"] == ids
    assert row["error"] == []
    assert port_rows(ovs, name)[0]["external_ids"] == ids
    assert list_ports(ovs, bridge) == [name]
    info = client.get_interface(name)
    assert info is not None and info.ofport == ofport and info.external_ids == ids
    assert info.mac_in_use == row["mac_in_use"]
    assert client.list_ports(bridge) == [name]

    # One transaction: the database log holds a single record with our comment that
    # inserts the Interface together with its external_ids and the Port.
    log = subprocess.run(["ovsdb-tool", "-mm", "show-log", f"{ovs.rundir}/conf.db"],
                         capture_output=True, text=True, check=True).stdout
    records = [r for r in log.split("\nrecord ")
               if f'"ecnet: add_port bridge={bridge} name={name}"' in r.splitlines()[0]]
    assert len(records) == 1
    rec = records[0]
    assert f'table Interface insert row "{name}"' in rec
    assert f'table Port insert row "{name}"' in rec
    assert "iface-id=" in rec and f'table Bridge row "{bridge}"' in rec


def test_add_port_twice_updates_and_does_not_duplicate(ovs: PrivateOvs, client: OvsdbClient,
                                                       bridge: str, veth: Veth) -> None:
    name = veth()
    first = client.add_port(bridge, name, {"iface-id": "a", "ecnet/container": "old"})
    second = client.add_port(bridge, name, {"iface-id": "b"})
    assert first == second > 0
    assert list_ports(ovs, bridge) == [name]
    assert len(port_rows(ovs, name)) == 1
    # Replaced, not merged: a retried ADD must not keep the old container's ids.
    assert iface(ovs, name)["external_ids"] == {"iface-id": "b"}
    assert port_rows(ovs, name)[0]["external_ids"] == {"iface-id": "b"}


def test_add_port_existing_on_other_bridge_is_refused(ovs: PrivateOvs, client: OvsdbClient,
                                                      bridge: str, veth: Veth) -> None:
    other = unique("brt")
    client.ensure_bridge(other)
    try:
        name = veth()
        client.add_port(bridge, name, {"iface-id": "x"})
        with pytest.raises(OvsTransactionError, match="exists on bridge"):
            client.add_port(other, name, {"iface-id": "y"})
        assert list_ports(ovs, other) == []
        assert iface(ovs, name)["external_ids"] == {"iface-id": "x"}
        # delete_port on the wrong bridge does not touch it.
        assert client.delete_port(other, name) is False
        assert list_ports(ovs, bridge) == [name]
    finally:
        client.delete_bridge(other)


def test_delete_port(ovs: PrivateOvs, client: OvsdbClient, bridge: str, veth: Veth) -> None:
    name = veth()
    client.add_port(bridge, name, {"iface-id": "del-me"})
    assert client.delete_port(bridge, name) is True
    assert list_ports(ovs, bridge) == []
    assert port_rows(ovs, name) == []
    assert vsctl_rows(ovs.remote, "find", "Interface", f"name={name}") == []
    assert client.get_interface(name) is None
    assert client.delete_port(bridge, name) is False
    assert client.delete_port(unique("nobr"), name) is False


def test_find_interfaces(ovs: PrivateOvs, client: OvsdbClient, bridge: str, veth: Veth) -> None:
    pod = unique("ns/pod-")
    a, b = veth(), veth()
    client.add_port(bridge, a, {"iface-id": f"{pod}-a", "ecnet/pod": pod})
    client.add_port(bridge, b, {"iface-id": f"{pod}-b", "ecnet/pod": pod})
    found = client.find_interfaces(**{"iface-id": f"{pod}-a"})
    assert [i.name for i in found] == [a]
    expected = vsctl_rows(ovs.remote, "find", "Interface", f"external_ids:iface-id={pod}-a")
    assert [r["name"] for r in expected] == [a]
    assert found[0].ofport == expected[0]["ofport"]
    assert sorted(i.name for i in client.find_interfaces(**{"ecnet/pod": pod})) == sorted([a, b])
    assert client.find_interfaces(**{"ecnet/pod": pod, "iface-id": f"{pod}-b"})[0].name == b
    assert client.find_interfaces(**{"iface-id": "nobody"}) == []


def test_port_on_missing_bridge_changes_nothing(ovs: PrivateOvs, client: OvsdbClient,
                                                veth: Veth) -> None:
    name = veth()
    missing = unique("nobr")
    before = vsctl(ovs.remote, "show")
    with pytest.raises(OvsTransactionError, match=f"bridge {missing} does not exist"):
        client.add_port(missing, name, {"iface-id": "x"})
    assert port_rows(ovs, name) == []
    assert vsctl_rows(ovs.remote, "find", "Interface", f"name={name}") == []
    assert vsctl(ovs.remote, "show") == before


def test_unopenable_interface_reports_error_and_leaves_nothing(
        ovs: PrivateOvs, client: OvsdbClient, bridge: str) -> None:
    name = unique("nodev")  # no such netdev in the OVS namespace
    t0 = time.monotonic()
    with pytest.raises(OvsTransactionError) as err:
        client.add_port(bridge, name, {"iface-id": "ghost"}, wait_ofport=5.0)
    elapsed = time.monotonic() - t0
    assert "could not open network device" in str(err.value)
    assert "No such device" in str(err.value)
    assert elapsed < 2.0, "a vswitchd error must be reported at once, not by timeout"
    assert port_rows(ovs, name) == []
    assert vsctl_rows(ovs.remote, "find", "Interface", f"name={name}") == []
    assert list_ports(ovs, bridge) == []
    assert client.get_interface(name) is None


def test_add_port_without_waiting(ovs: PrivateOvs, client: OvsdbClient, bridge: str,
                                  veth: Veth) -> None:
    name = veth()
    assert client.add_port(bridge, name, {"iface-id": "nowait"}, wait_ofport=None) == -1
    info = client.get_interface(name)  # read-your-writes, even without waiting
    assert info is not None and info.external_ids == {"iface-id": "nowait"}
    assert iface(ovs, name)["external_ids"] == {"iface-id": "nowait"}


def test_concurrent_add_port(ovs: PrivateOvs, client: OvsdbClient, bridge: str,
                             veth: Veth) -> None:
    names = [veth() for _ in range(20)]
    results: dict[str, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(names))

    def add(name: str) -> None:
        try:
            start.wait()
            results[name] = client.add_port(bridge, name, {"iface-id": f"id-{name}"})
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(list_ports(ovs, bridge)) == sorted(names)
    assert len(set(results.values())) == 20 and min(results.values()) > 0
    for name in names:
        row = iface(ovs, name)
        assert row["ofport"] == results[name]
        assert row["external_ids"] == {"iface-id": f"id-{name}"}


def test_same_port_from_many_threads_and_clients(ovs: PrivateOvs, client: OvsdbClient,
                                                 bridge: str, veth: Veth) -> None:
    """Everyone plans "insert" from the same cache; one insert wins, the others' wait
    precondition fails and they retry as may-exist updates. No error, no duplicate."""
    name = veth()
    other = OvsdbClient(ovs.remote)
    results: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(10)

    def add(i: int) -> None:
        c = client if i % 2 else other
        try:
            start.wait()
            results.append(c.add_port(bridge, name, {"iface-id": f"id-{i}"}))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=add, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        other.close()
    assert errors == []
    assert len(results) == 10 and len(set(results)) == 1 and results[0] > 0
    assert list_ports(ovs, bridge) == [name]
    assert len(port_rows(ovs, name)) == 1
    assert iface(ovs, name)["external_ids"]["iface-id"].startswith("id-")  # type: ignore[index]


def test_closed_client_fails_at_once(ovs: PrivateOvs) -> None:
    c = OvsdbClient(ovs.remote)
    c.close()
    t0 = time.monotonic()
    with pytest.raises(OvsConnectionError):
        c.bridge_exists("br-int")
    assert time.monotonic() - t0 < 0.5


# -- tunnels and patch ports --------------------------------------------------------

@pytest.mark.parametrize("kind", ["vxlan", "geneve"])
def test_add_tunnel(ovs: PrivateOvs, client: OvsdbClient, bridge: str, kind: str) -> None:
    name = unique("tun")
    # An address inside no network at all; no packet enters this bridge.
    ofport = client.add_tunnel(bridge, name, kind, "172.31.254.2",
                               extra_options={"dst_port": "4790"},
                               external_ids={"ecnet/node": "n2"})
    assert ofport > 0
    row = iface(ovs, name)
    assert row["type"] == kind
    assert row["options"] == {"remote_ip": "172.31.254.2", "key": "flow", "dst_port": "4790"}
    assert row["external_ids"] == {"ecnet/node": "n2"}
    assert row["ofport"] == ofport
    with pytest.raises(ValueError):
        client.add_tunnel(bridge, unique("tun"), "gre", "172.31.254.2")


def test_add_patch_pair(ovs: PrivateOvs, client: OvsdbClient, bridge: str) -> None:
    tun = unique("brt")
    client.ensure_bridge(tun)
    try:
        a, b = unique("pi"), unique("pt")
        ofa, ofb = client.add_patch_pair(bridge, a, tun, b)
        assert ofa > 0 and ofb > 0
        ra, rb = iface(ovs, a), iface(ovs, b)
        assert (ra["type"], ra["options"]) == ("patch", {"peer": b})
        assert (rb["type"], rb["options"]) == ("patch", {"peer": a})
        assert (ra["ofport"], rb["ofport"]) == (ofa, ofb)
        assert list_ports(ovs, bridge) == [a] and list_ports(ovs, tun) == [b]
        # Idempotent.
        assert client.add_patch_pair(bridge, a, tun, b) == (ofa, ofb)
        assert list_ports(ovs, bridge) == [a] and list_ports(ovs, tun) == [b]
    finally:
        client.delete_bridge(tun)


# -- connection ---------------------------------------------------------------------

def test_missing_socket_fails_fast() -> None:
    t0 = time.monotonic()
    with pytest.raises(OvsConnectionError):
        OvsdbClient(f"unix:/tmp/{unique('ecnet-nosock-')}/db.sock")
    # A closed TCP port on loopback: refused, not a hang.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(OvsConnectionError):
        OvsdbClient(f"tcp:127.0.0.1:{port}")
    assert time.monotonic() - t0 < 1.0


def test_reconnects_after_ovsdb_server_restart(private_ovs: PrivateOvs,  # noqa: F811
                                               ) -> None:
    ovs = private_ovs
    with OvsdbClient(ovs.remote, timeout=0.5) as client:
        br = unique("brt")
        client.ensure_bridge(br)
        client.add_port(br, "before", {"iface-id": "b"}, iface_type="internal")

        ovs.kill_ovsdb_server()
        # No stale answers once the client knows it cannot know (the reader thread
        # notices the EOF a moment after the kill).
        deadline = time.monotonic() + 5
        with pytest.raises(OvsConnectionError):
            while time.monotonic() < deadline:
                client.bridge_exists(br)
        ovs.start_ovsdb_server()

        client.timeout = 10.0  # ovs-vswitchd's own reconnect backoff is up to 8 s
        assert client.bridge_exists(br)
        ofport = client.add_port(br, "after", {"iface-id": "a"}, iface_type="internal",
                                 wait_ofport=15.0)
        assert ofport > 0
        assert sorted(list_ports(ovs, br)) == ["after", "before"]
        assert iface(ovs, "after")["external_ids"] == {"iface-id": "a"}
        assert client.delete_port(br, "before")
        assert list_ports(ovs, br) == ["after"]


# -- flows ----------------------------------------------------------------------------

def test_openflow_add_dump_delete_by_cookie(ovs: PrivateOvs, bridge: str) -> None:
    of = OpenFlowBridge(bridge, ovs.rundir)
    of.add_flows(["cookie=0x10,priority=10,in_port=LOCAL,actions=drop",
                  "cookie=0x11,priority=11,actions=NORMAL"])
    flows = subprocess.run(["ovs-ofctl", "--no-stats", "dump-flows", of.target],
                           capture_output=True, text=True, check=True).stdout
    assert "cookie=0x10" in flows and "cookie=0x11" in flows
    assert len(of.dump_flows("cookie=0x10/-1")) == 1
    of.del_flows(cookie=0x10)
    flows = subprocess.run(["ovs-ofctl", "--no-stats", "dump-flows", of.target],
                           capture_output=True, text=True, check=True).stdout
    assert "cookie=0x10" not in flows and "cookie=0x11" in flows
    with pytest.raises(OvsFlowError, match="bogus"):
        of.add_flows(["cookie=0x12,priority=5,actions=drop", "priority=1,actions=bogus"])
    assert of.dump_flows("cookie=0x12/-1") == []  # the bundle was all-or-nothing


# -- measurement ----------------------------------------------------------------------

def test_measure_add_port_latency(ovs: PrivateOvs, client: OvsdbClient, bridge: str,
                                  veth: Veth) -> None:
    """50 ports added and deleted, timed; each call is checked against OVSDB (outside the
    timed call): "done" means vswitchd applied it, so the ofport add_port returns is already
    in the Interface row, and the Port row is gone when delete_port returns."""
    names = [veth() for _ in range(50)]
    times = []
    for name in names:
        t0 = time.perf_counter()
        ofport = client.add_port(bridge, name, {"iface-id": f"id-{name}",
                                                "attached-mac": "02:00:00:00:00:02"})
        times.append((time.perf_counter() - t0) * 1000)
        assert ofport > 0
        assert iface(ovs, name)["ofport"] == ofport
    print(f"\nadd_port until ofport (userspace OVS, veth, n=50): median "
          f"{statistics.median(times):.2f} ms, p90 {sorted(times)[44]:.2f} ms, "
          f"max {max(times):.2f} ms")
    t = []
    for name in names:
        t0 = time.perf_counter()
        client.delete_port(bridge, name)
        t.append((time.perf_counter() - t0) * 1000)
        assert port_rows(ovs, name) == []
    print(f"delete_port median {statistics.median(t):.2f} ms")
