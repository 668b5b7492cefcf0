"""Maintenance sweeps: quarantined addresses whose rest is over go back into circulation,
idle bound ports past their policy's retention are freed, old release records are pruned.
Cheap when there is nothing to do (indexed lookups), so the controller runs it every second."""
from __future__ import annotations

from .allocation import Allocator
from .policy import rules_for

# Released objects are replayed as deletes by a full resync for this long (a week covers an
# ONOS restored from last night's backup), then forgotten.
RELEASED_TTL_SECONDS = 7 * 24 * 3600


class Sweeper:
    def __init__(self, allocator: Allocator) -> None:
        """Works on the allocator's store, clock and configuration, with its primitives."""
        self.allocator = allocator
        self.store, self.clock, self.config = allocator.store, allocator.clock, allocator.config

    def sweep(self, limit: int = 1000) -> tuple[int, int]:
        """(addresses freed from quarantine, bound ports expired) in one transaction."""
        now = self.clock()
        freed = expired = 0
        with self.store.transaction() as uow:
            cfg = self.config.current(uow)
            for subnet_id, offset in uow.expired_quarantine(now, limit):
                if uow.delete_address(subnet_id, offset):
                    uow.give_back(subnet_id, offset)
                    freed += 1
            for pool in cfg.pools:
                cutoff = rules_for(pool.policy).retention_cutoff(pool, now)
                if cutoff is None:
                    continue
                for port in uow.idle_ports_before(pool.id, cutoff, limit):
                    self.allocator.drop_port(uow, pool, port, now)
                    expired += 1
            uow.prune_released(now - RELEASED_TTL_SECONDS)
        return freed, expired
