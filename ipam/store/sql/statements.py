"""The pod path's SQL, written once per dialect as text, and the port row <-> Port mapping.

Building and compiling Core statements costs ~15-50 us each against ~2 us for the statement
itself on SQLite, several times the database work; so the statements the pod path runs
(allocate/release: a handful per request) are plain text executed on the transaction's own
DBAPI connection. The schema (ipam.store.schema, the migrations) stays the one definition of
the tables.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...domain import Port, PortAddress, PortState

# The advisory lock that orders change-log writers on PostgreSQL, and the NOTIFY channel that
# wakes the replicas' tailers.
CHANGE_LOG_LOCK = 0x65636E6574   # "ecnet"
CHANGE_LOG_CHANNEL = "ecnet_topology"

_PORT_COLS = ("id", "pool_id", "mac", "state", "generation", "owner", "container_id", "ifname",
              "pod_uid", "pod_namespace", "pod_name", "node", "netns", "hostname",
              "created_at", "updated_at")
_ADDR_COLS = ("subnet_id", '"offset"', "ip", "state", "port_id", "generation", "free_at",
              "note")


class Statements:
    """The pod path's SQL for one dialect, written once as text with `?` placeholders.

    Every statement is an indexed lookup or a single-row change, whatever the occupancy
    (DESIGN.md "Scale"). On PostgreSQL the lookups that lead to a write lock their rows."""

    def __init__(self, postgres: bool) -> None:
        def q(text: str) -> str:
            return text.replace("?", "%s") if postgres else text

        upd = " FOR UPDATE" if postgres else ""
        skip = " FOR UPDATE SKIP LOCKED" if postgres else ""
        # FOR SHARE: an admin change (UPDATE of this row) waits for running pod-path
        # transactions and they wait for it; read in RC, the row is re-read after the wait.
        self.config_generation = ("SELECT generation FROM ipam_config WHERE id = 1"
                                  + (" FOR SHARE" if postgres else ""))
        self.bump_config = "UPDATE ipam_config SET generation = generation + 1 WHERE id = 1"
        self.seed_config = "INSERT INTO ipam_config (id, generation) VALUES (1, 2)"
        port_select = ("SELECT " + ", ".join(f"p.{c}" for c in _PORT_COLS)
                       + ', a.subnet_id, a.ip, a."offset" FROM ports p'
                       " LEFT JOIN addresses a ON a.port_id = p.id WHERE ")
        lock_p = " FOR UPDATE OF p" if postgres else ""
        self.port_by_request = q(port_select + "p.container_id = ? AND p.ifname = ?" + lock_p)
        self.port_by_owner = q(port_select + "p.pool_id = ? AND p.owner = ?" + lock_p)
        self.port_by_id = q(port_select + "p.id = ?" + lock_p)
        self.insert_port = q(f"INSERT INTO ports ({', '.join(_PORT_COLS)}) VALUES "
                             f"({', '.join('?' * len(_PORT_COLS))}) ON CONFLICT (mac) DO NOTHING")
        self.update_port = q("UPDATE ports SET " + ", ".join(f"{c} = ?" for c in _PORT_COLS[1:])
                             + " WHERE id = ? AND generation = ?")
        self.delete_port = q("DELETE FROM ports WHERE id = ? AND generation = ?")
        self.address_generation = q("UPDATE addresses SET generation = ? WHERE port_id = ?")
        # The lowest free offset in one statement. A range of one offset is left to the slow
        # path (it must be deleted, not emptied), so this never creates an empty range.
        self.take_lowest = q(
            "UPDATE free_ranges SET first_off = first_off + 1 WHERE id = (SELECT id FROM "
            "free_ranges WHERE subnet_id = ? ORDER BY first_off LIMIT 1" + skip + ")"
            " AND first_off < last_off RETURNING first_off - 1")
        lowest = ("SELECT id, first_off, last_off FROM free_ranges WHERE subnet_id = ?"
                  " ORDER BY first_off LIMIT 1")
        self.lowest_range = q(lowest + upd)
        self.lowest_range_skip = q(lowest + skip)
        self.any_free = q("SELECT 1 FROM free_ranges WHERE subnet_id = ? LIMIT 1")
        self.range_containing = q(
            "SELECT id, first_off, last_off FROM free_ranges WHERE subnet_id = ?"
            " AND first_off <= ? ORDER BY first_off DESC LIMIT 1" + upd)
        self.range_ending_at = q("SELECT id, first_off FROM free_ranges WHERE subnet_id = ?"
                                 " AND last_off = ?" + upd)
        self.range_starting_at = q("SELECT id, last_off FROM free_ranges WHERE subnet_id = ?"
                                   " AND first_off = ?" + upd)
        cond = " WHERE id = ? AND first_off = ? AND last_off = ?"
        self.range_delete_if = q("DELETE FROM free_ranges" + cond)
        self.range_set_first_if = q("UPDATE free_ranges SET first_off = ?" + cond)
        self.range_set_last_if = q("UPDATE free_ranges SET last_off = ?" + cond)
        self.range_delete = q("DELETE FROM free_ranges WHERE id = ?")
        self.range_set_first = q("UPDATE free_ranges SET first_off = ? WHERE id = ?")
        self.range_set_last = q("UPDATE free_ranges SET last_off = ? WHERE id = ?")
        self.range_insert = q(
            "INSERT INTO free_ranges (subnet_id, first_off, last_off) VALUES (?, ?, ?)")
        self.insert_address = q(f"INSERT INTO addresses ({', '.join(_ADDR_COLS)}) VALUES "
                                f"({', '.join('?' * len(_ADDR_COLS))})")
        self.delete_address = q('DELETE FROM addresses WHERE subnet_id = ? AND "offset" = ?')
        self.address_state = q('SELECT state, port_id FROM addresses WHERE subnet_id = ?'
                               ' AND "offset" = ?')
        self.quarantine = q("UPDATE addresses SET state = ?, port_id = NULL, free_at = ?"
                            " WHERE port_id = ?")
        self.delete_port_addresses = q('DELETE FROM addresses WHERE port_id = ?'
                                       ' RETURNING subnet_id, "offset"')
        # The state as a literal, so the partial index ix_addresses_quarantine applies.
        self.expired_quarantine = q('SELECT subnet_id, "offset" FROM addresses'
                                    " WHERE state = 'quarantined' AND free_at <= ?"
                                    " ORDER BY free_at LIMIT ?" + skip)
        self.add_outbox = q(
            "INSERT INTO outbox (kind, object_id, op, payload, created_at, attempts,"
            " next_attempt_at, last_error, failed) VALUES (?, ?, ?, ?, ?, 0, ?, '', false)")
        self.supersede_outbox = q("DELETE FROM outbox WHERE kind = ? AND object_id = ?")
        self.add_released = q(
            "INSERT INTO released (kind, object_id, released_at) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, object_id) DO UPDATE SET released_at = excluded.released_at")
        self.forget_released = q("DELETE FROM released WHERE kind = ? AND object_id = ?")
        # The topology change log (ipam.changes). On PostgreSQL the rows of a transaction
        # are written under one exclusive advisory lock held to commit, so revisions commit
        # in order and a reader that takes the lock shared knows every gap below what it
        # sees is a rolled-back transaction, never one still to land (SqlUnitOfWork).
        self.log_lock = "SELECT pg_advisory_xact_lock(%d)" % CHANGE_LOG_LOCK
        self.log_settle = "SELECT pg_advisory_xact_lock_shared(%d)" % CHANGE_LOG_LOCK
        self.log_notify = "SELECT pg_notify('%s', '')" % CHANGE_LOG_CHANNEL
        self.log_insert = q(
            "INSERT INTO change_log (kind, key, op, node, subnets, payload, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)")
        self.log_after = q(
            "SELECT revision, kind, key, op, node, subnets, payload FROM change_log"
            " WHERE revision > ? ORDER BY revision LIMIT ?")
        self.log_head = "SELECT COALESCE(MAX(revision), 0) FROM change_log"
        self.log_floor = "SELECT floor FROM change_log_floor WHERE id = 1"
        self.log_delete = q("DELETE FROM change_log WHERE revision <= ?")
        self.log_raise_floor = q(
            "UPDATE change_log_floor SET floor = ? WHERE id = 1 AND floor < ?")
        # Endpoints with the subnet of each address: GetTopology's and a watch snapshot's,
        # or one subnet's ports for a node that just gained its first port there.
        self.watch_endpoints = (
            "SELECT p.id, p.mac, p.node, a.ip, a.subnet_id FROM ports p LEFT JOIN addresses a"
            " ON a.port_id = p.id WHERE p.state = 'active' ORDER BY p.id")
        self.watch_subnet_endpoints = q(
            "SELECT p.id, p.mac, p.node, a.ip, a.subnet_id FROM ports p JOIN addresses a"
            " ON a.port_id = p.id WHERE p.state = 'active' AND p.id IN"
            " (SELECT port_id FROM addresses WHERE subnet_id = ? AND port_id IS NOT NULL)"
            " ORDER BY p.id")


STATEMENTS = {False: Statements(False), True: Statements(True)}


def port_from_rows(rows: Sequence[Any]) -> Port | None:
    """One port from the rows of `port_select` (one row per address, or one with NULLs)."""
    if not rows:
        return None
    r = rows[0]
    addrs = sorted((PortAddress(x[16], x[17], int(x[18])) for x in rows if x[16] is not None),
                   key=lambda a: (":" in a.ip, a.ip))
    return Port(id=r[0], pool_id=r[1], mac=r[2], state=PortState(r[3]), generation=int(r[4]),
                addresses=tuple(addrs), owner=r[5], container_id=r[6], ifname=r[7],
                pod_uid=r[8], pod_namespace=r[9], pod_name=r[10], node=r[11], netns=r[12],
                hostname=r[13], created_at=r[14], updated_at=r[15])


def port_params(port: Port) -> tuple[Any, ...]:
    return (port.id, port.pool_id, port.mac, port.state.value, port.generation, port.owner,
            port.container_id, port.ifname, port.pod_uid, port.pod_namespace, port.pod_name,
            port.node, port.netns, port.hostname, port.created_at, port.updated_at)
