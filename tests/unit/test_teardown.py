"""The agent's batched veth teardown (cni.agent.handler.Teardown) against a recording fake:
the batching, the hurry-up for whoever needs a doomed name again, and failure handling.
The kernel side (group delete) is covered in tests/functional/test_netlink.py."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from cni.agent.handler import Teardown


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
        self.pod_side.append((netns, ifname))
        return True


@pytest.fixture
def nl() -> FakeNetlink:
    return FakeNetlink()


def test_a_burst_of_dels_is_one_batch(nl: FakeNetlink) -> None:
    nl.links = {f"tap{i}" for i in range(20)}
    td = Teardown(nl, batch_delay=0.2)  # type: ignore[arg-type]
    for i in range(20):
        td.start(f"c{i}", [f"tap{i}"], "/var/run/netns/x", "eth0")
    assert nl.links == {f"tap{i}" for i in range(20)}   # DEL returned before any delete
    td.drain(timeout=5)
    assert nl.links == set()
    assert [len(b) for b in nl.reaps if b] == [20]
    td.stop()


def test_waiting_for_a_doomed_name_hurries_its_batch(nl: FakeNetlink) -> None:
    nl.links = {"tapA"}
    td = Teardown(nl, batch_delay=30.0)  # type: ignore[arg-type]
    td.start("cA", ["tapA"], None, "eth0")
    t0 = time.monotonic()
    td.wait_for("tapA", timeout=5)            # a bound port reusing the host name
    assert time.monotonic() - t0 < 2 and "tapA" not in nl.links
    td.wait_for("cA", timeout=5)              # its container key was cleared with it
    td.wait_for("never-seen")                 # unknown keys do not wait
    td.stop()


def test_a_pair_known_only_in_the_pod_netns_is_deleted_there(nl: FakeNetlink) -> None:
    td = Teardown(nl, batch_delay=0.01)  # type: ignore[arg-type]
    td.start("cB", [], "/var/run/netns/pod-b", "eth0")
    td.wait_for("cB", timeout=5)
    assert nl.pod_side == [("/var/run/netns/pod-b", "eth0")]
    td.start("cC", [], None, "eth0")          # nothing to find: nothing to do
    td.drain(timeout=5)
    assert nl.pod_side == [("/var/run/netns/pod-b", "eth0")]
    td.stop()


def test_a_failed_batch_is_logged_and_does_not_wedge_waiters(
        nl: FakeNetlink, caplog: pytest.LogCaptureFixture) -> None:
    nl.links = {"tapF"}
    nl.fail_reap = True
    td = Teardown(nl, batch_delay=0.01)  # type: ignore[arg-type]
    td.start("cF", ["tapF"], None, "eth0")
    td.wait_for("cF", timeout=5)              # returns: the runtime's netns removal cleans up
    assert "batched veth teardown failed" in caplog.text
    nl.fail_reap = False
    td.start("cG", [], None, "eth0")
    td.drain(timeout=5)
    assert "tapF" not in nl.links             # still marked, so the next batch took it
    td.stop()


def test_dels_racing_the_reaper_are_never_lost(nl: FakeNetlink) -> None:
    nl.links = {f"tap{i}" for i in range(200)}
    td = Teardown(nl, batch_delay=0.001)  # type: ignore[arg-type]

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
