"""The agent's view of the cluster as WatchTopology builds it: nodes, ports and subnets by
key, changed one TopologyChange at a time. Pure: no gRPC call, no OVS.

The stream's contract (proto/ecnet_api/v1/ecnet.proto): an event with ``reset`` starts a
snapshot (forget the view), the snapshot's chunks carry ``complete=false`` until its last
one, and a delta is one ``complete`` event. :class:`WatchedTopology` keeps a snapshot in
the making apart from the live view, so the datapath keeps programming what it had until
the new view is whole, and a stream that breaks mid-snapshot leaves the live view intact
(to resume from its revision).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ecnet_api.v1 import ecnet_pb2 as pb

from .model import (
    NodeView,
    PortView,
    SubnetView,
    Topology,
    node_view,
    port_view,
    topology_from_pb,
)


@dataclass
class TopologyView:
    """Keyed like the changes that edit it: a port by id, a node by name, a subnet by id
    (a removal names only the key). ``ports_by_node`` answers "which ports does a node
    change touch" without a scan of every port."""

    revision: int = 0
    nodes: dict[str, NodeView] = field(default_factory=dict)
    ports: dict[str, PortView] = field(default_factory=dict)
    subnets: dict[str, SubnetView] = field(default_factory=dict)
    ports_by_node: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def from_topology(cls, resp: pb.TopologyResponse) -> TopologyView:
        """A view from a GetTopology answer (the poll fallback). Its subnets carry no id
        the poll would ever remove them by, so the CIDR stands in."""
        t = topology_from_pb(resp)
        v = cls(revision=t.revision, nodes={n.name: n for n in t.nodes},
                subnets={s.cidr: s for s in t.subnets})
        for p in t.ports:
            v._put_port(p)
        return v

    def apply(self, changes: Iterable[pb.TopologyChange]) -> set[str]:
        """Apply changes in order; the ids of the ports whose entry changed."""
        dirty: set[str] = set()
        for c in changes:
            kind = c.WhichOneof("change")
            if kind == "port":
                p = port_view(c.port)
                if self.ports.get(p.port_id) != p:
                    self._put_port(p)
                    dirty.add(p.port_id)
            elif kind == "port_removed":
                if self._drop_port(c.port_removed):
                    dirty.add(c.port_removed)
            elif kind == "node":
                self.nodes[c.node.name] = node_view(c.node)
            elif kind == "node_removed":
                self.nodes.pop(c.node_removed, None)
            elif kind == "subnet":
                self.subnets[c.subnet.id] = SubnetView(c.subnet.cidr, c.subnet.gateway)
            elif kind == "subnet_removed":
                self.subnets.pop(c.subnet_removed, None)
            # an unset oneof (a change kind newer than this agent): nothing we can apply
        return dirty

    def _put_port(self, p: PortView) -> None:
        self._drop_port(p.port_id)
        self.ports[p.port_id] = p
        self.ports_by_node.setdefault(p.node, set()).add(p.port_id)

    def _drop_port(self, port_id: str) -> bool:
        old = self.ports.pop(port_id, None)
        if old is None:
            return False
        on_node = self.ports_by_node.get(old.node)
        if on_node is not None:
            on_node.discard(port_id)
            if not on_node:
                del self.ports_by_node[old.node]
        return True

    def frame(self) -> Topology:
        """Nodes and subnets only (no ports): what tunnels, peers and the gateway are
        decided from, at O(nodes + subnets) per call."""
        return Topology(
            revision=self.revision,
            nodes=tuple(sorted(self.nodes.values(), key=lambda n: n.name)),
            subnets=tuple(sorted(set(self.subnets.values()), key=lambda s: s.cidr)))

    def topology(self) -> Topology:
        """The whole view as the pure model's input (tests, the full recompute)."""
        f = self.frame()
        return Topology(f.revision, f.nodes,
                        tuple(sorted(self.ports.values(), key=lambda p: p.port_id)),
                        f.subnets)


@dataclass(frozen=True)
class Applied:
    """What a complete event did to the live view: a new view (``reset``: re-plan every
    flow) or the ports whose entries changed (node and subnet changes show up in the
    view's frame, which the datapath compares itself)."""

    revision: int
    reset: bool
    ports: frozenset[str] = frozenset()


class WatchedTopology:
    """The live view plus a snapshot in the making; see the module docstring."""

    def __init__(self) -> None:
        self.live = TopologyView()
        self._staged: TopologyView | None = None
        self._dirty: set[str] = set()
        self._reset_pending = False
        self.whole = False      # a complete view arrived once: there is something to program

    @property
    def revision(self) -> int:
        """The last revision the live view is whole at: where a watch resumes."""
        return self.live.revision

    def on_event(self, ev: pb.WatchTopologyEvent) -> Applied | None:
        """Apply one event; what to program once the view is whole, else None."""
        if ev.reset:
            self._staged = TopologyView()
        if self._staged is not None:
            self._staged.apply(ev.changes)
        else:
            self._dirty |= self.live.apply(ev.changes)
        if not ev.complete:
            return None
        if self._staged is not None:
            self.live, self._staged = self._staged, None
            self._dirty.clear()
            self._reset_pending = True
        self.live.revision = ev.revision
        self.whole = True
        out = Applied(ev.revision, self._reset_pending, frozenset(self._dirty))
        self._dirty.clear()
        self._reset_pending = False
        return out

    def on_disconnect(self) -> None:
        """The stream broke: a half-received snapshot is worthless (the next stream
        resumes from the live view's revision and starts over if it must)."""
        self._staged = None

    def replace(self, view: TopologyView) -> None:
        """The poll fallback's whole answer becomes the live view."""
        self.live, self._staged = view, None
        self._dirty.clear()
        self.whole = True
