"""The agent's reconcile of three views of its node: OVSDB (our external_ids), the network
namespaces it can see, and the controller's ports for this node.

The decisions are pure (`plan`, `Confirmations`) and the side effects live in `Reconciler`,
so tests can check the rules without a node. The rules (Calico's IPAM GC):
* a pod whose netns is gone lost its DEL: its address is released by its pool's policy and its
  OVS port and veth are removed, but only when two observations at least `grace` seconds
  apart both found it so, and the netns is checked once more just before the release;
* half-built leftovers (an OVS port whose veth is gone while the pod lives) are removed: at
  start-up at once (no ADD of ours can be in flight), later under the two-observation rule;
* at start-up, a port the controller placed here whose pod and veth are there but whose OVS
  port is missing (OVSDB lost it) is re-plugged;
* a netns whose state we cannot tell (no path, or its directory is not visible here) is
  alive: we never release a live pod's address on a guess.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ecnet_api.v1 import ecnet_pb2 as pb
from ovs_driver import OvsError

from .. import errors as ce
from ..result import host_ifname
from .handler import bare_addresses, pod_ref, port_external_ids
from .seams import OvsClient, OvsInterface

log = logging.getLogger(__name__)
_PROC_NETNS = re.compile(r"/proc/(\d+)/(?:task/\d+/)?ns/net")


@dataclass(frozen=True)
class Attachment:
    """One pod interface as a view knows it; `host_if` is "" when OVSDB has no port."""

    container_id: str
    ifname: str
    netns: str
    port_id: str = ""
    pod_uid: str = ""
    host_if: str = ""
    mac: str = ""
    ips: str = ""
    pod: str = ""      # "namespace/name", as ADD writes ecnet/pod

    @property
    def key(self) -> tuple[str, str]:
        return (self.container_id, self.ifname)


@dataclass(frozen=True)
class NodeView:
    """One observation of the node."""

    ovs: tuple[Attachment, ...]
    controller: tuple[Attachment, ...] | None   # None: the controller could not say
    veths: frozenset[str]                       # host veth ends present
    gone_netns: frozenset[str]                  # netns paths known to be gone


@dataclass(frozen=True)
class Plan:
    unplug: tuple[Attachment, ...] = ()   # OVS port without its veth, pod alive
    replug: tuple[Attachment, ...] = ()   # controller port, pod and veth there, no OVS port
    stale: tuple[Attachment, ...] = ()    # netns gone: release, then remove


def plan(view: NodeView) -> Plan:
    ovs = {a.key: a for a in view.ovs}
    ctl = {a.key: a for a in view.controller or ()}
    unplug, replug, stale = [], [], []
    for a in ovs.values():
        if a.netns in view.gone_netns:
            stale.append(a)
        elif a.host_if not in view.veths:
            unplug.append(a)
    for key, a in ctl.items():
        if key in ovs:
            continue
        if a.netns in view.gone_netns:
            stale.append(a)
        elif a.netns and host_ifname(a.port_id) in view.veths:
            replug.append(a)
    return Plan(tuple(unplug), tuple(replug), tuple(stale))


@dataclass
class Confirmations:
    """The two-observation rule: `confirm` returns what was also seen, identical, at least
    `grace` seconds before; what dropped out or changed starts over."""

    grace: float
    _first: dict[tuple[str, tuple[str, str]], tuple[float, Attachment]] = field(
        default_factory=dict)

    def confirm(self, kind: str, seen: Iterable[Attachment], now: float) -> list[Attachment]:
        prev = {k: v for k, v in self._first.items() if k[0] == kind}
        for k in prev:
            del self._first[k]
        out = []
        for a in seen:
            k = (kind, a.key)
            first = prev.get(k)
            if first is None or first[1] != a:
                first = (now, a)
            self._first[k] = first
            if now - first[0] >= self.grace:
                out.append(a)
        return out


def netns_gone(path: str) -> bool:
    """True only when we can tell: a bind-mounted netns file whose directory we see but
    which is missing, or a /proc/PID path whose process is gone (hostPID)."""
    if not path:
        return False
    m = _PROC_NETNS.fullmatch(path)
    if m:
        return os.path.isdir("/proc/1") and not os.path.exists(f"/proc/{m.group(1)}")
    return os.path.isdir(os.path.dirname(path)) and not os.path.lexists(path)


def from_ovs(ifaces: Sequence[OvsInterface]) -> tuple[Attachment, ...]:
    out = []
    for i in ifaces:
        ids = i.external_ids
        cid = ids.get("ecnet/container", "")
        if cid:
            out.append(Attachment(cid, ids.get("ecnet/ifname", ""), ids.get("ecnet/netns", ""),
                                  ids.get("iface-id", ""), ids.get("ecnet/pod-uid", ""),
                                  i.name))
    return tuple(out)


def from_controller(ports: Sequence[pb.Port]) -> tuple[Attachment, ...]:
    return tuple(Attachment(p.container_id, p.ifname, p.netns, p.id, p.pod.uid, "", p.mac,
                            bare_addresses(ip.address for ip in p.ips),
                            pod_ref(p.pod.namespace, p.pod.name))
                 for p in ports if p.container_id and p.state == "active")



class NodePorts(Protocol):
    def list_node_ports(self, node: str) -> list[pb.Port] | None: ...


class Reclaim(Protocol):
    """The handler's release-then-remove of one attachment (CniHandler.reclaim)."""

    def __call__(self, container_id: str, ifname: str, pod_uid: str, netns: str) -> str: ...


class Reconciler:
    """Observes the node and applies `plan`: once at start-up, then every `interval`."""

    def __init__(self, *, node: str, bridge: str, ovs: OvsClient, controller: NodePorts,
                 host_veths: Callable[[], list[str]], reclaim: Reclaim,
                 network_of: Callable[[str, str], str],
                 grace: float, interval: float,
                 clock: Callable[[], float] = time.monotonic,
                 is_gone: Callable[[str], bool] = netns_gone) -> None:
        """`network_of(netns, ifname)`: the CNI network ADD recorded on the pod's interface
        ("" if none), which a re-plugged port needs for GC and the controller cannot say."""
        self.node, self.bridge, self.ovs, self.controller = node, bridge, ovs, controller
        self.host_veths, self.reclaim, self.network_of = host_veths, reclaim, network_of
        self.interval, self.clock, self.is_gone = interval, clock, is_gone
        self.confirmations = Confirmations(grace)
        self.released = 0

    def observe(self) -> NodeView:
        ovs = from_ovs(self.ovs.find_interfaces())
        try:
            ports = self.controller.list_node_ports(self.node)
        except ce.CniError as exc:
            log.warning("reconcile without the controller's view: %s", exc.msg)
            ports = None
        ctl = from_controller(ports) if ports is not None else None
        paths = {a.netns for a in (*ovs, *(ctl or ()))}
        return NodeView(ovs, ctl, frozenset(self.host_veths()),
                        frozenset(p for p in paths if self.is_gone(p)))

    def start_up(self) -> Plan:
        """The pass before the agent serves: no ADD of ours is in flight, so half-built
        leftovers go and missing OVS ports come back now; releases wait for confirmation."""
        t0 = time.perf_counter()
        p = plan(self.observe())
        for a in p.unplug:
            self._unplug(a)
        for a in p.replug:
            self._replug(a)
        self.confirmations.confirm("stale", p.stale, self.clock())
        log.info("reconcile at start-up took %.3fs: unplugged=%d replugged=%d "
                 "stale=%d (released once confirmed)", time.perf_counter() - t0,
                 len(p.unplug), len(p.replug), len(p.stale))
        return p

    def step(self) -> int:
        """One later pass; the number of attachments released."""
        now = self.clock()
        p = plan(self.observe())
        for a in self.confirmations.confirm("unplug", p.unplug, now):
            self._unplug(a)
        done = 0
        for a in self.confirmations.confirm("stale", p.stale, now):
            if not self.is_gone(a.netns):      # re-validated just before the release
                continue
            try:
                outcome = self.reclaim(a.container_id, a.ifname, a.pod_uid, a.netns)
            except ce.CniError as exc:
                log.warning("reconcile release container=%s failed (next pass retries): %s",
                            a.container_id[:12], exc.msg)
                continue
            done += 1
            log.info("reconcile released container=%s ifname=%s port=%s outcome=%s "
                     "(its netns %s is gone)", a.container_id[:12], a.ifname, a.port_id,
                     outcome, a.netns)
        self.released += done
        return done

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.step()
            except (OvsError, ce.CniError) as exc:
                log.warning("reconcile pass failed (next one retries): %s", exc)

    def _unplug(self, a: Attachment) -> None:
        log.warning("removing half-built OVS port %s (container=%s): its veth is gone",
                    a.host_if, a.container_id[:12])
        self.ovs.delete_port(self.bridge, a.host_if)

    def _replug(self, a: Attachment) -> None:
        name = host_ifname(a.port_id)
        log.warning("re-plugging %s (container=%s): OVSDB had lost its port", name,
                    a.container_id[:12])
        # what ADD wrote and GC needs: the network (from the pod's interface), the pod
        network = self.network_of(a.netns, a.ifname)
        if not network:
            log.warning("re-plugged %s without its network (no record on the pod's "
                        "interface): CNI GC will not see it", name)
        ids = port_external_ids(a.port_id, a.container_id, a.ifname, a.netns,
                                network=network, mac=a.mac, ips=a.ips, pod=a.pod,
                                pod_uid=a.pod_uid)
        self.ovs.add_port(self.bridge, name, ids, wait_ofport=None)
