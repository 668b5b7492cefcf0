"""Several controller replicas on one database, allocating concurrently through gRPC.

PostgreSQL: three in-process controllers, each with its own engine, store and cached
configuration. SQLite: two controller *processes* on one file (WAL, BEGIN IMMEDIATE). Client
threads allocate on their home replica, re-send some ADDs to another replica (a retried ADD
must get the same port wherever it lands), release some ports anywhere (twice, sometimes).
Then the tables are read directly with SQL: every OK answer still live has exactly its row and
addresses, nothing else has a row, no address is used twice or also listed as free, and the
free ranges plus the used addresses plus the gateway add up to the subnet.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipam import addr
from ipam.service import IpamService
from ipam.store.sql import SqlStore

ROOT = Path(__file__).resolve().parents[2]
CIDR = "10.60.0.0/22"
TINY = "10.61.0.0/27"


@dataclass
class Ledger:
    """What the clients were told: live ports by container id, released ids, failures."""

    live: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    readds: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _req(cid: str, pool: str = "p", name: str = "", uid: str = "") -> pb.AllocateRequest:
    return pb.AllocateRequest(container_id=cid, ifname="eth0", node="n1", pool=pool,
                              pod=pb.PodRef(namespace="ns", name=name or f"pod-{cid}",
                                            uid=uid or f"uid-{cid}"))


def _ips(resp: Any) -> tuple[str, ...]:
    return tuple(sorted(ip.address.split("/")[0] for ip in resp.port.ips))


def _run_clients(client: Callable[[int, int], None], replicas: int, per_replica: int) -> None:
    """`client(replica, thread)` on `per_replica` threads for each replica, all at once."""
    threads = [threading.Thread(target=client, args=(h, t))
               for h in range(replicas) for t in range(per_replica)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def hammer(stubs: list[Any], threads_per_replica: int, allocs: int, seed: int) -> Ledger:
    ledger = Ledger()
    start = threading.Barrier(len(stubs) * threads_per_replica)

    def client(home: int, t: int) -> None:
        rnd = random.Random(seed * 1000 + home * 100 + t)
        mine: list[str] = []
        start.wait()
        for i in range(allocs):
            cid = f"r{home}-t{t}-{i}"
            try:
                got = stubs[home].AllocatePort(_req(cid))
                ips = _ips(got)
                with ledger.lock:
                    ledger.live[cid] = (got.port.id, ips)
                mine.append(cid)
                if rnd.random() < 0.2:     # a retried ADD, landing on another replica
                    other = stubs[(home + 1 + rnd.randrange(len(stubs) - 1)) % len(stubs)]
                    again = other.AllocatePort(_req(cid))
                    assert again.existing and again.port.id == got.port.id, cid
                    assert _ips(again) == ips, cid
                    with ledger.lock:
                        ledger.readds += 1
                if mine and rnd.random() < 0.25:   # a DEL, on any replica, sometimes twice
                    victim = mine.pop(rnd.randrange(len(mine)))
                    rel = rnd.choice(stubs).ReleasePort(
                        pb.ReleaseRequest(container_id=victim, ifname="eth0"))
                    assert rel.found and rel.outcome == "released", victim
                    with ledger.lock:
                        del ledger.live[victim]
                        ledger.released.add(victim)
                    if rnd.random() < 0.3:
                        again_rel = rnd.choice(stubs).ReleasePort(
                            pb.ReleaseRequest(container_id=victim, ifname="eth0"))
                        assert not again_rel.found
            except grpc.RpcError as exc:
                with ledger.lock:
                    ledger.errors.append(f"{cid}: {exc.code().name} {exc.details()}")

    _run_clients(client, len(stubs), threads_per_replica)
    return ledger


def check_tables(url: str, ledger: Ledger, cidr: str) -> None:
    """The database agrees with what the clients were told, and with itself."""
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            rows = c.execute(text(
                "SELECT p.id, p.container_id, a.ip FROM ports p"
                " LEFT JOIN addresses a ON a.port_id = p.id"
                " JOIN pools pl ON pl.id = p.pool_id WHERE pl.name = 'p'")).all()
            in_db: dict[str, tuple[str, list[str]]] = {}
            for port_id, cid, ip in rows:
                in_db.setdefault(cid, (port_id, []))[1].append(ip)
            assert {k: (v[0], tuple(sorted(v[1]))) for k, v in in_db.items()} == ledger.live
            assert not (set(in_db) & ledger.released)
            dup = c.execute(text("SELECT ip FROM addresses GROUP BY ip HAVING count(*) > 1"))
            assert dup.all() == []
            subnet_id, total = c.execute(text("SELECT id, total FROM subnets WHERE cidr = :c"),
                                         {"c": cidr}).one()
            used = c.execute(text("SELECT count(*) FROM addresses WHERE subnet_id = :s"),
                             {"s": subnet_id}).scalar_one()
            free = c.execute(text("SELECT coalesce(sum(last_off - first_off + 1), 0) FROM"
                                  " free_ranges WHERE subnet_id = :s"), {"s": subnet_id}
                             ).scalar_one()
            assert used == len(ledger.live)
            assert int(free) + used + 1 == total   # + the gateway
            inside = c.execute(text(
                'SELECT count(*) FROM addresses a JOIN free_ranges f ON f.subnet_id ='
                ' a.subnet_id AND a."offset" BETWEEN f.first_off AND f.last_off')).scalar_one()
            assert inside == 0, "an allocated address is also in a free range"
            overlap = c.execute(text(
                "SELECT count(*) FROM free_ranges f JOIN free_ranges g ON f.subnet_id ="
                " g.subnet_id AND f.id < g.id AND f.first_off <= g.last_off"
                " AND g.first_off <= f.last_off")).scalar_one()
            assert overlap == 0, "free ranges overlap"
    finally:
        engine.dispose()


def exhaust_tiny(stubs: list[Any], threads_per_replica: int) -> None:
    """Many more requests than addresses, all at once: exactly the capacity succeeds."""
    capacity = addr.total_addresses(addr.parse_network(TINY)) - 1
    ok: list[str] = []
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()
    start = threading.Barrier(len(stubs) * threads_per_replica)

    def client(home: int, t: int) -> None:
        start.wait()
        for i in range(10):
            try:
                got = stubs[home].AllocatePort(_req(f"tiny-{home}-{t}-{i}", pool="tiny"))
                with lock:
                    ok.extend(_ips(got))
            except grpc.RpcError as exc:
                with lock:
                    codes.append(exc.code())

    _run_clients(client, len(stubs), threads_per_replica)
    assert len(ok) == len(set(ok)) == capacity
    assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}


def one_owner_many_pods(stubs: list[Any]) -> None:
    """Six pods claim one sticky identity at once: one wins, the others are refused; after
    the winner's DEL the next pod gets the same address."""
    results: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(2 * len(stubs))

    def client(k: int) -> None:
        start.wait()
        try:
            got = stubs[k % len(stubs)].AllocatePort(
                _req(f"db0-{k}", pool="db", name="db-0", uid=f"uid-db0-{k}"))
            with lock:
                results.append((k, _ips(got)))
        except grpc.RpcError as exc:
            with lock:
                results.append((k, exc.code()))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(2 * len(stubs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wins = [(k, r) for k, r in results if isinstance(r, tuple)]
    assert len(wins) == 1, results
    assert {r for _, r in results if not isinstance(r, tuple)} == \
        {grpc.StatusCode.FAILED_PRECONDITION}
    k, ips = wins[0]
    stubs[0].ReleasePort(pb.ReleaseRequest(container_id=f"db0-{k}", ifname="eth0"))
    nxt = (k + 1) % (2 * len(stubs))
    again = stubs[-1].AllocatePort(_req(f"db0-{nxt}", pool="db", name="db-0",
                                        uid=f"uid-db0-{nxt}"))
    assert _ips(again) == ips


def _setup(url: str) -> None:
    store = SqlStore(url)
    svc = IpamService(store)
    svc.create_pool("p", "dynamic", quarantine_seconds=0)
    svc.create_subnet("p", CIDR)
    svc.create_pool("tiny", "dynamic", quarantine_seconds=0)
    svc.create_subnet("tiny", TINY)
    svc.create_pool("db", "sticky")
    svc.create_subnet("db", "10.62.0.0/24")
    store.close()


@pytest.mark.postgres
def test_three_replicas_on_postgres(pg_url: str) -> None:
    from tests.lab.controller import running_controller
    _setup(pg_url)
    with ExitStack() as stack:
        ctls = [stack.enter_context(running_controller(pg_url)) for _ in range(3)]
        chans = [stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{c.port}"))
                 for c in ctls]
        stubs = [pb_grpc.IPControllerStub(ch) for ch in chans]
        t0 = time.perf_counter()
        ledger = hammer(stubs, threads_per_replica=8, allocs=40, seed=1)
        took = time.perf_counter() - t0
        assert ledger.errors == []
        print(f"\n3 replicas x 8 threads x 40: {len(ledger.live) + len(ledger.released)} "
              f"allocations, {ledger.readds} re-ADDs, {len(ledger.released)} releases "
              f"in {took:.1f}s")
        check_tables(pg_url, ledger, CIDR)
        exhaust_tiny(stubs, threads_per_replica=4)
        one_owner_many_pods(stubs)


@contextmanager
def _daemon(db: str, sock: Path, log: Path) -> Iterator[str]:
    target = f"unix:{sock}"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ipcontroller.daemon", "--listen",
                                 target, "--db", db, "--log-level", "warning"],
                                cwd=ROOT, stdout=out, stderr=out,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "controller did not start"
            time.sleep(0.05)
        yield target
    finally:
        proc.terminate()
        proc.wait(10)


def test_two_replica_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ipam.db"
    _setup(db)
    with ExitStack() as stack:
        targets = [stack.enter_context(_daemon(db, tmp_path / f"r{i}.sock",
                                               tmp_path / f"r{i}.log")) for i in range(2)]
        chans = [stack.enter_context(grpc.insecure_channel(t)) for t in targets]
        for ch in chans:
            grpc.channel_ready_future(ch).result(timeout=20)
        stubs = [pb_grpc.IPControllerStub(ch) for ch in chans]
        ledger = hammer(stubs, threads_per_replica=8, allocs=40, seed=2)
        assert ledger.errors == []
        check_tables(db, ledger, CIDR)
        exhaust_tiny(stubs, threads_per_replica=4)
        one_owner_many_pods(stubs)
