"""`IpamService`: every IPAM operation the controller exposes, each one atomic in the store.

A facade over the modules that do the work, each written once against
`ipam.store.base.UnitOfWork` (so the SQL and in-memory stores behave the same, one
conformance suite checks both):
* `config`: the configuration snapshot every transaction validates by its generation;
* `pools`: pool and subnet administration (the configuration changes);
* `allocation`: the pod path (allocate, release) and the port primitives;
* `bindings`: admin binds and reservations;
* `sweeps`: quarantine, retention and release-record maintenance;
* `nodes`: the node registry;
* `leaks`: releasing ports whose DEL never came (by id, by node, and the gone-node sweep).
Nothing here does network I/O; ONOS learns about changes from the outbox rows
(`ipam.onos.desired.OutboxWriter`) written in the same transaction as the change itself.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

from . import limits
from .allocation import Allocator
from .bindings import Bindings
from .config import Clock, ConfigCache
from .domain import (
    Allocation,
    AllocationRequest,
    Node,
    Pool,
    Port,
    ReleaseResult,
    Subnet,
    Usage,
)
from .leaks import GoneNodeSweep, LeakReclaimer, Reclaim
from .nodes import NodeRegistry
from .onos.desired import DesiredStateReader, OutboxWriter
from .pools import PoolAdmin
from .store.base import Store
from .sweeps import Sweeper
from .topology import TopologyLog


class IpamService:
    """Every IPAM operation the controller exposes, each one atomic in the store."""

    def __init__(self, store: Store, *, sync_enabled: bool = False,
                 clock: Clock = time.time) -> None:
        self.store = store
        self.sync_enabled = sync_enabled
        self.clock = clock
        self._config = ConfigCache()
        outbox = OutboxWriter(sync_enabled, clock)
        self._pools = PoolAdmin(store, outbox)
        self._alloc = Allocator(store, clock, self._config, outbox)
        self._bindings = Bindings(self._alloc)
        self._sweeper = Sweeper(self._alloc)
        self._nodes = NodeRegistry(store, clock)
        self._desired = DesiredStateReader(store)
        self._leaks = LeakReclaimer(self._alloc, clock)
        self.topology = TopologyLog(store)

    def check_store(self) -> None:
        """One primary-key read: raises (Busy when the database cannot be reached) unless
        the store answers. The controller's readiness rests on it."""
        with self.store.read() as uow:
            uow.config_generation()

    # ------------------------------------------------------------------ pools
    def create_pool(self, name: str, policy: str, *, quarantine_seconds: int | None = None,
                    retention_seconds: int = 0, mtu: int = 0, product_type: str = "",
                    group: str = "") -> Pool:
        limits.pool_settings(name, quarantine_seconds, retention_seconds, product_type, group)
        return self._pools.create_pool(
            name, policy, quarantine_seconds=quarantine_seconds,
            retention_seconds=retention_seconds, mtu=mtu, product_type=product_type,
            group=group)

    def get_pool(self, name: str) -> Pool:
        return self._pools.get_pool(name)

    def list_pools(self) -> list[tuple[Pool, Usage, int]]:
        return self._pools.list_pools()

    def delete_pool(self, name: str) -> None:
        self._pools.delete_pool(name)

    def set_namespace_default(self, namespace: str, pool_name: str) -> None:
        limits.text("namespace", namespace, limits.K8S_NAME_MAX)
        self._pools.set_namespace_default(namespace, pool_name)

    # ---------------------------------------------------------------- subnets
    def create_subnet(self, pool_name: str, cidr: str, gateway: str = "",
                      excludes: Iterable[str] = ()) -> Subnet:
        return self._pools.create_subnet(pool_name, cidr, gateway, excludes)

    def list_subnets(self, pool_name: str = "") -> list[tuple[Subnet, Usage, str]]:
        return self._pools.list_subnets(pool_name)

    def delete_subnet(self, cidr_or_id: str) -> None:
        self._pools.delete_subnet(cidr_or_id)

    # -------------------------------------------------------------- pod path
    def allocate(self, req: AllocationRequest) -> Allocation:
        """Give the pod interface its port; a retry of the same request gets the same port."""
        limits.allocation_request(req)
        return self._alloc.allocate(req)

    def release(self, container_id: str, ifname: str, pod_uid: str = "") -> ReleaseResult:
        """DEL: forgiving by contract; unknown requests are success."""
        return self._alloc.release(container_id, ifname, pod_uid)

    def get_port(self, container_id: str, ifname: str) -> tuple[Port, Pool, list[Subnet]]:
        return self._alloc.get_port(container_id, ifname)

    def port_node(self, container_id: str, ifname: str) -> str | None:
        return self._alloc.port_node(container_id, ifname)

    def list_ports(self, pool_name: str = "", node: str = "", state: str = "",
                   limit: int = 1000) -> list[tuple[Port, str]]:
        return self._alloc.list_ports(pool_name, node, state, limit)

    def list_ports_page(self, pool_name: str = "", node: str = "", state: str = "",
                        limit: int = 1000, page_token: str = ""
                        ) -> tuple[list[tuple[Port, str]], str]:
        """One page of ports and the next page's token ("" after the last)."""
        return self._alloc.list_ports_page(pool_name, node, state, limit, page_token)

    def active_endpoints(self) -> list[tuple[str, str, str, tuple[str, ...]]]:
        """(port id, MAC, node, addresses IPv4 first) of every active port, by port id."""
        return self._alloc.active_endpoints()

    # ----------------------------------------------------------- admin binds
    def bind(self, pool_name: str, owner: str, ip: str = "", hostname: str = "") -> Port:
        """Pin an address to an owner ahead of its first pod (fixed/sticky pools)."""
        limits.binding(owner, ip, hostname)
        return self._bindings.bind(pool_name, owner, ip, hostname)

    def unbind(self, pool_name: str, owner: str) -> bool:
        return self._bindings.unbind(pool_name, owner)

    def reserve(self, pool_name: str, addresses: Iterable[str], note: str = "",
                unreserve: bool = False) -> int:
        addresses = list(addresses)
        limits.reservation(addresses, note)
        return self._bindings.reserve(pool_name, addresses, note, unreserve)

    # ---------------------------------------------------------- maintenance
    def sweep(self, limit: int = 1000) -> tuple[int, int]:
        """Return quarantined addresses whose time is up, and free bound ports kept past
        their pool's retention. Cheap when there is nothing to do (indexed lookups)."""
        return self._sweeper.sweep(limit)

    # ------------------------------------------------------------------ sync
    def released_onos_objects(self, since: float | None = None) -> dict[str, list[str]]:
        """What the store released (since `since`, else all it keeps), by kind, minus
        anything live again: a resync deletes these from ONOS once more."""
        return self._desired.released(since)

    # ----------------------------------------------------------------- nodes
    def register_node(self, node: Node) -> Node:
        limits.node(node)
        return self._nodes.register_node(node)

    def list_nodes(self) -> list[Node]:
        return self._nodes.list_nodes()

    def delete_node(self, name: str) -> bool:
        return self._nodes.delete_node(name)

    def mark_stale_nodes(self, stale_after: float) -> list[Node]:
        """Nodes silent for `stale_after` seconds turn stale, each once (a log row)."""
        return self._nodes.mark_stale(stale_after)

    # ----------------------------------------------------------------- leaks
    def reclaim_port(self, port_id: str, dry_run: bool = False) -> Reclaim:
        """Release one port whose DEL never came, by its pool's policy."""
        return self._leaks.release_port(port_id, dry_run)

    def node_ports(self, node: str) -> list[Port]:
        """The active ports placed on `node` (what its agent reconciles against)."""
        return self._leaks.node_ports(node)

    def release_node_ports(self, node: str, dry_run: bool = False) -> list[Reclaim]:
        return self._leaks.release_node_ports(node, dry_run)

    def gone_node_sweep(self, *, grace: float, gone_after: float,
                        limit: int = 10_000) -> GoneNodeSweep:
        """A sweep (stateful: it remembers its first observations) that releases the ports
        of nodes deleted or silent for `gone_after` seconds, `grace` after first seeing them,
        at most `limit` a pass."""
        return GoneNodeSweep(self._leaks, grace=grace, gone_after=gone_after, limit=limit)

    def with_pools(self, ports: list[Port]) -> list[tuple[Port, Pool, list[Subnet]]]:
        """Each port with its pool and that pool's subnets, for answering with the ports."""
        return self._leaks.with_pools(ports)
