"""Reads of the topology change log for the controller's watch (and its upkeep: compaction).

The log rows themselves are written by the transactions that change ports, nodes and
subnets (ipam.changes says which rows); this is the other side: a consistent snapshot with
the revision it is at, the rows after a revision, one subnet's ports, and compaction.
"""
from __future__ import annotations

from .changes import Change, LogRow, Snapshot, endpoint_changes, node_put, subnet_change
from .store.base import Store


class TopologyLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def bounds(self) -> tuple[int, int]:
        """(floor, head) of the log."""
        with self.store.read() as uow:
            return uow.change_log_bounds()

    def after(self, revision: int, limit: int, settle: bool = False
              ) -> tuple[list[LogRow], int]:
        """Rows after `revision`, and the floor read after them: a floor above `revision`
        means rows may have been compacted away under the read (the caller then needs a
        snapshot)."""
        with self.store.read() as uow:
            rows = uow.changes_after(revision, limit, settle)
            floor, _ = uow.change_log_bounds()
        return rows, floor

    def snapshot(self) -> Snapshot:
        """Everything agents act on, as upserts, at the log's head, read in one snapshot of
        the database (so it is exactly the log applied up to that revision)."""
        with self.store.consistent_read() as uow:
            _, head = uow.change_log_bounds()
            pools = {p.id: p.name for p in uow.list_pools()}
            out: list[Change] = [node_put(n) for n in uow.list_nodes()]
            out += [subnet_change(s, pools.get(s.pool_id, "")) for s in uow.list_subnets()]
            out += endpoint_changes(uow.watch_endpoints())
        return Snapshot(head, out)

    def subnet_ports(self, subnet_id: str) -> list[Change]:
        """The current ports of one subnet: what a node that just gained its first port
        there is sent, since it filtered that subnet's ports out until then."""
        with self.store.read() as uow:
            return endpoint_changes(uow.watch_endpoints(subnet_id))

    def compact(self, keep: int, limit: int = 10_000) -> int:
        # Every sweep asks (each second, on every replica) and nearly always there is
        # nothing to cut: a plain read answers that without taking the write lock.
        floor, head = self.bounds()
        if head - keep <= floor:
            return 0
        with self.store.transaction() as uow:
            return uow.compact_changes(keep, limit)
