"""CHECK's look at a pod's interface: every way it differs from what ADD built."""
from __future__ import annotations

import ipaddress

from pyroute2.netlink.exceptions import NetlinkError

from ...errors import CheckFailed, NetnsNotFound, PlumbingError
from .netns import HostNetns, attr, exc_text, get_link
from .plan import IFF_UP, normalize_mac, parse_address

_AF = {4: 2, 6: 10}  # AF_INET, AF_INET6


def check_pod_interface(ns: HostNetns, netns: str, ifname: str, mac: str,
                        addresses: list[tuple[str, int]], mtu: int = 0,
                        gateways: dict[int, str] | None = None) -> None:
    """Raise CheckFailed listing every way the interface differs from what ADD built:
    MAC, addresses, up, MTU, and a default route through each family's gateway."""
    want = [parse_address(a) for a in addresses]
    want_mac = normalize_mac(mac)
    routes: set[tuple[int, str]] = set()
    try:
        with ns.inside(netns) as pod:
            link = get_link(pod.ipr, ifname)
            if link is None:
                raise CheckFailed(f"interface {ifname} is missing from netns {netns}")
            idx = link["index"]
            have = {(ipaddress.ip_address(attr(m, "IFA_ADDRESS")), int(m["prefixlen"]))
                    for m in pod.ipr.addr("dump", index=idx)
                    if attr(m, "IFA_ADDRESS") is not None}
            for family in (gateways or {}):
                for r in pod.ipr.route("dump", family=_AF[family]):
                    if (r["dst_len"] == 0 and attr(r, "RTA_OIF") == idx
                            and attr(r, "RTA_GATEWAY") is not None):
                        routes.add((family, str(ipaddress.ip_address(
                            attr(r, "RTA_GATEWAY")))))
    except NetnsNotFound as exc:
        raise CheckFailed(f"netns {netns} is missing", exc.msg) from None
    except CheckFailed:
        raise
    except (PlumbingError, NetlinkError, OSError) as exc:
        text = exc.msg if isinstance(exc, PlumbingError) else exc_text(exc)
        raise CheckFailed(f"could not inspect {ifname} in netns {netns}: {text}") from exc
    problems: list[str] = []
    have_mac = str(attr(link, "IFLA_ADDRESS")).lower()
    if have_mac != want_mac:
        problems.append(f"MAC is {have_mac}, want {want_mac}")
    for a in want:
        if (ipaddress.ip_address(a.address), a.prefixlen) not in have:
            problems.append(f"address {a.cidr} is missing")
    if not link["flags"] & IFF_UP:
        problems.append("interface is down")
    if mtu and attr(link, "IFLA_MTU") != mtu:
        problems.append(f"MTU is {attr(link, 'IFLA_MTU')}, want {mtu}")
    for family, gw in sorted((gateways or {}).items()):
        if (family, str(ipaddress.ip_address(gw))) not in routes:
            problems.append(f"default route via {gw} is missing")
    if problems:
        raise CheckFailed(f"interface {ifname} in netns {netns}: " + "; ".join(problems))
