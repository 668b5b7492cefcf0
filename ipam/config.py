"""The configuration snapshot: pools, subnets and namespace defaults, kept in memory and
validated against the store's configuration generation in every transaction.

Pools, subnets and namespace defaults are read on every pod request but change only by admin
action, so the service keeps them in memory (`ConfigSnapshot`) and each transaction checks
with one primary-key read (`UnitOfWork.config_generation`) that the copy is still the store's
truth. Replicas sharing a database therefore never act on another replica's stale view:
nothing is cached that the transaction has not validated, and the database's constraints
stay the last word on addresses, requests, owners and MACs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from . import addr
from .domain import AllocationRequest, Pool, Subnet
from .errors import InvalidArgument, NotFound
from .store.base import UnitOfWork

Clock = Callable[[], float]


@dataclass(frozen=True)
class PoolView:
    """A pool with its subnets, ordered and parsed once per configuration generation."""

    pool: Pool
    subnets: tuple[Subnet, ...]
    # Address families in order, each with its subnets (and parsed networks) in order.
    families: tuple[tuple[int, tuple[tuple[Subnet, addr.Network], ...]], ...]

    @classmethod
    def of(cls, pool: Pool, subnets: Iterable[Subnet]) -> PoolView:
        # Numeric order (family, network address), whatever order the store lists them in.
        members = sorted(((s, addr.parse_network(s.cidr)) for s in subnets),
                         key=lambda sn: (sn[1].version, int(sn[1].network_address)))
        families = tuple((v, tuple(m for m in members if m[1].version == v))
                         for v in sorted({m[1].version for m in members}))
        return cls(pool, tuple(m[0] for m in members), families)

    def locate(self, text: str) -> tuple[Subnet, int, str]:
        """The subnet, offset and canonical text of an address of this pool (usable ones
        only: the network and broadcast addresses are not)."""
        try:
            ip = addr.parse_address(text)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        for s, net in (m for _, members in self.families for m in members):
            if ip.version == net.version and ip in net:
                first, last = addr.usable_span(net)
                off = addr.offset_of(net, ip)
                if not first <= off <= last:
                    raise InvalidArgument(f"{ip} is not a usable address of {net}")
                return s, off, str(ip)
        raise InvalidArgument(f"{ip} is not in any subnet of this pool")


@dataclass(frozen=True)
class ConfigSnapshot:
    """Pools, subnets and namespace defaults as of one configuration generation."""

    generation: int
    pools: tuple[Pool, ...]
    by_id: Mapping[str, PoolView]
    by_name: Mapping[str, PoolView]
    namespace_defaults: Mapping[str, str]

    @classmethod
    def load(cls, uow: UnitOfWork, generation: int) -> ConfigSnapshot:
        pools = uow.list_pools()
        by_pool: dict[str, list[Subnet]] = {p.id: [] for p in pools}
        for s in uow.list_subnets():
            by_pool.setdefault(s.pool_id, []).append(s)
        views = {p.id: PoolView.of(p, by_pool[p.id]) for p in pools}
        return cls(generation=generation, pools=tuple(pools), by_id=views,
                   by_name={v.pool.name: v for v in views.values()},
                   namespace_defaults=uow.namespace_defaults())

    def view(self, name: str) -> PoolView:
        view = self.by_name.get(name)
        if view is None:
            raise NotFound(f"pool {name!r} does not exist")
        return view

    def view_by_id(self, uow: UnitOfWork, pool_id: str) -> PoolView:
        """A port's pool. Always in the snapshot (ports keep their pool alive and deleting it
        takes the configuration lock); read directly only if a store broke that promise."""
        view = self.by_id.get(pool_id)
        if view is not None:
            return view
        pool = uow.get_pool_by_id(pool_id)
        if pool is None:
            raise NotFound(f"pool {pool_id} of a port does not exist")
        return PoolView.of(pool, uow.list_subnets(pool_id))

    def pool_of_ip(self, req: AllocationRequest) -> str | None:
        """The pool whose subnet holds the pod's `ecnet.io/ip`, so the address alone
        selects its pool."""
        if not req.requested_ip:
            return None
        try:
            ip = addr.parse_address(req.requested_ip)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        for view in self.by_id.values():
            for _, members in view.families:
                if any(ip in net for _, net in members):
                    return view.pool.name
        raise NotFound(f"no pool has a subnet holding {req.requested_ip}")


class ConfigCache:
    """The latest snapshot this process loaded. Replaced whole, never mutated: threads may
    race to refresh it, and each use checks its generation against the one read in its own
    transaction."""

    def __init__(self) -> None:
        self._snapshot: ConfigSnapshot | None = None

    def current(self, uow: UnitOfWork) -> ConfigSnapshot:
        """The configuration as this transaction sees it (and, on PostgreSQL, the shared
        configuration lock that keeps admin changes out until it commits)."""
        generation = uow.config_generation()
        snap = self._snapshot
        if snap is None or snap.generation != generation:
            snap = ConfigSnapshot.load(uow, generation)
            self._snapshot = snap
        return snap


def pool_named(uow: UnitOfWork, name: str) -> Pool:
    """A pool read in this transaction (admin paths, which take the configuration lock)."""
    pool = uow.get_pool(name)
    if pool is None:
        raise NotFound(f"pool {name!r} does not exist")
    return pool
