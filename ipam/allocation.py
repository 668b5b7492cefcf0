"""The pod path: a pod interface gets its port (allocate) and gives it back (release), each in
one transaction; and the port-level primitives the admin binds and the sweeps reuse.

Idempotent by contract: a retried ADD (same container id and ifname) gets the same port, and a
DEL of an unknown request is success. Bound policies key a port by its owner, so a pod that
comes back (new container, new pod UID) re-attaches to its address; two live pods on one
bound address are refused, never allowed.
"""
from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import replace
from itertools import groupby

from . import addr, changes, deadline, limits, paging
from .batching import GroupCommit, Pending
from .config import Clock, ConfigCache, ConfigSnapshot, PoolView, pool_named
from .domain import (
    AddressState,
    Allocation,
    AllocationRequest,
    Pool,
    Port,
    PortAddress,
    PortState,
    ReleaseResult,
    Subnet,
)
from .errors import (
    AlreadyExists,
    Busy,
    InvalidArgument,
    NotFound,
    PolicyConflict,
    PoolExhausted,
)
from .onos.desired import OutboxWriter
from .placement import check_owner_scope, choose_pool, owner_of
from .policy import rules_for
from .store.base import PortFilter, Store, UnitOfWork

log = logging.getLogger(__name__)

# Drawing a MAC already in use is a one-in-10^6 event even with a million ports; several in a
# row means something else is wrong.
MAC_ATTEMPTS = 8


def new_mac() -> str:
    """A random locally administered unicast MAC: 40 random bits make collisions rare and the
    store's unique constraint catches the rest."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = 0x0A
    return ":".join(f"{b:02x}" for b in raw)


class Allocator:
    def __init__(self, store: Store, clock: Clock, config: ConfigCache,
                 outbox: OutboxWriter) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.outbox = outbox
        self._group: GroupCommit[AllocationRequest, Allocation] = GroupCommit(
            self._allocate_alone, self._allocate_together)

    def allocate(self, req: AllocationRequest) -> Allocation:
        """Give the pod interface its port; a retry of the same request gets the same port.
        Concurrent calls share a transaction (ipam.batching), each answered on its own."""
        if not req.container_id or not req.ifname:
            raise InvalidArgument("container id and ifname are required")
        if req.port_id and not _is_uuid4(req.port_id):
            raise InvalidArgument(f"proposed port id {req.port_id!r} is not a lower-case uuid4")
        return self._group.submit(req)

    def _allocate_alone(self, req: AllocationRequest) -> Allocation:
        now = self.clock()
        with self.store.transaction() as uow:
            return self._allocate_in(uow, self.config.current(uow), req, now)

    def _allocate_together(self, reqs: Sequence[Pending[AllocationRequest]]
                           ) -> list[Allocation | Exception]:
        """One transaction for several requests, a savepoint each: a request that fails is
        undone alone and answered with its error. A caller whose deadline passes before the
        commit rolls the whole batch back (raised: each then runs alone, ipam.batching)."""
        now = self.clock()
        out: list[Allocation | Exception] = []
        # The commit is for every caller: each deadline is checked here, not the leader's.
        with deadline.until(None), self.store.transaction() as uow:
            cfg = self.config.current(uow)
            for job in reqs:
                try:
                    with uow.savepoint():
                        deadline.check_before_commit(job.due)
                        got = self._allocate_in(uow, cfg, job.item, now)
                    # Answered only once the savepoint is released: a write sent with the
                    # release (ipam.store.sql.uow) may still fail this request.
                    out.append(got)
                except Exception as exc:  # noqa: BLE001 - this request's own answer
                    out.append(exc)
            for job, answer in zip(reqs, out):
                if not isinstance(answer, Exception):
                    deadline.check_before_commit(job.due)
        return out

    def _allocate_in(self, uow: UnitOfWork, cfg: ConfigSnapshot, req: AllocationRequest,
                     now: float) -> Allocation:
        existing = uow.port_by_request(req.container_id, req.ifname)
        if existing is not None:
            if req.pod.uid and existing.pod_uid and req.pod.uid != existing.pod_uid:
                raise PolicyConflict(
                    f"container {req.container_id[:12]}/{req.ifname} already has port "
                    f"{existing.id} for pod uid {existing.pod_uid}, not {req.pod.uid}")
            view = cfg.view_by_id(uow, existing.pool_id)
            return Allocation(existing, view.pool, view.subnets, True)
        check_owner_scope(req)
        pool = choose_pool(req, cfg.pools,
                           cfg.namespace_defaults.get(req.pod.namespace)
                           if req.pod.namespace else None,
                           cfg.pool_of_ip(req) if not req.pool else None)
        view = cfg.by_id[pool.id]
        if not view.subnets:
            raise PoolExhausted(f"pool {pool.name!r} has no subnets")
        owner = owner_of(req, pool)
        if owner is not None:
            bound = uow.port_by_owner(pool.id, owner)
            if bound is not None:
                check_owner_scope(req, bound)
                port = self._attach_bound(uow, view, bound, req, now)
                return Allocation(port, pool, view.subnets, False)
        port = self.new_port(uow, view, req, owner, now, PortState.ACTIVE)
        return Allocation(port, pool, view.subnets, False)

    def release(self, container_id: str, ifname: str, pod_uid: str = "") -> ReleaseResult:
        """DEL: forgiving by contract; unknown requests are success."""
        now = self.clock()
        with self.store.transaction() as uow:
            cfg = self.config.current(uow)
            port = uow.port_by_request(container_id, ifname)
            if port is None:
                return ReleaseResult(False)
            if pod_uid and port.pod_uid and pod_uid != port.pod_uid:
                log.warning("stale release ignored container=%s port=%s", container_id[:64],
                            port.id)
                return ReleaseResult(True, port.id, "stale")
            pool = cfg.view_by_id(uow, port.pool_id).pool
            if rules_for(pool.policy).binds and port.owner:
                idle = replace(port, state=PortState.IDLE, container_id=None, ifname=None,
                               pod_uid="", netns="", updated_at=now,
                               generation=port.generation + 1)
                if not uow.update_port(idle, port.generation):
                    raise PolicyConflict(f"port {port.id} changed concurrently; retry")
                # ONOS keeps the port (the owner comes back to it) but must stop binding it
                # to the departed pod and its host.
                self.outbox.port(uow, pool, idle)
                uow.record_change(changes.port_change(idle))
                return ReleaseResult(True, port.id, "kept")
            outcome = self.drop_port(uow, pool, port, now)
            return ReleaseResult(True, port.id, outcome)

    def port_node(self, container_id: str, ifname: str) -> str | None:
        """The node a request's port is on (None: no port), in one read: authorization
        asks this on every pod-path call of a node."""
        with self.store.read() as uow:
            port = uow.port_by_request(container_id, ifname)
            return None if port is None else port.node

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
        return self.list_ports_page(pool_name, node, state, limit)[0]

    def list_ports_page(self, pool_name: str = "", node: str = "", state: str = "",
                        limit: int = 1000, page_token: str = ""
                        ) -> tuple[list[tuple[Port, str]], str]:
        """One page of ports in creation order, and the token of the next ("" at the end):
        a listing of any size in replies of bounded size."""
        after = paging.decode(page_token)
        limit = min(limit or 1000, paging.MAX_PAGE)
        with self.store.read() as uow:
            pools = {p.id: p for p in uow.list_pools()}
            pool_id = pool_named(uow, pool_name).id if pool_name else None
            try:
                st = PortState(state) if state else None
            except ValueError:
                raise InvalidArgument(f"unknown port state {state!r}") from None
            ports = uow.list_ports(PortFilter(pool_id=pool_id, node=node or None, state=st,
                                              limit=limit + 1, after=after))
        more = len(ports) > limit
        ports = ports[:limit]
        token = paging.encode(ports[-1].created_at, ports[-1].id) if more else ""
        return [(p, pools[p.pool_id].name) for p in ports], token

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

    # ------------------------------------------------------- port primitives
    def new_port(self, uow: UnitOfWork, view: PoolView, req: AllocationRequest,
                 owner: str | None, now: float, state: PortState) -> Port:
        pool = view.pool
        if not view.subnets:
            raise PoolExhausted(f"pool {pool.name!r} has no subnets")
        if owner is not None:
            # Derived from namespace/name when not given, so only checkable here.
            limits.text("owner", owner, limits.K8S_NAME_MAX)
        port_id = req.port_id or str(uuid.uuid4())
        if req.port_id and uow.get_port(req.port_id) is not None:
            # Checked first, not left to the primary key: a key violation reads as a lost
            # race (Busy, retried), and its DETAIL text must never reach the caller.
            raise AlreadyExists(f"port id {req.port_id} is already in use")
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
            sub, off, ip = view.locate(req.requested_ip)
            if not uow.take_specific(sub.id, off):
                st = uow.address_state(sub.id, off)
                why = st[0].value if st else "not allocatable"
                raise PolicyConflict(f"requested address {ip} is {why}")
            taken.append(PortAddress(sub.id, ip, off))
            requested = sub.version
        for version, members in view.families:
            if version == requested:
                continue
            got = _take_in_family(uow, members)
            if got is None:
                raise PoolExhausted(f"pool {pool.name!r} has no free IPv{version} address")
            taken.append(got)
        port = replace(port, addresses=tuple(taken))
        for a in taken:
            uow.insert_address(a.subnet_id, a.offset, a.ip, AddressState.ALLOCATED, port.id,
                               port.generation)
        self.outbox.port(uow, pool, port)
        if state is PortState.ACTIVE:   # a binding made ahead of its pod is no endpoint yet
            uow.record_change(changes.port_change(port))
        return port

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
            got = _take_in_family(uow, members)
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
        self.outbox.port(uow, pool, port)
        uow.record_change(changes.port_change(port))
        return port

    def drop_port(self, uow: UnitOfWork, pool: Pool, port: Port, now: float) -> str:
        """Delete a port; its addresses rest for the pool's quarantine, or go back at once."""
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
        self.outbox.deleted(uow, "port", port.id)
        if port.state is PortState.ACTIVE:   # an idle port left the topology already
            uow.record_change(changes.port_removed(port))
        return outcome


def _take_in_family(uow: UnitOfWork, members: tuple[tuple[Subnet, addr.Network], ...]
                    ) -> PortAddress | None:
    """The lowest free address of the first subnet (in order) of one family that has any;
    None when all are full."""
    for s, net in members:
        free = uow.take_free(s.id)
        if free is not None:
            return PortAddress(s.id, str(addr.address_at(net, free)), free)
    return None


def _is_uuid4(text: str) -> bool:
    try:
        u = uuid.UUID(text)
    except ValueError:
        return False
    return u.version == 4 and str(u) == text
