"""End to end on one node: the real `ecnet` binary exec'd as a runtime does, a real agent
and controller (separate processes), a private userspace OVS, pods as network namespaces."""
from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.lab.cluster import Lab, LabNode, Pod, ping, tcp_transfer
from tests.lab.helpers import wait_until

pytestmark = [pytest.mark.root, pytest.mark.ovs]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("lab")) as lab:
        lab.start_controller()
        lab.ipctl("pool", "create", "lab", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "lab", "10.60.0.0/24")
        lab.ipctl("pool", "create", "tiny", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "tiny", "10.61.0.0/30")
        lab.ipctl("pool", "create", "vm", "--policy", "fixed")
        lab.ipctl("subnet", "create", "vm", "10.63.0.0/24")
        lab.add_node("n1", "--gc-grace-seconds", "0", "--controller-timeout", "3")
        yield lab


@pytest.fixture
def node(lab: Lab) -> LabNode:
    return lab.nodes[0]


def gone_now(node: LabNode, pod: Pod, host: str) -> bool:
    """The CNI spec's DEL promise: once DEL returns, the interface is gone, both ends."""
    in_pod = os.path.exists(pod.netns_path) and pod.exec(
        "ip", "link", "show", pod.ifname, check=False).returncode == 0
    return not node.link_exists(host) and not in_pod


def ports_json(lab: Lab) -> list[dict]:
    return json.loads(lab.ipctl("port", "list", "-o", "json").stdout)  # type: ignore[no-any-return]


def test_two_pods_reach_each_other_by_ping_and_tcp(lab: Lab, node: LabNode) -> None:
    a, b = node.add_pod("a"), node.add_pod("b")
    for pod in (a, b):
        res = pod.result
        assert res is not None
        host_if, cont_if = res["interfaces"]
        assert host_if["name"].startswith("tap") and len(host_if["name"]) <= 15
        assert cont_if == {"name": "eth0", "mac": cont_if["mac"], "sandbox": pod.netns_path}
        assert res["ips"][0]["interface"] == 1 and res["ips"][0]["gateway"] == "10.60.0.1"
        # the interface really has that address and MAC
        link = json.loads(pod.exec("ip", "-j", "addr", "show", "eth0").stdout)[0]
        assert link["address"] == cont_if["mac"]
        assert res["ips"][0]["address"] in {f"{i['local']}/{i['prefixlen']}"
                                            for i in link["addr_info"]}
        route = pod.exec("ip", "route", "show", "default").stdout.decode()
        assert "via 10.60.0.1" in route
        # host end on br-int with the external_ids that trace it back
        ids = node.vsctl("get", "Interface", host_if["name"], "external_ids")
        assert "ecnet/container" in ids and pod.container_id in ids
        assert "iface-id=" in ids and "attached-mac=" in ids and "ecnet/pod" in ids
    assert ping(a, b.ip) and ping(b, a.ip)
    assert tcp_transfer(a, b, 4_000_000) == 4_000_000
    assert tcp_transfer(b, a, 4_000_000, port=5202) == 4_000_000


def test_add_retry_returns_same_port(lab: Lab, node: LabNode) -> None:
    pod = node.add_pod("retry")
    again = node.cni("ADD", pod)
    assert again.ok and again.out["ips"] == pod.result["ips"]  # type: ignore[index]
    assert again.out["interfaces"] == pod.result["interfaces"]  # type: ignore[index]


def test_check_passes_then_fails_when_address_or_port_gone(lab: Lab, node: LabNode) -> None:
    pod = node.add_pod("chk")
    conf = node.netconf(pool="lab", prevResult=pod.result)
    assert node.cni("CHECK", pod, conf).ok
    pod.exec("ip", "addr", "flush", "dev", "eth0")
    res = node.cni("CHECK", pod, conf)
    assert res.code == 1 and res.out["code"] >= 100 and "address" in res.out["msg"]
    pod2 = node.add_pod("chk2")
    node.vsctl("del-port", "br-int", pod2.result["interfaces"][0]["name"])  # type: ignore[index]
    res = node.cni("CHECK", pod2, node.netconf(pool="lab", prevResult=pod2.result))
    assert res.code == 1 and "OVS port" in res.out["msg"]


def test_check_finds_a_changed_mtu_or_a_lost_route(lab: Lab, node: LabNode) -> None:
    pod = node.add_pod("chk-mtu")
    conf = node.netconf(pool="lab", prevResult=pod.result)
    assert node.cni("CHECK", pod, conf).ok
    mtu = json.loads(pod.exec("ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"]
    pod.exec("ip", "link", "set", "eth0", "mtu", "1300")
    res = node.cni("CHECK", pod, conf)
    assert (res.code, res.out["code"]) == (1, 130) and "MTU is 1300" in res.out["msg"]
    pod.exec("ip", "link", "set", "eth0", "mtu", str(mtu))
    pod.exec("ip", "route", "del", "default")
    res = node.cni("CHECK", pod, conf)
    assert (res.code, res.out["code"]) == (1, 130) and "default route" in res.out["msg"]
    assert node.cni("DEL", pod).ok


def test_runtime_config_ips_capability_asks_for_an_address(lab: Lab, node: LabNode) -> None:
    pod = node.new_pod("want-ip")
    conf = node.netconf(pool="lab", capabilities={"ips": True},
                        runtimeConfig={"ips": ["10.60.0.77/24"]})
    res = node.cni("ADD", pod, conf)
    assert res.ok, res.raw
    assert res.out["ips"][0]["address"] == "10.60.0.77/24"
    assert node.cni("DEL", pod, conf).ok
    bad = node.cni("ADD", node.new_pod("bad-ip"), node.netconf(
        pool="lab", runtimeConfig={"ips": ["not-an-ip"]}))
    assert (bad.code, bad.out["code"]) == (1, 7)


def test_status_answers_0_and_50_without_the_controller(lab: Lab, node: LabNode) -> None:
    pod = node.new_pod("status")
    assert node.cni("STATUS", pod).ok
    lab.stop_controller()
    try:
        res = node.cni("STATUS", pod)
        assert (res.code, res.out["code"]) == (1, 50) and "controller" in res.out["msg"]
    finally:
        lab.start_controller()
    wait_until(lambda: node.cni("STATUS", pod).ok, 10)
    assert node.cni("STATUS", pod).ok


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_results_come_in_the_version_asked(lab: Lab, node: LabNode, version: str) -> None:
    pod = node.new_pod(f"v{version.replace('.', '')}")
    conf = {**node.netconf(pool="lab"), "cniVersion": version}
    res = node.cni("ADD", pod, conf)
    assert res.ok, res.raw
    assert res.out["cniVersion"] == version
    legacy = version.startswith("0.")
    assert all(("version" in ip) == legacy for ip in res.out["ips"])
    assert node.cni("DEL", pod, conf).ok


def test_gc_frees_what_the_runtime_no_longer_lists(lab: Lab, node: LabNode) -> None:
    keep, lost = node.add_pod("gc-keep"), node.add_pod("gc-lost")
    lost_host = lost.result["interfaces"][0]["name"]  # type: ignore[index]
    # the runtime still has every attachment but `lost` (whose DEL never came)
    live = [{"containerID": p["container_id"], "ifname": p["ifname"]}
            for p in ports_json(lab) if p["container_id"] != lost.container_id]
    gc = node.cni("GC", keep, node.netconf(**{"cni.dev/valid-attachments": live}))
    assert gc.ok, gc.raw
    assert lost.container_id not in {p["container_id"] for p in ports_json(lab)}
    assert lost_host not in node.vsctl("list-ports", "br-int").split()
    assert gone_now(node, lost, lost_host)
    assert keep.container_id in {p["container_id"] for p in ports_json(lab)}
    assert keep.exec("ip", "link", "show", "eth0").returncode == 0
    assert node.cni("DEL", keep).ok


def test_del_cleans_everything_and_is_idempotent(lab: Lab, node: LabNode) -> None:
    pod = node.add_pod("del")
    host = pod.result["interfaces"][0]["name"]  # type: ignore[index]
    assert node.link_exists(host)
    assert node.cni("DEL", pod).ok
    assert gone_now(node, pod, host)
    assert host not in node.vsctl("list-ports", "br-int").split()
    assert pod.container_id not in {p["container_id"] for p in ports_json(lab)}
    assert node.cni("DEL", pod).ok                     # again: nothing left, still success
    ghost = node.new_pod("never-added")
    assert node.cni("DEL", ghost).ok                   # never added: success


def test_del_after_netns_is_gone_still_frees(lab: Lab, node: LabNode) -> None:
    pod = node.add_pod("gone")
    host = pod.result["interfaces"][0]["name"]  # type: ignore[index]
    lab.del_netns(pod.netns)                           # the runtime lost the sandbox
    assert node.cni("DEL", pod).ok
    assert gone_now(node, pod, host)
    assert host not in node.vsctl("list-ports", "br-int").split()
    assert pod.container_id not in {p["container_id"] for p in ports_json(lab)}
    assert node.cni("DEL", pod, netns="").ok           # DEL with no CNI_NETNS at all


@pytest.mark.parametrize("stdin,env,code", [
    ("{broken", {}, 6),
    (json.dumps({"cniVersion": "7.0.0", "name": "x", "type": "ecnet"}), {}, 1),
    (None, {"CNI_CONTAINERID": ""}, 4),
    (None, {"CNI_IFNAME": "x" * 20}, 4),
    (json.dumps({"cniVersion": "1.0.0", "name": "x", "type": "nope"}), {}, 7),
])
def test_bad_requests_get_cni_errors(lab: Lab, node: LabNode, stdin: str | None,
                                     env: dict[str, str], code: int) -> None:
    import os
    import subprocess
    pod = node.new_pod("bad")
    e = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": pod.container_id,
         "CNI_NETNS": pod.netns_path, "CNI_IFNAME": "eth0", **env}
    conf = stdin if stdin is not None else json.dumps(node.netconf(pool="lab"))
    if stdin is not None and "agentSocket" not in stdin:
        doc = None
        try:
            doc = json.loads(stdin)
        except ValueError:
            pass
        if isinstance(doc, dict):
            conf = json.dumps({**doc, "agentSocket": node.socket})
        else:
            e["ECNET_AGENT_SOCKET"] = node.socket
    p = subprocess.run([node.binary], input=conf.encode(), env=e, capture_output=True,
                       timeout=30)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["code"] == code and out["msg"]
    assert "Traceback" not in p.stdout.decode() + p.stderr.decode()
    assert pod.container_id not in {x["container_id"] for x in ports_json(lab)}


def test_pool_exhausted_is_code_100_and_leaks_nothing(lab: Lab, node: LabNode) -> None:
    conf = node.netconf(pool="tiny")
    first = node.new_pod("t1")
    assert node.cni("ADD", first, conf).ok
    second = node.new_pod("t2")
    res = node.cni("ADD", second, conf)
    assert res.code == 1 and res.out["code"] == 100
    assert node.cni("DEL", first, conf).ok
    assert node.cni("ADD", second, conf).ok           # the freed address is usable again


def test_failed_add_rolls_back(lab: Lab, node: LabNode) -> None:
    pod = node.new_pod("rollback")
    res = node.cni("ADD", pod, netns="/var/run/netns/does-not-exist")
    assert res.code == 1 and res.out["code"] == 111
    assert pod.container_id not in {p["container_id"] for p in ports_json(lab)}
    tap_ports = [p for p in node.vsctl("list-ports", "br-int").split()]
    assert all(pod.container_id not in node.vsctl("get", "Interface", t, "external_ids")
               for t in tap_ports)


def test_unknown_pool_is_an_error_object(lab: Lab, node: LabNode) -> None:
    res = node.cni("ADD", node.new_pod("nopool"), node.netconf(pool="missing"))
    assert res.code == 1 and res.out["code"] == 102 and "missing" in res.out["msg"]


def test_twenty_concurrent_adds_get_distinct_addresses(lab: Lab, node: LabNode) -> None:
    pods = [node.new_pod(f"c{i}") for i in range(20)]
    with ThreadPoolExecutor(20) as ex:
        results = list(ex.map(lambda p: node.cni("ADD", p), pods))
    assert all(r.ok for r in results), [r.raw for r in results if not r.ok]
    addrs = [r.out["ips"][0]["address"] for r in results]
    assert len(set(addrs)) == 20
    hosts = [r.out["interfaces"][0]["name"] for r in results]

    def delete(i: int) -> bool:
        # each DEL, when it returns, has taken its own interface with it
        return node.cni("DEL", pods[i]).ok and gone_now(node, pods[i], hosts[i])

    with ThreadPoolExecutor(20) as ex:
        assert all(ex.map(delete, range(20)))


def test_agent_down_is_code_11(lab: Lab, node: LabNode, tmp_path: Path) -> None:
    conf = node.netconf(pool="lab", agentSocket=str(tmp_path / "nobody.sock"))
    res = node.cni("ADD", node.new_pod("noagent"), conf)
    assert res.code == 1 and res.out["code"] == 11


def test_controller_down_is_code_11_and_recovers(lab: Lab, node: LabNode) -> None:
    lab.stop_controller()
    try:
        pod = node.new_pod("noctl")
        res = node.cni("ADD", pod)
        assert res.code == 1 and res.out["code"] == 11, res.raw
        assert not any(pod.container_id in node.vsctl("get", "Interface", t, "external_ids")
                       for t in node.vsctl("list-ports", "br-int").split())
    finally:
        lab.start_controller()
    # The runtime retries a code 11; the controller is back, so a retry succeeds (the
    # first may still meet the agent's channel in its reconnect backoff: then 11 again).
    tries: list[int] = []

    def add() -> bool:
        r = node.cni("ADD", pod)
        tries.append(r.code if r.ok else r.out.get("code", -1))
        return r.ok
    assert wait_until(add, 30), tries
    assert set(tries[:-1]) <= {11}, tries


def test_add_del_add_into_the_same_netns(lab: Lab, node: LabNode) -> None:
    """A runtime reconnecting a container (podman network disconnect/connect) DELs and ADDs
    again into the same netns with the same ifname, at once."""
    pod = node.add_pod("reconnect")
    for _ in range(3):
        assert node.cni("DEL", pod).ok
        pod.container_id = uuid.uuid4().hex       # a new attachment, same netns and eth0
        res = node.cni("ADD", pod)
        assert res.ok, res.raw
        assert pod.exec("ip", "link", "show", "eth0").returncode == 0
    assert node.cni("DEL", pod).ok


def test_a_hung_controller_is_code_11_within_the_deadline(lab: Lab, node: LabNode) -> None:
    """A controller that accepts but never answers (stopped, not dead) must not hang the
    runtime: the agent's deadline turns it into "try again later"."""
    assert lab.controller is not None
    pod = node.new_pod("hung")
    lab.controller.send_signal(signal.SIGSTOP)
    try:
        res = node.cni("ADD", pod)  # the exec itself would time out (60 s) on a hang
    finally:
        lab.controller.send_signal(signal.SIGCONT)
    assert (res.code, res.out["code"]) == (1, 11), res.raw
    assert not node.pod_ports() or all(
        pod.container_id not in node.vsctl("get", "Interface", t, "external_ids")
        for t in node.pod_ports())
    retry = node.cni("ADD", pod)
    assert retry.ok, retry.raw
    assert node.cni("DEL", pod).ok


def test_readd_right_after_del(lab: Lab, node: LabNode) -> None:
    """An ADD of the same container right after its DEL gets a fresh pair."""
    pod = node.add_pod("again")
    assert node.cni("DEL", pod).ok
    res = node.cni("ADD", pod)
    assert res.ok, res.raw
    assert node.link_exists(res.out["interfaces"][0]["name"])
    assert node.cni("DEL", pod).ok


def test_fixed_pod_recreated_keeps_ip_and_name(lab: Lab, node: LabNode) -> None:
    """A fixed pod's port (and so its host end name) survives DEL; the new sandbox reuses
    both at once, even while the old pair is still being torn down."""
    conf = node.netconf(pool="vm")
    first = node.new_pod("vm-1")
    res1 = node.cni("ADD", first, conf)
    assert res1.ok, res1.raw
    assert node.cni("DEL", first, conf).ok
    second = node.new_pod("vm-1")          # same pod name: same owner, new sandbox and uid
    res2 = node.cni("ADD", second, conf)
    assert res2.ok, res2.raw
    assert res2.out["ips"] == res1.out["ips"]
    assert res2.out["interfaces"][0]["name"] == res1.out["interfaces"][0]["name"]
    link = json.loads(second.exec("ip", "-j", "addr", "show", "eth0").stdout)[0]
    assert res2.out["ips"][0]["address"].split("/")[0] in {i["local"] for i in link["addr_info"]}
    assert node.cni("DEL", second, conf).ok


def test_agent_restart_sweeps_orphans_and_keeps_pods(lab: Lab, node: LabNode) -> None:
    """A crash mid-ADD can leave a veth no DEL will find; the next agent start removes it,
    and leaves live pods (their ports are in OVSDB) alone."""
    live = node.add_pod("survivor")
    live_host = live.result["interfaces"][0]["name"]  # type: ignore[index]
    node.ip("link", "add", "tap0badc0de-00", "type", "veth", "peer", "name", "orphanp0")
    node.ip("link", "add", "ectmp0123456789", "type", "veth", "peer", "name", "orphanp1")
    node.ip("link", "add", "tapnotours", "type", "veth", "peer", "name", "orphanp2")
    node.stop_agent()
    node.start_agent("--log-level", "debug")
    assert not node.link_exists("tap0badc0de-00") and not node.link_exists("ectmp0123456789")
    assert node.link_exists("tapnotours")          # not a name we create: not ours to delete
    node.ip("link", "del", "tapnotours")
    assert node.link_exists(live_host)
    other = node.add_pod("after-restart")
    assert ping(other, live.ip)


def annotated(node: LabNode, **annotations: str) -> dict:
    """A network config as containerd sends it with the pod-annotations capability."""
    return node.netconf(capabilities={"io.kubernetes.cri.pod-annotations": True},
                        runtimeConfig={"io.kubernetes.cri.pod-annotations": {
                            f"ecnet.io/{k.replace('_', '-')}": v
                            for k, v in annotations.items()}})


def first_ip(res: object) -> str:
    return res.out["ips"][0]["address"].split("/")[0]  # type: ignore[attr-defined]


def test_policies_through_the_binary(lab: Lab, node: LabNode) -> None:
    """Each product type, chosen by pod annotations: ADD, DEL, re-ADD as a new sandbox
    (new container id and pod UID) of the same pod."""
    lab.ipctl("pool", "create", "grp", "--policy", "sticky")
    lab.ipctl("subnet", "create", "grp", "10.64.0.0/24")
    lab.ipctl("pool", "create", "web", "--policy", "dynamic")   # default 60 s quarantine
    lab.ipctl("subnet", "create", "web", "10.65.0.0/29")
    lab.ipctl("bind", "vm", "light-vm-7", "--ip", "10.63.0.77")

    def cycle(name: str, conf: dict, ns: str = "shop") -> tuple[str, str, LabNode]:
        a = node.new_pod(name, ns)
        r1 = node.cni("ADD", a, conf)
        assert r1.ok, r1.raw
        assert node.cni("DEL", a, conf).ok
        b = node.new_pod(name, ns)
        assert (b.container_id, b.uid) != (a.container_id, a.uid)
        r2 = node.cni("ADD", b, conf)
        assert r2.ok, r2.raw
        assert node.cni("DEL", b, conf).ok
        return first_ip(r1), first_ip(r2), node

    # sticky: the member (namespace/name) gets its IP back; another member does not share it
    sticky = annotated(node, product_type="sticky", pool="grp")
    ip1, ip2, _ = cycle("db-0", sticky)
    assert ip1 == ip2 and ip1.startswith("10.64.0.")
    other, _, _ = cycle("db-1", sticky)
    assert other != ip1
    # fixed, pinned by the admin before the first pod
    pinned = annotated(node, product_type="fixed", pool="vm", owner="light-vm-7")
    ip1, ip2, _ = cycle("vm-seven", pinned)
    assert ip1 == ip2 == "10.63.0.77"
    # dynamic: the released address rests in quarantine, the new sandbox gets another one
    ip1, ip2, _ = cycle("api-x", annotated(node, product_type="dynamic", pool="web"))
    assert ip1 != ip2 and ip1.startswith("10.65.0.") and ip2.startswith("10.65.0.")
    web = next(p["usage"] for p in json.loads(lab.ipctl("pool", "list", "-o", "json").stdout)
               if p["pool"]["name"] == "web")
    assert web.get("quarantined") == 2 and not web.get("used"), web
    # the annotation's product type must agree with the pool's policy
    bad = node.cni("ADD", node.new_pod("db-2", "shop"),
                   annotated(node, product_type="dynamic", pool="grp"))
    assert not bad.ok and "policy sticky" in bad.out["msg"]


def test_a_second_live_pod_on_a_bound_ip_is_refused(lab: Lab, node: LabNode) -> None:
    conf = annotated(node, product_type="sticky", pool="grp")
    first = node.new_pod("cache-0", "shop")
    assert node.cni("ADD", first, conf).ok
    twin = node.new_pod("cache-0", "shop")          # same member identity, another live pod
    res = node.cni("ADD", twin, conf)
    assert not res.ok and "held by live pod" in res.out["msg"], res.raw
    assert not any(i["ifname"] == "eth0" for i in json.loads(
        twin.exec("ip", "-j", "link").stdout)), "a refused ADD must leave nothing in the netns"
    assert node.cni("DEL", twin, conf).ok            # the runtime's cleanup DEL is harmless
    assert node.cni("CHECK", first, conf).ok          # ... and does not touch the live pod
    assert node.cni("DEL", first, conf).ok
