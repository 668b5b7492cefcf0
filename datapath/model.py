"""The standalone datapath as pure data: controller topology in, desired OVS state out.

Nothing here touches OVS, netlink or the network; :mod:`datapath.loop` reads the
current state, calls these functions and has :mod:`datapath.switch` and
:mod:`datapath.host` apply the differences. Keeping the decisions
here means every rule below is unit-tested without root.

Layout (Neutron's, kept from the seed): pods on ``br-int``, VXLAN ports on ``br-tun``,
one patch pair between them. br-tun is where "nothing floods across tunnels" is
enforced: its table holds only explicit flows (remote MAC -> tunnel, tunnel -> br-int)
over a default drop, so broadcast and unknown unicast never leave the host, and a full
mesh of three or more hosts cannot loop. br-int keeps NORMAL for what stays local
(broadcast to local pods, a pod's first packets before its flows exist) and gets:

* an ARP responder: an ARP request for any address the controller knows (every active
  port, every subnet gateway) is answered on the spot from the controller's IP -> MAC
  list, so pods never need an ARP broadcast to reach a remote or gateway address;
* a unicast flow per known MAC: remote ports (and the gateway MAC when the gateway is
  another node) to the patch port, local ports to their ofport. These override what
  NORMAL may have learned, so a MAC that moved hosts (a fixed pod re-created elsewhere)
  is followed at once instead of after NORMAL's MAC aging.

A node that is stale (no heartbeat for 3 intervals) or deleted contributes nothing: its
tunnel goes, and so do the flows and ARP answers for its ports.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ecnet_api.v1 import ecnet_pb2 as pb

COOKIE = 0xEC0001            # every flow the agent installs carries it
DEFAULT_VNI = 100            # one overlay segment: pods of all subnets share one L2
GATEWAY_MAC = "0a:ec:00:00:00:01"  # cluster-wide, locally administered unicast
INT_TABLE = 0
TUN_TABLE = 0

PRIO_ARP_PROBE = 110         # ARP probes (sender 0.0.0.0) go to their owner, not answered
PRIO_ARP_RESPONDER = 100
PRIO_UNICAST = 50
PRIO_DEFAULT = 0


@dataclass(frozen=True)
class NodeView:
    name: str
    underlay_ip: str
    ready: bool
    gateway: bool = False
    datapath: str = "standalone"


@dataclass(frozen=True)
class PortView:
    port_id: str
    mac: str
    ips: tuple[str, ...]
    node: str


@dataclass(frozen=True)
class SubnetView:
    cidr: str
    gateway: str


@dataclass(frozen=True)
class Topology:
    revision: int = 0
    nodes: tuple[NodeView, ...] = ()
    ports: tuple[PortView, ...] = ()
    subnets: tuple[SubnetView, ...] = ()


@dataclass(frozen=True)
class LocalPort:
    """A pod port plugged into this node's br-int (from OVSDB)."""

    port_id: str
    mac: str
    ofport: int


@dataclass(frozen=True)
class Tunnel:
    name: str
    remote_ip: str
    node: str


@dataclass(frozen=True)
class DatapathConfig:
    node: str
    vni: int = DEFAULT_VNI
    gateway_mac: str = GATEWAY_MAC


@dataclass(frozen=True)
class Ofports:
    """OpenFlow port numbers the flows refer to (-1: not there yet)."""

    int_patch: int = -1                   # br-int's end of the patch pair
    tun_patch: int = -1                   # br-tun's end
    gateway: int = -1                     # the gateway port on br-int (gateway nodes)
    tunnels: Mapping[str, int] = field(default_factory=dict)  # node name -> ofport


@dataclass(frozen=True, order=True)
class Flow:
    table: int
    priority: int
    match: str
    actions: str

    @property
    def key(self) -> tuple[int, int, str]:
        """What OpenFlow identifies a flow by (strict match): table, priority, match."""
        return self.table, self.priority, self.match

    def spec(self) -> str:
        match = f",{self.match}" if self.match else ""
        return (f"cookie={COOKIE:#x},table={self.table},priority={self.priority}{match} "
                f"actions={self.actions}")

    def add_line(self) -> str:
        return f"add {self.spec()}"

    def delete_line(self) -> str:
        match = f",{self.match}" if self.match else ""
        return f"delete_strict table={self.table},priority={self.priority}{match}"


@dataclass(frozen=True)
class TunnelPlan:
    add: tuple[Tunnel, ...]      # also tunnels whose remote_ip or node changed
    remove: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


# ------------------------------------------------------------------ from the controller

def topology_from_pb(resp: pb.TopologyResponse) -> Topology:
    return Topology(
        revision=resp.revision,
        nodes=tuple(sorted(
            (NodeView(name=n.name, underlay_ip=n.underlay_ip, ready=n.state != "stale",
                      gateway=n.gateway, datapath=n.datapath or "standalone")
             for n in resp.nodes), key=lambda n: n.name)),
        ports=tuple(sorted(
            (PortView(port_id=p.port_id, mac=p.mac.lower(), ips=tuple(p.ips), node=p.node)
             for p in resp.ports), key=lambda p: p.port_id)),
        subnets=tuple(sorted(
            (SubnetView(cidr=s.cidr, gateway=s.gateway) for s in resp.subnets),
            key=lambda s: s.cidr)),
    )


# ------------------------------------------------------------------------ decisions

def tunnel_name(remote_ip: str) -> str:
    """Named after the far end, so the name is stable across agent restarts and readable
    (vxac1f0002 is 172.31.0.2); IPv6 underlays get a hash. Always <= 15 characters."""
    ip = ipaddress.ip_address(remote_ip)
    if ip.version == 4:
        return f"vx{int(ip):08x}"
    return "vx6" + hashlib.sha1(ip.packed).hexdigest()[:11]


def peer_nodes(topo: Topology, me: str) -> list[NodeView]:
    """Nodes we keep a tunnel to: ready, with an underlay address, not us. A stale node
    is treated as gone: its agent cannot answer for its pods' state either."""
    return [n for n in topo.nodes
            if n.name != me and n.ready and n.underlay_ip and n.datapath == "standalone"]


def desired_tunnels(topo: Topology, me: str) -> dict[str, Tunnel]:
    my_ip = next((n.underlay_ip for n in topo.nodes if n.name == me), "")
    out: dict[str, Tunnel] = {}
    for n in peer_nodes(topo, me):
        if n.underlay_ip == my_ip:
            continue  # a misregistered node with our own address: a tunnel to ourselves
        name = tunnel_name(n.underlay_ip)
        out.setdefault(name, Tunnel(name, n.underlay_ip, n.name))
    return out


def diff_tunnels(desired: Mapping[str, Tunnel], current: Mapping[str, Tunnel]) -> TunnelPlan:
    add = tuple(t for name, t in sorted(desired.items()) if current.get(name) != t)
    remove = tuple(sorted(name for name in current if name not in desired))
    return TunnelPlan(add, remove)


def active_gateway(topo: Topology, me: str) -> str | None:
    """The one gateway every agent agrees on: the first ready gateway node by name
    (others stand by). Agreement needs no coordination: all see the same list. Only a
    standalone node can serve: an ONOS-mode node is no tunnel peer of ours."""
    for n in topo.nodes:
        if (n.gateway and n.ready and n.datapath == "standalone"
                and (n.name == me or n.underlay_ip)):
            return n.name
    return None


def gateway_addresses(topo: Topology) -> list[str]:
    """The gateway port's addresses: each IPv4 subnet's gateway IP with its prefix."""
    out = []
    for s in topo.subnets:
        if not s.gateway:
            continue
        net = ipaddress.ip_network(s.cidr, strict=False)
        if net.version == 4:
            out.append(f"{s.gateway}/{net.prefixlen}")
    return sorted(set(out))


def _ipv4(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 4
    except ValueError:
        return False


def arp_responder(ip: str, mac: str) -> Flow:
    """Turn the request around in place (Neutron's ARP responder): the requester's MAC
    and IP become the target, ours the sender, out the port it came in on."""
    mac_hex = "0x" + mac.replace(":", "").lower()
    ip_hex = f"{int(ipaddress.IPv4Address(ip)):#x}"
    actions = ",".join([
        "move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
        f"mod_dl_src:{mac}",
        "load:0x2->NXM_OF_ARP_OP[]",
        "move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[]",
        "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[]",
        f"load:{mac_hex}->NXM_NX_ARP_SHA[]",
        f"load:{ip_hex}->NXM_OF_ARP_SPA[]",
        "IN_PORT",
    ])
    return Flow(INT_TABLE, PRIO_ARP_RESPONDER, f"arp,arp_op=1,arp_tpa={ip}", actions)


@dataclass(frozen=True)
class DesiredFlows:
    br_int: tuple[Flow, ...]
    br_tun: tuple[Flow, ...]
    conflicts: tuple[str, ...] = ()   # e.g. one IP claimed by two ports: first one wins


def desired_flows(topo: Topology, cfg: DatapathConfig, local: Iterable[LocalPort],
                  ofports: Ofports) -> DesiredFlows:
    me = cfg.node
    peers = {n.name for n in peer_nodes(topo, me)}
    plugged = {p.port_id: p for p in local if p.ofport > 0}
    gw_node = active_gateway(topo, me)
    int_flows: dict[tuple[int, int, str], Flow] = {}
    tun_flows: dict[tuple[int, int, str], Flow] = {}
    conflicts: list[str] = []

    def put(table: dict[tuple[int, int, str], Flow], flow: Flow, what: str) -> None:
        old = table.get(flow.key)
        if old is None:
            table[flow.key] = flow
        elif old != flow:
            conflicts.append(what)

    def remote_mac(mac: str, node: str, what: str) -> None:
        tun = ofports.tunnels.get(node, -1)
        if ofports.int_patch > 0 and ofports.tun_patch > 0 and tun > 0:
            put(int_flows, Flow(INT_TABLE, PRIO_UNICAST, f"dl_dst={mac}",
                                f"output:{ofports.int_patch}"), what)
            put(tun_flows, Flow(TUN_TABLE, PRIO_UNICAST,
                                f"in_port={ofports.tun_patch},dl_dst={mac}",
                                f"set_field:{cfg.vni:#x}->tun_id,output:{tun}"), what)

    for port in topo.ports:
        mac = port.mac.lower()
        if port.node == me:
            lp = plugged.get(port.port_id)
            if lp is not None:
                put(int_flows, Flow(INT_TABLE, PRIO_UNICAST, f"dl_dst={mac}",
                                    f"output:{lp.ofport}"), f"mac {mac}")
        elif port.node in peers:
            remote_mac(mac, port.node, f"mac {mac}")
        else:
            continue  # on a stale, deleted or unknown node: unreachable, not answered
        for ip in port.ips:
            if _ipv4(ip):
                put(int_flows, arp_responder(ip, mac), f"ip {ip}")

    if gw_node is not None:
        gmac = cfg.gateway_mac.lower()
        if gw_node == me:
            if ofports.gateway > 0:
                put(int_flows, Flow(INT_TABLE, PRIO_UNICAST, f"dl_dst={gmac}",
                                    f"output:{ofports.gateway}"), f"mac {gmac}")
        elif gw_node in peers:
            remote_mac(gmac, gw_node, f"mac {gmac}")
        if gw_node == me or gw_node in peers:
            for cidr in gateway_addresses(topo):
                put(int_flows, arp_responder(cidr.split("/")[0], gmac),
                    f"ip {cidr.split('/')[0]}")

    put(int_flows, Flow(INT_TABLE, PRIO_ARP_PROBE, "arp,arp_op=1,arp_spa=0.0.0.0",
                        "NORMAL"), "probe")
    put(int_flows, Flow(INT_TABLE, PRIO_DEFAULT, "", "NORMAL"), "default")
    if ofports.tun_patch > 0:
        for node in sorted(peers):
            tun = ofports.tunnels.get(node, -1)
            if tun > 0:
                put(tun_flows, Flow(TUN_TABLE, PRIO_UNICAST,
                                    f"in_port={tun},tun_id={cfg.vni:#x}",
                                    f"output:{ofports.tun_patch}"), f"tunnel {node}")
    put(tun_flows, Flow(TUN_TABLE, PRIO_DEFAULT, "", "drop"), "default")
    return DesiredFlows(tuple(sorted(int_flows.values())), tuple(sorted(tun_flows.values())),
                        tuple(conflicts))


def diff_flows(current: Iterable[Flow], desired: Iterable[Flow]) -> list[str]:
    """Flow-mod lines that turn ``current`` into ``desired``: strict deletes for flows no
    longer wanted, adds for new flows and for changed actions (an add over an existing
    key replaces it). Deletes come first so the bundle never holds both versions."""
    cur = {f.key: f for f in current}
    want = {f.key: f for f in desired}
    lines = [cur[k].delete_line() for k in sorted(cur) if k not in want]
    lines += [want[k].add_line() for k in sorted(want) if cur.get(k) != want[k]]
    return lines
