"""The seam between the IPAM's stores and the ONOS sync: the outbox's rows, the drain lease
and the sync's small persistent state, declared once.

The IPAM writes outbox rows in the same transaction as the change they describe
(`UnitOfWork.add_outbox`); the sync worker and runner read and retire them through
`OutboxStore`, which every store implements (the SQL store on its tables, the memory store
and `MemoryOutbox` in memory) with the same claim rules: only the oldest row of an object is
claimable, rows come in id order, one holder at a time owns the lease.

The lease is fenced: each takeover bumps its token, and a holder retires a row (complete,
retry_later, dead_letter) only while its token is still the lease's, so a worker that lost the
lease mid-batch cannot retire a row the new holder has claimed. Lease times come from the
store's own clock (the database's on SQL), never from the caller's: two replicas with skewed
clocks must agree on when a lease expires.

A row ONOS keeps rejecting is moved to the dead letters (kept for an admin to skip or retry)
instead of blocking its object forever; a newer row of the object supersedes a rejected one.
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
    rejections: int = 0               # of the attempts, how many ONOS rejected


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
    rejections: int = 0

    def item(self) -> OutboxItem:
        return OutboxItem(self.id, self.kind, self.object_id, self.op, self.payload,
                          self.attempts, self.rejections)


@dataclass(frozen=True)
class DeadLetter:
    """A row taken out of the outbox after ONOS rejected it too often (its id is kept)."""

    id: int
    kind: str
    object_id: str
    dead_at: float                    # when it was set aside
    op: str
    payload: dict[str, Any] | None
    attempts: int
    last_error: str
    created_at: float


class OutboxStats(NamedTuple):
    pending: int
    failed: int
    oldest_pending_seconds: float | None
    last_error: str


class OutboxRows(Protocol):
    def claim(self, holder: str, limit: int, now: float) -> list[OutboxItem]:
        """Due items (next_attempt_at <= now), oldest first, and only the oldest row of each
        (kind, object_id): strict order per object."""
    def complete(self, item_id: int, token: int) -> bool:
        """Retire a row ONOS applied; False (and nothing changed) unless `token` is still
        the lease's."""
    def retry_later(self, item_id: int, error: str, next_attempt_at: float,
                    failed: bool, token: int, *, rejected: bool = False) -> bool:
        """Reschedule; attempts += 1 (and rejections += 1 if `rejected`). failed=True:
        configuration or payload problem. Fenced by `token` as `complete`."""
    def drop_superseded(self, token: int) -> int:
        """Drop every failed row that has a younger row of the same object (how many): the
        newer state replaces what ONOS rejected. Fenced by `token`."""
    def dead_letter(self, item_id: int, error: str, now: float, token: int) -> bool:
        """Move the row to the dead letters; it stops blocking its object. Fenced."""
    def stats(self, now: float) -> OutboxStats: ...
    def pending_ids(self, kind: str, ids: Sequence[str] | None = None) -> set[str]:
        """Ids of `kind` with pending rows (among `ids`, if given), without reading the rows:
        a resync asks once per chunk, while a backlog may be large."""
    def outbox_rows(self) -> list[OutboxRow]:
        """Every pending row in id order."""
    def drop_rows(self, kind: str) -> int:
        """Drop every pending row of `kind` (how many): what an outbox over its cap gives
        up, for a full resync to replay from the store instead."""


class DeadLetters(Protocol):
    """What an admin does with rows ONOS kept rejecting (`ipctl sync dead-letters`)."""

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter in id order."""
    def dead_letter_count(self) -> int: ...
    def skip_dead_letter(self, dead_id: int) -> bool:
        """Drop it for good; False if there is no such dead letter."""
    def retry_dead_letters(self, dead_ids: Sequence[int] | None, now: float) -> int:
        """Put them (None: all) back at the end of the outbox as fresh rows; how many. One
        whose object has a pending row is dropped instead: that row carries a newer state,
        which the old one must not overtake."""


class SyncLease(Protocol):
    def acquire_lease(self, holder: str, ttl: float) -> int:
        """Take or renew the single-drainer lease for `ttl` seconds of the store's clock;
        the lease's token (> 0, bumped by each takeover), or 0 while another holder has it."""
    def lease_holder(self) -> str:
        """Who holds the lease now, or "" while nobody does (any replica can ask)."""


class SyncState(Protocol):
    """A few named strings the sync keeps beside its rows (resync requests, last resync)."""

    def get_state(self, key: str) -> str | None: ...
    def set_state(self, key: str, value: str) -> None: ...


class OutboxStore(OutboxRows, DeadLetters, SyncLease, SyncState, Protocol):
    """Rows, dead letters, lease and state: everything the sync needs from a store."""
