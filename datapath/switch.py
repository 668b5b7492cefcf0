"""The datapath's Open vSwitch side: the bridges and ports it owns (br-tun, the patch pair,
tunnels, the gateway and underlay ports), what OVSDB says is plugged where, and the flow
tables of br-int and br-tun.

Reads come from the OVSDB client's cache, so a poll that finds nothing changed costs no
round trip. Flows go in whole (``replace-flows``, which sends only what differs) or as an
incremental bundle of flow-mods; either way each bridge changes atomically.
"""
from __future__ import annotations

from .model import DesiredFlows, FlowBook, LocalPort, Ofports, Tunnel, diff_flows
from .seams import FlowTable, OvsdbPorts

INT_PATCH = "patch-tun"   # br-int's end (Neutron's names)
TUN_PATCH = "patch-int"   # br-tun's end


class Bridges:
    """br-int (pods, the gateway port) and br-tun (tunnels) as the datapath sees them."""

    def __init__(self, ovs: OvsdbPorts, int_bridge: str, tun_bridge: str) -> None:
        self.ovs = ovs
        self.int_bridge = int_bridge
        self.tun_bridge = tun_bridge

    # ------------------------------------------------------------------ set-up
    def ensure_tunnel_bridge(self, datapath_type: str) -> None:
        # fail_mode=secure: a br-tun we just created forwards nothing (not even NORMAL)
        # until our flows are in.
        self.ovs.ensure_bridge(self.tun_bridge, datapath_type=datapath_type,
                               fail_mode="secure")
        self.ovs.add_patch_pair(self.int_bridge, INT_PATCH, self.tun_bridge, TUN_PATCH)

    def ensure_underlay_bridge(self, bridge: str, nic: str, datapath_type: str) -> None:
        """The bridge that will own the underlay address, with the NIC as its port."""
        self.ovs.ensure_bridge(bridge, datapath_type=datapath_type)
        if nic:
            self.ovs.add_port(bridge, nic, {"ecnet/role": "underlay"})

    def add_gateway_port(self, port: str, mac: str) -> None:
        """An internal port on br-int that owns the gateway MAC."""
        self.ovs.add_port(self.int_bridge, port, {"ecnet/role": "gateway"},
                          iface_type="internal", mac=mac)

    # ------------------------------------------------------------ current state
    def local_ports(self) -> tuple[LocalPort, ...]:
        """Pod ports plugged into br-int with an ofport, by port id."""
        on_int = set(self.ovs.list_ports(self.int_bridge))
        out = []
        for iface in self.ovs.find_interfaces():
            pid = iface.external_ids.get("iface-id")
            mac = iface.external_ids.get("attached-mac")
            if pid and mac and iface.name in on_int and iface.ofport > 0:
                out.append(LocalPort(pid, mac.lower(), iface.ofport))
        return tuple(sorted(out, key=lambda p: p.port_id))

    def current_tunnels(self) -> dict[str, Tunnel]:
        out = {}
        for name in self.ovs.list_ports(self.tun_bridge):
            info = self.ovs.get_interface(name)
            # Only tunnels we made: an operator's own ports on the bridge are left alone.
            if info is not None and info.external_ids.get("ecnet/role") == "tunnel":
                out[name] = Tunnel(name, info.options.get("remote_ip", ""),
                                   info.external_ids.get("ecnet/node", ""))
        return out

    def ofports(self, tunnels: dict[str, Tunnel], gateway_port: str | None) -> Ofports:
        return Ofports(
            int_patch=self._ofport(INT_PATCH), tun_patch=self._ofport(TUN_PATCH),
            gateway=self._ofport(gateway_port) if gateway_port else -1,
            tunnels={t.node: self._ofport(t.name) for t in tunnels.values()})

    def _ofport(self, name: str) -> int:
        info = self.ovs.get_interface(name)
        return info.ofport if info is not None else -1

    # ---------------------------------------------------------------- tunnels
    def add_tunnel(self, t: Tunnel) -> None:
        self.ovs.add_tunnel(self.tun_bridge, t.name, "vxlan", t.remote_ip, key="flow",
                            external_ids={"ecnet/role": "tunnel", "ecnet/node": t.node})

    def remove_tunnel(self, name: str) -> None:
        self.ovs.delete_port(self.tun_bridge, name)


class FlowProgrammer:
    """br-int's and br-tun's tables, and the :class:`FlowBook` they were last brought in
    line with."""

    def __init__(self, br_int: FlowTable, br_tun: FlowTable) -> None:
        self.br_int = br_int
        self.br_tun = br_tun
        self.book: FlowBook | None = None   # None: the next apply replaces whole tables

    def forget(self) -> None:
        """After a failure nobody knows what the tables hold: replace them next time."""
        self.book = None

    def replace(self, book: FlowBook, want: DesiredFlows | None = None) -> None:
        """Whole tables from `book`; `want` is its `desired()` when the caller has it."""
        want = want if want is not None else book.desired()
        book.take_mods()
        self.br_int.replace_flows(f.spec() for f in want.br_int)
        self.br_tun.replace_flows(f.spec() for f in want.br_tun)
        self.book = book

    def switch_to(self, book: FlowBook, want: DesiredFlows | None = None) -> int:
        """From the applied book to a freshly built one by the flow-mods between them
        (a snapshot after a reconnect disturbs only the flows that differ); `want` is the
        new book's `desired()` when the caller has it."""
        if self.book is None:
            self.replace(book, want)
            return 0
        old, new = self.book.desired(), want if want is not None else book.desired()
        book.take_mods()
        self.book = None            # a failure below leaves the tables unknown
        mods = self.br_int.apply_flow_mods(diff_flows(old.br_int, new.br_int))
        mods += self.br_tun.apply_flow_mods(diff_flows(old.br_tun, new.br_tun))
        self.book = book
        return mods

    def apply_pending(self) -> int:
        """The flow-mods of the owners re-planned in the book since the last apply."""
        assert self.book is not None
        book, self.book = self.book, None   # a failure below leaves the tables unknown
        m = book.take_mods()
        mods = self.br_int.apply_flow_mods(m.br_int) + self.br_tun.apply_flow_mods(m.br_tun)
        self.book = book
        return mods
