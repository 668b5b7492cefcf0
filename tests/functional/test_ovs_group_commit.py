"""Group commit of attaches and detaches against a real private userspace OVS.

To make "arriving while a transaction is in flight" certain rather than likely, the first
attach is held in flight by pausing ovs-vswitchd (SIGSTOP: it is committed, its ofport not
yet given) or, for detaches, ovsdb-server; the others queue meanwhile. Transactions are
counted by the database itself: every port transaction bumps Open_vSwitch.next_cfg once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from ovs_driver import OvsdbClient, OvsTimeout, OvsTransactionError
from tests.lab.helpers import wait_for
from tests.lab.ovs import (  # noqa: F401 - fixtures are used by name
    PrivateOvs,
    private_ovs,
    unique,
    vsctl,
    vsctl_rows,
)

pytestmark = [pytest.mark.root, pytest.mark.ovs]

WAIT = 30.0  # generous: 2 cores shared by five people
N = 12


@pytest.fixture
def client(private_ovs: PrivateOvs) -> Iterator[OvsdbClient]:  # noqa: F811
    with OvsdbClient(private_ovs.remote, timeout=WAIT, group_commit=True) as c:
        yield c


@pytest.fixture
def bridge(private_ovs: PrivateOvs, client: OvsdbClient) -> str:  # noqa: F811
    name = unique("brg")
    client.ensure_bridge(name)
    return name


@pytest.fixture
def veths(private_ovs: PrivateOvs) -> Iterator[Callable[[int], list[str]]]:  # noqa: F811
    made: list[str] = []

    def make(n: int) -> list[str]:
        names = [unique("vg") for _ in range(n)]
        for name in names:
            subprocess.run(["ip", "-n", str(private_ovs.netns), "link", "add", name, "up",
                            "type", "veth", "peer", "name", f"{name}p"], check=True)
        made.extend(names)
        return names

    yield make
    for name in made:
        subprocess.run(["ip", "-n", str(private_ovs.netns), "link", "del", name],
                       capture_output=True, check=False)


@contextmanager
def paused(ovs: PrivateOvs, daemon: str) -> Iterator[None]:
    """SIGSTOP one of the private OVS daemons ("vswitchd" or "ovsdb"), SIGCONT after."""
    pid = int((Path(str(ovs.dir)) / f"{daemon}.pid").read_text().strip())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def next_cfg(ovs: PrivateOvs) -> int:
    return int(vsctl(ovs.remote, "get", "Open_vSwitch", ".", "next_cfg").strip())


def ports_on(ovs: PrivateOvs, bridge: str) -> set[str]:
    return set(vsctl(ovs.remote, "list-ports", bridge).split())


def attach_in_two_batches(ovs: PrivateOvs, client: OvsdbClient, bridge: str, first: str,
                          rest: list[str]) -> tuple[Future[int], dict[str, Future[int]]]:
    """`first` committed alone and held in flight; `rest` queued behind it; then let go."""
    pool = ThreadPoolExecutor(len(rest) + 1)
    cfg0 = next_cfg(ovs)
    with paused(ovs, "vswitchd"):
        head = pool.submit(client.add_port, bridge, first, {"iface-id": first},
                           wait_ofport=WAIT)
        wait_for(lambda: next_cfg(ovs) == cfg0 + 1, WAIT, "the first attach committed")
        tail = {n: pool.submit(client.add_port, bridge, n, {"iface-id": n}, wait_ofport=WAIT)
                for n in rest}
        wait_for(lambda: client.queued() == len(rest), WAIT, "the others queued")
    pool.shutdown(wait=False)
    return head, tail


def test_concurrent_attaches_share_transactions_and_all_get_ofports(
        private_ovs: PrivateOvs, client: OvsdbClient, bridge: str,  # noqa: F811
        veths: Callable[[int], list[str]]) -> None:
    names = veths(N)
    cfg0 = next_cfg(private_ovs)
    head, tail = attach_in_two_batches(private_ovs, client, bridge, names[0], names[1:])
    ofports = {names[0]: head.result(WAIT), **{n: f.result(WAIT) for n, f in tail.items()}}
    assert next_cfg(private_ovs) - cfg0 == 2  # two transactions for N ports
    assert ports_on(private_ovs, bridge) == set(names)
    for name in names:
        row = vsctl_rows(private_ovs.remote, "find", "Interface", f"name={name}")[0]
        assert row["ofport"] == ofports[name] > 0
        assert row["external_ids"] == {"iface-id": name}
    assert len(set(ofports.values())) == N


def test_a_port_vswitchd_refuses_fails_alone(
        private_ovs: PrivateOvs, client: OvsdbClient, bridge: str,  # noqa: F811
        veths: Callable[[int], list[str]]) -> None:
    names = veths(N - 1)
    ghost = unique("nodev")  # no such netdev: vswitchd sets Interface.error, no ofport
    head, tail = attach_in_two_batches(private_ovs, client, bridge, names[0],
                                       [*names[1:6], ghost, *names[6:]])
    assert head.result(WAIT) > 0
    with pytest.raises(OvsTransactionError, match="could not open network device"):
        tail.pop(ghost).result(WAIT)
    assert all(f.result(WAIT) > 0 for f in tail.values())
    assert ports_on(private_ovs, bridge) == set(names)  # the refused port rolled back
    assert vsctl_rows(private_ovs.remote, "find", "Interface", f"name={ghost}") == []


def test_a_port_the_transaction_refuses_fails_alone(
        private_ovs: PrivateOvs, client: OvsdbClient, bridge: str,  # noqa: F811
        veths: Callable[[int], list[str]]) -> None:
    other = unique("brg")
    client.ensure_bridge(other)
    names = veths(N)
    taken = names.pop()
    client.add_port(other, taken, {"iface-id": "elsewhere"})  # the batch cannot take it
    head, tail = attach_in_two_batches(private_ovs, client, bridge, names[0],
                                       [*names[1:4], taken, *names[4:]])
    assert head.result(WAIT) > 0
    with pytest.raises(OvsTransactionError, match=f"exists on bridge {other}"):
        tail.pop(taken).result(WAIT)
    assert all(f.result(WAIT) > 0 for f in tail.values())
    assert ports_on(private_ovs, bridge) == set(names)
    assert ports_on(private_ovs, other) == {taken}
    stats = client.batch_stats()[f"attach wait={WAIT}"]
    assert stats.fallbacks == 1  # the shared transaction failed, then each went alone


def test_concurrent_detaches_share_a_transaction(
        private_ovs: PrivateOvs, client: OvsdbClient, bridge: str,  # noqa: F811
        veths: Callable[[int], list[str]]) -> None:
    names = veths(N)
    for name in names:
        client.add_port(bridge, name, {"iface-id": name})
    missing = unique("gone")  # DEL forgives: nothing there is False, not an error
    before = client.batch_stats()["detach"].batches
    pool = ThreadPoolExecutor(N + 1)
    with paused(private_ovs, "ovsdb"):
        head = pool.submit(client.delete_port, bridge, names[0])
        wait_for(lambda: client.batch_stats()["detach"].batches == before + 1, WAIT,
                 "the first detach in flight")
        tail = {n: pool.submit(client.delete_port, bridge, n) for n in [*names[1:], missing]}
        wait_for(lambda: client.queued() == N, WAIT, "the other detaches queued")
    assert head.result(WAIT) is True
    assert tail.pop(missing).result(WAIT) is False
    assert all(f.result(WAIT) is True for f in tail.values())
    pool.shutdown()
    assert client.batch_stats()["detach"].batches == before + 2
    assert ports_on(private_ovs, bridge) == set()
    for name in names:
        assert vsctl_rows(private_ovs.remote, "find", "Interface", f"name={name}") == []


def test_alone_an_attach_goes_at_once(
        private_ovs: PrivateOvs, client: OvsdbClient, bridge: str,  # noqa: F811
        veths: Callable[[int], list[str]]) -> None:
    """No window when idle: a lone attach is its own transaction, nothing waits for more."""
    (name,) = veths(1)
    cfg0 = next_cfg(private_ovs)
    done = threading.Event()
    result: list[int] = []

    def attach() -> None:
        result.append(client.add_port(bridge, name, {"iface-id": name}, wait_ofport=WAIT))
        done.set()

    threading.Thread(target=attach).start()
    assert done.wait(WAIT)
    assert result[0] > 0 and next_cfg(private_ovs) == cfg0 + 1


def test_a_batch_that_times_out_fails_together_not_one_by_one(
        private_ovs: PrivateOvs, client: OvsdbClient, bridge: str,  # noqa: F811
        veths: Callable[[int], list[str]]) -> None:
    """vswitchd hung: the batch's wait for ofports times out once for all its callers (and
    what it created is removed), instead of each port being committed and waited for again
    alone, one after the other."""
    names = veths(6)
    cfg0 = next_cfg(private_ovs)
    pool = ThreadPoolExecutor(len(names))
    with paused(private_ovs, "vswitchd"):
        with paused(private_ovs, "ovsdb"):  # hold the first in flight while the rest queue
            head = pool.submit(client.add_port, bridge, names[0], {"iface-id": "a"},
                               wait_ofport=1.0)
            wait_for(lambda: client.batch_stats()["attach wait=1.0"].batches == 1, WAIT,
                     "the first attach in flight")
            tail = [pool.submit(client.add_port, bridge, n, {"iface-id": n}, wait_ofport=1.0)
                    for n in names[1:]]
            wait_for(lambda: client.queued() == len(tail), WAIT, "the others queued")
        for fut in [head, *tail]:
            with pytest.raises(OvsTimeout):
                fut.result(WAIT)
    pool.shutdown()
    assert next_cfg(private_ovs) - cfg0 == 2  # the first alone, then the rest together
    assert ports_on(private_ovs, bridge) == set()  # both transactions rolled back
