"""The pure group commit (ovs_driver.groupcommit): who goes when, who gets which answer.
Threads and events only; the OVSDB side is tests/functional/test_ovs_group_commit.py."""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from ovs_driver.errors import OvsError, OvsTimeout, OvsTransactionError
from ovs_driver.groupcommit import GroupCommit
from tests.lab.helpers import wait_for

WAIT = 30.0  # generous: the machine is shared


class Recorder:
    """A run_batch that records its batches and can hold one in flight."""

    def __init__(self, answer: Callable[[str], int | OvsError] = len,
                 whole: Callable[[Sequence[str]], None] = lambda items: None) -> None:
        self.batches: list[list[str]] = []
        self.threads: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.answer = answer
        self.whole = whole
        self.group: GroupCommit[str, int] = GroupCommit(self)

    def __call__(self, items: Sequence[str]) -> list[int | OvsError]:
        self.batches.append(list(items))
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.hold.wait(WAIT)
        self.whole(items)
        return [self.answer(i) for i in items]


def held_first(rec: Recorder, group: GroupCommit[str, int], pool: ThreadPoolExecutor,
               first: str) -> Future[int]:
    """Put `first` in flight and keep it there until rec.hold is set."""
    rec.hold.clear()
    fut = pool.submit(group.submit, first)
    assert rec.entered.wait(WAIT)
    return fut


def test_alone_a_request_runs_at_once_in_the_callers_thread() -> None:
    rec = Recorder()
    group: GroupCommit[str, int] = GroupCommit(rec)
    assert group.submit("abc") == 3
    assert rec.batches == [["abc"]]
    assert rec.threads == [threading.current_thread().name]  # no thread, no timer
    assert group.stats.batches == 1 and group.stats.items == 1


def test_requests_arriving_during_a_batch_share_the_next() -> None:
    rec = Recorder()
    group: GroupCommit[str, int] = GroupCommit(rec)
    with ThreadPoolExecutor(12) as pool:
        first = held_first(rec, group, pool, "x")
        later = {name: pool.submit(group.submit, name) for name in
                 [f"p{i:02d}" + "y" * i for i in range(10)]}
        wait_for(lambda: group.queued() == 10, WAIT, "ten requests queued")
        rec.hold.set()
        assert first.result(WAIT) == 1
        assert {n: f.result(WAIT) for n, f in later.items()} == {n: len(n) for n in later}
    assert rec.batches[0] == ["x"]
    assert len(rec.batches) == 2 and sorted(rec.batches[1]) == sorted(later)


def three_behind_one(rec: Recorder, names: tuple[str, str, str],
                     group: GroupCommit[str, int] | None = None) -> dict[str, Future[int]]:
    """`first` held in flight, `names` queued behind it, then let go; their futures."""
    group = rec.group = group or GroupCommit(rec)
    with ThreadPoolExecutor(4) as pool:
        first = held_first(rec, group, pool, "first")
        futs = {n: pool.submit(group.submit, n) for n in names}
        wait_for(lambda: group.queued() == 3, WAIT, "three requests queued")
        rec.hold.set()
        assert first.result(WAIT) == 5
        for fut in futs.values():
            fut.exception(WAIT)  # settled, one way or the other
    return futs


def test_one_bad_item_fails_alone() -> None:
    def answer(item: str) -> int | OvsError:
        return OvsTransactionError(f"{item} refused") if item == "bad" else len(item)

    rec = Recorder(answer)
    futs = three_behind_one(rec, ("aa", "bad", "cccc"))
    assert futs["aa"].result() == 2 and futs["cccc"].result() == 4
    with pytest.raises(OvsTransactionError, match="bad refused"):
        futs["bad"].result()
    assert len(rec.batches) == 2 and rec.group.stats.fallbacks == 0


def test_a_batch_that_fails_as_a_whole_is_retried_one_by_one() -> None:
    def whole(items: Sequence[str]) -> None:
        if "poison" in items:
            raise OvsTransactionError("transaction refused: poison")

    rec = Recorder(whole=whole)
    futs = three_behind_one(rec, ("aa", "poison", "bbb"))
    assert futs["aa"].result() == 2 and futs["bbb"].result() == 3
    with pytest.raises(OvsTransactionError, match="poison"):
        futs["poison"].result()
    assert rec.group.stats.fallbacks == 1
    # the failed batch of three, then each of its items alone
    assert sorted(map(sorted, rec.batches[2:])) == [["aa"], ["bbb"], ["poison"]]


def test_a_bug_reaches_every_caller_of_its_batch_and_the_next_batch_still_runs() -> None:
    def whole(items: Sequence[str]) -> None:
        if "bug" in items:
            raise KeyError("bug")

    rec = Recorder(whole=whole)
    group: GroupCommit[str, int] = GroupCommit(rec)
    with ThreadPoolExecutor(4) as pool:
        first = held_first(rec, group, pool, "first")
        futs = [pool.submit(group.submit, n) for n in ("bug", "other")]
        wait_for(lambda: group.queued() == 2, WAIT, "two requests queued")
        rec.hold.set()
        assert first.result(WAIT) == 5
        for fut in futs:
            with pytest.raises(KeyError):
                fut.result(WAIT)
    assert group.submit("after") == 5


def test_batches_are_bounded() -> None:
    rec = Recorder()
    group: GroupCommit[str, int] = GroupCommit(rec, max_batch=3)
    with ThreadPoolExecutor(8) as pool:
        first = held_first(rec, group, pool, "first")
        futs = [pool.submit(group.submit, f"i{n}") for n in range(7)]
        wait_for(lambda: group.queued() == 7, WAIT, "seven requests queued")
        rec.hold.set()
        assert first.result(WAIT) == 5
        assert [f.result(WAIT) for f in futs] == [2] * 7
    assert [len(b) for b in rec.batches] == [1, 3, 3, 1]


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(Recorder(), max_batch=0)


def test_a_timeout_of_the_whole_batch_reaches_everyone_without_retries_one_by_one() -> None:
    """Retried alone, N callers would wait N timeouts in a row for the same dead server."""
    def whole(items: Sequence[str]) -> None:
        if len(items) > 1:
            raise OvsTimeout("no answer from ovsdb-server")

    rec = Recorder(whole=whole)
    group: GroupCommit[str, int] = GroupCommit(
        rec, retry_alone=lambda exc: isinstance(exc, OvsTransactionError))
    for fut in three_behind_one(rec, ("aa", "bb", "cc"), group).values():
        with pytest.raises(OvsTimeout):
            fut.result()
    assert len(rec.batches) == 2 and group.stats.fallbacks == 0
