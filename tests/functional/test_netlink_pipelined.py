"""The pipelined ADD's pod side (prepare, enter, finish: one netlink batch) against real
namespaces, read back with `ip` and `ethtool`, as tests/functional/test_netlink.py does for
the careful path."""
from __future__ import annotations

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
    host_link_gone,
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


def test_meanwhile_runs_while_the_pair_is_made_and_a_failure_there_takes_it_away(
        nl: PodNetlink, netns: LabNetns, tap: str) -> None:  # noqa: F811
    # ADD issues its allocation in `meanwhile`: if that raises, no veth may stay behind.
    ran: list[str] = []
    pend = nl.prepare_pod_interface(netns.path, "eth0", MTU, tap,
                                    meanwhile=lambda: ran.append("allocation issued"))
    assert pend is not None and ran == ["allocation issued"]
    nl.abort_pending(pend)
    assert host_link_gone(tap)

    def refuse() -> None:
        raise RuntimeError("controller client broke")

    with pytest.raises(RuntimeError, match="controller client broke"):
        nl.prepare_pod_interface(netns.path, "eth0", MTU, tap, meanwhile=refuse)
    assert host_link_gone(tap)
    assert [link["ifname"] for link in _json("link", netns=netns.name)] == ["lo"]


def test_meanwhile_is_not_run_when_the_pair_cannot_be_asked_for(
        nl: PodNetlink, tmp_path: Path, tap: str) -> None:  # noqa: F811
    ran: list[str] = []
    with pytest.raises(NetnsNotFound):
        nl.prepare_pod_interface(str(tmp_path / "gone"), "eth0", MTU, tap,
                                 meanwhile=lambda: ran.append("allocation issued"))
    assert ran == [] and host_link_gone(tap)
