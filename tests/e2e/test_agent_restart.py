"""The agent across restarts, on a real node (binary, agent, controller, private userspace
OVS, pods as netns): what a restart finds half-built is removed, what OVSDB lost is
re-plugged, live pods keep their addresses and talk; a simulated node reboot (every pod
netns removed, the agent restarted) converges with nothing left allocated or on br-int; while
ovsdb-server and/or ovs-vswitchd are away an ADD fails fast with 11, leaves nothing behind, and
succeeds when retried after they are back."""
from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.cluster import Lab, LabNode, add_pods, ping
from tests.lab.helpers import wait_until

pytestmark = [pytest.mark.root, pytest.mark.ovs]
AGENT = ("--reconcile-interval", "0.5", "--reconcile-grace-seconds", "1",
         "--ovsdb-timeout", "2", "--gc-grace-seconds", "0")


@pytest.fixture
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("restart")) as lab:
        lab.start_controller()
        lab.ipctl("pool", "create", "lab", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "lab", "10.72.0.0/24")
        lab.ipctl("pool", "create", "vm", "--policy", "fixed")
        lab.ipctl("subnet", "create", "vm", "10.73.0.0/24")
        lab.add_node("n1", *AGENT)
        yield lab


def active(lab: Lab) -> dict[str, dict[str, Any]]:
    out = lab.ipctl("port", "list", "--state", "active", "-o", "json").stdout
    return {p["container_id"]: p for p in json.loads(out)}


def iface_id(node: LabNode, name: str) -> str:
    out = node.vsctl("--if-exists", "get", "Interface", name, "external_ids:iface-id")
    return out.strip().strip('"')


def test_restart_removes_half_built_replugs_lost_ports_and_keeps_live_pods(lab: Lab) -> None:
    node = lab.nodes[0]
    a, lost_port, lost_veth, gone = (node.add_pod(n) for n in ("a", "lostport", "lostveth",
                                                                "gone"))
    before = active(lab)
    node.stop_agent(signal.SIGKILL)
    # while the agent is down: OVSDB loses one pod's port, another pod's host veth is gone
    # (a crash half-way), a third pod's netns goes without a DEL
    node.vsctl("del-port", "br-int", lost_port.host_if)
    node.ip("link", "del", lost_veth.host_if)
    lab.del_netns(gone.netns)
    node.start_agent()
    # at once, before the agent serves: the lost port is back, the half-built one gone
    assert iface_id(node, lost_port.host_if) == before[lost_port.container_id]["id"]
    assert iface_id(node, lost_veth.host_if) == ""
    assert wait_until(lambda: ping(a, lost_port.ip, count=1), timeout=15)
    # the pod without a netns is released once confirmed; nobody else is touched
    assert wait_until(lambda: gone.container_id not in active(lab), timeout=20)
    after = active(lab)
    assert set(after) == {a.container_id, lost_port.container_id, lost_veth.container_id}
    for cid, port in after.items():
        assert (port["id"], port["generation"]) == (before[cid]["id"], before[cid]["generation"])
    assert set(node.pod_ports()) == {a.host_if, lost_port.host_if}
    assert ping(lost_port, a.ip)
    # a new pod still works after all this
    assert ping(node.add_pod("later"), a.ip)
    # the re-plugged port is back in its network, so CNI GC sees it: once the runtime no
    # longer lists it, GC frees it
    network = node.vsctl("get", "Interface", lost_port.host_if, "external_ids:ecnet/network")
    assert network.strip().strip('"') == "ecnet-lab"
    listed = [{"containerID": c, "ifname": "eth0"} for c in active(lab)
              if c != lost_port.container_id]
    assert node.cni("GC", a, node.netconf(**{"cni.dev/valid-attachments": listed})).ok
    assert set(active(lab)) == {c["containerID"] for c in listed}
    assert lost_port.host_if not in node.pod_ports()


def test_node_reboot_converges_nothing_left_allocated_or_on_br_int(lab: Lab) -> None:
    node = lab.nodes[0]
    pods = [node.new_pod(f"r{i}") for i in range(20)]
    add_pods([(node, p, node.netconf(pool="vm" if i < 2 else "lab"))
              for i, p in enumerate(pods)])
    assert len(active(lab)) == 20 and len(node.pod_ports()) == 20
    # the reboot: the agent goes, every pod netns goes (their veths with them), it comes back
    node.stop_agent(signal.SIGKILL)
    for p in pods:
        lab.del_netns(p.netns)
    node.start_agent()
    assert wait_until(lambda: not active(lab), timeout=30), node.agent_log()[-2000:]
    assert wait_until(lambda: not node.pod_ports(), timeout=10)
    idle = json.loads(lab.ipctl("port", "list", "--state", "idle", "-o", "json").stdout)
    assert sorted(p["owner"] for p in idle) == ["default/r0", "default/r1"]  # bindings kept
    pool = json.loads(lab.ipctl("pool", "show", "lab", "-o", "json").stdout)
    assert pool["pool"]["usage"].get("used", 0) == 0


@pytest.mark.parametrize("daemons", [("vswitchd",), ("ovsdb",), ("ovsdb", "vswitchd")])
def test_ovs_restart_loses_no_port_and_pods_regain_connectivity(
        lab: Lab, daemons: tuple[str, ...]) -> None:
    node = lab.nodes[0]
    a, b = node.add_pod("a"), node.add_pod("b")
    ports_before = set(node.pod_ports())
    stop_ovs(node, daemons)
    start_ovs(node, daemons)
    assert wait_until(lambda: ping(a, b.ip, count=1) and ping(b, a.ip, count=1), timeout=30), (
        node.agent_log()[-2000:])
    assert set(node.pod_ports()) == ports_before
    assert {a.container_id, b.container_id} <= set(active(lab))
    # and the node takes new pods again (an ADD during the outage may fail with 11: retry)
    assert wait_until(lambda: node.cni("ADD", (c := node.new_pod("c"))).ok and ping(c, a.ip),
                      timeout=30)


def stop_ovs(node: LabNode, daemons: tuple[str, ...]) -> None:
    for d in daemons:
        (node.ovs.kill_vswitchd if d == "vswitchd" else node.ovs.kill_ovsdb_server)()


def start_ovs(node: LabNode, daemons: tuple[str, ...]) -> None:
    for d in daemons:  # ovsdb-server first: ovs-vswitchd waits for it to detach
        (node.ovs.start_vswitchd if d == "vswitchd" else node.ovs.start_ovsdb_server)()


@pytest.mark.parametrize("daemons", [("ovsdb",), ("vswitchd",), ("ovsdb", "vswitchd")])
def test_add_during_an_ovs_outage_is_11_leaves_nothing_and_succeeds_on_retry(
        lab: Lab, daemons: tuple[str, ...]) -> None:
    node = lab.nodes[0]
    a = node.add_pod("a")
    taps = node.taps()
    stop_ovs(node, daemons)
    pod = node.new_pod("c")
    t0 = time.monotonic()
    res = node.cni("ADD", pod)
    # bounded by --ovsdb-timeout (ovsdb-server) or the ofport wait (ovs-vswitchd)
    print(f"outage={'+'.join(daemons)}: ADD code={res.out.get('code')} "
          f"in {time.monotonic() - t0:.2f}s")
    assert (res.code, res.out.get("code")) == (1, 11), res.raw
    # nothing left: no veth in the pod or on the host, no address held
    assert pod.links() == [] and node.taps() == taps
    assert pod.container_id not in active(lab)
    start_ovs(node, daemons)
    t0 = time.monotonic()
    assert wait_until(lambda: node.cni("ADD", pod).ok, timeout=30), node.agent_log()[-3000:]
    print(f"outage={'+'.join(daemons)}: ADD retried ok {time.monotonic() - t0:.2f}s after "
          "the restart")
    port = active(lab)[pod.container_id]
    res = node.cni("ADD", pod)      # once more: the same port (idempotent)
    assert res.ok and res.out["interfaces"][0]["name"] == "tap" + port["id"][:11]
    pod.result = res.out
    assert wait_until(lambda: ping(pod, a.ip, count=1), timeout=20)
    assert set(active(lab)) == {a.container_id, pod.container_id}
    assert set(node.pod_ports()) == {a.host_if, pod.host_if}
