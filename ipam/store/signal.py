"""How a replica learns that the change log grew: `ChangeSignal`s the stores hand out.

A tailer waits on one between reads of the log. PostgreSQL pushes (LISTEN/NOTIFY, the
NOTIFY sent in the writing transaction, so it arrives after the commit), with a fallback
poll for a lost notification or connection; a SQLite file is shared with other processes
that cannot signal us, so it is polled (a read of the log's newest rows is one indexed
lookup), and this process's own commits push as well, so the common case (one controller on
its file) does not wait for the poll; the memory store signals on commit.
"""
from __future__ import annotations

import threading
from typing import Protocol


class ChangeSignal(Protocol):
    def wait(self, timeout: float) -> None:
        """Return when the log may have new rows, or after `timeout` seconds at most."""
    def close(self) -> None: ...


class PollSignal:
    """No push: 'maybe' every `interval` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._closed = threading.Event()

    def wait(self, timeout: float) -> None:
        self._closed.wait(min(timeout, self.interval))

    def close(self) -> None:
        self._closed.set()


class EventSignal:
    """Pushed by whoever commits (`fire`); readers wake at once."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.closed = False

    def fire(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> None:
        if self._event.wait(timeout):
            self._event.clear()

    def close(self) -> None:
        self.closed = True
        self._event.set()


class PushedPollSignal(EventSignal):
    """Pushed by this process's commits, and 'maybe' every `interval` seconds for writers
    that cannot push (another process on the same SQLite file)."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval

    def wait(self, timeout: float) -> None:
        super().wait(min(timeout, self.interval))


class SignalHub:
    """The signals a store's commits fire: one per tailer that asked for one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signals: list[EventSignal] = []

    def add(self, sig: EventSignal) -> EventSignal:
        with self._lock:
            self._signals.append(sig)
        return sig

    def fire(self) -> None:
        with self._lock:
            # A closed signal's tailer has stopped: forget it (a store outliving many
            # tailers, as in tests and benches, would fire them all on every commit).
            self._signals = signals = [s for s in self._signals if not s.closed]
        for sig in signals:
            sig.fire()
