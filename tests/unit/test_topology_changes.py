"""The topology change log: which rows a change writes (pure), coalescing, chunking, the
watch's relevance and mailbox; then the log in every store (revision order, rollback gaps,
compaction and its floor, stale transitions written once)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ecnet_api.v1 import ecnet_pb2 as pb
from ipam import changes as ch
from ipam.domain import AllocationRequest, Node, PodIdentity, Port, PortAddress, PortState
from ipam.service import IpamService
from ipcontroller.watch import (
    Mailbox,
    Relevance,
    WireCache,
    batch_delay,
    change_pb,
    chunk,
    entry,
    event_bytes,
)

PORT = Port(id="p1", pool_id="pool", mac="0a:00:00:00:00:01", state=PortState.ACTIVE,
            generation=1, addresses=(PortAddress("s6", "fd00::5", 5),
                                     PortAddress("s4", "10.0.0.5", 5)), node="n1")


def _row(rev: int, kind: str, key: str, op: str = ch.PUT, **kw: Any) -> ch.LogRow:
    return ch.LogRow(rev, ch.Change(kind, key, op, **kw))


# ------------------------------------------------------------ delta generation

def test_an_active_port_is_an_upsert_with_its_ips_ipv4_first_and_its_subnets() -> None:
    c = ch.port_change(PORT)
    assert (c.kind, c.key, c.op, c.node, c.subnets) == ("port", "p1", "put", "n1",
                                                        ("s4", "s6"))
    assert c.data == {"mac": PORT.mac, "ips": ["10.0.0.5", "fd00::5"]}


def test_an_idle_port_and_a_deleted_one_are_removals_that_keep_node_and_subnets() -> None:
    for c in (ch.port_change(replace(PORT, state=PortState.IDLE)), ch.port_removed(PORT)):
        assert (c.op, c.node, c.subnets, c.data) == ("del", "n1", ("s4", "s6"), {})


def test_a_heartbeat_writes_no_row_but_a_change_or_a_return_from_stale_does() -> None:
    n = Node("n1", "192.0.2.1", last_seen=10.0)
    assert ch.node_change(n, replace(n, last_seen=20.0)) is None
    assert ch.node_change(None, n) is not None                       # registered
    assert ch.node_change(n, replace(n, underlay_ip="192.0.2.2")) is not None
    assert ch.node_change(n, replace(n, gateway=True)) is not None
    back = ch.node_change(replace(n, ready=False), replace(n, last_seen=99.0))
    assert back is not None and back.data["ready"] is True
    assert ch.node_stale(n).data["ready"] is False


def test_rows_survive_their_columns() -> None:
    for c in (ch.port_change(PORT), ch.port_removed(PORT), ch.node_stale(Node("n", "1.2.3.4")),
              ch.node_removed("n"), ch.subnet_removed("s")):
        back = ch.decode(7, *ch.encode(c)).change
        assert (back, back.data) == (c, c.data)


def test_endpoint_rows_group_into_one_upsert_per_port() -> None:
    rows = [("a", "m1", "n1", "fd00::1", "s6"), ("a", "m1", "n1", "10.0.0.1", "s4"),
            ("b", "m2", "n2", None, None)]
    a, b = ch.endpoint_changes(rows)
    assert (a.key, a.subnets, a.data["ips"]) == ("a", ("s4", "s6"), ["10.0.0.1", "fd00::1"])
    assert (b.key, b.node, b.subnets, b.data["ips"]) == ("b", "n2", (), [])


# -------------------------------------------------------------------- coalescing

def test_coalescing_keeps_the_latest_row_of_each_object_in_revision_order() -> None:
    rows = [_row(1, "port", "a", data={"v": 1}), _row(2, "port", "b"),
            _row(3, "port", "a", "del"), _row(4, "node", "a"), _row(5, "port", "b", data={})]
    assert [r.revision for r in ch.coalesce(rows)] == [3, 4, 5]


def test_a_mailbox_over_its_bound_coalesces_then_overflows_to_a_snapshot() -> None:
    box = Mailbox(limit=3)
    box.offer([_row(i, "port", "a") for i in range(1, 6)])      # 5 rows of one key: 1 left
    rows, over = box.take(0)
    assert [r.revision for r in rows] == [5] and not over
    box.offer([_row(i, "port", f"k{i}") for i in range(6, 10)])  # 4 distinct keys > 3
    rows, over = box.take(0)
    assert rows == [] and over
    box.offer([_row(10, "port", "z")])
    assert [r.revision for r in box.take(0)[0]] == [10]


# ---------------------------------------------------------------------- chunking

def test_chunks_stay_under_the_byte_and_count_limits_and_keep_every_change() -> None:
    items = [change_pb(ch.port_change(replace(PORT, id=f"p{i:05d}"))) for i in range(3000)]
    runs = list(chunk(items, max_bytes=16 * 1024, max_count=500))
    assert sum(len(r) for r in runs) == 3000
    assert [c.port.port_id for r in runs for c in r] == [c.port.port_id for c in items]
    for r in runs:
        assert len(r) <= 500
        assert pb.WatchTopologyEvent(revision=2**40, complete=True, changes=r).ByteSize() \
            <= 16 * 1024 + 16
    assert list(chunk([], 100, 10)) == []


def test_an_event_built_from_shared_change_bytes_is_the_message_on_the_wire() -> None:
    """Streams send pre-encoded changes concatenated behind their own header: a client must
    read exactly the message it would have been sent, and chunking bytes keeps the limits."""
    items = [change_pb(ch.port_change(replace(PORT, id=f"p{i:05d}"))) for i in range(3000)]
    items.append(pb.TopologyChange(port_removed="gone"))
    raw = [entry(c) for c in items]
    runs = list(chunk(raw, max_bytes=16 * 1024, max_count=500))
    assert [len(r) for r in runs] == [len(r) for r in chunk(items, 16 * 1024, 500)]
    at = 0
    for i, run in enumerate(runs):
        msg = pb.WatchTopologyEvent(revision=2**40 + i, reset=i == 0, complete=i % 2 == 0,
                                    changes=items[at:at + len(run)])
        at += len(run)
        wire = event_bytes(2**40 + i, run, reset=i == 0, complete=i % 2 == 0)
        assert wire == msg.SerializeToString()
        assert pb.WatchTopologyEvent.FromString(wire) == msg
    assert event_bytes(0, [], reset=False, complete=False) == b""


def test_a_row_is_encoded_once_for_every_stream_and_the_cache_stays_bounded() -> None:
    wire = WireCache(limit=4)
    first = wire.get(_row(1, "port", "a", ch.DEL))
    assert wire.get(_row(1, "port", "a", ch.DEL)) is first     # the same bytes, shared
    assert first == entry(pb.TopologyChange(port_removed="a"))
    for rev in range(2, 20):
        wire.get(_row(rev, "port", f"k{rev}", ch.DEL))
    assert len(wire._by_rev) <= 4 and 19 in wire._by_rev
    # A database restored under the replica: revision 19 is now another row.
    other = wire.get(_row(19, "port", "other", ch.DEL))
    assert other == entry(pb.TopologyChange(port_removed="other"))


def test_the_batching_window_grows_with_the_watchers_up_to_its_bound() -> None:
    assert batch_delay(0) < batch_delay(100) < batch_delay(1000) <= batch_delay(10**6)
    assert batch_delay(10**6) <= 0.1
    assert batch_delay(1000, 0.02) == 0.02 and batch_delay(0, 0.0) == 0.0   # the flag's bound


# --------------------------------------------------------------------- relevance

def test_a_node_gets_the_ports_of_its_subnets_every_removal_and_learns_gains() -> None:
    rel = Relevance("n1")
    rel.seed([ch.Change("port", "mine", "put", node="n1", subnets=("s1",))])
    other_s1 = ch.Change("port", "x", "put", node="n2", subnets=("s1",))
    other_s2 = ch.Change("port", "y", "put", node="n2", subnets=("s2",))
    assert rel.admit(other_s1) and not rel.admit(other_s2)
    assert rel.admit(ch.Change("port", "y", "del", node="n2", subnets=("s2",)))
    assert rel.admit(ch.Change("node", "n9", "put")) and rel.admit(ch.Change("subnet", "s2",
                                                                             "put"))
    assert rel.gained(ch.Change("port", "m2", "put", node="n1", subnets=("s1", "s2"))) == ["s2"]
    assert rel.admit(other_s2)
    assert rel.gained(ch.Change("port", "m3", "put", node="n1", subnets=("s2",))) == []
    assert Relevance("").admit(other_s2)          # an admin watching sees everything


# ------------------------------------------------------------- the log in stores

def _svc(store: Any) -> IpamService:
    svc = IpamService(store)
    svc.create_pool("p", "dynamic", quarantine_seconds=0)
    svc.create_subnet("p", "10.77.0.0/24")
    return svc


def _alloc(svc: IpamService, cid: str, node: str = "n1") -> Port:
    return svc.allocate(AllocationRequest(container_id=cid, ifname="eth0",
                                          pod=PodIdentity("ns", cid, f"uid-{cid}"),
                                          node=node, pool="p")).port


def test_changes_are_logged_in_order_with_the_transaction(store: Any) -> None:
    svc = _svc(store)
    a = _alloc(svc, "c1")
    _alloc(svc, "c1")                                   # a retried ADD changes nothing
    svc.register_node(Node("n1", "192.0.2.1"))
    svc.register_node(Node("n1", "192.0.2.1"))          # a heartbeat
    svc.release("c1", "eth0")
    svc.release("c1", "eth0")                           # nothing left to release
    assert svc.delete_node("n1")
    rows, floor = svc.topology.after(0, 100)
    assert floor == 0
    got = [(r.change.kind, r.change.key, r.change.op) for r in rows]
    subnet_id = rows[0].change.key
    assert got == [("subnet", subnet_id, "put"), ("port", a.id, "put"), ("node", "n1", "put"),
                   ("port", a.id, "del"), ("node", "n1", "del")]
    revs = [r.revision for r in rows]
    assert revs == sorted(revs) and len(set(revs)) == len(revs)
    assert svc.topology.bounds() == (0, revs[-1])
    assert svc.topology.after(revs[1], 2)[0] == rows[2:4]


def test_a_rolled_back_transaction_logs_nothing(store: Any) -> None:
    svc = _svc(store)
    _, head = svc.topology.bounds()
    with pytest.raises(RuntimeError), store.transaction() as uow:
        uow.record_change(ch.node_removed("ghost"))
        raise RuntimeError("abort")
    _alloc(svc, "c2")
    rows, _ = svc.topology.after(head, 100, settle=True)
    assert [r.change.kind for r in rows] == ["port"]


def test_compaction_keeps_the_newest_rows_and_raises_the_floor(store: Any) -> None:
    svc = _svc(store)
    for i in range(6):
        _alloc(svc, f"c{i}")
    _, head = svc.topology.bounds()
    assert svc.topology.compact(keep=3, limit=2) == 2       # at most `limit` per call
    assert svc.topology.bounds() == (2, head)
    while svc.topology.compact(keep=3):
        pass
    floor, head2 = svc.topology.bounds()
    assert (floor, head2) == (head - 3, head)
    rows, got_floor = svc.topology.after(0, 100)
    assert got_floor == floor and [r.revision for r in rows] == [head - 2, head - 1, head]
    assert svc.topology.compact(keep=3) == 0
    _alloc(svc, "later")                                    # revisions never go back
    assert svc.topology.after(head, 10)[0][0].revision == head + 1


def test_a_node_turns_stale_once_and_ready_again_on_its_next_heartbeat(store: Any) -> None:
    svc = _svc(store)
    svc.register_node(Node("n1", "192.0.2.1"))
    _, head = svc.topology.bounds()
    assert svc.mark_stale_nodes(1e9) == []                  # nobody silent that long
    assert [n.name for n in svc.mark_stale_nodes(-1.0)] == ["n1"]   # last_seen < now + 1
    assert svc.mark_stale_nodes(-1.0) == []                 # once, not every sweep
    assert [n.ready for n in svc.list_nodes()] == [False]
    svc.register_node(Node("n1", "192.0.2.1"))
    rows, _ = svc.topology.after(head, 10)
    assert [(r.change.key, r.change.data["ready"]) for r in rows] == [("n1", False),
                                                                      ("n1", True)]


def test_a_snapshot_is_the_log_applied_up_to_its_revision(store: Any) -> None:
    svc = _svc(store)
    ports = [_alloc(svc, f"c{i}", node=f"n{i % 2}") for i in range(5)]
    svc.release("c0", "eth0")
    svc.register_node(Node("n1", "192.0.2.1"))
    snap = svc.topology.snapshot()
    view: dict[tuple[str, str], ch.Change] = {}
    for r in svc.topology.after(0, 1000)[0]:
        if r.change.op == ch.PUT:
            view[r.change.ident] = r.change
        else:
            view.pop(r.change.ident, None)
    assert snap.revision == svc.topology.bounds()[1]
    assert {c.ident: c.data for c in snap.changes} == {k: c.data for k, c in view.items()}
    assert {c.key for c in snap.changes if c.kind == "port"} == {p.id for p in ports[1:]}
    sub = next(c.key for c in snap.changes if c.kind == "subnet")
    assert {c.key for c in svc.topology.subnet_ports(sub)} == {p.id for p in ports[1:]}
