"""Group commit of allocations (ipam.batching): the queue alone, with threads and events (no
store), then `Allocator`'s shared transaction on every store: one failing request is undone
alone, a duplicate in the same batch gets the same port, a caller whose deadline passed gets
Busy and nothing committed for it, the others commit."""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from ipam import deadline
from ipam.batching import GroupCommit, Pending
from ipam.domain import AllocationRequest, PodIdentity
from ipam.errors import Busy, InvalidArgument, PolicyConflict, PoolExhausted
from ipam.service import IpamService
from tests.lab.helpers import wait_for


class Runner:
    """run_one / run_batch that record what ran and can be held until released."""

    def __init__(self) -> None:
        self.alone: list[str] = []
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.batch_fails = False
        self.deadlines: list[float | None] = []

    def one(self, item: str) -> str:
        self.entered.set()
        self.hold.wait(10)
        self.deadlines.append(deadline.current())
        if item.startswith("bad"):
            raise InvalidArgument(item)
        self.alone.append(item)
        return item.upper()

    def many(self, jobs: Sequence[Pending[str]]) -> list[str | Exception]:
        if self.batch_fails:
            raise Busy("the commit was refused")
        self.batches.append([j.item for j in jobs])
        return [InvalidArgument(j.item) if j.item.startswith("bad") else j.item.upper()
                for j in jobs]


def _submit_in_thread(gc: GroupCommit[str, str], item: str, out: dict[str, Any],
                      seconds_left: float | None = None) -> threading.Thread:
    def run() -> None:
        with deadline.caller_deadline(seconds_left):
            try:
                out[item] = gc.submit(item)
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                out[item] = exc
    t = threading.Thread(target=run)
    t.start()
    return t


def _queue_behind_a_held_request(r: Runner, gc: GroupCommit[str, str], out: dict[str, Any],
                                 items: list[str], **kw: Any) -> list[threading.Thread]:
    """One request runs alone and is held; `items` queue behind it, then all go on."""
    r.hold.clear()
    threads = [_submit_in_thread(gc, "first", out)]
    assert r.entered.wait(10)
    for item in items:
        threads.append(_submit_in_thread(gc, item, out, **kw))
    wait_for(lambda: len(gc._queue) == len(items), 10, "the requests to queue")
    r.hold.set()
    for t in threads:
        t.join(10)
    return threads


def test_an_idle_request_runs_alone_at_once_with_its_own_deadline() -> None:
    r = Runner()
    gc: GroupCommit[str, str] = GroupCommit(r.one, r.many)
    with deadline.caller_deadline(30.0):
        assert gc.submit("a") == "A"
    assert r.alone == ["a"] and r.batches == []
    assert r.deadlines[0] is not None and r.deadlines[0] > time.monotonic()


def test_requests_that_arrive_meanwhile_share_the_next_batch() -> None:
    r = Runner()
    gc: GroupCommit[str, str] = GroupCommit(r.one, r.many)
    out: dict[str, Any] = {}
    _queue_behind_a_held_request(r, gc, out, ["b", "c", "d"])
    assert out == {"first": "FIRST", "b": "B", "c": "C", "d": "D"}
    assert r.alone == ["first"] and [sorted(b) for b in r.batches] == [["b", "c", "d"]]
    assert (gc.counts.batches, gc.counts.batched, gc.counts.largest) == (1, 3, 3)
    assert not gc._in_flight   # idle again: the next request runs alone at once
    assert gc.submit("e") == "E" and r.alone[-1] == "e"


def test_a_failing_request_fails_alone() -> None:
    r = Runner()
    gc: GroupCommit[str, str] = GroupCommit(r.one, r.many)
    out: dict[str, Any] = {}
    _queue_behind_a_held_request(r, gc, out, ["b", "bad-c", "d"])
    assert (out["b"], out["d"]) == ("B", "D")
    assert isinstance(out["bad-c"], InvalidArgument)


def test_a_batch_that_fails_as_a_whole_runs_request_by_request_with_own_deadlines() -> None:
    r = Runner()
    gc: GroupCommit[str, str] = GroupCommit(r.one, r.many)
    r.batch_fails = True
    out: dict[str, Any] = {}
    _queue_behind_a_held_request(r, gc, out, ["b", "bad-c"], seconds_left=30.0)
    assert out["b"] == "B" and isinstance(out["bad-c"], InvalidArgument)
    assert sorted(r.alone) == ["b", "first"] and gc.counts.fallbacks == 1
    assert all(d is not None for d in r.deadlines[1:])   # each ran under its own deadline


def test_a_batch_is_at_most_max_batch_and_the_rest_goes_next() -> None:
    r = Runner()
    gc: GroupCommit[str, str] = GroupCommit(r.one, r.many, max_batch=2)
    out: dict[str, Any] = {}
    _queue_behind_a_held_request(r, gc, out, ["b", "c", "d"])
    assert out == {"first": "FIRST", "b": "B", "c": "C", "d": "D"}
    # b, c and d queued; the next leader took two, the one left ran alone after them.
    assert [len(b) for b in r.batches] == [2] and len(r.alone) == 2
    assert sorted([*r.batches[0], *r.alone]) == ["b", "c", "d", "first"]


def test_an_interrupted_batch_answers_every_caller() -> None:
    r = Runner()

    def broken(jobs: Sequence[Pending[str]]) -> list[str | Exception]:
        raise KeyboardInterrupt

    gc: GroupCommit[str, str] = GroupCommit(r.one, broken)
    out: dict[str, Any] = {}
    r.hold.clear()
    first = _submit_in_thread(gc, "first", out)
    assert r.entered.wait(10)
    errors: list[BaseException] = []

    def lead_or_wait(item: str) -> None:
        try:
            out[item] = gc.submit(item)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            errors.append(exc)
    threads = [threading.Thread(target=lead_or_wait, args=(i,)) for i in ("b", "c")]
    for t in threads:
        t.start()
    wait_for(lambda: len(gc._queue) == 2, 10, "the requests to queue")
    r.hold.set()
    for t in [first, *threads]:
        t.join(10)
    assert not any(t.is_alive() for t in threads)   # nobody waits forever
    assert len(errors) == 2 and all(isinstance(e, KeyboardInterrupt) for e in errors)


# ------------------------------------------------------------ the allocator's batch
@pytest.fixture
def svc(store: Any) -> IpamService:
    s = IpamService(store)
    s.create_pool("p", "dynamic", quarantine_seconds=0)
    s.create_subnet("p", "10.95.0.0/24")
    s.create_pool("tiny", "dynamic", quarantine_seconds=0)
    s.create_subnet("tiny", "10.96.0.0/30")   # one address
    return s


def _req(cid: str, pool: str = "p", uid: str = "") -> AllocationRequest:
    return AllocationRequest(container_id=cid, ifname="eth0",
                             pod=PodIdentity("ns", cid, uid or f"u-{cid}"), node="n1",
                             pool=pool)


def _together(svc: IpamService, jobs: list[Pending[AllocationRequest]]) -> list[Any]:
    return list(svc._alloc._allocate_together(jobs))


def test_one_transaction_answers_each_request_and_undoes_only_the_failing_ones(
        svc: IpamService) -> None:
    head = svc.topology.bounds()[1]
    out = _together(svc, [Pending(_req("a"), None), Pending(_req("t1", "tiny"), None),
                          Pending(_req("t2", "tiny"), None), Pending(_req("a", uid="other"), None),
                          Pending(_req("a"), None), Pending(_req("b"), None)])
    a, t1, t2, conflict, again, b = out
    assert not a.existing and not t1.existing and not b.existing
    assert isinstance(t2, PoolExhausted)                  # the pool's one address went to t1
    assert isinstance(conflict, PolicyConflict)           # another pod on the same interface
    assert again.existing and again.port.id == a.port.id  # the same request: the same port
    assert {p.container_id for p, _ in svc.list_ports()} == {"a", "t1", "b"}
    assert len({p.mac for p, _ in svc.list_ports()}) == 3
    # One change-log row per port created, none for what was undone.
    assert svc.topology.bounds()[1] - head == 3


def test_a_caller_whose_deadline_passed_gets_busy_and_nothing_of_the_batch_commits(
        svc: IpamService) -> None:
    past = time.monotonic() - 1
    out = _together(svc, [Pending(_req("a"), None), Pending(_req("late"), past)])
    assert isinstance(out[1], Busy) and not isinstance(out[0], Exception)
    assert {p.container_id for p, _ in svc.list_ports()} == {"a"}


def test_a_deadline_passing_before_the_commit_rolls_the_batch_back(svc: IpamService) -> None:
    """Checked once more after every request ran: the batch raises (nothing committed) and
    the group commit runs each request alone, under its own deadline."""
    soon = time.monotonic() + 0.05
    slow = _req("slow")
    original = svc._alloc._allocate_in

    def slow_in(uow: Any, cfg: Any, req: AllocationRequest, now: float) -> Any:
        got = original(uow, cfg, req, now)
        if req is slow:
            wait_for(lambda: time.monotonic() > soon, 5, "the deadline to pass")
        return got
    svc._alloc._allocate_in = slow_in  # type: ignore[method-assign]
    with pytest.raises(Busy, match="deadline"):
        _together(svc, [Pending(_req("early"), soon), Pending(slow, None)])
    assert svc.list_ports() == []


def test_concurrent_allocations_through_the_service_share_transactions(
        svc: IpamService) -> None:
    """Real threads through IpamService.allocate: every caller gets its own port, all
    distinct, and (held behind a first request) the rest went in one batch."""
    group = svc._alloc._group
    gate = threading.Event()
    entered = threading.Event()
    original = group._one

    def held_one(req: AllocationRequest) -> Any:
        if req.container_id == "first":
            entered.set()
            gate.wait(10)
        return original(req)
    group._one = held_one  # type: ignore[method-assign]
    got: dict[str, str] = {}

    def alloc(cid: str) -> None:
        got[cid] = svc.allocate(_req(cid)).port.id
    first = threading.Thread(target=alloc, args=("first",))
    first.start()
    assert entered.wait(10)
    rest = [threading.Thread(target=alloc, args=(f"c{i}",)) for i in range(6)]
    for t in rest:
        t.start()
    wait_for(lambda: len(group._queue) == 6, 10, "the allocations to queue")
    gate.set()
    for t in [first, *rest]:
        t.join(10)
    assert len(set(got.values())) == 7
    assert group.counts.batches == 1 and group.counts.batched == 6
    assert {p.container_id for p, _ in svc.list_ports()} == set(got)


def test_a_savepoint_undoes_its_block_and_the_transaction_goes_on(svc: IpamService) -> None:
    """On every store: a duplicate insert inside a savepoint (the database's own error on
    SQL, read as Busy like a lost race) undoes that block, ports and change rows alike; the
    rows before and after it commit."""
    from dataclasses import replace

    from ipam.errors import AlreadyExists
    a = svc.allocate(_req("a")).port
    head = svc.topology.bounds()[1]
    with svc.store.transaction() as uow:
        cfg = svc._alloc.config.current(uow)
        svc._alloc._allocate_in(uow, cfg, _req("b"), time.time())
        with pytest.raises((Busy, AlreadyExists)), uow.savepoint():
            svc._alloc._allocate_in(uow, cfg, _req("c"), time.time())
            uow.insert_port(replace(a, id="dup", mac="0a:00:00:00:00:01"))
        svc._alloc._allocate_in(uow, cfg, _req("d"), time.time())
    assert {p.container_id for p, _ in svc.list_ports()} == {"a", "b", "d"}
    assert svc.topology.bounds()[1] - head == 2


def test_a_savepoint_that_cannot_be_rolled_back_lets_nothing_commit(tmp_path: Any) -> None:
    """The rollback to a savepoint failing (the driver's error, injected at the one seam,
    uow._x: a real one needs a database that fails that one statement) leaves the block's
    writes in the transaction: whoever took the error as the block's own and went on,
    nothing of the transaction may commit then."""
    import sqlite3

    from ipam.store.sql import SqlStore
    store = SqlStore(f"sqlite:///{tmp_path}/ipam.db")
    s = IpamService(store)
    s.create_pool("p", "dynamic", quarantine_seconds=0)
    s.create_subnet("p", "10.95.0.0/24")
    with pytest.raises(Busy, match="savepoint"), store.transaction() as uow:
        real = uow._x

        def failing(sql: str, params: tuple[Any, ...] = ()) -> Any:
            if sql.startswith("ROLLBACK TO"):
                raise sqlite3.OperationalError("disk I/O error")
            return real(sql, params)
        uow._x = failing  # type: ignore[method-assign]
        cfg = s._alloc.config.current(uow)
        s._alloc._allocate_in(uow, cfg, _req("a"), time.time())
        with pytest.raises(sqlite3.OperationalError), uow.savepoint():
            s._alloc._allocate_in(uow, cfg, _req("b"), time.time())
            raise PolicyConflict("this request is refused")
    assert s.list_ports() == []
    store.close()
