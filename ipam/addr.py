"""Pure address arithmetic: which offsets of a subnet can be handed out.

Addresses are stored as offsets from the subnet's network address so that every number fits
a 64-bit database integer and orders naturally. For IPv6 only the first ``IPV6_SPAN``
addresses of a subnet are allocatable: no pod network needs more, and it keeps counts exact.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPV6_SPAN = 1 << 32

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_network(cidr: str) -> Network:
    """Parse a CIDR strictly: host bits set is an operator typo worth refusing."""
    try:
        return ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"invalid CIDR {cidr!r}: {exc}") from None


def parse_address(text: str) -> Address:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"invalid IP address {text!r}") from None


def usable_span(net: Network) -> tuple[int, int]:
    """First and last offset a pod may get (network and IPv4 broadcast excluded)."""
    if net.version == 4:
        if net.prefixlen >= 31:
            return 0, net.num_addresses - 1
        return 1, net.num_addresses - 2
    last = min(net.num_addresses - 1, IPV6_SPAN)
    return 1, last


def offset_of(net: Network, ip: Address) -> int:
    if ip.version != net.version or ip not in net:
        raise ValueError(f"{ip} is not in {net}")
    return int(ip) - int(net.network_address)


def address_at(net: Network, offset: int) -> Address:
    return ipaddress.ip_address(int(net.network_address) + offset)


def default_gateway(net: Network) -> Address:
    """The first usable address, the convention of most clouds."""
    first, _ = usable_span(net)
    return address_at(net, first)


@dataclass(frozen=True)
class Exclusion:
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.first > self.last:
            raise ValueError("exclusion range is reversed")


def parse_exclusion(net: Network, spec: str) -> Exclusion:
    """Accept "a.b.c.d", "a.b.c.d-a.b.c.e" or a CIDR inside the subnet."""
    spec = spec.strip()
    try:
        if "/" in spec:
            sub = parse_network(spec)
            if sub.version != net.version or not sub.subnet_of(net):  # type: ignore[arg-type]
                raise ValueError(f"exclusion {spec} is not inside {net}")
            return Exclusion(offset_of(net, sub.network_address),
                             offset_of(net, sub.broadcast_address))
        if "-" in spec:
            a, b = spec.split("-", 1)
            ex = Exclusion(offset_of(net, parse_address(a)), offset_of(net, parse_address(b)))
            return ex
        off = offset_of(net, parse_address(spec))
        return Exclusion(off, off)
    except ValueError as exc:
        raise ValueError(f"bad exclusion {spec!r} for {net}: {exc}") from None


def free_ranges(net: Network, gateway: Address | None,
                exclusions: Iterable[Exclusion]) -> list[tuple[int, int]]:
    """The allocatable offsets as sorted, disjoint, inclusive ranges."""
    first, last = usable_span(net)
    holes: list[tuple[int, int]] = [(e.first, e.last) for e in exclusions]
    if gateway is not None:
        g = offset_of(net, gateway)
        holes.append((g, g))
    holes.sort()
    out: list[tuple[int, int]] = []
    cur = first
    for lo, hi in holes:
        if hi < cur:
            continue
        if lo > last:
            break
        if lo > cur:
            out.append((cur, min(lo - 1, last)))
        cur = max(cur, hi + 1)
    if cur <= last:
        out.append((cur, last))
    return out


def span_size(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


def total_addresses(net: Network) -> int:
    first, last = usable_span(net)
    return last - first + 1


def overlaps(a: Network, b: Network) -> bool:
    return a.version == b.version and a.overlaps(b)  # type: ignore[arg-type]
