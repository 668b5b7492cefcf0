"""Ports in one transaction: the plan (insert, or may-exist update of a port already on
the bridge), the wait for ovs-vswitchd's verdict, and the compensation when vswitchd
refuses a port this transaction created (STYLE.md item 9: ADD rolls back)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from uuid import UUID

from ovs_driver.errors import OvsError, OvsTransactionError
from ovs_driver.idl import Committed, IdlConnection, IdlRow, TxnBuilder, col
from ovs_driver.rows import as_int, as_map, optional_str, port_settled

log = logging.getLogger(__name__)


@dataclass
class PortSpec:
    bridge: str
    name: str
    iface_type: str
    options: dict[str, str]
    external_ids: dict[str, str]
    mac: str | None = None  # Interface.mac: the address vswitchd gives an internal port


@dataclass
class _PortsPlan:
    ifaces: list[UUID]  # provisional uuids for the interfaces this transaction inserts
    created: list[bool]


def commit_ports(conn: IdlConnection, specs: list[PortSpec], wait_ofport: float | None,
                 what: str, timeout: float) -> list[int]:
    """Add (or update) every port in ``specs`` in one transaction; with ``wait_ofport``
    return their ofports once vswitchd has them, else -1 each once committed. All or
    nothing: if vswitchd refuses one, every port this call created is removed (both ends
    of a patch pair exist together or not at all)."""
    created, verdicts = _commit_and_wait(conn, specs, wait_ofport, what, timeout)
    errors = [v for v in verdicts if isinstance(v, OvsError)]
    if errors:
        _roll_back(conn, created, what, timeout)
        raise errors[0]
    return [v for v in verdicts if not isinstance(v, OvsError)]


def commit_ports_each(conn: IdlConnection, specs: Sequence[PortSpec],
                      wait_ofport: float | None, what: str,
                      timeout: float) -> list[int | OvsError]:
    """Independent ports (pods' host ends, group-committed) in one transaction: each gets
    its own verdict, its ofport or vswitchd's error, and only the ports vswitchd refused
    are removed again. A failure of the transaction itself (or of the wait for vswitchd)
    raises for all: the group commit then tries each port alone."""
    specs = list(specs)
    if len({s.name for s in specs}) != len(specs):
        # Two inserts of one name would lose to each other's unique index until the
        # retries ran out; alone, the second is a may-exist update of the first.
        raise OvsTransactionError(f"{what}: the same port twice in one transaction")
    created, verdicts = _commit_and_wait(conn, specs, wait_ofport, what, timeout)
    refused = {s.name for s, v in zip(specs, verdicts, strict=True) if isinstance(v, OvsError)}
    _roll_back(conn, [s for s in created if s.name in refused], what, timeout)
    return verdicts


def _commit_and_wait(conn: IdlConnection, specs: list[PortSpec], wait_ofport: float | None,
                     what: str, timeout: float) -> tuple[list[PortSpec], list[int | OvsError]]:
    """One transaction; the specs it created and, per port, its ofport or vswitchd's
    error (-1 each without ``wait_ofport``). If the wait itself fails, what it created is
    removed and the error raised."""
    done, ifaces = _commit(conn, specs, what, timeout)
    created = [s for s, new in zip(specs, done.value.created, strict=True) if new]
    if wait_ofport is None:
        conn.wait_for(partial(_ifaces_written, conn, ifaces, specs), timeout,
                      f"{what} in the replica")
        return created, [-1] * len(specs)
    try:
        return created, _wait_ofports(conn, ifaces, specs, done.increment, wait_ofport,
                                      timeout)
    except OvsError:
        _roll_back(conn, created, what, timeout)
        raise


def _commit(conn: IdlConnection, specs: list[PortSpec], what: str,
            timeout: float) -> tuple[Committed[_PortsPlan], list[UUID]]:
    done = conn.transact(what, partial(_plan_ports, conn, specs, what), timeout)
    assert done is not None  # a port plan always has something to commit
    return done, [done.real_uuid(u) for u in done.value.ifaces]


def delete_ports(conn: IdlConnection, ports: Sequence[tuple[str, str]], what: str,
                 timeout: float) -> list[bool]:
    """Detach and delete every (bridge, name) in one transaction; per port, False when it
    was not there (DEL forgives) or sits on another bridge. Returns once the rows are gone
    from the replica."""
    def plan(txn: TxnBuilder) -> list[UUID | None] | None:
        removed: list[UUID | None] = []
        for bridge, name in ports:
            port = conn.by_name("Port", name)
            br = conn.by_name("Bridge", bridge) if port is not None else None
            if port is None or br is None or not conn.refers_to(br, "ports", port):
                if port is not None:
                    log.warning("ovsdb delete_port: port is on another bridge bridge=%s "
                                "name=%s owner=%s", bridge, name, bridge_of(conn, port))
                removed.append(None)
                continue
            if port.uuid in removed:  # the same port twice in one batch: removed once
                removed.append(None)
                continue
            port.verify("name")  # deleted by someone else first: plan again, find nothing
            br.delvalue("ports", port)  # Port and Interface go by garbage collection
            removed.append(port.uuid)
        return removed if any(u is not None for u in removed) else None

    done = conn.transact(what, plan, timeout)
    if done is None:
        return [False] * len(ports)
    gone = [u for u in done.value if u is not None]
    conn.wait_for(lambda: all(conn.row("Port", u) is None for u in gone), timeout,
                  f"ports of {what} gone from the replica")
    return [u is not None for u in done.value]


def bridge_of(conn: IdlConnection, port: IdlRow) -> str | None:
    """The name of the bridge that holds ``port`` (lock held)."""
    for br in conn.rows("Bridge"):
        if conn.refers_to(br, "ports", port):
            return str(col(br, "name"))
    return None


def _plan_ports(conn: IdlConnection, specs: Sequence[PortSpec], what: str,
                txn: TxnBuilder) -> _PortsPlan:
    bridges: dict[str, IdlRow] = {}
    for spec in specs:
        if spec.bridge in bridges:
            continue
        br = conn.by_name("Bridge", spec.bridge)
        if br is None:
            raise OvsTransactionError(f"{what}: bridge {spec.bridge} does not exist")
        br.verify("name")  # deleted meanwhile: plan again, and fail above
        bridges[spec.bridge] = br
    plan = _PortsPlan([], [])
    for spec in specs:
        iface, created = _plan_port(conn, txn, spec, bridges[spec.bridge])
        plan.ifaces.append(iface)
        plan.created.append(created)
    root = conn.root()
    if root is not None:
        txn.increment(root, "next_cfg")  # ask vswitchd to acknowledge (cur_cfg)
    return plan


def _plan_port(conn: IdlConnection, txn: TxnBuilder, spec: PortSpec,
               br: IdlRow) -> tuple[UUID, bool]:
    """Write one port into the transaction; returns its Interface's uuid and whether
    this transaction creates it."""
    name = spec.name
    port = conn.by_name("Port", name)
    if port is None:
        # Losing to a concurrent insert of the same name is a constraint violation on
        # the name index; transact() plans again and takes the branch below.
        iface = txn.insert("Interface")
        iface.name = name
        _write_iface(iface, spec, new=True)
        port = txn.insert("Port")
        port.name, port.interfaces = name, [iface]
        port.external_ids = spec.external_ids
        br.addvalue("ports", port)  # a mutate: concurrent adds to one bridge do not conflict
        return iface.uuid, True
    owner = bridge_of(conn, port)
    if owner != spec.bridge:
        raise OvsTransactionError(
            f"cannot add port {name} to bridge {spec.bridge}: it exists on bridge {owner}")
    ifaces = list(port.interfaces)
    if len(ifaces) != 1 or col(ifaces[0], "name") != name:
        raise OvsTransactionError(
            f"port {name} exists with other interfaces {[col(i, 'name') for i in ifaces]}")
    port.verify("interfaces")  # the same row with the same interface at commit
    _write_iface(ifaces[0], spec)
    port.external_ids = spec.external_ids  # replaced, not merged: a retried ADD's ids
    return ifaces[0].uuid, False


def _write_iface(iface: IdlRow, spec: PortSpec, new: bool = False) -> None:
    """An update replaces every column; a new row only needs what differs from the
    column defaults (each write is a python-ovs datum conversion)."""
    if spec.iface_type or not new:
        iface.type = spec.iface_type
    if spec.options or not new:
        iface.options = spec.options
    iface.external_ids = spec.external_ids
    if spec.mac is not None:
        iface.mac = [spec.mac]


def _ifaces_written(conn: IdlConnection, uuids: list[UUID], specs: list[PortSpec]) -> bool:
    for u, spec in zip(uuids, specs, strict=True):
        row = conn.row("Interface", u)
        if row is None or as_map(col(row, "external_ids")) != spec.external_ids or \
                as_map(col(row, "options")) != spec.options:
            return False
    return True


def _wait_ofports(conn: IdlConnection, ifaces: list[UUID], specs: list[PortSpec],
                  target: int | None, wait: float,
                  timeout: float) -> list[int | OvsError]:
    """Wait until vswitchd has given its verdict on every port (rows.port_settled), then
    return, per port, its ofport or vswitchd's error."""
    def settled() -> bool:
        root = conn.root()
        cur = as_int(col(root, "cur_cfg")) if root is not None else -1
        for u in ifaces:
            row = conn.row("Interface", u)
            if row is None or not port_settled(as_int(col(row, "ofport")),
                                               optional_str(col(row, "error")), cur, target):
                return False
        return True

    conn.wait_for(settled, wait, f"ofport of {','.join(s.name for s in specs)} from ovs-vswitchd")

    def ofports() -> list[int | OvsError]:
        out: list[int | OvsError] = []
        for u, spec in zip(ifaces, specs, strict=True):
            row = conn.row("Interface", u)
            ofport = as_int(col(row, "ofport")) if row is not None else -1
            if ofport <= 0:
                error = (optional_str(col(row, "error")) if row is not None else None) or (
                    "ovs-vswitchd did not set it up (no ofport; see ovs-vswitchd.log)")
                out.append(OvsTransactionError(
                    f"interface {spec.name} on bridge {spec.bridge}: {error}", error=error))
            else:
                out.append(ofport)
        return out

    return conn.read(ofports, timeout)


def _roll_back(conn: IdlConnection, specs: list[PortSpec], what: str, timeout: float) -> None:
    """A port we created and vswitchd rejected must not stay behind in the database."""
    if not specs:
        return

    def plan(txn: TxnBuilder) -> list[UUID] | None:
        removed = []
        for spec in specs:
            port = conn.by_name("Port", spec.name)
            br = conn.by_name("Bridge", spec.bridge)
            if port is None or br is None or not conn.refers_to(br, "ports", port):
                continue
            port.verify("name")
            br.delvalue("ports", port)  # Port and Interface go by garbage collection
            removed.append(port.uuid)
        return removed or None

    try:
        done = conn.transact(f"roll back {what}", plan, timeout)
        if done is not None:
            conn.wait_for(lambda: all(conn.row("Port", u) is None for u in done.value),
                          timeout, f"rolled back ports of {what} gone from the replica")
        log.info("ovsdb rolled back what=%r ports=%s", what, [s.name for s in specs])
    except OvsError as exc:
        log.error("ovsdb roll back failed what=%r: %s", what, exc)
