"""Pool and subnet administration: the configuration changes, each one exclusive.

Every change takes the configuration lock first (`UnitOfWork.begin_config_change`), so its
checks (name taken, overlapping subnets, live ports) cannot race another replica's change or
a pod-path transaction, and bumps the generation every cached `ConfigSnapshot` is checked by.
"""
from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import replace

from . import addr, changes
from .config import pool_named
from .domain import Pool, Subnet, Usage
from .errors import AlreadyExists, InUse, InvalidArgument, NotFound
from .onos.desired import OutboxWriter
from .policy import parse_policy, policy_for_product_type, rules_for
from .store.base import PortFilter, Store, UnitOfWork

log = logging.getLogger(__name__)


class PoolAdmin:
    def __init__(self, store: Store, outbox: OutboxWriter) -> None:
        self.store = store
        self.outbox = outbox

    # ------------------------------------------------------------------ pools
    def create_pool(self, name: str, policy: str, *, quarantine_seconds: int | None = None,
                    retention_seconds: int = 0, mtu: int = 0, product_type: str = "",
                    group: str = "") -> Pool:
        name = name.strip()
        if not name or len(name) > 63 or any(c.isspace() for c in name):
            raise InvalidArgument(f"invalid pool name {name!r} (1-63 characters, no spaces)")
        pol = parse_policy(policy)
        rules = rules_for(pol)
        if mtu and not 576 <= mtu <= 9000:
            raise InvalidArgument(f"MTU {mtu} out of range 576..9000")
        if product_type and policy_for_product_type(product_type) is not pol:
            raise InvalidArgument(
                f"product type {product_type!r} does not match policy {pol.value}")
        group = group.strip()
        rules.check_group(group)
        pool = Pool(id=str(uuid.uuid4()), name=name, policy=pol,
                    quarantine_seconds=(rules.default_quarantine_seconds
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
            return pool_named(uow, name)

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
            pool = pool_named(uow, name)
            if uow.list_subnets(pool.id):
                raise InUse(f"pool {name!r} still has subnets; delete them first")
            if uow.list_ports(PortFilter(pool_id=pool.id, limit=1)):
                raise InUse(f"pool {name!r} still has ports")
            uow.delete_pool(pool.id)
            self.outbox.deleted(uow, "network", pool.network_id)

    def set_namespace_default(self, namespace: str, pool_name: str) -> None:
        if not namespace:
            raise InvalidArgument("namespace is required")
        with self.store.transaction() as uow:
            uow.begin_config_change()
            pool_id = pool_named(uow, pool_name).id if pool_name else None
            uow.set_namespace_default(namespace, pool_id)

    # ---------------------------------------------------------------- subnets
    def create_subnet(self, pool_name: str, cidr: str, gateway: str = "",
                      excludes: Iterable[str] = ()) -> Subnet:
        try:
            net = addr.parse_network(cidr)
            gw = addr.parse_address(gateway) if gateway else addr.default_gateway(net)
            if gw not in net:
                raise ValueError(f"gateway {gw} is not inside {net}")
            first, last = addr.usable_span(net)
            off = addr.offset_of(net, gw)
            if off < first or (net.version == 4 and off > last):
                raise ValueError(f"gateway {gw} is the network or broadcast address of {net}")
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
            pool = pool_named(uow, pool_name)
            for other in uow.list_subnets():
                if addr.overlaps(net, addr.parse_network(other.cidr)):
                    raise AlreadyExists(f"{net} overlaps subnet {other.cidr}")
            subnet = replace(subnet, pool_id=pool.id)
            uow.insert_subnet(subnet, free)
            uow.record_change(changes.subnet_change(subnet, pool.name))
            self.outbox.network(uow, pool, uow.list_subnets(pool.id))
            self.outbox.subnet(uow, pool, subnet, free)
        log.info("subnet created pool=%s cidr=%s free=%d", pool_name, net, addr.span_size(free))
        return subnet

    def list_subnets(self, pool_name: str = "") -> list[tuple[Subnet, Usage, str]]:
        with self.store.read() as uow:
            pools = {p.id: p for p in uow.list_pools()}
            pool_id = pool_named(uow, pool_name).id if pool_name else None
            return [(s, uow.subnet_usage(s), pools[s.pool_id].name)
                    for s in uow.list_subnets(pool_id)]

    def delete_subnet(self, cidr_or_id: str) -> None:
        with self.store.transaction() as uow:
            # Exclusive before the check: no allocation can land in the subnet between the
            # "no ports" check and the delete.
            uow.begin_config_change()
            subnet = _find_subnet(uow, cidr_or_id)
            if uow.subnet_has_ports(subnet.id):
                raise InUse(f"subnet {subnet.cidr} still has ports; release them first")
            pool = uow.get_pool_by_id(subnet.pool_id)
            uow.delete_subnet(subnet.id)
            uow.record_change(changes.subnet_removed(subnet.id))
            self.outbox.deleted(uow, "subnet", subnet.id)
            if pool is not None:
                # The network loses the subnet, or goes when it was the last one.
                self.outbox.network(uow, pool, uow.list_subnets(pool.id))


def _find_subnet(uow: UnitOfWork, cidr_or_id: str) -> Subnet:
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
