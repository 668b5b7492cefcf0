"""Database timeouts and the caller's deadline: one stuck transaction holding the
configuration row must not block every worker, and work whose caller gave up is rolled back,
never committed after the fact."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import psycopg
import pytest

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipam import deadline
from ipam.domain import AllocationRequest, PodIdentity
from ipam.errors import Busy
from ipam.service import IpamService
from ipam.store.sql import PgTimeouts, SqlStore
from ipcontroller.metrics import REQUESTS
from tests.lab.controller import running_controller
from tests.lab.helpers import FakeClock, wait_for

# The sweeper also waits on the configuration row: off, so the one lock waiter is the request.
NO_SWEEPS = ("--sweep-interval", "3600")


def _req(cid: str) -> AllocationRequest:
    return AllocationRequest(container_id=cid, ifname="eth0", pool="p",
                             pod=PodIdentity("ns", cid, f"u-{cid}"))


@contextmanager
def _config_row_held(pg_url: str) -> Iterator[None]:
    """A stuck admin transaction: the configuration row locked, never committed (until the
    block ends)."""
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("SELECT generation FROM ipam_config WHERE id = 1 FOR UPDATE")
        yield
        conn.rollback()


def _lock_waiters(pg_url: str) -> int:
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                           " current_database() AND wait_event_type = 'Lock'").fetchone()
        return int(row[0]) if row else 0


def test_sessions_carry_the_timeouts(pg_url: str) -> None:
    store = SqlStore(pg_url)
    try:
        with store.read() as uow:
            got = {k: uow.raw.execute(f"SHOW {k}").fetchone()[0]
                   for k in ("lock_timeout", "statement_timeout",
                             "idle_in_transaction_session_timeout")}
    finally:
        store.close()
    assert got == {"lock_timeout": "5s", "statement_timeout": "30s",
                   "idle_in_transaction_session_timeout": "1min"}
    args = PgTimeouts().connect_args()
    assert args["connect_timeout"] == 5 and args["keepalives"] == 1


def test_a_stuck_transaction_makes_allocations_busy_not_blocked(pg_url: str) -> None:
    store = SqlStore(pg_url, timeouts=PgTimeouts(lock=0.3))
    svc = IpamService(store, clock=FakeClock())
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", "10.91.0.0/24")
    out: list[Any] = []
    try:
        with _config_row_held(pg_url):
            def run() -> None:
                try:
                    out.append(svc.allocate(_req("c1")))
                except Exception as exc:  # noqa: BLE001 - asserted below
                    out.append(exc)
            th = threading.Thread(target=run, daemon=True)
            th.start()
            th.join(30)        # bounded so a missing lock_timeout fails instead of hanging
            assert not th.is_alive(), "allocation still blocked by the stuck transaction"
        assert len(out) == 1 and isinstance(out[0], Busy), out
        assert svc.allocate(_req("c1")).port.id    # once it is gone, all is well
    finally:
        store.close()


def test_past_deadline_rolls_back_on_every_store(store: Any, clock: FakeClock) -> None:
    svc = IpamService(store, clock=clock)
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", "10.92.0.0/24")
    with deadline.caller_deadline(0.0), pytest.raises(Busy, match="deadline"):
        svc.allocate(_req("c1"))
    assert svc.list_ports() == []
    with deadline.caller_deadline(60.0):
        assert svc.allocate(_req("c1")).port.id
    assert len(svc.list_ports()) == 1


def test_an_allocation_whose_caller_gave_up_is_not_committed(pg_url: str) -> None:
    with running_controller(pg_url, *NO_SWEEPS) as ctl:
        ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}")
        ctl_stub, admin = pb_grpc.IPControllerStub(ch), pb_grpc.IPAdminStub(ch)
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.93.0.0/24"))
        refused = REQUESTS.labels("AllocatePort", "UNAVAILABLE")
        before = refused._value.get()
        with _config_row_held(pg_url):
            with pytest.raises(grpc.RpcError) as err:
                ctl_stub.AllocatePort(pb.AllocateRequest(
                    container_id="late", ifname="eth0", node="n1", pool="p",
                    pod=pb.PodRef(namespace="ns", name="late", uid="u-late")), timeout=1.0)
            assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            wait_for(lambda: _lock_waiters(pg_url) >= 1, 20, "the allocation to wait")
        # The lock is gone: the handler goes on, finds its caller gone, and rolls back.
        wait_for(lambda: refused._value.get() > before, 20, "the handler to give up")
        assert not admin.ListPorts(pb.ListPortsRequest()).ports
        ch.close()


def test_requests_beyond_the_concurrency_limit_are_refused_at_once(pg_url: str) -> None:
    with running_controller(pg_url, *NO_SWEEPS, "--max-concurrent-rpcs", "1",
                            "--workers", "2") as ctl:
        ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}")
        ctl_stub, admin = pb_grpc.IPControllerStub(ch), pb_grpc.IPAdminStub(ch)
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.94.0.0/24"))
        with _config_row_held(pg_url):
            slow = ctl_stub.AllocatePort.future(pb.AllocateRequest(
                container_id="slow", ifname="eth0", node="n1", pool="p",
                pod=pb.PodRef(namespace="ns", name="slow", uid="u-slow")), timeout=30)
            wait_for(lambda: _lock_waiters(pg_url) >= 1, 20, "the first request to wait")
            with pytest.raises(grpc.RpcError) as err:
                admin.ListPools(pb.ListPoolsRequest(), timeout=10)
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert slow.result(timeout=30).port.id     # the first one went through
        assert admin.ListPools(pb.ListPoolsRequest(), timeout=10).pools
        ch.close()


def test_health_checks_answer_while_every_worker_waits(pg_url: str) -> None:
    """On --health-listen and on the main listener alike: health runs on the servers' event
    loop, not on a worker (it used to queue behind the stuck worker: DEADLINE_EXCEEDED)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with running_controller(pg_url, *NO_SWEEPS, "--workers", "2",
                            "--health-listen", "127.0.0.1:0") as ctl:
        ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}")
        hch = grpc.insecure_channel(f"127.0.0.1:{ctl.health_port}")
        ctl_stub, admin = pb_grpc.IPControllerStub(ch), pb_grpc.IPAdminStub(ch)
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.96.0.0/24"))
        ask = health_pb2.HealthCheckRequest(service="")
        with _config_row_held(pg_url):
            stuck = [ctl_stub.AllocatePort.future(pb.AllocateRequest(
                container_id=f"s{i}", ifname="eth0", node="n1", pool="p",
                pod=pb.PodRef(namespace="ns", name=f"s{i}", uid=f"u-s{i}")), timeout=60)
                for i in range(3)]                          # both workers, and one queued
            wait_for(lambda: _lock_waiters(pg_url) >= 2, 20, "both workers to wait")
            for where in (ch, hch):
                got = health_pb2_grpc.HealthStub(where).Check(ask, timeout=10)
                assert got.status == health_pb2.HealthCheckResponse.SERVING
        assert all(f.result(timeout=60).port.id for f in stuck)
        ch.close()
        hch.close()
