"""PodNetlink against real namespaces; the outcome is read back with `ip` and `ethtool`, tools
that share no code with ours, so a test cannot pass by agreeing with itself.

Only veth host ends named tap<random> are created in the host netns, and only by the code
under test; every test removes what it made. No packet leaves a namespace we created.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cni.agent.netlink.plan import InterfaceConflict, PodInterfaceSpec
from cni.agent.netlink.verbs import PodNetlink
from cni.errors import CheckFailed, NetnsNotFound, PlumbingError
from tests.lab.netns import (
    LabNetns,
    del_netns,
    host_link_gone,
    ip,
    make_netns,
    netns_fixture,  # noqa: F401 - registers the `netns` fixture
    ns_exec,
    unique_name,
)

pytestmark = [pytest.mark.root]

IP4, GW4 = "10.200.0.5", "10.200.0.1"
IP6, GW6 = "fd00:200::5", "fd00:200::1"
MTU = 1450


def _mac() -> str:
    return "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))


def _spec(ns: LabNetns | str, host_ifname: str, **kw: Any) -> PodInterfaceSpec:
    base: dict[str, Any] = {
        "netns": ns.path if isinstance(ns, LabNetns) else ns, "ifname": "eth0",
        "host_ifname": host_ifname, "mac": _mac(), "addresses": [(IP4, 24), (IP6, 64)],
        "gateways": {4: GW4, 6: GW6}, "routes": [], "mtu": MTU, "tx_checksum_off": True}
    base.update(kw)
    return PodInterfaceSpec(**base)


def _json(*argv: str, netns: str | None = None) -> Any:
    return json.loads(ip("-j", *argv, netns=netns).stdout or "[]")


def _ns_ino() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture(scope="module")
def nl() -> Iterator[PodNetlink]:
    p = PodNetlink()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def tap() -> Iterator[str]:
    """A host-end name we own; removed afterwards if a test left it behind."""
    name = unique_name("tapt")
    yield name
    if not host_link_gone(name):
        ip("link", "del", "dev", name, check=False)


def test_setup_builds_the_pair(nl: PodNetlink, netns: LabNetns, tap: str) -> None:
    spec = _spec(netns, tap)
    res = nl.setup_pod_interface(spec)

    (link,) = _json("addr", "show", "dev", "eth0", netns=netns.name)
    assert link["address"] == spec.mac == res.container_mac
    assert link["ifindex"] == res.container_ifindex
    assert link["mtu"] == MTU
    assert "UP" in link["flags"] and link["operstate"] == "UP"
    addrs = {(a["local"], a["prefixlen"]): a for a in link["addr_info"]}
    assert (IP4, 24) in addrs
    assert (IP6, 64) in addrs
    assert not addrs[(IP6, 64)].get("tentative"), "IPv6 address must be usable at once (nodad)"
    (lo,) = _json("link", "show", "dev", "lo", netns=netns.name)
    assert "UP" in lo["flags"]

    routes4 = _json("route", netns=netns.name)
    routes6 = _json("-6", "route", netns=netns.name)
    assert {"dst": "default", "gateway": GW4, "dev": "eth0"}.items() <= next(
        r for r in routes4 if r["dst"] == "default").items()
    assert {"dst": "default", "gateway": GW6, "dev": "eth0"}.items() <= next(
        r for r in routes6 if r["dst"] == "default").items()

    features = ns_exec(netns.name, "ethtool", "-k", "eth0").stdout
    assert "tx-checksumming: off" in features

    (host,) = _json("link", "show", "dev", tap)
    assert "UP" in host["flags"] and host["operstate"] == "UP"
    assert host["mtu"] == MTU
    assert host["address"] == res.host_mac
    assert host["link_netnsid"] is not None  # its peer lives in another netns
    assert res.host_ifname == tap and res.created


def _snapshot(ns: LabNetns, tap: str) -> Any:
    def clean(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items:
            for a in item.get("addr_info", []):
                a.pop("tentative", None)  # the kernel's own link-local DAD may finish meanwhile
        return items
    return (clean(_json("addr", netns=ns.name)), _json("route", netns=ns.name),
            _json("-6", "route", netns=ns.name), _json("link", "show", "dev", tap),
            ns_exec(ns.name, "ethtool", "-k", "eth0").stdout)


def test_setup_twice_is_a_noop(nl: PodNetlink, netns: LabNetns, tap: str) -> None:
    spec = _spec(netns, tap, routes=[("10.201.0.0/16", GW4)])
    first = nl.setup_pod_interface(spec)
    before = _snapshot(netns, tap)
    again = nl.setup_pod_interface(spec)
    assert _snapshot(netns, tap) == before
    assert dataclasses.replace(again, created=True) == first
    assert not again.created


def test_retry_with_other_mac_is_refused_and_leaves_pair(nl: PodNetlink, netns: LabNetns,
                                                         tap: str) -> None:
    spec = _spec(netns, tap)
    nl.setup_pod_interface(spec)
    with pytest.raises(InterfaceConflict, match="MAC"):
        nl.setup_pod_interface(dataclasses.replace(spec, mac=_mac()))
    assert not host_link_gone(tap)
    nl.check_pod_interface(spec.netns, "eth0", spec.mac, spec.addresses)


def test_delete_removes_both_ends_then_reports_nothing(nl: PodNetlink, netns: LabNetns,
                                                      tap: str) -> None:
    nl.setup_pod_interface(_spec(netns, tap))
    assert nl.delete_pod_interface(tap, netns.path, "eth0") is True
    assert host_link_gone(tap)
    assert [link["ifname"] for link in _json("link", netns=netns.name)] == ["lo"]
    assert nl.delete_pod_interface(tap, netns.path, "eth0") is False
    assert nl.delete_pod_interface(tap) is False


def test_delete_after_netns_removed(nl: PodNetlink, tap: str) -> None:
    name = make_netns()
    try:
        nl.setup_pod_interface(_spec(LabNetns(name), tap))
    finally:
        del_netns(name)
    nl.delete_pod_interface(tap, f"/var/run/netns/{name}", "eth0")  # must not raise
    assert host_link_gone(tap)
    assert nl.delete_pod_interface(tap, f"/var/run/netns/{name}", "eth0") is False


def test_delete_by_netns_when_host_end_unknown(nl: PodNetlink, netns: LabNetns,
                                              tap: str) -> None:
    nl.setup_pod_interface(_spec(netns, tap))
    assert nl.delete_pod_interface("", netns.path, "eth0") is True
    assert host_link_gone(tap)
    ip("link", "add", "eth0", "type", "bridge", netns=netns.name)
    assert nl.delete_pod_interface("", netns.path, "eth0") is False  # not a veth: not ours
    assert _json("link", "show", "dev", "eth0", netns=netns.name)


def test_doomed_pairs_go_in_one_batch(nl: PodNetlink) -> None:
    """DEL only marks the host end; one group delete later removes every marked pair, pod
    ends included, and leaves unmarked pairs alone."""
    spaces = [make_netns() for _ in range(3)]
    taps = [unique_name("tapd") for _ in spaces]
    keep = unique_name("tapk")
    try:
        for ns, t in zip(spaces, taps, strict=True):
            nl.setup_pod_interface(_spec(LabNetns(ns), t))
        nl.setup_pod_interface(_spec(LabNetns(spaces[0]), keep, ifname="eth1"))
        assert all(nl.doom_host_end(t) is not None for t in taps)
        assert all(not host_link_gone(t) for t in taps)       # marked, not yet deleted
        assert nl.doom_host_end(unique_name("tapn")) is None   # nothing by that name
        assert nl.reap_doomed() is True
        assert all(host_link_gone(t) for t in taps)
        for ns in spaces:
            assert "eth0" not in {link["ifname"] for link in _json("link", netns=ns)}
        assert not host_link_gone(keep)
        assert nl.reap_doomed() is False                       # nothing left to reap
    finally:
        for ns in spaces:
            del_netns(ns)
        for t in (*taps, keep):
            if not host_link_gone(t):
                ip("link", "del", "dev", t, check=False)


def test_a_del_returns_with_the_pod_netns_empty(netns: LabNetns) -> None:
    """The teardown lets a DEL go on the kernel's reports of both ends (not the request's
    answer): by then the pod's netns has no interface of the pod and no address. Three DELs
    one after another, each with a fresh PodNetlink-backed Teardown's real monitor."""
    from cni.agent.teardown import Teardown
    p = PodNetlink()
    td = Teardown(p)
    spaces = [make_netns() for _ in range(3)]
    taps = [unique_name("tapr") for _ in spaces]
    try:
        for ns, t in zip(spaces, taps, strict=True):
            p.setup_pod_interface(_spec(LabNetns(ns), t))
            assert {a["local"] for a in _json("addr", netns=ns)[1]["addr_info"]} >= {IP4, IP6}
            assert td.start(f"c-{t}", [t], None, "eth0")
            td.wait_for(f"c-{t}", timeout=10)
            assert [link["ifname"] for link in _json("link", netns=ns)] == ["lo"]
            addrs = [a["local"] for link in _json("addr", netns=ns)
                     for a in link.get("addr_info", [])]
            assert IP4 not in addrs and IP6 not in addrs
            assert host_link_gone(t)
        td.drain(timeout=10)
        # the kernel reports host end, then pod end, within the request (the path the
        # teardown is for); the request's answer comes after
        assert td.finished["notified"] >= 1, td.finished
    finally:
        td.stop()
        p.close()
        for ns in spaces:
            del_netns(ns)
        for t in taps:
            if not host_link_gone(t):
                ip("link", "del", "dev", t, check=False)


def test_the_monitor_names_both_ends_as_doom_read_them(netns: LabNetns, tap: str) -> None:
    """What `doom_host_end` reads (host ifindex; the peer's ifindex and nsid) is what the
    kernel's RTM_DELLINK reports carry, host end first."""
    p = PodNetlink()
    seen: list[tuple[int | None, int]] = []
    cv = threading.Condition()

    def gone(nsid: int | None, indexes: list[int]) -> None:
        with cv:
            seen.extend((nsid, i) for i in indexes)
            cv.notify_all()
    try:
        p.watch_unregistered(gone, lambda: None)
        p.setup_pod_interface(_spec(netns, tap))
        ends = p.doom_host_end(tap)
        assert ends is not None and ends.pod_nsid is not None and ends.pod_index > 0
        assert p.links_gone([ends.host_index]) == set()
        assert p.reap_doomed() is True
        want = [(None, ends.host_index), (ends.pod_nsid, ends.pod_index)]
        with cv:
            assert cv.wait_for(lambda: all(w in seen for w in want), timeout=10), seen
        assert seen.index(want[0]) < seen.index(want[1])
        assert p.links_gone([ends.host_index]) == {ends.host_index}
        assert p.reap_doomed() is False                      # an empty group
    finally:
        p.close()


def test_the_monitor_tells_when_it_lost_reports(netns: LabNetns, tap: str) -> None:
    """A monitor too slow for the kernel (its callback stuck, its buffer tiny) overruns:
    it must say so (Teardown then asks the kernel), not stay silent."""
    from cni.agent.netlink.monitor import LinkMonitor
    p = PodNetlink()
    stuck, overrun = threading.Event(), threading.Event()
    other, peer = unique_name("tapo"), unique_name("tapq")
    host = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    mon = LinkMonitor(host, lambda nsid, idx: stuck.wait(10), overrun.set, rcvbuf=1)
    try:
        p.setup_pod_interface(_spec(netns, tap))
        ip("link", "add", other, "type", "veth", "peer", "name", peer)
        p.delete_pod_interface(tap)              # its report holds the monitor's thread
        for i in range(40):                      # meanwhile link reports pile up
            ip("link", "set", other, "up" if i % 2 == 0 else "down")
        stuck.set()
        assert overrun.wait(10)
    finally:
        stuck.set()
        mon.close()
        os.close(host)
        p.close()
        ip("link", "del", "dev", other, check=False)


def test_a_retried_add_reclaims_a_doomed_pair(nl: PodNetlink, netns: LabNetns,
                                              tap: str) -> None:
    """If a batch failed to remove a pair and an ADD reuses it, the next batch must not
    delete the now live interface."""
    spec = _spec(netns, tap)
    nl.setup_pod_interface(spec)
    assert nl.doom_host_end(tap)
    nl.setup_pod_interface(spec)              # the retried ADD finds its pair in place
    nl.reap_doomed()
    assert not host_link_gone(tap)
    assert "eth0" in {link["ifname"] for link in _json("link", netns=netns.name)}


def test_doom_refuses_what_is_not_a_veth(nl: PodNetlink) -> None:
    name = unique_name("tapb")
    ip("link", "add", name, "type", "bridge")
    try:
        assert nl.doom_host_end(name) is None
        nl.reap_doomed()
        assert not host_link_gone(name)
    finally:
        ip("link", "del", "dev", name, check=False)


def test_setup_into_missing_netns(nl: PodNetlink, tap: str) -> None:
    missing = f"/var/run/netns/ect-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NetnsNotFound, match="does not exist"):
        nl.setup_pod_interface(_spec(missing, tap))
    assert host_link_gone(tap)


def test_failure_midway_leaves_nothing(nl: PodNetlink, netns: LabNetns, tap: str) -> None:
    # The gateway is on no subnet of the pod, so the kernel refuses the route after the veth,
    # addresses and default routes already exist: everything must be rolled back.
    spec = _spec(netns, tap, routes=[("10.99.0.0/16", "10.50.0.1")])
    with pytest.raises(PlumbingError) as info:
        nl.setup_pod_interface(spec)
    assert not isinstance(info.value, NetnsNotFound)
    msg = info.value.msg
    assert "10.99.0.0/16" in msg and "ENETUNREACH" in msg and netns.path in msg and "eth0" in msg
    assert host_link_gone(tap)
    assert [link["ifname"] for link in _json("link", netns=netns.name)] == ["lo"]
    assert _json("route", netns=netns.name) == []


def test_foreign_ifname_in_netns_is_refused(nl: PodNetlink, netns: LabNetns, tap: str) -> None:
    ip("link", "add", "eth0", "type", "bridge", netns=netns.name)
    with pytest.raises(PlumbingError, match="eth0 already exists"):
        nl.setup_pod_interface(_spec(netns, tap))
    assert host_link_gone(tap)
    (foreign,) = _json("-d", "link", "show", "dev", "eth0", netns=netns.name)
    assert foreign["linkinfo"]["info_kind"] == "bridge"


def test_check(nl: PodNetlink, netns: LabNetns, tap: str) -> None:
    spec = _spec(netns, tap)
    nl.setup_pod_interface(spec)
    nl.check_pod_interface(netns.path, "eth0", spec.mac, spec.addresses)

    with pytest.raises(CheckFailed, match="MAC"):
        nl.check_pod_interface(netns.path, "eth0", _mac(), spec.addresses)
    with pytest.raises(CheckFailed, match="eth9 is missing"):
        nl.check_pod_interface(netns.path, "eth9", spec.mac, spec.addresses)
    with pytest.raises(CheckFailed, match="netns"):
        nl.check_pod_interface(f"/var/run/netns/ect-missing-{uuid.uuid4().hex[:8]}", "eth0",
                               spec.mac, spec.addresses)

    ip("addr", "del", f"{IP4}/24", "dev", "eth0", netns=netns.name)
    with pytest.raises(CheckFailed, match=f"address {IP4}/24 is missing") as info:
        nl.check_pod_interface(netns.path, "eth0", spec.mac, spec.addresses)
    assert IP6 not in info.value.msg
    ip("link", "set", "eth0", "down", netns=netns.name)
    with pytest.raises(CheckFailed, match="down"):
        nl.check_pod_interface(netns.path, "eth0", spec.mac, [(IP6, 64)])


def test_concurrent_setups_keep_threads_home(nl: PodNetlink) -> None:
    n = 20
    host_ino = os.stat("/proc/self/ns/net").st_ino
    names = [make_netns() for _ in range(n)]
    taps = [unique_name("tapc") for _ in range(n)]
    specs = [_spec(LabNetns(name), tap) for name, tap in zip(names, taps)]
    barrier = threading.Barrier(n)
    results: dict[int, Any] = {}
    after_ino: dict[int, int] = {}

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = nl.setup_pod_interface(specs[i])
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = exc
        after_ino[i] = _ns_ino()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        failed = {i: r for i, r in results.items() if isinstance(r, Exception)}
        assert not failed
        assert len(results) == n
        assert set(after_ino.values()) == {host_ino}
        assert os.stat("/proc/self/ns/net").st_ino == host_ino
        assert _ns_ino() == host_ino
        for spec in specs:
            ns_name = spec.netns.rsplit("/", 1)[1]
            (link,) = _json("link", "show", "dev", "eth0", netns=ns_name)
            assert link["address"] == spec.mac
            assert not host_link_gone(spec.host_ifname)
    finally:
        for spec, name in zip(specs, names):
            nl.delete_pod_interface(spec.host_ifname, spec.netns, "eth0")
            del_netns(name)
    assert all(host_link_gone(t) for t in taps)


def test_no_fd_leak_across_threads(nl: PodNetlink, netns: LabNetns, tap: str) -> None:
    # The agent serves each request on a new thread; pyroute2 0.9 keeps per-thread sockets.
    def cycle() -> None:
        nl.setup_pod_interface(_spec(netns, tap))
        nl.delete_pod_interface(tap, netns.path, "eth0")

    def in_thread() -> None:
        t = threading.Thread(target=cycle)
        t.start()
        t.join(30)

    in_thread()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        in_thread()
    assert len(os.listdir("/proc/self/fd")) <= before


def test_timing(nl: PodNetlink, netns: LabNetns, tap: str,
                capsys: pytest.CaptureFixture[str]) -> None:
    """30 ADD/DEL rounds on the same names, timed; each round checks the promises (outside
    the timed calls): the pair is there when ADD returns, even right after a DEL of the
    same ifname, and both ends are gone when DEL returns."""
    setup_ms: list[float] = []
    delete_ms: list[float] = []
    for _ in range(30):
        spec = _spec(netns, tap)
        t0 = time.perf_counter()
        nl.setup_pod_interface(spec)
        setup_ms.append((time.perf_counter() - t0) * 1e3)
        (link,) = _json("link", "show", "dev", "eth0", netns=netns.name)
        assert link["address"] == spec.mac and not host_link_gone(tap)
        t1 = time.perf_counter()
        assert nl.delete_pod_interface(tap, netns.path, "eth0")
        delete_ms.append((time.perf_counter() - t1) * 1e3)
        assert host_link_gone(tap)
        assert [lk["ifname"] for lk in _json("link", netns=netns.name)] == ["lo"]
    with capsys.disabled():
        print(f"\nPodNetlink medians over 30 runs: setup_pod_interface "
              f"{statistics.median(setup_ms):.2f} ms, delete_pod_interface "
              f"{statistics.median(delete_ms):.2f} ms")
