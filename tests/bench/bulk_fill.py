"""Fill a subnet to a given occupancy directly in the SQL store, fast, for benchmarks.

What the allocator would have written for N pods (a port row and an address row each, the
lowest free offsets, the free range shrunk to match), written in bulk: executemany on SQLite,
COPY on PostgreSQL. Synthetic ports are recognisable: container ids `bulk-<offset>`, node
`bench`, MACs with first octet 0x0e (the allocator draws 0x0a...), so they never collide
with real allocations.
"""
from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ipam import addr
from ipam.store.sql import SqlStore

PORT_COLS = ("id", "pool_id", "mac", "state", "generation", "owner", "container_id", "ifname",
             "pod_uid", "pod_namespace", "pod_name", "node", "netns", "hostname",
             "created_at", "updated_at")
ADDR_COLS = ("subnet_id", "offset", "ip", "state", "port_id", "generation", "free_at", "note")


def _mac(offset: int) -> str:
    return "0e:" + ":".join(f"{(offset >> s) & 0xFF:02x}" for s in (32, 24, 16, 8, 0))


def _rows(pool_id: str, subnet_id: str, net: addr.Network, first: int, n: int,
          now: float) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    base = int(net.network_address)
    make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    for off in range(first, first + n):
        pid = str(uuid.UUID(int=(0x5EED << 112) | off, version=4))
        yield ((pid, pool_id, _mac(off), "active", 1, None, f"bulk-{off}", "eth0",
                f"bulk-uid-{off}", "bench", f"bulk-{off}", "bench", "", "", now, now),
               (subnet_id, off, str(make(base + off)), "allocated", pid, 1, 0.0, ""))


def used_count(store: SqlStore, subnet_id: str) -> int:
    raw = store.engine.raw_connection()
    try:
        q = "SELECT count(*) FROM addresses WHERE subnet_id = " + (
            "%s" if store.postgres else "?")
        cur = raw.cursor()
        cur.execute(q, (subnet_id,))
        return int(cur.fetchone()[0])
    finally:
        raw.rollback()
        raw.close()


def fill(store: SqlStore, cidr: str, target_used: int, batch: int = 100_000) -> int:
    """Allocate synthetic ports in subnet `cidr` until it holds `target_used` addresses
    (allocated, quarantined or reserved); returns how many were added."""
    ph = "%s" if store.postgres else "?"
    added = 0
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"SELECT id, pool_id FROM subnets WHERE cidr = {ph}", (cidr,))
        subnet_id, pool_id = cur.fetchone()
        net = addr.parse_network(cidr)
        if not store.postgres:
            cur.execute("PRAGMA cache_size=-262144")
        raw.commit()
        used = used_count(store, subnet_id)
        while used < target_used:
            if not store.postgres:
                cur.execute("BEGIN IMMEDIATE")
            cur.execute(f"SELECT id, first_off, last_off FROM free_ranges WHERE subnet_id = {ph}"
                        " ORDER BY first_off LIMIT 1", (subnet_id,))
            row = cur.fetchone()
            if row is None:
                raw.rollback()
                break
            rid, lo, hi = row
            n = min(batch, target_used - used, hi - lo + 1)
            pairs = list(_rows(pool_id, subnet_id, net, lo, n, time.time()))
            ports = [p for p, _ in pairs]
            addrs = [a for _, a in pairs]
            if store.postgres:
                with cur.copy(f"COPY ports ({', '.join(PORT_COLS)}) FROM STDIN") as cp:
                    for p in ports:
                        cp.write_row(p)
                cols = ", ".join('"offset"' if c == "offset" else c for c in ADDR_COLS)
                with cur.copy(f"COPY addresses ({cols}) FROM STDIN") as cp:
                    for a in addrs:
                        cp.write_row(a)
            else:
                cur.executemany(f"INSERT INTO ports ({', '.join(PORT_COLS)}) VALUES "
                                f"({', '.join('?' * len(PORT_COLS))})", ports)
                cols = ", ".join('"offset"' if c == "offset" else c for c in ADDR_COLS)
                cur.executemany(f"INSERT INTO addresses ({cols}) VALUES "
                                f"({', '.join('?' * len(ADDR_COLS))})", addrs)
            if lo + n > hi:
                cur.execute(f"DELETE FROM free_ranges WHERE id = {ph}", (rid,))
            else:
                cur.execute(f"UPDATE free_ranges SET first_off = {ph} WHERE id = {ph}",
                            (lo + n, rid))
            raw.commit()
            used += n
            added += n
        if store.postgres:
            cur.execute("ANALYZE")
            raw.commit()
        return added
    finally:
        raw.close()
