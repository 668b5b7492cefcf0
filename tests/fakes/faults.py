"""Failure injection shared by the agent-side fakes: arm a method to raise once."""
from __future__ import annotations

import threading


class Faults:
    """`arm("add_port", exc, after=1)`: the second call of add_port raises `exc`, once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, tuple[int, BaseException]] = {}

    def arm(self, method: str, exc: BaseException, after: int = 0) -> None:
        with self._lock:
            self._armed[method] = (after, exc)

    def check(self, method: str) -> None:
        """Called by a fake on entry to `method`: raise if this is the armed call."""
        with self._lock:
            if method not in self._armed:
                return
            after, exc = self._armed.pop(method)
            if after:
                self._armed[method] = (after - 1, exc)
                return
        raise exc

    def pending(self) -> set[str]:
        """Methods armed but never reached: a test that expects its fault to fire checks
        this is empty, so it cannot pass by injecting into a step the code skipped."""
        with self._lock:
            return set(self._armed)


__all__ = ["Faults"]
