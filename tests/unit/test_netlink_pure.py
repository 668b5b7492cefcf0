"""The pure half of the netlink seam (cni.agent.netlink.plan): spec validation and
normalisation, no root, no kernel."""
from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni.agent.netlink.plan import (
    AddressPlan,
    InvalidInterfaceSpec,
    PodInterfaceSpec,
    RoutePlan,
    build_routes,
    errno_text,
    family_version,
    normalize_mac,
    normalize_netns_path,
    parse_address,
    parse_route,
    plan_interface,
    validate_ifname,
)
from cni.errors import PlumbingError


def spec(**kw: Any) -> PodInterfaceSpec:
    base: dict[str, Any] = {
        "netns": "/var/run/netns/pod1", "ifname": "eth0", "host_ifname": "tap0123456789a",
        "mac": "02:00:00:00:00:01", "addresses": [("10.0.0.5", 24), ("fd00::5", 64)],
        "gateways": {4: "10.0.0.1", 6: "fd00::1"}, "routes": [], "mtu": 1450,
        "tx_checksum_off": True}
    base.update(kw)
    return PodInterfaceSpec(**base)


@pytest.mark.parametrize("path, want", [
    ("/var/run/netns/cni-1", "/var/run/netns/cni-1"),
    ("/run/netns/cni-1", "/run/netns/cni-1"),
    ("/proc/1234/ns/net", "/proc/1234/ns/net"),
    ("cni-1", "/var/run/netns/cni-1"),
    ("  /proc/1/ns/net ", "/proc/1/ns/net"),
])
def test_netns_paths(path: str, want: str) -> None:
    assert normalize_netns_path(path) == want


@pytest.mark.parametrize("path", ["", "   ", "netns/cni-1"])
def test_bad_netns_paths(path: str) -> None:
    with pytest.raises(InvalidInterfaceSpec):
        normalize_netns_path(path)


@pytest.mark.parametrize("mac, want", [
    ("02:AA:bb:CC:dd:0E", "02:aa:bb:cc:dd:0e"),
    ("02-aa-bb-cc-dd-0e", "02:aa:bb:cc:dd:0e"),
    ("fa:16:3e:00:00:01", "fa:16:3e:00:00:01"),
])
def test_mac_normalised(mac: str, want: str) -> None:
    assert normalize_mac(mac) == want


@pytest.mark.parametrize("mac, why", [
    ("01:00:5e:00:00:01", "multicast"),
    ("ff:ff:ff:ff:ff:ff", "multicast"),
    ("00:00:00:00:00:00", "not usable"),
    ("02:aa:bb:cc:dd", "form"),
    ("02:aa:bb:cc:dd:zz", "form"),
    ("", "form"),
])
def test_bad_macs(mac: str, why: str) -> None:
    with pytest.raises(InvalidInterfaceSpec, match=why):
        normalize_mac(mac)


@pytest.mark.parametrize("name", ["eth0", "tap0123456789a", "a", "net1.100"])
def test_good_ifnames(name: str) -> None:
    assert validate_ifname(name) == name


@pytest.mark.parametrize("name", ["", "tap0123456789abc", "eth 0", "a/b", "a:b", ".", ".."])
def test_bad_ifnames(name: str) -> None:
    with pytest.raises(InvalidInterfaceSpec, match="not a valid Linux interface name"):
        validate_ifname(name, "host interface name")


@pytest.mark.parametrize("item, want", [
    (("10.0.0.5", 24), AddressPlan(4, "10.0.0.5", 24)),
    ("10.0.0.5/32", AddressPlan(4, "10.0.0.5", 32)),
    (("FD00:0::05", 64), AddressPlan(6, "fd00::5", 64)),
    (("10.0.0.5", "16"), AddressPlan(4, "10.0.0.5", 16)),
])
def test_parse_address(item: Any, want: AddressPlan) -> None:
    assert parse_address(item) == want


@pytest.mark.parametrize("item", [("10.0.0.5", 33), ("fd00::5", 129), ("10.0.0.256", 24),
                                  "10.0.0.5/x", ("nope", 24)])
def test_bad_addresses(item: Any) -> None:
    with pytest.raises(InvalidInterfaceSpec):
        parse_address(item)


@pytest.mark.parametrize("key, want", [(4, 4), (6, 6), (socket.AF_INET, 4),
                                       (socket.AF_INET6, 6), ("ipv4", 4), ("IPv6", 6),
                                       ("4", 4)])
def test_family_keys(key: object, want: int) -> None:
    assert family_version(key) == want


@pytest.mark.parametrize("key", [5, "ipx", None, 3.0])
def test_bad_family_keys(key: object) -> None:
    with pytest.raises(InvalidInterfaceSpec):
        family_version(key)


@pytest.mark.parametrize("dst, gw, want", [
    ("default", "10.0.0.1", RoutePlan(4, "0.0.0.0", 0, "10.0.0.1")),
    ("default", "fd00::1", RoutePlan(6, "::", 0, "fd00::1")),
    ("10.1.2.3/16", None, RoutePlan(4, "10.1.0.0", 16, None)),
    ("10.1.0.0/16", "10.0.0.254", RoutePlan(4, "10.1.0.0", 16, "10.0.0.254")),
    ("::/0", "fd00::1", RoutePlan(6, "::", 0, "fd00::1")),
])
def test_parse_route(dst: str, gw: str | None, want: RoutePlan) -> None:
    assert parse_route(dst, gw) == want


@pytest.mark.parametrize("dst, gw, why", [
    ("default", None, "needs a gateway"),
    ("10.1.0.0/16", "fd00::1", "IPv6 gateway"),
    ("10.1.0.0/33", None, "not a network"),
    ("10.1.0.0/16", "gw", "not an IP address"),
])
def test_bad_routes(dst: str, gw: str | None, why: str) -> None:
    with pytest.raises(InvalidInterfaceSpec, match=why):
        parse_route(dst, gw)


def test_build_routes_orders_and_dedupes() -> None:
    routes = build_routes(
        {6: "fd00::1", "ipv4": "10.0.0.1"},
        [("10.2.0.0/16", "10.0.0.254"), ("10.3.0.0/16", None), ("0.0.0.0/0", "10.0.0.1")],
        {4, 6})
    assert routes == (
        RoutePlan(4, "10.3.0.0", 16, None),       # on-link first: a gateway may need it
        RoutePlan(6, "::", 0, "fd00::1"),
        RoutePlan(4, "0.0.0.0", 0, "10.0.0.1"),   # the explicit duplicate was dropped
        RoutePlan(4, "10.2.0.0", 16, "10.0.0.254"),
    )


def test_empty_gateway_means_none() -> None:
    assert build_routes({4: "", 6: "fd00::1"}, [], {6}) == (RoutePlan(6, "::", 0, "fd00::1"),)


@pytest.mark.parametrize("gateways, routes, versions, why", [
    ({4: "10.0.0.1"}, [("default", "10.0.0.2")], {4}, "conflicting routes"),
    ({4: "fd00::1"}, [], {4, 6}, "given for IPv4 but is IPv6"),
    ({6: "fd00::1"}, [], {4}, "no IPv6 address"),
    ({}, [("10.9.0.0/16", None)], {6}, "no IPv4 address"),
])
def test_build_routes_refuses(gateways: dict[Any, str], routes: list[tuple[str, str | None]],
                              versions: set[int], why: str) -> None:
    with pytest.raises(InvalidInterfaceSpec, match=why):
        build_routes(gateways, routes, versions)


def test_plan_interface() -> None:
    plan = plan_interface(spec(mac="02:AA:00:00:00:01", netns="cni-x",
                               addresses=[("10.0.0.5", 24), "10.0.0.5/24", ("fd00::5", 64)]))
    assert plan.netns == "/var/run/netns/cni-x"
    assert plan.mac == "02:aa:00:00:00:01"
    assert plan.addresses == (AddressPlan(4, "10.0.0.5", 24), AddressPlan(6, "fd00::5", 64))
    assert plan.routes == (RoutePlan(4, "0.0.0.0", 0, "10.0.0.1"),
                           RoutePlan(6, "::", 0, "fd00::1"))
    assert plan.mtu == 1450 and plan.tx_checksum_off
    assert plan.addresses[1].family == socket.AF_INET6
    assert plan.addresses[0].cidr == "10.0.0.5/24"


@pytest.mark.parametrize("kw, why", [
    ({"mtu": 67}, "outside"),
    ({"mtu": 70000}, "outside"),
    ({"mtu": 1200}, "minimum for an interface with IPv6"),
    ({"host_ifname": "tap0123456789abcd"}, "host interface name"),
    ({"ifname": "eth/0"}, "container interface name"),
    ({"mac": "01:00:00:00:00:01"}, "multicast"),
])
def test_plan_refuses(kw: dict[str, Any], why: str) -> None:
    with pytest.raises(InvalidInterfaceSpec, match=why) as info:
        plan_interface(spec(**kw))
    assert isinstance(info.value, PlumbingError)  # the CNI edge maps it like any plumbing error


def test_ipv4_only_pod_may_use_small_mtu() -> None:
    plan = plan_interface(spec(addresses=[("10.0.0.5", 24)], gateways={4: "10.0.0.1"},
                               mtu=576))
    assert plan.mtu == 576


def test_errno_text() -> None:
    assert errno_text(errno.ENETUNREACH) == "ENETUNREACH (Network is unreachable)"
    assert errno_text(errno.ENODEV).startswith("ENODEV (")


def test_route_describe() -> None:
    assert RoutePlan(4, "0.0.0.0", 0, "10.0.0.1").describe() == "default via 10.0.0.1"
    assert RoutePlan(4, "10.3.0.0", 16, None).describe() == "10.3.0.0/16 (on-link)"


@given(st.ip_addresses(), st.data())
def test_parse_address_roundtrip(addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                 data: st.DataObject) -> None:
    plen = data.draw(st.integers(0, addr.max_prefixlen))
    a = parse_address((str(addr), plen))
    assert ipaddress.ip_interface(a.cidr) == ipaddress.ip_interface(f"{addr}/{plen}")
    assert a.version == addr.version


@given(st.binary(min_size=6, max_size=6))
def test_mac_accepts_every_unicast(raw: bytes) -> None:
    mac = ":".join(f"{b:02X}" for b in raw)
    if raw[0] & 1 or raw == bytes(6):
        with pytest.raises(InvalidInterfaceSpec):
            normalize_mac(mac)
    else:
        assert normalize_mac(mac) == mac.lower()
