"""The pure half of the netlink seam: what a pod's interface should look like.

A spec is validated and normalised into an `InterfacePlan` before anything is created, so a
bad request fails with an error that names the field and the kernel is never asked for
something it would refuse late. Nothing here touches the system: no pyroute2, no sockets,
testable without root (tests/unit/test_netlink_pure.py).
"""
from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import PlumbingError

IFNAMSIZ = 16  # kernel limit including the NUL: names are at most 15 characters
NETNS_RUN_DIR = "/var/run/netns"
MIN_MTU = 68
MAX_IFALIAS = 255   # IFALIASZ - 1: the kernel refuses a longer IFLA_IFALIAS
MIN_MTU_IPV6 = 1280  # below this the kernel disables IPv6 on the link (RFC 8200 section 5)
MAX_MTU = 65535
IFF_UP = 0x1
IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253
# IFLA_GROUP of host veth ends whose pod was deleted, waiting for one batched delete
# (`PodNetlink.reap_doomed`). Group 0 is every link's default; this one is ours alone.
DOOMED_GROUP = 0xEC0DE


# --------------------------------------------------------------------------------- errors
class InvalidInterfaceSpec(PlumbingError):
    """The request itself is unusable (bad name, MAC, address, MTU); nothing was touched."""

    default_msg = "invalid pod interface specification"


class InterfaceConflict(PlumbingError):
    """A name we need is held by something that is not this pod's veth; we refuse to touch it."""

    default_msg = "pod interface name conflict"


# ------------------------------------------------------------------------ spec and result
@dataclass(frozen=True)
class PodInterfaceSpec:
    """What the agent wants a pod's interface to look like; built from the allocated port."""

    netns: str                                   # path: /var/run/netns/X, /proc/PID/ns/net
    ifname: str                                  # container side, e.g. eth0
    host_ifname: str                             # host side, tap + 11 chars of the port id
    mac: str                                     # container side MAC
    addresses: list[tuple[str, int]]             # (ip, prefixlen), IPv4 and/or IPv6
    gateways: dict[int, str] = field(default_factory=dict)   # 4/6 (or AF_*) -> gateway ip
    routes: list[tuple[str, str | None]] = field(default_factory=list)  # (dst cidr, gw|None)
    mtu: int = 1500                              # both ends
    tx_checksum_off: bool = False                # userspace OVS datapath needs it for TCP
    alias: str = ""   # the pod end's ifalias: what the agent must know again if OVSDB is lost


@dataclass(frozen=True)
class PodInterfaceResult:
    host_ifname: str
    host_mac: str
    container_ifindex: int
    container_mac: str
    created: bool = True   # False when a retried ADD found the pair already in place


@dataclass(frozen=True)
class VethEnds:
    """What identifies both ends of a doomed veth pair in the kernel's RTM_DELLINK
    notifications, read off the host end before it is doomed: the host end's ifindex in the
    agent's netns, and its peer's ifindex (IFLA_LINK) in the netns the agent knows by
    `pod_nsid` (IFLA_LINK_NETNSID; None: the peer is in the agent's netns too). A
    `pod_index` of 0 means no peer was reported: only the host end is waited for."""

    host_index: int
    pod_nsid: int | None
    pod_index: int


@dataclass(frozen=True)
class AddressPlan:
    version: int
    address: str
    prefixlen: int

    @property
    def family(self) -> int:
        return socket.AF_INET if self.version == 4 else socket.AF_INET6

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class RoutePlan:
    version: int
    dst: str          # network address
    dst_len: int
    gateway: str | None

    @property
    def family(self) -> int:
        return socket.AF_INET if self.version == 4 else socket.AF_INET6

    def describe(self) -> str:
        dst = "default" if self.dst_len == 0 else f"{self.dst}/{self.dst_len}"
        return f"{dst} via {self.gateway}" if self.gateway else f"{dst} (on-link)"


@dataclass(frozen=True)
class InterfacePlan:
    """A validated, normalised spec: everything the kernel will be asked for, decided up front
    so a bad request fails before anything is created."""

    netns: str
    ifname: str
    host_ifname: str
    mac: str
    mtu: int
    addresses: tuple[AddressPlan, ...]
    routes: tuple[RoutePlan, ...]
    tx_checksum_off: bool
    alias: str = ""


# ----------------------------------------------------------------------------- pure core
_IFNAME_BAD = re.compile(r"[\s/:]")
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
_FAMILY_KEYS: dict[object, int] = {
    4: 4, 6: 6, socket.AF_INET: 4, socket.AF_INET6: 6,
    "4": 4, "6": 6, "ipv4": 4, "ipv6": 6, "inet": 4, "inet6": 6, "v4": 4, "v6": 6,
}


def validate_ifname(name: str, what: str = "interface name") -> str:
    """The kernel's own rules (dev_valid_name), checked early so the error names the field."""
    if not name or len(name) >= IFNAMSIZ or name in (".", "..") or _IFNAME_BAD.search(name):
        raise InvalidInterfaceSpec(
            f"{what} {name!r} is not a valid Linux interface name "
            f"(1-{IFNAMSIZ - 1} characters, no whitespace, '/' or ':')")
    return name


def normalize_mac(mac: str) -> str:
    """Lower-case colon form; a multicast MAC is refused here because the kernel would refuse
    it later with a much less helpful EADDRNOTAVAIL."""
    m = mac.strip().lower()
    if not _MAC_RE.match(m):
        raise InvalidInterfaceSpec(f"MAC address {mac!r} is not of the form aa:bb:cc:dd:ee:ff")
    m = m.replace("-", ":")
    if int(m[:2], 16) & 1:
        raise InvalidInterfaceSpec(f"MAC address {mac!r} is a multicast address")
    if m == "00:00:00:00:00:00":
        raise InvalidInterfaceSpec("MAC address 00:00:00:00:00:00 is not usable")
    return m


def normalize_netns_path(netns: str) -> str:
    """Runtimes pass a path (/var/run/netns/X, /run/netns/X, /proc/PID/ns/net); a bare name is
    taken as one made by `ip netns add`."""
    ns = (netns or "").strip()
    if not ns:
        raise InvalidInterfaceSpec("network namespace path is empty")
    if "/" not in ns:
        return f"{NETNS_RUN_DIR}/{ns}"
    if not ns.startswith("/"):
        raise InvalidInterfaceSpec(f"network namespace path {netns!r} is not absolute")
    return ns


def parse_address(item: tuple[str, int] | str) -> AddressPlan:
    """Accepts (ip, prefixlen) or 'ip/prefixlen'."""
    try:
        if isinstance(item, str):
            iface = ipaddress.ip_interface(item.strip())
        else:
            ip, plen = item
            iface = ipaddress.ip_interface(f"{str(ip).strip()}/{int(plen)}")
    except (ValueError, TypeError) as exc:
        raise InvalidInterfaceSpec(f"address {item!r} is not a valid IP address with a "
                                   f"prefix length: {exc}") from None
    return AddressPlan(iface.version, str(iface.ip), iface.network.prefixlen)


def family_version(key: object) -> int:
    """Gateways may be keyed by IP version (4/6), by AF_INET/AF_INET6 or by name."""
    if isinstance(key, str):
        key = key.strip().lower()
    try:
        return _FAMILY_KEYS[key]
    except (KeyError, TypeError):
        raise InvalidInterfaceSpec(f"gateway family {key!r} is not one of 4, 6, "
                                   "'ipv4', 'ipv6'") from None


def _parse_ip(value: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise InvalidInterfaceSpec(f"{what} {value!r} is not an IP address") from None


def parse_route(dst: str, gateway: str | None) -> RoutePlan:
    """'default' is accepted for either family only with a gateway that tells which."""
    gw = _parse_ip(gateway, "route gateway") if gateway else None
    d = (dst or "").strip()
    if d == "default":
        if gw is None:
            raise InvalidInterfaceSpec("a 'default' route needs a gateway")
        d = "0.0.0.0/0" if gw.version == 4 else "::/0"
    try:
        net = ipaddress.ip_network(d, strict=False)
    except ValueError:
        raise InvalidInterfaceSpec(f"route destination {dst!r} is not a network") from None
    if gw is not None and gw.version != net.version:
        raise InvalidInterfaceSpec(f"route {dst} has an IPv{gw.version} gateway {gateway} "
                                   f"for an IPv{net.version} destination")
    return RoutePlan(net.version, str(net.network_address), net.prefixlen,
                     str(gw) if gw is not None else None)


def build_routes(gateways: Mapping[Any, str],
                 routes: Iterable[tuple[str, str | None]],
                 versions: set[int]) -> tuple[RoutePlan, ...]:
    """On-link routes first (a gateway may depend on them), then one default route per gateway,
    then the explicit routes via gateways; duplicates are dropped, contradictions refused."""
    plans: list[RoutePlan] = []
    for key, gw in gateways.items():
        if not gw:
            continue
        version = family_version(key)
        gw_ip = _parse_ip(gw, f"IPv{version} gateway")
        if gw_ip.version != version:
            raise InvalidInterfaceSpec(f"gateway {gw} is given for IPv{version} but is "
                                       f"IPv{gw_ip.version}")
        plans.append(RoutePlan(version, "0.0.0.0" if version == 4 else "::", 0, str(gw_ip)))
    for dst, via in routes:
        plans.append(parse_route(dst, via or None))
    seen: dict[tuple[int, str, int], RoutePlan] = {}
    for p in plans:
        key = (p.version, p.dst, p.dst_len)
        if key in seen:
            if seen[key].gateway != p.gateway:
                raise InvalidInterfaceSpec(f"conflicting routes to {p.describe()} and "
                                           f"{seen[key].describe()}")
            continue
        if p.version not in versions:
            raise InvalidInterfaceSpec(f"route {p.describe()} is IPv{p.version} but the pod "
                                       f"has no IPv{p.version} address")
        seen[key] = p
    ordered = list(seen.values())
    return tuple([p for p in ordered if p.gateway is None] +
                 [p for p in ordered if p.gateway is not None])


def plan_interface(spec: PodInterfaceSpec) -> InterfacePlan:
    """Validate and normalise a spec without touching the system."""
    ifname = validate_ifname(spec.ifname, "container interface name")
    host = validate_ifname(spec.host_ifname, "host interface name")
    addrs: list[AddressPlan] = []
    for item in spec.addresses:
        a = parse_address(item)
        if a not in addrs:
            addrs.append(a)
    versions = {a.version for a in addrs}
    if not isinstance(spec.mtu, int) or not MIN_MTU <= spec.mtu <= MAX_MTU:
        raise InvalidInterfaceSpec(f"MTU {spec.mtu!r} is outside {MIN_MTU}..{MAX_MTU}")
    if 6 in versions and spec.mtu < MIN_MTU_IPV6:
        raise InvalidInterfaceSpec(f"MTU {spec.mtu} is below {MIN_MTU_IPV6}, the minimum "
                                   "for an interface with IPv6 addresses")
    if len(spec.alias.encode()) > MAX_IFALIAS:
        raise InvalidInterfaceSpec(f"interface alias longer than {MAX_IFALIAS} bytes")
    return InterfacePlan(
        netns=normalize_netns_path(spec.netns), ifname=ifname, host_ifname=host,
        mac=normalize_mac(spec.mac), mtu=spec.mtu, addresses=tuple(addrs),
        routes=build_routes(spec.gateways, spec.routes, versions),
        tx_checksum_off=spec.tx_checksum_off, alias=spec.alias)


def errno_text(code: int) -> str:
    """'ENETUNREACH (Network is unreachable)': the symbol for searching, the text for reading."""
    name = errno.errorcode.get(code, f"errno {code}")
    return f"{name} ({os.strerror(code)})"


# ------------------------------------------------------------ the pod-side requests
def pod_link_changes(plan: InterfacePlan, mac: str, mtu: int, flags: int,
                     alias: str = "") -> dict[str, Any]:
    """The attributes of the pod's link that differ from the plan, for one RTM_NEWLINK
    (empty when it is already as planned: a retried ADD changes nothing)."""
    changes: dict[str, Any] = {}
    if plan.alias and alias != plan.alias:
        changes["ifalias"] = plan.alias
    if mac.lower() != plan.mac:
        changes["address"] = plan.mac
    if mtu != plan.mtu:
        changes["mtu"] = plan.mtu
    if not flags & IFF_UP:
        changes["state"] = "up"
    return changes


def address_request(a: AddressPlan) -> dict[str, Any]:
    """Keyword arguments of the RTM_NEWADDR for one address (IPv6 without DAD: usable at
    once, the address is ours by allocation)."""
    return {"address": a.address, "prefixlen": a.prefixlen,
            "flags": IFA_F_NODAD if a.version == 6 else 0}


def route_request(r: RoutePlan, oif: int) -> dict[str, Any]:
    """Keyword arguments of the RTM_NEWROUTE for one route out of the pod's interface."""
    kw: dict[str, Any] = {"family": r.family, "dst_len": r.dst_len, "oif": oif}
    if r.dst_len:
        kw["dst"] = r.dst
    if r.gateway:
        kw["gateway"] = r.gateway
    else:
        kw["scope"] = RT_SCOPE_LINK
    return kw


# The pod end's ifalias carries the CNI network's name. The OVS port's external_ids say it
# too, but a port OVSDB lost is re-plugged from the controller's view, which does not know
# networks; the pod's own interface outlives that loss (it is why the port can be re-plugged).
_NETWORK_ALIAS = "ecnet:network="


def network_alias(network: str) -> str:
    return _NETWORK_ALIAS + network if network else ""


def network_from_alias(alias: str) -> str:
    """The network an alias written by `network_alias` names; "" for any other alias."""
    return alias[len(_NETWORK_ALIAS):] if alias.startswith(_NETWORK_ALIAS) else ""


__all__ = [
    "DOOMED_GROUP", "AddressPlan", "InterfaceConflict", "InterfacePlan", "InvalidInterfaceSpec",
    "PodInterfaceResult", "PodInterfaceSpec", "RoutePlan", "VethEnds", "address_request",
    "build_routes", "errno_text", "family_version", "network_alias", "network_from_alias",
    "normalize_mac", "normalize_netns_path", "parse_address", "parse_route", "plan_interface",
    "pod_link_changes", "route_request", "validate_ifname",
]
