"""Group commit of pod-path requests (STYLE.md 17): the allocations that arrive while one is
committing share the next transaction, and each caller gets its own answer.

Why: on SQLite a commit (its WAL write, BEGIN/COMMIT and the SQLAlchemy transaction around
them) was over a third of the controller's CPU per allocation (docs/performance.md); the
rows of concurrent allocations touch the same index pages, so one commit for several costs
little more than one for one.

No timer and no thread of its own: a request that finds nothing in flight runs alone at once
on the plain path (an idle controller pays nothing). Requests that come meanwhile queue;
when the batch in flight ends, the first of them leads the next with everything queued by
then. How a batch runs is the caller's (`run_batch`): one transaction with a savepoint per
request, so a request that fails is undone alone and answered with its own error. A batch
that fails as a whole (a commit refused, a caller's deadline passed before the commit) is
run again request by request on the plain path, each under its own deadline
(ipam.deadline). Pure threading, no store: unit-tested alone (tests/unit/test_ipam_batching.py).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from . import deadline

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# A batch holds the store's write lock for all of its requests; past a few dozen the last
# caller's wait grows more than the shared commit saves.
MAX_BATCH = 32


@dataclass(frozen=True)
class Pending(Generic[T]):
    """One request as the batch sees it: the item and its caller's deadline."""

    item: T
    due: float | None   # time.monotonic(); None: no deadline


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Caller(Generic[T, R]):
    job: Pending[T]
    # Held from the start; released once to wake the caller. A bare lock, not an Event:
    # Event.set is a Condition's notify_all in Python, a few percent of the controller's
    # CPU at thousands of calls a second (py-spy).
    woken: threading.Lock = field(default_factory=_held_lock)
    leads: bool = False
    done: bool = False
    result: R | None = None
    error: BaseException | None = None


@dataclass
class BatchCounts:
    """What the group commit did (benchmarks and tests; plain ints, read without a lock)."""

    batches: int = 0          # transactions run for more than one request
    batched: int = 0          # requests answered by those
    alone: int = 0            # requests run on the plain path (idle, or a batch's fallback)
    fallbacks: int = 0        # batches that failed as a whole and ran request by request
    largest: int = 0


class GroupCommit(Generic[T, R]):
    """`submit(item)` answers like `run_one(item)`, sharing transactions when concurrent.

    `run_one(item)` runs one request alone (under its caller's deadline, already set).
    `run_batch(pendings)` runs several in one transaction and returns one entry per request,
    in order: its result or the exception it alone failed with; if it raises, nothing of
    the batch committed and each request is run again alone.
    """

    def __init__(self, run_one: Callable[[T], R],
                 run_batch: Callable[[Sequence[Pending[T]]], Sequence[R | Exception]],
                 max_batch: int = MAX_BATCH) -> None:
        self._one, self._many, self._max = run_one, run_batch, max(1, max_batch)
        self._lock = threading.Lock()
        self._queue: list[_Caller[T, R]] = []
        self._in_flight = False
        self.counts = BatchCounts()

    def submit(self, item: T) -> R:
        me: _Caller[T, R] = _Caller(Pending(item, deadline.current()))
        with self._lock:
            if self._in_flight:
                self._queue.append(me)
            else:
                self._in_flight = me.leads = True
        if not me.leads:
            me.woken.acquire()   # answered, or handed the lead of the next batch
        if me.leads:
            self._lead(me)
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]  # set when there is no error

    def _lead(self, me: _Caller[T, R]) -> None:
        with self._lock:
            batch = [me, *self._queue[:self._max - 1]]
            del self._queue[:self._max - 1]
        try:
            if len(batch) == 1:
                self._alone(me)
            else:
                self._together(batch)
        except BaseException as exc:  # a bug or an interrupt: no caller waits forever on it
            for c in batch:
                if not c.done:
                    c.error, c.done = exc, True
            raise
        finally:
            with self._lock:
                nxt = self._queue.pop(0) if self._queue else None
                if nxt is None:
                    self._in_flight = False
                else:
                    nxt.leads = True
            for c in batch[1:]:
                c.woken.release()
            if nxt is not None:
                nxt.woken.release()

    def _alone(self, c: _Caller[T, R]) -> None:
        self.counts.alone += 1
        try:
            with deadline.until(c.job.due):
                c.result = self._one(c.job.item)
        except BaseException as exc:  # noqa: BLE001 - the caller's own error, raised there
            c.error = exc
        c.done = True

    def _together(self, batch: list[_Caller[T, R]]) -> None:
        try:
            answers = list(self._many([c.job for c in batch]))
            if len(answers) != len(batch):
                raise RuntimeError(f"run_batch answered {len(answers)} of {len(batch)}")
        except Exception as exc:  # noqa: BLE001 - nothing committed: each runs alone
            log.debug("batch of %d failed as a whole, each runs alone: %s", len(batch), exc)
            self.counts.fallbacks += 1
            for c in batch:
                self._alone(c)
            return
        self.counts.batches += 1
        self.counts.batched += len(batch)
        self.counts.largest = max(self.counts.largest, len(batch))
        for c, answer in zip(batch, answers):
            if isinstance(answer, Exception):
                c.error = answer
            else:
                c.result = answer
            c.done = True


__all__ = ["MAX_BATCH", "BatchCounts", "GroupCommit", "Pending"]
