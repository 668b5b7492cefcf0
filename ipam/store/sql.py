"""The SQL store on SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL for several replicas.

Correctness rests on the database, not on the process: unique constraints on (subnet, offset),
(container id, ifname), (pool, owner) and MAC; row locks (`FOR UPDATE SKIP LOCKED` on
PostgreSQL) when taking a free range; conditional updates on generations. Anything transient
(a lost race, a deadlock, SQLite busy) surfaces as `Busy`, which the service retries.

The pod path (allocate/release: a handful of statements per request) runs hand-written SQL on
the transaction's own DBAPI connection, built once per dialect (`_Statements`): building and
compiling Core statements cost ~15-50 us each against ~2 us for the statement itself on
SQLite, several times the database work. Admin paths stay on Core. Both run in the same
transaction, and the schema (schema.py, the migrations) is the one definition of the tables.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from .. import addr
from ..domain import (
    AddressState,
    Node,
    Policy,
    Pool,
    Port,
    PortAddress,
    PortState,
    Subnet,
    Usage,
)
from ..errors import Busy
from . import schema as t
from .base import OutboxRow, PortFilter

log = logging.getLogger(__name__)


_TRANSIENT_SQLSTATES = ("40001", "40P01", "55P03")  # serialization, deadlock, lock n/a


def _is_transient(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True  # lost an insert race; the retry will see the winner's row
    if exc.connection_invalidated:
        return True  # the database went away; the retry gets a fresh connection
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if code in _TRANSIENT_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and "locked" in str(exc).lower()


def _is_transient_driver(exc: Exception, dbapi: Any) -> bool:
    """The same test for errors raised by the raw statements of the pod path."""
    if isinstance(exc, dbapi.IntegrityError):
        return True
    if getattr(exc, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    text = str(exc).lower()
    return isinstance(exc, dbapi.OperationalError) and ("locked" in text or "busy" in text)


def _driver(conn: Connection) -> Any:
    """The DBAPI connection (sqlite3 / psycopg) under a Core connection."""
    return conn.connection.driver_connection


_PORT_COLS = ("id", "pool_id", "mac", "state", "generation", "owner", "container_id", "ifname",
              "pod_uid", "pod_namespace", "pod_name", "node", "netns", "hostname",
              "created_at", "updated_at")
_ADDR_COLS = ("subnet_id", '"offset"', "ip", "state", "port_id", "generation", "free_at",
              "note")


class _Statements:
    """The pod path's SQL for one dialect, written once as text with `?` placeholders.

    Every statement is an indexed lookup or a single-row change, whatever the occupancy
    (DESIGN.md "Scale"). On PostgreSQL the lookups that lead to a write lock their rows."""

    def __init__(self, postgres: bool) -> None:
        def q(text: str) -> str:
            return text.replace("?", "%s") if postgres else text

        upd = " FOR UPDATE" if postgres else ""
        skip = " FOR UPDATE SKIP LOCKED" if postgres else ""
        # FOR SHARE: an admin change (UPDATE of this row) waits for running pod-path
        # transactions and they wait for it; read in RC, the row is re-read after the wait.
        self.config_generation = ("SELECT generation FROM ipam_config WHERE id = 1"
                                  + (" FOR SHARE" if postgres else ""))
        self.bump_config = "UPDATE ipam_config SET generation = generation + 1 WHERE id = 1"
        self.seed_config = "INSERT INTO ipam_config (id, generation) VALUES (1, 2)"
        port_select = ("SELECT " + ", ".join(f"p.{c}" for c in _PORT_COLS)
                       + ', a.subnet_id, a.ip, a."offset" FROM ports p'
                       " LEFT JOIN addresses a ON a.port_id = p.id WHERE ")
        lock_p = " FOR UPDATE OF p" if postgres else ""
        self.port_by_request = q(port_select + "p.container_id = ? AND p.ifname = ?" + lock_p)
        self.port_by_owner = q(port_select + "p.pool_id = ? AND p.owner = ?" + lock_p)
        self.port_by_id = q(port_select + "p.id = ?" + lock_p)
        self.insert_port = q(f"INSERT INTO ports ({', '.join(_PORT_COLS)}) VALUES "
                             f"({', '.join('?' * len(_PORT_COLS))}) ON CONFLICT (mac) DO NOTHING")
        self.update_port = q("UPDATE ports SET " + ", ".join(f"{c} = ?" for c in _PORT_COLS[1:])
                             + " WHERE id = ? AND generation = ?")
        self.delete_port = q("DELETE FROM ports WHERE id = ? AND generation = ?")
        self.address_generation = q("UPDATE addresses SET generation = ? WHERE port_id = ?")
        # The lowest free offset in one statement. A range of one offset is left to the slow
        # path (it must be deleted, not emptied), so this never creates an empty range.
        self.take_lowest = q(
            "UPDATE free_ranges SET first_off = first_off + 1 WHERE id = (SELECT id FROM "
            "free_ranges WHERE subnet_id = ? ORDER BY first_off LIMIT 1" + skip + ")"
            " AND first_off < last_off RETURNING first_off - 1")
        lowest = ("SELECT id, first_off, last_off FROM free_ranges WHERE subnet_id = ?"
                  " ORDER BY first_off LIMIT 1")
        self.lowest_range = q(lowest + upd)
        self.lowest_range_skip = q(lowest + skip)
        self.any_free = q("SELECT 1 FROM free_ranges WHERE subnet_id = ? LIMIT 1")
        self.range_containing = q(
            "SELECT id, first_off, last_off FROM free_ranges WHERE subnet_id = ?"
            " AND first_off <= ? ORDER BY first_off DESC LIMIT 1" + upd)
        self.range_ending_at = q("SELECT id, first_off FROM free_ranges WHERE subnet_id = ?"
                                 " AND last_off = ?" + upd)
        self.range_starting_at = q("SELECT id, last_off FROM free_ranges WHERE subnet_id = ?"
                                   " AND first_off = ?" + upd)
        cond = " WHERE id = ? AND first_off = ? AND last_off = ?"
        self.range_delete_if = q("DELETE FROM free_ranges" + cond)
        self.range_set_first_if = q("UPDATE free_ranges SET first_off = ?" + cond)
        self.range_set_last_if = q("UPDATE free_ranges SET last_off = ?" + cond)
        self.range_delete = q("DELETE FROM free_ranges WHERE id = ?")
        self.range_set_first = q("UPDATE free_ranges SET first_off = ? WHERE id = ?")
        self.range_set_last = q("UPDATE free_ranges SET last_off = ? WHERE id = ?")
        self.range_insert = q(
            "INSERT INTO free_ranges (subnet_id, first_off, last_off) VALUES (?, ?, ?)")
        self.insert_address = q(f"INSERT INTO addresses ({', '.join(_ADDR_COLS)}) VALUES "
                                f"({', '.join('?' * len(_ADDR_COLS))})")
        self.delete_address = q('DELETE FROM addresses WHERE subnet_id = ? AND "offset" = ?')
        self.address_state = q('SELECT state, port_id FROM addresses WHERE subnet_id = ?'
                               ' AND "offset" = ?')
        self.quarantine = q("UPDATE addresses SET state = ?, port_id = NULL, free_at = ?"
                            " WHERE port_id = ?")
        self.delete_port_addresses = q('DELETE FROM addresses WHERE port_id = ?'
                                       ' RETURNING subnet_id, "offset"')
        # The state as a literal, so the partial index ix_addresses_quarantine applies.
        self.expired_quarantine = q('SELECT subnet_id, "offset" FROM addresses'
                                    " WHERE state = 'quarantined' AND free_at <= ?"
                                    " ORDER BY free_at LIMIT ?" + skip)
        self.add_outbox = q(
            "INSERT INTO outbox (kind, object_id, op, payload, created_at, attempts,"
            " next_attempt_at, last_error, failed) VALUES (?, ?, ?, ?, ?, 0, ?, '', false)")
        self.active_endpoints = q(
            "SELECT p.id, p.mac, p.node, a.ip FROM ports p LEFT JOIN addresses a"
            " ON a.port_id = p.id WHERE p.state = 'active' ORDER BY p.id")
        self.add_released = q(
            "INSERT INTO released (kind, object_id, released_at) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, object_id) DO UPDATE SET released_at = excluded.released_at")
        self.forget_released = q("DELETE FROM released WHERE kind = ? AND object_id = ?")


_STATEMENTS = {False: _Statements(False), True: _Statements(True)}


def _port_from_rows(rows: Sequence[Any]) -> Port | None:
    """One port from the rows of `port_select` (one row per address, or one with NULLs)."""
    if not rows:
        return None
    r = rows[0]
    addrs = sorted((PortAddress(x[16], x[17], int(x[18])) for x in rows if x[16] is not None),
                   key=lambda a: (":" in a.ip, a.ip))
    return Port(id=r[0], pool_id=r[1], mac=r[2], state=PortState(r[3]), generation=int(r[4]),
                addresses=tuple(addrs), owner=r[5], container_id=r[6], ifname=r[7],
                pod_uid=r[8], pod_namespace=r[9], pod_name=r[10], node=r[11], netns=r[12],
                hostname=r[13], created_at=r[14], updated_at=r[15])


def _port_params(port: Port) -> tuple[Any, ...]:
    return (port.id, port.pool_id, port.mac, port.state.value, port.generation, port.owner,
            port.container_id, port.ifname, port.pod_uid, port.pod_namespace, port.pod_name,
            port.node, port.netns, port.hostname, port.created_at, port.updated_at)


class _SqlUow:
    def __init__(self, conn: Connection, postgres: bool) -> None:
        self.c = conn
        self.pg = postgres
        self.q = _STATEMENTS[postgres]
        # The DBAPI connection under `conn`: the same transaction, without Core's overhead.
        self.raw = _driver(conn)

    def _x(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.raw.execute(sql, params)

    # --------------------------------------------------------- configuration
    def config_generation(self) -> int:
        row = self._x(self.q.config_generation).fetchone()
        return int(row[0]) if row else 0

    def begin_config_change(self) -> None:
        if self._x(self.q.bump_config).rowcount == 0:
            self._x(self.q.seed_config)  # the row the migration seeds went missing

    # ----------------------------------------------------------------- pools
    @staticmethod
    def _pool(row: Any) -> Pool:
        return Pool(id=row.id, name=row.name, policy=Policy(row.policy),
                    quarantine_seconds=row.quarantine_seconds,
                    retention_seconds=row.retention_seconds, mtu=row.mtu,
                    product_type=row.product_type, group=row.group_name,
                    network_id=row.network_id, segmentation_id=row.segmentation_id)

    def insert_pool(self, pool: Pool) -> None:
        self.begin_config_change()
        self.c.execute(insert(t.pools).values(
            id=pool.id, name=pool.name, policy=pool.policy.value,
            quarantine_seconds=pool.quarantine_seconds,
            retention_seconds=pool.retention_seconds, mtu=pool.mtu,
            product_type=pool.product_type, group_name=pool.group,
            network_id=pool.network_id, segmentation_id=pool.segmentation_id))

    def get_pool(self, name: str) -> Pool | None:
        row = self.c.execute(select(t.pools).where(t.pools.c.name == name)).first()
        return self._pool(row) if row else None

    def get_pool_by_id(self, pool_id: str) -> Pool | None:
        row = self.c.execute(select(t.pools).where(t.pools.c.id == pool_id)).first()
        return self._pool(row) if row else None

    def list_pools(self) -> list[Pool]:
        return [self._pool(r) for r in self.c.execute(select(t.pools).order_by(t.pools.c.name))]

    def delete_pool(self, pool_id: str) -> None:
        self.begin_config_change()
        self.c.execute(delete(t.namespace_defaults)
                       .where(t.namespace_defaults.c.pool_id == pool_id))
        self.c.execute(delete(t.pools).where(t.pools.c.id == pool_id))

    def set_namespace_default(self, namespace: str, pool_id: str | None) -> None:
        self.begin_config_change()
        self.c.execute(delete(t.namespace_defaults)
                       .where(t.namespace_defaults.c.namespace == namespace))
        if pool_id is not None:
            self.c.execute(insert(t.namespace_defaults).values(namespace=namespace,
                                                               pool_id=pool_id))

    def namespace_default(self, namespace: str) -> str | None:
        row = self.c.execute(
            select(t.pools.c.name).join(t.namespace_defaults,
                                        t.namespace_defaults.c.pool_id == t.pools.c.id)
            .where(t.namespace_defaults.c.namespace == namespace)).first()
        return row.name if row else None

    def namespace_defaults(self) -> dict[str, str]:
        return {r.namespace: r.name for r in self.c.execute(
            select(t.namespace_defaults.c.namespace, t.pools.c.name)
            .join(t.pools, t.namespace_defaults.c.pool_id == t.pools.c.id))}

    # --------------------------------------------------------------- subnets
    @staticmethod
    def _subnet(row: Any) -> Subnet:
        return Subnet(id=row.id, pool_id=row.pool_id, cidr=row.cidr, version=row.version,
                      gateway=row.gateway, excludes=tuple(json.loads(row.excludes)))

    def insert_subnet(self, subnet: Subnet, free: list[tuple[int, int]]) -> None:
        self.begin_config_change()
        net = addr.parse_network(subnet.cidr)
        self.c.execute(insert(t.subnets).values(
            id=subnet.id, pool_id=subnet.pool_id, cidr=subnet.cidr, version=subnet.version,
            gateway=subnet.gateway, excludes=json.dumps(list(subnet.excludes)),
            total=addr.total_addresses(net)))
        if free:
            self.c.execute(insert(t.free_ranges), [
                {"subnet_id": subnet.id, "first_off": lo, "last_off": hi} for lo, hi in free])

    def list_subnets(self, pool_id: str | None = None) -> list[Subnet]:
        q = select(t.subnets).order_by(t.subnets.c.version, t.subnets.c.cidr)
        if pool_id is not None:
            q = q.where(t.subnets.c.pool_id == pool_id)
        return [self._subnet(r) for r in self.c.execute(q)]

    def get_subnet(self, subnet_id: str) -> Subnet | None:
        row = self.c.execute(select(t.subnets).where(t.subnets.c.id == subnet_id)).first()
        return self._subnet(row) if row else None

    def delete_subnet(self, subnet_id: str) -> None:
        self.begin_config_change()
        self.c.execute(delete(t.addresses).where(t.addresses.c.subnet_id == subnet_id))
        self.c.execute(delete(t.free_ranges).where(t.free_ranges.c.subnet_id == subnet_id))
        self.c.execute(delete(t.subnets).where(t.subnets.c.id == subnet_id))

    def subnet_has_ports(self, subnet_id: str) -> bool:
        return bool(self.c.execute(select(exists().where(and_(
            t.addresses.c.subnet_id == subnet_id, t.addresses.c.port_id.is_not(None)))))
            .scalar())

    def subnet_usage(self, subnet: Subnet) -> Usage:
        total = self.c.execute(select(t.subnets.c.total)
                               .where(t.subnets.c.id == subnet.id)).scalar_one()
        free = self.c.execute(
            select(func.coalesce(func.sum(t.free_ranges.c.last_off
                                          - t.free_ranges.c.first_off + 1), 0))
            .where(t.free_ranges.c.subnet_id == subnet.id)).scalar_one()
        counts: dict[str, int] = dict(self.c.execute(  # type: ignore[arg-type]
            select(t.addresses.c.state, func.count())
            .where(t.addresses.c.subnet_id == subnet.id)
            .group_by(t.addresses.c.state)).all())
        bound = self.c.execute(
            select(func.count()).select_from(t.addresses.join(
                t.ports, t.ports.c.id == t.addresses.c.port_id))
            .where(and_(t.addresses.c.subnet_id == subnet.id,
                        t.ports.c.state == PortState.IDLE.value))).scalar_one()
        used = int(counts.get(AddressState.ALLOCATED.value, 0))
        quarantined = int(counts.get(AddressState.QUARANTINED.value, 0))
        free = int(free)
        return Usage(total=int(total), used=used,
                     reserved=int(total) - free - used - quarantined,
                     quarantined=quarantined, free=free, bound=int(bound))

    # ------------------------------------------------------------- addresses
    def take_free(self, subnet_id: str) -> int | None:
        row = self._x(self.q.take_lowest, (subnet_id,)).fetchone()
        if row is not None:
            return int(row[0])
        # The lowest range holds one offset, the subnet is full, or (PostgreSQL) other
        # allocators hold every range right now.
        rng = None
        if self.pg:
            rng = self._x(self.q.lowest_range_skip, (subnet_id,)).fetchone()
        if rng is None:
            # Wait for the ranges others hold before calling the subnet full.
            rng = self._x(self.q.lowest_range, (subnet_id,)).fetchone()
            if rng is None and self.pg and self._x(self.q.any_free, (subnet_id,)).fetchone():
                raise Busy("free range changed under us")
        if rng is None:
            return None
        self._shrink(subnet_id, rng[0], rng[1], rng[2], rng[1])
        return int(rng[1])

    def _shrink(self, subnet_id: str, range_id: int, lo: int, hi: int, offset: int) -> None:
        """Remove `offset` from the range [lo, hi], conditional on it being unchanged."""
        cond = (range_id, lo, hi)
        if lo == hi:
            res = self._x(self.q.range_delete_if, cond)
        elif offset == lo:
            res = self._x(self.q.range_set_first_if, (lo + 1, *cond))
        elif offset == hi:
            res = self._x(self.q.range_set_last_if, (hi - 1, *cond))
        else:
            res = self._x(self.q.range_set_last_if, (offset - 1, *cond))
            if res.rowcount == 1:
                self._x(self.q.range_insert, (subnet_id, offset + 1, hi))
        if res.rowcount != 1:
            raise Busy("free range changed under us")

    def take_specific(self, subnet_id: str, offset: int) -> bool:
        row = self._x(self.q.range_containing, (subnet_id, offset)).fetchone()
        if row is None or row[2] < offset:
            return False
        self._shrink(subnet_id, row[0], row[1], row[2], offset)
        return True

    def give_back(self, subnet_id: str, offset: int) -> None:
        left = self._x(self.q.range_ending_at, (subnet_id, offset - 1)).fetchone()
        right = self._x(self.q.range_starting_at, (subnet_id, offset + 1)).fetchone()
        if left and right:
            self._x(self.q.range_delete, (right[0],))
            self._x(self.q.range_set_last, (right[1], left[0]))
        elif left:
            self._x(self.q.range_set_last, (offset, left[0]))
        elif right:
            self._x(self.q.range_set_first, (offset, right[0]))
        else:
            self._x(self.q.range_insert, (subnet_id, offset, offset))

    def insert_address(self, subnet_id: str, offset: int, ip: str, state: AddressState,
                       port_id: str | None, generation: int, free_at: float = 0.0,
                       note: str = "") -> None:
        self._x(self.q.insert_address,
                (subnet_id, offset, ip, state.value, port_id, generation, free_at, note))

    def delete_address(self, subnet_id: str, offset: int) -> None:
        self._x(self.q.delete_address, (subnet_id, offset))

    def address_state(self, subnet_id: str, offset: int) -> tuple[AddressState, str | None] | None:
        row = self._x(self.q.address_state, (subnet_id, offset)).fetchone()
        return (AddressState(row[0]), row[1]) if row else None

    def quarantine_port_addresses(self, port_id: str, free_at: float) -> None:
        self._x(self.q.quarantine, (AddressState.QUARANTINED.value, free_at, port_id))

    def delete_port_addresses(self, port_id: str) -> list[tuple[str, int]]:
        return [(r[0], int(r[1]))
                for r in self._x(self.q.delete_port_addresses, (port_id,)).fetchall()]

    def expired_quarantine(self, now: float, limit: int) -> list[tuple[str, int]]:
        rows = self._x(self.q.expired_quarantine, (now, limit)).fetchall()
        return [(r[0], int(r[1])) for r in rows]

    # ----------------------------------------------------------------- ports
    def _ports(self, rows: Sequence[Any]) -> list[Port]:
        if not rows:
            return []
        ids = [r.id for r in rows]
        by_port: dict[str, list[PortAddress]] = {i: [] for i in ids}
        for a in self.c.execute(select(t.addresses.c.port_id, t.addresses.c.subnet_id,
                                       t.addresses.c.ip, t.addresses.c.offset)
                                .where(t.addresses.c.port_id.in_(ids))):
            by_port[a.port_id].append(PortAddress(a.subnet_id, a.ip, int(a.offset)))
        return [Port(id=r.id, pool_id=r.pool_id, mac=r.mac, state=PortState(r.state),
                     generation=int(r.generation),
                     addresses=tuple(sorted(by_port[r.id], key=lambda a: (":" in a.ip, a.ip))),
                     owner=r.owner, container_id=r.container_id, ifname=r.ifname,
                     pod_uid=r.pod_uid, pod_namespace=r.pod_namespace, pod_name=r.pod_name,
                     node=r.node, netns=r.netns, hostname=r.hostname,
                     created_at=r.created_at, updated_at=r.updated_at) for r in rows]

    def insert_port(self, port: Port) -> bool:
        # ON CONFLICT names only the MAC: a duplicate request or owner still raises (and the
        # retry sees the winner's row).
        return bool(self._x(self.q.insert_port, _port_params(port)).rowcount == 1)

    def update_port(self, port: Port, expect_generation: int) -> bool:
        params = _port_params(port)
        res = self._x(self.q.update_port, (*params[1:], port.id, expect_generation))
        if res.rowcount != 1:
            return False
        self._x(self.q.address_generation, (port.generation, port.id))
        return True

    def delete_port(self, port_id: str, expect_generation: int) -> bool:
        return bool(self._x(self.q.delete_port, (port_id, expect_generation)).rowcount == 1)

    def port_by_request(self, container_id: str, ifname: str) -> Port | None:
        return _port_from_rows(
            self._x(self.q.port_by_request, (container_id, ifname)).fetchall())

    def port_by_owner(self, pool_id: str, owner: str) -> Port | None:
        return _port_from_rows(self._x(self.q.port_by_owner, (pool_id, owner)).fetchall())

    def get_port(self, port_id: str) -> Port | None:
        return _port_from_rows(self._x(self.q.port_by_id, (port_id,)).fetchall())

    def list_ports(self, flt: PortFilter) -> list[Port]:
        q = select(t.ports).order_by(t.ports.c.created_at, t.ports.c.id).limit(flt.limit)
        if flt.pool_id is not None:
            q = q.where(t.ports.c.pool_id == flt.pool_id)
        if flt.node is not None:
            q = q.where(t.ports.c.node == flt.node)
        if flt.state is not None:
            q = q.where(t.ports.c.state == flt.state.value)
        return self._ports(self.c.execute(q).all())

    def idle_ports_before(self, pool_id: str, cutoff: float, limit: int) -> list[Port]:
        # The state as a literal, so the partial index ix_ports_idle applies.
        q = (select(t.ports).where(and_(t.ports.c.pool_id == pool_id, t.IDLE,
                                        t.ports.c.updated_at <= cutoff)).limit(limit))
        if self.pg:
            q = q.with_for_update(skip_locked=True)
        return self._ports(self.c.execute(q).all())

    def mac_in_use(self, mac: str) -> bool:
        return bool(self.c.execute(select(exists().where(t.ports.c.mac == mac))).scalar())

    # ---------------------------------------------------------------- outbox
    def add_outbox(self, kind: str, object_id: str, op: str,
                   payload: dict[str, Any] | None, now: float) -> None:
        self._x(self.q.add_outbox, (kind, object_id, op,
                                    json.dumps(payload) if payload is not None else None,
                                    now, now))

    def active_endpoints(self) -> list[tuple[str, str, str, str | None]]:
        return [tuple(r) for r in self._x(self.q.active_endpoints).fetchall()]  # type: ignore[misc]

    # ------------------------------------------------------ released objects
    def add_released(self, kind: str, object_id: str, now: float) -> None:
        self._x(self.q.add_released, (kind, object_id, now))

    def forget_released(self, kind: str, object_id: str) -> None:
        self._x(self.q.forget_released, (kind, object_id))

    def list_released(self, since: float | None = None) -> list[tuple[str, str]]:
        r = t.released.c
        q = select(r.kind, r.object_id).order_by(r.kind, r.object_id)
        if since is not None:
            q = q.where(r.released_at >= since)
        return [(row.kind, row.object_id) for row in self.c.execute(q)]

    def prune_released(self, before: float) -> int:
        res = self.c.execute(delete(t.released).where(t.released.c.released_at < before))
        return int(res.rowcount or 0)

    # ----------------------------------------------------------------- nodes
    def upsert_node(self, node: Node) -> None:
        values = dict(underlay_ip=node.underlay_ip, gateway=node.gateway,
                      datapath=node.datapath, gateway_cidrs=json.dumps(list(node.gateway_cidrs)),
                      last_seen=node.last_seen)
        res = self.c.execute(update(t.nodes).where(t.nodes.c.name == node.name).values(**values))
        if res.rowcount == 0:
            self.c.execute(insert(t.nodes).values(name=node.name, **values))

    def list_nodes(self) -> list[Node]:
        return [Node(name=r.name, underlay_ip=r.underlay_ip, gateway=bool(r.gateway),
                     datapath=r.datapath, last_seen=r.last_seen,
                     gateway_cidrs=tuple(json.loads(r.gateway_cidrs)))
                for r in self.c.execute(select(t.nodes).order_by(t.nodes.c.name))]

    def delete_node(self, name: str) -> bool:
        return self.c.execute(delete(t.nodes).where(t.nodes.c.name == name)).rowcount == 1


class SqlStore:
    """Owns the engine; one transaction per `transaction()` block."""

    def __init__(self, url: str, *, migrate: bool = True, pool_size: int = 8) -> None:
        self.url = url
        self.postgres = url.startswith("postgresql")
        self.sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.postgres:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **kwargs)
        self._dbapi: Any = self.engine.dialect.loaded_dbapi
        self._driver_error: type[Exception] = self._dbapi.Error
        # SQLite has one writer; taking it in-process first avoids busy-waiting on the file
        # lock, and BEGIN IMMEDIATE avoids read-to-write upgrade deadlocks across processes.
        self._write_lock = threading.Lock() if self.sqlite else None
        # ...and every write goes through one long-lived connection. In WAL mode a connection
        # drops its whole page cache whenever another connection wrote since its last
        # transaction, so writes spread over a pool would each start cold (measured: ~3x the
        # CPU per allocation under concurrent load); the one writer keeps its cache warm.
        self._writer: Connection | None = None
        if self.sqlite:
            self._setup_sqlite()
        if migrate:
            from ..migrate import upgrade
            upgrade(self.engine)

    def _setup_sqlite(self) -> None:
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.info.get("ecnet_begin", "DEFERRED")
            _driver(conn).execute(f"BEGIN {mode}")

    def _sqlite_writer(self) -> Connection:
        """The one write connection (created again if an error invalidated it)."""
        w = self._writer
        if w is not None and not (w.closed or w.invalidated) and _driver(w).in_transaction:
            w.invalidate()   # left inside a transaction somehow: never build on that
        if w is None or w.closed or w.invalidated:
            w = self.engine.connect()
            w.info["ecnet_begin"] = "IMMEDIATE"
            # Room for the hot index pages of a large pool (allocated as used, not upfront).
            _driver(w).execute("PRAGMA cache_size=-65536")
            self._writer = w
        return w

    @contextmanager
    def _tx(self, write: bool) -> Iterator[_SqlUow]:
        if write and self._write_lock is not None:
            with self._write_lock:
                writer = self._sqlite_writer()
                try:
                    with self._in_tx(writer) as uow:
                        yield uow
                except BaseException:
                    # A failed rollback must not leave the one writer inside a transaction
                    # (every later BEGIN would fail): drop it, the next write opens another.
                    if writer.invalidated or _driver(writer).in_transaction:
                        writer.invalidate()
                        self._writer = None
                    raise
            return
        with self.engine.connect() as conn:
            if self.sqlite:
                conn.info["ecnet_begin"] = "DEFERRED"
            with self._in_tx(conn) as uow:
                yield uow

    @contextmanager
    def _in_tx(self, conn: Connection) -> Iterator[_SqlUow]:
        """One transaction on `conn`; contention of any kind becomes `Busy`."""
        try:
            with conn.begin():
                yield _SqlUow(conn, self.postgres)
        except DBAPIError as exc:
            if _is_transient(exc):
                raise Busy(f"database contention: {exc.orig}") from exc
            raise
        except self._driver_error as exc:
            # Raised by the raw statements of the pod path, which Core never saw.
            if getattr(_driver(conn), "broken", False):
                conn.invalidate(exc)
                raise Busy(f"database connection lost: {exc}") from exc
            if _is_transient_driver(exc, self._dbapi):
                raise Busy(f"database contention: {exc}") from exc
            raise

    def transaction(self) -> Any:
        return self._tx(True)

    def read(self) -> Any:
        return self._tx(False)

    # ------------------------------------------------- outbox (for the sync worker)
    def outbox_claim(self, limit: int, now: float) -> list[OutboxRow]:
        o, p = t.outbox, t.outbox.alias("p")
        older = exists().where(and_(p.c.kind == o.c.kind, p.c.object_id == o.c.object_id,
                                    p.c.id < o.c.id))
        q = (select(o).where(and_(o.c.next_attempt_at <= now, ~older))
             .order_by(o.c.id).limit(limit))
        with self._tx(False) as uow:
            rows = uow.c.execute(q).all()
        return [OutboxRow(r.id, r.kind, r.object_id, r.op,
                          json.loads(r.payload) if r.payload else None, r.attempts,
                          r.next_attempt_at, r.created_at, r.last_error, bool(r.failed))
                for r in rows]

    def outbox_pending_ids(self, kind: str, ids: Sequence[str] | None = None) -> set[str]:
        """Ids of `kind` with pending rows (among `ids`, if given), without reading the rows:
        a resync asks once per chunk, while a backlog may be large."""
        o = t.outbox.c
        q = select(o.object_id).where(o.kind == kind).distinct()
        if ids is not None:
            q = q.where(o.object_id.in_(list(ids)))
        with self._tx(False) as uow:
            return {r[0] for r in uow.c.execute(q)}

    def outbox_rows(self) -> list[OutboxRow]:
        """Every pending row in order (status views and tests)."""
        with self._tx(False) as uow:
            rows = uow.c.execute(select(t.outbox).order_by(t.outbox.c.id)).all()
        return [OutboxRow(r.id, r.kind, r.object_id, r.op,
                          json.loads(r.payload) if r.payload else None, r.attempts,
                          r.next_attempt_at, r.created_at, r.last_error, bool(r.failed))
                for r in rows]

    def outbox_complete(self, item_id: int) -> None:
        with self._tx(True) as uow:
            uow.c.execute(delete(t.outbox).where(t.outbox.c.id == item_id))

    def outbox_retry_later(self, item_id: int, error: str, next_attempt_at: float,
                           failed: bool) -> None:
        with self._tx(True) as uow:
            uow.c.execute(update(t.outbox).where(t.outbox.c.id == item_id).values(
                attempts=t.outbox.c.attempts + 1, last_error=error[:2000],
                next_attempt_at=next_attempt_at, failed=failed))

    def outbox_stats(self, now: float) -> tuple[int, int, float | None, str]:
        with self._tx(False) as uow:
            pending, failed, oldest = uow.c.execute(select(
                func.count(), func.coalesce(func.sum(
                    func.cast(t.outbox.c.failed, t.outbox.c.attempts.type)), 0),
                func.min(t.outbox.c.created_at))).one()
            last = uow.c.execute(select(t.outbox.c.last_error)
                                 .where(t.outbox.c.last_error != "")
                                 .order_by(t.outbox.c.id.desc()).limit(1)).scalar()
        return int(pending), int(failed), (now - oldest) if oldest is not None else None, \
            last or ""

    def acquire_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """One replica drains the outbox; the lease lives in the database it drains."""
        with self._tx(True) as uow:
            res = uow.c.execute(update(t.leases).where(and_(
                t.leases.c.name == name,
                or_(t.leases.c.holder == holder, t.leases.c.expires_at < now)))
                .values(holder=holder, expires_at=now + ttl))
            if res.rowcount == 1:
                return True
            if uow.c.execute(select(t.leases.c.holder).where(t.leases.c.name == name)).first():
                return False
            try:
                with uow.c.begin_nested():
                    uow.c.execute(insert(t.leases).values(name=name, holder=holder,
                                                          expires_at=now + ttl))
            except IntegrityError:
                return False
            return True

    def lease_holder(self, name: str, now: float) -> str:
        with self._tx(False) as uow:
            row = uow.c.execute(select(t.leases).where(t.leases.c.name == name)).first()
        return row.holder if row and row.expires_at >= now else ""

    def get_state(self, key: str) -> str | None:
        with self._tx(False) as uow:
            return uow.c.execute(select(t.sync_state.c.value)
                                 .where(t.sync_state.c.key == key)).scalar()

    def set_state(self, key: str, value: str) -> None:
        with self._tx(True) as uow:
            res = uow.c.execute(update(t.sync_state).where(t.sync_state.c.key == key)
                                .values(value=value))
            if res.rowcount == 0:
                uow.c.execute(insert(t.sync_state).values(key=key, value=value))

    def close(self) -> None:
        if self._write_lock is not None:
            with self._write_lock:
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
        self.engine.dispose()
