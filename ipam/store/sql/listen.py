"""PostgreSQL LISTEN on the change log's channel, as a `ChangeSignal`.

One connection per replica (not per watcher) on a thread of its own, in autocommit mode.
A NOTIFY is only a hint: the tailer still reads the log by revision, and polls every
`fallback` seconds, so a notification lost with a dropped connection delays a change by
at most that long, and never loses it.
"""
from __future__ import annotations

import logging
import threading

from .statements import CHANGE_LOG_CHANNEL

log = logging.getLogger(__name__)


class PgListener:
    def __init__(self, url: str, fallback: float = 1.0, connect_timeout: int = 5) -> None:
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.fallback = fallback
        self.connect_timeout = connect_timeout
        self._event = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True,
                                     connect_timeout=self.connect_timeout) as conn:
                    conn.execute(f"LISTEN {CHANGE_LOG_CHANNEL}")
                    self._event.set()   # whatever committed while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._event.set()
            except psycopg.Error as exc:
                log.warning("change-log listen lost error=%s retry_in=%.1fs", exc, self.fallback)
                self._stop.wait(self.fallback)

    def wait(self, timeout: float) -> None:
        if self._event.wait(min(timeout, self.fallback)):
            self._event.clear()

    def close(self) -> None:
        self._stop.set()
        self._event.set()
        self._thread.join(timeout=5)
