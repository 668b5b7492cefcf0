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

def node_view(n: pb.NodeInfo) -> NodeView:
    return NodeView(name=n.name, underlay_ip=n.underlay_ip, ready=n.state != "stale",
                    gateway=n.gateway, datapath=n.datapath or "standalone")


def port_view(p: pb.RemotePort) -> PortView:
    return PortView(port_id=p.port_id, mac=p.mac.lower(), ips=tuple(p.ips), node=p.node)


def topology_from_pb(resp: pb.TopologyResponse) -> Topology:
    return Topology(
        revision=resp.revision,
        nodes=tuple(sorted((node_view(n) for n in resp.nodes), key=lambda n: n.name)),
        ports=tuple(sorted((port_view(p) for p in resp.ports), key=lambda p: p.port_id)),
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


# Who wants a flow. Every flow belongs to one owner, so a change re-plans only the owners
# it touches; the order of owners is the order of claims (a lower owner wins a key two
# owners claim differently): ports by id, then the gateway, the fixed flows, the tunnels.
OWNER_PORT, OWNER_GATEWAY, OWNER_FIXED, OWNER_TUNNEL = 0, 1, 2, 3
Owner = tuple[int, str]
INT, TUN = "int", "tun"                    # which bridge a flow goes to
BridgeFlow = tuple[str, Flow]
FlowKey = tuple[str, int, int, str]        # bridge, table, priority, match


@dataclass(frozen=True)
class FlowContext:
    """Everything besides a port itself that its flows depend on. Two contexts that differ
    only in some nodes' entries re-plan only the owners on those nodes
    (:func:`dirty_owners`)."""

    cfg: DatapathConfig
    peers: frozenset[str]
    plugged: Mapping[str, LocalPort]       # port id -> this node's plugged pod port
    ofports: Ofports
    gateway_node: str | None
    gateway_addrs: tuple[str, ...]


def flow_context(topo: Topology, cfg: DatapathConfig, local: Iterable[LocalPort],
                 ofports: Ofports) -> FlowContext:
    """Reads only ``topo``'s nodes and subnets: O(nodes), whatever the number of ports."""
    return FlowContext(
        cfg=cfg, peers=frozenset(n.name for n in peer_nodes(topo, cfg.node)),
        plugged={p.port_id: p for p in local if p.ofport > 0}, ofports=ofports,
        gateway_node=active_gateway(topo, cfg.node),
        gateway_addrs=tuple(gateway_addresses(topo)))


def _remote_mac(mac: str, node: str, ctx: FlowContext) -> list[BridgeFlow]:
    o = ctx.ofports
    tun = o.tunnels.get(node, -1)
    if o.int_patch <= 0 or o.tun_patch <= 0 or tun <= 0:
        return []
    return [(INT, Flow(INT_TABLE, PRIO_UNICAST, f"dl_dst={mac}", f"output:{o.int_patch}")),
            (TUN, Flow(TUN_TABLE, PRIO_UNICAST, f"in_port={o.tun_patch},dl_dst={mac}",
                       f"set_field:{ctx.cfg.vni:#x}->tun_id,output:{tun}"))]


def port_flows(port: PortView, ctx: FlowContext) -> list[BridgeFlow]:
    """One endpoint's flows: its MAC's unicast (local ofport, or patch + tunnel) and an
    ARP answer per IPv4 address. None for a port on a stale, deleted or unknown node:
    unreachable, not answered."""
    mac = port.mac.lower()
    out: list[BridgeFlow] = []
    if port.node == ctx.cfg.node:
        lp = ctx.plugged.get(port.port_id)
        if lp is not None:
            out.append((INT, Flow(INT_TABLE, PRIO_UNICAST, f"dl_dst={mac}",
                                  f"output:{lp.ofport}")))
    elif port.node in ctx.peers:
        out += _remote_mac(mac, port.node, ctx)
    else:
        return []
    out += [(INT, arp_responder(ip, mac)) for ip in port.ips if _ipv4(ip)]
    return out


def gateway_flows(ctx: FlowContext) -> list[BridgeFlow]:
    gw, me = ctx.gateway_node, ctx.cfg.node
    if gw is None:
        return []
    gmac = ctx.cfg.gateway_mac.lower()
    out: list[BridgeFlow] = []
    if gw == me:
        if ctx.ofports.gateway > 0:
            out.append((INT, Flow(INT_TABLE, PRIO_UNICAST, f"dl_dst={gmac}",
                                  f"output:{ctx.ofports.gateway}")))
    elif gw in ctx.peers:
        out += _remote_mac(gmac, gw, ctx)
    if gw == me or gw in ctx.peers:
        out += [(INT, arp_responder(cidr.split("/")[0], gmac)) for cidr in ctx.gateway_addrs]
    return out


def fixed_flows() -> list[BridgeFlow]:
    return [(INT, Flow(INT_TABLE, PRIO_ARP_PROBE, "arp,arp_op=1,arp_spa=0.0.0.0", "NORMAL")),
            (INT, Flow(INT_TABLE, PRIO_DEFAULT, "", "NORMAL")),
            (TUN, Flow(TUN_TABLE, PRIO_DEFAULT, "", "drop"))]


def tunnel_flows(node: str, ctx: FlowContext) -> list[BridgeFlow]:
    """What comes in over a peer's tunnel goes to br-int."""
    tun = ctx.ofports.tunnels.get(node, -1)
    if node not in ctx.peers or ctx.ofports.tun_patch <= 0 or tun <= 0:
        return []
    return [(TUN, Flow(TUN_TABLE, PRIO_UNICAST, f"in_port={tun},tun_id={ctx.cfg.vni:#x}",
                       f"output:{ctx.ofports.tun_patch}"))]


def owner_flows(owner: Owner, ports: Mapping[str, PortView],
                ctx: FlowContext) -> list[BridgeFlow]:
    """The flows ``owner`` wants now; none for a port that is gone."""
    kind, name = owner
    if kind == OWNER_PORT:
        port = ports.get(name)
        return port_flows(port, ctx) if port is not None else []
    if kind == OWNER_GATEWAY:
        return gateway_flows(ctx)
    if kind == OWNER_FIXED:
        return fixed_flows()
    return tunnel_flows(name, ctx)


def all_owners(ports: Iterable[str], ctx: FlowContext) -> list[Owner]:
    return ([(OWNER_PORT, p) for p in ports] + [(OWNER_GATEWAY, ""), (OWNER_FIXED, "")]
            + [(OWNER_TUNNEL, n) for n in sorted(ctx.peers)])


def dirty_owners(old: FlowContext, new: FlowContext,
                 ports_by_node: Mapping[str, Iterable[str]]) -> set[Owner] | None:
    """The owners whose flows a context change can alter; None when it alters the flows
    of every owner (the patch ports or the VNI changed): re-plan everything.

    A node that became or stopped being a peer, or whose tunnel's ofport changed,
    touches its ports and its tunnel; a plug change touches that port; anything about
    the gateway touches the gateway owner."""
    if (old.cfg != new.cfg or old.ofports.int_patch != new.ofports.int_patch
            or old.ofports.tun_patch != new.ofports.tun_patch):
        return None
    out: set[Owner] = set()
    nodes = set(old.peers ^ new.peers)
    nodes |= {n for n in set(old.ofports.tunnels) | set(new.ofports.tunnels)
              if old.ofports.tunnels.get(n, -1) != new.ofports.tunnels.get(n, -1)}
    for n in nodes:
        out.add((OWNER_TUNNEL, n))
        out |= {(OWNER_PORT, p) for p in ports_by_node.get(n, ())}
    out |= {(OWNER_PORT, p) for p in set(old.plugged) | set(new.plugged)
            if old.plugged.get(p) != new.plugged.get(p)}
    gw = new.gateway_node
    if (old.gateway_node != gw or old.gateway_addrs != new.gateway_addrs
            or old.ofports.gateway != new.ofports.gateway or gw in nodes
            or old.gateway_node in nodes):
        out.add((OWNER_GATEWAY, ""))
    return out


@dataclass(frozen=True)
class FlowMods:
    """Flow-mod lines per bridge: strict deletes first, then adds (an add over an
    existing key replaces it), so a bundle never holds both versions of a flow."""

    br_int: tuple[str, ...] = ()
    br_tun: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.br_int) + len(self.br_tun)


class FlowBook:
    """The flows every owner wants, and per flow key the winning claim: the desired
    state of both tables, kept up to date owner by owner.

    :meth:`set` replaces one owner's claims; :meth:`take_mods` turns the keys whose
    winner changed since the last call into flow-mods. So a port added, moved or removed
    costs the lines of its own flows, whatever the number of other ports. Pure: nothing
    here talks to OVS."""

    def __init__(self) -> None:
        self._by_owner: dict[Owner, dict[FlowKey, Flow]] = {}
        self._by_key: dict[FlowKey, dict[Owner, Flow]] = {}
        self._before: dict[FlowKey, Flow | None] = {}   # winners as of the last take_mods

    @classmethod
    def build(cls, owners: Iterable[Owner], ports: Mapping[str, PortView],
              ctx: FlowContext) -> FlowBook:
        book = cls()
        for o in owners:
            book.set(o, owner_flows(o, ports, ctx))
        book._before.clear()
        return book

    def winner(self, key: FlowKey) -> Flow | None:
        claims = self._by_key.get(key)
        return claims[min(claims)] if claims else None

    def set(self, owner: Owner, flows: Iterable[BridgeFlow]) -> None:
        new = {(b, *f.key): f for b, f in flows}
        old = self._by_owner.pop(owner, {})
        if new:
            self._by_owner[owner] = new
        for key in old.keys() | new.keys():
            if old.get(key) == new.get(key):
                continue
            if key not in self._before:
                self._before[key] = self.winner(key)
            claims = self._by_key.setdefault(key, {})
            if key in new:
                claims[owner] = new[key]
            else:
                claims.pop(owner, None)
                if not claims:
                    del self._by_key[key]

    def take_mods(self) -> FlowMods:
        lines: dict[str, tuple[list[str], list[str]]] = {INT: ([], []), TUN: ([], [])}
        for key in sorted(self._before):
            before, after = self._before[key], self.winner(key)
            if before == after:
                continue
            deletes, adds = lines[key[0]]
            if after is None:
                assert before is not None
                deletes.append(before.delete_line())
            else:
                adds.append(after.add_line())
        self._before.clear()
        return FlowMods(tuple(lines[INT][0] + lines[INT][1]),
                        tuple(lines[TUN][0] + lines[TUN][1]))

    def desired(self) -> DesiredFlows:
        tables: dict[str, list[Flow]] = {INT: [], TUN: []}
        conflicts = set()
        for key, claims in self._by_key.items():
            win = claims[min(claims)]
            tables[key[0]].append(win)
            if any(f != win for f in claims.values()):
                conflicts.add(_claim_label(win))
        return DesiredFlows(tuple(sorted(tables[INT])), tuple(sorted(tables[TUN])),
                            tuple(sorted(conflicts)))


def _claim_label(f: Flow) -> str:
    """What two owners both claimed, for the conflict warning: an IP or a MAC."""
    for part in f.match.split(","):
        name, _, value = part.partition("=")
        if name == "arp_tpa":
            return f"ip {value}"
        if name == "dl_dst":
            return f"mac {value}"
    return f.match or "default"


def desired_flows(topo: Topology, cfg: DatapathConfig, local: Iterable[LocalPort],
                  ofports: Ofports) -> DesiredFlows:
    """Every flow of both tables, from scratch (a reset, a resync, the poll)."""
    ctx = flow_context(topo, cfg, local, ofports)
    ports = {p.port_id: p for p in topo.ports}
    return FlowBook.build(all_owners(sorted(ports), ctx), ports, ctx).desired()


def diff_flows(current: Iterable[Flow], desired: Iterable[Flow]) -> list[str]:
    """Flow-mod lines that turn ``current`` into ``desired``: strict deletes for flows no
    longer wanted, adds for new flows and for changed actions (an add over an existing
    key replaces it). Deletes come first so the bundle never holds both versions."""
    cur = {f.key: f for f in current}
    want = {f.key: f for f in desired}
    lines = [cur[k].delete_line() for k in sorted(cur) if k not in want]
    lines += [want[k].add_line() for k in sorted(want) if cur.get(k) != want[k]]
    return lines
