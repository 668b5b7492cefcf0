"""The SQL store's side of the ONOS sync seam (`ipam.onos.outbox.OutboxStore`): the outbox
rows the IPAM's transactions wrote, the drain lease and the sync's state, on their tables.

Each call is its own short transaction: the worker applies rows between them, and a lease
renewal must never wait behind a long read. Lease times are read from the database's clock
(`clock_timestamp()` on PostgreSQL, `julianday('now')` on SQLite) so replicas with skewed
clocks agree; a row is retired only in a transaction that holds the lease row (FOR SHARE on
PostgreSQL: a takeover waits for it) and finds the caller's token still there.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, insert, literal_column, or_, select, update
from sqlalchemy.exc import IntegrityError

from ...onos.outbox import SYNC_LEASE, DeadLetter, OutboxItem, OutboxRow, OutboxStats
from .. import schema as t
from .engine import PgTimeouts, SqlEngine
from .uow import SqlUnitOfWork


def _row(r: Any) -> OutboxRow:
    return OutboxRow(r.id, r.kind, r.object_id, r.op,
                     json.loads(r.payload) if r.payload else None, r.attempts,
                     r.next_attempt_at, r.created_at, r.last_error, bool(r.failed),
                     r.rejections)


def _dead(r: Any) -> DeadLetter:
    return DeadLetter(r.id, r.kind, r.object_id, r.dead_at, r.op,
                      json.loads(r.payload) if r.payload else None, r.attempts, r.last_error,
                      r.created_at)


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

    def _fenced(self, uow: SqlUnitOfWork, token: int) -> bool:
        """Whether `token` is still the lease's, holding the lease row until commit so a
        takeover cannot slip in between this check and the caller's write."""
        q = select(t.leases.c.token).where(t.leases.c.name == self.lease_name)
        if self.postgres:
            q = q.with_for_update(read=True)
        current = uow.c.execute(q).scalar()
        return current is not None and int(current) == token

    def complete(self, item_id: int, token: int) -> bool:
        with self.tx(True) as uow:
            if not self._fenced(uow, token):
                return False
            uow.c.execute(delete(t.outbox).where(t.outbox.c.id == item_id))
            return True

    def retry_later(self, item_id: int, error: str, next_attempt_at: float,
                    failed: bool, token: int, *, rejected: bool = False) -> bool:
        with self.tx(True) as uow:
            if not self._fenced(uow, token):
                return False
            uow.c.execute(update(t.outbox).where(t.outbox.c.id == item_id).values(
                attempts=t.outbox.c.attempts + 1, last_error=error[:2000],
                rejections=t.outbox.c.rejections + int(rejected),
                next_attempt_at=next_attempt_at, failed=failed))
            return True

    def drop_superseded(self, token: int) -> int:
        o, p = t.outbox, t.outbox.alias("p")
        younger = exists().where(and_(p.c.kind == o.c.kind, p.c.object_id == o.c.object_id,
                                      p.c.id > o.c.id))
        with self.tx(True) as uow:
            if not self._fenced(uow, token):
                return 0
            res = uow.c.execute(delete(o).where(and_(o.c.failed.is_(True), younger)))
            return int(res.rowcount or 0)

    def dead_letter(self, item_id: int, error: str, now: float, token: int) -> bool:
        o = t.outbox
        with self.tx(True) as uow:
            if not self._fenced(uow, token):
                return False
            r = uow.c.execute(select(o).where(o.c.id == item_id)).first()
            if r is None:
                return True
            uow.c.execute(insert(t.dead_letters).values(
                id=r.id, kind=r.kind, object_id=r.object_id, op=r.op, payload=r.payload,
                attempts=r.attempts + 1, last_error=error[:2000], created_at=r.created_at,
                dead_at=now))
            uow.c.execute(delete(o).where(o.c.id == item_id))
            return True

    # ----------------------------------------------------------- dead letters
    def dead_letters(self) -> list[DeadLetter]:
        with self.tx(False) as uow:
            rows = uow.c.execute(select(t.dead_letters).order_by(t.dead_letters.c.id)).all()
        return [_dead(r) for r in rows]

    def dead_letter_count(self) -> int:
        with self.tx(False) as uow:
            return int(uow.c.execute(select(func.count()).select_from(t.dead_letters))
                       .scalar() or 0)

    def skip_dead_letter(self, dead_id: int) -> bool:
        with self.tx(True) as uow:
            res = uow.c.execute(delete(t.dead_letters).where(t.dead_letters.c.id == dead_id))
            return bool(res.rowcount)

    def retry_dead_letters(self, dead_ids: Sequence[int] | None, now: float) -> int:
        d, o = t.dead_letters, t.outbox
        q = select(d).order_by(d.c.id)
        if dead_ids is not None:
            q = q.where(d.c.id.in_(list(dead_ids)))
        back = 0
        with self.tx(True) as uow:
            for r in uow.c.execute(q).all():
                uow.c.execute(delete(d).where(d.c.id == r.id))
                pending = uow.c.execute(select(o.c.id).where(and_(
                    o.c.kind == r.kind, o.c.object_id == r.object_id)).limit(1)).first()
                if pending is not None:
                    continue   # superseded: that row carries a newer state
                uow.c.execute(insert(o).values(
                    kind=r.kind, object_id=r.object_id, op=r.op, payload=r.payload,
                    created_at=now, attempts=0, next_attempt_at=now, last_error="",
                    failed=False, rejections=0))
                back += 1
        return back

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
    def _db_now(self, uow: SqlUnitOfWork) -> float:
        """The database's clock in epoch seconds: the one all replicas share."""
        expr = ("extract(epoch from clock_timestamp())" if self.postgres else
                "(julianday('now') - 2440587.5) * 86400.0")
        return float(uow.c.execute(select(literal_column(expr))).scalar_one())

    def acquire_lease(self, holder: str, ttl: float) -> int:
        """One replica drains the outbox; the lease lives in the database it drains, on
        the database's clock."""
        name, ls = self.lease_name, t.leases
        with self.tx(True) as uow:
            now = self._db_now(uow)
            live_mine = and_(ls.c.holder == holder, ls.c.expires_at >= now)
            res = uow.c.execute(update(ls).where(and_(
                ls.c.name == name, or_(ls.c.holder == holder, ls.c.expires_at < now)))
                .values(holder=holder, expires_at=now + ttl,
                        # a renewal keeps the token; a takeover (or a lapsed lease
                        # taken again) bumps it, fencing off the previous holder
                        token=ls.c.token + case((live_mine, 0), else_=1)))
            if res.rowcount == 1:
                return int(uow.c.execute(select(ls.c.token).where(ls.c.name == name))
                           .scalar_one())
            if uow.c.execute(select(ls.c.holder).where(ls.c.name == name)).first():
                return 0
            try:
                with uow.c.begin_nested():
                    uow.c.execute(insert(ls).values(name=name, holder=holder,
                                                    expires_at=now + ttl, token=1))
            except IntegrityError:
                return 0
            return 1

    def lease_holder(self) -> str:
        with self.tx(False) as uow:
            now = self._db_now(uow)
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
