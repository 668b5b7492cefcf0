"""A row ONOS rejects never blocks its object for good (issue 12): a newer row supersedes it,
one rejected --onos-dead-letter-after times is set aside as a dead letter that an admin lists,
skips or retries (`ipctl sync dead-letters|skip|retry`), and the rejection is logged at ERROR
once per row, not once per retry. Against the ONOS emulator, which answers 400 to a subnet
without a CIDR or a port without a network, as ONOS does."""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipam.onos import OnosClient, OnosPort, OnosSubnet, SyncWorker, to_payload
from ipam.onos.memory_outbox import MemoryOutbox
from ipam.store.sql import SqlStore
from ipcontroller.cli import cli
from onos_emulator import EmulatorServer
from tests.lab.controller import running_controller, sqlite_url
from tests.lab.helpers import FakeClock, wait_until

BAD_SUBNET = OnosSubnet("sub-1", "pod-net-10.20.0.0/22", "net-1", "", "10.20.0.1", 4, ())
BAD_PORT = OnosPort("port-bad", "ns_pod-bad", "", "0a:00:00:00:00:09",
                    (("sub-1", "10.20.0.9"),), "uid-bad")
GOOD_PORT = OnosPort("port-good", "ns_pod-good", "net-1", "0a:00:00:00:00:0a",
                     (("sub-1", "10.20.0.10"),), "uid-good")


@pytest.fixture
def client(emu: EmulatorServer) -> Iterator[OnosClient]:
    with OnosClient(emu.url, "onos", "rocks", timeout=5.0) as c:
        yield c


def _worker(ob: MemoryOutbox, client: OnosClient, clock: FakeClock, **kw: Any) -> SyncWorker:
    return SyncWorker(ob, client, "w1", clock=clock, sleep=clock.sleep, base_backoff=0.05,
                      max_backoff=2.0, lease_ttl=3600.0, rng=random.Random(5), **kw)


def test_a_delete_supersedes_a_rejected_upsert_of_the_same_subnet(
        emu: EmulatorServer, client: OnosClient) -> None:
    """Subnets are not coalesced at write time (their order against ports matters), so the
    rejected upsert was still the oldest row of its subnet: retried every max_backoff for
    ever, and the subnet's delete behind it never sent."""
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    w = _worker(ob, client, clock)
    ob.add("subnet", BAD_SUBNET.id, "upsert", to_payload(BAD_SUBNET), clock())
    w.run_once()                                    # rejected: 400 "...cidr cannot be null"
    assert [r.failed for r in ob.outbox_rows()] == [True]
    ob.add("subnet", BAD_SUBNET.id, "delete", None, clock())   # the subnet is deleted
    w.drain(timeout=60)
    by_object = emu.calls()["by_object"]
    assert by_object.get(f"DELETE subnets/{BAD_SUBNET.id}") == 1
    assert by_object.get(f"POST subnets/{BAD_SUBNET.id}") == 1   # not retried: superseded
    assert ob.outbox_rows() == [] and ob.dead_letters() == []


def test_a_row_rejected_n_times_becomes_a_dead_letter_and_stops_blocking(
        emu: EmulatorServer, client: OnosClient, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    ob = MemoryOutbox(clock)
    w = _worker(ob, client, clock, dead_letter_after=3)
    ob.add("port", BAD_PORT.id, "upsert", to_payload(BAD_PORT), clock())
    ob.add("port", GOOD_PORT.id, "upsert", to_payload(GOOD_PORT), clock())
    with caplog.at_level(logging.DEBUG, logger="ipam.onos.sync"):
        w.drain(timeout=600)
    by_object = emu.calls()["by_object"]
    assert by_object[f"POST ports/{BAD_PORT.id}"] == 3           # then set aside
    assert set(emu.snapshot()["ports"]) == {GOOD_PORT.id}
    (dead,) = ob.dead_letters()
    assert (dead.kind, dead.object_id, dead.op, dead.attempts) == ("port", BAD_PORT.id,
                                                                  "upsert", 3)
    assert "network" in dead.last_error and w.status().dead_letters == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([m for m in errors if m.startswith("onos rejected")]) == 1   # once per row
    assert len([m for m in errors if m.startswith("onos sync dead-lettered")]) == 1
    assert ob.outbox_rows() == []
    ob.add("port", BAD_PORT.id, "delete", None, clock())     # the object is not blocked
    w.drain(timeout=60)
    assert emu.calls()["by_object"][f"DELETE ports/{BAD_PORT.id}"] == 1


def _stubs(ctl: Any) -> tuple[Any, Any]:
    ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}")
    return pb_grpc.IPControllerStub(ch), pb_grpc.IPAdminStub(ch)


def _ipctl(port: int, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["--controller", f"127.0.0.1:{port}", *args],
                           catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_ipctl_lists_skips_and_retries_dead_letters(
        tmp_path: Path, make_emulator: Callable[..., EmulatorServer]) -> None:
    onos = make_emulator()
    db = sqlite_url(tmp_path)
    with running_controller(db, "--onos-url", onos.url, "--onos-max-backoff", "0.2",
                            "--onos-dead-letter-after", "2") as ctl:
        _, admin = _stubs(ctl)
        producer = SqlStore(db, migrate=False)    # rows the service would never write
        try:
            for p in (BAD_PORT, OnosPort("port-bad2", "ns_p2", "", "0a:00:00:00:00:0b",
                                         (("sub-1", "10.20.0.11"),), "uid-b2")):
                with producer.transaction() as uow:
                    uow.add_outbox("port", p.id, "upsert", to_payload(p), time.time())
            assert wait_until(lambda: admin.SyncStatus(pb.SyncStatusRequest()).dead_letters
                              == 2, timeout=60)
            st = admin.SyncStatus(pb.SyncStatusRequest())
            assert st.pending == 0
            code, out, _ = _ipctl(ctl.port, "sync", "status")
            assert code == 0 and "dead letters" in out
            code, out, _ = _ipctl(ctl.port, "-o", "json", "sync", "dead-letters")
            assert code == 0
            ids = [int(d["id"]) for d in json.loads(out)]
            assert [d["object_id"] for d in json.loads(out)] == [BAD_PORT.id, "port-bad2"]
            code, out, _ = _ipctl(ctl.port, "sync", "dead-letters")
            assert code == 0 and out.split()[:3] == ["ID", "KIND", "OBJECT"]
            code, out, _ = _ipctl(ctl.port, "sync", "skip", str(ids[0]))
            assert code == 0 and "skipped" in out
            code, _, err = _ipctl(ctl.port, "sync", "skip", str(ids[0]))
            assert code != 0 and "no dead letter" in err
            code, _, err = _ipctl(ctl.port, "sync", "retry")
            assert code != 0 and "--all" in err
            posts = onos.calls()["by_object"]["POST ports/port-bad2"]
            code, out, _ = _ipctl(ctl.port, "sync", "retry", "--all")
            assert code == 0 and "1 dead letter(s) back" in out
            # Back in the outbox, rejected twice more, and set aside again.
            assert wait_until(lambda: onos.calls()["by_object"]["POST ports/port-bad2"]
                              == posts + 2, timeout=60)
            assert wait_until(lambda: [d.object_id for d in admin.ListDeadLetters(
                pb.ListDeadLettersRequest()).dead_letters] == ["port-bad2"], timeout=60)
            with pytest.raises(grpc.RpcError) as e:
                admin.RetryDeadLetters(pb.RetryDeadLettersRequest())
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            producer.close()
