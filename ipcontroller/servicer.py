"""gRPC servicers: thin translation between protobuf messages and `ipam.service.IpamService`.

Every handler goes through `_handle`, which retries store contention (`Busy`) a few times
and turns any exception into one refusal via `ipcontroller.errors`: a gRPC status with the
reason (an ErrorCode) in its details.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipam import addr, deadline
from ipam.domain import AllocationRequest, Node, PodIdentity, Pool, Port, Subnet, Usage
from ipam.errors import Busy
from ipam.leaks import Reclaim
from ipam.service import IpamService

from .activity import ActivitySummary
from .errors import refusal_for
from .metrics import REQUEST_SECONDS, REQUESTS
from .watch import WatchService, rfc3339

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
BUSY_RETRIES = 8


def _handle(method: F) -> F:
    name = method.__name__
    # The metrics' children, looked up on first use and kept: `labels()` takes a lock and
    # builds a key on every call, a cost paid thousands of times a second on the pod path.
    children: dict[grpc.StatusCode | None, Any] = {}

    def record(code: grpc.StatusCode, seconds: float) -> None:
        counter = children.get(code)
        if counter is None:
            counter = children[code] = REQUESTS.labels(name, code.name)
        counter.inc()
        histogram = children.get(None)
        if histogram is None:
            histogram = children[None] = REQUEST_SECONDS.labels(name)
        histogram.observe(seconds)

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            # The store rolls back instead of committing once the caller's deadline passed
            # (ipam.deadline), and a retry for a caller that gave up is wasted work.
            with deadline.caller_deadline(context.time_remaining()):
                for attempt in range(BUSY_RETRIES):
                    try:
                        return method(self, request, context)
                    except Busy:
                        if attempt == BUSY_RETRIES - 1 or deadline.passed():
                            raise
                        time.sleep(random.uniform(0, 0.002 * (2 ** attempt)))
        except Exception as exc:  # noqa: BLE001 - the one edge where errors become statuses
            refusal = refusal_for(exc)
            code = refusal.status
            log.log(logging.INFO if code is grpc.StatusCode.NOT_FOUND else logging.WARNING,
                    "%s refused code=%s error=%s msg=%s", name, code.name,
                    pb.ErrorCode.Name(refusal.code), refusal.message)
            refusal.abort(context)
        finally:
            record(code, time.perf_counter() - start)
        raise AssertionError("unreachable")
    return wrapper  # type: ignore[return-value]


@functools.lru_cache(maxsize=4096)
def _prefixlen(cidr: str) -> int:
    """A subnet's CIDR never changes: parse it once, not on every answer (pod path)."""
    return addr.parse_network(cidr).prefixlen


def port_pb(port: Port, pool: Pool, subnets: list[Subnet] | tuple[Subnet, ...]) -> pb.Port:
    by_id = {s.id: s for s in subnets}
    ips = []
    for a in port.addresses:
        s = by_id.get(a.subnet_id)
        if s is None:
            continue
        plen = _prefixlen(s.cidr)
        ips.append(pb.IPConfig(address=f"{a.ip}/{plen}", gateway=s.gateway or "",
                               subnet_id=s.id, cidr=s.cidr))
    return pb.Port(
        id=port.id, mac=port.mac, ips=ips, pool=pool.name, policy=pool.policy.value,
        mtu=pool.mtu, container_id=port.container_id or "", ifname=port.ifname or "",
        node=port.node, pod=pb.PodRef(namespace=port.pod_namespace, name=port.pod_name,
                                      uid=port.pod_uid),
        owner=port.owner or "", state=port.state.value, generation=port.generation,
        hostname=port.hostname, netns=port.netns, created_at=rfc3339(port.created_at))


def usage_pb(u: Usage) -> pb.Usage:
    cap = (1 << 64) - 1
    return pb.Usage(total=min(u.total, cap), used=u.used, reserved=min(u.reserved, cap),
                    quarantined=u.quarantined, free=min(u.free, cap), bound=u.bound)


def pool_pb(p: Pool) -> pb.Pool:
    return pb.Pool(name=p.name, policy=p.policy.value, quarantine_seconds=p.quarantine_seconds,
                   retention_seconds=p.retention_seconds, mtu=p.mtu,
                   product_type=p.product_type, group=p.group)


def subnet_pb(s: Subnet, usage: Usage, pool_name: str) -> pb.Subnet:
    return pb.Subnet(id=s.id, pool=pool_name, cidr=s.cidr, gateway=s.gateway or "",
                     excludes=list(s.excludes), usage=usage_pb(usage))


def node_pb(n: Node, stale_after: float) -> pb.NodeInfo:
    state = "ready" if time.time() - n.last_seen <= stale_after else "stale"
    return pb.NodeInfo(name=n.name, underlay_ip=n.underlay_ip, gateway=n.gateway,
                       datapath=n.datapath, state=state, last_seen=rfc3339(n.last_seen),
                       gateway_cidrs=list(n.gateway_cidrs))


TOPOLOGY_TTL = 0.2  # seconds a topology snapshot is shared by all polling agents


class TopologySnapshot:
    """One topology answer shared by every agent polling within TOPOLOGY_TTL.

    Building it reads every active port (~25 ms for 1000 ports here); with each agent
    polling twice a second that cost would grow with nodes x ports. Shared, it is paid at
    most 1/TTL times a second whatever the number of agents, for at most TTL of extra
    delay (agents promise 2 s). Builders are serialized: a burst of polls builds once.
    """

    def __init__(self, ttl: float = TOPOLOGY_TTL) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: pb.TopologyResponse | None = None
        self._built = 0.0

    def get(self, build: Callable[[], pb.TopologyResponse]) -> pb.TopologyResponse:
        with self._lock:
            now = time.monotonic()
            if self._value is None or now - self._built >= self.ttl:
                self._value = build()
                self._built = time.monotonic()
            return self._value


# Per servicer instance, kept outside the class so its constructor stays as it is.
_SNAPSHOTS: weakref.WeakKeyDictionary[Any, TopologySnapshot] = weakref.WeakKeyDictionary()
_SNAPSHOTS_LOCK = threading.Lock()


def _snapshots(servicer: Any) -> TopologySnapshot:
    with _SNAPSHOTS_LOCK:
        snap = _SNAPSHOTS.get(servicer)
        if snap is None:
            snap = _SNAPSHOTS[servicer] = TopologySnapshot()
        return snap


def topology_revision(nodes: list[pb.NodeInfo],
                      ports: list[tuple[str, str, str, tuple[str, ...]]],
                      subnets: list[pb.Subnet]) -> int:
    """A stable 63-bit digest of what agents act on. last_seen is left out on purpose:
    every heartbeat moves it, and agents care only about the ready/stale state it yields.
    Ports are hashed as text (id, MAC, node, addresses), not as serialized messages: the
    digest is rebuilt up to 5 times a second over every active port."""
    h = hashlib.sha256()
    for n in sorted(nodes, key=lambda n: n.name):
        c = pb.NodeInfo()
        c.CopyFrom(n)
        c.ClearField("last_seen")
        h.update(b"n" + c.SerializeToString(deterministic=True))
    h.update("".join(f"p{i}|{m}|{n}|{','.join(a)}\n" for i, m, n, a in ports).encode())
    for s in sorted(subnets, key=lambda s: s.id):
        h.update(b"s" + s.SerializeToString(deterministic=True))
    # Never 0: 0 means "I have nothing" in TopologyRequest.since_revision.
    return (int.from_bytes(h.digest()[:8], "big") >> 1) or 1


class IPControllerServicer(pb_grpc.IPControllerServicer):
    """The pod path: agents allocate and release ports here."""

    def __init__(self, ipam: IpamService, heartbeat_seconds: int = 10,
                 on_change: Callable[[], None] | None = None,
                 watch: WatchService | None = None) -> None:
        self.ipam = ipam
        self.heartbeat_seconds = heartbeat_seconds
        self.on_change = on_change or (lambda: None)
        self.activity = ActivitySummary()
        self.watch = watch

    async def WatchTopology(self, request: pb.WatchTopologyRequest,
                            context: grpc.aio.ServicerContext[Any, Any]
                            ) -> AsyncIterator[bytes]:
        """The topology as a stream of change-log deltas (ipcontroller.watch), serialized
        (the server registers the method with ipcontroller.watch.WireInterceptor). A
        coroutine on the server's event loop, unlike the other handlers (ipcontroller.calls)."""
        if self.watch is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this controller serves no watch")
        assert self.watch is not None
        async for ev in self.watch.serve(request, context):
            yield ev

    @_handle
    def AllocatePort(self, request: pb.AllocateRequest, context: grpc.ServicerContext
                     ) -> pb.AllocateResponse:
        req = AllocationRequest(
            container_id=request.container_id, ifname=request.ifname,
            pod=PodIdentity(request.pod.namespace, request.pod.name, request.pod.uid),
            node=request.node, netns=request.netns, product_type=request.product_type,
            # An older agent sends its one pick in `pool`: an explicit choice.
            pool=(request.pod_pool if request.pod_pool or request.config_pool
                  else request.pool),
            requested_ip=request.requested_ip, owner=request.owner,
            hostname=request.hostname, port_id=request.port_id,
            config_pool=request.config_pool)
        alloc = self.ipam.allocate(req)
        if not alloc.existing:
            self.on_change()
        self.activity.note("allocate-existing" if alloc.existing else "allocate-new")
        log.debug("allocated port=%s container=%s ifname=%s pod=%s/%s existing=%s",
                  alloc.port.id, request.container_id[:12], request.ifname,
                  request.pod.namespace, request.pod.name, alloc.existing)
        return pb.AllocateResponse(port=port_pb(alloc.port, alloc.pool, alloc.subnets),
                                   existing=alloc.existing)

    @_handle
    def ReleasePort(self, request: pb.ReleaseRequest, context: grpc.ServicerContext
                    ) -> pb.ReleaseResponse:
        res = self.ipam.release(request.container_id, request.ifname, request.pod_uid)
        if res.found:
            self.on_change()
        self.activity.note(f"release-{res.outcome}")
        log.debug("released container=%s ifname=%s outcome=%s port=%s",
                  request.container_id[:12], request.ifname, res.outcome, res.port_id)
        return pb.ReleaseResponse(found=res.found, port_id=res.port_id, outcome=res.outcome)

    @_handle
    def GetPort(self, request: pb.GetPortRequest, context: grpc.ServicerContext
                ) -> pb.GetPortResponse:
        port, pool, subnets = self.ipam.get_port(request.container_id, request.ifname)
        return pb.GetPortResponse(port=port_pb(port, pool, subnets))

    @_handle
    def RegisterNode(self, request: pb.RegisterNodeRequest, context: grpc.ServicerContext
                     ) -> pb.RegisterNodeResponse:
        n = request.node
        node = self.ipam.register_node(Node(
            name=n.name, underlay_ip=n.underlay_ip, gateway=n.gateway,
            datapath=n.datapath or "standalone", gateway_cidrs=tuple(n.gateway_cidrs)))
        return pb.RegisterNodeResponse(node=node_pb(node, 3 * self.heartbeat_seconds),
                                       heartbeat_seconds=self.heartbeat_seconds)

    @_handle
    def GetTopology(self, request: pb.TopologyRequest, context: grpc.ServicerContext
                    ) -> pb.TopologyResponse:
        """What standalone agents build tunnels and flows from; they poll it often, so an
        unchanged answer is cut down to its revision (a hash of the content, not a counter:
        it needs no store support and agrees across replicas)."""
        snap = _snapshots(self).get(lambda: self._build_topology())
        if request.since_revision and request.since_revision == snap.revision:
            return pb.TopologyResponse(revision=snap.revision, unchanged=True)
        return snap

    @_handle
    def ListNodePorts(self, request: pb.ListNodePortsRequest, context: grpc.ServicerContext
                      ) -> pb.ListNodePortsResponse:
        ports = self.ipam.with_pools(self.ipam.node_ports(request.node))
        return pb.ListNodePortsResponse(ports=[port_pb(p, pool, subnets)
                                               for p, pool, subnets in ports])

    def _build_topology(self) -> pb.TopologyResponse:
        stale = 3 * self.heartbeat_seconds
        nodes = [node_pb(n, stale) for n in self.ipam.list_nodes()]
        endpoints = self.ipam.active_endpoints()   # by port id: a stable order to hash
        ports = [pb.RemotePort(port_id=i, mac=m, ips=a, node=n) for i, m, n, a in endpoints]
        with self.ipam.store.read() as uow:
            pools = {p.id: p.name for p in uow.list_pools()}
            subnets = [pb.Subnet(id=s.id, pool=pools.get(s.pool_id, ""), cidr=s.cidr,
                                 gateway=s.gateway or "") for s in uow.list_subnets()]
        return pb.TopologyResponse(revision=topology_revision(nodes, endpoints, subnets),
                                   nodes=nodes, ports=ports, subnets=subnets)


class IPAdminServicer(pb_grpc.IPAdminServicer):
    """What ipctl drives: pools, subnets, bindings, reservations, nodes, sync."""

    def __init__(self, ipam: IpamService, sync: Any = None, heartbeat_seconds: int = 10) -> None:
        self.ipam = ipam
        self.sync = sync
        self.heartbeat_seconds = heartbeat_seconds

    @_handle
    def CreatePool(self, request: pb.CreatePoolRequest, context: grpc.ServicerContext
                   ) -> pb.CreatePoolResponse:
        p = request.pool
        pool = self.ipam.create_pool(
            p.name, p.policy or "dynamic",
            quarantine_seconds=p.quarantine_seconds if p.HasField("quarantine_seconds")
            else None, retention_seconds=p.retention_seconds, mtu=p.mtu,
            product_type=p.product_type, group=p.group)
        return pb.CreatePoolResponse(pool=pool_pb(pool))

    @_handle
    def ListPools(self, request: pb.ListPoolsRequest, context: grpc.ServicerContext
                  ) -> pb.ListPoolsResponse:
        return pb.ListPoolsResponse(pools=[
            pb.PoolWithUsage(pool=pool_pb(p), usage=usage_pb(u), subnets=n)
            for p, u, n in self.ipam.list_pools()])

    @_handle
    def GetPool(self, request: pb.GetPoolRequest, context: grpc.ServicerContext
                ) -> pb.GetPoolResponse:
        pool = self.ipam.get_pool(request.name)
        subnets = self.ipam.list_subnets(pool.name)
        total = sum((u for _, u, _ in subnets), Usage())
        return pb.GetPoolResponse(
            pool=pb.PoolWithUsage(pool=pool_pb(pool), usage=usage_pb(total),
                                  subnets=len(subnets)),
            subnets=[subnet_pb(s, u, n) for s, u, n in subnets])

    @_handle
    def DeletePool(self, request: pb.DeletePoolRequest, context: grpc.ServicerContext
                   ) -> pb.DeletePoolResponse:
        self.ipam.delete_pool(request.name)
        return pb.DeletePoolResponse()

    @_handle
    def CreateSubnet(self, request: pb.CreateSubnetRequest, context: grpc.ServicerContext
                     ) -> pb.CreateSubnetResponse:
        s = self.ipam.create_subnet(request.pool, request.cidr, request.gateway,
                                    list(request.excludes))
        for sub, usage, pool_name in self.ipam.list_subnets(request.pool):
            if sub.id == s.id:
                return pb.CreateSubnetResponse(subnet=subnet_pb(sub, usage, pool_name))
        return pb.CreateSubnetResponse(subnet=subnet_pb(s, Usage(), request.pool))

    @_handle
    def ListSubnets(self, request: pb.ListSubnetsRequest, context: grpc.ServicerContext
                    ) -> pb.ListSubnetsResponse:
        return pb.ListSubnetsResponse(subnets=[
            subnet_pb(s, u, n) for s, u, n in self.ipam.list_subnets(request.pool)])

    @_handle
    def DeleteSubnet(self, request: pb.DeleteSubnetRequest, context: grpc.ServicerContext
                     ) -> pb.DeleteSubnetResponse:
        self.ipam.delete_subnet(request.id or request.cidr)
        return pb.DeleteSubnetResponse()

    @_handle
    def ListPorts(self, request: pb.ListPortsRequest, context: grpc.ServicerContext
                  ) -> pb.ListPortsResponse:
        rows, token = self.ipam.list_ports_page(request.pool, request.node, request.state,
                                                request.limit or 1000, request.page_token)
        pools = {p.name: p for p, _, _ in self.ipam.list_pools()}
        subnets = [s for s, _, _ in self.ipam.list_subnets()]
        return pb.ListPortsResponse(ports=[port_pb(p, pools[name], subnets)
                                           for p, name in rows], next_page_token=token)

    @_handle
    def Reserve(self, request: pb.ReserveRequest, context: grpc.ServicerContext
                ) -> pb.ReserveResponse:
        n = self.ipam.reserve(request.pool, list(request.addresses), request.note,
                              request.unreserve)
        return pb.ReserveResponse(changed=n)

    @_handle
    def Bind(self, request: pb.BindRequest, context: grpc.ServicerContext) -> pb.BindResponse:
        port = self.ipam.bind(request.pool, request.owner, request.ip, request.hostname)
        pool = self.ipam.get_pool(request.pool)
        subnets = [s for s, _, _ in self.ipam.list_subnets(request.pool)]
        return pb.BindResponse(port=port_pb(port, pool, subnets))

    @_handle
    def Unbind(self, request: pb.UnbindRequest, context: grpc.ServicerContext
               ) -> pb.UnbindResponse:
        return pb.UnbindResponse(found=self.ipam.unbind(request.pool, request.owner))

    @_handle
    def SetNamespaceDefault(self, request: pb.SetNamespaceDefaultRequest,
                            context: grpc.ServicerContext) -> pb.SetNamespaceDefaultResponse:
        self.ipam.set_namespace_default(request.namespace, request.pool)
        return pb.SetNamespaceDefaultResponse()

    @_handle
    def SyncStatus(self, request: pb.SyncStatusRequest, context: grpc.ServicerContext
                   ) -> pb.SyncStatusResponse:
        if self.sync is None:
            return pb.SyncStatusResponse(enabled=False)
        return self.sync.status_pb()

    @_handle
    def SyncNow(self, request: pb.SyncNowRequest, context: grpc.ServicerContext
                ) -> pb.SyncNowResponse:
        return self._sync_on().request_resync()

    def _sync_on(self) -> Any:
        if self.sync is None:
            from ipam.errors import InvalidArgument
            raise InvalidArgument("ONOS sync is not enabled (start the controller with "
                                  "--onos-url)")
        return self.sync

    @_handle
    def ListDeadLetters(self, request: pb.ListDeadLettersRequest,
                        context: grpc.ServicerContext) -> pb.ListDeadLettersResponse:
        if self.sync is None:
            return pb.ListDeadLettersResponse()
        return self.sync.dead_letters_pb()

    @_handle
    def SkipDeadLetter(self, request: pb.SkipDeadLetterRequest,
                       context: grpc.ServicerContext) -> pb.SkipDeadLetterResponse:
        return pb.SkipDeadLetterResponse(found=self._sync_on().skip_dead_letter(request.id))

    @_handle
    def RetryDeadLetters(self, request: pb.RetryDeadLettersRequest,
                         context: grpc.ServicerContext) -> pb.RetryDeadLettersResponse:
        if request.all == bool(request.ids):
            from ipam.errors import InvalidArgument
            raise InvalidArgument("give dead letter ids or all, not both or neither")
        ids = None if request.all else list(request.ids)
        return pb.RetryDeadLettersResponse(retried=self._sync_on().retry_dead_letters(ids))

    @_handle
    def ListNodes(self, request: pb.ListNodesRequest, context: grpc.ServicerContext
                  ) -> pb.ListNodesResponse:
        return pb.ListNodesResponse(nodes=[node_pb(n, 3 * self.heartbeat_seconds)
                                           for n in self.ipam.list_nodes()])

    @_handle
    def DeleteNode(self, request: pb.DeleteNodeRequest, context: grpc.ServicerContext
                   ) -> pb.DeleteNodeResponse:
        if not self.ipam.delete_node(request.name):
            from ipam.errors import NotFound
            raise NotFound(f"node {request.name!r} does not exist")
        return pb.DeleteNodeResponse()

    @_handle
    def ReleaseNodePorts(self, request: pb.ReleaseNodePortsRequest,
                         context: grpc.ServicerContext) -> pb.ReleaseNodePortsResponse:
        return pb.ReleaseNodePortsResponse(released=self._reclaimed(
            self.ipam.release_node_ports(request.node, request.dry_run)))

    @_handle
    def ReclaimPort(self, request: pb.ReclaimPortRequest, context: grpc.ServicerContext
                    ) -> pb.ReclaimPortResponse:
        [one] = self._reclaimed([self.ipam.reclaim_port(request.port_id, request.dry_run)])
        return pb.ReclaimPortResponse(released=one)

    def _reclaimed(self, done: list[Reclaim]) -> list[pb.ReclaimedPort]:
        outcomes = {r.port.id: r.outcome for r in done}
        return [pb.ReclaimedPort(port=port_pb(p, pool, subnets), outcome=outcomes[p.id])
                for p, pool, subnets in self.ipam.with_pools([r.port for r in done])]
