"""Races between two transactions on one address or one free range, made deterministic.

The first transaction is held open by the test; the second runs the service call on another
thread until PostgreSQL shows it waiting on the first one's row lock (state, not time); then
the first commits. The database's tables are then checked directly: no overlapping free
ranges, no address both free and used.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from ipam.domain import AllocationRequest, PodIdentity
from ipam.errors import AlreadyExists
from ipam.service import IpamService
from ipam.store.sql import SqlStore
from tests.lab.helpers import FakeClock, wait_for

CIDR = "10.70.0.0/28"   # offsets 1..14 usable, gateway .1


@pytest.fixture
def pg(pg_url: str) -> Iterator[tuple[SqlStore, IpamService, Any]]:
    store = SqlStore(pg_url)
    svc = IpamService(store, clock=FakeClock())
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", CIDR)
    probe = create_engine(pg_url)
    try:
        yield store, svc, probe
    finally:
        probe.dispose()
        store.close()


def _waiting_on_lock(probe: Any) -> bool:
    with probe.connect() as c:
        return bool(c.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'")).scalar())


def _free_ranges(probe: Any) -> list[tuple[int, int]]:
    with probe.connect() as c:
        return [(int(a), int(b)) for a, b in c.execute(text(
            "SELECT first_off, last_off FROM free_ranges ORDER BY first_off"))]


def _disjoint(ranges: list[tuple[int, int]]) -> bool:
    return all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def _second_waits(probe: Any, call: Callable[[], object]) -> tuple[threading.Thread, list[Any]]:
    """Run `call` on a thread; return once it waits on a row lock. Its result (or exception)
    lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except Exception as exc:  # noqa: BLE001 - the test asserts on what came back
            out.append(exc)

    th = threading.Thread(target=run)
    th.start()
    wait_for(lambda: _waiting_on_lock(probe), 20, "the second transaction to wait on a lock")
    return th, out


def test_concurrent_unreserves_give_the_address_back_once(pg: Any) -> None:
    store, svc, probe = pg
    assert svc.reserve("p", ["10.70.0.5"]) == 1
    assert _free_ranges(probe) == [(2, 4), (6, 14)]
    view_subnet = store_subnet_id(store)
    with store.transaction() as uow:            # the first unreserve, held open
        uow.delete_address(view_subnet, 5)
        uow.give_back(view_subnet, 5)
        th, out = _second_waits(probe, lambda: svc.reserve("p", ["10.70.0.5"],
                                                           unreserve=True))
    th.join(30)
    assert out == [0], out                       # nothing was given back the second time
    ranges = _free_ranges(probe)
    assert _disjoint(ranges), ranges
    assert ranges == [(2, 14)]


def test_requests_for_two_addresses_in_one_free_range_both_succeed(pg: Any) -> None:
    store, svc, probe = pg
    sid = store_subnet_id(store)
    with store.transaction() as uow:            # takes .5: splits [2,14] into [2,4] + [6,14]
        assert uow.take_specific(sid, 5)
        th, out = _second_waits(probe, lambda: svc.allocate(AllocationRequest(
            container_id="c10", ifname="eth0", pool="p", requested_ip="10.70.0.10",
            pod=PodIdentity("ns", "pod", "u10"))))
    th.join(30)
    assert len(out) == 1 and not isinstance(out[0], Exception), out
    assert [a.ip for a in out[0].port.addresses] == ["10.70.0.10"]
    assert _free_ranges(probe) == [(2, 4), (6, 9), (11, 14)]


def store_subnet_id(store: SqlStore) -> str:
    with store.read() as uow:
        return uow.list_subnets()[0].id


def test_proposed_port_id_that_exists_is_already_exists(store: Any, clock: FakeClock) -> None:
    svc = IpamService(store, clock=clock)
    svc.create_pool("p", "dynamic")
    svc.create_subnet("p", CIDR)
    first = svc.allocate(AllocationRequest(container_id="c1", ifname="eth0", pool="p",
                                           pod=PodIdentity("ns", "a", "u1")))
    with pytest.raises(AlreadyExists) as err:
        svc.allocate(AllocationRequest(container_id="c2", ifname="eth0", pool="p",
                                       port_id=first.port.id,
                                       pod=PodIdentity("ns", "b", "u2")))
    assert first.port.id in str(err.value)
    assert "DETAIL" not in str(err.value) and "Key (" not in str(err.value)
