"""The datapath's apply window (datapath/coalesce.py): a lone change reaches the switch at
once, a burst of changes costs at most two flow-mod bundles (its first change, then the
rest at the window's end), nothing stays unapplied once the window is over, and a steady
stream cannot hold a change longer than the window. The loop is driven step by step with
a clock the test moves, against the stateful flow tables of tests/fakes/ovs.py."""
from __future__ import annotations

import queue
import threading

import pytest

from datapath import DatapathSettings, StandaloneDatapath
from datapath.coalesce import ApplyWindow
from datapath.watch import Item
from ecnet_api.v1 import ecnet_pb2 as pb
from tests.fakes.ovs import FakeFlowTable, FakeOvsdb
from tests.unit.test_datapath_loop import FakeHost
from tests.unit.test_datapath_watch import event, node, port, subnet

WINDOW = 0.05


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Fixture:
    def __init__(self, window: float = WINDOW) -> None:
        self.clock = Clock()
        self.ovs = ovs = FakeOvsdb()
        ovs.ensure_bridge("br-int")
        self.br_int, self.br_tun = FakeFlowTable("br-int"), FakeFlowTable("br-tun")
        self.dp = StandaloneDatapath(
            DatapathSettings(node="h1", apply_window=window), ovs, _NoController(),
            threading.Event(), flows=(self.br_int, self.br_tun), host=FakeHost(),
            clock=self.clock)
        self.dp.setup()
        self.events: queue.Queue[Item] = queue.Queue()
        self.revision = 0

    def deliver(self, *changes: pb.TopologyChange, reset: bool = False) -> bool:
        """One event from the stream, taken in by one step of the loop."""
        self.revision += 1
        self.events.put(event(self.revision, *changes, reset=reset))
        return self.dp.watch_step(self.events, 0.01)

    def idle_step(self) -> bool:
        """A step with nothing on the stream (the loop's wait ends at once or soon)."""
        return self.dp.watch_step(self.events, 0.01)

    def bundles(self) -> int:
        return self.br_int.bundles + self.br_tun.bundles


class _NoController:
    """The stream is the test's queue; nothing calls the controller."""

    def GetTopology(self, request: pb.TopologyRequest, *,  # the RPC's own name
                    timeout: float | None = None) -> pb.TopologyResponse:
        raise AssertionError("the test drives the watch; no poll expected")

    def WatchTopology(self, request: pb.WatchTopologyRequest, *,  # the RPC's own name
                      timeout: float | None = None) -> pb.WatchTopologyEvent:
        raise AssertionError("the test drives the watch")


def ip(i: int) -> str:
    return f"10.70.{i // 250}.{i % 250 + 2}"


@pytest.fixture
def f() -> Fixture:
    fx = Fixture()
    assert fx.deliver(node("h1"), node("h2"), subnet("s1", "10.70.0.0/16"),
                      port("p0", "h2", ip(0)), reset=True)
    assert fx.br_int.replaced == 1 and ip(0) in fx.br_int.arp_entries()
    fx.clock.now += 10      # a quiet spell
    return fx


def test_a_lone_delta_applies_at_once(f: Fixture) -> None:
    assert f.deliver(port("p1", "h2", ip(1)))
    assert ip(1) in f.br_int.arp_entries()
    assert f.bundles() == 2                     # br-int and br-tun, one bundle each
    f.clock.now += 10
    assert f.deliver(pb.TopologyChange(port_removed="p0"))    # a remote pod's, at once too
    assert ip(0) not in f.br_int.arp_entries()


def test_a_burst_is_at_most_two_applies_and_nothing_is_left_after_the_window(
        f: Fixture) -> None:
    n = 40
    before = f.br_int.bundles
    for i in range(1, n + 1):
        f.deliver(port(f"p{i}", "h2", ip(i)))
        f.clock.now += WINDOW / (2 * n)         # the whole burst inside half a window
    assert f.br_int.bundles - before == 1       # the first change, at once
    assert ip(1) in f.br_int.arp_entries() and ip(n) not in f.br_int.arp_entries()
    f.clock.now += WINDOW                       # the window ends: the loop's wait is over
    assert f.idle_step()
    assert f.br_int.bundles - before == 2
    assert set(f.br_int.arp_entries()) == {ip(i) for i in range(n + 1)}
    assert f.br_int.replaced == 1               # deltas, not a table rewrite
    assert not f.idle_step()                    # nothing held any more


def test_a_removal_inside_the_window_is_applied_with_the_rest(f: Fixture) -> None:
    assert f.deliver(port("p1", "h2", ip(1)))
    assert not f.deliver(pb.TopologyChange(port_removed="p0"))
    assert not f.deliver(port("p2", "h2", ip(2)))
    f.clock.now += WINDOW
    assert f.idle_step()
    assert set(f.br_int.arp_entries()) == {ip(1), ip(2)}
    assert f.br_int.mentioning("0a:00:00:00:00:02") == []     # p0's MAC


def test_a_steady_stream_holds_no_change_longer_than_the_window(f: Fixture) -> None:
    """Changes every tenth of a window for ten windows: each is in the switch at most one
    window after it arrived (to the test's step of a tenth), and the applies are about one
    per window, not one per change."""
    step = WINDOW / 10
    before = f.br_int.bundles
    arrived: dict[str, float] = {}
    seen: dict[str, float] = {}

    def look() -> None:
        for a in f.br_int.arp_entries():
            seen.setdefault(a, f.clock.now)
    for i in range(1, 101):
        arrived[ip(i)] = f.clock.now
        f.deliver(port(f"p{i}", "h2", ip(i)))
        look()
        f.clock.now += step
    for _ in range(11):             # then silence, looked at every step
        f.idle_step()
        look()
        f.clock.now += step
    assert set(seen) >= set(arrived)
    assert max(seen[a] - arrived[a] for a in arrived) <= WINDOW + step + 1e-9
    assert f.br_int.bundles - before <= 12


def test_a_port_of_this_node_waits_for_the_window_and_goes_in_whole(f: Fixture) -> None:
    """This agent's own ADD is attaching the port as its change arrives: applied then, the
    port would get its ARP answer now and its unicast flow (it needs the ofport) at some
    later apply; held for the window, both go in one bundle once the attach is done."""
    mac = "0a:00:00:00:00:03"           # port() derives it from ip(1) = 10.70.0.3
    before = f.br_int.bundles
    assert not f.deliver(port("mine", "h1", ip(1)))
    assert f.br_int.bundles == before and ip(1) not in f.br_int.arp_entries()
    ofport = f.ovs.add_port("br-int", "tapmine", {"iface-id": "mine", "attached-mac": mac})
    f.clock.now += WINDOW
    assert f.idle_step()
    assert f.br_int.bundles == before + 1
    assert f.br_int.arp_entries()[ip(1)] == mac
    assert f.br_int.actions(f"dl_dst={mac}") == [f"output:{ofport}"]


def test_a_held_port_is_not_applied_when_a_shorter_wait_ends(f: Fixture) -> None:
    """The loop waits at most its interval; with an interval below the window, the end of
    that wait applied a held change at once (during the attach the hold is for)."""
    before = f.br_int.bundles
    assert not f.deliver(port("mine", "h1", ip(1)))
    assert not f.idle_step()                       # the window has not ended
    assert f.br_int.bundles == before and ip(1) not in f.br_int.arp_entries()
    f.clock.now += WINDOW
    assert f.idle_step()
    assert ip(1) in f.br_int.arp_entries()


def test_a_resync_snapshot_in_chunks_applies_when_it_completes(f: Fixture) -> None:
    """A snapshot's first chunk changes no flow (the view is staged until the last one).
    Offered to the window anyway, it used up the leading edge, and the complete snapshot
    then waited for the window's end."""
    chunks = [event(f.revision + 1, node("h1"), node("h2"), subnet("s1", "10.70.0.0/16"),
                    reset=True, complete=False),
              event(f.revision + 1, port("p0", "h2", ip(0)), port("p9", "h2", ip(9)))]
    for ev in chunks:
        f.events.put(ev)
        f.dp.watch_step(f.events, 0.01)
    assert ip(9) in f.br_int.arp_entries()         # no clock moved: applied at once


def test_a_remote_port_with_it_goes_at_once_and_takes_the_held_one_along(
        f: Fixture) -> None:
    assert not f.deliver(port("mine", "h1", ip(1)))
    assert f.deliver(port("theirs", "h2", ip(2)))
    assert {ip(1), ip(2)} <= set(f.br_int.arp_entries())
    assert not f.deliver(pb.TopologyChange(port_removed="mine"))   # ours: held
    assert ip(1) in f.br_int.arp_entries()
    f.clock.now += WINDOW
    assert f.idle_step()
    assert ip(1) not in f.br_int.arp_entries()


def test_window_zero_applies_every_change() -> None:
    fx = Fixture(window=0.0)
    fx.deliver(node("h1"), node("h2"), subnet("s1", "10.70.0.0/16"), reset=True)
    for i in range(5):
        assert fx.deliver(port(f"p{i}", "h2", ip(i)))
    assert fx.br_int.bundles == 5


@pytest.mark.parametrize("steps,expect", [
    # (time of each offer), whether each goes at once
    ([0.0], [True]),                        # the first change ever
    ([0.0, 0.01, 0.02], [True, False, False]),
    ([0.0, 0.06], [True, True]),            # a quiet spell longer than the window
    ([0.0, 0.03, 0.05], [True, False, True]),   # held, then due: goes with the newcomer
])
def test_apply_window_edges(steps: list[float], expect: list[bool]) -> None:
    w = ApplyWindow(0.05)
    got = []
    for t in steps:
        now = w.offer(t)
        got.append(now)
        if now:
            w.applied(t)
    assert got == expect


def test_a_held_change_waits_one_window_from_its_arrival() -> None:
    w = ApplyWindow(0.05)
    assert not w.offer(0.0, hold=True)
    assert w.due_in(0.0) == pytest.approx(0.05)
    assert not w.offer(0.04, hold=True)             # a later one does not push it back
    assert w.due_in(0.04) == pytest.approx(0.01)
    assert w.offer(0.045)                           # not held, quiet spell: goes now


def test_apply_window_due_in() -> None:
    w = ApplyWindow(0.05)
    assert w.due_in(0.0) is None
    assert w.offer(0.0)
    w.applied(0.0)
    assert not w.offer(0.02)
    assert w.due_in(0.02) == pytest.approx(0.03)
    assert w.due_in(0.09) == 0.0
    w.applied(0.09)
    assert w.due_in(0.1) is None
