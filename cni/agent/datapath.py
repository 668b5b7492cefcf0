"""The standalone datapath (``--datapath standalone``): the agent programs tunnels and
flows itself from the controller's node and port lists, the job ONOS does otherwise.

The decisions live in :mod:`cni.agent.datapath_model` (pure); this module reads the
current state (controller, OVSDB cache), applies what differs (OVSDB transactions,
``ovs-ofctl`` bundles, netlink for the underlay and gateway addresses) and loops.

Polling, not a watch: GetTopology answers an unchanged cluster with just its revision,
so a 0.5 s poll costs one small RPC and a cache read per tick; a change anywhere shows up
within one interval plus the ~20 ms to apply it, well inside the 2 s target. When the
controller cannot be reached the flows stay as they are (fail static): pods keep talking
on what was last known rather than losing everything with the controller.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ecnet_api.v1 import ecnet_pb2 as pb
from ovs_driver import OpenFlowBridge, OvsdbClient, OvsError

from .. import errors as ce
from .controller import ControllerClient, to_cni_error
from .datapath_model import (
    DEFAULT_VNI,
    GATEWAY_MAC,
    DatapathConfig,
    DesiredFlows,
    Flow,
    LocalPort,
    Ofports,
    Topology,
    Tunnel,
    desired_flows,
    desired_tunnels,
    diff_flows,
    diff_tunnels,
    gateway_addresses,
    topology_from_pb,
)

log = logging.getLogger(__name__)

INT_PATCH = "patch-tun"   # br-int's end (Neutron's names)
TUN_PATCH = "patch-int"   # br-tun's end


class DatapathError(Exception):
    """The datapath could not be set up (bad flags, missing NIC or address)."""


@dataclass(frozen=True)
class DatapathSettings:
    node: str
    int_bridge: str = "br-int"
    tun_bridge: str = "br-tun"
    datapath_type: str = "netdev"
    ovs_rundir: str = ""
    interval: float = 0.5
    resync_seconds: float = 30.0
    vni: int = DEFAULT_VNI
    underlay_ip: str = ""          # bare or CIDR; CIDR tells the prefix to put on the bridge
    underlay_iface: str = ""
    underlay_bridge: str = ""      # e.g. br-phy: the userspace datapath routes tunnels via it
    gateway: bool = False
    gateway_port: str = "ecgw0"
    gateway_mac: str = GATEWAY_MAC
    mtu: int = 1450


def default_rundir(ovsdb_remote: str) -> str:
    """Where ovs-vswitchd keeps <bridge>.mgmt: $OVS_RUNDIR, else next to the database
    socket (both live in OVS_RUNDIR unless an operator split them)."""
    if os.environ.get("OVS_RUNDIR"):
        return os.environ["OVS_RUNDIR"]
    if ovsdb_remote.startswith("unix:"):
        return os.path.dirname(ovsdb_remote[len("unix:"):]) or "/var/run/openvswitch"
    return "/var/run/openvswitch"


def fetch_topology(client: ControllerClient, node: str, since: int,
                   timeout: float = 2.0) -> pb.TopologyResponse:
    """GetTopology with a short deadline: a poll that hangs would delay the next one."""
    try:
        resp: pb.TopologyResponse = client.stub.GetTopology(
            pb.TopologyRequest(node=node, since_revision=since), timeout=timeout)
        return resp
    except grpc.RpcError as err:
        raise to_cni_error(err, client.target) from None


class StandaloneDatapath:
    def __init__(self, s: DatapathSettings, ovs: OvsdbClient, controller: ControllerClient,
                 stop_event: threading.Event) -> None:
        self.s = s
        self.ovs = ovs
        self.controller = controller
        self.stop_event = stop_event
        self.cfg = DatapathConfig(node=s.node, vni=s.vni, gateway_mac=s.gateway_mac)
        rundir = s.ovs_rundir or "/var/run/openvswitch"
        self.of_int = OpenFlowBridge(s.int_bridge, rundir)
        self.of_tun = OpenFlowBridge(s.tun_bridge, rundir)
        self.topology: Topology | None = None
        self._applied: DesiredFlows | None = None   # None: next apply replaces whole tables
        self._applied_key: tuple[Any, ...] | None = None
        self._gw_addrs: list[str] | None = None
        self._next_resync = 0.0
        self._thread: threading.Thread | None = None
        self.applied_count = 0

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Bridges and ports that do not depend on the topology; at start, so a bad flag
        or a missing NIC fails the agent's start instead of a background loop."""
        if self.s.underlay_bridge:
            self._setup_underlay()
        # fail_mode=secure: a br-tun we just created forwards nothing (not even NORMAL)
        # until our flows are in.
        self.ovs.ensure_bridge(self.s.tun_bridge, datapath_type=self.s.datapath_type,
                               fail_mode="secure")
        self.ovs.add_patch_pair(self.s.int_bridge, INT_PATCH, self.s.tun_bridge, TUN_PATCH)
        if self.s.gateway:
            self._setup_gateway_port()
        log.info("datapath set up node=%s int=%s tun=%s underlay=%s gateway=%s",
                 self.s.node, self.s.int_bridge, self.s.tun_bridge,
                 self.s.underlay_ip or "-", self.s.gateway)

    def _setup_underlay(self) -> None:
        """The recipe's br-phy: the NIC becomes a port of a bridge that owns the underlay
        address, because the userspace datapath sends tunnel packets by its own routing
        table, which only knows routes through OVS bridges."""
        br, nic = self.s.underlay_bridge, self.s.underlay_iface
        if not self.s.underlay_ip:
            raise DatapathError("--underlay-bridge needs --underlay-ip")
        self.ovs.ensure_bridge(br, datapath_type=self.s.datapath_type)
        if nic:
            self.ovs.add_port(br, nic, {"ecnet/role": "underlay"})
        ip_text, _, plen_text = self.s.underlay_ip.partition("/")
        ip = ipaddress.ip_address(ip_text)
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        with IPRoute() as ipr:
            br_idx = _link_index(ipr, br)
            if br_idx is None:
                raise DatapathError(f"bridge interface {br} not found")
            nic_idx = _link_index(ipr, nic) if nic else None
            if nic and nic_idx is None:
                raise DatapathError(f"underlay interface {nic} not found")
            if nic_idx is not None:
                ipr.link("set", index=nic_idx, state="up")
            on_br = _find_addr(ipr, br_idx, family, str(ip))
            if on_br is None:
                on_nic = _find_addr(ipr, nic_idx, family, str(ip)) if nic_idx else None
                plen = int(plen_text) if plen_text else on_nic
                if plen is None:
                    raise DatapathError(
                        f"underlay address {ip} is on neither {nic or '-'} nor {br}: give "
                        f"--underlay-ip with its prefix (e.g. {ip}/24)")
                routes = _gateway_routes(ipr, nic_idx, family) if nic_idx else []
                if on_nic is not None and nic_idx is not None:
                    ipr.addr("del", index=nic_idx, address=str(ip), prefixlen=on_nic)
                ipr.addr("add", index=br_idx, address=str(ip), prefixlen=plen)
                ipr.link("set", index=br_idx, state="up")
                for dst, gw in routes:   # routes via the NIC follow the address
                    try:
                        ipr.route("replace", dst=dst, gateway=gw, oif=br_idx)
                    except NetlinkError as exc:
                        log.warning("underlay route not moved dst=%s via=%s: %s", dst, gw, exc)
                log.info("underlay address moved ip=%s/%d from=%s to=%s routes=%d",
                         ip, plen, nic or "-", br, len(routes))
            else:
                ipr.link("set", index=br_idx, state="up")

    def _setup_gateway_port(self) -> None:
        """An internal port on br-int that owns the gateway MAC (and, once the topology
        is known, every subnet's gateway IP); Linux routes between it and the rest."""
        self.ovs.add_port(self.s.int_bridge, self.s.gateway_port, {"ecnet/role": "gateway"},
                          iface_type="internal", mac=self.s.gateway_mac)
        with IPRoute() as ipr:
            idx = _link_index(ipr, self.s.gateway_port)
            if idx is None:
                raise DatapathError(f"gateway port {self.s.gateway_port} has no netdev")
            ipr.link("set", index=idx, mtu=self.s.mtu, state="up")
        _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        # Router port: no IPv6 chatter (ND/MLD) from it onto the local segment.
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{self.s.gateway_port}/disable_ipv6", "1",
                      missing_ok=True)
        log.info("gateway port ready port=%s mac=%s mtu=%d ip_forward=1",
                 self.s.gateway_port, self.s.gateway_mac, self.s.mtu)

    # -------------------------------------------------------------------- loop
    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="datapath", daemon=True)
        self._thread.start()
        return self._thread

    def run(self) -> None:
        failing_since: float | None = None
        last_warning = 0.0
        while not self.stop_event.is_set():
            try:
                self.sync_once()
                if failing_since is not None:
                    log.info("datapath sync recovered after_s=%.1f",
                             time.monotonic() - failing_since)
                    failing_since = None
            except (ce.CniError, OvsError, NetlinkError, OSError, DatapathError) as exc:
                # Fail static: keep what is programmed; re-plan whole tables next time.
                now = time.monotonic()
                failing_since = failing_since or now
                # Every failed poll at 2 Hz would drown the log: warn now and then.
                level = logging.WARNING if now - last_warning >= 30 else logging.DEBUG
                if level == logging.WARNING:
                    last_warning = now
                log.log(level, "datapath sync failed (keeping current flows, will retry) "
                        "failing_s=%.1f: %s", now - failing_since,
                        getattr(exc, "msg", None) or exc)
                self._applied = None
                self._applied_key = None
            if self.stop_event.wait(self.s.interval):
                return

    def sync_once(self) -> bool:
        """One poll; True when it changed something in OVS."""
        since = self.topology.revision if self.topology is not None else 0
        resp = fetch_topology(self.controller, self.s.node, since)
        if not resp.unchanged:
            self.topology = topology_from_pb(resp)
        topo = self.topology
        assert topo is not None
        t0 = time.perf_counter()
        local = self._local_ports()
        want_tunnels = desired_tunnels(topo, self.s.node)
        plan = diff_tunnels(want_tunnels, self._current_tunnels())
        # Make before break: new tunnels first, then the flows, then the tunnels no flow
        # points at any more go.
        for t in plan.add:
            self.ovs.add_tunnel(self.s.tun_bridge, t.name, "vxlan", t.remote_ip, key="flow",
                                external_ids={"ecnet/role": "tunnel", "ecnet/node": t.node})
            _prime_neighbor(t.remote_ip)
        ofports = self._ofports(want_tunnels)
        key = (topo.revision, local, ofports.int_patch, ofports.tun_patch, ofports.gateway,
               tuple(sorted(ofports.tunnels.items())))
        # Whole tables are replaced at start, after a failure, and every resync_seconds
        # (ovs-vswitchd restarted, someone ran ovs-ofctl): replace-flows sends only what
        # differs, so a resync that finds nothing wrong disturbs nothing.
        resync = self._applied is None or time.monotonic() >= self._next_resync
        if not resync and key == self._applied_key and plan.empty:
            return False
        want = desired_flows(topo, self.cfg, local, ofports)
        if want.conflicts:
            log.warning("datapath conflicts (first claim wins): %s", ", ".join(want.conflicts))
        mods = 0
        if resync or self._applied is None:
            self.of_int.replace_flows(f.spec() for f in want.br_int)
            self.of_tun.replace_flows(f.spec() for f in want.br_tun)
            self._next_resync = time.monotonic() + self.s.resync_seconds
        else:
            mods += self.of_int.apply_flow_mods(diff_flows(self._applied.br_int, want.br_int))
            mods += self.of_tun.apply_flow_mods(diff_flows(self._applied.br_tun, want.br_tun))
        changed = key != self._applied_key or not plan.empty
        self._applied, self._applied_key = want, key
        for name in plan.remove:
            self.ovs.delete_port(self.s.tun_bridge, name)
        if self.s.gateway:
            self._sync_gateway_addresses(gateway_addresses(topo))
        if changed:
            self.applied_count += 1
        log.log(logging.INFO if changed else logging.DEBUG,
                "datapath applied revision=%d tunnels=%d tunnels_added=%d tunnels_removed=%d "
                "flows_int=%d flows_tun=%d flow_mods=%s ms=%.1f", topo.revision,
                len(want_tunnels), len(plan.add), len(plan.remove), len(want.br_int),
                len(want.br_tun), "replace" if resync else mods,
                (time.perf_counter() - t0) * 1e3)
        return changed

    # ------------------------------------------------------------ current state
    def _local_ports(self) -> tuple[LocalPort, ...]:
        on_int = set(self.ovs.list_ports(self.s.int_bridge))
        out = []
        for iface in self.ovs.find_interfaces():
            pid = iface.external_ids.get("iface-id")
            mac = iface.external_ids.get("attached-mac")
            if pid and mac and iface.name in on_int and iface.ofport > 0:
                out.append(LocalPort(pid, mac.lower(), iface.ofport))
        return tuple(sorted(out, key=lambda p: p.port_id))

    def _current_tunnels(self) -> dict[str, Tunnel]:
        out = {}
        for name in self.ovs.list_ports(self.s.tun_bridge):
            info = self.ovs.get_interface(name)
            # Only tunnels we made: an operator's own ports on the bridge are left alone.
            if info is not None and info.external_ids.get("ecnet/role") == "tunnel":
                out[name] = Tunnel(name, info.options.get("remote_ip", ""),
                                   info.external_ids.get("ecnet/node", ""))
        return out

    def _ofport(self, name: str) -> int:
        info = self.ovs.get_interface(name)
        return info.ofport if info is not None else -1

    def _ofports(self, tunnels: dict[str, Tunnel]) -> Ofports:
        return Ofports(
            int_patch=self._ofport(INT_PATCH), tun_patch=self._ofport(TUN_PATCH),
            gateway=self._ofport(self.s.gateway_port) if self.s.gateway else -1,
            tunnels={t.node: self._ofport(t.name) for t in tunnels.values()})

    def _sync_gateway_addresses(self, want: list[str]) -> None:
        if want == self._gw_addrs:
            return
        with IPRoute() as ipr:
            idx = _link_index(ipr, self.s.gateway_port)
            if idx is None:
                raise DatapathError(f"gateway port {self.s.gateway_port} has no netdev")
            have = {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                    for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
            for cidr in sorted(have - set(want)):
                ip, _, plen = cidr.partition("/")
                ipr.addr("del", index=idx, address=ip, prefixlen=int(plen))
            for cidr in want:
                if cidr not in have:
                    ip, _, plen = cidr.partition("/")
                    ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))
        log.info("gateway addresses port=%s addresses=%s", self.s.gateway_port,
                 ",".join(want) or "-")
        self._gw_addrs = list(want)

    def applied_flows(self) -> tuple[Flow, ...]:
        return self._applied.br_int + self._applied.br_tun if self._applied else ()


# ---------------------------------------------------------------- netlink helpers

def _link_index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _find_addr(ipr: Any, index: int | None, family: int, ip: str) -> int | None:
    """The prefix length of ``ip`` on the link, None when it is not there."""
    if index is None:
        return None
    for a in ipr.get_addr(index=index, family=family):
        if a.get_attr("IFA_ADDRESS") == ip:
            return int(a["prefixlen"])
    return None


def _gateway_routes(ipr: Any, index: int, family: int) -> list[tuple[str, str]]:
    """Routes via a next hop out of the NIC (a default route, say): moving the address
    drops them, so they are re-added on the bridge."""
    out = []
    for r in ipr.get_routes(family=family, oif=index):
        gw = r.get_attr("RTA_GATEWAY")
        if gw and r.get_attr("RTA_TABLE") in (None, 254):
            dst = r.get_attr("RTA_DST")
            out.append((f"{dst}/{r['dst_len']}" if dst else "default", gw))
    return out


def _prime_neighbor(remote_ip: str) -> None:
    """Best effort: make the host ARP for a new tunnel's far end now. The userspace
    datapath drops a tunnel packet whose next hop it has not resolved yet (it sends an ARP
    instead), and it learns next hops by snooping the host's ARP exchanges on br-phy; so
    one datagram from us (to the discard port) spares the first pod packet."""
    family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"", (remote_ip, 9))
    except OSError as exc:
        log.debug("tunnel neighbor priming failed remote_ip=%s: %s", remote_ip, exc)


def _write_sysctl(path: str, value: str, missing_ok: bool = False) -> None:
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
