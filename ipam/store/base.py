"""The store protocol: small primitives the allocator composes inside one transaction.

Like host-local's allocator/backend split, the policy logic (`ipam.allocation` and its
neighbours behind `ipam.service`) is written once against these primitives; each store makes
them atomic in its own way (a lock and a copy of the state in memory, one database
transaction with row locks in SQL). Every primitive that takes an address
must be safe against a concurrent caller taking the same one: the SQL store's unique
constraint on (subnet, offset) is the last word.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..changes import Change, LogRow
from ..domain import AddressState, Node, Pool, Port, PortState, Subnet, Usage
from ..onos.outbox import OutboxStore
from .signal import ChangeSignal


@dataclass(frozen=True)
class PortFilter:
    pool_id: str | None = None
    node: str | None = None
    state: PortState | None = None
    limit: int = 1000
    # Only ports after this (created_at, id), the listing's order: a page's cursor.
    after: tuple[float, str] | None = None


class UnitOfWork(Protocol):
    # configuration (pools, subnets, namespace defaults) --------------------
    def config_generation(self) -> int:
        """The configuration's generation, read under a shared configuration lock.

        Every change to pools, subnets or namespace defaults bumps it, so a caller may keep
        that configuration in memory and trust it while the number is unchanged. On a database
        several replicas share, the read also waits for (and then holds off) a concurrent
        `begin_config_change`, so a pod-path transaction sees the configuration either wholly
        before or wholly after an admin change, never a subnet deleted under its feet."""
    def begin_config_change(self) -> None:
        """Take the configuration lock exclusively and bump the generation; the first call of
        every admin change, so its checks (overlaps, live ports) cannot race anything."""

    # pools -----------------------------------------------------------------
    def insert_pool(self, pool: Pool) -> None: ...
    def get_pool(self, name: str) -> Pool | None: ...
    def get_pool_by_id(self, pool_id: str) -> Pool | None: ...
    def list_pools(self) -> list[Pool]: ...
    def delete_pool(self, pool_id: str) -> None: ...
    def set_namespace_default(self, namespace: str, pool_id: str | None) -> None: ...
    def namespace_defaults(self) -> dict[str, str]:
        """Every namespace default as namespace -> pool name."""

    # subnets ---------------------------------------------------------------
    def insert_subnet(self, subnet: Subnet, free: list[tuple[int, int]]) -> None: ...
    def list_subnets(self, pool_id: str | None = None) -> list[Subnet]: ...
    def delete_subnet(self, subnet_id: str) -> None: ...
    def subnet_has_ports(self, subnet_id: str) -> bool: ...
    def subnet_usage(self, subnet: Subnet) -> Usage: ...

    # addresses -------------------------------------------------------------
    def take_free(self, subnet_id: str) -> int | None:
        """Remove and return the lowest free offset, or None when the subnet is full."""
    def take_specific(self, subnet_id: str, offset: int) -> bool:
        """Remove one offset from the free set; False when it is not free."""
    def give_back(self, subnet_id: str, offset: int) -> None:
        """Return an offset to the free set (merging with neighbours)."""
    def insert_address(self, subnet_id: str, offset: int, ip: str, state: AddressState,
                       port_id: str | None, generation: int, free_at: float = 0.0,
                       note: str = "") -> None: ...
    def delete_address(self, subnet_id: str, offset: int) -> bool:
        """Delete one address row; False when there was none (a concurrent transaction
        deleted it first): the caller must then not give the offset back."""
    def address_state(self, subnet_id: str,
                      offset: int) -> tuple[AddressState, str | None] | None: ...
    def quarantine_port_addresses(self, port_id: str, free_at: float) -> None: ...
    def delete_port_addresses(self, port_id: str) -> list[tuple[str, int]]: ...
    def expired_quarantine(self, now: float, limit: int) -> list[tuple[str, int]]: ...

    # ports -----------------------------------------------------------------
    def insert_port(self, port: Port) -> bool:
        """Insert a new port; False (and nothing written) when its MAC is already taken, so
        the caller draws another one: the unique constraint decides, not a prior lookup."""
    def update_port(self, port: Port, expect_generation: int) -> bool:
        """Write the port if its generation is still `expect_generation` (else False)."""
    def delete_port(self, port_id: str, expect_generation: int) -> bool: ...
    def port_by_request(self, container_id: str, ifname: str) -> Port | None: ...
    def port_by_owner(self, pool_id: str, owner: str) -> Port | None: ...
    def get_port(self, port_id: str) -> Port | None: ...
    def list_ports(self, flt: PortFilter) -> list[Port]: ...
    def idle_ports_before(self, pool_id: str, cutoff: float, limit: int) -> list[Port]: ...
    def port_nodes(self) -> set[str]:
        """The distinct nodes that hold active ports ("" for none): what the gone-node sweep
        checks against the registry before it reads any port. Active only: a node long gone
        that keeps idle (owner-bound) ports would cost a port query every pass."""
    def active_endpoints(self) -> list[tuple[str, str, str, str | None]]:
        """(port id, MAC, node, address or None) of every active port, one row per address,
        ordered by port id: the topology agents poll, without building Port objects."""
        ...

    # released objects (resync deletes) ------------------------------------
    def add_released(self, kind: str, object_id: str, now: float) -> None: ...
    def forget_released(self, kind: str, object_id: str) -> None: ...
    def list_released(self, since: float | None = None) -> list[tuple[str, str]]: ...
    def prune_released(self, before: float) -> int: ...

    # outbox ----------------------------------------------------------------
    def add_outbox(self, kind: str, object_id: str, op: str,
                   payload: dict[str, Any] | None, now: float) -> None: ...
    def supersede_outbox(self, kind: str, object_id: str) -> None:
        """Drop the object's pending rows (retrying or rejected ones too): the row added next
        carries everything its newest state needs."""

    # nodes -----------------------------------------------------------------
    def upsert_node(self, node: Node) -> None: ...
    def list_nodes(self) -> list[Node]: ...
    def get_node(self, name: str) -> Node | None: ...
    def delete_node(self, name: str) -> bool: ...
    def mark_stale_nodes(self, cutoff: float) -> list[Node]:
        """Set ready=False on every ready node last seen before `cutoff` and return them:
        a conditional update, so each transition is reported once across replicas."""

    # partial rollback ------------------------------------------------------
    def savepoint(self) -> AbstractContextManager[None]:
        """A block whose writes (rows, outbox rows, change-log rows) are undone if it raises,
        the exception passing on; the rest of the transaction stays and may commit. One
        transaction then carries several requests, each failing alone (ipam.batching).
        A store-level failure raised inside surfaces as `Busy` when transient, as it would
        from the whole transaction."""

    # topology change log (ipam.changes) -------------------------------------
    def record_change(self, change: Change) -> None:
        """Append a row to the change log, committed with this transaction (its revision
        is assigned by the store, in commit order)."""
    def changes_after(self, revision: int, limit: int, settle: bool = False) -> list[LogRow]:
        """Up to `limit` rows after `revision`, in order. A gap in the revisions is a
        transaction that rolled back or (PostgreSQL) one still committing; with `settle` the
        read first waits for those to finish, so a gap below the rows it returns is final."""
    def change_log_bounds(self) -> tuple[int, int]:
        """(floor, head): rows after `floor` are all kept; `head` is the newest revision."""
    def compact_changes(self, keep: int, limit: int) -> int:
        """Delete rows older than the newest `keep` (at most `limit` revisions' worth per
        call) and raise the floor past them; the number of rows deleted."""
    def watch_endpoints(self, subnet_id: str | None = None
                        ) -> list[tuple[str, str, str, str | None, str | None]]:
        """(port id, MAC, node, address, subnet id) of every active port (of the ports with
        an address in `subnet_id`), one row per address, by port id."""


class Store(OutboxStore, Protocol):
    """Transactions for the IPAM, and the outbox seam the ONOS sync drains (rows written by
    `UnitOfWork.add_outbox` in those transactions, the drain lease, the sync's state)."""

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        """One atomic unit: everything inside commits together or not at all."""
    def read(self) -> AbstractContextManager[UnitOfWork]:
        """A read-only view (may be served without taking the write lock)."""
    def consistent_read(self) -> AbstractContextManager[UnitOfWork]:
        """A read-only view in which every read sees the same committed state: a snapshot
        together with the change-log head it is at."""
    def change_signal(self) -> ChangeSignal:
        """What wakes a change-log tailer: one per replica (a database connection on
        PostgreSQL); the caller closes it."""
    def close(self) -> None: ...
