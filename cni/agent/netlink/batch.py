"""The pod side of an ADD as one netlink batch: link attributes, addresses, routes.

Why: under the benchmark most of the agent's CPU on the pod side was pyroute2's own
machinery (an asyncio loop run per request, message objects, the IPRoute built per pod),
not the kernel (docs/performance.md "Where the time is"). The kernel takes several
rtnetlink messages in one sendmsg and handles them in order, acking each one (NLM_F_ACK),
so the link up with its MAC and MTU, then every address, then every route (which needs the
link up and the address's prefix route) go in one system call and come back as one read.

Pure: bytes in, bytes out (struct only), unit-tested without root against pyroute2's
decoder; the socket side is PodNetlink.finish_pod_end.
"""
from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from .plan import IFA_F_NODAD, IFF_UP, RT_SCOPE_LINK, AddressPlan, InterfacePlan, RoutePlan

NLMSG_ERROR = 2
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_IFALIAS = 20
IFLA_LINKINFO = 18
IFLA_GROUP = 27
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4   # what pyroute2's route("add") sends, so CHECK and `ip route` agree
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0

_NLMSGHDR = struct.Struct("=IHHII")   # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")   # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")   # family, dst_len, src_len, tos, table, proto, scope,
#                                        type, flags
_RTATTR = struct.Struct("=HH")


@dataclass(frozen=True)
class BatchStep:
    """One message of the batch: what it does (for the error) and the errnos that mean
    "already so" (a retried ADD)."""

    seq: int
    what: str
    ok_errnos: tuple[int, ...] = ()


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def _msg(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags,
                          seq, 0) + body


def _addr_bytes(family: int, address: str) -> bytes:
    return socket.inet_pton(family, address)


def link_up(seq: int, index: int, mac: str, mtu: int, alias: str = "") -> bytes:
    """RTM_NEWLINK on an existing link: MAC, MTU, IFF_UP and the ifalias (what a restarted
    agent reads back when OVSDB lost the port: plan.network_alias) in one message."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
    body += _attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
    body += _attr(IFLA_MTU, struct.pack("=I", mtu))
    if alias:
        body += _attr(IFLA_IFALIAS, alias.encode() + b"\0")
    return _msg(RTM_NEWLINK, 0, seq, body)


def veth_add(seq: int, name: str, mtu: int, up: bool, peer: str, peer_nsfd: int) -> bytes:
    """RTM_NEWLINK creating a veth pair, its peer straight into the netns of `peer_nsfd`
    (`ip link add NAME mtu M [up] type veth peer name PEER mtu M netns FD`)."""
    flag = IFF_UP if up else 0
    peer_msg = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(
        IFLA_IFNAME, peer.encode() + b"\0") + _attr(IFLA_MTU, struct.pack("=I", mtu)) + _attr(
        IFLA_NET_NS_FD, struct.pack("=I", peer_nsfd))
    info = _attr(IFLA_INFO_KIND, b"veth\0") + _attr(IFLA_INFO_DATA,
                                                      _attr(VETH_INFO_PEER, peer_msg))
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, flag, flag)
    body += _attr(IFLA_IFNAME, name.encode() + b"\0") + _attr(IFLA_MTU, struct.pack("=I", mtu))
    body += _attr(IFLA_LINKINFO, info)
    return _msg(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def group_delete(seq: int, group: int) -> bytes:
    """RTM_DELLINK of every link in `group` (`ip link delete group G`): one request, one
    pass of the kernel's unregistering for the whole batch."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_GROUP,
                                                                 struct.pack("=I", group))
    return _msg(RTM_DELLINK, 0, seq, body)


def link_probe(seq: int, index: int) -> bytes:
    """RTM_SETLINK of link `index` that changes nothing: ENODEV when it is gone. Unlike a
    lookup, it takes the RTNL, so it waits for an unregistering in progress: a link it
    finds gone has been through its NETDEV_UNREGISTER (addresses and routes removed)."""
    return _msg(RTM_SETLINK, 0, seq, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0))


def addr_add(seq: int, index: int, a: AddressPlan) -> bytes:
    """RTM_NEWADDR as `ip addr add` (IPv4: IFA_LOCAL too; IPv6 without DAD)."""
    flags = IFA_F_NODAD if a.version == 6 else 0
    body = _IFADDRMSG.pack(a.family, a.prefixlen, flags, 0, index)
    raw = _addr_bytes(a.family, a.address)
    if a.family == socket.AF_INET:
        body += _attr(IFA_LOCAL, raw)
    body += _attr(IFA_ADDRESS, raw)
    return _msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def route_add(seq: int, oif: int, r: RoutePlan) -> bytes:
    """RTM_NEWROUTE out of the pod's interface, via its gateway or on-link."""
    scope = RT_SCOPE_UNIVERSE if r.gateway else RT_SCOPE_LINK
    body = _RTMSG.pack(r.family, r.dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope,
                       RTN_UNICAST, 0)
    if r.dst_len:
        body += _attr(RTA_DST, _addr_bytes(r.family, r.dst))
    if r.gateway:
        body += _attr(RTA_GATEWAY, _addr_bytes(r.family, r.gateway))
    body += _attr(RTA_OIF, struct.pack("=I", oif))
    return _msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def pod_side_batch(plan: InterfacePlan, index: int,
                   first_seq: int = 1) -> tuple[bytes, list[BatchStep]]:
    """The whole pod side of `plan` for the link `index`, in the order the kernel needs."""
    where = f"in netns {plan.netns}"
    out: list[bytes] = []
    steps: list[BatchStep] = []
    seq = first_seq
    out.append(link_up(seq, index, plan.mac, plan.mtu, plan.alias))
    steps.append(BatchStep(seq, f"setting MAC {plan.mac}, MTU {plan.mtu}, state up on "
                                f"{plan.ifname} {where}"))
    for a in plan.addresses:
        seq += 1
        out.append(addr_add(seq, index, a))
        steps.append(BatchStep(seq, f"adding address {a.cidr} to {plan.ifname} {where}",
                               (errno.EEXIST,)))
    for r in plan.routes:
        seq += 1
        out.append(route_add(seq, index, r))
        steps.append(BatchStep(seq, f"adding route {r.describe()} on {plan.ifname} {where}",
                               (errno.EEXIST,)))
    return b"".join(out), steps


def _messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(offset, type, seq) of each netlink message in `data`."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            raise ValueError(f"netlink message of length {length} at offset {off}")
        yield off, kind, seq
        off += _align(length)


def parse_acks(data: bytes) -> dict[int, int]:
    """seq -> errno (0: done) of every NLMSG_ERROR (the kernel's ack) in `data`."""
    return {seq: -struct.unpack_from("=i", data, off + _NLMSGHDR.size)[0]
            for off, kind, seq in _messages(data) if kind == NLMSG_ERROR}


def parse_unregistered(data: bytes) -> list[int]:
    """The ifindexes of the RTM_DELLINK notifications (links unregistered) in `data`.

    Only AF_UNSPEC ones: a bridge sends an AF_BRIDGE RTM_DELLINK for a port leaving it, while
    the port itself lives on."""
    out: list[int] = []
    for off, kind, _seq in _messages(data):
        if kind == RTM_DELLINK and off + _NLMSGHDR.size + _IFINFOMSG.size <= len(data):
            family, _type, index, _f, _c = _IFINFOMSG.unpack_from(data, off + _NLMSGHDR.size)
            if family == socket.AF_UNSPEC:
                out.append(index)
    return out


__all__ = ["BatchStep", "addr_add", "group_delete", "link_probe", "link_up", "parse_acks",
           "parse_unregistered", "pod_side_batch", "route_add", "veth_add"]
