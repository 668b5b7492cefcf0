"""Reclaiming what a missing DEL left allocated: one port by id, every port of a node, and
the sweep that finds the ports of nodes that are gone.

A port is released exactly as a DEL would release it (`Allocator.release`): a dynamic port is
freed (after its quarantine), a bound (fixed/sticky) one keeps its owner's binding but is
unbound from the dead pod and its host. The sweep never acts on one look: a port is released
only when two observations at least `grace` seconds apart both found its node gone and the
port unchanged (same generation), and the node is checked once more just before the release
(Calico's IPAM GC rules). A node that heartbeats again in between keeps all its ports.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from .allocation import Allocator
from .config import Clock
from .domain import Node, Pool, Port, PortState, ReleaseResult, Subnet
from .errors import NotFound
from .store.base import PortFilter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reclaim:
    """One port a repair released (or, in a dry run, would release)."""

    port: Port
    outcome: str   # released | quarantined | kept | unknown | would-release


class TwoObservations:
    """The two-observation rule, without side effects: `observe` takes the candidates of this
    look (key -> a token that changes when the object does) and returns the keys also seen,
    with the same token, at least `grace` seconds ago. Keys that stopped being candidates, or
    whose token changed, start over."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._first: dict[str, tuple[float, object]] = {}

    def observe(self, candidates: dict[str, object], now: float) -> list[str]:
        kept: dict[str, tuple[float, object]] = {}
        ready: list[str] = []
        for key, token in candidates.items():
            seen = self._first.get(key)
            if seen is None or seen[1] != token:
                seen = (now, token)
            kept[key] = seen
            if now - seen[0] >= self.grace:
                ready.append(key)
        self._first = kept
        return ready

    def forget(self, key: str) -> None:
        self._first.pop(key, None)


class LeakReclaimer:
    """Releases ports whose DEL never came, by their pool's policy."""

    def __init__(self, allocator: Allocator, clock: Clock) -> None:
        self.allocator = allocator
        self.store, self.clock = allocator.store, clock

    def get_port_by_id(self, port_id: str) -> Port:
        with self.store.read() as uow:
            port = uow.get_port(port_id)
        if port is None:
            raise NotFound(f"port {port_id!r} does not exist")
        return port

    def release_port(self, port_id: str, dry_run: bool = False) -> Reclaim:
        """The admin's repair for one port. An idle (bound, no pod) port has nothing to
        release: it is reported `kept` and left alone."""
        port = self.get_port_by_id(port_id)
        return self.reclaim(port, dry_run)

    def node_ports(self, node: str, limit: int = 100_000) -> list[Port]:
        """The active ports placed on `node`."""
        with self.store.read() as uow:
            return uow.list_ports(PortFilter(node=node, state=PortState.ACTIVE, limit=limit))

    def with_pools(self, ports: list[Port]) -> list[tuple[Port, Pool, list[Subnet]]]:
        """Each port with its pool and that pool's subnets, read once per pool."""
        with self.store.read() as uow:
            subnets: dict[str, list[Subnet]] = defaultdict(list)
            for sub in uow.list_subnets():
                subnets[sub.pool_id].append(sub)
            pools = {p.id: (p, subnets[p.id]) for p in uow.list_pools()}
        return [(p, *pools[p.pool_id]) for p in ports if p.pool_id in pools]

    def release_node_ports(self, node: str, dry_run: bool = False) -> list[Reclaim]:
        return [self.reclaim(p, dry_run) for p in self.node_ports(node)]

    def reclaim(self, port: Port, dry_run: bool) -> Reclaim:
        if port.state is not PortState.ACTIVE or not port.container_id or not port.ifname:
            return Reclaim(port, "kept")
        if dry_run:
            return Reclaim(port, "would-release")
        # Keyed by the pod's request and uid, like its DEL: a port re-attached to another
        # pod in between is left alone ("stale").
        res: ReleaseResult = self.allocator.release(port.container_id, port.ifname,
                                                    port.pod_uid)
        log.info("reclaimed port=%s node=%s container=%s outcome=%s", port.id, port.node,
                 port.container_id[:12], res.outcome)
        return Reclaim(port, res.outcome)


def gone_nodes(nodes: list[Node], port_nodes: set[str], now: float,
               gone_after: float) -> set[str]:
    """The nodes among `port_nodes` that are deleted from the registry, or whose last
    heartbeat is older than `gone_after` seconds (0: only deleted nodes count)."""
    seen = {n.name: n.last_seen for n in nodes}
    return {name for name in port_nodes
            if name and (name not in seen
                         or (gone_after > 0 and now - seen[name] > gone_after))}


class GoneNodeSweep:
    """Finds the active ports of nodes that are gone and releases them by policy, under the
    two-observation rule. State is per controller replica; two replicas racing on one port
    is harmless (a release is forgiving and conditional on the port's generation)."""

    def __init__(self, reclaimer: LeakReclaimer, *, grace: float, gone_after: float,
                 limit: int = 10_000) -> None:
        self.reclaimer = reclaimer
        self.gone_after = gone_after
        self.limit = limit
        self.observations = TwoObservations(grace)

    def _gone_ports(self, now: float) -> dict[str, Port]:
        """The active ports of gone nodes, at most `limit` (the rest next sweep). The gone
        nodes come first, from the node index and the registry, and only their ports are
        read: reading the first `limit` active ports and looking for gone nodes among them
        cost O(limit) ports every sweep, and never saw a gone node whose ports all came
        after the first `limit` (at 100k ports, most of them: leaked for good)."""
        r = self.reclaimer
        out: dict[str, Port] = {}
        with r.store.read() as uow:
            gone = gone_nodes(uow.list_nodes(), uow.port_nodes(), now, self.gone_after)
            for node in sorted(gone):
                left = self.limit - len(out)
                if left <= 0:
                    break
                for p in uow.list_ports(PortFilter(state=PortState.ACTIVE, node=node,
                                                   limit=left)):
                    out[p.id] = p
        return out

    def sweep(self) -> list[Reclaim]:
        now = self.reclaimer.clock()
        candidates = self._gone_ports(now)
        ready = self.observations.observe(
            {pid: p.generation for pid, p in candidates.items()}, now)
        if not ready:
            return []
        # Re-validate just before releasing: the node may have come back since.
        still = self._gone_ports(self.reclaimer.clock())
        out: list[Reclaim] = []
        for pid in ready:
            port = still.get(pid)
            if port is None or port.generation != candidates[pid].generation:
                continue
            out.append(self.reclaimer.reclaim(port, dry_run=False))
            self.observations.forget(pid)
        return out
