"""A stateful stand-in for the agent's netlink layer (cni.agent.seams.PodNetlinkClient).

It keeps what the kernel would: network namespaces, veth pairs (host end in the agent's
netns, container end in a pod's), their MAC, MTU, state, addresses and routes, the doomed
group, and the pod-side handles still open. It validates specs with the real pure planner
(cni.agent.netlink.plan) and follows PodNetlink's contract: ADD rolls back what it created,
DEL forgives, a retried ADD finds its pair. A test asserts on `host_links`, `pods(netns)`
and `open_handles`, never on which calls were made."""
from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from cni.agent.netlink.plan import (
    InterfaceConflict,
    PodInterfaceResult,
    PodInterfaceSpec,
    VethEnds,
    normalize_mac,
    normalize_netns_path,
    parse_address,
    plan_interface,
    validate_ifname,
)
from cni.agent.seams import PodNetlinkClient
from cni.errors import CheckFailed, NetnsNotFound, PlumbingError
from tests.fakes.faults import Faults


def _random_mac() -> str:
    return "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))


@dataclass
class PodEnd:
    """The container end of a pair, inside a pod's netns."""

    mac: str
    mtu: int
    host: str                      # its peer's name in the agent's netns
    up: bool = False
    addresses: set[tuple[str, int]] = field(default_factory=set)
    routes: set[tuple[str, int, str | None]] = field(default_factory=set)


@dataclass
class HostEnd:
    mac: str
    mtu: int
    netns: str                     # where its peer lives
    ifname: str                    # its peer's name there
    up: bool = False
    doomed: bool = False
    index: int = field(default_factory=itertools.count(2).__next__)  # pod end's: +1


@dataclass
class FakePending:
    """The handle for a pair made ahead of its port (PodNetlink's PendingInterface)."""

    id: int
    netns: str
    ifname: str
    host: str
    entered: bool = False


class FakeNetlink:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.namespaces: dict[str, dict[str, PodEnd]] = {}
        self.host_links: dict[str, HostEnd] = {}
        self.open_handles: set[int] = set()   # pod-side sockets not closed yet
        self.faults = Faults()
        self._ids = itertools.count(1)
        self._nsids: dict[str, int] = {}
        self._on_gone: Callable[[int | None, list[int]], None] | None = None

    # ----------------------------------------------------------------- test helpers
    def add_netns(self, netns: str) -> str:
        path = normalize_netns_path(netns)
        with self._lock:
            self.namespaces.setdefault(path, {})
        return path

    def remove_netns(self, netns: str) -> None:
        """The runtime removes a netns: the kernel destroys every pair with an end in it."""
        path = normalize_netns_path(netns)
        with self._lock:
            self.namespaces.pop(path, None)
            for name in [n for n, h in self.host_links.items() if h.netns == path]:
                del self.host_links[name]

    def pods(self, netns: str) -> dict[str, PodEnd]:
        with self._lock:
            return dict(self.namespaces.get(normalize_netns_path(netns), {}))

    def host_link_mac(self, name: str) -> str | None:
        with self._lock:
            link = self.host_links.get(name)
            return link.mac if link is not None else None


    def _ns(self, path: str) -> dict[str, PodEnd]:
        try:
            return self.namespaces[path]
        except KeyError:
            raise NetnsNotFound(f"network namespace {path} does not exist") from None

    def _delete_pair(self, host: str) -> bool:
        link = self.host_links.pop(host, None)
        if link is None:
            return False
        self.namespaces.get(link.netns, {}).pop(link.ifname, None)
        if self._on_gone is not None:   # as the kernel reports it: host end, then pod end
            self._on_gone(None, [link.index])
            self._on_gone(self._nsid(link.netns), [link.index + 1])
        return True

    def _nsid(self, path: str) -> int:
        return self._nsids.setdefault(path, len(self._nsids))

    def _configure(self, end: PodEnd, spec: PodInterfaceSpec) -> None:
        plan = plan_interface(spec)
        end.mac, end.mtu, end.up = plan.mac, plan.mtu, True
        end.addresses |= {(a.address, a.prefixlen) for a in plan.addresses}
        end.routes |= {(r.dst, r.dst_len, r.gateway) for r in plan.routes}

    # ------------------------------------------------------------------ pipelined ADD
    def prepare_pod_interface(self, netns: str, ifname: str, mtu: int,
                              host_ifname: str | None = None) -> FakePending | None:
        self.faults.check("prepare_pod_interface")
        ifname = validate_ifname(ifname, "container interface name")
        host = host_ifname or f"ectmp{os.urandom(5).hex()}"
        path = normalize_netns_path(netns)
        with self._lock:
            pods = self._ns(path)
            if ifname in pods or host in self.host_links:
                return None   # EEXIST: the careful path sorts it out
            pods[ifname] = PodEnd(_random_mac(), mtu, host)
            self.host_links[host] = HostEnd(_random_mac(), mtu, path, ifname,
                                            up=host_ifname is not None)
            pend = FakePending(next(self._ids), path, ifname, host)
            self.open_handles.add(pend.id)
        return pend

    def enter_pod(self, pend: FakePending) -> None:
        if pend.entered:
            return
        self.faults.check("enter_pod")
        pend.entered = True

    def finish_host_end(self, pend: FakePending, host_ifname: str, mtu: int) -> str:
        self.faults.check("finish_host_end")
        with self._lock:
            link = self.host_links.pop(pend.host)
            link.mtu, link.up = mtu, True
            self.host_links[host_ifname] = link
            self.namespaces[link.netns][link.ifname].host = host_ifname
            pend.host = host_ifname
            return link.mac

    def finish_pod_end(self, pend: FakePending, spec: PodInterfaceSpec,
                       host_mac: str) -> PodInterfaceResult:
        try:
            self.enter_pod(pend)  # as PodNetlink: enters first when the handler did not
            self.faults.check("finish_pod_end")
            with self._lock:
                end = self._ns(pend.netns)[pend.ifname]
                self._configure(end, spec)
        finally:
            self.open_handles.discard(pend.id)  # the sockets close whatever happened
        return PodInterfaceResult(spec.host_ifname, host_mac, 2, end.mac)

    def host_mac(self, pend: FakePending) -> str:
        self.faults.check("host_mac")
        mac = self.host_link_mac(pend.host)
        if mac is None:
            raise PlumbingError(f"host end {pend.host} vanished")
        return mac

    def abort_pending(self, pend: FakePending) -> None:
        with self._lock:
            self.open_handles.discard(pend.id)
            self._delete_pair(pend.host)

    # --------------------------------------------------------------------- careful ADD
    def setup_pod_interface(self, spec: PodInterfaceSpec) -> PodInterfaceResult:
        plan = plan_interface(spec)
        with self._lock:
            pods = self._ns(plan.netns)
            host = self.host_links.get(plan.host_ifname)
            if host is not None:
                end = pods.get(plan.ifname)
                if end is None or end.host != plan.host_ifname or host.netns != plan.netns:
                    raise InterfaceConflict(f"host interface {plan.host_ifname} already "
                                            f"exists but its peer is not {plan.ifname}")
                if end.mac != plan.mac:
                    raise InterfaceConflict(f"interface {plan.ifname} is our veth but has "
                                            f"MAC {end.mac}, want {plan.mac}")
                host.doomed = False     # this ADD owns it again
                self.faults.check("setup_pod_interface")  # a retried ADD leaves it in place
                self._configure(end, spec)
                host.mtu, host.up = plan.mtu, True
                return PodInterfaceResult(plan.host_ifname, host.mac, 2, end.mac, created=False)
            if plan.ifname in pods:
                raise InterfaceConflict(f"interface {plan.ifname} already exists in netns "
                                        f"{plan.netns}")
            end = pods[plan.ifname] = PodEnd(plan.mac, plan.mtu, plan.host_ifname)
            host = self.host_links[plan.host_ifname] = HostEnd(
                _random_mac(), plan.mtu, plan.netns, plan.ifname, up=True)
            try:
                self.faults.check("setup_pod_interface")  # a step after the veth's creation
            except BaseException:
                self._delete_pair(plan.host_ifname)      # PodNetlink rolls back what it made
                raise
            self._configure(end, spec)
            return PodInterfaceResult(plan.host_ifname, host.mac, 2, end.mac)

    # ------------------------------------------------------------------------- DEL
    def delete_pod_interface(self, host_ifname: str, netns: str | None = None,
                             ifname: str | None = None) -> bool:
        self.faults.check("delete_pod_interface")
        with self._lock:
            if host_ifname and self._delete_pair(host_ifname):
                return True
            if not (netns and ifname):
                return False
            end = self.namespaces.get(normalize_netns_path(netns), {}).get(ifname)
            return end is not None and self._delete_pair(end.host)

    def doom_host_end(self, host_ifname: str) -> VethEnds | None:
        self.faults.check("doom_host_end")
        with self._lock:
            link = self.host_links.get(validate_ifname(host_ifname, "host interface name"))
            if link is None:
                return None
            link.doomed = True
            return VethEnds(link.index, self._nsid(link.netns), link.index + 1)

    def reap_doomed(self) -> bool:
        self.faults.check("reap_doomed")
        with self._lock:
            doomed = [name for name, link in self.host_links.items() if link.doomed]
            for name in doomed:
                self._delete_pair(name)
            return bool(doomed)

    def watch_unregistered(self, on_gone: Callable[[int | None, list[int]], None],
                           on_overrun: Callable[[], None]) -> None:
        self._on_gone = on_gone

    def links_gone(self, host_indexes: list[int]) -> set[int]:
        with self._lock:
            return set(host_indexes) - {h.index for h in self.host_links.values()}

    # ------------------------------------------------------------------------ CHECK
    def check_pod_interface(self, netns: str, ifname: str, mac: str,
                            addresses: list[tuple[str, int]], mtu: int = 0,
                            gateways: dict[int, str] | None = None) -> None:
        with self._lock:
            pods = self.namespaces.get(normalize_netns_path(netns))
            if pods is None:
                raise CheckFailed(f"netns {netns} is missing")
            end = pods.get(ifname)
            if end is None:
                raise CheckFailed(f"interface {ifname} is missing from netns {netns}")
            problems = []
            if end.mac != normalize_mac(mac):
                problems.append(f"MAC is {end.mac}, want {normalize_mac(mac)}")
            for a in (parse_address(x) for x in addresses):
                if (a.address, a.prefixlen) not in end.addresses:
                    problems.append(f"address {a.cidr} is missing")
            if not end.up:
                problems.append("interface is down")
            if mtu and end.mtu != mtu:
                problems.append(f"MTU is {end.mtu}, want {mtu}")
            for _, gw in sorted((gateways or {}).items()):
                if not any(dst_len == 0 and via == gw for _, dst_len, via in end.routes):
                    problems.append(f"default route via {gw} is missing")
        if problems:
            raise CheckFailed(f"interface {ifname} in netns {netns}: " + "; ".join(problems))


def _satisfies_the_protocol(n: FakeNetlink) -> PodNetlinkClient[FakePending]:
    return n  # mypy checks this line: the fake is a PodNetlinkClient, no ignore needed


__all__ = ["FakeNetlink", "FakePending", "HostEnd", "PodEnd"]
