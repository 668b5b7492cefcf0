"""SyncWorker + in-memory outbox against the real emulator: outages, faults, auth, ordering,
leases, resync, and the payloads the IPAM service actually writes."""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ipam.onos import (
    DesiredState,
    OnosClient,
    OnosNetwork,
    OnosPort,
    OnosSubnet,
    OnosUnavailable,
    OutboxItem,
    SyncWorker,
    from_payload,
    network_body,
    port_body,
    subnet_body,
    to_payload,
)
from ipam.onos.memory_outbox import MemoryOutbox
from onos_emulator import EmulatorServer
from tests.lab.helpers import FakeClock

NET = OnosNetwork("net-1", "pod-net", 77, 1450, ("sub-1",))
SUB = OnosSubnet("sub-1", "pod-net-10.20.0.0/22", "net-1", "10.20.0.0/22", "10.20.0.1", 4,
                 (("10.20.0.2", "10.20.3.254"),))


def make_port(i: int, host: str = "node-a") -> OnosPort:
    return OnosPort(f"port-{i:04d}", f"default_pod-{i}", "net-1", f"0a:00:00:00:{i >> 8:02x}:"
                    f"{i & 255:02x}", (("sub-1", f"10.20.{i >> 8}.{(i & 255) + 2}"),),
                    f"uid-{i}", host_id=host)


@pytest.fixture
def emu(make_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    return make_emulator(start=False)  # not started: each test decides when ONOS is up


@pytest.fixture
def client(emu: EmulatorServer) -> Iterator[OnosClient]:
    with OnosClient(emu.url, "onos", "rocks", timeout=1.0) as c:
        yield c


def worker(store: Any, client: Any, clock: FakeClock, holder: str = "w1",
           **kw: Any) -> SyncWorker:
    opts: dict[str, Any] = {"base_backoff": 0.05, "max_backoff": 2.0, "auth_backoff": 30.0,
                            "lease_ttl": 10.0, "rng": random.Random(3)}
    opts.update(kw)
    return SyncWorker(store, client, holder, clock=clock, sleep=clock.sleep, **opts)


def upsert(ob: MemoryOutbox, obj: Any, now: float) -> int:
    kind = next(iter(to_payload(obj)))
    return ob.add(kind, obj.id, "upsert", to_payload(obj), now)


def live_ports(state: dict[str, Any]) -> dict[str, Any]:
    return dict(state["ports"])


# --------------------------------------------------------------------------- (a) outage

@pytest.mark.parametrize("outage", ["never-started", "stopped"])
def test_outage_backlog_drains_exactly_once(emu: EmulatorServer, client: OnosClient,
                                            outage: str) -> None:
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    w = worker(ob, client, clock)
    upsert(ob, NET, clock())
    upsert(ob, SUB, clock())
    if outage == "stopped":
        emu.start()
        assert w.run_once() == 2
        emu.stop()
    ports = [make_port(i) for i in range(500)]
    for p in ports:
        upsert(ob, p, clock())
    deleted = {p.id for p in ports[::7]}
    for pid in sorted(deleted):
        ob.add("port", pid, "delete", None, clock())

    for _ in range(6):  # the outage: rounds fail fast, nothing is lost
        t0 = time.monotonic()
        assert w.run_once() == 0
        assert time.monotonic() - t0 < 1.0
        clock.sleep(1.0)
    st = w.status()
    assert st.pending == (502 if outage == "never-started" else 500) + len(deleted)
    assert st.last_error.startswith("unavailable") and st.failed == 0
    assert sum(r.attempts for r in ob.outbox_rows()) == 6  # one probe per round, no hammering

    emu.start()
    t0 = time.monotonic()
    w.drain(timeout=600)
    elapsed = time.monotonic() - t0
    assert w.status().pending == 0

    state = emu.snapshot()
    want = {p.id: port_body(p)["port"] for p in ports if p.id not in deleted}
    assert live_ports(state) == want
    assert state["networks"] == {"net-1": network_body(NET)["network"]}
    assert state["subnets"] == {"sub-1": subnet_body(SUB)["subnet"]}
    calls = emu.calls()
    for pid in want:
        assert calls["by_object"][f"POST ports/{pid}"] == 1
    assert calls["counts"]["POST ports 201"] == 500
    assert calls["counts"]["DELETE ports 204"] == len(deleted)
    assert not any(k.startswith("PUT") for k in calls["counts"])
    assert elapsed < 8, f"drained {500 + len(deleted)} rows in {elapsed:.2f}s"


# --------------------------------------------------------------------------- (b) faults

def test_random_500_and_resets_converge_to_desired_state(emu: EmulatorServer,
                                                         client: OnosClient) -> None:
    emu.start()
    emu.set_faults(["error500", "reset"], rate=0.3, seed=11)
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    w = worker(ob, client, clock)
    rnd = random.Random(5)
    desired: dict[str, OnosPort] = {}
    upsert(ob, NET, clock())
    upsert(ob, SUB, clock())
    ops = 2
    i = 0
    while ops < 300:  # a burst: creates, moves (updates) and releases, interleaved
        r = rnd.random()
        if r < 0.6 or len(desired) < 5:
            p = make_port(i)
            i += 1
            desired[p.id] = p
            upsert(ob, p, clock())
        elif r < 0.8:
            p = replace(desired[rnd.choice(sorted(desired))], host_id=f"node-{rnd.randrange(9)}")
            desired[p.id] = p
            upsert(ob, p, clock())
        else:
            pid = rnd.choice(sorted(desired))
            del desired[pid]
            ob.add("port", pid, "delete", None, clock())
        ops += 1

    w.drain(timeout=3600)
    assert w.status().pending == 0
    state = emu.snapshot()
    assert live_ports(state) == {pid: port_body(p)["port"] for pid, p in desired.items()}
    assert set(state["networks"]) == {"net-1"} and set(state["subnets"]) == {"sub-1"}
    counts = emu.calls()["counts"]
    assert sum(v for k, v in counts.items() if k.endswith(" 500")) > 20
    assert sum(v for k, v in counts.items() if k.endswith(" reset")) > 20


# --------------------------------------------------------------------------- (c) auth

def test_auth_failure_is_visible_and_retried_not_dropped(emu: EmulatorServer,
                                                         client: OnosClient) -> None:
    emu.start()
    emu.set_faults("unauthorized")
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    seen: list[tuple[str, OutboxItem | None]] = []
    w = worker(ob, client, clock, auth_backoff=60.0,
               on_result=lambda outcome, item, err: seen.append((outcome, item)))
    upsert(ob, make_port(1), clock())
    upsert(ob, make_port(2), clock())
    assert w.run_once() == 0
    st = w.status()
    assert st.pending == 2 and st.failed == 1
    assert st.last_error.startswith("auth") and "credentials" in st.last_error
    assert [o for o, _ in seen] == ["auth"]  # the batch stops: the next call would fail too
    row = ob.outbox_rows()[0]
    assert row.attempts == 1 and row.next_attempt_at == pytest.approx(clock() + 60.0)

    calls_before = emu.calls()["total"]
    clock.sleep(30)
    assert w.run_once() == 0  # paused: ONOS is not asked again before auth_backoff
    assert emu.calls()["total"] == calls_before

    emu.set_faults("none")  # the operator fixed the credentials
    clock.sleep(31)
    assert w.run_once() == 2
    assert w.status().pending == 0
    assert set(emu.snapshot()["ports"]) == {"port-0001", "port-0002"}


# --------------------------------------------------------------------------- (d) ordering

def test_upsert_then_delete_of_one_port_keeps_order_through_failures(
        emu: EmulatorServer, client: OnosClient) -> None:
    emu.start()
    emu.set_faults("error500")
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    w = worker(ob, client, clock)
    p = make_port(9)
    upsert(ob, p, clock())
    ob.add("port", p.id, "delete", None, clock())
    for _ in range(4):
        assert w.run_once() == 0
        clock.sleep(5)
    rows = ob.outbox_rows()
    assert [r.op for r in rows] == ["upsert", "delete"]
    assert rows[0].attempts == 4 and rows[1].attempts == 0  # the delete never overtook
    emu.set_faults("none")
    w.drain(timeout=60)
    assert emu.snapshot()["ports"] == {}
    by_object = emu.calls()["by_object"]
    assert by_object == {f"POST ports/{p.id}": 1, f"DELETE ports/{p.id}": 1}


class _AllRowsStore(MemoryOutbox):
    """A store that (wrongly) hands out several rows of one object: the worker must still
    keep per-object order inside the batch."""

    def claim(self, holder: str, limit: int, now: float) -> list[OutboxItem]:
        return [r.item() for r in self.outbox_rows() if r.next_attempt_at <= now][:limit]


class _FlakyClient:
    def __init__(self, fail_first: set[str]) -> None:
        self.fail_first = set(fail_first)
        self.log: list[tuple[str, str]] = []

    def _do(self, what: str, obj_id: str) -> str:
        if obj_id in self.fail_first:
            self.fail_first.discard(obj_id)
            raise OnosUnavailable("boom")
        self.log.append((what, obj_id))
        return "created"

    def upsert_network(self, n: OnosNetwork) -> str:
        return self._do("upsert", n.id)

    def upsert_subnet(self, s: OnosSubnet) -> str:
        return self._do("upsert", s.id)

    def upsert_port(self, p: OnosPort) -> str:
        return self._do("upsert", p.id)

    def delete_network(self, i: str) -> None:
        self._do("delete", i)

    def delete_subnet(self, i: str) -> None:
        self._do("delete", i)

    def delete_port(self, i: str) -> None:
        self._do("delete", i)


def test_later_items_of_a_failed_object_wait_in_the_batch() -> None:
    clock, ob = FakeClock(), _AllRowsStore()
    a, b = make_port(1), make_port(2)
    upsert(ob, a, clock())
    upsert(ob, b, clock())
    ob.add("port", a.id, "delete", None, clock())
    ob.add("port", "bad", "upsert", {"port": {"id": "bad"}}, clock())  # a producer bug
    fc = _FlakyClient({a.id})
    w = worker(ob, fc, clock)
    w.run_once()
    assert fc.log == []  # unavailable: the batch stopped at the first failure
    clock.sleep(10)
    w.drain(timeout=100)
    assert fc.log == [("upsert", a.id), ("upsert", b.id), ("delete", a.id)]
    st = w.status()
    # rejected every max_backoff until --onos-dead-letter-after (5): set aside, not pending
    assert st.pending == 0 and st.dead_letters == 1 and "payload" in st.last_error


def test_transient_failure_keeps_network_before_its_ports() -> None:
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    upsert(ob, NET, clock())
    upsert(ob, SUB, clock())
    upsert(ob, make_port(1), clock())
    fc = _FlakyClient({"net-1", "sub-1"})
    w = worker(ob, fc, clock)
    for _ in range(100):
        if w.status().pending == 0:
            break
        w.run_once()
        clock.sleep(0.01)
    assert fc.log == [("upsert", "net-1"), ("upsert", "sub-1"), ("upsert", "port-0001")]


def test_network_delete_still_in_use_is_retried_not_failed(emu: EmulatorServer,
                                                           client: OnosClient) -> None:
    emu.start()
    client.upsert_network(NET)
    client.upsert_subnet(SUB)
    client.upsert_port(make_port(1))  # a port ONOS still has (its delete comes later)
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    outcomes: list[str] = []
    w = worker(ob, client, clock, on_result=lambda o, i, e: outcomes.append(o))
    ob.add("network", "net-1", "delete", None, clock())
    assert w.run_once() == 0
    assert outcomes == ["in_use"] and w.status().failed == 0
    ob.add("port", "port-0001", "delete", None, clock())
    clock.sleep(5)
    w.drain(timeout=60)
    assert emu.snapshot()["networks"] == {} and w.status().pending == 0


# --------------------------------------------------------------------------- (e) lease

def test_only_the_lease_holder_drains(emu: EmulatorServer) -> None:
    emu.start()
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    with OnosClient(emu.url, "onos", "rocks") as c1, OnosClient(emu.url, "onos", "rocks") as c2:
        w1 = worker(ob, c1, clock, holder="replica-1", lease_ttl=10.0)
        w2 = worker(ob, c2, clock, holder="replica-2", lease_ttl=10.0)
        for i in range(10):
            upsert(ob, make_port(i), clock())
        assert w1.run_once() == 10
        for i in range(10, 20):
            upsert(ob, make_port(i), clock())
        assert w2.run_once() == 0
        assert not w2.status().leader and w1.status().leader
        assert c2.requests_made == 0
        assert w1.run_once() == 10
        # replica-1 dies; after its lease expires replica-2 takes over.
        upsert(ob, make_port(99), clock())
        clock.sleep(5)
        assert w2.run_once() == 0
        clock.sleep(6)
        assert w2.run_once() == 1
        assert w2.status().leader and c2.requests_made == 1
        assert w1.run_once() == 0 and not w1.status().leader
    assert len(emu.snapshot()["ports"]) == 21


# --------------------------------------------------------------------------- run_forever

def test_run_forever_wakes_at_once_and_stops(emu: EmulatorServer, client: OnosClient) -> None:
    emu.start()
    ob = MemoryOutbox()
    w = SyncWorker(ob, client, "w1", base_backoff=0.01, max_backoff=0.1)
    stop = threading.Event()
    t = threading.Thread(target=w.run_forever, args=(stop, 30.0), daemon=True)
    t.start()
    try:
        time.sleep(0.1)  # the worker is idle now, waiting up to 30 s
        for i in range(5):
            upsert(ob, make_port(i), time.time())
        t0 = time.monotonic()
        w.wake()
        for _ in range(200):
            if len(emu.snapshot()["ports"]) == 5:
                break
            time.sleep(0.01)
        assert len(emu.snapshot()["ports"]) == 5
        assert time.monotonic() - t0 < 1.0
        assert w.status().last_success_at is not None
    finally:
        stop.set()
        t.join(timeout=5)
    assert not t.is_alive()


# --------------------------------------------------------------------------- resync

def test_resync_replays_desired_state_after_onos_lost_it(emu: EmulatorServer,
                                                         client: OnosClient) -> None:
    emu.start()
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    w = worker(ob, client, clock)
    ports = [make_port(i) for i in range(20)]
    for obj in (NET, SUB, *ports):
        upsert(ob, obj, clock())
    w.drain(timeout=60)
    client.upsert_port(make_port(500))  # something ONOS has that we released long ago
    emu.reset()  # ONOS rebuilt from scratch ...
    client.upsert_port(make_port(500))  # ... and a stale port came back somehow
    client.upsert_port(replace(ports[3], host_id="stale"))  # and one is out of date

    sent = w.resync(lambda: DesiredState([NET], [SUB], ports, deleted_ports=["port-0500"]))
    assert sent == 1 + 1 + 20 + 1
    state = emu.snapshot()
    assert live_ports(state) == {p.id: port_body(p)["port"] for p in ports}
    assert state["networks"] == {"net-1": network_body(NET)["network"]}

    other = worker(ob, client, clock, holder="w2")
    assert other.resync(lambda: ([NET], [SUB], ports)) == 0  # not the lease holder


def test_resync_stops_on_unavailable(emu: EmulatorServer, client: OnosClient) -> None:
    w = worker(MemoryOutbox(), client, FakeClock())
    with pytest.raises(OnosUnavailable):
        w.resync(lambda: ([NET], [SUB], [make_port(1)]))
    assert w.status().last_error.startswith("unavailable")


# --------------------------------------------------------------------------- payloads

def test_payload_round_trip_and_the_ipam_service_format() -> None:
    for obj in (NET, SUB, make_port(3)):
        kind = next(iter(to_payload(obj)))
        assert from_payload(kind, to_payload(obj)) == obj
    from ipam.domain import Policy, Pool, Port, PortAddress, PortState, Subnet
    from ipam.onos.desired import network_payload, port_payload, subnet_payload
    pool = Pool("pool-1", "web", Policy.DYNAMIC, network_id="net-9", segmentation_id=9, mtu=1400)
    sub = Subnet("sub-9", "pool-1", "10.9.0.0/24", 4, "10.9.0.1")
    port = Port("port-9", "pool-1", "0a:00:00:00:00:09", PortState.ACTIVE, 1,
                (PortAddress("sub-9", "10.9.0.5", 5),), pod_uid="uid-9", pod_namespace="ns",
                pod_name="web-0", node="node-9")
    n = from_payload("network", network_payload(pool, [sub]))
    assert n == OnosNetwork("net-9", "web", 9, 1400, ("sub-9",))
    s = from_payload("subnet", subnet_payload(pool, sub, [(2, 254)]))
    assert (s.id, s.network_id, s.cidr, s.gateway_ip, s.ip_version) == \
        ("sub-9", "net-9", "10.9.0.0/24", "10.9.0.1", 4)
    assert s.allocation_pools == (("10.9.0.2", "10.9.0.254"),)
    p = from_payload("port", port_payload(pool, port))
    assert p == OnosPort("port-9", "ns_web-0", "net-9", "0a:00:00:00:00:09",
                         (("sub-9", "10.9.0.5"),), "uid-9", host_id="node-9")


def test_sql_store_outbox_end_to_end(tmp_path: Path, emu: EmulatorServer,
                                     client: OnosClient) -> None:
    """The IPAM service writes rows into SQLite; the store (an OutboxStore) feeds them to the
    worker."""
    from ipam.domain import AllocationRequest, PodIdentity
    from ipam.service import IpamService
    from ipam.store.sql import SqlStore
    emu.start()
    store = SqlStore(f"sqlite:///{tmp_path}/ipam.db")
    try:
        svc = IpamService(store, sync_enabled=True)
        pool = svc.create_pool("web", "dynamic")
        svc.create_subnet("web", "10.30.0.0/24")
        allocs = [svc.allocate(AllocationRequest(
            container_id=f"c{i}", ifname="eth0", pool="web", node="node-1",
            pod=PodIdentity("ns", f"web-{i}", f"uid-{i}"))) for i in range(12)]
        for i in range(4):
            svc.release(f"c{i}", "eth0")
        w = SyncWorker(store, client, "ctl-1", base_backoff=0.01,
                       max_backoff=0.1)
        w.drain(timeout=30)
        assert w.status().pending == 0
        state = emu.snapshot()
        assert set(state["networks"]) == {pool.network_id}
        assert set(state["ports"]) == {a.port.id for a in allocs[4:]}
        one = state["ports"][allocs[5].port.id]
        assert one["fixed_ips"][0]["ip_address"] == allocs[5].port.addresses[0].ip
        assert one["binding:host_id"] == "node-1" and one["device_id"] == "uid-5"
    finally:
        store.close()


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    w = worker(MemoryOutbox(), None, FakeClock(), base_backoff=0.1, max_backoff=5.0)
    for attempts, cap in ((0, 0.1), (1, 0.2), (3, 0.8), (5, 3.2), (6, 5.0), (40, 5.0)):
        draws = [w._backoff(attempts) for _ in range(400)]
        assert all(0.0 <= d <= cap for d in draws), (attempts, max(draws))
        # full jitter: spread over the whole range, not clustered at the cap
        assert min(draws) < 0.2 * cap and max(draws) > 0.8 * cap, attempts


def test_a_chunked_resync_sends_each_chunk_as_the_store_has_it_then(
        emu: EmulatorServer, client: OnosClient) -> None:
    """Ports go in chunks, each re-read just before it is sent (the drain runs between
    chunks): a port released or changed after the snapshot goes as it is now (or not at
    all), never as the stale snapshot had it."""
    emu.start()
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    w = worker(ob, client, clock)
    ports = [make_port(i) for i in range(5)]
    live = {p.id: p for p in ports}
    calls: list[list[str]] = []

    def fresh(ids: list[str]) -> list[Any]:
        calls.append(ids)
        if len(calls) == 2:   # between the chunks: port 3 released, port 4 moved
            live.pop(ports[3].id)
            live[ports[4].id] = replace(ports[4], host_id="node-moved")
        return [live[i] for i in ids if i in live]

    assert w.resync(lambda: DesiredState([NET], [SUB], ports), fresh, chunk=2) == 2 + 4
    assert [len(c) for c in calls] == [2, 2, 1]
    state = emu.snapshot()
    assert set(live_ports(state)) == {p.id for p in ports} - {ports[3].id}
    assert live_ports(state)[ports[4].id]["binding:host_id"] == "node-moved"
    w2 = worker(ob, client, clock, holder="w1")
    seen = []
    w2.resync(lambda: DesiredState([NET], [SUB], ports[:2]),
              lambda ids: seen.append(w2._lock.locked()) or [live[i] for i in ids], chunk=1)
    assert seen == [True, True]      # each chunk runs under the drain lock
