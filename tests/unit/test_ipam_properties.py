"""Property tests of the IPAM: random sequences of pod and admin operations, checked against a
small model, on every store (memory, SQLite, and PostgreSQL with fewer examples).

The model is deliberately naive: every usable address of every subnet with its state (free,
used, quarantined, admin-reserved; the gateway counts as reserved), and every port with its
request key, owner, pod UID and addresses. The IPAM may pick *which* free address it hands out;
the model checks that it was free and in the pool, and decides everything else: whether the call
must succeed or which error it must raise, what a retry or a bound owner gets back, what a sweep
frees. After every step the usage counters and the ports the service lists must equal the
model's truth, and no address may belong to two ports.

Two `IpamService` instances ("replicas", each with its own store object on SQL) share the
database and take turns, so each one's cached configuration must notice the other's admin
changes; `restart` closes and re-opens the stores (the SQLite file, the PostgreSQL database).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ipam import addr
from ipam.domain import AllocationRequest, PodIdentity, Usage
from ipam.errors import AlreadyExists, InUse, InvalidArgument, PolicyConflict, PoolExhausted
from ipam.service import IpamService
from tests.lab.helpers import FakeClock

# name: (policy, quarantine seconds, retention seconds, first subnets, subnets to add later).
# Tiny on purpose, so a few dozen steps exhaust them: the dual-stack pool has 5 IPv4 and 2
# IPv6 addresses, sticky 1 (3 with its extra /30), fixed 5.
POOLS: dict[str, tuple[str, int, int, list[str], list[str]]] = {
    "dyn": ("dynamic", 30, 0, ["10.50.0.0/29", "fd00:50::/126"],
            ["10.50.1.0/30", "fd00:50:0:1::/126"]),
    "sticky": ("sticky", 0, 100, ["10.51.0.0/30"], ["10.51.1.0/29"]),
    "vm": ("fixed", 0, 0, ["10.52.0.0/29"], []),
}
OVERLAPPING = ["10.50.0.4/30", "10.51.0.0/29", "fd00:50::/125", "10.52.0.0/24"]


@dataclass
class MAddr:
    state: str            # free | used | quarantined | reserved
    until: float = 0.0    # quarantined until


@dataclass
class MSubnet:
    pool: str
    cidr: str
    net: addr.Network
    addrs: dict[str, MAddr]   # every usable address but the gateway
    extra: bool


@dataclass
class MPort:
    pool: str
    ips: tuple[str, ...]
    owner: str | None
    key: tuple[str, str] | None   # (container id, ifname) while a pod uses it
    uid: str
    updated: float


def _sorted_ips(ips: Any) -> tuple[str, ...]:
    return tuple(sorted(ips, key=lambda s: (":" in s, s)))


class IpamMachine(RuleBasedStateMachine):
    """One example: fresh stores from `fresh_stores`, the pools of POOLS, then random steps."""

    # Two store objects on one empty database (the same object twice for memory).
    fresh_stores: Callable[[], list[Any]]
    # The SQL stores again, on the same database (None: nothing to re-open).
    reopen: Callable[[Any], Any] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.stores = self.fresh_stores()
        self.replicas = [IpamService(s, clock=self.clock) for s in self.stores]
        self.subnets: dict[str, MSubnet] = {}
        self.ports: list[MPort] = []
        for name, (policy, quarantine, retention, cidrs, _) in POOLS.items():
            self.replicas[0].create_pool(name, policy, quarantine_seconds=quarantine,
                                         retention_seconds=retention)
            for cidr in cidrs:
                self._add_subnet(0, name, cidr, extra=False)

    def teardown(self) -> None:
        for s in self.stores:
            s.close()

    # ------------------------------------------------------------------ model
    def _add_subnet(self, r: int, pool: str, cidr: str, extra: bool) -> None:
        self.replicas[r].create_subnet(pool, cidr)
        net = addr.parse_network(cidr)
        first, last = addr.usable_span(net)
        gw = str(addr.default_gateway(net))
        ips = (str(addr.address_at(net, o)) for o in range(first, last + 1))
        self.subnets[cidr] = MSubnet(pool, cidr, net, {ip: MAddr("free") for ip in ips
                                                        if ip != gw}, extra)

    def _pool_subnets(self, pool: str) -> list[MSubnet]:
        return [s for s in self.subnets.values() if s.pool == pool]

    def _families(self, pool: str) -> set[int]:
        return {s.net.version for s in self._pool_subnets(pool)}

    def _free(self, pool: str, version: int) -> int:
        return sum(1 for s in self._pool_subnets(pool) if s.net.version == version
                   for a in s.addrs.values() if a.state == "free")

    def _addr(self, ip: str) -> MAddr | None:
        a = ipaddress.ip_address(ip)
        for s in self.subnets.values():
            if a.version == s.net.version and a in s.net:
                return s.addrs.get(ip)
        return None

    def _candidates(self, pool: str) -> list[str]:
        """Addresses an admin might name: every usable one of the pool, gateways included."""
        out = []
        for s in self._pool_subnets(pool):
            first, last = addr.usable_span(s.net)
            out += [str(addr.address_at(s.net, o)) for o in range(first, last + 1)]
        return out

    def _by_key(self, key: tuple[str, str]) -> MPort | None:
        return next((p for p in self.ports if p.key == key), None)

    def _by_owner(self, pool: str, owner: str) -> MPort | None:
        return next((p for p in self.ports if p.pool == pool and p.owner == owner), None)

    def _take(self, pool: str, got: tuple[str, ...], requested: str = "") -> None:
        """The addresses the service picked for a new port: one per family, each free."""
        versions = [ipaddress.ip_address(ip).version for ip in got]
        assert sorted(versions) == sorted(self._families(pool)), (got, pool)
        for ip in got:
            a = self._addr(ip)
            assert a is not None and a.state == "free", f"{ip} handed out but is {a}"
            a.state = "used"
        if requested:
            assert requested in got

    def _drop(self, port: MPort) -> None:
        quarantine = POOLS[port.pool][1]
        for ip in port.ips:
            a = self._addr(ip)
            assert a is not None
            if quarantine > 0:
                a.state, a.until = "quarantined", self.clock.now + quarantine
            else:
                a.state = "free"
        self.ports.remove(port)

    def _usage(self, pool: str) -> Usage:
        subs = self._pool_subnets(pool)
        total = sum(addr.total_addresses(s.net) for s in subs)
        states = [a.state for s in subs for a in s.addrs.values()]
        used, quar, free = (states.count(x) for x in ("used", "quarantined", "free"))
        bound = sum(len(p.ips) for p in self.ports if p.pool == pool and p.key is None)
        return Usage(total=total, used=used, reserved=total - free - used - quar,
                     quarantined=quar, free=free, bound=bound)

    # ------------------------------------------------------------------ rules
    # Requests: pod index, incarnation (a new container and UID for the same pod name),
    # interface; sometimes a UID that does not match the container's.
    REQUEST = dict(r=st.integers(0, 1), pool=st.sampled_from(sorted(POOLS)),
                   pod=st.integers(0, 3), inc=st.integers(0, 1),
                   ifname=st.sampled_from(["eth0", "eth0", "eth0", "net1"]),
                   wrong_uid=st.sampled_from([False, False, False, False, True]))

    @rule(**REQUEST)
    def allocate(self, r: int, pool: str, pod: int, inc: int, ifname: str,
                 wrong_uid: bool) -> None:
        cid, uid = f"c{pod}-{inc}", f"{'x' if wrong_uid else 'u'}{pod}-{inc}"
        req = AllocationRequest(container_id=cid, ifname=ifname, pool=pool, node="n1",
                                pod=PodIdentity("ns", f"pod{pod}", uid))
        svc = self.replicas[r]
        existing = self._by_key((cid, ifname))
        if existing is not None:
            if existing.uid != uid:
                with pytest.raises(PolicyConflict):
                    svc.allocate(req)
                return
            again = svc.allocate(req)
            assert again.existing and _sorted_ips(a.ip for a in again.port.addresses) \
                == existing.ips
            return
        owner = f"ns/pod{pod}" if POOLS[pool][0] != "dynamic" else None
        bound = self._by_owner(pool, owner) if owner else None
        if bound is not None:
            if bound.key is not None and (bound.uid != uid or bound.key[1] != ifname):
                with pytest.raises(PolicyConflict):
                    svc.allocate(req)
                return
            got = svc.allocate(req)
            # The bound owner gets its address back, whatever container asks.
            assert _sorted_ips(a.ip for a in got.port.addresses) == bound.ips
            bound.key, bound.uid, bound.updated = (cid, ifname), uid, self.clock.now
            return
        families = self._families(pool)
        if not families or any(self._free(pool, v) == 0 for v in families):
            with pytest.raises(PoolExhausted):
                svc.allocate(req)
            return
        got = svc.allocate(req)
        ips = _sorted_ips(a.ip for a in got.port.addresses)
        self._take(pool, ips)
        self.ports.append(MPort(pool, ips, owner, (cid, ifname), uid, self.clock.now))

    @rule(**REQUEST)
    def allocate_more(self, r: int, pool: str, pod: int, inc: int, ifname: str,
                      wrong_uid: bool) -> None:
        """The same rule again: pods come and go far more often than admins act."""
        self.allocate(r, pool, pod, inc, ifname, wrong_uid)

    @precondition(lambda self: any(p.key for p in self.ports))
    @rule(r=st.integers(0, 1), data=st.data(), with_uid=st.booleans())
    def release_existing(self, r: int, data: st.DataObject, with_uid: bool) -> None:
        port = data.draw(st.sampled_from([p for p in self.ports if p.key]))
        assert port.key is not None
        cid, ifname = port.key
        pod, inc = cid[1:].split("-")
        self.release(r, int(pod), int(inc), ifname, "right" if with_uid else "none")

    @rule(r=st.integers(0, 1), pod=st.integers(0, 3), inc=st.integers(0, 1),
          ifname=st.sampled_from(["eth0", "net1"]),
          uid_mode=st.sampled_from(["none", "right", "wrong"]))
    def release(self, r: int, pod: int, inc: int, ifname: str, uid_mode: str) -> None:
        cid = f"c{pod}-{inc}"
        existing = self._by_key((cid, ifname))
        uid = {"none": "", "right": existing.uid if existing else f"u{pod}-{inc}",
               "wrong": "someone-else"}[uid_mode]
        res = self.replicas[r].release(cid, ifname, uid)
        if existing is None:
            assert not res.found
        elif uid and uid != existing.uid:
            assert res.outcome == "stale"
        elif existing.owner is not None:
            assert res.outcome == "kept"
            existing.key, existing.uid, existing.updated = None, "", self.clock.now
        else:
            assert res.outcome == ("quarantined" if POOLS[existing.pool][1] else "released")
            self._drop(existing)

    @rule(r=st.integers(0, 1), pool=st.sampled_from(sorted(POOLS)), who=st.integers(0, 5),
          ip_index=st.one_of(st.none(), st.integers(0, 40)))
    def bind(self, r: int, pool: str, who: int, ip_index: int | None) -> None:
        owner = f"ns/pod{who}"
        svc = self.replicas[r]
        cands = self._candidates(pool)
        ip = cands[ip_index % len(cands)] if ip_index is not None and cands else ""
        if POOLS[pool][0] == "dynamic":
            with pytest.raises(InvalidArgument):
                svc.bind(pool, owner, ip)
            return
        bound = self._by_owner(pool, owner)
        if bound is not None:
            if ip and ip not in bound.ips:
                with pytest.raises(AlreadyExists):
                    svc.bind(pool, owner, ip)
            else:
                assert _sorted_ips(a.ip for a in svc.bind(pool, owner, ip).addresses) \
                    == bound.ips
            return
        families = self._families(pool)
        req_version = ipaddress.ip_address(ip).version if ip else None
        if not families:
            expected: type[Exception] | None = PoolExhausted
        elif ip and (self._addr(ip) is None or self._addr(ip).state != "free"):  # type: ignore[union-attr]
            expected = PolicyConflict
        elif any(self._free(pool, v) == 0 for v in families if v != req_version):
            expected = PoolExhausted
        else:
            expected = None
        if expected is not None:
            with pytest.raises(expected):
                svc.bind(pool, owner, ip)
            return
        port = svc.bind(pool, owner, ip)
        ips = _sorted_ips(a.ip for a in port.addresses)
        self._take(pool, ips, ip)
        self.ports.append(MPort(pool, ips, owner, None, "", self.clock.now))

    @rule(r=st.integers(0, 1), pool=st.sampled_from(sorted(POOLS)), who=st.integers(0, 5))
    def unbind(self, r: int, pool: str, who: int) -> None:
        owner = f"ns/pod{who}"
        bound = self._by_owner(pool, owner)
        svc = self.replicas[r]
        if bound is None:
            assert svc.unbind(pool, owner) is False
        elif bound.key is not None:
            with pytest.raises(InUse):
                svc.unbind(pool, owner)
        else:
            assert svc.unbind(pool, owner) is True
            self._drop(bound)

    @rule(r=st.integers(0, 1), pool=st.sampled_from(sorted(POOLS)), index=st.integers(0, 40),
          unreserve=st.booleans())
    def reserve(self, r: int, pool: str, index: int, unreserve: bool) -> None:
        cands = self._candidates(pool)
        ip = cands[index % len(cands)]
        a = self._addr(ip)
        svc = self.replicas[r]
        if unreserve:
            assert svc.reserve(pool, [ip], unreserve=True) == int(bool(a and
                                                                      a.state == "reserved"))
            if a is not None and a.state == "reserved":
                a.state = "free"
        elif a is None:
            with pytest.raises(InvalidArgument, match="not allocatable"):
                svc.reserve(pool, [ip])
        elif a.state in ("used", "quarantined"):
            with pytest.raises(InUse):
                svc.reserve(pool, [ip])
        else:
            assert svc.reserve(pool, [ip], note="prop") == int(a.state == "free")
            a.state = "reserved"

    @rule(r=st.integers(0, 1), advance=st.sampled_from([0, 5, 31, 61, 101]))
    def sweep(self, r: int, advance: int) -> None:
        self.clock.now += advance
        now = self.clock.now
        expect_freed = 0
        for s in self.subnets.values():
            for a in s.addrs.values():
                if a.state == "quarantined" and a.until <= now:
                    a.state = "free"
                    expect_freed += 1
        stale = [p for p in self.ports if POOLS[p.pool][0] == "sticky" and p.key is None
                 and p.updated <= now - POOLS[p.pool][2]]
        for p in stale:
            self._drop(p)
        assert self.replicas[r].sweep() == (expect_freed, len(stale))

    @precondition(lambda self: any(c not in self.subnets
                                   for p in POOLS.values() for c in p[4]))
    @rule(r=st.integers(0, 1), data=st.data())
    def add_subnet(self, r: int, data: st.DataObject) -> None:
        todo = [(name, c) for name, p in POOLS.items() for c in p[4] if c not in self.subnets]
        pool, cidr = data.draw(st.sampled_from(todo))
        self._add_subnet(r, pool, cidr, extra=True)

    @rule(r=st.integers(0, 1), cidr=st.sampled_from(OVERLAPPING),
          pool=st.sampled_from(sorted(POOLS)))
    def overlapping_subnet_refused(self, r: int, cidr: str, pool: str) -> None:
        with pytest.raises(AlreadyExists, match="overlaps"):
            self.replicas[r].create_subnet(pool, cidr)

    @precondition(lambda self: any(s.extra for s in self.subnets.values()))
    @rule(r=st.integers(0, 1), data=st.data())
    def delete_subnet(self, r: int, data: st.DataObject) -> None:
        s = data.draw(st.sampled_from(sorted(c for c, s in self.subnets.items() if s.extra)))
        sub = self.subnets[s]
        if any(a.state == "used" for a in sub.addrs.values()):
            with pytest.raises(InUse):
                self.replicas[r].delete_subnet(s)
            return
        self.replicas[r].delete_subnet(s)
        del self.subnets[s]

    @rule()
    def restart(self) -> None:
        """Close and re-open the stores; fresh services (no cached configuration)."""
        if self.reopen is not None:
            for s in self.stores:
                s.close()
            self.stores = [self.reopen(s) for s in self.stores]
        self.replicas = [IpamService(s, clock=self.clock) for s in self.stores]

    # ------------------------------------------------------------- invariants
    @invariant()
    def usage_matches_model(self) -> None:
        got = {p.name: u for p, u, _ in self.replicas[0].list_pools()}
        for pool in POOLS:
            assert got[pool] == self._usage(pool), pool

    @invariant()
    def ports_match_model(self) -> None:
        listed = self.replicas[0].list_ports(limit=10_000)
        seen: set[str] = set()
        for port, pool in listed:
            ips = _sorted_ips(a.ip for a in port.addresses)
            assert not seen & set(ips), f"address of {ips} listed twice"
            seen |= set(ips)
            if port.container_id:
                m = self._by_key((port.container_id, port.ifname or ""))
            else:
                m = self._by_owner(pool, port.owner or "")
            assert m is not None and m.pool == pool and m.ips == ips, (port, m)
            assert m.owner == port.owner and (m.key is None) == (port.container_id is None)
        assert len(listed) == len(self.ports)


SETTINGS = dict(deadline=None, stateful_step_count=40,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _run(fresh_stores: Callable[[], list[Any]], examples: int,
         reopen: Callable[[Any], Any] | None = None) -> None:
    machine = type("Machine", (IpamMachine,), {"fresh_stores": staticmethod(fresh_stores),
                                               "reopen": staticmethod(reopen) if reopen else None})
    run_state_machine_as_test(machine, settings=settings(max_examples=examples,
                                                          **SETTINGS))  # type: ignore[arg-type]


def test_properties_memory() -> None:
    from ipam.store.memory import MemoryStore

    def fresh() -> list[Any]:
        shared = MemoryStore()
        return [shared, shared]
    _run(fresh, examples=50)


def test_properties_sqlite(tmp_path: Any) -> None:
    from ipam.store.sql import SqlStore
    examples = iter(range(1_000_000))

    def fresh() -> list[Any]:
        url = f"sqlite:///{tmp_path}/ipam-{next(examples)}.db"
        return [SqlStore(url), SqlStore(url)]
    _run(fresh, examples=40, reopen=lambda old: SqlStore(old.url))


@pytest.mark.postgres
def test_properties_postgres(pg_url: str) -> None:
    from ipam.store.sql import SqlStore

    def fresh() -> list[Any]:
        stores = [SqlStore(pg_url), SqlStore(pg_url)]
        with stores[0].engine.begin() as conn:
            conn.exec_driver_sql(
                "TRUNCATE addresses, free_ranges, ports, subnets, namespace_defaults, pools,"
                " outbox RESTART IDENTITY")
            conn.exec_driver_sql("UPDATE ipam_config SET generation = generation + 1")
        return stores
    _run(fresh, examples=12, reopen=lambda old: SqlStore(old.url))
