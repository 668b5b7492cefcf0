"""containerd's CRI plugin as the CNI client: the path kubelet uses.

The tests speak CRI to a private containerd as kubelet does (Status until NetworkReady, then
RunPodSandbox / PodSandboxStatus / StopPodSandbox / RemovePodSandbox). containerd runs in the
lab node's network namespace and execs the ecnet binary the agent installed, followed by the
reference `portmap` plugin, with its own choice of CNI_ARGS and capabilities.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.cluster import PY, Lab, LabNode, ping, sh, tcp_transfer, wait_for
from tests.lab.containerd import PrivateContainerd

pytestmark = [pytest.mark.root, pytest.mark.ovs, pytest.mark.containerd]

REFERENCE = "/usr/lib/cni"
HOST_IP = "10.64.0.254"  # the node's own address on the pod subnet, for hostPort traffic
CHAINED = ("loopback", "tuning", "portmap", "bandwidth")  # reference plugins, in bin_dir


def _require_tools() -> None:
    missing = [t for t in ("containerd", "ctr", "runc", "nsenter", "gcc")
               if shutil.which(t) is None]
    missing += [p for p in CHAINED if not os.path.exists(f"{REFERENCE}/{p}")]
    if missing:
        if os.environ.get("ECNET_REQUIRE_ALL") == "1":
            pytest.fail(f"containerd lab needs {missing}")
        pytest.skip(f"containerd lab needs {missing}")


@dataclass
class Sandbox:
    """A CRI pod sandbox seen as a lab endpoint (its netns is a mount in /var/run/netns)."""

    id: str
    netns: str
    ip: str

    def exec(self, *argv: str, timeout: float = 30, check: bool = True
             ) -> subprocess.CompletedProcess[bytes]:
        return sh("ip", "netns", "exec", self.netns, *argv, timeout=timeout, check=check)


class CriLab:
    def __init__(self, lab: Lab, node: LabNode, containerd: PrivateContainerd) -> None:
        self.lab, self.node, self.cri = lab, node, containerd

    def run(self, name: str, namespace: str = "default", **kw: Any) -> Sandbox:
        sid = self.cri.run_pod(name, namespace, **kw)
        return self.sandbox(sid)

    def sandbox(self, sid: str) -> Sandbox:
        st = self.cri.status(sid).status
        path = self.cri.netns_path(sid)
        assert path.startswith("/var/run/netns/"), path
        return Sandbox(sid, os.path.basename(path), st.network.ip)

    def gone(self, sb: Sandbox) -> None:
        """Stop then Remove, as kubelet does; both DELs must leave nothing behind."""
        self.cri.stop_pod(sb.id)
        self.cri.remove_pod(sb.id)

    def ports(self) -> list[dict[str, Any]]:
        out = self.lab.ipctl("port", "list", "-o", "json").stdout
        return json.loads(out)  # type: ignore[no-any-return]

    def port_of(self, sb: Sandbox) -> dict[str, Any] | None:
        return next((p for p in self.ports() if p.get("container_id") == sb.id), None)


@pytest.fixture(scope="module")
def crilab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CriLab]:
    _require_tools()
    with Lab(tmp_path_factory.mktemp("crilab")) as lab:
        lab.start_controller()
        lab.ipctl("pool", "create", "pods", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "pods", "10.64.0.0/24", "--exclude", HOST_IP)
        lab.ipctl("pool", "create", "vms", "--policy", "fixed")
        lab.ipctl("subnet", "create", "vms", "10.65.0.0/24")
        node = lab.add_node("n1")
        # The node's own foot on the pod network, so hostPort traffic has a way to the pods.
        node.vsctl("add-port", "br-int", "crihost", "--", "set", "Interface", "crihost",
                   "type=internal")
        wait_for(lambda: node.link_exists("crihost"), 10, "crihost")
        node.ip("addr", "add", f"{HOST_IP}/24", "dev", "crihost")
        node.ip("link", "set", "crihost", "up")
        sh("ip", "netns", "exec", node.netns, "ethtool", "-K", "crihost", "tx", "off")
        for plugin in CHAINED:
            link = node.bin_dir / plugin
            if not link.exists():
                link.symlink_to(f"{REFERENCE}/{plugin}")
        conf_dir = lab.dir / "net.d"
        conf_dir.mkdir()
        containerd = PrivateContainerd(lab.dir / "containerd", conf_dir, node.bin_dir,
                                       netns=node.netns)
        try:
            containerd.start()
            # As a DaemonSet's init step would: the conflist appears in place, atomically.
            tmp = conf_dir / ".10-ecnet.conflist.tmp"
            tmp.write_text(json.dumps({
                "cniVersion": "1.0.0", "name": "ecnet",
                "plugins": [
                    {"type": "ecnet", "agentSocket": node.socket, "pool": "pods",
                     "capabilities": {"io.kubernetes.cri.pod-annotations": True}},
                    # chained after ecnet: each gets ecnet's result as prevResult
                    {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_announce": "2"}},
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                    {"type": "bandwidth", "capabilities": {"bandwidth": True}}]}))
            tmp.rename(conf_dir / "10-ecnet.conflist")
            containerd.wait_network_ready()
            yield CriLab(lab, node, containerd)
        finally:
            containerd.stop()


def test_sandboxes_get_ecnet_addresses_and_reach_each_other(crilab: CriLab) -> None:
    a, b = crilab.run("web-a"), crilab.run("web-b")
    for sb in (a, b):
        assert sb.ip.startswith("10.64.0."), sb.ip
        # what containerd reports is what is on the sandbox's eth0
        link = json.loads(sb.exec("ip", "-j", "addr", "show", "eth0").stdout)[0]
        assert sb.ip in {i["local"] for i in link["addr_info"]}
        port = crilab.port_of(sb)
        assert port is not None and port["ips"][0]["address"].split("/")[0] == sb.ip
    assert ping(a, b.ip) and ping(b, a.ip)
    assert tcp_transfer(a, b, 2_000_000) == 2_000_000
    for sb in (a, b):
        crilab.gone(sb)


def test_cri_args_reach_the_controller(crilab: CriLab) -> None:
    """containerd passes K8S_POD_NAMESPACE/NAME/UID in its own order: the port records them."""
    sb = crilab.run("argpod", namespace="team-x", uid="0b1c2d3e-0000-4000-8000-000000000001")
    port = crilab.port_of(sb)
    assert port is not None
    assert port["pod"] == {"namespace": "team-x", "name": "argpod",
                           "uid": "0b1c2d3e-0000-4000-8000-000000000001"}, port
    crilab.gone(sb)


def test_annotations_choose_pool_and_fixed_ip(crilab: CriLab) -> None:
    ann = {"ecnet.io/ip": "10.65.0.50", "ecnet.io/hostname": "vm-1"}
    sb = crilab.run("vm-1", namespace="tenant-a", annotations=ann)
    assert sb.ip == "10.65.0.50"
    crilab.gone(sb)
    # fixed: the same identity gets the same address back after Remove
    again = crilab.run("vm-1", namespace="tenant-a", annotations=ann)
    assert again.ip == "10.65.0.50"
    crilab.gone(again)
    crilab.lab.ipctl("unbind", "vms", "tenant-a/vm-1")


def test_product_type_annotation_chooses_the_fixed_pool(crilab: CriLab) -> None:
    sb = crilab.run("vm-2", namespace="tenant-b",
                    annotations={"ecnet.io/product-type": "light-vm"})
    assert sb.ip.startswith("10.65.0."), sb.ip
    crilab.gone(sb)
    crilab.lab.ipctl("unbind", "vms", "tenant-b/vm-2")


def test_stop_and_remove_free_what_the_policy_frees(crilab: CriLab) -> None:
    sb = crilab.run("short")
    port = crilab.port_of(sb)
    assert port is not None
    host_if = [p for p in crilab.node.pod_ports() if p.startswith("tap")]
    assert host_if
    crilab.cri.stop_pod(sb.id)
    # dynamic, quarantine 0: the address is free once Stop returns; no veth, no OVS port
    assert crilab.port_of(sb) is None
    assert not crilab.node.link_exists("tap" + port["id"][:11])
    assert "tap" + port["id"][:11] not in crilab.node.pod_ports()
    crilab.cri.remove_pod(sb.id)  # the second DEL, with CNI_NETNS="": still fine
    assert crilab.port_of(sb) is None
    assert sb.id not in {s.id for s in crilab.cri.list()}


def test_host_port_reaches_the_pod_through_portmap(crilab: CriLab) -> None:
    sb = crilab.run("hostport", port_mappings=[(8080, 18080)])
    server = subprocess.Popen(
        ["ip", "netns", "exec", sb.netns, PY, "-c",
         "import socket,sys\n"
         "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
         "s.bind(('0.0.0.0',8080));s.listen(1);s.settimeout(20)\n"
         "c,_=s.accept();c.sendall(b'hello from the pod');c.close()\n"])
    try:
        out = sh("ip", "netns", "exec", crilab.node.netns, PY, "-c",
                 "import socket,sys,time\n"
                 "d=time.monotonic()+10\n"
                 "while True:\n"
                 "  try:\n"
                 f"    s=socket.create_connection(('{HOST_IP}',18080),timeout=5);break\n"
                 "  except ConnectionRefusedError:\n"
                 "    if time.monotonic()>d: raise\n"
                 "    time.sleep(0.05)\n"
                 "print(s.recv(100).decode())\n", timeout=30).stdout.decode()
        assert out.strip() == "hello from the pod"
    finally:
        server.kill()
        server.wait()
    crilab.gone(sb)


def test_chained_plugins_get_ecnets_result(crilab: CriLab) -> None:
    """tuning finds the pod's eth0 in its sandbox, bandwidth the host end (the interface
    without a sandbox): both only from ecnet's result, passed on as prevResult."""
    sb = crilab.run("shaped", annotations={"kubernetes.io/ingress-bandwidth": "10M"})
    port = crilab.port_of(sb)
    assert port is not None
    assert sb.exec("cat", "/proc/sys/net/ipv4/conf/eth0/arp_announce").stdout.strip() == b"2"
    tc = sh("ip", "netns", "exec", crilab.node.netns, "tc", "qdisc", "show", "dev",
            "tap" + port["id"][:11]).stdout.decode()
    assert "tbf" in tc, tc
    crilab.gone(sb)
    assert crilab.port_of(sb) is None


def test_restarting_containerd_or_the_agent_loses_nothing(crilab: CriLab) -> None:
    a = crilab.run("survivor-a")
    crilab.cri.restart()
    crilab.cri.wait_network_ready()
    assert crilab.sandbox(a.id).ip == a.ip  # containerd still knows the address
    b = crilab.run("survivor-b")
    crilab.node.stop_agent()
    crilab.node.start_agent()
    assert ping(a, b.ip) and ping(b, a.ip)
    port_a = crilab.port_of(a)
    assert port_a is not None
    crilab.gone(a)
    crilab.gone(b)
    assert crilab.port_of(a) is None and crilab.port_of(b) is None
    assert not crilab.node.link_exists("tap" + port_a["id"][:11])


def test_the_runtime_execs_the_static_binary_when_it_was_built(crilab: CriLab) -> None:
    """The agent installs the C forwarder when packaging/build-shim.sh built it (the test
    command builds it), so this path is the one a node without Python has."""
    from cni.install import find_static

    installed = Path(crilab.node.binary).read_bytes()
    static = find_static()
    if static is None:
        assert installed.startswith(b"#!"), "no static build, so the Python launcher"
    else:
        assert installed == static.read_bytes()


def _probe(crilab: CriLab, check: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "cni.agent.probe", check, "--socket", crilab.node.socket],
                          capture_output=True, text=True, timeout=30, cwd=crilab.lab.repo)


def test_agent_probes_mean_what_they_say(crilab: CriLab) -> None:
    """The DaemonSet's probes: live while a worker answers; ready only with the controller."""
    assert _probe(crilab, "live").returncode == 0
    assert _probe(crilab, "ready").returncode == 0
    crilab.lab.stop_controller()
    try:
        unready = _probe(crilab, "ready")
        assert unready.returncode == 1 and "controller" in unready.stderr.lower()
        assert _probe(crilab, "live").returncode == 0  # not restarted for the controller
    finally:
        crilab.lab.start_controller()
    crilab.node.stop_agent()
    try:
        dead = _probe(crilab, "live")
        assert dead.returncode == 1 and crilab.node.socket in dead.stderr
    finally:
        crilab.node.start_agent()
    assert _probe(crilab, "ready").returncode == 0


def test_nothing_is_left_behind(crilab: CriLab) -> None:
    assert crilab.cri.list() == []
    assert [p for p in crilab.node.pod_ports() if p.startswith("tap")] == []
    assert [p for p in crilab.ports() if p["policy"] == "dynamic"] == []
