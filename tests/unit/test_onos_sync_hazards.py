"""Worker behaviours found while finishing issue 4, each pinned on its own: a timed-out call
that ONOS applies late, backoffs inherited by a new lease holder, and a resync that outlives
its lease. (The end-to-end versions are in tests/integration/test_onos_sync_lossless.py.)"""
from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

import pytest

from ipam.onos import (
    OnosClient,
    OnosNetwork,
    OnosPort,
    OnosSubnet,
    OnosUnavailable,
    SyncWorker,
    to_payload,
)
from ipam.onos.memory_outbox import MemoryOutbox
from onos_emulator import EmulatorServer
from tests.lab.helpers import FakeClock, free_port

PORT = OnosPort("port-1", "ns_pod-1", "net-1", "0a:00:00:00:00:01", (("sub-1", "10.0.0.2"),),
                "uid-1", host_id="node-a")


@pytest.mark.parametrize("settle", [0.0, 0.5])
def test_a_timed_out_post_that_lands_late_cannot_overtake_the_delete(
        emu: EmulatorServer, settle: float) -> None:
    """ONOS applies a POST 0.3 s after the client gave up on it (0.1 s timeout). Without a
    settle time the retry and the port's DELETE go out at once and the late POST re-creates
    the port for good (ONOS has no GET: nobody can find it again). With it, the DELETE waits
    until the lost POST has landed."""
    ob = MemoryOutbox()
    ob.add("port", PORT.id, "upsert", to_payload(PORT), time.time())
    ob.add("port", PORT.id, "delete", None, time.time())
    with OnosClient(emu.url, "onos", "rocks", timeout=0.1) as client:
        w = SyncWorker(ob, client, "w1", base_backoff=0.01, max_backoff=0.02,
                       rng=random.Random(1), settle=settle)
        emu.set_faults("slow", delay=0.3)
        assert w.run_once() == 0  # the POST times out; ONOS still holds it for 0.3 s
        emu.set_faults("none")
        deadline = time.monotonic() + 5
        while ob.outbox_rows() and time.monotonic() < deadline:
            w.run_once()
            time.sleep(0.01)
        assert not ob.outbox_rows()
    time.sleep(0.4)  # the late POST has certainly landed by now
    ghost = PORT.id in emu.snapshot()["ports"]
    assert ghost is (settle == 0.0)


def test_a_new_lease_holder_ignores_backoffs_its_predecessor_set(emu: EmulatorServer) -> None:
    """A 401 puts the row 60 s out. The same replica keeps that pace; a restarted one (fixed
    password) or one that took over the lease probes at once."""
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    ob.add("port", PORT.id, "upsert", to_payload(PORT), clock())
    opts: dict[str, Any] = {"clock": clock, "sleep": clock.sleep, "auth_backoff": 60.0,
                            "lease_ttl": 10.0}
    with OnosClient(emu.url, "onos", "wrong") as bad, OnosClient(emu.url, "onos",
                                                                  "rocks") as good:
        first = SyncWorker(ob, bad, "ctl:100", **opts)
        assert first.run_once() == 0
        assert ob.outbox_rows()[0].next_attempt_at == clock() + 60
        clock.sleep(11)  # the dead process's lease runs out
        second = SyncWorker(ob, good, "ctl:200", **opts)
        assert second.run_once() == 1  # 49 s before the row's own retry time
        assert PORT.id in emu.snapshot()["ports"]


class _SlowApi:
    """An ONOS whose every call takes 6 s of the fake clock; a rival replica grabs the lease
    as soon as it can."""

    def __init__(self, clock: FakeClock, rival: SyncWorker) -> None:
        self.clock = clock
        self.rival = rival
        self.calls = 0

    def _call(self) -> None:
        self.calls += 1
        self.clock.sleep(6)
        self.rival._renew(self.clock(), force=True)

    def upsert_network(self, n: OnosNetwork) -> str:
        self._call()
        return "created"

    def upsert_subnet(self, s: OnosSubnet) -> str:
        self._call()
        return "created"

    def upsert_port(self, p: OnosPort) -> str:
        self._call()
        return "created"

    def delete_network(self, network_id: str) -> None:
        self._call()

    def delete_subnet(self, subnet_id: str) -> None:
        self._call()

    def delete_port(self, port_id: str) -> None:
        self._call()


def test_a_resync_stops_when_its_lease_runs_out() -> None:
    """A replay longer than the lease must renew it, and stop once another replica holds it:
    that replica drains (deletes included) while this one would replay an old snapshot."""
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    rival = SyncWorker(ob, _SlowApi(clock, None), "b", clock=clock,  # type: ignore[arg-type]
                       lease_ttl=10.0)
    api = _SlowApi(clock, rival)
    w = SyncWorker(ob, api, "a", clock=clock, lease_ttl=10.0)
    ports = [replace(PORT, id=f"port-{i}") for i in range(10)]
    sent = w.resync(lambda: ([], [], ports))
    assert sent == 10 and api.calls == 10  # 60 s of calls, the lease renewed between them
    assert not rival.status().leader

    def slow_once(p: OnosPort) -> str:  # one call outlasts the whole lease
        api.calls += 1
        clock.sleep(11)
        rival._renew(clock(), force=True)
        return "created"

    api.upsert_port = slow_once  # type: ignore[method-assign]
    api.calls = 0
    assert w.resync(lambda: ([], [], ports)) == 1
    assert api.calls == 1 and rival.status().leader and not w.status().leader
    assert "lost the lease" in w.status().last_error


def test_ambiguous_only_when_the_request_may_have_left(emu: EmulatorServer) -> None:
    with OnosClient(f"http://127.0.0.1:{free_port()}", "onos", "rocks", timeout=0.5) as c:
        with pytest.raises(OnosUnavailable) as refused:
            c.delete_port("p")
    assert not refused.value.ambiguous
    emu.set_faults("slow", delay=0.3)
    with OnosClient(emu.url, "onos", "rocks", timeout=0.1) as c:
        with pytest.raises(OnosUnavailable) as timed_out:
            c.delete_port("p")
    assert timed_out.value.ambiguous
    emu.set_faults("error500")
    with OnosClient(emu.url, "onos", "rocks") as c:
        with pytest.raises(OnosUnavailable) as answered:
            c.delete_port("p")
    assert not answered.value.ambiguous
