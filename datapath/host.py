"""The host side of the standalone datapath, over netlink: the underlay address moving onto
its OVS bridge, the gateway port's netdev and addresses, and priming a tunnel's next hop.

OVSDB does not reach these: the userspace datapath routes tunnel packets by its own table,
which only knows addresses on OVS bridges, and Linux routes between the gateway port and
the physical networks. Each call opens its own short-lived ``IPRoute`` in the agent's
namespace: these steps run at start and when the subnets change, not per pod.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .errors import DatapathConfigError, InterfaceMissing

log = logging.getLogger(__name__)


class HostNetwork:
    """The production :class:`datapath.seams.HostNet`."""

    def move_underlay_address(self, bridge: str, nic: str, underlay_ip: str) -> None:
        """The recipe's br-phy: the address moves from the NIC (already a port of
        ``bridge``) to the bridge, and the routes via the NIC follow it. ``underlay_ip``
        is bare or ADDR/PLEN; the prefix is needed only when the NIC does not carry it."""
        ip_text, _, plen_text = underlay_ip.partition("/")
        ip = ipaddress.ip_address(ip_text)
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        with IPRoute() as ipr:
            br_idx = _link_index(ipr, bridge)
            if br_idx is None:
                raise InterfaceMissing(f"bridge interface {bridge} not found")
            nic_idx = _link_index(ipr, nic) if nic else None
            if nic and nic_idx is None:
                raise InterfaceMissing(f"underlay interface {nic} not found")
            if nic_idx is not None:
                ipr.link("set", index=nic_idx, state="up")
            on_br = _find_addr(ipr, br_idx, family, str(ip))
            if on_br is not None:
                ipr.link("set", index=br_idx, state="up")
                return
            on_nic = _find_addr(ipr, nic_idx, family, str(ip)) if nic_idx else None
            plen = int(plen_text) if plen_text else on_nic
            if plen is None:
                raise DatapathConfigError(
                    f"underlay address {ip} is on neither {nic or '-'} nor {bridge}: give "
                    f"--underlay-ip with its prefix (e.g. {ip}/24)")
            routes = _gateway_routes(ipr, nic_idx, family) if nic_idx else []
            if on_nic is not None and nic_idx is not None:
                ipr.addr("del", index=nic_idx, address=str(ip), prefixlen=on_nic)
            ipr.addr("add", index=br_idx, address=str(ip), prefixlen=plen)
            ipr.link("set", index=br_idx, state="up")
            for dst, gw in routes:   # routes via the NIC follow the address
                try:
                    ipr.route("replace", dst=dst, gateway=gw, oif=br_idx)
                except NetlinkError as exc:
                    log.warning("underlay route not moved dst=%s via=%s: %s", dst, gw, exc)
            log.info("underlay address moved ip=%s/%d from=%s to=%s routes=%d",
                     ip, plen, nic or "-", bridge, len(routes))

    def bring_up_gateway_port(self, port: str, mtu: int) -> None:
        """The gateway port's netdev up with the pods' MTU, and this host a router."""
        with IPRoute() as ipr:
            idx = _link_index(ipr, port)
            if idx is None:
                raise InterfaceMissing(f"gateway port {port} has no netdev")
            ipr.link("set", index=idx, mtu=mtu, state="up")
        _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        # Router port: no IPv6 chatter (ND/MLD) from it onto the local segment.
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{port}/disable_ipv6", "1", missing_ok=True)

    def set_gateway_addresses(self, port: str, cidrs: list[str]) -> None:
        """Make the port's IPv4 addresses exactly ``cidrs`` (ADDR/PLEN each)."""
        with IPRoute() as ipr:
            idx = _link_index(ipr, port)
            if idx is None:
                raise InterfaceMissing(f"gateway port {port} has no netdev")
            have = {f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                    for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
            for cidr in sorted(have - set(cidrs)):
                ip, _, plen = cidr.partition("/")
                ipr.addr("del", index=idx, address=ip, prefixlen=int(plen))
            for cidr in cidrs:
                if cidr not in have:
                    ip, _, plen = cidr.partition("/")
                    ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))

    def prime_neighbor(self, remote_ip: str) -> None:
        """Best effort: make the host ARP for a new tunnel's far end now. The userspace
        datapath drops a tunnel packet whose next hop it has not resolved yet (it sends an
        ARP instead), and it learns next hops by snooping the host's ARP exchanges on
        br-phy; so one datagram from us (to the discard port) spares the first pod packet."""
        family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"", (remote_ip, 9))
        except OSError as exc:
            log.debug("tunnel neighbor priming failed remote_ip=%s: %s", remote_ip, exc)


def _link_index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _find_addr(ipr: Any, index: int | None, family: int, ip: str) -> int | None:
    """The prefix length of ``ip`` on the link, None when it is not there."""
    if index is None:
        return None
    for a in ipr.get_addr(index=index, family=family):
        if a.get_attr("IFA_ADDRESS") == ip:
            return int(a["prefixlen"])
    return None


def _gateway_routes(ipr: Any, index: int, family: int) -> list[tuple[str, str]]:
    """Routes via a next hop out of the NIC (a default route, say): moving the address
    drops them, so they are re-added on the bridge."""
    out = []
    for r in ipr.get_routes(family=family, oif=index):
        gw = r.get_attr("RTA_GATEWAY")
        if gw and r.get_attr("RTA_TABLE") in (None, 254):
            dst = r.get_attr("RTA_DST")
            out.append((f"{dst}/{r['dst_len']}" if dst else "default", gw))
    return out


def _write_sysctl(path: str, value: str, missing_ok: bool = False) -> None:
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
