"""The WatchTopology subscriber: one thread that holds the stream open, hands each event
to the datapath loop through a bounded queue, and reconnects after a break.

A full queue blocks the receiver, which stops reading, which makes gRPC's flow control
hold the controller's sender back: a slow agent slows its own stream (the controller then
coalesces or resends a snapshot) instead of growing a buffer here.

It resumes from the last revision it received whole (a ``complete`` event): everything
up to it is in the queue, in order, so nothing is missed or applied out of order. After a
break it waits a full-jitter exponential backoff (a random delay in [0, min(cap,
base * 2**attempt)]) so the agents of a cluster do not reconnect in one wave after a
controller restart.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb

from .seams import EventStream, TopologySource

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, base: float, cap: float,
                  rand: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt))."""
    return rand() * min(cap, base * (2 ** min(attempt, 30)))


@dataclass(frozen=True)
class Disconnected:
    """The stream broke (or the controller ended it); a new one follows."""

    reason: str


@dataclass(frozen=True)
class Unimplemented:
    """The controller has no WatchTopology (older than the agent): poll instead."""

    detail: str


Item = pb.WatchTopologyEvent | Disconnected | Unimplemented


class TopologyWatcher:
    def __init__(self, source: TopologySource, node: str, out: queue.Queue[Item],
                 stop_event: threading.Event, *, target: str = "", backoff_base: float = 0.25,
                 backoff_cap: float = 5.0, from_revision: int = 0) -> None:
        self.source = source
        self.node = node
        self.out = out
        self.stop_event = stop_event
        self.target = target
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.resume_from = from_revision
        self.connects = 0                     # streams opened (first one included)
        self.last_heard = time.monotonic()    # the last event, or the last stream opened
        self._lock = threading.Lock()
        self._call: EventStream | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="topology-watch", daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """End the stream from another thread; the receiver exits."""
        with self._lock:
            self._closed = True
            call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def cancel_if_silent(self, limit: float) -> bool:
        """End a stream that has said nothing for ``limit`` seconds (the controller sends
        an empty progress event every few seconds): a controller host that vanished
        without a reset leaves a TCP stream that would otherwise wait for hours. The
        receiver reconnects and resumes. True when it cancelled one."""
        with self._lock:
            call = self._call
            silent = time.monotonic() - self.last_heard
        if call is None or silent < limit:
            return False
        log.warning("topology watch silent for %.0fs, reconnecting controller=%s", silent,
                    self.target or "-")
        call.cancel()
        return True

    def _stopping(self) -> bool:
        return self._closed or self.stop_event.is_set()

    def run(self) -> None:
        attempt = 0
        last_warning = 0.0
        while not self._stopping():
            reason = "ended by the controller"
            try:
                with self._lock:
                    if self._closed:
                        return
                    call = self.source.WatchTopology(
                        pb.WatchTopologyRequest(node=self.node, from_revision=self.resume_from))
                    self._call = call
                    self.last_heard = time.monotonic()
                self.connects += 1
                for ev in call:
                    attempt = 0
                    self.last_heard = time.monotonic()
                    if not self._put(ev):
                        return
                    if ev.complete:
                        self.resume_from = ev.revision
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                detail = err.details() if isinstance(err, grpc.Call) else str(err)
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    self._put(Unimplemented(detail or ""))
                    return
                if self._stopping():
                    return
                reason = f"{code.name if code else 'error'} {detail or ''}".rstrip()
                if code == grpc.StatusCode.CANCELLED:
                    reason = "silent, cancelled"
            finally:
                with self._lock:
                    self._call = None
            if not self._put(Disconnected(reason)):
                return
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap)
            attempt += 1
            now = time.monotonic()
            # A controller down for minutes would log a line per retry: warn now and then.
            level = logging.WARNING if now - last_warning >= 30 else logging.DEBUG
            if level == logging.WARNING:
                last_warning = now
            log.log(level, "topology watch broken controller=%s resume_from=%d retry_in_s=%.2f"
                    " attempt=%d: %s", self.target or "-", self.resume_from, delay, attempt,
                    reason)
            if self.stop_event.wait(delay):
                return

    def _put(self, item: Item) -> bool:
        """Blocks while the loop is behind (see the module docstring); False on stop."""
        while not self._stopping():
            try:
                self.out.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False
