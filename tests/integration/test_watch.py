"""WatchTopology end to end against real controllers (issue 14).

- Two controller replica processes on one PostgreSQL database, several watchers, churn on
  both; one replica is SIGKILLed mid-stream. Its watchers resume on the other from their
  revision: no second snapshot, no revision seen twice, and every view equals what the
  database says that node should see.
- A store with more than 60,000 ports (over the 4 MiB that one GetTopology answer could
  carry): the watcher's snapshot arrives in bounded messages, the view equals the database,
  and stays equal through changes.
"""
from __future__ import annotations

import random
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipam.service import IpamService
from ipam.store.sql import SqlStore
from ipcontroller.watch import WatchSettings
from tests.lab.controller import replica_process
from tests.lab.watch import Follower, WatchView, db_view

MESSAGE_LIMIT = WatchSettings().max_message_bytes


def _setup(url: str) -> None:
    store = SqlStore(url)
    svc = IpamService(store)
    svc.create_pool("a", "dynamic", quarantine_seconds=0)
    svc.create_subnet("a", "10.81.0.0/16")
    svc.create_pool("b", "dynamic", quarantine_seconds=0)
    svc.create_subnet("b", "10.82.0.0/16")
    store.close()


def _req(cid: str, pool: str, node: str) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_id=cid, ifname="eth0", node=node, pod_pool=pool,
                              pod=pb.PodRef(namespace="w", name=cid, uid=f"uid-{cid}"))


class Churn:
    """Allocations and releases in both pools on other nodes, on whichever replica is up."""

    def __init__(self, targets: list[str], seed: int) -> None:
        self.targets = list(targets)
        self.rng = random.Random(seed)
        self.live: list[str] = []
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Churn:
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            target = self.rng.choice(self.targets)
            try:
                with grpc.insecure_channel(target) as chan:
                    stub = pb_grpc.IPControllerStub(chan)
                    for _ in range(20):
                        if self.live and self.rng.random() < 0.4:
                            cid = self.live.pop(self.rng.randrange(len(self.live)))
                            stub.ReleasePort(pb.ReleaseRequest(container_id=cid,
                                                               ifname="eth0"), timeout=30)
                        else:
                            n += 1
                            cid = f"churn-{n}"
                            stub.AllocatePort(_req(cid, self.rng.choice("ab"),
                                                   self.rng.choice(["x1", "x2"])), timeout=30)
                            self.live.append(cid)
                        self.done += 1
            except grpc.RpcError:
                if target in self.targets and len(self.targets) > 1:
                    self.targets.remove(target)   # the killed replica: keep to the others

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _settle_and_compare(url: str, views: list[WatchView]) -> None:
    for v in views:
        ports, subnets, head = db_view(url, v.node)
        v.wait_for(lambda w, h=head: w.complete and w.revision >= h, timeout=120)
        assert v.errors == []
        assert v.ports == ports, v.node
        assert v.subnets == subnets


def _wait_until(pred: object, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


@pytest.mark.postgres
def test_watchers_resume_on_another_replica_after_a_sigkill(pg_url: str,
                                                            tmp_path: Path) -> None:
    _setup(pg_url)
    with ExitStack() as stack:
        procs = [stack.enter_context(replica_process(pg_url, tmp_path / f"r{i}.sock",
                                                     tmp_path / f"r{i}.log",
                                                     "--sweep-interval", "0.2"))
                 for i in range(2)]
        targets = [f"unix:{tmp_path}/r{i}.sock" for i in range(2)]
        with grpc.insecure_channel(targets[0]) as chan:
            stub = pb_grpc.IPControllerStub(chan)
            for i in range(4):   # w0..w2 have a port in pool a, w3 in pool b
                stub.AllocatePort(_req(f"own-{i}", "a" if i < 3 else "b", f"w{i}"))
        views = [WatchView(f"w{i}") for i in range(4)]
        # w0, w1 and w3 start on the replica that will be killed
        followers = [Follower(targets if i != 2 else targets[::-1], v)
                     for i, v in enumerate(views)]
        stack.callback(lambda: [f.stop() for f in followers])
        for v in views:
            v.wait_for(lambda w: w.complete)
        churn = Churn(targets, seed=14).start()
        stack.callback(churn.stop)
        for v in views:
            v.wait_for(lambda w: len(w.delta_revisions) >= 20)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(20)
        done_at_kill = churn.done
        _wait_until(lambda: churn.done >= done_at_kill + 150, timeout=120)
        churn.stop()
        _settle_and_compare(pg_url, views)
        for f, v in zip(followers, views, strict=True):
            assert v.resets == 1, (v.node, f.connects)   # the first snapshot, no other
            if f.targets[0] == targets[0]:
                assert [t for t, _ in f.connects[:2]] == targets, f.connects
                assert f.connects[1][1] > 0              # resumed from its revision
        # relevance: w3 (pool b) never saw a pool-a port of another node, and the others
        # saw pool-b ports only... never
        assert all(ip.startswith("10.82.") for _, ips, _ in views[3].ports.values()
                   for ip in ips)
        assert all(ip.startswith("10.81.") for _, ips, _ in views[0].ports.values()
                   for ip in ips)


def test_a_view_of_over_60000_ports_arrives_in_bounded_messages_and_stays_equal(
        tmp_path: Path) -> None:
    from tests.bench.bulk_fill import fill
    from tests.lab.controller import running_controller
    url = f"sqlite:///{tmp_path}/ipam.db"
    _setup(url)
    store = SqlStore(url)
    try:
        assert fill(store, "10.81.0.0/16", 61_000) == 61_000
    finally:
        store.close()
    with running_controller(url) as ctl, ExitStack() as stack:
        target = f"127.0.0.1:{ctl.port}"
        chan = stack.enter_context(grpc.insecure_channel(target))
        stub = pb_grpc.IPControllerStub(chan)
        stub.AllocatePort(_req("own", "a", "w"))
        view = WatchView("w")
        follower = Follower([target], view)
        stack.callback(follower.stop)
        view.wait_for(lambda w: w.complete, timeout=180)
        assert len(view.ports) > 61_000
        assert view.messages >= 61_000 // WatchSettings().max_message_changes
        assert view.largest_message <= MESSAGE_LIMIT
        _settle_and_compare(url, [view])
        churn = Churn([target], seed=60).start()
        _wait_until(lambda: churn.done >= 200, timeout=120)
        churn.stop()
        _settle_and_compare(url, [view])
        assert view.resets == 1 and view.largest_message <= MESSAGE_LIMIT
