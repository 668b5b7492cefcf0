"""The caller's deadline, carried from the gRPC edge to the commit.

A caller that gave up (its deadline passed while the transaction waited on a lock) has
already told its pod "failed" and will retry; committing its allocation anyway would leave a
port nobody uses. So every store checks, just before it commits, whether the deadline of the
request it runs for has passed, and rolls back instead (as `Busy`: the caller retries).
A context variable, not a parameter: the deadline belongs to the request, not to any IPAM
operation's signature, and each gRPC worker thread runs one request at a time.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

from .errors import Busy

_deadline: ContextVar[float | None] = ContextVar("ecnet_caller_deadline", default=None)


def caller_deadline(seconds_left: float | None) -> AbstractContextManager[None]:
    """Run the block for a caller with `seconds_left` (None: no deadline)."""
    return until(None if seconds_left is None else time.monotonic() + seconds_left)


@contextmanager
def until(at: float | None) -> Iterator[None]:
    """Run the block for a caller whose deadline is `at` (time.monotonic(); None: none): a
    request handed to another thread (a group commit's leader) keeps its own deadline."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def current() -> float | None:
    """The running request's deadline (time.monotonic()), None when it has none."""
    return _deadline.get()


def passed(at: float | None = None) -> bool:
    """Whether the running request's deadline (or `at`, another request's) has passed."""
    d = _deadline.get() if at is None else at
    return d is not None and time.monotonic() >= d


def check_before_commit(at: float | None = None) -> None:
    """Raise `Busy` (the transaction rolls back) when the caller's deadline (or `at`, the
    deadline of one request in a shared transaction) has passed."""
    if passed(at):
        raise Busy("the caller's deadline passed before the commit; rolled back")
