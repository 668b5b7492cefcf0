"""A full resync must not stall the outbox (issue 12): with 2,000 released ports to delete
again and ONOS at 5 ms a call, a new pod's port used to reach ONOS only once every delete
had been replayed (they went out in one hold of the drain lock). The deletes are chunked as
the ports are, with the drain between chunks. The controller, its SQLite file and the ONOS
emulator are real; the released ports are written into the store as a week of churn would
have left them."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipam.service import IpamService
from ipam.store.sql import SqlStore
from onos_emulator import EmulatorServer
from tests.lab.controller import running_controller, sqlite_url
from tests.lab.helpers import wait_until

RELEASED = 2_000


def _replayed_deletes(onos: EmulatorServer) -> int:
    return sum(1 for k in onos.calls()["by_object"] if k.startswith("DELETE ports/gone-"))


def test_a_new_port_reaches_onos_while_a_resync_replays_thousands_of_deletes(
        tmp_path: Path, make_emulator: Callable[..., EmulatorServer]) -> None:
    db = sqlite_url(tmp_path)
    store = SqlStore(db)
    try:
        svc = IpamService(store, sync_enabled=True)
        svc.create_pool("p", "dynamic", quarantine_seconds=0)
        svc.create_subnet("p", "10.96.0.0/24")
        with store.transaction() as uow:
            for i in range(RELEASED):
                uow.add_released("port", f"gone-{i:05d}", time.time())
    finally:
        store.close()
    onos = make_emulator()
    onos.set_faults("slow", delay=0.005)
    # The start-up resync replays every kept delete.
    with running_controller(db, "--onos-url", onos.url) as ctl:
        assert wait_until(lambda: _replayed_deletes(onos) > 0, timeout=60)
        c = pb_grpc.IPControllerStub(grpc.insecure_channel(f"127.0.0.1:{ctl.port}"))
        port = c.AllocatePort(pb.AllocateRequest(
            container_id="c-new", ifname="eth0", node="node-a", pool="p",
            pod=pb.PodRef(namespace="ns", name="new", uid="u-new"))).port
        seen: list[int] = []

        def arrived() -> bool:
            before = _replayed_deletes(onos)   # read first: the port cannot be later
            if port.id in onos.snapshot()["ports"]:
                seen.append(before)
                return True
            return False
        assert wait_until(arrived, timeout=120)
        # It went out between two chunks of the replay, not after the whole of it.
        assert seen[0] < RELEASED, seen
        assert wait_until(lambda: _replayed_deletes(onos) == RELEASED, timeout=120)
