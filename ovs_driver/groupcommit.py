"""Group commit (STYLE.md 17): requests that arrive while a batch is in flight go together
in the next batch, and each caller waits for its own answer.

Why: ovs-vswitchd on the userspace datapath re-plans every port on each OVSDB change
(O(ports) CPU per transaction, 36-42 ms at 100 ports, docs/performance.md), so a burst of
100 attaches committed one by one costs it 100 passes; committed together, one per batch.

No timer and no thread of its own: the first caller finds nothing in flight and runs its
batch at once (an idle request pays nothing); callers that arrive meanwhile queue, and
when the batch ends one of them leads the next with everything queued. The window is the
time the previous batch took, never a fixed wait. A batch that fails as a whole is run
again item by item, so one bad request fails alone. Pure threading: no OVSDB here, so it
is unit-tested without root (tests/unit/test_group_commit.py).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ovs_driver.errors import OvsError

K = TypeVar("K")
R = TypeVar("R")

# One transaction with this many ports is still a few ms; more would make the leader's
# own wait (and the batch's failure radius) grow without helping vswitchd much more.
MAX_BATCH = 64


@dataclass
class _Slot(Generic[K, R]):
    item: K
    done: bool = False
    result: R | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    """What the committer did, for benchmarks and tests (read without the lock: ints)."""

    batches: int = 0
    items: int = 0
    fallbacks: int = 0  # batches that failed as a whole and were re-run item by item
    sizes: list[int] = field(default_factory=list)  # the last few batch sizes

    def note(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.sizes = [*self.sizes[-63:], size]


class GroupCommit(Generic[K, R]):
    """Runs ``run_batch`` over the items of concurrent ``submit`` calls.

    ``run_batch(items)`` returns one entry per item, in order: its result, or the
    ``OvsError`` that item alone failed with. If it raises an ``OvsError`` the batch failed
    as a whole: when ``retry_alone(error)`` says one item may be the cause (the server
    refused the transaction), each item is run again alone and gets its own answer;
    otherwise (a timeout, a lost connection: each item alone would wait and fail the same
    way, one after the other) every caller gets that error at once. Anything else raised
    is a bug and reaches every caller of the batch.
    """

    def __init__(self, run_batch: Callable[[Sequence[K]], Sequence[R | OvsError]],
                 max_batch: int = MAX_BATCH,
                 retry_alone: Callable[[OvsError], bool] = lambda exc: True) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._run = run_batch
        self._max = max_batch
        self._retry_alone = retry_alone
        self._cv = threading.Condition()
        self._queue: list[_Slot[K, R]] = []
        self._busy = False
        self.stats = BatchStats()

    def queued(self) -> int:
        """Requests waiting for the next batch (not those in the batch in flight)."""
        with self._cv:
            return len(self._queue)

    def submit(self, item: K) -> R:
        """Return ``item``'s result once its batch has run, or raise its own error."""
        slot: _Slot[K, R] = _Slot(item)
        with self._cv:
            self._queue.append(slot)
            while not slot.done:
                if self._busy:
                    self._cv.wait()
                    continue
                self._busy = True
                batch, self._queue = self._queue[:self._max], self._queue[self._max:]
                self._cv.release()
                try:
                    self._lead(batch)
                finally:
                    self._cv.acquire()
                    self._busy = False
                    self._cv.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]  # set with done when no error

    def _lead(self, batch: list[_Slot[K, R]]) -> None:
        """Run one batch outside the lock and hand every slot its answer."""
        self.stats.note(len(batch))
        try:
            try:
                answers = self._answers(batch)
            except OvsError as exc:
                if len(batch) == 1 or not self._retry_alone(exc):
                    raise
                self.stats.fallbacks += 1
                answers = []
                for slot in batch:
                    try:
                        answers.extend(self._answers([slot]))
                    except OvsError as exc:
                        answers.append(exc)
        except BaseException as exc:  # the batch's own error, a bug: every waiter gets it
            for slot in batch:
                slot.error, slot.done = exc, True
            raise
        for slot, answer in zip(batch, answers, strict=True):
            if isinstance(answer, OvsError):
                slot.error = answer
            else:
                slot.result = answer
            slot.done = True

    def _answers(self, batch: list[_Slot[K, R]]) -> list[R | OvsError]:
        answers = list(self._run([s.item for s in batch]))
        if len(answers) != len(batch):
            raise RuntimeError(f"run_batch answered {len(answers)} of {len(batch)} items")
        return answers


__all__ = ["MAX_BATCH", "BatchStats", "GroupCommit"]
