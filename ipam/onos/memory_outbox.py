"""An in-memory OutboxStore with the same claim rules as the SQL store.

Used by the sync tests, by the memory store (which keeps its outbox here) and by anyone
embedding the worker without a database. The rules that matter for correctness are the ones
the SQL store must share: only the oldest row of an object is claimable (strict order per
object, even while it waits for a retry), rows are returned in id order, and one holder at a
time owns the lease (fenced by its token, timed by this object's own clock: the memory
stand-in for the database's).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from .outbox import DeadLetter, OutboxItem, OutboxRow, OutboxStats


class MemoryOutbox:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, OutboxRow] = {}  # insertion order == id order
        self._dead: dict[int, DeadLetter] = {}
        self._seq = 0
        self._lease: tuple[str, float] | None = None
        self._token = 0
        self._state: dict[str, str] = {}
        self.lease_clock = clock

    def add(self, kind: str, object_id: str, op: str, payload: dict[str, Any] | None,
            now: float = 0.0) -> int:
        with self._lock:
            self._seq += 1
            self._rows[self._seq] = OutboxRow(self._seq, kind, object_id, op, payload, 0, now,
                                              now)
            return self._seq

    def supersede(self, kind: str, object_id: str) -> None:
        """Drop the object's pending rows (what `UnitOfWork.supersede_outbox` commits)."""
        with self._lock:
            for row_id in [i for i, r in self._rows.items()
                           if (r.kind, r.object_id) == (kind, object_id)]:
                del self._rows[row_id]

    def claim(self, holder: str, limit: int, now: float) -> list[OutboxItem]:
        out: list[OutboxItem] = []
        seen: set[tuple[str, str]] = set()
        with self._lock:
            for row in self._rows.values():
                key = (row.kind, row.object_id)
                if key in seen:
                    continue
                seen.add(key)  # a younger row never overtakes an older one, due or not
                if row.next_attempt_at <= now:
                    out.append(row.item())
                    if len(out) >= limit:
                        break
        return out

    def complete(self, item_id: int, token: int) -> bool:
        with self._lock:
            if token != self._token:
                return False
            self._rows.pop(item_id, None)
            return True

    def retry_later(self, item_id: int, error: str, next_attempt_at: float,
                    failed: bool, token: int, *, rejected: bool = False) -> bool:
        with self._lock:
            if token != self._token:
                return False
            row = self._rows.get(item_id)
            if row is not None:
                self._rows[item_id] = replace(row, attempts=row.attempts + 1,
                                              rejections=row.rejections + int(rejected),
                                              last_error=error[:2000],
                                              next_attempt_at=next_attempt_at, failed=failed)
            return True

    def drop_superseded(self, token: int) -> int:
        with self._lock:
            if token != self._token:
                return 0
            newest: dict[tuple[str, str], int] = {}
            for r in self._rows.values():
                newest[(r.kind, r.object_id)] = r.id
            gone = [r.id for r in self._rows.values()
                    if r.failed and newest[(r.kind, r.object_id)] != r.id]
            for i in gone:
                del self._rows[i]
            return len(gone)

    def dead_letter(self, item_id: int, error: str, now: float, token: int) -> bool:
        with self._lock:
            if token != self._token:
                return False
            row = self._rows.pop(item_id, None)
            if row is not None:
                self._dead[row.id] = DeadLetter(row.id, row.kind, row.object_id, now, row.op,
                                                row.payload, row.attempts + 1, error[:2000],
                                                row.created_at)
            return True

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            return sorted(self._dead.values(), key=lambda d: d.id)

    def dead_letter_count(self) -> int:
        with self._lock:
            return len(self._dead)

    def skip_dead_letter(self, dead_id: int) -> bool:
        with self._lock:
            return self._dead.pop(dead_id, None) is not None

    def retry_dead_letters(self, dead_ids: Sequence[int] | None, now: float) -> int:
        with self._lock:
            wanted = sorted(self._dead) if dead_ids is None else \
                sorted(i for i in set(dead_ids) if i in self._dead)
            pending = {(r.kind, r.object_id) for r in self._rows.values()}
            back = 0
            for i in wanted:
                d = self._dead.pop(i)
                if (d.kind, d.object_id) in pending:
                    continue   # superseded: a pending row carries a newer state
                self._seq += 1
                self._rows[self._seq] = OutboxRow(self._seq, d.kind, d.object_id, d.op,
                                                  d.payload, 0, now, now)
                pending.add((d.kind, d.object_id))
                back += 1
            return back

    def stats(self, now: float) -> OutboxStats:
        with self._lock:
            rows = list(self._rows.values())
        oldest = min((r.created_at for r in rows), default=None)
        last = next((r.last_error for r in reversed(rows) if r.last_error), "")
        return OutboxStats(len(rows), sum(r.failed for r in rows),
                           None if oldest is None else now - oldest, last)

    def pending_ids(self, kind: str, ids: Sequence[str] | None = None) -> set[str]:
        wanted = set(ids) if ids is not None else None
        with self._lock:
            return {r.object_id for r in self._rows.values() if r.kind == kind
                    and (wanted is None or r.object_id in wanted)}

    def outbox_rows(self) -> list[OutboxRow]:
        with self._lock:
            return list(self._rows.values())

    def drop_rows(self, kind: str) -> int:
        with self._lock:
            gone = [i for i, r in self._rows.items() if r.kind == kind]
            for i in gone:
                del self._rows[i]
            return len(gone)

    def acquire_lease(self, holder: str, ttl: float) -> int:
        with self._lock:
            now = self.lease_clock()
            live = self._lease is not None and self._lease[1] >= now
            if live and self._lease is not None and self._lease[0] != holder:
                return 0
            if not (live and self._lease is not None and self._lease[0] == holder):
                self._token += 1   # a takeover (or a lapsed lease taken again): fence off
            self._lease = (holder, now + ttl)
            return self._token

    def lease_holder(self) -> str:
        with self._lock:
            now = self.lease_clock()
            return self._lease[0] if self._lease and self._lease[1] >= now else ""

    def get_state(self, key: str) -> str | None:
        with self._lock:
            return self._state.get(key)

    def set_state(self, key: str, value: str) -> None:
        with self._lock:
            self._state[key] = value
