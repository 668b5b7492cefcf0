"""The allocator: policies applied to the store's primitives, one transaction per request.

Written once against `ipam.store.base.UnitOfWork`, so the SQL and in-memory stores behave the
same (one conformance suite). Nothing here does network I/O; ONOS learns about changes from the
outbox rows written in the same transaction as the change itself.

Pools, subnets and namespace defaults are read on every pod request but change only by admin
action, so the service keeps them in memory (`ConfigSnapshot`) and each transaction checks
with one primary-key read (`UnitOfWork.config_generation`) that the copy is still the store's
truth. Replicas sharing a database therefore never act on another replica's stale view:
nothing is cached that the transaction has not validated, and the database's constraints
stay the last word on addresses, requests, owners and MACs.
"""
from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import groupby
from typing import Any

from . import addr
from .domain import (
    AddressState,
    Allocation,
    AllocationRequest,
    Node,
    Policy,
    Pool,
    Port,
    PortAddress,
    PortState,
    ReleaseResult,
    Subnet,
    Usage,
)
from .errors import (
    AlreadyExists,
    Busy,
    InUse,
    InvalidArgument,
    NotFound,
    PolicyConflict,
    PoolExhausted,
)
from .policy import choose_pool, owner_of
from .store.base import PortFilter, Store, UnitOfWork
from .sync_payloads import network_payload, port_payload, subnet_payload

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# Released objects are replayed as deletes by a full resync for this long (a week covers an
# ONOS restored from last night's backup), then forgotten.
RELEASED_TTL_SECONDS = 7 * 24 * 3600

# Drawing a MAC already in use is a one-in-10^6 event even with a million ports; several in a
# row means something else is wrong.
MAC_ATTEMPTS = 8


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


def new_mac() -> str:
    """A random locally administered unicast MAC: 40 random bits make collisions rare and the
    store's unique constraint catches the rest."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = 0x0A
    return ":".join(f"{b:02x}" for b in raw)


class IpamService:
    """Every IPAM operation the controller exposes, each one atomic in the store."""

    def __init__(self, store: Store, *, sync_enabled: bool = False,
                 clock: Clock = time.time) -> None:
        self.store = store
        self.sync_enabled = sync_enabled
        self.clock = clock
        # Replaced whole, never mutated: threads may race to refresh it, and each use checks
        # its generation against the one read in its own transaction.
        self._snapshot: ConfigSnapshot | None = None

    def config(self, uow: UnitOfWork) -> ConfigSnapshot:
        """The configuration as this transaction sees it (and, on PostgreSQL, the shared
        configuration lock that keeps admin changes out until it commits)."""
        generation = uow.config_generation()
        snap = self._snapshot
        if snap is None or snap.generation != generation:
            snap = ConfigSnapshot.load(uow, generation)
            self._snapshot = snap
        return snap

    # ------------------------------------------------------------------ pools
    def create_pool(self, name: str, policy: str, *, quarantine_seconds: int | None = None,
                    retention_seconds: int = 0, mtu: int = 0, product_type: str = "",
                    group: str = "") -> Pool:
        name = name.strip()
        if not name or len(name) > 63 or any(c.isspace() for c in name):
            raise InvalidArgument(f"invalid pool name {name!r} (1-63 characters, no spaces)")
        try:
            pol = Policy(policy)
        except ValueError:
            raise InvalidArgument(
                f"unknown policy {policy!r}; expected fixed, sticky or dynamic") from None
        if mtu and not 576 <= mtu <= 9000:
            raise InvalidArgument(f"MTU {mtu} out of range 576..9000")
        if product_type:
            from .policy import policy_for_product_type
            if policy_for_product_type(product_type) is not pol:
                raise InvalidArgument(
                    f"product type {product_type!r} does not match policy {pol.value}")
        group = group.strip()
        if group and (pol is not Policy.STICKY or group.count("/") != 1
                      or not all(group.split("/"))):
            raise InvalidArgument(f"group {group!r}: only a sticky pool has a group, written "
                                  "namespace/statefulset-name")
        pool = Pool(id=str(uuid.uuid4()), name=name, policy=pol,
                    quarantine_seconds=(addr_default_quarantine(pol)
                                        if quarantine_seconds is None else quarantine_seconds),
                    retention_seconds=retention_seconds, mtu=mtu, product_type=product_type,
                    group=group, network_id=str(uuid.uuid4()),
                    segmentation_id=secrets.randbelow(1 << 23) + 1)
        with self.store.transaction() as uow:
            uow.begin_config_change()
            if uow.get_pool(name) is not None:
                raise AlreadyExists(f"pool {name!r} already exists")
            uow.insert_pool(pool)
        log.info("pool created pool=%s policy=%s", name, pol.value)
        return pool

    def get_pool(self, name: str) -> Pool:
        with self.store.read() as uow:
            return self._pool(uow, name)

    def list_pools(self) -> list[tuple[Pool, Usage, int]]:
        with self.store.read() as uow:
            out = []
            for pool in uow.list_pools():
                subnets = uow.list_subnets(pool.id)
                usage = sum((uow.subnet_usage(s) for s in subnets), Usage())
                out.append((pool, usage, len(subnets)))
            return out

    def delete_pool(self, name: str) -> None:
        with self.store.transaction() as uow:
            uow.begin_config_change()
            pool = self._pool(uow, name)
            if uow.list_subnets(pool.id):
                raise InUse(f"pool {name!r} still has subnets; delete them first")
            if uow.list_ports(PortFilter(pool_id=pool.id, limit=1)):
                raise InUse(f"pool {name!r} still has ports")
            uow.delete_pool(pool.id)
            self._outbox(uow, "network", pool.network_id, "delete", None)

    def set_namespace_default(self, namespace: str, pool_name: str) -> None:
        if not namespace:
            raise InvalidArgument("namespace is required")
        with self.store.transaction() as uow:
            uow.begin_config_change()
            pool_id = self._pool(uow, pool_name).id if pool_name else None
            uow.set_namespace_default(namespace, pool_id)

    # ---------------------------------------------------------------- subnets
    def create_subnet(self, pool_name: str, cidr: str, gateway: str = "",
                      excludes: Iterable[str] = ()) -> Subnet:
        try:
            net = addr.parse_network(cidr)
            gw = addr.parse_address(gateway) if gateway else addr.default_gateway(net)
            if gw not in net:
                raise ValueError(f"gateway {gw} is not inside {net}")
            ex = [addr.parse_exclusion(net, e) for e in excludes if e.strip()]
            free = addr.free_ranges(net, gw, ex)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if not free:
            raise InvalidArgument(f"{net} leaves no allocatable address")
        subnet = Subnet(id=str(uuid.uuid4()), pool_id="", cidr=str(net), version=net.version,
                        gateway=str(gw), excludes=tuple(e.strip() for e in excludes if e.strip()))
        with self.store.transaction() as uow:
            # Exclusive: two replicas cannot both pass the overlap check below.
            uow.begin_config_change()
            pool = self._pool(uow, pool_name)
            for other in uow.list_subnets():
                if addr.overlaps(net, addr.parse_network(other.cidr)):
                    raise AlreadyExists(f"{net} overlaps subnet {other.cidr}")
            subnet = replace(subnet, pool_id=pool.id)
            uow.insert_subnet(subnet, free)
            subnets = uow.list_subnets(pool.id)
            self._outbox(uow, "network", pool.network_id, "upsert",
                         network_payload(pool, subnets))
            self._outbox(uow, "subnet", subnet.id, "upsert", subnet_payload(pool, subnet, free))
        log.info("subnet created pool=%s cidr=%s free=%d", pool_name, net, addr.span_size(free))
        return subnet

    def list_subnets(self, pool_name: str = "") -> list[tuple[Subnet, Usage, str]]:
        with self.store.read() as uow:
            pools = {p.id: p for p in uow.list_pools()}
            pool_id = self._pool(uow, pool_name).id if pool_name else None
            return [(s, uow.subnet_usage(s), pools[s.pool_id].name)
                    for s in uow.list_subnets(pool_id)]

    def delete_subnet(self, cidr_or_id: str) -> None:
        with self.store.transaction() as uow:
            # Exclusive before the check: no allocation can land in the subnet between the
            # "no ports" check and the delete.
            uow.begin_config_change()
            subnet = self._find_subnet(uow, cidr_or_id)
            if uow.subnet_has_ports(subnet.id):
                raise InUse(f"subnet {subnet.cidr} still has ports; release them first")
            pool = uow.get_pool_by_id(subnet.pool_id)
            uow.delete_subnet(subnet.id)
            self._outbox(uow, "subnet", subnet.id, "delete", None)
            if pool is not None:
                remaining = uow.list_subnets(pool.id)
                # A pool without subnets has no network in ONOS (resync leaves it out too);
                # the next subnet creates it again.
                if remaining:
                    self._outbox(uow, "network", pool.network_id, "upsert",
                                 network_payload(pool, remaining))
                else:
                    self._outbox(uow, "network", pool.network_id, "delete", None)

    # -------------------------------------------------------------- pod path
    def allocate(self, req: AllocationRequest) -> Allocation:
        """Give the pod interface its port; a retry of the same request gets the same port."""
        if not req.container_id or not req.ifname:
            raise InvalidArgument("container id and ifname are required")
        if req.port_id and not _is_uuid4(req.port_id):
            raise InvalidArgument(f"proposed port id {req.port_id!r} is not a lower-case uuid4")
        now = self.clock()
        with self.store.transaction() as uow:
            cfg = self.config(uow)
            existing = uow.port_by_request(req.container_id, req.ifname)
            if existing is not None:
                if req.pod.uid and existing.pod_uid and req.pod.uid != existing.pod_uid:
                    raise PolicyConflict(
                        f"container {req.container_id[:12]}/{req.ifname} already has port "
                        f"{existing.id} for pod uid {existing.pod_uid}, not {req.pod.uid}")
                view = self._view_by_id(uow, cfg, existing.pool_id)
                return Allocation(existing, view.pool, view.subnets, True)
            pool = choose_pool(req, cfg.pools,
                               cfg.namespace_defaults.get(req.pod.namespace)
                               if req.pod.namespace else None,
                               self._pool_of_ip(cfg, req) if not req.pool else None)
            view = cfg.by_id[pool.id]
            if not view.subnets:
                raise PoolExhausted(f"pool {pool.name!r} has no subnets")
            owner = owner_of(req, pool)
            if owner is not None:
                bound = uow.port_by_owner(pool.id, owner)
                if bound is not None:
                    port = self._attach_bound(uow, view, bound, req, now)
                    return Allocation(port, pool, view.subnets, False)
            port = self._new_port(uow, view, req, owner, now, PortState.ACTIVE)
            return Allocation(port, pool, view.subnets, False)

    def release(self, container_id: str, ifname: str, pod_uid: str = "") -> ReleaseResult:
        """DEL: forgiving by contract; unknown requests are success."""
        now = self.clock()
        with self.store.transaction() as uow:
            cfg = self.config(uow)
            port = uow.port_by_request(container_id, ifname)
            if port is None:
                return ReleaseResult(False)
            if pod_uid and port.pod_uid and pod_uid != port.pod_uid:
                log.warning("stale release ignored container=%s port=%s", container_id, port.id)
                return ReleaseResult(True, port.id, "stale")
            pool = self._view_by_id(uow, cfg, port.pool_id).pool
            if pool.policy.binds and port.owner:
                idle = replace(port, state=PortState.IDLE, container_id=None, ifname=None,
                               pod_uid="", netns="", updated_at=now,
                               generation=port.generation + 1)
                if not uow.update_port(idle, port.generation):
                    raise PolicyConflict(f"port {port.id} changed concurrently; retry")
                # ONOS keeps the port (the owner comes back to it) but must stop binding it
                # to the departed pod and its host.
                self._outbox(uow, "port", idle.id, "upsert", port_payload(pool, idle))
                return ReleaseResult(True, port.id, "kept")
            outcome = self._drop_port(uow, pool, port, now)
            return ReleaseResult(True, port.id, outcome)

    def get_port(self, container_id: str, ifname: str) -> tuple[Port, Pool, list[Subnet]]:
        with self.store.read() as uow:
            port = uow.port_by_request(container_id, ifname)
            if port is None:
                raise NotFound(f"no port for container {container_id[:12]} ifname {ifname}")
            pool = uow.get_pool_by_id(port.pool_id)
            assert pool is not None
            return port, pool, uow.list_subnets(pool.id)

    def list_ports(self, pool_name: str = "", node: str = "", state: str = "",
                   limit: int = 1000) -> list[tuple[Port, str]]:
        with self.store.read() as uow:
            pools = {p.id: p for p in uow.list_pools()}
            pool_id = self._pool(uow, pool_name).id if pool_name else None
            try:
                st = PortState(state) if state else None
            except ValueError:
                raise InvalidArgument(f"unknown port state {state!r}") from None
            ports = uow.list_ports(PortFilter(pool_id=pool_id, node=node or None, state=st,
                                              limit=limit or 1000))
            return [(p, pools[p.pool_id].name) for p in ports]

    def active_endpoints(self) -> list[tuple[str, str, str, tuple[str, ...]]]:
        """(port id, MAC, node, addresses IPv4 first) of every active port, by port id."""
        with self.store.read() as uow:
            rows = uow.active_endpoints()
        out: list[tuple[str, str, str, tuple[str, ...]]] = []
        for (port_id, mac, node), group in groupby(rows, key=lambda r: r[:3]):
            ips = sorted((r[3] for r in group if r[3] is not None),
                         key=lambda a: (":" in a, a))
            out.append((port_id, mac, node, tuple(ips)))
        return out

    # ----------------------------------------------------------- admin binds
    def bind(self, pool_name: str, owner: str, ip: str = "", hostname: str = "") -> Port:
        """Pin an address to an owner ahead of its first pod (fixed/sticky pools)."""
        if not owner:
            raise InvalidArgument("owner is required")
        now = self.clock()
        with self.store.transaction() as uow:
            view = self._view(self.config(uow), pool_name)
            pool = view.pool
            if not pool.policy.binds:
                raise InvalidArgument(f"pool {pool_name!r} is dynamic; bindings need "
                                      "a fixed or sticky pool")
            existing = uow.port_by_owner(pool.id, owner)
            if existing is not None:
                if ip and ip not in {a.ip for a in existing.addresses}:
                    raise AlreadyExists(f"owner {owner!r} is already bound to "
                                        f"{', '.join(a.ip for a in existing.addresses)}")
                return existing
            req = AllocationRequest(container_id="", ifname="", requested_ip=ip,
                                    hostname=hostname)
            return self._new_port(uow, view, req, owner, now, PortState.IDLE)

    def unbind(self, pool_name: str, owner: str) -> bool:
        now = self.clock()
        with self.store.transaction() as uow:
            pool = self._view(self.config(uow), pool_name).pool
            port = uow.port_by_owner(pool.id, owner)
            if port is None:
                return False
            if port.state is PortState.ACTIVE:
                raise InUse(f"owner {owner!r} has a live pod (container "
                            f"{(port.container_id or '')[:12]}); delete the pod first")
            self._drop_port(uow, pool, port, now)
            return True

    def reserve(self, pool_name: str, addresses: Iterable[str], note: str = "",
                unreserve: bool = False) -> int:
        changed = 0
        with self.store.transaction() as uow:
            view = self._view(self.config(uow), pool_name)
            for text in addresses:
                subnet, offset, ip = self._locate(view, text)
                state = uow.address_state(subnet.id, offset)
                if unreserve:
                    if state is not None and state[0] is AddressState.RESERVED:
                        uow.delete_address(subnet.id, offset)
                        uow.give_back(subnet.id, offset)
                        changed += 1
                    continue
                if state is not None:
                    if state[0] is AddressState.RESERVED:
                        continue
                    raise InUse(f"{ip} is {state[0].value}; cannot reserve it")
                if not uow.take_specific(subnet.id, offset):
                    raise InvalidArgument(f"{ip} is not allocatable (gateway or excluded)")
                uow.insert_address(subnet.id, offset, ip, AddressState.RESERVED, None, 0,
                                   note=note)
                changed += 1
        return changed

    # ---------------------------------------------------------- maintenance
    def sweep(self, limit: int = 1000) -> tuple[int, int]:
        """Return quarantined addresses whose time is up, and free sticky members kept past
        their pool's retention. Cheap when there is nothing to do (indexed lookups)."""
        now = self.clock()
        freed = expired = 0
        with self.store.transaction() as uow:
            cfg = self.config(uow)
            for subnet_id, offset in uow.expired_quarantine(now, limit):
                uow.delete_address(subnet_id, offset)
                uow.give_back(subnet_id, offset)
                freed += 1
            for pool in cfg.pools:
                if pool.policy is Policy.STICKY and pool.retention_seconds > 0:
                    for port in uow.idle_ports_before(pool.id, now - pool.retention_seconds,
                                                      limit):
                        self._drop_port(uow, pool, port, now)
                        expired += 1
            uow.prune_released(now - RELEASED_TTL_SECONDS)
        return freed, expired

    # ------------------------------------------------------------------ sync
    def desired_onos_state(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                          list[dict[str, Any]]]:
        """Everything ONOS should hold, as outbox payloads, for a full resync (ONOS offers no
        read-back, so the store is replayed as create-or-update)."""
        with self.store.read() as uow:
            pools = uow.list_pools()
            by_id = {p.id: p for p in pools}
            networks, subnets = [], []
            for pool in pools:
                subs = uow.list_subnets(pool.id)
                if not subs:
                    continue
                networks.append(network_payload(pool, subs))
                for s in subs:
                    net = addr.parse_network(s.cidr)
                    gw = addr.parse_address(s.gateway) if s.gateway else None
                    ex = [addr.parse_exclusion(net, e) for e in s.excludes]
                    subnets.append(subnet_payload(pool, s, addr.free_ranges(net, gw, ex)))
            ports = [port_payload(by_id[p.pool_id], p)
                     for p in uow.list_ports(PortFilter(limit=10_000_000))]
        return networks, subnets, ports

    def onos_port_payloads(self, port_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The ONOS payloads of these ports as the store has them now (gone ones left out):
        a chunked resync re-reads each chunk just before sending it."""
        with self.store.read() as uow:
            pools = {p.id: p for p in uow.list_pools()}
            out = []
            for port_id in port_ids:
                port = uow.get_port(port_id)
                if port is not None and port.pool_id in pools:
                    out.append(port_payload(pools[port.pool_id], port))
        return out

    def released_onos_objects(self, since: float | None = None) -> dict[str, list[str]]:
        """What the store released (since `since`, else within RELEASED_TTL_SECONDS), by
        kind, minus anything live again: a resync deletes these from ONOS once more."""
        with self.store.read() as uow:
            with_subnets = {s.pool_id for s in uow.list_subnets()}
            live = {("network", p.network_id) for p in uow.list_pools()
                    if p.id in with_subnets}
            out: dict[str, list[str]] = {"network": [], "subnet": [], "port": []}
            for kind, object_id in uow.list_released(since):
                if (kind, object_id) not in live and kind in out:
                    out[kind].append(object_id)
        return out

    # ----------------------------------------------------------------- nodes
    def register_node(self, node: Node) -> Node:
        if not node.name:
            raise InvalidArgument("node name is required")
        try:
            if node.underlay_ip:
                addr.parse_address(node.underlay_ip)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        node = replace(node, last_seen=self.clock())
        with self.store.transaction() as uow:
            uow.upsert_node(node)
        return node

    def list_nodes(self) -> list[Node]:
        with self.store.read() as uow:
            return uow.list_nodes()

    def delete_node(self, name: str) -> bool:
        with self.store.transaction() as uow:
            return uow.delete_node(name)

    # --------------------------------------------------------------- helpers
    def _pool(self, uow: UnitOfWork, name: str) -> Pool:
        pool = uow.get_pool(name)
        if pool is None:
            raise NotFound(f"pool {name!r} does not exist")
        return pool

    @staticmethod
    def _view(cfg: ConfigSnapshot, name: str) -> PoolView:
        view = cfg.by_name.get(name)
        if view is None:
            raise NotFound(f"pool {name!r} does not exist")
        return view

    @staticmethod
    def _view_by_id(uow: UnitOfWork, cfg: ConfigSnapshot, pool_id: str) -> PoolView:
        """A port's pool. Always in the snapshot (ports keep their pool alive and deleting it
        takes the configuration lock); read directly only if a store broke that promise."""
        view = cfg.by_id.get(pool_id)
        if view is not None:
            return view
        pool = uow.get_pool_by_id(pool_id)
        if pool is None:
            raise NotFound(f"pool {pool_id} of a port does not exist")
        return PoolView.of(pool, uow.list_subnets(pool_id))

    def _find_subnet(self, uow: UnitOfWork, cidr_or_id: str) -> Subnet:
        """By CIDR (any spelling of it), full id, or an unambiguous id prefix of at least
        8 characters (what `ipctl subnet list` shows). Never a guess: an admin deletes by it."""
        text = cidr_or_id.strip()
        if not text:
            raise InvalidArgument("a subnet CIDR or id is required")
        subnets = uow.list_subnets()
        try:
            cidr = str(addr.parse_network(text)) if "/" in text else ""
        except ValueError:
            cidr = ""
        exact = [s for s in subnets if s.id == text or s.cidr in (text, cidr)]
        if exact:
            return exact[0]
        if len(text) >= 8:
            prefixed = [s for s in subnets if s.id.startswith(text)]
            if len(prefixed) == 1:
                return prefixed[0]
            if prefixed:
                raise InvalidArgument(f"subnet id prefix {text!r} matches {len(prefixed)} "
                                      "subnets; give more of it")
        raise NotFound(f"subnet {text!r} does not exist")

    @staticmethod
    def _pool_of_ip(cfg: ConfigSnapshot, req: AllocationRequest) -> str | None:
        """The pool whose subnet holds the pod's `ecnet.io/ip`, so the address alone
        selects its pool."""
        if not req.requested_ip:
            return None
        try:
            ip = addr.parse_address(req.requested_ip)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        for view in cfg.by_id.values():
            for _, members in view.families:
                if any(ip in net for _, net in members):
                    return view.pool.name
        raise NotFound(f"no pool has a subnet holding {req.requested_ip}")

    @staticmethod
    def _locate(view: PoolView, text: str) -> tuple[Subnet, int, str]:
        try:
            ip = addr.parse_address(text)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        for s, net in (m for _, members in view.families for m in members):
            if ip.version == net.version and ip in net:
                first, last = addr.usable_span(net)
                off = addr.offset_of(net, ip)
                if not first <= off <= last:
                    raise InvalidArgument(f"{ip} is not a usable address of {net}")
                return s, off, str(ip)
        raise InvalidArgument(f"{ip} is not in any subnet of this pool")

    def _new_port(self, uow: UnitOfWork, view: PoolView, req: AllocationRequest,
                  owner: str | None, now: float, state: PortState) -> Port:
        pool = view.pool
        if not view.subnets:
            raise PoolExhausted(f"pool {pool.name!r} has no subnets")
        port_id = req.port_id or str(uuid.uuid4())
        # The port row first: its unique keys (request, owner, MAC) settle a race before any
        # free range is touched, and on PostgreSQL the range lock (the pool's hot row) is then
        # held only for the last few statements. A MAC collision inserts nothing: draw again.
        for _ in range(MAC_ATTEMPTS):
            port = Port(id=port_id, pool_id=pool.id, mac=new_mac(), state=state,
                        generation=1, owner=owner,
                        container_id=req.container_id or None, ifname=req.ifname or None,
                        pod_uid=req.pod.uid, pod_namespace=req.pod.namespace,
                        pod_name=req.pod.name, node=req.node, netns=req.netns,
                        hostname=req.hostname, created_at=now, updated_at=now)
            if uow.insert_port(port):
                break
        else:
            raise Busy(f"{MAC_ATTEMPTS} random MACs in a row were taken")
        taken: list[PortAddress] = []
        requested = None
        if req.requested_ip:
            sub, off, ip = self._locate(view, req.requested_ip)
            if not uow.take_specific(sub.id, off):
                st = uow.address_state(sub.id, off)
                why = st[0].value if st else "not allocatable"
                raise PolicyConflict(f"requested address {ip} is {why}")
            taken.append(PortAddress(sub.id, ip, off))
            requested = sub.version
        for version, members in view.families:
            if version == requested:
                continue
            got = self._take_in_family(uow, members)
            if got is None:
                raise PoolExhausted(f"pool {pool.name!r} has no free IPv{version} address")
            taken.append(got)
        port = replace(port, addresses=tuple(taken))
        for a in taken:
            uow.insert_address(a.subnet_id, a.offset, a.ip, AddressState.ALLOCATED, port.id,
                               port.generation)
        self._outbox(uow, "port", port.id, "upsert", port_payload(pool, port))
        return port

    @staticmethod
    def _take_in_family(uow: UnitOfWork, members: tuple[tuple[Subnet, addr.Network], ...]
                        ) -> PortAddress | None:
        """The lowest free address of the first subnet (in order) of one family that has
        any; None when all are full."""
        for s, net in members:
            free = uow.take_free(s.id)
            if free is not None:
                return PortAddress(s.id, str(addr.address_at(net, free)), free)
        return None

    def _attach_bound(self, uow: UnitOfWork, view: PoolView, bound: Port,
                      req: AllocationRequest, now: float) -> Port:
        pool = view.pool
        if req.requested_ip and req.requested_ip not in {a.ip for a in bound.addresses}:
            raise PolicyConflict(
                f"owner {bound.owner!r} is bound to "
                f"{', '.join(a.ip for a in bound.addresses)}, not {req.requested_ip}")
        if bound.state is PortState.ACTIVE and (not bound.pod_uid
                                                or bound.pod_uid != req.pod.uid):
            # Two live pods on one IP is the bug every peer shipped; refuse it. Without a
            # pod UID on both sides nothing proves it is the same pod: refuse too.
            raise PolicyConflict(
                f"address {', '.join(a.ip for a in bound.addresses)} of owner "
                f"{bound.owner!r} is held by live pod uid {bound.pod_uid or '?'} "
                f"(container {(bound.container_id or '')[:12]}); delete that pod first")
        if bound.state is PortState.ACTIVE and bound.ifname != req.ifname:
            # The same pod asking again on another interface: one bound port serves one
            # interface. Moving it would leave the first interface's DEL finding nothing.
            # (The same interface from a new container is a re-created sandbox: re-attach.)
            raise PolicyConflict(
                f"owner {bound.owner!r} is attached to interface {bound.ifname} of container "
                f"{(bound.container_id or '')[:12]}; a second interface needs another pool")
        port = replace(bound, state=PortState.ACTIVE, container_id=req.container_id,
                       ifname=req.ifname, pod_uid=req.pod.uid,
                       pod_namespace=req.pod.namespace, pod_name=req.pod.name,
                       node=req.node, netns=req.netns,
                       hostname=bound.hostname or req.hostname,
                       generation=bound.generation + 1, updated_at=now)
        if not uow.update_port(port, bound.generation):
            raise PolicyConflict(f"port {bound.id} changed concurrently; retry")
        # The pool may have gained an address family since the binding was made (an IPv6
        # subnet added to grow it dual-stack): the owner keeps its address and gets one of
        # the new family too. None free there is no reason to refuse the pod its old IP.
        have = {addr.parse_address(a.ip).version for a in bound.addresses}
        added: list[PortAddress] = []
        for version, members in view.families:
            if version in have:
                continue
            got = self._take_in_family(uow, members)
            if got is None:
                log.warning("bound port gets no IPv%d address: none free pool=%s owner=%s",
                            version, pool.name, bound.owner)
            else:
                added.append(got)
        for a in added:
            uow.insert_address(a.subnet_id, a.offset, a.ip, AddressState.ALLOCATED, port.id,
                               port.generation)
        if added:
            port = replace(port, addresses=tuple(sorted(
                (*port.addresses, *added), key=lambda a: (":" in a.ip, a.ip))))
        self._outbox(uow, "port", port.id, "upsert", port_payload(pool, port))
        return port

    def _drop_port(self, uow: UnitOfWork, pool: Pool, port: Port, now: float) -> str:
        if pool.quarantine_seconds > 0:
            uow.quarantine_port_addresses(port.id, now + pool.quarantine_seconds)
            outcome = "quarantined"
        else:
            for subnet_id, offset in uow.delete_port_addresses(port.id):
                uow.give_back(subnet_id, offset)
            outcome = "released"
        # Conditional on the generation we read: a concurrent replica that re-attached the
        # port in between makes this fail and the whole transaction roll back.
        if not uow.delete_port(port.id, port.generation):
            raise PolicyConflict(f"port {port.id} changed concurrently; retry")
        self._outbox(uow, "port", port.id, "delete", None)
        return outcome

    def _outbox(self, uow: UnitOfWork, kind: str, object_id: str, op: str,
                payload: dict[str, Any] | None) -> None:
        if not self.sync_enabled:
            return
        now = self.clock()
        uow.add_outbox(kind, object_id, op, payload, now)
        if op == "delete":
            uow.add_released(kind, object_id, now)
        elif kind == "network":
            # A pool's network id outlives its subnets: the next subnet brings it back.
            uow.forget_released(kind, object_id)


def _is_uuid4(text: str) -> bool:
    try:
        u = uuid.UUID(text)
    except ValueError:
        return False
    return u.version == 4 and str(u) == text


def addr_default_quarantine(policy: Policy) -> int:
    """Only dynamic addresses go back into circulation on DEL, so only they rest."""
    from .domain import DEFAULT_QUARANTINE_SECONDS
    return DEFAULT_QUARANTINE_SECONDS if policy is Policy.DYNAMIC else 0
