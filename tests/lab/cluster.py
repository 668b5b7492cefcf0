"""A whole ecnet installation on one machine, for e2e tests, the demo and benchmarks.

Real parts only: a private userspace Open vSwitch per node, the controller and agents as
separate processes (the installed entry points, via this interpreter), pods as network
namespaces, and the real `ecnet` CNI binary exec'd exactly as a runtime does (environment +
config on stdin). Everything started here is stopped by pid, and every namespace deleted.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.lab.helpers import free_port, wait_for
from tests.lab.ovs import PrivateOvs, _datum, vsctl
from tests.lab.tls import Pki, make_pki

PY = sys.executable
NETNS_DIR = "/var/run/netns"
# Multi-host labs: the underlay joining the hosts and the "physical" network behind the
# gateway. Addresses that exist only inside the lab's own namespaces.
UNDERLAY_PREFIX = "172.31.0"    # .N/24 for host N
PHYS_PREFIX = "172.30.0"        # .1 the gateway host, .2 the physical namespace
# A lab whose controller has a namespace of its own (Lab(controller_netns=True)): the
# controller's network, where agents dial it over TCP with mutual TLS.
CONTROL_PREFIX = "172.29.0"     # .254 the controller, .N the Nth node cabled to it


def sh(*argv: str, check: bool = True, timeout: float = 30,
       input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    p = subprocess.run(list(argv), capture_output=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): "
                           f"{p.stderr.decode().strip()}")
    return p


@dataclass
class CniResult:
    code: int
    out: dict[str, Any]
    raw: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass
class Pod:
    name: str
    netns: str          # name under /var/run/netns
    node: LabNode
    container_id: str
    ifname: str = "eth0"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    namespace: str = "default"
    result: dict[str, Any] | None = None

    @property
    def netns_path(self) -> str:
        return f"{NETNS_DIR}/{self.netns}"

    @property
    def ip(self) -> str:
        assert self.result, "pod has no ADD result"
        return str(self.result["ips"][0]["address"]).split("/")[0]

    def exec(self, *argv: str, timeout: float = 30, check: bool = True
             ) -> subprocess.CompletedProcess[bytes]:
        return sh("ip", "netns", "exec", self.netns, *argv, timeout=timeout, check=check)

    @property
    def host_if(self) -> str:
        """The host end ADD named (tap<port id[:11]>)."""
        assert self.result, "pod has no ADD result"
        return str(self.result["interfaces"][0]["name"])

    def links(self) -> list[str]:
        """Interfaces inside the pod's netns other than loopback (none: nothing plugged)."""
        return [n for n in _link_names(self.exec("ip", "-o", "link", "show")) if n != "lo"]


def _link_names(out: subprocess.CompletedProcess[bytes]) -> list[str]:
    return [line.split(":")[1].strip().split("@")[0]
            for line in out.stdout.decode().splitlines()]


class LabNode:
    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.dir = lab.dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ovs = PrivateOvs()
        self.socket = str(self.dir / "agent.sock")
        self.bin_dir = self.dir / "bin"
        self.netns = ""
        self.agent: subprocess.Popen[bytes] | None = None
        self.underlay_ip = ""       # set for multi-host nodes (Lab.add_host)
        self.agent_args: tuple[str, ...] = ()
        self.controller_tcp = False  # dial the controller over TCP + mTLS (Lab.add_tcp_node)
        self.controller = ""         # another controller (a second replica) to dial instead

    @property
    def binary(self) -> str:
        return str(self.bin_dir / "ecnet")

    def start(self, *agent_args: str) -> LabNode:
        self.start_host()
        self.start_agent(*agent_args)
        return self

    def start_host(self) -> LabNode:
        """The host without its agent (the lab plumbs its NICs in between)."""
        # A node is a network namespace with its own OVS and agent, like a real host: the
        # userspace datapath opens ports by name in its own namespace, and several labs
        # (or hosts of one lab) never collide on br-int.
        self.netns = self.lab.make_netns(f"h-{self.name}")
        self.ovs.start(str(self.dir / "ovs"), netns=self.netns)
        return self

    def ip(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """`ip` inside this node's namespace (where the pods' host ends live)."""
        return sh("ip", "-n", self.netns, *argv, check=check)

    def link_exists(self, name: str) -> bool:
        return self.ip("link", "show", name, check=False).returncode == 0

    def taps(self) -> set[str]:
        """Host veth ends of pods (tap*) in this node's namespace, plugged or not."""
        return {n for n in _link_names(self.ip("-o", "link", "show")) if n.startswith("tap")}

    def start_agent(self, *agent_args: str) -> None:
        agent_args = agent_args or self.agent_args
        self.agent_args = agent_args
        log = open(self.dir / "agent.log", "ab")
        controller = [self.controller or self.lab.controller_sock]
        if self.controller_tcp:
            assert self.lab.pki is not None, "an agent over TCP needs the lab's TLS"
            self.lab.pki = make_pki(self.lab.pki.dir, self.name,   # node-<name>.pem
                                    names=(f"{CONTROL_PREFIX}.254",))
            controller = [f"{CONTROL_PREFIX}.254:{self.lab.port}",
                          *self.lab.pki.client_flags(f"node-{self.name}")]
        self.agent = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, PY, "-m", "cni.agent.main",
              "--controller", *controller,
             "--socket", self.socket, "--ovsdb", self.ovs.remote, "--bridge", "br-int",
             "--node", self.name, "--install-cni-dir", str(self.bin_dir),
             "--log-level", "debug", *agent_args],
            stdout=log, stderr=log, cwd=self.lab.repo)
        wait_for(lambda: self._agent_ready(), 20, f"agent {self.name}")

    def _agent_ready(self) -> bool:
        if self.agent is not None and self.agent.poll() is not None:
            raise RuntimeError(f"agent {self.name} exited: {self.agent_log()[-2000:]}")
        if not (os.path.exists(self.socket) and os.path.exists(self.binary)):
            return False
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(self.socket)
            return True
        except OSError:
            return False

    def agent_log(self) -> str:
        try:
            return (self.dir / "agent.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(sig)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait(5)
        self.agent = None

    def stop(self) -> None:
        self.stop_agent()
        self.ovs.stop()

    def vsctl(self, *args: str) -> str:
        return sh("ovs-vsctl", f"--db={self.ovs.remote}", *args).stdout.decode()

    def ofctl(self, command: str, bridge: str, *args: str) -> str:
        """ovs-ofctl against this node's private vswitchd (its own rundir)."""
        target = f"unix:{self.ovs.rundir}/{bridge}.mgmt"
        return sh("ovs-ofctl", command, target, *args).stdout.decode()

    def flows(self, bridge: str) -> list[str]:
        out = self.ofctl("dump-flows", bridge, "--no-stats")
        return [line.strip() for line in out.splitlines()
                if line.strip() and not line.startswith(("NXST", "OFPST"))]

    def pod_ports(self, bridge: str = "br-int") -> list[str]:
        """Ports on the bridge that belong to pods (carry an iface-id), not the patch,
        tunnel or gateway ports of the datapath."""
        out = []
        for name in self.vsctl("list-ports", bridge).split():
            ids = self.vsctl("get", "Interface", name, "external_ids")
            if "iface-id" in ids:
                out.append(name)
        return out

    def _tunnel_rows(self) -> list[dict[str, Any]]:
        # One `find` is one consistent snapshot (a list-ports + get per port races with
        # the agent removing a tunnel in between).
        doc = json.loads(vsctl(self.ovs.remote, "--format=json", "--columns=name,options,ofport",
                               "find", "Interface", "type=vxlan"))
        return [{h: _datum(v) for h, v in zip(doc["headings"], row, strict=True)}
                for row in doc["data"]]

    def tunnels(self) -> dict[str, str]:
        """Tunnel port name -> remote_ip, read with ovs-vsctl."""
        return {str(r["name"]): str(r["options"].get("remote_ip", ""))
                for r in self._tunnel_rows()}

    def tunnel_tx_packets(self, bridge: str = "br-tun") -> int:
        """Packets sent into all tunnels so far: live OpenFlow port counters (the
        Interface statistics column in OVSDB is refreshed only every 5 s)."""
        ofports = {r["ofport"] for r in self._tunnel_rows() if isinstance(r["ofport"], int)}
        out = self.ofctl("dump-ports", bridge)
        total = 0
        for m in re.finditer(r"port\s+(\d+): rx .*?\n\s+tx pkts=(\d+)", out):
            if int(m.group(1)) in ofports:
                total += int(m.group(2))
        return total

    def netconf(self, **extra: Any) -> dict[str, Any]:
        return {"cniVersion": "1.0.0", "name": "ecnet-lab", "type": "ecnet",
                "agentSocket": self.socket, **extra}

    def cni(self, command: str, pod: Pod, conf: dict[str, Any] | None = None,
            env: dict[str, str] | None = None, netns: str | None = None) -> CniResult:
        """Exec the real binary as a runtime does."""
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "CNI_COMMAND": command, "CNI_CONTAINERID": pod.container_id,
             "CNI_NETNS": pod.netns_path if netns is None else netns,
             "CNI_IFNAME": pod.ifname, "CNI_PATH": str(self.bin_dir),
             "CNI_ARGS": (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};"
                          f"K8S_POD_NAME={pod.name};K8S_POD_UID={pod.uid}")}
        e.update(env or {})
        body = json.dumps(conf if conf is not None else self.netconf(pool="lab")).encode()
        p = subprocess.run([self.binary], input=body, capture_output=True, env=e, timeout=60)
        raw = p.stdout.decode()
        try:
            out = json.loads(raw) if raw.strip() else {}
        except ValueError:
            out = {"unparsable": raw}
        return CniResult(p.returncode, out, raw, p.stderr.decode())

    def new_pod(self, name: str, namespace: str = "default") -> Pod:
        ns = self.lab.make_netns(f"p-{name}")
        return Pod(name=name, netns=ns, node=self, namespace=namespace,
                   container_id=uuid.uuid4().hex)

    def add_pod(self, name: str, conf: dict[str, Any] | None = None,
                namespace: str = "default") -> Pod:
        pod = self.new_pod(name, namespace)
        res = self.cni("ADD", pod, conf)
        if not res.ok:
            raise RuntimeError(f"ADD {name} failed: {res.raw} {res.stderr}\n"
                               f"{self.agent_log()[-3000:]}")
        pod.result = res.out
        return pod


class Lab:
    """Controller + nodes + pods; a context manager that always cleans up."""

    def __init__(self, workdir: str | Path, db: str | None = None, tls: bool = True,
                 controller_netns: bool = False) -> None:
        """`tls`: the controller's TCP listener takes mutual TLS only, ipctl presents the lab's
        admin certificate (agents keep the unix socket unless added with add_tcp_node).
        `controller_netns`: the controller runs in a namespace of its own, cabled to the
        nodes added with add_tcp_node (ipctl runs there too)."""
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki: Pki | None = (make_pki(self.dir / "pki", names=(f"{CONTROL_PREFIX}.254",))
                                if tls or controller_netns else None)
        self.controller_ns = ""
        self._controller_netns = controller_netns
        self.tcp_nodes = 0
        self.repo = str(Path(__file__).resolve().parents[2])
        self.db = db or f"sqlite:///{self.dir}/ipam.db"
        self.port = free_port()
        self.controller_addr = f"127.0.0.1:{self.port}"
        # Agents run inside their node's network namespace, where 127.0.0.1 is not ours:
        # they reach the controller through a unix socket, which crosses namespaces.
        self.controller_sock = f"unix:{self.dir}/controller.sock"
        self.controller: subprocess.Popen[bytes] | None = None
        self.nodes: list[LabNode] = []
        self.netns: list[str] = []
        self.tag = uuid.uuid4().hex[:6]
        self._seq = 0
        self.underlay_ns: str | None = None
        self.hosts = 0

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _in_controller_ns(self) -> list[str]:
        return ["ip", "netns", "exec", self.controller_ns] if self.controller_ns else []

    def start_controller(self, *extra: str) -> None:
        listen = f"{self.controller_addr},{self.controller_sock}"
        if self._controller_netns and not self.controller_ns:
            self.controller_ns = self.make_netns("ctl")
            sh("ip", "-n", self.controller_ns, "link", "add", "cb", "type", "bridge")
            sh("ip", "-n", self.controller_ns, "addr", "add", f"{CONTROL_PREFIX}.254/24",
               "dev", "cb")
            sh("ip", "-n", self.controller_ns, "link", "set", "cb", "up")
        if self.controller_ns:
            listen += f",{CONTROL_PREFIX}.254:{self.port}"
        tls = self.pki.controller_flags() if self.pki is not None else []
        log = open(self.dir / "controller.log", "ab")
        self.controller = subprocess.Popen(
            [*self._in_controller_ns(), PY, "-m", "ipcontroller.daemon", "--listen", listen,
             *tls, "--db", self.db, "--log-level", "debug", *extra],
            stdout=log, stderr=log, cwd=self.repo)
        wait_for(self._controller_ready, 20, "controller")

    def _controller_ready(self) -> bool:
        if self.controller is not None and self.controller.poll() is not None:
            raise RuntimeError("controller exited: "
                               + (self.dir / "controller.log").read_text()[-2000:])
        try:
            if self.controller_ns:   # its loopback is not ours; the unix socket crosses
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(0.2)
                    s.connect(self.controller_sock[len("unix:"):])
                return True
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop_controller(self, sig: int = signal.SIGTERM) -> None:
        if self.controller is not None and self.controller.poll() is None:
            self.controller.send_signal(sig)
            try:
                self.controller.wait(10)
            except subprocess.TimeoutExpired:
                self.controller.kill()
                self.controller.wait(5)
        self.controller = None

    def add_node(self, name: str, *agent_args: str) -> LabNode:
        node = LabNode(self, name)
        self.nodes.append(node)
        return node.start(*agent_args)

    def add_tcp_node(self, name: str, *agent_args: str) -> LabNode:
        """A node whose agent dials the controller over TCP with mutual TLS (its own
        certificate, CN node:<name>), on a cable to the controller's namespace."""
        assert self.controller_ns, "Lab(controller_netns=True) and start_controller() first"
        self.tcp_nodes += 1
        n = self.tcp_nodes
        node = LabNode(self, name)
        self.nodes.append(node)
        node.start_host()
        sh("ip", "link", "add", "ctl0", "netns", node.netns, "type", "veth",
           "peer", "name", f"c{n}", "netns", self.controller_ns)
        sh("ip", "-n", self.controller_ns, "link", "set", f"c{n}", "master", "cb", "up")
        node.ip("addr", "add", f"{CONTROL_PREFIX}.{n}/24", "dev", "ctl0")
        node.ip("link", "set", "ctl0", "up")
        node.controller_tcp = True
        node.start_agent(*agent_args)
        return node

    def underlay(self) -> str:
        """The underlay switch: a namespace with a Linux bridge every host's NIC is
        cabled to (a veth per host), created on first use."""
        if self.underlay_ns is None:
            self.underlay_ns = self.make_netns("underlay")
            sh("ip", "-n", self.underlay_ns, "link", "add", "sw", "type", "bridge")
            sh("ip", "-n", self.underlay_ns, "link", "set", "sw", "up")
        return self.underlay_ns

    def add_host(self, name: str, *agent_args: str, gateway: bool = False,
                 gateway_cidrs: Sequence[str] = ()) -> LabNode:
        """A node on the underlay (its NIC ul0 carries 172.31.0.N/24, as on a real
        host), whose agent runs the standalone datapath: it moves that address onto
        br-phy and builds tunnels to the other hosts."""
        sw = self.underlay()
        self.hosts += 1
        n = self.hosts
        node = LabNode(self, name)
        self.nodes.append(node)
        node.start_host()
        node.underlay_ip = f"{UNDERLAY_PREFIX}.{n}"
        sh("ip", "link", "add", "ul0", "netns", node.netns, "type", "veth",
           "peer", "name", f"port{n}", "netns", sw)
        sh("ip", "-n", sw, "link", "set", f"port{n}", "master", "sw", "up")
        node.ip("addr", "add", f"{node.underlay_ip}/24", "dev", "ul0")
        node.ip("link", "set", "ul0", "up")
        args = ["--datapath", "standalone", "--underlay-ip", node.underlay_ip,
                "--underlay-iface", "ul0", "--underlay-bridge", "br-phy"]
        if gateway:
            args.append("--gateway")
            for cidr in gateway_cidrs:
                args += ["--gateway-cidr", cidr]
        node.start_agent(*args, *agent_args)
        return node

    def add_phys(self, gateway: LabNode, routes: Sequence[str]) -> PhysNet:
        """The "physical" network behind the gateway: a namespace cabled to the gateway
        host (phys0, 172.30.0.1) with routes back to the pod subnets via it."""
        ns = self.make_netns("phys")
        sh("ip", "link", "add", "phys0", "netns", gateway.netns, "type", "veth",
           "peer", "name", "eth0", "netns", ns)
        gateway.ip("addr", "add", f"{PHYS_PREFIX}.1/24", "dev", "phys0")
        gateway.ip("link", "set", "phys0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{PHYS_PREFIX}.2/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        for cidr in routes:
            sh("ip", "-n", ns, "route", "add", cidr, "via", f"{PHYS_PREFIX}.1")
        return PhysNet(netns=ns, ip=f"{PHYS_PREFIX}.2", gateway_ip=f"{PHYS_PREFIX}.1")

    def ipctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        tls = self.pki.client_flags("admin") if self.pki is not None else []
        p = subprocess.run([*self._in_controller_ns(), PY, "-m", "ipcontroller.cli",
                            "--controller", self.controller_addr, *tls, *args],
                           capture_output=True, timeout=30, cwd=self.repo)
        if check and p.returncode != 0:
            raise RuntimeError(f"ipctl {' '.join(args)}: {p.stderr.decode().strip()}")
        return p

    def make_netns(self, prefix: str) -> str:
        self._seq += 1
        name = f"ec{self.tag}-{self._seq}-{prefix}"[:48]
        sh("ip", "netns", "add", name)
        self.netns.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def del_netns(self, name: str) -> None:
        sh("ip", "netns", "del", name, check=False)
        if name in self.netns:
            self.netns.remove(name)

    def close(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # noqa: BLE001 - clean up the rest regardless
                print(f"cleanup of {node.name}: {exc}", file=sys.stderr)
        self.stop_controller()
        for ns in list(self.netns):
            self.del_netns(ns)
        if os.environ.get("ECNET_KEEP_LAB") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class PhysNet:
    """A namespace standing for the physical network (an endpoint like a pod)."""

    netns: str
    ip: str
    gateway_ip: str

    def exec(self, *argv: str, timeout: float = 30, check: bool = True
             ) -> subprocess.CompletedProcess[bytes]:
        return sh("ip", "netns", "exec", self.netns, *argv, timeout=timeout, check=check)


class Endpoint(Protocol):
    """Anything with a namespace and an address: a pod, the physical namespace."""

    @property
    def netns(self) -> str: ...
    @property
    def ip(self) -> str: ...
    def exec(self, *argv: str, timeout: float = 30, check: bool = True
             ) -> subprocess.CompletedProcess[bytes]: ...


def tcp_transfer(src: Endpoint, dst: Endpoint, nbytes: int = 4_000_000, port: int = 5201,
                 timeout: float = 20) -> int:
    """Move nbytes from src to dst over TCP; returns what dst counted (proves TCP works,
    which ping alone does not on the userspace datapath)."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", dst.netns, PY, "-c", _TCP_SERVER, dst.ip, str(port),
         str(timeout)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        client = src.exec(PY, "-c", _TCP_CLIENT, dst.ip, str(port), str(nbytes), str(timeout),
                          timeout=timeout + 5)
        return int(client.stdout.decode().strip())
    finally:
        try:
            server.wait(timeout + 5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


_TCP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(float(sys.argv[3]))
c, _ = s.accept(); c.settimeout(float(sys.argv[3])); n = 0
while True:
    d = c.recv(65536)
    if not d: break
    n += len(d)
c.sendall(str(n).encode()); c.close()
"""

_TCP_CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 5  # the server may still be starting (a loaded CI machine)
while True:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
        break
    except ConnectionRefusedError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
buf = b'x' * 65536; left = int(sys.argv[3])
while left > 0:
    n = s.send(buf[:min(left, len(buf))]); left -= n
s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())
"""


def ping(src: Endpoint, ip: str, count: int = 2, timeout: int = 2) -> bool:
    return src.exec("ping", "-c", str(count), "-W", str(timeout), "-i", "0.2", ip,
                    check=False, timeout=count * timeout + 5).returncode == 0


def wait_reachable(src: Endpoint, ip: str, timeout: float = 5.0) -> float:
    """Seconds until one ping from src to ip is answered (probes every ~0.1 s); raises
    TimeoutError. What convergence is measured with."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        if src.exec("ping", "-c", "1", "-W", "0.2", ip, check=False,
                    timeout=5).returncode == 0:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ip} unreachable from {src.netns} after {timeout}s")
        time.sleep(0.05)


def add_pods(jobs: Sequence[tuple[LabNode, Pod, dict[str, Any] | None]],
             workers: int = 8, retries: int = 0) -> None:
    """ADD many pods at once, as a busy runtime does (their netns made beforehand with
    `LabNode.new_pod`: the lab numbers namespaces one at a time); each pod gets its result.
    A failed ADD is retried up to `retries` times, as a kubelet would."""
    def add(job: tuple[LabNode, Pod, dict[str, Any] | None]) -> None:
        node, pod, conf = job
        res = node.cni("ADD", pod, conf)
        for _ in range(retries):
            if res.ok:
                break
            res = node.cni("ADD", pod, conf)
        if not res.ok:
            raise RuntimeError(f"ADD {pod.name} on {node.name}: {res.raw} {res.stderr}")
        pod.result = res.out

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(add, jobs))
