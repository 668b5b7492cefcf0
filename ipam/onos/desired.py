"""What ONOS should hold, built from the IPAM's domain values: the one place that maps pools,
subnets and ports to ONOS objects.

Three users, one mapping:
* `OutboxWriter`: the IPAM records each change as an outbox row inside the change's own
  transaction (the row's payload is the ONOS object as plain JSON, so it can be replayed
  long after the domain objects changed), and remembers what it released for resyncs;
* `DesiredStateReader`: a resync reads the whole store back as ONOS objects (ONOS offers no
  read-back, so the store is replayed as create-or-update, plus the deletes it released);
* the payload builders, for tests and tools that write rows by hand.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .. import addr
from ..domain import Pool, Port, PortState, Subnet
from ..store.base import PortFilter, Store, UnitOfWork
from .model import DEVICE_OWNER, OnosNetwork, OnosPort, OnosSubnet, from_payload
from .sync import DesiredState

# A subnet's allocation pools are bounded: a fragmented subnet would otherwise list thousands.
MAX_ALLOCATION_POOLS = 64
# A network's MTU when its pool sets none: room for VXLAN on a 1500-byte underlay.
DEFAULT_MTU = 1450
# Kinds whose newest row replaces their pending ones (an upsert carries the whole object, a
# delete needs nothing before it), so an outage leaves one row per object, and a rejected
# row no longer blocks the newer state behind it. Ports only: they churn with every pod,
# and nothing is ordered behind them. A network's or subnet's row keeps its place before
# the rows of the ports that need it (a superseding row would go after them).
COALESCED = frozenset({"port"})


# The mapping is written once, as the outbox payload (the model's fields under the object's
# kind, what `model.to_payload` writes): the pod path builds only that, and a resync reads the
# typed objects back from it with the model's own loader.

def network_payload(pool: Pool, subnets: Sequence[Subnet]) -> dict[str, Any]:
    return {"network": {
        "id": pool.network_id, "name": pool.name, "segmentation_id": pool.segmentation_id,
        "mtu": pool.mtu or DEFAULT_MTU, "subnet_ids": [s.id for s in subnets],
    }}


def subnet_payload(pool: Pool, subnet: Subnet, free: Sequence[tuple[int, int]]
                   ) -> dict[str, Any]:
    net = addr.parse_network(subnet.cidr)
    return {"subnet": {
        "id": subnet.id, "name": f"{pool.name}-{subnet.cidr}", "network_id": pool.network_id,
        "cidr": subnet.cidr, "gateway_ip": subnet.gateway, "ip_version": subnet.version,
        "allocation_pools": [[str(addr.address_at(net, lo)), str(addr.address_at(net, hi))]
                             for lo, hi in free[:MAX_ALLOCATION_POOLS]],
    }}


def port_payload(pool: Pool, port: Port) -> dict[str, Any]:
    name = (f"{port.pod_namespace}_{port.pod_name}" if port.pod_name
            else (port.owner or port.id))
    # An idle bound port (fixed/sticky owner between pods) is kept but bound to nothing, as
    # an unplugged Neutron port: no device, no host.
    idle = port.state is PortState.IDLE
    return {"port": {
        "id": port.id, "name": name, "network_id": pool.network_id, "mac_address": port.mac,
        "fixed_ips": [[a.subnet_id, a.ip] for a in port.addresses],
        "device_id": "" if idle else port.pod_uid, "device_owner": DEVICE_OWNER,
        "host_id": "" if idle else port.node,
    }}


def network_of(pool: Pool, subnets: Sequence[Subnet]) -> OnosNetwork:
    obj = from_payload("network", network_payload(pool, subnets))
    assert isinstance(obj, OnosNetwork)
    return obj


def subnet_of(pool: Pool, subnet: Subnet, free: Sequence[tuple[int, int]]) -> OnosSubnet:
    obj = from_payload("subnet", subnet_payload(pool, subnet, free))
    assert isinstance(obj, OnosSubnet)
    return obj


def port_of(pool: Pool, port: Port) -> OnosPort:
    obj = from_payload("port", port_payload(pool, port))
    assert isinstance(obj, OnosPort)
    return obj


def configured_free(subnet: Subnet) -> list[tuple[int, int]]:
    """The subnet's allocatable ranges as configured (gateway and exclusions left out)."""
    net = addr.parse_network(subnet.cidr)
    gw = addr.parse_address(subnet.gateway) if subnet.gateway else None
    return addr.free_ranges(net, gw, [addr.parse_exclusion(net, e) for e in subnet.excludes])


class OutboxWriter:
    """Records IPAM changes for ONOS inside the caller's transaction (nothing when the sync
    is off: the objects are not even built then)."""

    def __init__(self, enabled: bool, clock: Callable[[], float]) -> None:
        self.enabled = enabled
        self.clock = clock

    def network(self, uow: UnitOfWork, pool: Pool, subnets: Sequence[Subnet]) -> None:
        """The pool's network as it is now: upserted while it has subnets, else deleted (a
        pool without subnets has no network in ONOS; the next subnet creates it again)."""
        if not self.enabled:
            return
        if subnets:
            self._upsert(uow, "network", pool.network_id, network_payload(pool, subnets))
            # A pool's network id outlives its subnets: the next subnet brings it back.
            uow.forget_released("network", pool.network_id)
        else:
            self.deleted(uow, "network", pool.network_id)

    def subnet(self, uow: UnitOfWork, pool: Pool, subnet: Subnet,
               free: Sequence[tuple[int, int]]) -> None:
        if self.enabled:
            self._upsert(uow, "subnet", subnet.id, subnet_payload(pool, subnet, free))

    def port(self, uow: UnitOfWork, pool: Pool, port: Port) -> None:
        if self.enabled:
            uow.supersede_outbox("port", port.id)   # "port" is in COALESCED
            self._upsert(uow, "port", port.id, port_payload(pool, port))

    def deleted(self, uow: UnitOfWork, kind: str, object_id: str) -> None:
        """ONOS must drop it; a resync replays the delete for a while (`released`)."""
        if not self.enabled:
            return
        now = self.clock()
        if kind in COALESCED:
            uow.supersede_outbox(kind, object_id)
        uow.add_outbox(kind, object_id, "delete", None, now)
        uow.add_released(kind, object_id, now)

    def _upsert(self, uow: UnitOfWork, kind: str, object_id: str,
                payload: dict[str, Any]) -> None:
        uow.add_outbox(kind, object_id, "upsert", payload, self.clock())


class DesiredStateReader:
    """The store read back as ONOS objects, for a resync."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def desired(self, released_since: float | None = None) -> DesiredState:
        """The store's live objects, minus ports that still have outbox rows (those rows
        carry the newest state), plus the deletes released since `released_since` (None:
        every kept one).

        The snapshot is read first and the outbox after it. Rows cannot disappear in between
        (only the lease holder drains, and it is busy replaying), so every port released
        after the snapshot has its delete row in the second read and is skipped, never
        resurrected."""
        with self.store.read() as uow:
            pools = uow.list_pools()
            by_id = {p.id: p for p in pools}
            networks, subnets = [], []
            for pool in pools:
                subs = uow.list_subnets(pool.id)
                if not subs:
                    continue
                networks.append(network_of(pool, subs))
                subnets += [subnet_of(pool, s, configured_free(s)) for s in subs]
            ports = [port_of(by_id[p.pool_id], p)
                     for p in uow.list_ports(PortFilter(limit=10_000_000))]
        released = self.released(released_since)
        pending = self.store.pending_ids("port")
        return DesiredState(
            networks=networks, subnets=subnets,
            ports=[p for p in ports if p.id not in pending],
            # Deletes are idempotent in ONOS (204 for an unknown id), so replaying one that
            # already reached it costs a call and nothing else.
            deleted_ports=released["port"], deleted_subnets=released["subnet"],
            deleted_networks=released["network"])

    def fresh_ports(self, port_ids: Iterable[str]) -> list[OnosPort]:
        """These ports as the store has them now (gone ones and ones with pending rows left
        out): a chunked resync re-reads each chunk just before sending it."""
        ids = list(port_ids)
        with self.store.read() as uow:
            pools = {p.id: p for p in uow.list_pools()}
            ports = [p for p in map(uow.get_port, ids) if p is not None and p.pool_id in pools]
        pending = self.store.pending_ids("port", ids)
        return [port_of(pools[p.pool_id], p) for p in ports if p.id not in pending]

    def fresh_deleted(self, kind: str, object_ids: Iterable[str]) -> list[str]:
        """Which of these released objects a chunked resync may still delete: not live
        again, and without pending rows (those carry the object's newest state)."""
        ids = list(object_ids)
        with self.store.read() as uow:
            if kind == "port":
                live = {i for i in ids if uow.get_port(i) is not None}
            elif kind == "subnet":
                live = {s.id for s in uow.list_subnets()}
            else:
                live = _live_networks(uow)
        pending = self.store.pending_ids(kind, ids)
        return [i for i in ids if i not in live and i not in pending]

    def released(self, since: float | None = None) -> dict[str, list[str]]:
        """What the store released (since `since`, else all it keeps), by kind, minus
        anything live again: a resync deletes these from ONOS once more."""
        with self.store.read() as uow:
            live = {("network", n) for n in _live_networks(uow)}
            out: dict[str, list[str]] = {"network": [], "subnet": [], "port": []}
            for kind, object_id in uow.list_released(since):
                if (kind, object_id) not in live and kind in out:
                    out[kind].append(object_id)
        return out


def _live_networks(uow: UnitOfWork) -> set[str]:
    """The ONOS networks still in use: those of pools that have a subnet."""
    with_subnets = {s.pool_id for s in uow.list_subnets()}
    return {p.network_id for p in uow.list_pools() if p.id in with_subnets}
