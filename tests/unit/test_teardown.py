"""The agent's batched veth teardown (cni.agent.teardown.Teardown) against a kernel-like fake:
the group commit (DELs wait for their pair; those arriving while every sender is busy share
the next request), DELs let go by the kernel's unregister notifications before the request
answers, whoever needs a doomed name again, and failure handling (refusals, lost or stale
notifications). The kernel side is covered in tests/functional/test_netlink.py."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cni.agent.netlink.plan import VethEnds
from cni.agent.teardown import SENDERS, Teardown
from cni.errors import TryAgainLater

NSID = 7


class FakeNetlink:
    """What the kernel does with a group delete: every doomed pair goes, each reported as
    host end then pod end (`report`), then, an RCU barrier later, the request answers
    (`barrier`, when set, holds that answer)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.links: set[str] = set()
        self.index: dict[str, int] = {}
        self.doomed: set[str] = set()
        self.reaps: list[set[str]] = []
        self.pod_side: list[tuple[str, str]] = []
        self.fail_reap = False
        self.report: Callable[[str], None] = self.report_both
        self.barrier: threading.Event | None = None
        self.in_flight = 0
        self.most_in_flight = 0
        self.on_gone: Callable[[int | None, list[int]], None] = lambda nsid, idx: None
        self.on_overrun: Callable[[], None] = lambda: None

    def ends(self, name: str) -> VethEnds:
        with self.lock:
            i = self.index.setdefault(name, 10 + len(self.index))
        return VethEnds(host_index=i, pod_nsid=NSID, pod_index=1000 + i)

    def report_both(self, name: str) -> None:
        e = self.ends(name)
        self.on_gone(None, [e.host_index])
        self.on_gone(NSID, [e.pod_index])

    def watch_unregistered(self, on_gone: Any, on_overrun: Any) -> None:
        self.on_gone, self.on_overrun = on_gone, on_overrun

    def doom_host_end(self, name: str) -> VethEnds | None:
        with self.lock:
            if name not in self.links:
                return None
            self.doomed.add(name)
        return self.ends(name)

    def reap_doomed(self) -> bool:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            if self.fail_reap:
                self.in_flight -= 1
                raise RuntimeError("netlink said no")
            batch, self.doomed = self.doomed, set()
            self.links -= batch
            self.reaps.append(batch)
        for name in sorted(batch):
            self.report(name)
        if self.barrier is not None:
            self.barrier.wait(5)
        with self.lock:
            self.in_flight -= 1
        return bool(batch)

    def links_gone(self, host_indexes: list[int]) -> set[int]:
        with self.lock:
            live = set(self.links)
        return set(host_indexes) - {self.ends(n).host_index for n in live}

    def delete_pod_interface(self, host: str, netns: Any = None, ifname: Any = None) -> bool:
        with self.lock:
            if host:
                gone = host in self.links
                self.links.discard(host)
                self.doomed.discard(host)
                return gone
            self.pod_side.append((netns, ifname))
            return True


@pytest.fixture
def nl() -> FakeNetlink:
    return FakeNetlink()


def _gated(nl: FakeNetlink) -> threading.Event:
    """Hold every reap, before the kernel does anything, until the returned event is set."""
    gate, real = threading.Event(), nl.reap_doomed

    def held() -> bool:
        gate.wait(5)
        return real()
    nl.reap_doomed = held  # type: ignore[method-assign]
    return gate


def test_a_del_waits_for_its_pair_and_an_idle_reaper_starts_at_once(nl: FakeNetlink) -> None:
    nl.links = {"tap0"}
    td = Teardown(nl)
    assert td.start("c0", ["tap0"], None, "eth0") is True
    td.wait_for("c0", timeout=5)
    assert nl.links == set() and nl.reaps == [{"tap0"}]
    td.stop()


def test_dels_arriving_during_a_batch_share_the_next(nl: FakeNetlink) -> None:
    """Group commit: 20 concurrent DELs cost at most one request per sender plus one, not
    twenty, and each returns only once its own pair is gone."""
    nl.links = {f"tap{i}" for i in range(20)}
    gate = _gated(nl)
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("c0", ["tap0"], None, "eth0")
    for i in range(1, 20):
        td.start(f"c{i}", [f"tap{i}"], None, "eth0")
    returned: list[str] = []

    def waiter(i: int) -> None:
        td.wait_for(f"c{i}", timeout=5)
        assert f"tap{i}" not in nl.links
        returned.append(f"c{i}")

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    assert nl.links == {f"tap{i}" for i in range(20)} and returned == []
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(returned) == sorted(f"c{i}" for i in range(20))
    # the group delete takes whatever is doomed when it runs
    batches = [len(b) for b in nl.reaps if b]
    assert sum(batches) == 20 and len(nl.reaps) <= SENDERS + 1, nl.reaps
    td.stop()


def test_a_del_returns_on_the_kernels_reports_not_its_answer(nl: FakeNetlink) -> None:
    """Both ends reported unregistered: the DEL is done while the request still waits out
    the kernel's RCU barrier; and the next DEL's request does not queue behind it."""
    nl.links = {"tap1", "tap2"}
    nl.barrier = threading.Event()
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("c1", ["tap1"], None, "eth0")
    td.wait_for("c1", timeout=5)
    assert "tap1" not in nl.links and nl.in_flight == 1
    td.start("c2", ["tap2"], None, "eth0")
    td.wait_for("c2", timeout=5)
    assert "tap2" not in nl.links and nl.most_in_flight == 2
    assert td.finished["notified"] == 2
    nl.barrier.set()
    td.drain(timeout=5)
    td.stop()


def test_the_host_end_alone_is_not_the_pair(nl: FakeNetlink) -> None:
    """Reported: the host end only; then the kernel refuses and one-by-one fails too: the
    waiter gets "try again later", never a success while the pod end may be there."""
    nl.links = {"tapX"}
    nl.report = lambda name: nl.on_gone(None, [nl.ends(name).host_index])
    real = nl.reap_doomed

    def report_then_refuse() -> bool:
        nl.report("tapX")
        raise RuntimeError("EBUSY")
    nl.reap_doomed = report_then_refuse  # type: ignore[method-assign]
    nl.delete_pod_interface = lambda *a: (_ for _ in ()).throw(  # type: ignore[method-assign]
        OSError("EBUSY"))
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("cX", ["tapX"], None, "eth0")
    with pytest.raises(TryAgainLater):
        td.wait_for("cX", timeout=0.5)
    nl.reap_doomed = real  # type: ignore[method-assign]
    td.wait_for("cX", timeout=5)                    # the retry a second later succeeds
    assert "tapX" not in nl.links
    td.stop()


def test_a_stale_report_of_an_earlier_pod_end_does_not_count(nl: FakeNetlink) -> None:
    """An earlier pod in a netns with the same nsid had the same ifindex: its report, read
    before this pair's host end went, is not this pair's pod end."""
    nl.links = {"tapS"}
    nl.barrier = threading.Event()
    e = nl.ends("tapS")
    nl.report = lambda name: (nl.on_gone(NSID, [e.pod_index]),   # type: ignore[func-returns-value]
                              nl.on_gone(None, [e.host_index]))
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("cS", ["tapS"], None, "eth0")
    with pytest.raises(TryAgainLater):
        td.wait_for("cS", timeout=0.3)
    nl.on_gone(NSID, [e.pod_index])                 # the real report of its pod end
    td.wait_for("cS", timeout=5)
    nl.barrier.set()
    td.stop()


def test_lost_reports_are_rechecked_not_waited_for(nl: FakeNetlink) -> None:
    """The monitor overran: the pair is gone but no report will come. The waiter is let go
    by asking the kernel, not by the request's answer (held here)."""
    nl.links = {"tapA"}
    nl.barrier = threading.Event()
    nl.report = lambda name: nl.on_overrun()
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("cA", ["tapA"], None, "eth0")
    td.wait_for("cA", timeout=5)
    assert "tapA" not in nl.links and nl.in_flight == 1
    assert td.finished["rechecked"] == 1
    nl.barrier.set()
    td.stop()


def test_an_overrun_while_the_pair_is_there_lets_nobody_go(nl: FakeNetlink) -> None:
    nl.links = {"tapB"}
    gate = _gated(nl)
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("cB", ["tapB"], None, "eth0")
    nl.on_overrun()                                 # before the kernel deleted anything
    with pytest.raises(TryAgainLater):
        td.wait_for("cB", timeout=0.3)
    gate.set()
    td.wait_for("cB", timeout=5)
    assert "tapB" not in nl.links
    td.stop()


def test_a_pair_gone_without_reports_is_let_go_by_the_answer(nl: FakeNetlink) -> None:
    """Its netns was removed meanwhile (no reports for us, an empty group): gone is
    success."""
    nl.links = {"tapC"}
    gate = _gated(nl)
    nl.report = lambda name: None
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("cC", ["tapC"], None, "eth0")
    with nl.lock:
        nl.links.discard("tapC")
        nl.doomed.discard("tapC")
    gate.set()
    td.wait_for("cC", timeout=5)
    td.stop()


def test_nothing_to_remove_means_nothing_to_wait_for(nl: FakeNetlink) -> None:
    td = Teardown(nl)
    assert td.start("cN", ["tap-gone"], None, "eth0") is False
    assert td.start("cM", [], None, "eth0") is False
    td.wait_for("cN", timeout=0.1)
    assert nl.reaps == []
    td.stop()


def test_waiting_for_a_doomed_name_hurries_its_batch(nl: FakeNetlink) -> None:
    nl.links = {"tapA"}
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("cA", ["tapA"], None, "eth0")
    t0 = time.monotonic()
    td.wait_for("tapA", timeout=5)            # a bound port reusing the host name
    assert time.monotonic() - t0 < 2 and "tapA" not in nl.links
    td.wait_for("cA", timeout=5)              # its container key was cleared with it
    td.wait_for("never-seen")                 # unknown keys do not wait
    td.stop()


def test_a_pair_known_only_in_the_pod_netns_is_deleted_there(nl: FakeNetlink) -> None:
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("cB", [], "/var/run/netns/pod-b", "eth0")
    td.wait_for("cB", timeout=5)
    assert nl.pod_side == [("/var/run/netns/pod-b", "eth0")]
    td.start("cC", [], None, "eth0")          # nothing to find: nothing to do
    td.drain(timeout=5)
    assert nl.pod_side == [("/var/run/netns/pod-b", "eth0")]
    td.stop()


def test_a_failed_batch_falls_back_to_one_by_one(
        nl: FakeNetlink, caplog: pytest.LogCaptureFixture) -> None:
    """Nobody waiting on a pair is let go while it still exists (a bound port's next ADD
    would reuse it, and a later batch would then delete a live pod's interface)."""
    nl.links = {"tapF", "tapG"}
    nl.fail_reap = True
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("cF", ["tapF"], None, "eth0")
    td.start("cG", ["tapG"], None, "eth0")
    td.wait_for("tapF", timeout=5)
    td.wait_for("cG", timeout=5)
    assert "batched veth teardown failed" in caplog.text
    assert nl.links == set() and nl.doomed == set()
    td.stop()


def test_a_stuck_teardown_is_try_again_later(nl: FakeNetlink) -> None:
    gate = threading.Event()
    real = nl.reap_doomed

    def slow() -> bool:
        gate.wait(5)
        return real()
    nl.reap_doomed = slow  # type: ignore[method-assign]
    nl.links = {"tapS"}
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("cS", ["tapS"], None, "eth0")
    with pytest.raises(TryAgainLater, match="still being removed"):
        td.wait_for("cS", timeout=0.2)
    gate.set()
    td.wait_for("cS", timeout=5)
    td.stop()
    with pytest.raises(TryAgainLater, match="shutting down"):
        td.start("cT", [], "/var/run/netns/t", "eth0")


def test_dels_racing_the_reaper_are_never_lost(nl: FakeNetlink) -> None:
    nl.links = {f"tap{i}" for i in range(200)}
    td = Teardown(nl)  # type: ignore[arg-type]

    def worker(lo: int) -> None:
        for i in range(lo, lo + 50):
            td.start(f"c{i}", [f"tap{i}"], None, "eth0")
            if i % 7 == 0:
                td.wait_for(f"tap{i}", timeout=5)
                assert f"tap{i}" not in nl.links

    threads = [threading.Thread(target=worker, args=(k * 50,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    td.drain(timeout=5)
    assert nl.links == set()
    td.stop()


def test_a_pair_that_cannot_be_deleted_keeps_its_waiters_waiting(nl: FakeNetlink) -> None:
    nl.links = {"tapX"}
    nl.fail_reap = True
    real_delete = nl.delete_pod_interface

    def refuse(host: str, netns: Any = None, ifname: Any = None) -> bool:
        raise OSError("EBUSY")
    nl.delete_pod_interface = refuse  # type: ignore[method-assign]
    td = Teardown(nl)  # type: ignore[arg-type]
    td.start("cX", ["tapX"], None, "eth0")
    with pytest.raises(TryAgainLater):
        td.wait_for("tapX", timeout=0.5)           # never "gone" while it still exists
    assert "tapX" in nl.links
    nl.delete_pod_interface = real_delete  # type: ignore[method-assign]
    td.wait_for("cX", timeout=5)                    # the retry a second later succeeds
    assert "tapX" not in nl.links
    td.stop()
