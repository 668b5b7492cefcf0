"""The controller with ONOS sync on, against the ONOS emulator (real HTTP on loopback):
ports reach ONOS through the outbox without ever blocking allocation."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from onos_emulator import EmulatorServer
from tests.lab.controller import running_controller, sqlite_url
from tests.lab.helpers import wait_until


def stubs_with_pool(ctl: Any, cidr: str) -> tuple[Any, Any]:
    """Pod-path and admin stubs of a running controller, with a dynamic pool "p" on cidr."""
    ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}")
    c, admin = pb_grpc.IPControllerStub(ch), pb_grpc.IPAdminStub(ch)
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
    admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr=cidr))
    return c, admin


def alloc(cid: str) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_id=cid, ifname="eth0", node="node-a", pool="p",
                              pod=pb.PodRef(namespace="ns", name=f"pod-{cid}", uid=f"u-{cid}"))


def test_ports_reach_onos_and_leave_on_release(tmp_path: Path) -> None:
    with EmulatorServer() as onos, running_controller(
            sqlite_url(tmp_path), "--onos-url", onos.url) as ctl:
        c, admin = stubs_with_pool(ctl, "10.40.0.0/24")
        ports = [c.AllocatePort(alloc(f"c{i}")).port for i in range(5)]
        assert wait_until(lambda: len(onos.snapshot()["ports"]) == 5)
        state = onos.snapshot()
        assert len(state["networks"]) == 1 and len(state["subnets"]) == 1
        body = state["ports"][ports[0].id]
        assert body["mac_address"] == ports[0].mac
        assert body["fixed_ips"][0]["ip_address"] == ports[0].ips[0].address.split("/")[0]
        assert body["device_id"] == "u-c0" and body["binding:host_id"] == "node-a"
        c.ReleasePort(pb.ReleaseRequest(container_id="c0", ifname="eth0"))
        assert wait_until(lambda: ports[0].id not in onos.snapshot()["ports"])
        st = admin.SyncStatus(pb.SyncStatusRequest())
        assert st.enabled and wait_until(
            lambda: admin.SyncStatus(pb.SyncStatusRequest()).pending == 0)
        # ONOS lost everything (restart): a forced resync replays the store
        onos.reset()
        assert admin.SyncNow(pb.SyncNowRequest()).forwarded
        assert wait_until(lambda: set(onos.snapshot()["ports"]) == {p.id for p in ports[1:]})


def test_allocation_does_not_wait_for_a_dead_onos(
        tmp_path: Path, make_emulator: Callable[..., EmulatorServer]) -> None:
    onos = make_emulator()
    url = onos.url
    onos.stop()  # ONOS is down from the start
    with running_controller(sqlite_url(tmp_path), "--onos-url", url) as ctl:
        c, admin = stubs_with_pool(ctl, "10.41.0.0/24")
        t = time.perf_counter()
        for i in range(20):
            c.AllocatePort(alloc(f"c{i}"))
        assert time.perf_counter() - t < 5  # generous: the point is no ONOS timeouts inline
        st = admin.SyncStatus(pb.SyncStatusRequest())
        assert st.pending >= 20 and st.last_error
        # ONOS comes back on the same port: everything arrives
        back = make_emulator(port=int(url.rsplit(":", 1)[1]))
        assert wait_until(lambda: len(back.snapshot()["ports"]) == 20, timeout=30)


def test_sync_now_on_any_replica_runs_on_the_lease_holder(tmp_path: Path) -> None:
    """`ipctl sync now` may reach a replica that does not drain: it asks the holder (through
    the database) instead of replaying to ONOS itself or silently doing nothing."""
    db = sqlite_url(tmp_path)
    with EmulatorServer() as onos, \
            running_controller(db, "--onos-url", onos.url, "--holder", "r1",
                               "--onos-resync-interval", "0") as first:
        c, admin1 = stubs_with_pool(first, "10.42.0.0/24")
        ports = [c.AllocatePort(alloc(f"c{i}")).port for i in range(3)]
        assert wait_until(lambda: len(onos.snapshot()["ports"]) == 3)
        with running_controller(db, "--onos-url", onos.url, "--holder", "r2",
                                "--onos-resync-interval", "0") as second:
            admin2 = pb_grpc.IPAdminStub(grpc.insecure_channel(f"127.0.0.1:{second.port}"))
            assert admin2.SyncStatus(pb.SyncStatusRequest()).holder == "r1"
            onos.reset()                                      # ONOS lost everything
            r = admin2.SyncNow(pb.SyncNowRequest())
            assert r.forwarded and r.holder == "r1" and r.queued == 0
            assert wait_until(lambda: set(onos.snapshot()["ports"]) == {p.id for p in ports})
            assert wait_until(lambda: admin2.SyncStatus(pb.SyncStatusRequest()).last_resync)


def test_a_requested_resync_survives_a_dead_onos(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        make_emulator: Callable[..., EmulatorServer]) -> None:
    """The request is counted in the database, not lost with one failed attempt: the holder
    tries again (RESYNC_RETRY_SECONDS later) until ONOS answers."""
    from ipcontroller import sync_runner
    monkeypatch.setattr(sync_runner, "RESYNC_RETRY_SECONDS", 0.5)
    onos = make_emulator()
    url = onos.url
    with running_controller(sqlite_url(tmp_path), "--onos-url", url,
                            "--onos-timeout", "0.5", "--onos-resync-interval", "0") as ctl:
        c, admin = stubs_with_pool(ctl, "10.43.0.0/24")
        port = c.AllocatePort(alloc("c1")).port
        assert wait_until(lambda: port.id in onos.snapshot()["ports"])
        onos.stop()
        assert admin.SyncNow(pb.SyncNowRequest()).forwarded
        assert wait_until(lambda: "unavailable" in
                          admin.SyncStatus(pb.SyncStatusRequest()).last_error)
        back = make_emulator(port=int(url.rsplit(":", 1)[1]))   # ONOS back, and empty
        assert wait_until(lambda: port.id in back.snapshot()["ports"], timeout=10)


def test_onos_sync_needs_a_real_database() -> None:
    from ipcontroller.daemon import IpControllerDaemon, parse_args
    with pytest.raises(SystemExit, match="needs a database"):
        IpControllerDaemon(parse_args(["--listen", "127.0.0.1:0", "--db", "memory://",
                               "--onos-url", "http://127.0.0.1:1"]))
