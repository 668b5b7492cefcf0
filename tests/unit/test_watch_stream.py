"""The watch's failure paths, driven through `WatchService.serve` on every store: resume
from a kept revision (no snapshot), from a compacted or unknown one (a snapshot), a slow
watcher whose backlog overflows (a fresh snapshot, bounded memory), the tailer over a
rolled-back transaction's gap and below a compacted floor, a node gaining a subnet.

The stream is an async generator (a coroutine on the server's event loop): not asking it
for the next event is exactly a watcher that does not read, so backpressure is tested
without timing. The gRPC context is the one stand-in (a stream that stays open); the RPC
over real gRPC is in tests/integration/test_watch.py.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from ecnet_api.v1 import ecnet_pb2 as pb
from ipam.domain import AllocationRequest, PodIdentity
from ipam.service import IpamService
from ipam.store.sql.uow import SqlUnitOfWork
from ipcontroller.watch import Mailbox, Tailer, WatchService, WatchSettings


class OpenStream:
    """What serve() asks of a gRPC context, for a caller that stays connected."""

    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")

    def set_trailing_metadata(self, md: Any) -> None:
        pass


@pytest.fixture
def svc(store: Any) -> Iterator[IpamService]:
    s = IpamService(store)
    s.create_pool("a", "dynamic", quarantine_seconds=0)
    s.create_subnet("a", "10.90.0.0/24")
    s.create_pool("b", "dynamic", quarantine_seconds=0)
    s.create_subnet("b", "10.91.0.0/24")
    yield s


def _alloc(svc: IpamService, cid: str, pool: str = "a", node: str = "x") -> str:
    return svc.allocate(AllocationRequest(container_id=cid, ifname="eth0",
                                          pod=PodIdentity("ns", cid, f"u-{cid}"), node=node,
                                          pool=pool)).port.id


class Client:
    """Reads a stream into a view, as an agent does."""

    def __init__(self, watch: WatchService, node: str, frm: int = 0) -> None:
        self.watch = watch
        self.loop = asyncio.new_event_loop()    # the server's loop: runs while we read
        self.stream = watch.serve(pb.WatchTopologyRequest(node=node, from_revision=frm),
                                  OpenStream())  # type: ignore[arg-type]
        self.ports: dict[str, str] = {}
        self.revision = 0
        self.resets = 0

    def read_until(self, revision: int) -> None:
        """Read messages until the view is complete at `revision` or later."""
        while True:
            ev = self.next()
            if ev.reset:
                self.resets += 1
                self.ports.clear()
            for c in ev.changes:
                if c.WhichOneof("change") == "port":
                    self.ports[c.port.port_id] = c.port.node
                elif c.WhichOneof("change") == "port_removed":
                    self.ports.pop(c.port_removed, None)
            if ev.complete:
                self.revision = ev.revision
                if ev.revision >= revision:
                    return

    def next(self) -> pb.WatchTopologyEvent:
        """The stream's next event, the loop running until it is there."""
        return pb.WatchTopologyEvent.FromString(
            self.loop.run_until_complete(anext(self.stream)))

    def close(self) -> None:
        """The caller goes away: the stream ends (its mailbox unsubscribed)."""
        self.loop.run_until_complete(self.stream.aclose())
        self.loop.close()


def _service(svc: IpamService, start: bool = True, **kw: Any) -> WatchService:
    """The watch; without `start` its tailer only reads when the test says (poll_once)."""
    w = WatchService(svc, WatchSettings(**kw))
    if start:
        w.start()
    return w


def _head(svc: IpamService) -> int:
    return svc.topology.bounds()[1]


def _expected(svc: IpamService, pool_of_node: str) -> dict[str, str]:
    return {p.id: p.node for p, name in svc.list_ports(pool_of_node, state="active",
                                                       limit=10_000)}


def test_resume_from_a_kept_revision_sends_the_rows_after_it_and_no_snapshot(
        svc: IpamService) -> None:
    _alloc(svc, "own", node="n1")
    watch = _service(svc)
    try:
        first = Client(watch, "n1")
        first.read_until(_head(svc))
        assert first.resets == 1
        at = first.revision
        first.close()
        for i in range(5):
            _alloc(svc, f"later-{i}")
        svc.release("later-0", "eth0")
        again = Client(watch, "n1", frm=at)
        again.ports = dict(first.ports)
        again.read_until(_head(svc))
        assert again.resets == 0
        assert again.ports == _expected(svc, "a")
        again.close()
    finally:
        watch.stop()


def test_resume_from_ahead_of_this_replicas_tailer_is_no_snapshot(svc: IpamService) -> None:
    """An agent coming from a replica a little ahead: its revision is in the log, though
    this replica's tailer has not read that far yet."""
    _alloc(svc, "own", node="n1")
    watch = _service(svc, start=False, idle_progress_seconds=0.1)
    try:
        watch.tailer.subscribe(Mailbox(100))           # another stream: the tailer is busy
        first = Client(watch, "n1")
        first.read_until(_head(svc))
        for i in range(3):
            _alloc(svc, f"c{i}")                       # the tailer has not read these
        assert watch.tailer.position < _head(svc)
        again_from = _head(svc)
        again = Client(watch, "n1", frm=again_from)
        again.ports = _expected(svc, "a")              # its view at that revision
        first_event = again.next()  # no snapshot
        assert not first_event.reset and first_event.revision == again_from
        _alloc(svc, "after")
        watch.tailer.poll_once()
        again.read_until(_head(svc))
        assert again.resets == 0 and again.ports == _expected(svc, "a")
        again.close()
        first.close()
    finally:
        watch.stop()


def test_resume_from_a_compacted_or_unknown_revision_gets_a_snapshot(
        svc: IpamService) -> None:
    _alloc(svc, "own", node="n1")
    for i in range(6):
        _alloc(svc, f"c{i}")
    while svc.topology.compact(keep=2):
        pass
    watch = _service(svc)
    try:
        for frm in (1, _head(svc) + 1000):
            c = Client(watch, "n1", frm=frm)
            c.read_until(_head(svc))
            assert c.resets == 1 and c.ports == _expected(svc, "a")
            c.close()
    finally:
        watch.stop()


def test_a_watcher_that_does_not_read_is_coalesced_then_resnapshotted(
        svc: IpamService) -> None:
    _alloc(svc, "own", node="n1")
    watch = _service(svc, start=False, queue_rows=10)
    try:
        c = Client(watch, "n1")
        c.read_until(_head(svc))
        assert c.resets == 1
        for i in range(30):          # 30 distinct ports: more than 10 even coalesced
            _alloc(svc, f"c{i}")
        head = _head(svc)
        box = next(iter(watch.tailer._boxes))
        while watch.tailer.position < head:
            watch.tailer.poll_once()
        assert box._overflow and box._rows == []       # bounded: the backlog was dropped
        c.read_until(head)
        assert c.resets == 2                           # and replaced by a fresh snapshot
        assert c.ports == _expected(svc, "a")
        c.close()
    finally:
        watch.stop()


def test_a_node_gaining_its_first_port_in_a_subnet_gets_that_subnets_ports(
        svc: IpamService) -> None:
    _alloc(svc, "own", node="n1")
    others = [_alloc(svc, f"b{i}", pool="b") for i in range(3)]
    watch = _service(svc)
    try:
        c = Client(watch, "n1")
        c.read_until(_head(svc))
        assert set(c.ports) == set(_expected(svc, "a"))      # pool b filtered out
        mine_b = _alloc(svc, "own-b", pool="b", node="n1")
        c.read_until(_head(svc))
        assert set(others) | {mine_b} <= set(c.ports)
        c.close()
    finally:
        watch.stop()


def test_the_tailer_passes_a_rolled_back_gap_and_resnapshots_below_the_floor(
        svc: IpamService) -> None:
    from ipam import changes as ch
    from ipam.store.signal import PollSignal
    tailer = Tailer(svc, PollSignal(0.01), batch_rows=100)
    box = Mailbox(100)
    tailer.subscribe(box)
    with pytest.raises(RuntimeError), svc.store.transaction() as uow:
        uow.record_change(ch.node_removed("ghost"))
        if isinstance(uow, SqlUnitOfWork):
            uow.flush_changes(0.0)       # the row takes its revision, then rolls back
        raise RuntimeError("roll back after the row took a revision")
    pid = _alloc(svc, "after-gap")
    assert tailer.poll_once() == 1
    rows, over = box.take(0)
    assert [r.change.key for r in rows] == [pid] and not over
    for i in range(5):
        _alloc(svc, f"c{i}")
    while svc.topology.compact(keep=1):
        pass
    assert tailer.poll_once() == 0
    assert box.take(0) == ([], True)
    assert tailer.position == _head(svc)
