"""One SQL transaction as the store protocol's `UnitOfWork`.

The pod path's primitives run the hand-written statements (statements.py) on the
transaction's DBAPI connection; admin paths stay on SQLAlchemy Core. Both run in the same
transaction. On PostgreSQL the lookups that lead to a write lock their rows, and taking a free
range skips rows other allocators hold (`FOR UPDATE SKIP LOCKED`); every conditional change
that finds its row changed raises `Busy`, which the caller retries.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, func, insert, or_, select, update

from ... import addr, changes
from ...domain import (
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
from ...errors import Busy
from .. import schema as t
from ..base import PortFilter
from .statements import STATEMENTS, port_from_rows, port_params

# The transaction's BEGIN when it is ours (begin_later), and psycopg's "no transaction" status.
_BEGIN: tuple[str, tuple[Any, ...]] = ("BEGIN", ())
_IDLE = 0   # libpq PQTRANS_IDLE (psycopg is an extra: not imported for SQLite)

# Reads of a free range that other takers keep changing before `take_specific` calls it Busy
# (the caller retries the whole transaction).
RANGE_REREADS = 4


def driver_connection(conn: Connection) -> Any:
    """The DBAPI connection (sqlite3 / psycopg) under a Core connection."""
    return conn.connection.driver_connection


class SqlUnitOfWork:
    """The store protocol's primitives inside one transaction on `conn`."""

    def __init__(self, conn: Connection, postgres: bool,
                 as_busy: Callable[[BaseException], Busy | None] = lambda exc: None) -> None:
        self.c = conn
        self.pg = postgres
        self.q = STATEMENTS[postgres]
        # The DBAPI connection under `conn`: the same transaction, without Core's overhead.
        self.raw = driver_connection(conn)
        # Change-log rows of this transaction, written by `finish` just before commit.
        self.changes: list[changes.Change] = []
        self._as_busy = as_busy   # the engine's reading of a database error (engine.py)
        self._savepoints = 0
        self.lost = False         # a savepoint could not be rolled back (engine.py)
        self.logged = False       # change-log rows written (engine.py tells the tailers)
        # PostgreSQL: statements whose answer nobody waits for, sent with the next one that
        # needs an answer (`_later`).
        self._queued: list[tuple[str, tuple[Any, ...]]] = []
        self._own_begin = False   # the BEGIN is ours (begin_later), not the driver's
        self._batch_cursor: Any = None

    def _x(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """Run a statement whose answer the caller needs (and whatever is queued before it)."""
        if self._queued:
            return self.send_queued((sql, params))
        cur = self.raw.execute(sql, params)
        self._check_inside(sql)
        return cur

    def begin_later(self) -> None:
        """The transaction's BEGIN, queued: it goes with the first statement (engine.py)."""
        self._own_begin = True
        self._queued.append(_BEGIN)

    def _check_inside(self, sql: str) -> None:
        """After `sql` ran: with our own BEGIN, the server must be inside a transaction."""
        if self._own_begin and self.raw.pgconn.transaction_status == _IDLE:
            # Only a bug gets here (a statement sent around the queue, so before the
            # BEGIN): it committed on its own. Never go on as if the transaction held it.
            raise RuntimeError(f"statement ran outside the transaction: {sql[:60]!r}")

    def _later(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run a statement whose answer nobody needs (a write checked by the constraints, a
        savepoint, the change log): on PostgreSQL it waits and goes with the next statement
        that needs an answer, or with the COMMIT, in one round trip, and a failure of it is
        raised there. A round trip is the pod path's cost on PostgreSQL (docs/performance.md
        "IPAM at scale"). SQLite has none: it runs now."""
        if self.pg:
            self._queued.append((sql, params))
        else:
            self.raw.execute(sql, params)

    def send_queued(self, last: tuple[str, tuple[Any, ...]] | None = None) -> Any:
        """Send the queued statements, then `last`, in one round trip; a cursor on `last`'s
        result. One simple-protocol message of several statements, their parameters bound by
        psycopg on the client: measured against psycopg's pipeline mode (the same statements
        server-bound), it takes half the client CPU and less time (pipeline mode was slower
        than sending them one by one). The server runs them in order and stops at the first
        failure, which is raised (the transaction is then aborted)."""
        queued, self._queued = self._queued, []
        if not queued:
            return None if last is None else self.raw.execute(*last)
        if last is not None:
            queued.append(last)
        if self._batch_cursor is None:
            from psycopg import ClientCursor
            self._batch_cursor = ClientCursor(self.raw)
        cur = self._batch_cursor
        cur.execute("; ".join(sql for sql, _ in queued),
                    tuple(p for _, params in queued for p in params))
        while cur.nextset():   # to the last statement's result
            pass
        if queued[-1][0] != "COMMIT":
            self._check_inside(queued[-1][0])
        return cur

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self._savepoints += 1
        name = f"ecnet_sp{self._savepoints}"
        mark = len(self.changes)
        if self._queued and self._queued != [_BEGIN]:
            try:
                self.send_queued()   # what came before is not this block's to answer for
            except BaseException:
                self.lost = True     # an earlier block's write failed after its answer
                raise
        opened: tuple[str, tuple[Any, ...]] = (f"SAVEPOINT {name}", ())
        before = len(self._queued)   # a queued BEGIN (the transaction's first block) stays
        if self.pg:
            self._queued.append(opened)   # goes with the block's first statement
        else:
            self._x(*opened)
        try:
            yield
            # The block's queued writes go with the release: a failure among them is still
            # this block's own, undone below.
            self._x(f"RELEASE SAVEPOINT {name}")
        except BaseException as exc:
            never_sent = len(self._queued) > before and self._queued[before] is opened
            # The block's own statements, not sent: dropped (the BEGIN before them stays).
            self._queued = self._queued[:before] if never_sent else []
            # A failed statement leaves a PostgreSQL transaction usable again only after
            # ROLLBACK TO; if that fails too (the connection is gone) the whole transaction
            # fails, and its caller learns it from that error.
            if not never_sent:   # else nothing of the block reached the database
                try:
                    self._x(f"ROLLBACK TO SAVEPOINT {name}")
                    self._later(f"RELEASE SAVEPOINT {name}")
                except BaseException:
                    self.lost = True   # the block's writes may remain: commit nothing
                    raise
            del self.changes[mark:]
            busy = self._as_busy(exc) if isinstance(exc, Exception) else None
            if busy is not None:
                raise busy from exc
            raise

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
                self._later(self.q.range_insert, (subnet_id, offset + 1, hi))
        if res.rowcount != 1:
            raise Busy("free range changed under us")

    def take_specific(self, subnet_id: str, offset: int) -> bool:
        row = self._x(self.q.range_containing, (subnet_id, offset)).fetchone()
        # PostgreSQL (READ COMMITTED): when the lock waited for another taker of the same
        # range, the row is its new version, but the range that taker split off is not in
        # this statement's snapshot. A new statement sees it: read again until two reads
        # agree, so a free address is never called "not allocatable".
        for _ in range(RANGE_REREADS if self.pg else 0):
            if row is not None and row[2] >= offset:
                break
            again = self._x(self.q.range_containing, (subnet_id, offset)).fetchone()
            if again == row:
                break
            row = again
        else:
            if self.pg and (row is None or row[2] < offset):
                raise Busy("free range changed under us")
        if row is None or row[2] < offset:
            return False
        self._shrink(subnet_id, row[0], row[1], row[2], offset)
        return True

    def give_back(self, subnet_id: str, offset: int) -> None:
        left = self._x(self.q.range_ending_at, (subnet_id, offset - 1)).fetchone()
        right = self._x(self.q.range_starting_at, (subnet_id, offset + 1)).fetchone()
        if left and right:
            self._later(self.q.range_delete, (right[0],))
            self._later(self.q.range_set_last, (right[1], left[0]))
        elif left:
            self._later(self.q.range_set_last, (offset, left[0]))
        elif right:
            self._later(self.q.range_set_first, (offset, right[0]))
        else:
            self._later(self.q.range_insert, (subnet_id, offset, offset))

    def insert_address(self, subnet_id: str, offset: int, ip: str, state: AddressState,
                       port_id: str | None, generation: int, free_at: float = 0.0,
                       note: str = "") -> None:
        self._later(self.q.insert_address,
                    (subnet_id, offset, ip, state.value, port_id, generation, free_at, note))

    def delete_address(self, subnet_id: str, offset: int) -> bool:
        # On PostgreSQL a second deleter waits for the first one's row lock, then finds the
        # row gone: rowcount 0 is how it learns the address is not its to give back.
        return bool(self._x(self.q.delete_address, (subnet_id, offset)).rowcount == 1)

    def address_state(self, subnet_id: str, offset: int) -> tuple[AddressState, str | None] | None:
        row = self._x(self.q.address_state, (subnet_id, offset)).fetchone()
        return (AddressState(row[0]), row[1]) if row else None

    def quarantine_port_addresses(self, port_id: str, free_at: float) -> None:
        self._later(self.q.quarantine, (AddressState.QUARANTINED.value, free_at, port_id))

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
        return bool(self._x(self.q.insert_port, port_params(port)).rowcount == 1)

    def update_port(self, port: Port, expect_generation: int) -> bool:
        params = port_params(port)
        res = self._x(self.q.update_port, (*params[1:], port.id, expect_generation))
        if res.rowcount != 1:
            return False
        self._later(self.q.address_generation, (port.generation, port.id))
        return True

    def delete_port(self, port_id: str, expect_generation: int) -> bool:
        return bool(self._x(self.q.delete_port, (port_id, expect_generation)).rowcount == 1)

    def port_by_request(self, container_id: str, ifname: str) -> Port | None:
        return port_from_rows(
            self._x(self.q.port_by_request, (container_id, ifname)).fetchall())

    def port_by_owner(self, pool_id: str, owner: str) -> Port | None:
        return port_from_rows(self._x(self.q.port_by_owner, (pool_id, owner)).fetchall())

    def get_port(self, port_id: str) -> Port | None:
        return port_from_rows(self._x(self.q.port_by_id, (port_id,)).fetchall())

    def list_ports(self, flt: PortFilter) -> list[Port]:
        q = select(t.ports).order_by(t.ports.c.created_at, t.ports.c.id).limit(flt.limit)
        if flt.pool_id is not None:
            q = q.where(t.ports.c.pool_id == flt.pool_id)
        if flt.node is not None:
            q = q.where(t.ports.c.node == flt.node)
        if flt.state is not None:
            q = q.where(t.ports.c.state == flt.state.value)
        if flt.after is not None:
            at, pid = flt.after
            q = q.where(or_(t.ports.c.created_at > at,
                            and_(t.ports.c.created_at == at, t.ports.c.id > pid)))
        return self._ports(self.c.execute(q).all())

    def port_nodes(self) -> set[str]:
        return {row[0] or "" for row in self.c.execute(
            select(t.ports.c.node).where(t.ports.c.state == PortState.ACTIVE.value).distinct())}

    def idle_ports_before(self, pool_id: str, cutoff: float, limit: int) -> list[Port]:
        # The state as a literal, so the partial index ix_ports_idle applies.
        q = (select(t.ports).where(and_(t.ports.c.pool_id == pool_id, t.IDLE,
                                        t.ports.c.updated_at <= cutoff)).limit(limit))
        if self.pg:
            q = q.with_for_update(skip_locked=True)
        return self._ports(self.c.execute(q).all())

    # ---------------------------------------------------------------- outbox
    def add_outbox(self, kind: str, object_id: str, op: str,
                   payload: dict[str, Any] | None, now: float) -> None:
        self._later(self.q.add_outbox, (kind, object_id, op,
                                    json.dumps(payload) if payload is not None else None,
                                    now, now))

    def supersede_outbox(self, kind: str, object_id: str) -> None:
        # A row the worker is applying right now may go too: its call still lands, and the
        # row added next (newer, later id) is sent after it.
        self._later(self.q.supersede_outbox, (kind, object_id))

    def active_endpoints(self) -> list[tuple[str, str, str, str | None]]:
        return [r[:4] for r in self.watch_endpoints()]

    # ------------------------------------------------------ released objects
    def add_released(self, kind: str, object_id: str, now: float) -> None:
        self._later(self.q.add_released, (kind, object_id, now))

    def forget_released(self, kind: str, object_id: str) -> None:
        self._later(self.q.forget_released, (kind, object_id))

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
                      last_seen=node.last_seen, ready=node.ready)
        res = self.c.execute(update(t.nodes).where(t.nodes.c.name == node.name).values(**values))
        if res.rowcount == 0:
            self.c.execute(insert(t.nodes).values(name=node.name, **values))

    @staticmethod
    def _node(r: Any) -> Node:
        return Node(name=r.name, underlay_ip=r.underlay_ip, gateway=bool(r.gateway),
                    datapath=r.datapath, last_seen=r.last_seen,
                    gateway_cidrs=tuple(json.loads(r.gateway_cidrs)), ready=bool(r.ready))

    def list_nodes(self) -> list[Node]:
        return [self._node(r) for r in self.c.execute(select(t.nodes).order_by(t.nodes.c.name))]

    def get_node(self, name: str) -> Node | None:
        row = self.c.execute(select(t.nodes).where(t.nodes.c.name == name)).first()
        return self._node(row) if row else None

    def mark_stale_nodes(self, cutoff: float) -> list[Node]:
        # Guarded by `ready`: of several replicas sweeping, one flips a node and writes it.
        rows = self.c.execute(update(t.nodes).where(and_(t.nodes.c.ready.is_(True),
                                                         t.nodes.c.last_seen < cutoff))
                              .values(ready=False).returning(*t.nodes.c)).all()
        return sorted((self._node(r) for r in rows), key=lambda n: n.name)

    # ------------------------------------------------------------ change log
    def record_change(self, change: changes.Change) -> None:
        self.changes.append(change)

    def flush_changes(self, now: float) -> None:
        """Write this transaction's change-log rows now (with whatever is queued)."""
        self._queue_changes(now)
        if self._queued:
            self.send_queued()

    def _queue_changes(self, now: float) -> None:
        if not self.changes:
            return
        if self.pg:
            self._later(self.q.log_lock)
            for ch in self.changes:
                self._later(self.q.log_insert, (*changes.encode(ch), now))
            self._later(self.q.log_notify)   # delivered at commit, with the rows
        else:
            rows = [(*changes.encode(ch), now) for ch in self.changes]
            if len(rows) == 1:
                self._x(self.q.log_insert, rows[0])
            else:
                cur = self.raw.cursor()
                cur.executemany(self.q.log_insert, rows)
                cur.close()
        self.changes = []
        self.logged = True

    def finish(self, now: float) -> None:
        """The transaction's last step: its change-log rows, the last statements before the
        commit. On PostgreSQL the COMMIT goes with them and whatever is still queued, in one
        round trip; the engine's own commit then finds nothing left to do."""
        self._queue_changes(now)
        if self._queued == [_BEGIN]:
            self._queued = []    # nothing was sent: no transaction to commit
        elif self._queued:
            self._later("COMMIT")
            self.send_queued()

    def discard_queued(self) -> None:
        """Forget what was never sent (the transaction rolls back)."""
        self._queued = []

    def changes_after(self, revision: int, limit: int,
                      settle: bool = False) -> list[changes.LogRow]:
        if settle and self.pg:
            # No writer holds the exclusive lock while we hold it shared: every revision
            # below the newest we see has committed or rolled back.
            self._x(self.q.log_settle)
        return [changes.decode(*r)
                for r in self._x(self.q.log_after, (revision, limit)).fetchall()]

    def change_log_bounds(self) -> tuple[int, int]:
        floor_row = self._x(self.q.log_floor).fetchone()
        floor = int(floor_row[0]) if floor_row else 0
        head = int(self._x(self.q.log_head).fetchone()[0])
        return floor, max(floor, head)

    def compact_changes(self, keep: int, limit: int) -> int:
        floor, head = self.change_log_bounds()
        cut = min(head - keep, floor + limit)
        if cut <= floor:
            return 0
        deleted = int(self._x(self.q.log_delete, (cut,)).rowcount or 0)
        self._x(self.q.log_raise_floor, (cut, cut))
        return deleted

    def watch_endpoints(self, subnet_id: str | None = None
                        ) -> list[tuple[str, str, str, str | None, str | None]]:
        if subnet_id is None:
            rows = self._x(self.q.watch_endpoints).fetchall()
        else:
            rows = self._x(self.q.watch_subnet_endpoints, (subnet_id,)).fetchall()
        return [tuple(r) for r in rows]  # type: ignore[misc]

    def delete_node(self, name: str) -> bool:
        return self.c.execute(delete(t.nodes).where(t.nodes.c.name == name)).rowcount == 1

