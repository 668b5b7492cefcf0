"""The standalone datapath on WatchTopology: the view the stream's events build (snapshot
chunks, deltas, removals, node moves, the revision to resume from), the flow book that
turns a delta into the flow-mods of what it touched, and the loop against a real gRPC
server on loopback (tests/fakes/topology_server.py) with a stateful OVS: resume after a
break, reconnect after a controller restart, a snapshot after compaction, and the poll
when the controller is older than the watch."""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from datapath import DatapathSettings, StandaloneDatapath
from datapath.model import (
    OWNER_PORT,
    DatapathConfig,
    FlowBook,
    LocalPort,
    NodeView,
    Ofports,
    all_owners,
    desired_flows,
    dirty_owners,
    flow_context,
    owner_flows,
)
from datapath.view import Applied, TopologyView, WatchedTopology
from datapath.watch import backoff_delay
from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from tests.fakes.ovs import FakeFlowTable, FakeOvsdb
from tests.fakes.topology_server import TopologyServer, TopologyState
from tests.unit.test_datapath_loop import FakeHost

WAIT = 30.0   # generous: the machine is shared


def node(name: str, state: str = "ready", gateway: bool = False) -> pb.TopologyChange:
    return pb.TopologyChange(node=pb.NodeInfo(
        name=name, underlay_ip=f"172.31.0.{name[1:]}", state=state, gateway=gateway))


def port(pid: str, host: str, ip: str, mac: str = "") -> pb.TopologyChange:
    mac = mac or "0a:00:00:00:%02x:%02x" % divmod(int(ip.rsplit(".", 1)[1]), 256)
    return pb.TopologyChange(port=pb.RemotePort(port_id=pid, mac=mac, ips=[ip], node=host))


def subnet(sid: str = "s1", cidr: str = "10.70.0.0/24",
           gw: str = "10.70.0.1") -> pb.TopologyChange:
    return pb.TopologyChange(subnet=pb.Subnet(id=sid, cidr=cidr, gateway=gw))


def event(rev: int, *changes: pb.TopologyChange, reset: bool = False,
          complete: bool = True) -> pb.WatchTopologyEvent:
    return pb.WatchTopologyEvent(revision=rev, reset=reset, complete=complete,
                                 changes=list(changes))


def wait_for(cond: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------------ the view

def test_a_snapshot_in_chunks_replaces_the_view_only_once_complete() -> None:
    w = WatchedTopology()
    assert w.on_event(event(3, node("h1"), node("h2"), port("a", "h2", "10.70.0.2"))) == \
        Applied(3, reset=False, ports=frozenset({"a"}))
    assert w.on_event(event(9, node("h1"), node("h3"), reset=True, complete=False)) is None
    assert w.on_event(event(9, port("b", "h3", "10.70.0.3"), complete=False)) is None
    # mid-snapshot the live view is still the old one, at its revision
    assert set(w.live.ports) == {"a"} and set(w.live.nodes) == {"h1", "h2"}
    assert w.revision == 3
    assert w.on_event(event(9, subnet())) == Applied(9, reset=True)
    assert set(w.live.ports) == {"b"} and set(w.live.nodes) == {"h1", "h3"}
    assert w.live.ports_by_node == {"h3": {"b"}} and w.revision == 9
    assert w.live.frame().subnets[0].cidr == "10.70.0.0/24"


def test_a_stream_broken_mid_snapshot_keeps_the_live_view_and_its_revision() -> None:
    w = WatchedTopology()
    w.on_event(event(4, node("h2"), port("a", "h2", "10.70.0.2")))
    w.on_event(event(8, node("h3"), reset=True, complete=False))
    w.on_disconnect()
    assert w.revision == 4 and set(w.live.ports) == {"a"}
    # the next stream's delta applies to the live view, not the abandoned snapshot
    assert w.on_event(event(5, port("c", "h2", "10.70.0.4"))) == Applied(
        5, reset=False, ports=frozenset({"c"}))
    assert set(w.live.ports) == {"a", "c"} and "h3" not in w.live.nodes


def test_removals_node_moves_and_repeats() -> None:
    v = TopologyView()
    assert v.apply([node("h2"), node("h3"), subnet(), port("a", "h2", "10.70.0.2"),
                    port("b", "h2", "10.70.0.3")]) == {"a", "b"}
    assert v.apply([port("a", "h3", "10.70.0.2")]) == {"a"}             # moved
    assert v.ports_by_node == {"h2": {"b"}, "h3": {"a"}}
    assert v.apply([port("a", "h3", "10.70.0.2")]) == set()             # a repeat: no-op
    assert v.apply([pb.TopologyChange(port_removed="b"),
                    pb.TopologyChange(port_removed="nope")]) == {"b"}
    assert v.ports_by_node == {"h3": {"a"}}
    v.apply([pb.TopologyChange(node_removed="h2"), pb.TopologyChange(subnet_removed="s1"),
             pb.TopologyChange()])                                     # unset: ignored
    assert set(v.nodes) == {"h3"} and v.subnets == {}
    v.apply([node("h3", state="stale")])
    assert v.nodes["h3"] == NodeView("h3", "172.31.0.3", ready=False)


# ----------------------------------------------------------------- the flow book

def _ofports(view: TopologyView, me: str) -> Ofports:
    return Ofports(int_patch=1, tun_patch=2, tunnels={
        n: 100 + int(n[1:]) for n in view.nodes if n != me})


def test_random_deltas_change_exactly_what_a_full_recompute_would() -> None:
    """Deltas applied owner by owner to the book and the table end where a recompute from
    scratch ends, after every step; and a port's own delta costs its own flows only."""
    rng = random.Random(14)
    cfg, me = DatapathConfig(node="h1"), "h1"
    view = TopologyView()
    view.apply([node("h1"), node("h2"), node("h3", gateway=True), subnet()])
    local = (LocalPort("p1", "0a:00:00:00:00:01", 7),)
    ctx = flow_context(view.frame(), cfg, local, _ofports(view, me))
    book = FlowBook.build(all_owners(sorted(view.ports), ctx), view.ports, ctx)
    br_int, br_tun = FakeFlowTable("br-int"), FakeFlowTable("br-tun")
    want = book.desired()
    br_int.replace_flows(f.spec() for f in want.br_int)
    br_tun.replace_flows(f.spec() for f in want.br_tun)
    for step in range(400):
        r = rng.random()
        pid = f"p{rng.randrange(12)}"
        host = f"h{rng.randrange(1, 6)}"
        ip = f"10.70.0.{rng.randrange(2, 30)}"       # collisions: conflicts on purpose
        if r < 0.55:
            change = port(pid, host, ip)
        elif r < 0.75:
            change = pb.TopologyChange(port_removed=pid)
        elif r < 0.85:
            change = node(host, state=rng.choice(["ready", "stale"]),
                          gateway=rng.random() < 0.3)
        elif r < 0.92:
            change = pb.TopologyChange(node_removed=host)
        else:
            change = subnet(gw=f"10.70.0.{rng.randrange(1, 3)}")
        ports = view.apply([change])
        new = flow_context(view.frame(), cfg, local, _ofports(view, me))
        owners = dirty_owners(ctx, new, view.ports_by_node)
        assert owners is not None
        owners |= {(OWNER_PORT, p) for p in ports}
        for o in sorted(owners):
            book.set(o, owner_flows(o, view.ports, new))
        ctx = new
        mods = book.take_mods()
        br_int.apply_flow_mods(mods.br_int)
        br_tun.apply_flow_mods(mods.br_tun)
        full = desired_flows(view.topology(), cfg, local, _ofports(view, me))
        assert book.desired() == full, f"step {step}: {change}"
        assert br_int.specs() == {(f.table, f.priority, f.match, f.actions)
                                  for f in full.br_int}, f"step {step}"
        assert br_tun.specs() == {(f.table, f.priority, f.match, f.actions)
                                  for f in full.br_tun}, f"step {step}"


def test_a_port_added_moved_and_removed_changes_only_its_own_flows() -> None:
    cfg = DatapathConfig(node="h1")
    view = TopologyView()
    view.apply([node("h1"), node("h2"), node("h3"), subnet()]
               + [port(f"q{i}", "h2", f"10.70.0.{i + 10}") for i in range(50)])
    ctx = flow_context(view.frame(), cfg, (), _ofports(view, "h1"))
    book = FlowBook.build(all_owners(sorted(view.ports), ctx), view.ports, ctx)

    def delta(change: pb.TopologyChange) -> tuple[tuple[str, ...], tuple[str, ...]]:
        for p in view.apply([change]):
            book.set((OWNER_PORT, p), owner_flows((OWNER_PORT, p), view.ports, ctx))
        m = book.take_mods()
        return m.br_int, m.br_tun

    mac = "0a:00:00:00:00:05"
    br_int, br_tun = delta(port("new", "h2", "10.70.0.5", mac))
    assert len(br_int) == 2 and len(br_tun) == 1            # unicast + ARP; tunnel unicast
    assert all(line.startswith("add ") and (mac in line or "10.70.0.5" in line)
               for line in br_int + br_tun)
    br_int, br_tun = delta(port("new", "h3", "10.70.0.5", mac))
    assert br_int == ()                                     # still out the patch port
    assert br_tun == (f"add cookie=0xec0001,table=0,priority=50,in_port=2,dl_dst={mac} "
                      "actions=set_field:0x64->tun_id,output:103",)
    br_int, br_tun = delta(pb.TopologyChange(port_removed="new"))
    assert sorted(br_int) == ["delete_strict table=0,priority=100,arp,arp_op=1,"
                              "arp_tpa=10.70.0.5",
                              f"delete_strict table=0,priority=50,dl_dst={mac}"]
    assert br_tun == (f"delete_strict table=0,priority=50,in_port=2,dl_dst={mac}",)


def test_a_node_going_stale_touches_its_tunnel_and_its_ports_only() -> None:
    cfg = DatapathConfig(node="h1")
    view = TopologyView()
    view.apply([node("h1"), node("h2"), node("h3"), subnet(),
                port("a", "h2", "10.70.0.2"), port("b", "h3", "10.70.0.3")])
    old = flow_context(view.frame(), cfg, (), _ofports(view, "h1"))
    view.apply([node("h3", state="stale")])
    new = flow_context(view.frame(), cfg, (), _ofports(view, "h1"))
    assert dirty_owners(old, new, view.ports_by_node) == {(3, "h3"), (OWNER_PORT, "b")}
    assert dirty_owners(old, flow_context(view.frame(), DatapathConfig(node="h1", vni=7), (),
                                          _ofports(view, "h1")), view.ports_by_node) is None


def test_backoff_is_full_jitter_and_capped() -> None:
    assert backoff_delay(0, 0.25, 5.0, lambda: 0.999) < 0.25
    assert backoff_delay(3, 0.25, 5.0, lambda: 1.0) == 2.0
    assert backoff_delay(50, 0.25, 5.0, lambda: 1.0) == 5.0
    assert backoff_delay(50, 0.25, 5.0, lambda: 0.0) == 0.0


# --------------------------------------------------- the loop against a real server

@dataclass
class Agent:
    dp: StandaloneDatapath
    ovs: FakeOvsdb
    br_int: FakeFlowTable
    br_tun: FakeFlowTable
    stop: threading.Event
    thread: threading.Thread

    def arp(self) -> dict[str, str]:
        return self.br_int.arp_entries()


@pytest.fixture
def state() -> TopologyState:
    st = TopologyState()
    st.commit(node("h1"), node("h2"), node("h3"), subnet())
    st.commit(port("a", "h2", "10.70.0.2"), port("b", "h3", "10.70.0.3"),
              port("c", "h2", "10.70.0.4"))
    return st


@pytest.fixture
def servers() -> Iterator[list[TopologyServer]]:
    made: list[TopologyServer] = []
    yield made
    for s in made:
        s.stop()


@pytest.fixture
def agents() -> Iterator[Callable[..., Agent]]:
    made: list[tuple[Agent, grpc.Channel]] = []

    def start(target: str, **settings: float) -> Agent:
        ovs = FakeOvsdb()
        ovs.ensure_bridge("br-int")
        br_int, br_tun = FakeFlowTable("br-int"), FakeFlowTable("br-tun")
        channel = grpc.insecure_channel(target)
        stop = threading.Event()
        dp = StandaloneDatapath(
            DatapathSettings(node="h1", **{"interval": 0.1, "backoff_base": 0.05,
                                           "backoff_cap": 0.5, **settings},
                             controller=target),
            ovs, pb_grpc.IPControllerStub(channel), stop, flows=(br_int, br_tun),
            host=FakeHost())
        dp.setup()
        a = Agent(dp, ovs, br_int, br_tun, stop, dp.start())
        made.append((a, channel))
        return a

    yield start
    for a, channel in made:
        a.stop.set()
        a.thread.join(timeout=WAIT)
        assert not a.thread.is_alive()
        channel.close()


@pytest.fixture
def watching(state: TopologyState, servers: list[TopologyServer],
             agents: Callable[[str], Agent]) -> tuple[TopologyServer, Agent]:
    """A controller and an agent that has applied its first snapshot."""
    srv = TopologyServer(state)
    servers.append(srv)
    a = agents(srv.target)
    wait_for(lambda: a.arp() == EXPECTED, "the snapshot")
    return srv, a


EXPECTED = {"10.70.0.2": "0a:00:00:00:00:02", "10.70.0.3": "0a:00:00:00:00:03",
            "10.70.0.4": "0a:00:00:00:00:04"}


def test_the_agent_follows_the_watch_and_applies_a_delta_as_a_bundle(
        state: TopologyState, servers: list[TopologyServer],
        agents: Callable[[str], Agent]) -> None:
    servers.append(TopologyServer(state))
    a = agents(servers[0].target)
    wait_for(lambda: a.arp() == EXPECTED, "the snapshot's ARP answers")
    assert state.snapshots == 1 and a.dp.mode == "watch"
    wait_for(lambda: len(a.br_tun.flows) == 6, "tunnel flows")   # 3 MACs, 2 tunnels, drop
    before_int, before_tun = a.br_int.specs(), a.br_tun.specs()
    replaced = a.br_int.replaced, a.br_tun.replaced
    state.commit(port("d", "h3", "10.70.0.5"))
    wait_for(lambda: "10.70.0.5" in a.arp(), "the new port's ARP answer")
    wait_for(lambda: len(a.br_tun.specs() - before_tun) == 1, "the new port's tunnel flow")
    assert before_int < a.br_int.specs() and len(a.br_int.specs() - before_int) == 2
    assert before_tun < a.br_tun.specs()
    assert (a.br_int.replaced, a.br_tun.replaced) == replaced    # no whole-table rewrite
    state.commit(pb.TopologyChange(port_removed="a"))
    wait_for(lambda: "10.70.0.2" not in a.arp(), "the removed port's ARP answer gone")
    assert a.br_int.mentioning("0a:00:00:00:00:02") == []
    assert a.br_tun.mentioning("0a:00:00:00:00:02") == []


def test_a_broken_stream_resumes_from_its_revision_without_a_snapshot(
        state: TopologyState, watching: tuple[TopologyServer, Agent]) -> None:
    srv, a = watching
    srv.break_streams()
    wait_for(lambda: len(state.requests) >= 2, "a second watch")
    rev = state.commit(port("e", "h2", "10.70.0.6"))
    wait_for(lambda: "10.70.0.6" in a.arp(), "the change after the break")
    assert state.requests[0].from_revision == 0
    assert state.requests[1].from_revision == 2 and rev == 3
    assert state.snapshots == 1


def test_a_controller_restart_reconnects_and_catches_up(
        state: TopologyState, watching: tuple[TopologyServer, Agent]) -> None:
    srv, a = watching
    srv.stop()
    # while it is down: changes the agent misses, and the flows stay (fail static)
    state.commit(port("f", "h3", "10.70.0.7"), pb.TopologyChange(port_removed="b"))
    assert a.arp() == EXPECTED
    wait_for(lambda: a.dp.watcher is not None and a.dp.watcher.connects >= 2,
             "reconnect attempts against the stopped controller")
    srv.restart()
    wait_for(lambda: "10.70.0.7" in a.arp() and "10.70.0.3" not in a.arp(),
             "the changes made while the controller was down")
    assert state.snapshots == 1
    assert all(r.from_revision == 2 for r in state.requests[1:])


def test_a_compacted_revision_gets_a_snapshot_that_removes_what_is_gone(
        state: TopologyState, watching: tuple[TopologyServer, Agent]) -> None:
    srv, a = watching
    srv.stop()
    state.commit(pb.TopologyChange(port_removed="c"), node("h3", state="stale"))
    state.compact()
    srv.restart()
    wait_for(lambda: a.arp() == {"10.70.0.2": "0a:00:00:00:00:02"}, "the fresh snapshot")
    assert state.snapshots == 2
    wait_for(lambda: a.br_tun.mentioning("0a:00:00:00:00:03") == [], "h3's flows gone")


def test_an_older_controller_without_the_watch_is_polled(
        state: TopologyState, servers: list[TopologyServer],
        agents: Callable[[str], Agent], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="datapath")
    servers.append(TopologyServer(state, watch=False))
    a = agents(servers[0].target)
    wait_for(lambda: a.arp() == EXPECTED, "the poll's topology")
    assert a.dp.mode == "poll"
    state.commit(port("g", "h2", "10.70.0.8"))
    wait_for(lambda: "10.70.0.8" in a.arp(), "a change, by polling")
    said = [r for r in caplog.records if "has no WatchTopology" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_a_silent_stream_is_presumed_dead_and_resumed(
        state: TopologyState, servers: list[TopologyServer],
        agents: Callable[..., Agent]) -> None:
    """The fake sends nothing while nothing changes (no progress events): with a short
    silence limit the agent reconnects, from its revision, and still follows changes."""
    servers.append(TopologyServer(state))
    a = agents(servers[0].target, watch_silence=0.3)
    wait_for(lambda: a.arp() == EXPECTED, "the snapshot")
    wait_for(lambda: len(state.requests) >= 3, "reconnects after silences")
    assert all(r.from_revision == 2 for r in state.requests[1:])
    assert state.snapshots == 1
    state.commit(port("h", "h2", "10.70.0.9"))
    wait_for(lambda: "10.70.0.9" in a.arp(), "a change after them")
