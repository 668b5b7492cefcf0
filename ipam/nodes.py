"""The node registry: agents register their node (underlay address, datapath, gateway role)
and heartbeat by registering again; the topology agents poll is built from it."""
from __future__ import annotations

from dataclasses import replace

from . import addr, changes
from .config import Clock
from .domain import Node
from .errors import InvalidArgument
from .store.base import Store


class NodeRegistry:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def register_node(self, node: Node) -> Node:
        if not node.name:
            raise InvalidArgument("node name is required")
        try:
            if node.underlay_ip:
                addr.parse_address(node.underlay_ip)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        node = replace(node, last_seen=self.clock(), ready=True)
        with self.store.transaction() as uow:
            change = changes.node_change(uow.get_node(node.name), node)
            uow.upsert_node(node)
            if change is not None:
                uow.record_change(change)
        return node

    def list_nodes(self) -> list[Node]:
        with self.store.read() as uow:
            return uow.list_nodes()

    def delete_node(self, name: str) -> bool:
        with self.store.transaction() as uow:
            if not uow.delete_node(name):
                return False
            uow.record_change(changes.node_removed(name))
            return True

    def mark_stale(self, stale_after: float) -> list[Node]:
        """Nodes that just went stale (no heartbeat for `stale_after` seconds), each written
        to the change log once: agents drop their tunnels to them."""
        with self.store.transaction() as uow:
            stale = uow.mark_stale_nodes(self.clock() - stale_after)
            for node in stale:
                uow.record_change(changes.node_stale(node))
        return stale
