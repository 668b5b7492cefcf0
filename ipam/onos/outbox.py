"""The seam between the IPAM's stores and the ONOS sync: the outbox's rows, the drain lease
and the sync's small persistent state, declared once.

The IPAM writes outbox rows in the same transaction as the change they describe
(`UnitOfWork.add_outbox`); the sync worker and runner read and retire them through
`OutboxStore`, which every store implements (the SQL store on its tables, the memory store
and `MemoryOutbox` in memory) with the same claim rules: only the oldest row of an object is
claimable, rows come in id order, one holder at a time owns the lease.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

# The one lease the drainers of a shared store compete for.
SYNC_LEASE = "onos-sync"


@dataclass(frozen=True)
class OutboxItem:
    """What the worker applies: one change of one ONOS object."""

    id: int                           # monotonically increasing per store
    kind: str                         # "network" | "subnet" | "port"
    object_id: str
    op: str                           # "upsert" | "delete"
    payload: dict[str, Any] | None    # upsert: model.to_payload(obj); delete: None
    attempts: int


@dataclass(frozen=True)
class OutboxRow:
    """A whole pending row, with its schedule and last failure (status views, tests)."""

    id: int
    kind: str
    object_id: str
    op: str
    payload: dict[str, Any] | None
    attempts: int
    next_attempt_at: float
    created_at: float
    last_error: str = ""
    failed: bool = False

    def item(self) -> OutboxItem:
        return OutboxItem(self.id, self.kind, self.object_id, self.op, self.payload,
                          self.attempts)


class OutboxStats(NamedTuple):
    pending: int
    failed: int
    oldest_pending_seconds: float | None
    last_error: str


class OutboxRows(Protocol):
    def claim(self, holder: str, limit: int, now: float) -> list[OutboxItem]:
        """Due items (next_attempt_at <= now), oldest first, and only the oldest row of each
        (kind, object_id): strict order per object."""
    def complete(self, item_id: int) -> None: ...
    def retry_later(self, item_id: int, error: str, next_attempt_at: float,
                    failed: bool) -> None:
        """Reschedule; attempts += 1. failed=True: configuration or payload problem."""
    def stats(self, now: float) -> OutboxStats: ...
    def pending_ids(self, kind: str, ids: Sequence[str] | None = None) -> set[str]:
        """Ids of `kind` with pending rows (among `ids`, if given), without reading the rows:
        a resync asks once per chunk, while a backlog may be large."""
    def outbox_rows(self) -> list[OutboxRow]:
        """Every pending row in id order."""
    def drop_rows(self, kind: str) -> int:
        """Drop every pending row of `kind` (how many): what an outbox over its cap gives
        up, for a full resync to replay from the store instead."""


class SyncLease(Protocol):
    def acquire_lease(self, holder: str, ttl: float, now: float) -> bool:
        """Take or renew the single-drainer lease; False while another holder has it."""
    def lease_holder(self, now: float) -> str:
        """Who holds the lease at `now`, or "" while nobody does (any replica can ask)."""


class SyncState(Protocol):
    """A few named strings the sync keeps beside its rows (resync requests, last resync)."""

    def get_state(self, key: str) -> str | None: ...
    def set_state(self, key: str, value: str) -> None: ...


class OutboxStore(OutboxRows, SyncLease, SyncState, Protocol):
    """Rows, lease and state: everything the sync needs from a store."""
