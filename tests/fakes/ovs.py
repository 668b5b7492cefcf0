"""A stateful Open vSwitch: an OVSDB with bridges, ports and interfaces
(:class:`FakeOvsdb`, the public surface of ``ovs_driver.OvsdbClient`` the agent and the
datapath use) and OpenFlow tables that flow-mod lines really change (:class:`FakeFlowTable`,
that of ``ovs_driver.OpenFlowBridge``).

What it keeps is what ``ovs-vsctl show`` and ``ovs-ofctl dump-flows`` would show, plus the
counters OVS itself keeps (transactions committed, flow-table changes), so a test can say
"nothing was written" as a fact about the switch. ovs-vswitchd is instant here: a port has
its ofport as soon as the transaction commits, numbered per bridge from 1 as OVS does.

Failure injection: ``fail_next("add_port", SomeOvsError(...))`` makes the next call of that
verb raise before it changes anything, as a refused OVSDB transaction would.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ovs_driver import InterfaceInfo, OvsFlowError, OvsNotFound, OvsTransactionError

OFPP_LOCAL = 65534   # the bridge's own internal port


@dataclass
class FakeBridge:
    name: str
    datapath_type: str | None = "netdev"
    fail_mode: str | None = None
    external_ids: dict[str, str] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)    # without the bridge's internal port
    next_ofport: int = 1


class FakeOvsdb:
    """OVSDB plus an instant ovs-vswitchd. ``transactions`` counts committed writes."""

    def __init__(self) -> None:
        self.bridges: dict[str, FakeBridge] = {}
        self.interfaces: dict[str, InterfaceInfo] = {}
        self.transactions = 0
        self.closed = False
        self._failures: dict[str, BaseException] = {}

    # ----------------------------------------------------------- test helpers
    def fail_next(self, verb: str, exc: BaseException) -> None:
        self._failures[verb] = exc

    def bridge_of(self, port: str) -> str | None:
        return next((b.name for b in self.bridges.values() if port in b.ports), None)

    def _check(self, verb: str) -> None:
        exc = self._failures.pop(verb, None)
        if exc is not None:
            raise exc

    def _bridge(self, name: str) -> FakeBridge:
        br = self.bridges.get(name)
        if br is None:
            raise OvsTransactionError(f"bridge {name} does not exist", error="referential")
        return br

    def _plug(self, bridge: str, name: str, iface_type: str, options: Mapping[str, str],
              external_ids: Mapping[str, str], mac: str | None = None) -> int:
        """May-exist, as the real add_port: a port already on the bridge keeps its ofport
        and gets its type, options and external_ids replaced."""
        br = self._bridge(bridge)
        elsewhere = self.bridge_of(name)
        if elsewhere is not None and elsewhere != bridge:
            raise OvsTransactionError(f"port {name} is on bridge {elsewhere}",
                                      error="constraint violation")
        old = self.interfaces.get(name)
        if old is not None and name in br.ports:
            ofport = old.ofport
        else:
            ofport, br.next_ofport = br.next_ofport, br.next_ofport + 1
            br.ports.append(name)
        # vswitchd applies the mac column to an internal port; other netdevs keep
        # their own MAC, which a test may set with set_mac_in_use.
        self.interfaces[name] = InterfaceInfo(name, iface_type, ofport, mac,
                                              dict(external_ids), dict(options))
        return ofport

    # ------------------------------------------------------------------ reads
    def bridge_exists(self, name: str) -> bool:
        return name in self.bridges

    def datapath_type(self, bridge: str) -> str:
        br = self.bridges.get(bridge)
        return (br.datapath_type or "") if br is not None else ""

    def list_ports(self, bridge: str) -> list[str]:
        br = self.bridges.get(bridge)
        if br is None:
            raise OvsNotFound(f"bridge {bridge} not found")
        return sorted(br.ports)

    def get_interface(self, name: str) -> InterfaceInfo | None:
        return self.interfaces.get(name)

    def find_interfaces(self, **external_ids: str) -> list[InterfaceInfo]:
        return [i for i in self.interfaces.values()
                if all(i.external_ids.get(k) == v for k, v in external_ids.items())]

    # ----------------------------------------------------------------- writes
    def ensure_bridge(self, name: str, datapath_type: str | None = "netdev",
                      external_ids: Mapping[str, str] | None = None,
                      fail_mode: str | None = None, *,
                      wait_vswitchd: float | None = 2.0) -> None:
        self._check("ensure_bridge")
        br = self.bridges.get(name)
        if br is None:
            br = self.bridges[name] = FakeBridge(name, datapath_type)
            self.interfaces[name] = InterfaceInfo(name, "internal", OFPP_LOCAL, None)
        elif datapath_type is not None:
            br.datapath_type = datapath_type
        if fail_mode is not None:
            br.fail_mode = fail_mode
        if external_ids is not None:
            br.external_ids = dict(external_ids)
        self.transactions += 1

    def add_port(self, bridge: str, name: str, external_ids: Mapping[str, str],
                 iface_type: str = "", options: Mapping[str, str] | None = None,
                 wait_ofport: float | None = 2.0, mac: str | None = None) -> int:
        self._check("add_port")
        ofport = self._plug(bridge, name, iface_type, options or {}, external_ids, mac)
        self.transactions += 1
        return ofport if wait_ofport is not None else -1

    def add_tunnel(self, bridge: str, name: str, kind: str, remote_ip: str, key: str = "flow",
                   extra_options: Mapping[str, str] | None = None,
                   external_ids: Mapping[str, str] | None = None,
                   wait_ofport: float | None = 2.0) -> int:
        self._check("add_tunnel")
        if kind not in ("vxlan", "geneve", "gre"):
            raise ValueError(f"tunnel kind {kind!r}")
        opts = {"remote_ip": remote_ip, "key": key, **(extra_options or {})}
        ofport = self._plug(bridge, name, kind, opts, external_ids or {})
        self.transactions += 1
        return ofport if wait_ofport is not None else -1

    def add_patch_pair(self, bridge_a: str, port_a: str, bridge_b: str, port_b: str,
                       wait_ofport: float | None = 2.0) -> tuple[int, int]:
        self._check("add_patch_pair")
        self._bridge(bridge_a)
        self._bridge(bridge_b)
        a = self._plug(bridge_a, port_a, "patch", {"peer": port_b}, {})
        b = self._plug(bridge_b, port_b, "patch", {"peer": port_a}, {})
        self.transactions += 1
        return (a, b) if wait_ofport is not None else (-1, -1)

    def delete_port(self, bridge: str, name: str) -> bool:
        """False (not an error) when the port is not on the bridge."""
        self._check("delete_port")
        br = self.bridges.get(bridge)
        if br is None or name not in br.ports:
            return False
        br.ports.remove(name)
        self.interfaces.pop(name, None)
        self.transactions += 1
        return True

    def set_ofport(self, name: str, ofport: int) -> None:
        """What ovs-vswitchd reports: -1 for a port it could not open."""
        self.interfaces[name] = dataclasses.replace(self.interfaces[name], ofport=ofport)

    def set_mac_in_use(self, name: str, mac: str) -> None:
        self.interfaces[name] = dataclasses.replace(self.interfaces[name], mac_in_use=mac)

    def close(self) -> None:
        self.closed = True


FlowKey = tuple[int, int, str]   # table, priority, match: what a strict flow-mod names


@dataclass(frozen=True)
class FakeFlow:
    table: int
    priority: int
    match: str
    actions: str
    cookie: int = 0


_FIELD = re.compile(r"(cookie|table|priority)=([0-9a-fx]+)$")


def parse_flow(text: str, with_actions: bool = True) -> FakeFlow:
    """One flow in ``ovs-ofctl`` syntax: ``[cookie=C,]table=T,priority=P[,match] actions=A``.
    Raises OvsFlowError for what ovs-ofctl would refuse."""
    head, sep, actions = text.strip().partition(" actions=")
    if with_actions and not (sep and actions):
        raise OvsFlowError(f"flow without actions: {text!r}")
    fields: dict[str, int] = {}
    match: list[str] = []
    for part in filter(None, head.split(",")):
        m = _FIELD.match(part)
        if m and not match:
            fields[m.group(1)] = int(m.group(2), 0)
        else:
            match.append(part)
    return FakeFlow(fields.get("table", 0), fields.get("priority", 32768), ",".join(match),
                    actions, fields.get("cookie", 0))


def _key(f: FakeFlow) -> FlowKey:
    return f.table, f.priority, f.match


class FakeFlowTable:
    """One bridge's OpenFlow table. ``replaced`` counts whole-table replacements and
    ``bundles`` incremental bundles that reached the switch (a bundle is atomic: a bad line
    changes nothing)."""

    def __init__(self, bridge: str) -> None:
        self.bridge = bridge
        self.flows: dict[FlowKey, FakeFlow] = {}
        self.replaced = 0
        self.bundles = 0

    def replace_flows(self, flows: Iterable[str]) -> None:
        parsed = [parse_flow(f) for f in flows if f.strip()]
        self.flows = {_key(f): f for f in parsed}
        self.replaced += 1

    def apply_flow_mods(self, lines: Iterable[str]) -> int:
        todo = [line.strip() for line in lines if line.strip()]
        if not todo:
            return 0
        table = dict(self.flows)
        for line in todo:
            verb, _, rest = line.partition(" ")
            if verb == "add":
                f = parse_flow(rest)
                table[_key(f)] = f
            elif verb == "delete_strict":
                table.pop(_key(parse_flow(rest, with_actions=False)), None)
            else:
                raise OvsFlowError(f"flow-mod verb {verb!r} not understood by the fake")
        self.flows = table
        self.bundles += 1
        return len(todo)

    # ----------------------------------------------------------- test helpers
    @property
    def version(self) -> tuple[int, int]:
        """Changes whenever anything was written to the table."""
        return self.replaced, self.bundles

    def specs(self) -> set[tuple[int, int, str, str]]:
        return {(f.table, f.priority, f.match, f.actions) for f in self.flows.values()}

    def actions(self, match: str, table: int = 0) -> list[str]:
        """Actions of every flow with exactly this match in ``table``, by priority."""
        return [f.actions for f in sorted(self.flows.values(), key=lambda f: -f.priority)
                if f.table == table and f.match == match]

    def mentioning(self, text: str) -> list[FakeFlow]:
        return [f for f in self.flows.values() if text in f.match or text in f.actions]

    def arp_entries(self) -> dict[str, str]:
        """The ARP responder: IP -> the MAC it answers with."""
        out = {}
        for f in self.flows.values():
            tpa = re.search(r"arp_op=1,arp_tpa=([0-9.]+)", f.match)
            mac = re.search(r"mod_dl_src:([0-9a-f:]+)", f.actions)
            if tpa and mac:
                out[tpa.group(1)] = mac.group(1)
        return out


if TYPE_CHECKING:   # the fakes satisfy the seams they stand in for (mypy checks this)
    from datapath.seams import FlowTable, OvsdbPorts

    _ovsdb: OvsdbPorts = FakeOvsdb()
    _flows: FlowTable = FakeFlowTable("br-int")
