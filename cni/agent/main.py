"""`ecnet-agent`: the node daemon the CNI shim talks to.

Keeps what is expensive to set up warm (netlink socket, OVSDB connection and cache, gRPC
channel) so a pod ADD costs milliseconds; registers its node with the controller and keeps
that registration fresh.
"""
from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import os
import re
import signal
import socket
import sys
import threading
from dataclasses import dataclass

from datapath import GATEWAY_MAC, DatapathSettings, StandaloneDatapath, default_rundir
from ecnet_api.v1 import ecnet_pb2 as pb
from ovs_driver import OvsdbClient, OvsError

from .. import errors as ce
from ..install import install_cni_binary
from .controller import AgentTls, GrpcControllerClient
from .handler import DEFAULT_MTU, AgentConfig, CniHandler
from .netlink.verbs import PodNetlink
from .reconcile import Reconciler
from .server import AgentServer

log = logging.getLogger("ecnet-agent")
# tap + the first 11 characters of a uuid4 port id: the only tap names this agent creates.
_OUR_TAP = re.compile(r"tap[0-9a-f]{8}-[0-9a-f]{2}")


@dataclass(frozen=True)
class AgentSettings:
    controller: str
    socket: str
    ovsdb: str
    bridge: str
    node: str
    datapath_type: str
    underlay_ip: str
    gateway: bool
    mtu: int
    install_cni_dir: str
    log_level: str
    datapath: str = "standalone"
    underlay_iface: str = ""
    underlay_bridge: str = ""
    tunnel_bridge: str = "br-tun"
    gateway_cidrs: tuple[str, ...] = ()
    gateway_mac: str = GATEWAY_MAC
    gateway_port: str = "ecgw0"
    topology_interval: float = 0.5
    flow_apply_window: float = 0.05
    ovs_rundir: str = ""
    gc_grace_seconds: float = 60.0
    controller_timeout: float = 10.0
    ovsdb_timeout: float = 5.0
    tls: AgentTls | None = None
    reconcile_interval: float = 30.0
    reconcile_grace_seconds: float = 60.0


def parse_args(argv: list[str] | None = None) -> AgentSettings:
    p = argparse.ArgumentParser(prog="ecnet-agent", description=__doc__)
    p.add_argument("--controller", default=os.environ.get("ECNET_CONTROLLER", "127.0.0.1:7400"),
                   help="IP controller HOST:PORT")
    p.add_argument("--socket", default="/run/ecnet/agent.sock",
                   help="unix socket the CNI shim connects to")
    p.add_argument("--ovsdb", default="unix:/var/run/openvswitch/db.sock",
                   help="OVSDB remote (unix:PATH or tcp:HOST:PORT)")
    p.add_argument("--bridge", default="br-int", help="integration bridge for pod ports")
    p.add_argument("--node", default=socket.gethostname(), help="this node's name")
    p.add_argument("--datapath-type", default="netdev", choices=["netdev", "system"],
                   help="datapath for the bridge if the agent has to create it")
    p.add_argument("--underlay-ip", default="",
                   help="this node's underlay (tunnel) address; ADDR/PLEN gives the prefix "
                        "to put on --underlay-bridge when the NIC does not carry it")
    p.add_argument("--underlay-iface", default="", help="the NIC that carries the underlay")
    p.add_argument("--underlay-bridge", default="",
                   help="OVS bridge to own the underlay address, with --underlay-iface as a "
                        "port (userspace datapath: tunnels are routed through it), e.g. br-phy")
    p.add_argument("--datapath", default="standalone", choices=["standalone", "onos"],
                   help="who programs tunnels and flows: this agent (from the controller's "
                        "node and port lists) or ONOS (the agent only plugs ports)")
    p.add_argument("--tunnel-bridge", default="br-tun", help="bridge holding the tunnels")
    p.add_argument("--topology-interval", type=float, default=0.5,
                   help="standalone datapath: seconds between looks at local OVS state "
                        "while following WatchTopology, or between GetTopology polls when "
                        "the controller has no watch")
    p.add_argument("--flow-apply-window", type=float, default=0.05, metavar="SECONDS",
                   help="standalone datapath: topology changes that arrive within this of "
                        "the last flow apply are applied together at its end (one "
                        "ovs-ofctl exec for a burst); after a quiet spell a change goes at "
                        "once; 0 applies every change on its own")
    p.add_argument("--ovs-rundir", default="",
                   help="where ovs-vswitchd's <bridge>.mgmt sockets are (default: "
                        "$OVS_RUNDIR, else the directory of the --ovsdb unix socket)")
    p.add_argument("--gateway", action="store_true", help="this node is an overlay gateway")
    p.add_argument("--gateway-cidr", action="append", default=[], metavar="CIDR",
                   help="physical network the gateway routes to (repeatable)")
    p.add_argument("--gateway-mac", default=GATEWAY_MAC,
                   help="the gateway port's MAC; the same on every agent of a cluster")
    p.add_argument("--gateway-port", default="ecgw0", help="the gateway's port on the bridge")
    p.add_argument("--mtu", type=int, default=DEFAULT_MTU,
                   help="pod MTU when neither the pool nor the network config sets one")
    p.add_argument("--install-cni-dir", default="",
                   help="write the ecnet CNI binary into this directory at start")
    p.add_argument("--controller-timeout", type=float, default=10.0,
                   help="seconds a controller call may take before the runtime gets "
                        "\"try again later\" (code 11); well below the runtime's own timeout")
    p.add_argument("--ovsdb-timeout", type=float, default=5.0,
                   help="seconds an OVSDB request may wait for ovsdb-server (or ovs-vswitchd "
                        "to take a port) before the runtime gets \"try again later\" (11)")
    p.add_argument("--gc-grace-seconds", type=float, default=60.0,
                   help="CNI GC leaves attachments younger than this alone (an ADD may be "
                        "in flight while the runtime lists what it has)")
    p.add_argument("--reconcile-interval", type=float, default=30.0,
                   help="seconds between passes that look for pods whose netns is gone "
                        "without a DEL (the first pass runs at start-up)")
    p.add_argument("--reconcile-grace-seconds", type=float, default=60.0,
                   help="a pod's address is released only when two passes this far apart "
                        "both found its netns gone")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--tls-cert", default="", metavar="FILE",
                   help="this node's client certificate (PEM, CN node:<--node>): with --tls-key "
                        "and --tls-ca the controller is dialled with mutual TLS")
    p.add_argument("--tls-key", default="", metavar="FILE", help="its private key (PEM)")
    p.add_argument("--tls-ca", default="", metavar="FILE",
                   help="CA (PEM) that signed the controller's certificate")
    p.add_argument("--tls-server-name", default="",
                   help="name the controller's certificate must carry, when --controller is "
                        "an address it does not list (e.g. a Service's cluster IP)")
    a = p.parse_args(argv)
    tls_given = [bool(a.tls_cert), bool(a.tls_key), bool(a.tls_ca)]
    if any(tls_given) and not all(tls_given):
        p.error("--tls-cert, --tls-key and --tls-ca go together")
    if all(tls_given) and a.controller.startswith("unix:"):
        p.error("--tls-* is for a TCP --controller; the controller's unix socket is plaintext")
    if a.reconcile_interval <= 0 or a.reconcile_grace_seconds < 0:
        p.error("--reconcile-interval must be > 0, --reconcile-grace-seconds >= 0")
    if not a.ovsdb.startswith(("unix:", "tcp:")):
        p.error(f"--ovsdb must be unix:PATH or tcp:HOST:PORT, got {a.ovsdb!r}")
    if not 576 <= a.mtu <= 9000:
        p.error("--mtu must be in 576..9000")
    if not 0.1 <= a.controller_timeout <= 120:
        p.error("--controller-timeout must be in 0.1..120 (runtimes give up after ~240 s)")
    if not 0.1 <= a.ovsdb_timeout <= 120:
        p.error("--ovsdb-timeout must be in 0.1..120")
    if not 0.05 <= a.topology_interval <= 60:
        p.error("--topology-interval must be in 0.05..60")
    if not 0 <= a.flow_apply_window <= 1:
        p.error("--flow-apply-window must be in 0..1")
    for cidr in a.gateway_cidr:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            p.error(f"--gateway-cidr {cidr!r} is not a CIDR")
    if a.underlay_ip:
        try:
            ipaddress.ip_interface(a.underlay_ip)
        except ValueError:
            p.error(f"--underlay-ip {a.underlay_ip!r} is not an address")
    if a.underlay_bridge and not a.underlay_ip:
        p.error("--underlay-bridge needs --underlay-ip")
    return AgentSettings(a.controller, a.socket, a.ovsdb, a.bridge, a.node, a.datapath_type,
                         a.underlay_ip, a.gateway, a.mtu, a.install_cni_dir, a.log_level,
                         datapath=a.datapath, underlay_iface=a.underlay_iface,
                         underlay_bridge=a.underlay_bridge, tunnel_bridge=a.tunnel_bridge,
                         gateway_cidrs=tuple(a.gateway_cidr), gateway_mac=a.gateway_mac.lower(),
                         gateway_port=a.gateway_port, topology_interval=a.topology_interval,
                         flow_apply_window=a.flow_apply_window,
                         ovs_rundir=a.ovs_rundir or default_rundir(a.ovsdb),
                         gc_grace_seconds=a.gc_grace_seconds,
                         controller_timeout=a.controller_timeout,
                         ovsdb_timeout=a.ovsdb_timeout,
                         reconcile_interval=a.reconcile_interval,
                         reconcile_grace_seconds=a.reconcile_grace_seconds,
                         tls=AgentTls(a.tls_cert, a.tls_key, a.tls_ca, a.tls_server_name)
                         if all(tls_given) else None)


class Agent:
    """The running agent, startable in-process for tests."""

    def __init__(self, s: AgentSettings) -> None:
        self.settings = s
        self.stop_event = threading.Event()
        # Group commit: a burst of attaches (or detaches) costs vswitchd one pass per batch.
        self.ovs = OvsdbClient(s.ovsdb, timeout=s.ovsdb_timeout, group_commit=True)
        if not self.ovs.bridge_exists(s.bridge):
            self.ovs.ensure_bridge(s.bridge, datapath_type=s.datapath_type)
        userspace = self.ovs.datapath_type(s.bridge) == "netdev"
        self.controller = GrpcControllerClient(s.controller, timeout=s.controller_timeout,
                                               tls=s.tls)
        self.netlink = PodNetlink()
        cfg = AgentConfig(node=s.node, bridge=s.bridge, default_mtu=s.mtu,
                          tx_checksum_off=userspace, gc_grace_seconds=s.gc_grace_seconds)
        self.handler = CniHandler(cfg, self.controller, self.netlink, self.ovs)
        self.reconciler = Reconciler(
            node=s.node, bridge=s.bridge, ovs=self.ovs, controller=self.controller,
            host_veths=lambda: self.netlink.host_veths(("tap",)),
            reclaim=self.handler.reclaim, network_of=self.netlink.pod_network,
            grace=s.reconcile_grace_seconds,
            interval=s.reconcile_interval)
        # Re-plugging first: a tap pair the controller knows (its OVS port lost) is not an
        # orphan; whatever is still unattached after it is.
        self._reconcile_at_start()
        self._sweep_orphans()
        self.server = AgentServer(s.socket, self.handler)
        self._threads: list[threading.Thread] = []
        # datapath onos: ONOS owns tunnels and flows; the agent programs nothing.
        self.datapath: StandaloneDatapath | None = None
        if s.datapath == "standalone":
            self.datapath = StandaloneDatapath(DatapathSettings(
                node=s.node, int_bridge=s.bridge, tun_bridge=s.tunnel_bridge,
                datapath_type=self.ovs.datapath_type(s.bridge) or "system",
                ovs_rundir=s.ovs_rundir, interval=s.topology_interval,
                apply_window=s.flow_apply_window,
                underlay_ip=s.underlay_ip, underlay_iface=s.underlay_iface,
                underlay_bridge=s.underlay_bridge, gateway=s.gateway,
                gateway_port=s.gateway_port, gateway_mac=s.gateway_mac, mtu=s.mtu,
                controller=s.controller,
            ), self.ovs, self.controller.stub, self.stop_event)

    def _sweep_orphans(self) -> None:
        """A crash mid-ADD can leave a veth that no OVS port (and so no DEL) will find:
        a temporary `ectmp*` pair, or a `tap*` pair never attached. Remove them at start,
        and the pairs a previous run doomed (DEL) but did not reap before it stopped."""
        try:
            if self.netlink.reap_doomed():
                log.info("removed veth pairs of deleted pods left by the previous run")
            for name in self.netlink.host_veths(("ectmp", "tap")):
                if name.startswith("tap") and (not _OUR_TAP.fullmatch(name)
                                               or self.ovs.get_interface(name) is not None):
                    continue
                self.netlink.delete_pod_interface(name)
                log.warning("removed orphan veth left by an interrupted ADD name=%s", name)
        except ce.CniError as exc:
            log.warning("orphan veth sweep failed: %s", exc.msg)

    def _reconcile_at_start(self) -> None:
        """Before serving: a failure here (controller or OVSDB down) must not keep the
        agent from starting; the periodic passes finish the job."""
        try:
            self.reconciler.start_up()
        except (ce.CniError, OvsError) as exc:
            log.warning("reconcile at start-up failed (the next pass retries): %s", exc)

    def start(self) -> None:
        if self.settings.install_cni_dir:
            path = install_cni_binary(self.settings.install_cni_dir)
            log.info("installed CNI binary path=%s", path)
        if self.datapath is not None:
            self.datapath.setup()
            self._threads.append(self.datapath.start())
        for target, name in ((self.server.serve_forever, "cni-server"),
                             (self._heartbeat, "heartbeat"),
                             (lambda: self.reconciler.run(self.stop_event), "reconcile")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("serving socket=%s bridge=%s node=%s controller=%s", self.settings.socket,
                 self.settings.bridge, self.settings.node, self.settings.controller)

    def _heartbeat(self) -> None:
        interval = 10.0
        node = pb.NodeInfo(name=self.settings.node,
                           underlay_ip=self.settings.underlay_ip.partition("/")[0],
                           gateway=self.settings.gateway, datapath=self.settings.datapath,
                           gateway_cidrs=list(self.settings.gateway_cidrs))
        while True:
            try:
                resp = self.controller.register_node(node)
                interval = float(resp.heartbeat_seconds or 10)
            except ce.CniError as exc:
                log.warning("node registration failed (will retry): %s", exc.msg)
                interval = 2.0
            if self.stop_event.wait(interval):
                return

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown_and_remove()
        try:
            self.handler.teardown.drain(timeout=10)
        except Exception as exc:  # noqa: BLE001 - shutting down; the netns removal cleans up
            log.warning("veth teardown did not finish: %s", exc)
        self.handler.teardown.stop()
        # Flows and tunnels stay: pods keep talking while the agent restarts.
        for t in self._threads:
            if t.name == "datapath":
                t.join(timeout=5)
        self.controller.close()
        self.netlink.close()
        self.ovs.close()


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pyroute2 dumps whole netlink messages at DEBUG: too much even for debugging us.
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def freeze_start_up_heap() -> None:
    """Move what start-up built (modules, the OVSDB replica, gRPC and pyroute2 state: ~47k
    objects) out of the cyclic garbage collector's reach. Measured in cni_bench
    (docs/performance.md): unfrozen, a full collection came once per run and stopped every
    thread for 17-35 ms, an ADD or DEL's p99 on its own; frozen, none came, and the young
    collections a request can meet got shorter (max 2 ms, was up to 7)."""
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> None:
    s = parse_args(argv)
    _setup_logging(s.log_level)
    try:
        agent = Agent(s)
        agent.start()
    except Exception as exc:  # noqa: BLE001 - one clear line for the operator
        log.error("start-up failed: %s", exc)
        print(f"ecnet-agent: {exc}", file=sys.stderr)
        sys.exit(1)
    freeze_start_up_heap()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    agent.stop()


if __name__ == "__main__":
    main()
