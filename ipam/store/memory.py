"""An in-memory store: the reference the SQL store is checked against, and a zero-setup demo.

One lock serialises transactions; a transaction works on a copy of the state and swaps it in
on commit, so an exception leaves nothing half-done (the same guarantee a database gives).
Outbox rows join the store's `MemoryOutbox` (its OutboxStore: rows, lease, state) at commit.
"""
from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from .. import addr, changes, deadline
from ..domain import AddressState, Node, Pool, Port, PortAddress, PortState, Subnet, Usage
from ..errors import AlreadyExists
from ..onos.memory_outbox import MemoryOutbox
from .base import PortFilter
from .signal import EventSignal, SignalHub


@dataclass
class _AddrRow:
    state: AddressState
    ip: str
    port_id: str | None
    generation: int
    free_at: float = 0.0
    note: str = ""


@dataclass
class _State:
    pools: dict[str, Pool] = field(default_factory=dict)
    ns_defaults: dict[str, str] = field(default_factory=dict)
    subnets: dict[str, Subnet] = field(default_factory=dict)
    free: dict[str, list[list[int]]] = field(default_factory=dict)   # sorted [lo, hi]
    addresses: dict[tuple[str, int], _AddrRow] = field(default_factory=dict)
    ports: dict[str, Port] = field(default_factory=dict)
    released: dict[tuple[str, str], float] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    config_generation: int = 1


class _ChangeLog:
    """The change log, outside the copied state (a copy per transaction would cost O(log));
    rows join it at commit, compaction trims it in place."""

    def __init__(self) -> None:
        self.rows: list[changes.LogRow] = []
        self.next_revision = 1
        self.floor = 0


class _MemoryUow:
    def __init__(self, st: _State, log: _ChangeLog) -> None:
        self.st = st
        self.log = log
        self.pending: list[changes.Change] = []
        # (kind, object_id, op, payload, now) in order, added to the outbox on commit
        self.outbox: list[tuple[str, str, str, dict[str, Any] | None, float]] = []
        # objects whose pending rows go on commit, before this transaction's rows are added
        self.superseded: list[tuple[str, str]] = []

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A copy of the state to go back to (a test store: the copy's cost is no matter)."""
        saved = copy.deepcopy(self.st)
        marks = len(self.pending), len(self.outbox), len(self.superseded)
        try:
            yield
        except BaseException:
            self.st = saved
            del self.pending[marks[0]:], self.outbox[marks[1]:], self.superseded[marks[2]:]
            raise

    # configuration
    def config_generation(self) -> int:
        """The store lock already serialises everything; the number is what matters."""
        return self.st.config_generation

    def begin_config_change(self) -> None:
        self.st.config_generation += 1

    # pools
    def insert_pool(self, pool: Pool) -> None:
        if any(p.name == pool.name for p in self.st.pools.values()):
            raise AlreadyExists(f"pool {pool.name!r} already exists")
        self.st.pools[pool.id] = pool
        self.st.config_generation += 1

    def get_pool(self, name: str) -> Pool | None:
        return next((p for p in self.st.pools.values() if p.name == name), None)

    def get_pool_by_id(self, pool_id: str) -> Pool | None:
        return self.st.pools.get(pool_id)

    def list_pools(self) -> list[Pool]:
        return sorted(self.st.pools.values(), key=lambda p: p.name)

    def delete_pool(self, pool_id: str) -> None:
        self.st.pools.pop(pool_id, None)
        self.st.ns_defaults = {k: v for k, v in self.st.ns_defaults.items() if v != pool_id}
        self.st.config_generation += 1

    def set_namespace_default(self, namespace: str, pool_id: str | None) -> None:
        if pool_id is None:
            self.st.ns_defaults.pop(namespace, None)
        else:
            self.st.ns_defaults[namespace] = pool_id
        self.st.config_generation += 1

    def namespace_defaults(self) -> dict[str, str]:
        return {ns: self.st.pools[pid].name for ns, pid in self.st.ns_defaults.items()
                if pid in self.st.pools}

    # subnets
    def insert_subnet(self, subnet: Subnet, free: list[tuple[int, int]]) -> None:
        self.st.subnets[subnet.id] = subnet
        self.st.free[subnet.id] = [[lo, hi] for lo, hi in free]
        self.st.config_generation += 1

    def list_subnets(self, pool_id: str | None = None) -> list[Subnet]:
        return [s for s in self.st.subnets.values() if pool_id is None or s.pool_id == pool_id]

    def delete_subnet(self, subnet_id: str) -> None:
        self.st.subnets.pop(subnet_id, None)
        self.st.free.pop(subnet_id, None)
        self.st.config_generation += 1
        for key in [k for k in self.st.addresses if k[0] == subnet_id]:
            del self.st.addresses[key]

    def subnet_has_ports(self, subnet_id: str) -> bool:
        return any(k[0] == subnet_id and r.port_id for k, r in self.st.addresses.items())

    def subnet_usage(self, subnet: Subnet) -> Usage:
        net = addr.parse_network(subnet.cidr)
        total = addr.total_addresses(net)
        free = sum(hi - lo + 1 for lo, hi in self.st.free.get(subnet.id, []))
        used = quarantined = bound = 0
        for (sid, _), row in self.st.addresses.items():
            if sid != subnet.id:
                continue
            if row.state is AddressState.ALLOCATED:
                used += 1
                port = self.st.ports.get(row.port_id or "")
                if port is not None and port.state is PortState.IDLE:
                    bound += 1
            elif row.state is AddressState.QUARANTINED:
                quarantined += 1
        return Usage(total=total, used=used, reserved=total - free - used - quarantined,
                     quarantined=quarantined, free=free, bound=bound)

    # addresses
    def take_free(self, subnet_id: str) -> int | None:
        ranges = self.st.free.get(subnet_id)
        if not ranges:
            return None
        lo, hi = ranges[0]
        if lo == hi:
            ranges.pop(0)
        else:
            ranges[0][0] = lo + 1
        return lo

    def take_specific(self, subnet_id: str, offset: int) -> bool:
        ranges = self.st.free.get(subnet_id, [])
        i = bisect.bisect_right(ranges, [offset, float("inf")]) - 1
        if i < 0 or not ranges[i][0] <= offset <= ranges[i][1]:
            return False
        lo, hi = ranges[i]
        parts = [[lo, offset - 1]] if lo < offset else []
        if offset < hi:
            parts.append([offset + 1, hi])
        ranges[i:i + 1] = parts
        return True

    def give_back(self, subnet_id: str, offset: int) -> None:
        ranges = self.st.free.setdefault(subnet_id, [])
        i = bisect.bisect_left(ranges, [offset, offset])
        left = ranges[i - 1] if i > 0 else None
        right = ranges[i] if i < len(ranges) else None
        if (left and left[1] >= offset) or (right and right[0] <= offset):
            raise AssertionError(f"offset {offset} of {subnet_id} is already free")
        if left and left[1] == offset - 1 and right and right[0] == offset + 1:
            left[1] = right[1]
            ranges.pop(i)
        elif left and left[1] == offset - 1:
            left[1] = offset
        elif right and right[0] == offset + 1:
            right[0] = offset
        else:
            ranges.insert(i, [offset, offset])

    def insert_address(self, subnet_id: str, offset: int, ip: str, state: AddressState,
                       port_id: str | None, generation: int, free_at: float = 0.0,
                       note: str = "") -> None:
        if (subnet_id, offset) in self.st.addresses:
            raise AlreadyExists(f"{ip} is already taken")
        self.st.addresses[(subnet_id, offset)] = _AddrRow(state, ip, port_id, generation,
                                                          free_at, note)
        port = self.st.ports.get(port_id or "")
        if port is not None:
            # As in SQL, a port's addresses are its address rows, whenever they were added.
            addrs = sorted((*port.addresses, PortAddress(subnet_id, ip, offset)),
                           key=lambda a: (":" in a.ip, a.ip))
            self.st.ports[port.id] = replace(port, addresses=tuple(addrs))

    def delete_address(self, subnet_id: str, offset: int) -> bool:
        return self.st.addresses.pop((subnet_id, offset), None) is not None

    def address_state(self, subnet_id: str, offset: int) -> tuple[AddressState, str | None] | None:
        row = self.st.addresses.get((subnet_id, offset))
        return (row.state, row.port_id) if row else None

    def quarantine_port_addresses(self, port_id: str, free_at: float) -> None:
        for row in self.st.addresses.values():
            if row.port_id == port_id:
                row.state, row.port_id, row.free_at = AddressState.QUARANTINED, None, free_at

    def delete_port_addresses(self, port_id: str) -> list[tuple[str, int]]:
        keys = [k for k, r in self.st.addresses.items() if r.port_id == port_id]
        for k in keys:
            del self.st.addresses[k]
        return keys

    def expired_quarantine(self, now: float, limit: int) -> list[tuple[str, int]]:
        out = [k for k, r in self.st.addresses.items()
               if r.state is AddressState.QUARANTINED and r.free_at <= now]
        return sorted(out)[:limit]

    # ports
    def insert_port(self, port: Port) -> bool:
        if port.container_id and self.port_by_request(port.container_id, port.ifname or ""):
            raise AlreadyExists("a port for this container and ifname exists")
        if port.owner and self.port_by_owner(port.pool_id, port.owner):
            raise AlreadyExists(f"owner {port.owner!r} already has a port")
        if port.id in self.st.ports:
            raise AlreadyExists(f"port id {port.id} is already in use")
        if any(p.mac == port.mac for p in self.st.ports.values()):
            return False
        self.st.ports[port.id] = port
        return True

    def update_port(self, port: Port, expect_generation: int) -> bool:
        cur = self.st.ports.get(port.id)
        if cur is None or cur.generation != expect_generation:
            return False
        self.st.ports[port.id] = port
        for row in self.st.addresses.values():
            if row.port_id == port.id:
                row.generation = port.generation
        return True

    def delete_port(self, port_id: str, expect_generation: int) -> bool:
        cur = self.st.ports.get(port_id)
        if cur is None or cur.generation != expect_generation:
            return False
        del self.st.ports[port_id]
        return True

    def port_by_request(self, container_id: str, ifname: str) -> Port | None:
        return next((p for p in self.st.ports.values()
                     if p.container_id == container_id and p.ifname == ifname), None)

    def port_by_owner(self, pool_id: str, owner: str) -> Port | None:
        return next((p for p in self.st.ports.values()
                     if p.pool_id == pool_id and p.owner == owner), None)

    def get_port(self, port_id: str) -> Port | None:
        return self.st.ports.get(port_id)

    def list_ports(self, flt: PortFilter) -> list[Port]:
        out = [p for p in sorted(self.st.ports.values(), key=lambda p: (p.created_at, p.id))
               if (flt.pool_id is None or p.pool_id == flt.pool_id)
               and (flt.node is None or p.node == flt.node)
               and (flt.state is None or p.state is flt.state)
               and (flt.after is None or (p.created_at, p.id) > flt.after)]
        return out[:flt.limit]

    def port_nodes(self) -> set[str]:
        return {p.node for p in self.st.ports.values() if p.state is PortState.ACTIVE}

    def idle_ports_before(self, pool_id: str, cutoff: float, limit: int) -> list[Port]:
        return [p for p in self.st.ports.values()
                if p.pool_id == pool_id and p.state is PortState.IDLE
                and p.updated_at <= cutoff][:limit]

    def active_endpoints(self) -> list[tuple[str, str, str, str | None]]:
        return [r[:4] for r in self.watch_endpoints()]

    # released objects
    def add_released(self, kind: str, object_id: str, now: float) -> None:
        self.st.released[(kind, object_id)] = now

    def forget_released(self, kind: str, object_id: str) -> None:
        self.st.released.pop((kind, object_id), None)

    def list_released(self, since: float | None = None) -> list[tuple[str, str]]:
        return sorted(k for k, at in self.st.released.items() if since is None or at >= since)

    def prune_released(self, before: float) -> int:
        old = [k for k, at in self.st.released.items() if at < before]
        for k in old:
            del self.st.released[k]
        return len(old)

    # outbox
    def add_outbox(self, kind: str, object_id: str, op: str,
                   payload: dict[str, Any] | None, now: float) -> None:
        self.outbox.append((kind, object_id, op, payload, now))

    def supersede_outbox(self, kind: str, object_id: str) -> None:
        self.superseded.append((kind, object_id))

    # nodes
    def upsert_node(self, node: Node) -> None:
        self.st.nodes[node.name] = node

    def list_nodes(self) -> list[Node]:
        return sorted(self.st.nodes.values(), key=lambda n: n.name)

    def delete_node(self, name: str) -> bool:
        return self.st.nodes.pop(name, None) is not None

    def get_node(self, name: str) -> Node | None:
        return self.st.nodes.get(name)

    def mark_stale_nodes(self, cutoff: float) -> list[Node]:
        stale = [n for n in self.list_nodes() if n.ready and n.last_seen < cutoff]
        for n in stale:
            self.st.nodes[n.name] = replace(n, ready=False)
        return [replace(n, ready=False) for n in stale]

    # change log
    def record_change(self, change: changes.Change) -> None:
        self.pending.append(change)

    def changes_after(self, revision: int, limit: int,
                      settle: bool = False) -> list[changes.LogRow]:
        rows = self.log.rows
        i = bisect.bisect_right(rows, revision, key=lambda r: r.revision)
        return rows[i:i + limit]

    def change_log_bounds(self) -> tuple[int, int]:
        return self.log.floor, max(self.log.floor, self.log.next_revision - 1)

    def compact_changes(self, keep: int, limit: int) -> int:
        floor, head = self.change_log_bounds()
        cut = min(head - keep, floor + limit)
        if cut <= floor:
            return 0
        i = bisect.bisect_right(self.log.rows, cut, key=lambda r: r.revision)
        del self.log.rows[:i]
        self.log.floor = cut
        return i

    def watch_endpoints(self, subnet_id: str | None = None
                        ) -> list[tuple[str, str, str, str | None, str | None]]:
        out: list[tuple[str, str, str, str | None, str | None]] = []
        for p in sorted(self.st.ports.values(), key=lambda p: p.id):
            if p.state is not PortState.ACTIVE:
                continue
            if subnet_id is not None and all(a.subnet_id != subnet_id for a in p.addresses):
                continue
            out += [(p.id, p.mac, p.node, a.ip, a.subnet_id) for a in p.addresses] or \
                [(p.id, p.mac, p.node, None, None)]
        return out


class MemoryStore(MemoryOutbox):
    """The IPAM's state in memory; its outbox, lease and sync state are the MemoryOutbox's."""

    def __init__(self) -> None:
        super().__init__()
        self._tx_lock = threading.RLock()
        self._data = _State()
        self._log = _ChangeLog()
        self._signals = SignalHub()

    @contextmanager
    def transaction(self) -> Iterator[_MemoryUow]:
        with self._tx_lock:
            uow = _MemoryUow(copy.deepcopy(self._data), self._log)
            yield uow
            deadline.check_before_commit()
            self._data = uow.st
            for ch in uow.pending:
                self._log.rows.append(changes.LogRow(self._log.next_revision, ch))
                self._log.next_revision += 1
            if uow.pending:
                self._signals.fire()
            for kind, object_id in uow.superseded:
                self.supersede(kind, object_id)
            for row in uow.outbox:
                self.add(*row)

    @contextmanager
    def read(self) -> Iterator[_MemoryUow]:
        with self._tx_lock:
            yield _MemoryUow(copy.deepcopy(self._data), self._log)

    def consistent_read(self) -> AbstractContextManager[_MemoryUow]:
        return self.read()   # one lock serialises everything already

    def change_signal(self) -> EventSignal:
        return self._signals.add(EventSignal())

    def close(self) -> None:
        pass
