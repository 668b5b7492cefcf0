"""The SQL store's side of the ONOS sync seam (`ipam.onos.outbox.OutboxStore`): the outbox
rows the IPAM's transactions wrote, the drain lease and the sync's state, on their tables.

Each call is its own short transaction: the worker applies rows between them, and a lease
renewal must never wait behind a long read.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ...onos.outbox import SYNC_LEASE, OutboxItem, OutboxRow, OutboxStats
from .. import schema as t
from .engine import PgTimeouts, SqlEngine


def _row(r: Any) -> OutboxRow:
    return OutboxRow(r.id, r.kind, r.object_id, r.op,
                     json.loads(r.payload) if r.payload else None, r.attempts,
                     r.next_attempt_at, r.created_at, r.last_error, bool(r.failed))


class SqlOutbox(SqlEngine):
    """The engine, plus the outbox, lease and state the sync drains through it."""

    def __init__(self, url: str, *, pool_size: int = 8, lease_name: str = SYNC_LEASE,
                 timeouts: PgTimeouts | None = None) -> None:
        super().__init__(url, pool_size=pool_size, timeouts=timeouts)
        self.lease_name = lease_name

    # ------------------------------------------------------------------ rows
    def claim(self, holder: str, limit: int, now: float) -> list[OutboxItem]:
        o, p = t.outbox, t.outbox.alias("p")
        older = exists().where(and_(p.c.kind == o.c.kind, p.c.object_id == o.c.object_id,
                                    p.c.id < o.c.id))
        q = (select(o).where(and_(o.c.next_attempt_at <= now, ~older))
             .order_by(o.c.id).limit(limit))
        with self.tx(False) as uow:
            rows = uow.c.execute(q).all()
        return [_row(r).item() for r in rows]

    def pending_ids(self, kind: str, ids: Sequence[str] | None = None) -> set[str]:
        o = t.outbox.c
        q = select(o.object_id).where(o.kind == kind).distinct()
        if ids is not None:
            q = q.where(o.object_id.in_(list(ids)))
        with self.tx(False) as uow:
            return {r[0] for r in uow.c.execute(q)}

    def outbox_rows(self) -> list[OutboxRow]:
        with self.tx(False) as uow:
            rows = uow.c.execute(select(t.outbox).order_by(t.outbox.c.id)).all()
        return [_row(r) for r in rows]

    def drop_rows(self, kind: str) -> int:
        with self.tx(True) as uow:
            res = uow.c.execute(delete(t.outbox).where(t.outbox.c.kind == kind))
            return int(res.rowcount or 0)

    def complete(self, item_id: int) -> None:
        with self.tx(True) as uow:
            uow.c.execute(delete(t.outbox).where(t.outbox.c.id == item_id))

    def retry_later(self, item_id: int, error: str, next_attempt_at: float,
                    failed: bool) -> None:
        with self.tx(True) as uow:
            uow.c.execute(update(t.outbox).where(t.outbox.c.id == item_id).values(
                attempts=t.outbox.c.attempts + 1, last_error=error[:2000],
                next_attempt_at=next_attempt_at, failed=failed))

    def stats(self, now: float) -> OutboxStats:
        with self.tx(False) as uow:
            pending, failed, oldest = uow.c.execute(select(
                func.count(), func.coalesce(func.sum(
                    func.cast(t.outbox.c.failed, t.outbox.c.attempts.type)), 0),
                func.min(t.outbox.c.created_at))).one()
            last = uow.c.execute(select(t.outbox.c.last_error)
                                 .where(t.outbox.c.last_error != "")
                                 .order_by(t.outbox.c.id.desc()).limit(1)).scalar()
        return OutboxStats(int(pending), int(failed),
                           (now - oldest) if oldest is not None else None, last or "")

    # ----------------------------------------------------------------- lease
    def acquire_lease(self, holder: str, ttl: float, now: float) -> bool:
        """One replica drains the outbox; the lease lives in the database it drains."""
        name = self.lease_name
        with self.tx(True) as uow:
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

    def lease_holder(self, now: float) -> str:
        with self.tx(False) as uow:
            row = uow.c.execute(select(t.leases)
                                .where(t.leases.c.name == self.lease_name)).first()
        return str(row.holder) if row and row.expires_at >= now else ""

    # ----------------------------------------------------------------- state
    def get_state(self, key: str) -> str | None:
        with self.tx(False) as uow:
            value = uow.c.execute(select(t.sync_state.c.value)
                                  .where(t.sync_state.c.key == key)).scalar()
        return None if value is None else str(value)

    def set_state(self, key: str, value: str) -> None:
        with self.tx(True) as uow:
            res = uow.c.execute(update(t.sync_state).where(t.sync_state.c.key == key)
                                .values(value=value))
            if res.rowcount == 0:
                uow.c.execute(insert(t.sync_state).values(key=key, value=value))
