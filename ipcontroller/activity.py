"""A periodic summary of the pod path, instead of one log line per allocation.

At thousands of allocations per second a JSON line per request cost the controller a fifth
of its CPU (tests/bench/ipam_scale.py, --log-level info vs warning). Each port's history is
in the store and in the ONOS outbox; the log keeps failures one by one (servicer `_handle`)
and, for the happy path, how many of each outcome happened in each interval. `--log-level
debug` brings back a line per request.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("ipcontroller.activity")


class ActivitySummary:
    """Counts events; the first event after `interval` seconds logs and resets the counts.
    No thread of its own: an idle controller has nothing to report."""

    def __init__(self, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._since = clock()

    def note(self, event: str) -> None:
        now = self.clock()
        with self._lock:
            self._counts[event] += 1
            if now - self._since < self.interval:
                return
            counts, since = self._counts, self._since
            self._counts, self._since = Counter(), now
        log.info("activity in the last %.0fs: %s", now - since,
                 " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
