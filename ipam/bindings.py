"""Admin bindings and reservations: an address pinned to an owner ahead of its first pod
(bound policies only), released by an admin; addresses kept out of circulation."""
from __future__ import annotations

from collections.abc import Iterable

from .allocation import Allocator
from .domain import AddressState, AllocationRequest, Port, PortState
from .errors import AlreadyExists, InUse, InvalidArgument
from .policy import rules_for


class Bindings:
    def __init__(self, allocator: Allocator) -> None:
        """Works on the allocator's store, clock and configuration, with its primitives."""
        self.allocator = allocator
        self.store, self.clock, self.config = allocator.store, allocator.clock, allocator.config

    def bind(self, pool_name: str, owner: str, ip: str = "", hostname: str = "") -> Port:
        """Pin an address to an owner ahead of its first pod (fixed/sticky pools)."""
        if not owner:
            raise InvalidArgument("owner is required")
        now = self.clock()
        with self.store.transaction() as uow:
            view = self.config.current(uow).view(pool_name)
            pool = view.pool
            if not rules_for(pool.policy).binds:
                raise InvalidArgument(f"pool {pool_name!r} is {pool.policy.value}; bindings "
                                      "need a fixed or sticky pool")
            existing = uow.port_by_owner(pool.id, owner)
            if existing is not None:
                if ip and ip not in {a.ip for a in existing.addresses}:
                    raise AlreadyExists(f"owner {owner!r} is already bound to "
                                        f"{', '.join(a.ip for a in existing.addresses)}")
                return existing
            req = AllocationRequest(container_id="", ifname="", requested_ip=ip,
                                    hostname=hostname)
            return self.allocator.new_port(uow, view, req, owner, now, PortState.IDLE)

    def unbind(self, pool_name: str, owner: str) -> bool:
        now = self.clock()
        with self.store.transaction() as uow:
            pool = self.config.current(uow).view(pool_name).pool
            port = uow.port_by_owner(pool.id, owner)
            if port is None:
                return False
            if port.state is PortState.ACTIVE:
                raise InUse(f"owner {owner!r} has a live pod (container "
                            f"{(port.container_id or '')[:12]}); delete the pod first")
            self.allocator.drop_port(uow, pool, port, now)
            return True

    def reserve(self, pool_name: str, addresses: Iterable[str], note: str = "",
                unreserve: bool = False) -> int:
        changed = 0
        with self.store.transaction() as uow:
            view = self.config.current(uow).view(pool_name)
            for text in addresses:
                subnet, offset, ip = view.locate(text)
                state = uow.address_state(subnet.id, offset)
                if unreserve:
                    if (state is not None and state[0] is AddressState.RESERVED
                            and uow.delete_address(subnet.id, offset)):
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
