"""The small helpers many tests share, defined once: a free loopback port, whether a pid
lives, waiting on state, and fake time.

Plain functions and one class, stdlib only, so a bench script or a lab process can import
them as cheaply as a test. The pytest fixtures built on them are in tests/conftest.py.
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago: for a server that must be told its
    port before it starts (or must come back on the same one after a stop)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """The process exists and has not exited. A detached daemon is reparented; until its new
    parent reaps it, it is a zombie that kill(0) still finds: that counts as exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(pred: Callable[[], object], timeout: float = 10.0, poll: float = 0.05) -> bool:
    """Poll `pred` until it is true (True) or `timeout` seconds passed (False): tests wait on
    the state they check, never for a fixed time. `pred` runs at least once, even with a
    timeout of 0."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def wait_for(pred: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05) -> None:
    """`wait_until`, raising TimeoutError naming `what` instead of returning False: for lab
    set-up steps, where there is nothing to assert, only something that must happen."""
    if not wait_until(pred, timeout, interval):
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class FakeClock:
    """Time that moves only when a test says so: `clock()` reads it, `clock.now += s` or
    `clock.sleep(s)` moves it. Lets a test cross a quarantine, a retention, a backoff or a
    lease without waiting for it. Starts at 1e6 s, well clear of 0, like a real clock."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
