"""The pipelined ADD's pod side (prepare, enter, finish: one netlink batch) against real
namespaces, read back with `ip` and `ethtool`, as tests/functional/test_netlink.py does for
the careful path."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cni.agent.netlink.verbs import PodNetlink
from cni.errors import NetnsNotFound, PlumbingError
from tests.functional.test_netlink import (  # noqa: F401 - nl and tap are fixtures
    GW4,
    GW6,
    IP4,
    IP6,
    MTU,
    _json,
    _spec,
    nl,
    tap,
)
from tests.lab.netns import (  # noqa: F401 - registers the `netns` fixture
    LabNetns,
    del_netns,
    host_link_gone,
    make_netns,
    netns_fixture,
    ns_exec,
)

pytestmark = [pytest.mark.root]


def test_pipelined_add_configures_the_pod_side_in_one_batch(
        nl: PodNetlink, netns: LabNetns, tap: str) -> None:  # noqa: F811
    spec = _spec(netns, tap, routes=[("10.99.0.0/16", GW4)])
    pend = nl.prepare_pod_interface(netns.path, "eth0", MTU, tap)
    assert pend is not None
    nl.enter_pod(pend)
    res = nl.finish_pod_end(pend, spec, "")

    (link,) = _json("addr", "show", "dev", "eth0", netns=netns.name)
    assert link["address"] == spec.mac and link["ifindex"] == res.container_ifindex
    assert link["mtu"] == MTU and "UP" in link["flags"]
    addrs = {(a["local"], a["prefixlen"]): a for a in link["addr_info"]}
    assert (IP4, 24) in addrs and (IP6, 64) in addrs
    assert not addrs[(IP6, 64)].get("tentative"), "IPv6 address must be usable at once (nodad)"
    routes4 = {r["dst"]: r for r in _json("route", netns=netns.name)}
    assert {"gateway": GW4, "dev": "eth0", "protocol": "static"}.items() <= \
        routes4["default"].items()
    assert {"gateway": GW4, "dev": "eth0"}.items() <= routes4["10.99.0.0/16"].items()
    routes6 = {r["dst"]: r for r in _json("-6", "route", netns=netns.name)}
    assert {"gateway": GW6, "dev": "eth0"}.items() <= routes6["default"].items()
    assert "tx-checksumming: off" in ns_exec(netns.name, "ethtool", "-k", "eth0").stdout
    # CHECK (pyroute2, the careful path's reader) agrees with what the batch wrote
    nl.check_pod_interface(netns.path, "eth0", spec.mac, spec.addresses, mtu=MTU,
                           gateways={4: GW4, 6: GW6})


def test_a_refused_step_of_the_batch_is_named_and_the_pair_can_be_aborted(
        nl: PodNetlink, netns: LabNetns, tap: str) -> None:  # noqa: F811
    # The gateway is on no subnet of the pod: the kernel refuses that route (and only it).
    spec = _spec(netns, tap, routes=[("10.98.0.0/16", "10.50.0.1")])
    pend = nl.prepare_pod_interface(netns.path, "eth0", MTU, tap)
    assert pend is not None
    with pytest.raises(PlumbingError) as info:
        nl.finish_pod_end(pend, spec, "")
    msg = info.value.msg
    assert "adding route 10.98.0.0/16 via 10.50.0.1" in msg and "ENETUNREACH" in msg
    assert netns.path in msg
    nl.abort_pending(pend)
    assert host_link_gone(tap)
    assert [link["ifname"] for link in _json("link", netns=netns.name)] == ["lo"]


def test_a_missing_container_end_fails_enter(nl: PodNetlink, netns: LabNetns,  # noqa: F811
                                             tap: str) -> None:  # noqa: F811
    pend = nl.prepare_pod_interface(netns.path, "eth0", MTU, tap)
    assert pend is not None
    ns_exec(netns.name, "ip", "link", "del", "eth0")
    with pytest.raises(PlumbingError, match="looking up eth0"):
        nl.enter_pod(pend)
    nl.abort_pending(pend)
    assert host_link_gone(tap)


def test_the_pair_is_created_up_with_its_peer_in_the_pod(
        nl: PodNetlink, netns: LabNetns, tap: str) -> None:  # noqa: F811
    pend = nl.prepare_pod_interface(netns.path, "eth0", MTU, tap)
    assert pend is not None
    (host,) = _json("-d", "link", "show", "dev", tap)
    assert host["linkinfo"]["info_kind"] == "veth" and "UP" in host["flags"]
    assert host["mtu"] == MTU and host["link_netnsid"] is not None
    (peer,) = _json("-d", "link", "show", "dev", "eth0", netns=netns.name)
    assert peer["linkinfo"]["info_kind"] == "veth" and peer["mtu"] == MTU
    assert "UP" not in peer["flags"]  # the pod side comes up with its MAC, in the batch
    nl.abort_pending(pend)
    assert host_link_gone(tap)


def test_an_ifname_already_in_the_pod_means_the_careful_path(
        nl: PodNetlink, netns: LabNetns, tap: str) -> None:  # noqa: F811
    ns_exec(netns.name, "ip", "link", "add", "eth0", "type", "bridge")
    assert nl.prepare_pod_interface(netns.path, "eth0", MTU, tap) is None  # EEXIST
    assert host_link_gone(tap)


def test_a_stale_netns_mount_point_is_named(
        nl: PodNetlink, tmp_path: Path, tap: str) -> None:  # noqa: F811
    stale = tmp_path / "stale-netns"
    stale.write_text("")
    with pytest.raises(NetnsNotFound, match="not a network namespace"):
        nl.prepare_pod_interface(str(stale), "eth0", MTU, tap)
    assert host_link_gone(tap)


def test_concurrent_pairs_each_get_their_own_lent_socket(nl: PodNetlink) -> None:  # noqa: F811
    """ADDs of a burst create their pairs on lent host sockets, side by side: every pair
    lands whole (host end here, peer in its pod), and a refused creation (EEXIST) leaves
    the next one working."""
    spaces = [LabNetns(make_netns()) for _ in range(12)]
    taps = [f"tapls{os.getpid() % 10000:04d}{i:02d}" for i in range(len(spaces))]
    try:
        with ThreadPoolExecutor(len(spaces)) as ex:
            pends = list(ex.map(lambda a: nl.prepare_pod_interface(a[0].path, "eth0", MTU, a[1]),
                                zip(spaces, taps, strict=True)))
        for ns, tap, pend in zip(spaces, taps, pends, strict=True):
            assert pend is not None and not host_link_gone(tap)
            assert [link["ifname"] for link in _json("link", netns=ns.name)] == ["lo", "eth0"]
        assert nl.prepare_pod_interface(spaces[0].path, "eth0", MTU, taps[0] + "x") is None
        for pend in pends:
            assert pend is not None
            nl.abort_pending(pend)
        assert all(host_link_gone(tap) for tap in taps)
        again = nl.prepare_pod_interface(spaces[0].path, "eth0", MTU, taps[0])
        assert again is not None
        nl.abort_pending(again)
        assert host_link_gone(taps[0])
    finally:
        for ns in spaces:
            del_netns(ns.name)
