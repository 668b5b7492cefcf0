"""WatchTopology: agents follow the change log as a stream instead of polling snapshots.

Pieces, one direction each:

- `Tailer` (one per replica, shared by every watcher): reads the log after the last
  revision it delivered whenever the store's `ChangeSignal` fires (NOTIFY on PostgreSQL, a
  50 ms poll on SQLite) and appends the rows to every watcher's `Mailbox`. A gap in the
  revisions is re-read "settled" (ipam: it waits for writers still committing), so no row
  is passed over and none is delivered twice.
- `Mailbox` (one per stream): bounded. A watcher that falls behind has its backlog
  coalesced (the latest row per object: rows carry whole objects); if even that is over the
  bound, the backlog is dropped and the stream sends a fresh snapshot. The controller never
  holds more than `queue_rows` rows for any watcher.
- `Relevance` (one per stream) decides what a node is sent. It gets every node and every
  subnet (tunnels, gateways) and every port removal (an id: an agent ignores one it does not
  know; filtering removals would need the agent's whole view here), but a port upsert only
  when the port has an address in a subnet the node has a port of its own in: the remote
  MACs it can ever forward to (pods on other subnets are reached through the gateway). When
  the node gains its first port in a subnet the stream sends that subnet's current ports.
  A subnet the node leaves stays relevant for the stream's life (the agent keeps entries it
  already has up to date; dropping them would need removals of every port there).
- `WatchService.serve`: the RPC, a coroutine on the server's event loop (no thread per
  stream; what reads the store runs on a few threads of the watch's own). From revision
  0, from below the compaction floor, or from a revision this log never had (a database
  restored or replaced), a snapshot in messages of at most `max_message_bytes` (reset on
  the first, complete on the last), then deltas.
  From a kept revision: the rows after it (read from the log, then live), no snapshot.
- Wire bytes, once: every row is turned into a protobuf and serialized once per replica
  (`WireCache`, by revision), not once per stream; a stream's message is its small header
  and the concatenated bytes of the changes it admits (protobuf's wire format is the
  concatenation of its fields), so `serve` yields serialized `WatchTopologyEvent`s and the
  method is registered with a serializer that passes bytes through (`WireInterceptor`).
  At 1,000 watchers the per-watcher cost of a change was the protobuf build and encode.
- Events, once per view: on the live feed, the streams whose relevance is the same and
  that have no row of their own in a batch are sent the same events, so they are filtered,
  joined and framed once per (batch, subnet set) and shared (`BatchShare`,
  `Stream.shared`); a stream with an own-port row in the batch, one catching up, or one
  holding some of the rows already filters for itself (`Stream.admit`). What is left per
  stream is gRPC's write (docs/topology-watch.md, "Where a change's CPU goes").
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import functools
import logging
import operator
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb
from ipam import changes as ch
from ipam.changes import Change, LogRow
from ipam.errors import Busy
from ipam.service import IpamService
from ipam.store.signal import ChangeSignal

from .errors import refusal_for
from .metrics import (
    WATCH_BYTES,
    WATCH_COALESCED,
    WATCH_EVENTS,
    WATCH_OVERFLOWS,
    WATCH_SNAPSHOTS,
    WATCHERS,
)

log = logging.getLogger(__name__)

# Seconds a tailer waits after a wake-up before it reads: at hundreds of commits a second
# one read then serves a batch, not one commit, for at most this much more latency.
BATCH_DELAY = 0.01
# ... plus this much per watcher, up to BATCH_DELAY_MAX: every batch is one message per
# relevant stream, and a message costs gRPC ~30 us of the event loop whatever its size
# (docs/topology-watch.md; on the sync server it was a thread hand-off, more), so at 1,000
# watchers the number of batches a second, not the changes in them, is what the
# controller spends on.
BATCH_DELAY_PER_WATCHER = 0.00005
BATCH_DELAY_MAX = 0.1


@dataclass(frozen=True)
class WatchSettings:
    """Bounds of the watch (daemon flags)."""

    max_watchers: int = 1024
    # One message's size and count: well under gRPC's 4 MiB default, so a snapshot of any
    # size goes out as many small messages an agent applies one by one.
    max_message_bytes: int = 512 * 1024
    max_message_changes: int = 4096
    queue_rows: int = 20_000          # a watcher's backlog, after coalescing
    batch_rows: int = 5_000           # rows per read of the log
    idle_progress_seconds: float = 5.0   # an empty event so an idle watcher's revision moves
    snapshot_reuse_seconds: float = 2.0   # one snapshot serves the streams of this window
    read_threads: int = 4             # the streams' store reads (snapshots, catch-ups)
    batch_window_max: float = BATCH_DELAY_MAX   # the batching window's bound (`batch_delay`)


# ------------------------------------------------------------------ pure pieces

def change_pb(c: Change) -> pb.TopologyChange:
    """A log row as the wire's TopologyChange."""
    d = c.data
    if c.kind == ch.PORT:
        if c.op == ch.DEL:
            return pb.TopologyChange(port_removed=c.key)
        return pb.TopologyChange(port=pb.RemotePort(port_id=c.key, mac=d["mac"], ips=d["ips"],
                                                    node=c.node))
    if c.kind == ch.NODE:
        if c.op == ch.DEL:
            return pb.TopologyChange(node_removed=c.key)
        return pb.TopologyChange(node=pb.NodeInfo(
            name=c.key, underlay_ip=d["underlay_ip"], gateway=d["gateway"],
            datapath=d["datapath"], state="ready" if d["ready"] else "stale",
            last_seen=rfc3339(d["last_seen"]), gateway_cidrs=d["gateway_cidrs"]))
    if c.op == ch.DEL:
        return pb.TopologyChange(subnet_removed=c.key)
    return pb.TopologyChange(subnet=pb.Subnet(id=c.key, pool=d["pool"], cidr=d["cidr"],
                                              gateway=d["gateway"]))


def rfc3339(epoch: float) -> str:
    """A store time (epoch seconds; 0 = never) as the API writes times: RFC 3339, UTC."""
    if not epoch:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# WatchTopologyEvent.changes is field 4, length-delimited: tag (4 << 3) | 2.
_CHANGES_TAG = b"\x22"


def entry(change: pb.TopologyChange) -> bytes:
    """One change as it sits inside a WatchTopologyEvent on the wire (tag, length, bytes):
    an event is its header followed by any concatenation of these."""
    b = change.SerializeToString()
    return _CHANGES_TAG + _varint(len(b)) + b


def event_bytes(revision: int, entries: list[bytes], *, reset: bool, complete: bool) -> bytes:
    """A serialized WatchTopologyEvent: the same bytes the message would serialize to."""
    return _head(revision, reset, complete) + b"".join(entries)


@functools.lru_cache(maxsize=256)
def _head(revision: int, reset: bool, complete: bool) -> bytes:
    # Every stream of a batch sends the same header: built once, not once per stream.
    return pb.WatchTopologyEvent(revision=revision, reset=reset,
                                 complete=complete).SerializeToString()


def _wire_size(item: pb.TopologyChange | bytes) -> int:
    if isinstance(item, bytes):
        return len(item)
    n = item.ByteSize()
    return n + 1 + (n.bit_length() + 6) // 7      # tag + varint length


T = TypeVar("T", pb.TopologyChange, bytes)


def chunk(items: Iterable[T], max_bytes: int, max_count: int) -> Iterator[list[T]]:
    """Consecutive runs of changes (messages, or `entry` bytes), each at most `max_count`
    long and at most `max_bytes` on the wire (a change's size plus its field tag and length;
    one change alone larger than `max_bytes` cannot happen: a change is one port, node or
    subnet of bounded fields)."""
    run: list[T] = []
    size = 0
    for item in items:
        n = _wire_size(item)
        if run and (size + n > max_bytes or len(run) >= max_count):
            yield run
            run, size = [], 0
        run.append(item)
        size += n
    if run:
        yield run


@dataclass
class Relevance:
    """What one node is sent (the module docstring says what and why). `node` empty (an
    admin watching) means everything."""

    node: str
    own: dict[str, tuple[str, ...]] = field(default_factory=dict)
    subnets: set[str] = field(default_factory=set)

    def seed(self, own_ports: Iterable[Change]) -> None:
        for c in own_ports:
            self.own[c.key] = c.subnets
            self.subnets.update(c.subnets)

    def admit(self, c: Change) -> bool:
        if not self.node or c.kind != ch.PORT or c.op == ch.DEL:
            return True
        return c.node == self.node or not self.subnets.isdisjoint(c.subnets)

    def gained(self, c: Change) -> list[str]:
        """Note an own port's row; the subnets the node has just gained (to be refreshed)."""
        if not self.node or c.kind != ch.PORT or c.node != self.node:
            return []
        if c.op == ch.DEL:
            self.own.pop(c.key, None)
            return []
        self.own[c.key] = c.subnets
        new = [s for s in c.subnets if s not in self.subnets]
        self.subnets.update(new)
        return new


class WireCache:
    """Each log row's `entry` bytes, built by the first stream that sends it and reused by
    every other (a revision names one row; the row is checked too, as a database restored
    under a running replica may number other rows alike). Bounded: past `limit` entries the
    older half goes (a watcher that far behind is coalesced or snapshotted anyway, and a
    miss only costs one more encoding)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._by_rev: dict[int, tuple[Change, bytes]] = {}

    def get(self, row: LogRow) -> bytes:
        hit = self._by_rev.get(row.revision)
        if hit is not None and _same(hit[0], row.change):
            return hit[1]
        b = entry(change_pb(row.change))
        with self._lock:
            self._by_rev[row.revision] = (row.change, b)
            if len(self._by_rev) > self.limit:
                for rev in sorted(self._by_rev)[: len(self._by_rev) // 2]:
                    del self._by_rev[rev]
        return b


def _same(a: Change, b: Change) -> bool:
    # The tailer hands every stream the same objects; `data` is outside Change's equality.
    return a is b or (a == b and a.data == b.data)


# ------------------------------------------------------------- mailbox, tailer

class Mailbox:
    """One watcher's backlog of log rows, bounded (see the module docstring). A stream on an
    event loop (`loop`) waits with `wait`; the tailer, a thread, wakes it through the loop
    (`wake_loops`: one hand-off per loop and batch, not one per stream)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.limit = limit
        self.loop = loop
        self.ready = asyncio.Event() if loop is not None else None
        self._cond = threading.Condition()
        self._rows: list[LogRow] = []
        self._overflow = False
        self._closed = False

    def offer(self, rows: list[LogRow]) -> None:
        with self._cond:
            if self._overflow or self._closed:
                return
            self._rows.extend(rows)
            if len(self._rows) > self.limit:
                before = len(self._rows)
                self._rows = ch.coalesce(self._rows)
                WATCH_COALESCED.inc(before - len(self._rows))
                if len(self._rows) > self.limit:
                    self._rows = []
                    self._overflow = True
                    WATCH_OVERFLOWS.inc()
            self._cond.notify()

    def overflow(self) -> None:
        """The tailer lost its place (the log was compacted past it): snapshot."""
        with self._cond:
            self._rows, self._overflow = [], True
            self._cond.notify()

    def _drain(self) -> tuple[list[LogRow], bool] | None:
        """Under the lock: (rows, overflowed), emptied, or None when there is nothing yet."""
        if not (self._rows or self._overflow or self._closed):
            return None
        rows, over = self._rows, self._overflow
        self._rows, self._overflow = [], False
        return rows, over

    def take(self, timeout: float) -> tuple[list[LogRow], bool]:
        """(rows, overflowed) waiting up to `timeout` for either."""
        with self._cond:
            got = self._drain()
            if got is None:
                self._cond.wait(timeout)
                got = self._drain()
            return got or ([], False)

    async def wait(self, timeout: float) -> tuple[list[LogRow], bool]:
        """`take` for a stream on the event loop the box was made for."""
        assert self.ready is not None
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                got = self._drain()
                if got is not None:
                    return got
                # Cleared under the lock an offer appends under: its wake-up comes after.
                self.ready.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return [], False
            try:
                async with asyncio.timeout(left):
                    await self.ready.wait()
            except TimeoutError:
                return [], False

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._rows = []
            self._cond.notify()


class Tailer:
    """The replica's one reader of the change log (see the module docstring)."""

    def __init__(self, ipam: IpamService, signal: ChangeSignal, batch_rows: int,
                 window_max: float = BATCH_DELAY_MAX) -> None:
        self.log = ipam.topology
        self.signal = signal
        self.batch_rows = batch_rows
        self.window_max = window_max
        self._lock = threading.Lock()
        self._boxes: set[Mailbox] = set()
        self._stop = threading.Event()
        self.position = self.log.bounds()[1]
        self._thread = threading.Thread(target=self._run, name="change-log-tailer",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def subscribe(self, box: Mailbox) -> int:
        """Register `box`; every row after the returned revision will be offered to it."""
        with self._lock:
            if not self._boxes:
                # Idle until now, so not reading: nobody missed anything, jump to the head.
                self.position = max(self.position, self.log.bounds()[1])
            self._boxes.add(box)
            return self.position

    def unsubscribe(self, box: Mailbox) -> None:
        with self._lock:
            self._boxes.discard(box)

    def poll_once(self) -> int:
        """Read and fan out what is new; the number of rows delivered."""
        rows, floor = self.log.after(self.position, self.batch_rows)
        if floor > self.position:
            # Compacted past us (a replica that stalled): every watcher needs a snapshot.
            _, head = self.log.bounds()
            with self._lock:
                self.position = head
                for box in self._boxes:
                    box.overflow()
                wake_loops(self._boxes)
            log.warning("change-log tailer fell below the floor floor=%d resumed_at=%d",
                        floor, head)
            return 0
        if rows and _has_gap(self.position, rows):
            rows, floor = self.log.after(self.position, self.batch_rows, settle=True)
        if not rows:
            return 0
        with self._lock:
            rows = [r for r in rows if r.revision > self.position]   # (a jump meanwhile)
            if not rows:
                return 0
            self.position = rows[-1].revision
            for box in self._boxes:
                box.offer(rows)
            wake_loops(self._boxes)
        return len(rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    watchers = len(self._boxes)
                # Nobody to feed: no reads (a replica without watchers costs the database
                # nothing); the first subscriber moves `position` to the head.
                if not watchers or self.poll_once() < self.batch_rows:
                    self.signal.wait(1.0)
                    # Let a burst of commits land before reading: one read serves them all.
                    self._stop.wait(batch_delay(watchers, self.window_max))
            except Busy as exc:
                log.warning("change-log read failed error=%s", exc)
                self._stop.wait(0.5)
            except Exception:  # noqa: BLE001 - the tailer must outlive a database outage
                log.exception("change-log tailer failed; retrying")
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self.signal.close()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)


def wake_loops(boxes: Iterable[Mailbox]) -> None:
    """Wake the streams of `boxes` that wait on an event loop: one call into each loop
    (a write to its wake-up pipe), whatever the number of streams on it."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
    for box in boxes:
        if box.loop is not None and box.ready is not None:
            by_loop.setdefault(box.loop, []).append(box.ready)
    for loop, events in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_all, events)
        except RuntimeError:     # the loop closed (a server stopping): nobody to wake
            pass


def _set_all(events: list[asyncio.Event]) -> None:
    for e in events:
        e.set()


def batch_delay(watchers: int, window_max: float = BATCH_DELAY_MAX) -> float:
    """The tailer's batching window with `watchers` streams (see BATCH_DELAY_PER_WATCHER),
    at most `window_max` (`--watch-batch-max-ms`)."""
    return min(window_max, BATCH_DELAY + watchers * BATCH_DELAY_PER_WATCHER)


def _has_gap(after: int, rows: list[LogRow]) -> bool:
    expect = after + 1
    for r in rows:
        if r.revision != expect:
            return True
        expect += 1
    return False


def encode_events(revision: int, changes: list[bytes], s: WatchSettings, *,
                  reset: bool = False, snapshot: bool = False,
                  force: bool = False) -> list[bytes]:
    """`changes` (`entry` bytes) at `revision` as bounded serialized WatchTopologyEvents
    (none for none, unless `reset`, `snapshot` or `force`): reset on the first, complete on
    the last of a snapshot and on every other message."""
    runs = list(chunk(changes, s.max_message_bytes, s.max_message_changes))
    if not runs and (reset or snapshot or force):
        runs = [[]]
    return [event_bytes(revision, run, reset=reset and i == 0,
                        complete=not snapshot or i == len(runs) - 1)
            for i, run in enumerate(runs)]


@dataclass
class SharedBatch:
    """One batch of the live feed: its rows, the nodes its port rows are on, and the events
    already built per view (a stream's subnets; None for an admin, who sees everything)."""

    rows: list[LogRow]
    touched: frozenset[str]
    views: dict[frozenset[str] | None, list[bytes]] = field(default_factory=dict)


class BatchShare:
    """The live feed's events, built once per (batch, view) and shared by every stream of
    that view (`Stream.shared`). At 1,000 watchers a batch used to be filtered, joined and
    framed 1,000 times over though nearly every stream is sent the same thing. A batch is
    known by its first and last revision and its length, and checked row by row (the same
    objects: the tailer hands every mailbox the same rows; a mailbox that coalesced holds
    others). The newest `limit` batches are kept: streams on the loop take a batch within
    one pass, a slow one may lag a little (and then builds its own). Few, because each holds
    every view's bytes: a backlog of 20,000 rows under many distinct subnet sets is
    hundreds of MB. Event-loop only: no lock."""

    def __init__(self, limit: int = 8) -> None:
        self.limit = limit
        self._batches: collections.OrderedDict[tuple[int, int, int], SharedBatch]
        self._batches = collections.OrderedDict()

    def batch(self, rows: list[LogRow]) -> SharedBatch:
        key = (rows[0].revision, rows[-1].revision, len(rows))
        got = self._batches.get(key)
        # Row by row in C (`operator.is_`): a generator here was 3 % of the loop (py-spy).
        if got is not None and all(map(operator.is_, got.rows, rows)):
            return got
        got = SharedBatch(rows, frozenset(r.change.node for r in rows
                                          if r.change.kind == ch.PORT))
        self._batches[key] = got
        self._batches.move_to_end(key)
        while len(self._batches) > self.limit:
            self._batches.popitem(last=False)
        return got


class Tally:
    """`ecnet_watch_events_total` and `_bytes_total` for the live feed, summed on the event
    loop and added to the counters once per pass of the loop (a `call_soon`), not twice per
    message: a counter's increment takes its lock, and a batch is ~1,000 messages."""

    def __init__(self) -> None:
        self.events = 0
        self.bytes = 0
        self._pending = False

    def add(self, events: list[bytes]) -> None:
        if not events:
            return
        self.events += len(events)
        self.bytes += sum(map(len, events))
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._pending = False
        if self.events:
            WATCH_EVENTS.inc(self.events)
            WATCH_BYTES.inc(self.bytes)
            self.events = self.bytes = 0


# --------------------------------------------------------------------- the RPC

class Stream:
    """One WatchTopology call's state: where the caller's view is, and what it may see."""

    def __init__(self, svc: WatchService, node: str) -> None:
        self.svc = svc
        self.s = svc.settings
        self.relevance = Relevance(node)
        self.revision = 0
        self.catching_up = False
        self.refreshed: set[str] = set()

    def events(self, revision: int, changes: list[bytes], *, reset: bool = False,
               snapshot: bool = False, force: bool = False) -> Iterator[bytes]:
        """`changes` (`entry` bytes) at `revision` in bounded serialized WatchTopologyEvents
        (none for none, unless `force`)."""
        for ev in encode_events(revision, changes, self.s, reset=reset, snapshot=snapshot,
                                force=force):
            WATCH_EVENTS.inc()
            WATCH_BYTES.inc(len(ev))
            yield ev
        self.revision = revision

    def shared(self, rows: list[LogRow]) -> list[bytes] | None:
        """The live feed's fast path: this stream's events for `rows`, shared with every
        stream of the same view (`BatchShare`), or None when the stream must take `admit`'s
        way: it is catching up, it has some of the rows already, or the batch has a row of
        one of its own ports (which may gain it a subnet, or move its own port). Otherwise
        what it is sent depends only on the rows and its subnets, so the streams of one
        view get the same bytes, filtered and framed once. Runs on the event loop only."""
        if self.catching_up or not rows or rows[0].revision <= self.revision:
            return None
        rel = self.relevance
        batch = self.svc.share.batch(rows)
        if rel.node and rel.node in batch.touched:
            return None
        view = frozenset(rel.subnets) if rel.node else None
        evs = batch.views.get(view)
        if evs is None:
            wire = self.svc.wire
            out = [wire.get(r) for r in rows if rel.admit(r.change)]
            evs = batch.views[view] = encode_events(rows[-1].revision, out, self.s)
        self.revision = rows[-1].revision
        return evs

    def snapshot(self, reason: str) -> Iterator[bytes]:
        """A whole view (reset), then the rows from its revision to the live feed's start:
        the snapshot may be a shared one a little older than the log's head."""
        revision, items = self.svc.snapshots.get()
        position = self.svc.tailer.position   # the mailbox has every row after it
        WATCH_SNAPSHOTS.labels(reason).inc()
        rel = self.relevance = Relevance(self.relevance.node)
        rel.seed(c for c, _ in items if c.kind == ch.PORT and c.node == rel.node)
        self.catching_up = False
        out = [p for c, p in items if rel.admit(c)]
        yield from self.events(revision, out, reset=True, snapshot=True)
        if self.revision < position:
            yield from self.catch_up(position)

    def deltas(self, rows: list[LogRow]) -> Iterator[bytes]:
        """Rows after the caller's revision, filtered, each subnet the node gains refreshed."""
        admitted = self.admit(rows)
        if admitted is not None:
            out, gained, revision = admitted
            yield from self.events(revision, out + self.refresh(gained))

    def admit(self, rows: list[LogRow]) -> tuple[list[bytes], list[str], int] | None:
        """The part of `deltas` that reads nothing (the live feed runs it on the event loop):
        the entries the node is sent, the subnets it gained, the revision they bring it to;
        None when every row is one it has."""
        if not rows or rows[-1].revision <= self.revision:
            return None
        out: list[bytes] = []
        gained: list[str] = []
        rel = self.relevance
        wire = self.svc.wire
        for r in rows:
            if r.revision <= self.revision:
                continue
            c = r.change
            new = rel.gained(c)
            if self.catching_up and c.kind == ch.PORT and c.node == rel.node and rel.node:
                # The subnets of own-port rows since the caller's revision may have been
                # gained meanwhile (the relevance was seeded from today's ports): refresh once.
                new = [s for s in c.subnets if s not in self.refreshed]
            if rel.admit(c):
                out.append(wire.get(r))
            for subnet in new:
                if subnet not in self.refreshed:
                    self.refreshed.add(subnet)
                    gained.append(subnet)
        return out, gained, rows[-1].revision

    def refresh(self, subnets: list[str]) -> list[bytes]:
        """The current ports of subnets the node gained (read from the store): sent after the
        rows of their batch, so the newest state of each port is the last one applied."""
        out: list[bytes] = []
        for subnet in subnets:
            out += [entry(change_pb(p)) for p in self.svc.ipam.topology.subnet_ports(subnet)]
        return out

    def catch_up(self, upto: int) -> Iterator[bytes]:
        """The kept rows from the caller's revision up to `upto` (where the live feed
        starts), page by page; a snapshot instead as soon as some are gone (compacted)."""
        self.relevance.seed(ch.endpoint_changes(_own_rows(self.svc.ipam, self.relevance.node)))
        self.catching_up = True
        while self.revision < upto:
            at = self.revision
            rows, floor = self.svc.ipam.topology.after(at, self.s.batch_rows)
            if floor > at:
                yield from self.snapshot("compacted")
                return
            rows = [r for r in rows if r.revision <= upto]
            if not rows:
                break
            yield from self.deltas(rows)
            self.revision = max(self.revision, rows[-1].revision)
        self.catching_up = False
        self.revision = max(self.revision, upto)


def _own_rows(ipam: IpamService, node: str
              ) -> list[tuple[str, str, str, str | None, str | None]]:
    if not node:
        return []
    out: list[tuple[str, str, str, str | None, str | None]] = []
    for p in sorted(ipam.node_ports(node), key=lambda p: p.id):
        out += [(p.id, p.mac, p.node, a.ip, a.subnet_id) for a in p.addresses] or \
            [(p.id, p.mac, p.node, None, None)]
    return out


class SharedSnapshot:
    """One snapshot (read and encoded once, as `entry` bytes) for every stream that needs one
    within `reuse_seconds`: after a controller restart a thousand agents reconnect at once,
    and each reading 100k ports would cost the database and this process a thousand times
    over. A stream that takes an older copy catches up from its revision through the log."""

    def __init__(self, ipam: IpamService, reuse_seconds: float) -> None:
        self.ipam = ipam
        self.reuse_seconds = reuse_seconds
        self._lock = threading.Lock()
        self._value: tuple[int, list[tuple[Change, bytes]]] | None = None
        self._built = 0.0

    def get(self) -> tuple[int, list[tuple[Change, bytes]]]:
        with self._lock:   # concurrent askers wait for one build
            floor, _ = self.ipam.topology.bounds()
            if (self._value is None or self._value[0] < floor
                    or time.monotonic() - self._built > self.reuse_seconds):
                snap = self.ipam.topology.snapshot()
                self._value = (snap.revision, [(c, entry(change_pb(c))) for c in snap.changes])
                self._built = time.monotonic()
            return self._value

    def expire(self) -> None:
        """Drop a copy past its window (at 100k ports it holds tens of MB)."""
        with self._lock:
            if time.monotonic() - self._built > self.reuse_seconds:
                self._value = None


class WatchService:
    """The replica's watch: the tailer and the streams it feeds. A stream is a coroutine on
    the server's event loop; what it reads from the store (a snapshot, the log to catch up,
    a subnet a node gains) runs on `pool`, a few threads of the watch's own, so neither the
    loop nor the unary workers wait for it."""

    def __init__(self, ipam: IpamService, settings: WatchSettings | None = None) -> None:
        self.ipam = ipam
        self.settings = settings or WatchSettings()
        self.tailer = Tailer(ipam, ipam.store.change_signal(), self.settings.batch_rows,
                             self.settings.batch_window_max)
        self.snapshots = SharedSnapshot(ipam, self.settings.snapshot_reuse_seconds)
        self.wire = WireCache(4 * self.settings.queue_rows)
        self.share = BatchShare()    # the live feed's, on the event loop
        self.tally = Tally()
        self.pool = futures.ThreadPoolExecutor(max_workers=self.settings.read_threads,
                                               thread_name_prefix="watch-read")
        self._watchers = 0    # only counted on the event loop

    def start(self) -> None:
        self.tailer.start()

    def stop(self) -> None:
        self.tailer.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def serve(self, request: pb.WatchTopologyRequest,
                    context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        """Serialized WatchTopologyEvents (the module docstring says why bytes)."""
        if self._watchers >= self.settings.max_watchers:
            await _abort(context, Busy(f"this replica serves {self.settings.max_watchers} "
                                       "watchers already; retry later or on another replica"))
        self._watchers += 1
        WATCHERS.inc()
        box = Mailbox(self.settings.queue_rows, asyncio.get_running_loop())
        try:
            async for ev in self._serve(request, box):
                yield ev
        except Exception as exc:  # noqa: BLE001 - the one edge where errors become statuses
            await _abort(context, exc)
        finally:
            box.close()
            self.tailer.unsubscribe(box)
            WATCHERS.dec()
            self._watchers -= 1

    async def _serve(self, request: pb.WatchTopologyRequest, box: Mailbox
                     ) -> AsyncIterator[bytes]:
        stream = Stream(self, request.node)
        async for ev in self._read(self._begin(stream, request.from_revision, box)):
            yield ev
        last_sent = time.monotonic()
        idle = self.settings.idle_progress_seconds
        while True:
            rows, overflowed = await box.wait(max(0.0, last_sent + idle - time.monotonic()))
            if overflowed:
                async for ev in self._read(stream.snapshot("behind")):
                    yield ev
                last_sent = time.monotonic()
                continue
            # The live feed, on the loop: the events of this stream's view if another
            # stream built them already (`shared`), else filtering and joining shared
            # bytes for this stream alone; only a node gaining a subnet reads the store
            # (that subnet's ports), then on the pool.
            evs = stream.shared(rows)
            if evs is not None:
                self.tally.add(evs)
                for ev in evs:
                    last_sent = time.monotonic()
                    yield ev
                admitted = None
            else:
                admitted = stream.admit(rows)
            if admitted is not None:
                out, gained, revision = admitted
                if gained:
                    out += await asyncio.get_running_loop().run_in_executor(
                        self.pool, stream.refresh, gained)
                for ev in stream.events(revision, out):
                    last_sent = time.monotonic()
                    yield ev
            if time.monotonic() - last_sent >= idle:
                # Nothing for this node lately: say where the log is, so a reconnect resumes
                # from here rather than replaying (or, compacted, snapshotting) what it
                # would filter out anyway. Doubles as a keepalive.
                for ev in stream.events(stream.revision, [], force=True):
                    yield ev
                last_sent = time.monotonic()

    def _begin(self, stream: Stream, start: int, box: Mailbox) -> Iterator[bytes]:
        """Subscribe, then the caller's first events: from a kept revision the log after it,
        else a snapshot (a generator for `_read`: it reads the store)."""
        position = self.tailer.subscribe(box)
        floor, head = self.ipam.topology.bounds()
        # A revision up to the head is this log's, even if the tailer has not read that far
        # yet (the caller came from a replica a few ms ahead): the rows after `position`
        # come through the mailbox and those up to `start` are skipped.
        if start and floor <= start <= max(head, position):
            stream.revision = start
            yield from stream.catch_up(position)
        else:
            yield from stream.snapshot("first" if not start else "resync")

    async def _read(self, events: Iterator[bytes]) -> AsyncIterator[bytes]:
        """`events`, each produced on the watch's pool (they read the store)."""
        loop = asyncio.get_running_loop()
        while True:
            ev = await loop.run_in_executor(self.pool, next, events, None)
            if ev is None:
                return
            yield ev


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    refusal = refusal_for(exc)
    log.warning("WatchTopology refused code=%s error=%s msg=%s", refusal.status.name,
                pb.ErrorCode.Name(refusal.code), refusal.message)
    await refusal.abort_async(context)


WATCH_METHOD = "/ecnet.v1.IPController/WatchTopology"


def _wire(message: bytes | pb.WatchTopologyEvent) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


class WireInterceptor:
    """Registers WatchTopology's responses as the bytes `serve` already serialized (the
    generated registration would serialize a message per stream, the cost this module
    avoids); the wire is the same for every client. A layer of `calls.WrapOnce`."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method != WATCH_METHOD:
            return handler
        return grpc.unary_stream_rpc_method_handler(
            handler.unary_stream, request_deserializer=handler.request_deserializer,
            response_serializer=_wire)
