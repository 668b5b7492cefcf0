"""The topology change log's rows, as pure values: what a change to ports, nodes or subnets
writes to the log, and how a run of rows is coalesced.

Agents used to poll a whole snapshot of the topology (issue 14): O(ports) per poll, and past
~52,000 ports more than gRPC's 4 MiB message limit. Instead every transaction that changes
what agents act on appends rows to a log in the same transaction, ordered by a revision the
database assigns, and any replica streams the rows after an agent's revision. This module
decides which rows a change produces (no SQL here, so it is unit-tested alone); the stores
write them (`UnitOfWork.record_change`) and the controller's watch serves them.

An upsert row carries the whole object (an agent replaces by key), so the latest row of a key
says everything: that is what makes coalescing a slow watcher's backlog safe.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .domain import Node, Port, PortState, Subnet

PORT, NODE, SUBNET = "port", "node", "subnet"
PUT, DEL = "put", "del"


@dataclass(frozen=True)
class Change:
    """One object's new state (`PUT`) or its removal (`DEL`)."""

    kind: str
    key: str
    op: str
    # Ports only: the node the port is on and the subnets of its addresses, kept on removals
    # too, so a watcher can tell its own ports apart and filter by subnet without a lookup.
    node: str = ""
    subnets: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ident(self) -> tuple[str, str]:
        return (self.kind, self.key)


@dataclass(frozen=True)
class LogRow:
    revision: int
    change: Change


def _ips(port: Port) -> list[str]:
    return sorted((a.ip for a in port.addresses), key=lambda a: (":" in a, a))


def port_change(port: Port) -> Change:
    """An active port is an endpoint agents forward to; any other state (idle: a binding
    kept for its owner, no pod behind it) is no endpoint, so its row is a removal."""
    subnets = tuple(sorted({a.subnet_id for a in port.addresses}))
    if port.state is not PortState.ACTIVE:
        return port_removed(port)
    return Change(PORT, port.id, PUT, node=port.node, subnets=subnets,
                  data={"mac": port.mac, "ips": _ips(port)})


def port_removed(port: Port) -> Change:
    return Change(PORT, port.id, DEL, node=port.node,
                  subnets=tuple(sorted({a.subnet_id for a in port.addresses})))


def node_put(node: Node) -> Change:
    return Change(NODE, node.name, PUT, data={
        "underlay_ip": node.underlay_ip, "gateway": node.gateway, "datapath": node.datapath,
        "gateway_cidrs": list(node.gateway_cidrs), "ready": node.ready,
        "last_seen": node.last_seen})


def node_change(before: Node | None, after: Node) -> Change | None:
    """The row a registration (or heartbeat: the same call) writes, or None when nothing an
    agent acts on changed. A heartbeat only moves last_seen: without this test every node
    would add a row every 10 s and the log would grow with the cluster, not with change."""
    if (before is not None and before.ready and before.underlay_ip == after.underlay_ip
            and before.gateway == after.gateway and before.datapath == after.datapath
            and before.gateway_cidrs == after.gateway_cidrs):
        return None
    return node_put(replace(after, ready=True))


def node_stale(node: Node) -> Change:
    """The one row a node's ready -> stale transition writes (missed heartbeats)."""
    return node_put(replace(node, ready=False))


def node_removed(name: str) -> Change:
    return Change(NODE, name, DEL)


def subnet_change(subnet: Subnet, pool_name: str) -> Change:
    return Change(SUBNET, subnet.id, PUT, data={"pool": pool_name, "cidr": subnet.cidr,
                                                "gateway": subnet.gateway or ""})


def subnet_removed(subnet_id: str) -> Change:
    return Change(SUBNET, subnet_id, DEL)


def encode(change: Change) -> tuple[str, str, str, str, str, str]:
    """(kind, key, op, node, subnets, payload): the log table's columns."""
    return (change.kind, change.key, change.op, change.node, ",".join(change.subnets),
            json.dumps(change.data, separators=(",", ":")) if change.data else "")


def decode(revision: int, kind: str, key: str, op: str, node: str, subnets: str,
           payload: str) -> LogRow:
    return LogRow(int(revision), Change(
        kind, key, op, node=node or "", subnets=tuple(s for s in (subnets or "").split(",") if s),
        data=json.loads(payload) if payload else {}))


def coalesce(rows: Iterable[LogRow]) -> list[LogRow]:
    """The latest row of every key, in revision order: what a watcher that fell behind is
    sent instead of every intermediate state. Applying them leaves the same view as applying
    all the rows (each row replaces its key whole), at the last row's revision."""
    latest: dict[tuple[str, str], LogRow] = {}
    for row in rows:
        latest.pop(row.change.ident, None)   # re-insert: dicts keep insertion order
        latest[row.change.ident] = row
    return list(latest.values())


def endpoint_changes(rows: Iterable[tuple[str, str, str, str | None, str | None]]
                     ) -> list[Change]:
    """Port upserts from (port id, MAC, node, address, subnet id) rows ordered by port id,
    one row per address: a snapshot's ports, or one subnet's."""
    out: list[Change] = []
    cur: tuple[str, str, str] | None = None
    ips: list[str] = []
    subnets: set[str] = set()

    def emit() -> None:
        if cur is not None:
            out.append(Change(PORT, cur[0], PUT, node=cur[2], subnets=tuple(sorted(subnets)),
                              data={"mac": cur[1],
                                    "ips": sorted(ips, key=lambda a: (":" in a, a))}))

    for port_id, mac, node, ip, subnet_id in rows:
        if cur is None or cur[0] != port_id:
            emit()
            cur, ips, subnets = (port_id, mac, node), [], set()
        if ip is not None:
            ips.append(ip)
        if subnet_id is not None:
            subnets.add(subnet_id)
    emit()
    return out


@dataclass(frozen=True)
class Snapshot:
    """The whole topology at one revision of the log: nodes, subnets, then ports."""

    revision: int
    changes: list[Change]
