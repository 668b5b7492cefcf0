"""The agent's batched veth teardown (cni.agent.teardown.Teardown) against a recording fake:
the group commit (DELs wait for their pair; those arriving during a batch share the next),
whoever needs a doomed name again, and failure handling.
The kernel side (group delete) is covered in tests/functional/test_netlink.py."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from cni.agent.teardown import Teardown


class FakeNetlink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.links: set[str] = set()
        self.doomed: set[str] = set()
        self.reaps: list[set[str]] = []
        self.pod_side: list[tuple[str, str]] = []
        self.fail_reap = False

    def doom_host_end(self, name: str) -> bool:
        with self.lock:
            if name not in self.links:
                return False
            self.doomed.add(name)
            return True

    def reap_doomed(self) -> bool:
        with self.lock:
            if self.fail_reap:
                raise RuntimeError("netlink said no")
            batch, self.doomed = self.doomed, set()
            self.links -= batch
            self.reaps.append(batch)
            return bool(batch)

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
    """Hold every reap until the returned event is set."""
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
    """Group commit: 20 concurrent DELs cost two kernel requests, not twenty, and each
    returns only once its own pair is gone."""
    nl.links = {f"tap{i}" for i in range(20)}
    gate = _gated(nl)
    td = Teardown(nl)
    td.start("c0", ["tap0"], None, "eth0")
    deadline = time.monotonic() + 5
    while td._started == 0 and time.monotonic() < deadline:  # batch 1 is in flight
        time.sleep(0.001)
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
    # the group delete takes whatever is doomed when it runs: at most two batches
    batches = [len(b) for b in nl.reaps if b]
    assert sum(batches) == 20 and len(batches) <= 2, batches
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
    from cni.errors import TryAgainLater
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
    from cni.errors import TryAgainLater
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
