"""The SQL store on SQLAlchemy: SQLite (WAL) by default, PostgreSQL for several replicas.

Correctness rests on the database, not on the process: unique constraints on (subnet, offset),
(container id, ifname), (pool, owner) and MAC; row locks (`FOR UPDATE SKIP LOCKED` on
PostgreSQL) when taking a free range; conditional updates on generations. Anything transient
(a lost race, a deadlock, SQLite busy) surfaces as `Busy`, which the service retries.

Along its seams: `statements` (the pod path's SQL text, per dialect), `uow` (one transaction
as the store protocol's UnitOfWork), `engine` (connections, the single SQLite writer,
contention as Busy), `outbox` (the ONOS sync's OutboxStore: rows, lease, state).
"""
from __future__ import annotations

from contextlib import AbstractContextManager

from ..signal import ChangeSignal, PushedPollSignal
from .engine import PgTimeouts
from .outbox import SqlOutbox
from .uow import SqlUnitOfWork

__all__ = ["PgTimeouts", "SqlStore"]

# Seconds between reads of a SQLite change log for writers that cannot signal (other
# processes on the file; this process's commits push, engine.py): one indexed lookup.
SQLITE_LOG_POLL = 0.05


class SqlStore(SqlOutbox):
    """The IPAM's Store (and the sync's OutboxStore) on one database."""

    def __init__(self, url: str, *, migrate: bool = True, pool_size: int = 8,
                 timeouts: PgTimeouts | None = None) -> None:
        super().__init__(url, pool_size=pool_size, timeouts=timeouts)
        if migrate:
            from ...migrate import upgrade
            upgrade(self.engine)

    def transaction(self) -> AbstractContextManager[SqlUnitOfWork]:
        return self.tx(True)

    def read(self) -> AbstractContextManager[SqlUnitOfWork]:
        return self.tx(False)

    def consistent_read(self) -> AbstractContextManager[SqlUnitOfWork]:
        return self.tx(False, consistent=True)

    def change_signal(self) -> ChangeSignal:
        if self.postgres:
            from .listen import PgListener
            return PgListener(self.url)
        return self.commits.add(PushedPollSignal(SQLITE_LOG_POLL))
