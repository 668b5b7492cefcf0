"""The SQL schema as SQLAlchemy Core tables (the migrations in ipam/migrations create it).

Core rather than ORM: the allocation transaction is a handful of indexed statements and the
ORM's unit-of-work bookkeeping would cost more than the database work itself.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

pools = Table(
    "pools", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("policy", String(16), nullable=False),
    Column("quarantine_seconds", Integer, nullable=False),
    Column("retention_seconds", Integer, nullable=False),
    Column("mtu", Integer, nullable=False),
    Column("product_type", String(63), nullable=False),
    Column("group_name", String(253), nullable=False),
    Column("network_id", String(36), nullable=False),
    Column("segmentation_id", Integer, nullable=False),
)

namespace_defaults = Table(
    "namespace_defaults", metadata,
    Column("namespace", String(253), primary_key=True),
    Column("pool_id", String(36), ForeignKey("pools.id", ondelete="CASCADE"), nullable=False),
)

subnets = Table(
    "subnets", metadata,
    Column("id", String(36), primary_key=True),
    Column("pool_id", String(36), ForeignKey("pools.id"), nullable=False, index=True),
    Column("cidr", String(64), nullable=False, unique=True),
    Column("version", Integer, nullable=False),
    Column("gateway", String(64)),
    Column("excludes", Text, nullable=False),   # JSON list, as the admin gave them
    Column("total", BigInteger, nullable=False),
)

# Free offsets of a subnet as disjoint inclusive ranges: taking the lowest free address is one
# indexed lookup whatever the occupancy (DESIGN.md "Scale").
free_ranges = Table(
    "free_ranges", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subnet_id", String(36), ForeignKey("subnets.id", ondelete="CASCADE"),
           nullable=False),
    Column("first_off", BigInteger, nullable=False),
    Column("last_off", BigInteger, nullable=False),
    UniqueConstraint("subnet_id", "first_off", name="uq_free_ranges_first"),
    # Returning an offset looks for the range ending just below it (migration 0002).
    Index("ix_free_ranges_last", "subnet_id", "last_off"),
)

# Indexes that serve only rows the pod path never creates are partial (migration 0002), so an
# allocation or release writes fewer index pages. Queries that should use them must name the
# state as a literal: a planner only matches a partial index against constants.
IDLE = text("state = 'idle'")
QUARANTINED = text("state = 'quarantined'")

# Every address not free: allocated to a port, quarantined, or reserved by an admin.
# The unique constraint is the last word against duplicates, whatever sits above it.
addresses = Table(
    "addresses", metadata,
    Column("subnet_id", String(36), ForeignKey("subnets.id", ondelete="CASCADE"),
           nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("ip", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("port_id", String(36), nullable=True),
    Column("generation", BigInteger, nullable=False),
    Column("free_at", Float, nullable=False),
    Column("note", Text, nullable=False),
    UniqueConstraint("subnet_id", "offset", name="uq_addresses_subnet_offset"),
    Index("ix_addresses_port", "port_id"),
    # The quarantine sweep: only quarantined rows, by the time they come free.
    Index("ix_addresses_quarantine", "free_at", sqlite_where=QUARANTINED,
          postgresql_where=QUARANTINED),
)

ports = Table(
    "ports", metadata,
    Column("id", String(36), primary_key=True),
    Column("pool_id", String(36), ForeignKey("pools.id"), nullable=False),
    Column("mac", String(17), nullable=False, unique=True),
    Column("state", String(16), nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("owner", String(253)),
    Column("container_id", String(128)),
    Column("ifname", String(16)),
    Column("pod_uid", String(64), nullable=False),
    Column("pod_namespace", String(253), nullable=False),
    Column("pod_name", String(253), nullable=False),
    Column("node", String(253), nullable=False),
    Column("netns", Text, nullable=False),
    Column("hostname", String(253), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # One live port per pod interface; one binding per owner in a pool.
    UniqueConstraint("container_id", "ifname", name="uq_ports_request"),
    UniqueConstraint("pool_id", "owner", name="uq_ports_owner"),
    # Sticky retention: only idle (bound, no pod) ports, by pool and age.
    Index("ix_ports_idle", "pool_id", "updated_at", sqlite_where=IDLE, postgresql_where=IDLE),
    Index("ix_ports_node", "node"),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("object_id", String(36), nullable=False),
    Column("op", String(16), nullable=False),
    Column("payload", Text),
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text, nullable=False, server_default=text("''")),
    Column("failed", Boolean, nullable=False, server_default=text("false")),
    Index("ix_outbox_object", "kind", "object_id", "id"),
    Index("ix_outbox_due", "next_attempt_at"),
)

leases = Table(
    "leases", metadata,
    Column("name", String(63), primary_key=True),
    Column("holder", String(253), nullable=False),
    Column("expires_at", Float, nullable=False),
)

nodes = Table(
    "nodes", metadata,
    Column("name", String(253), primary_key=True),
    Column("underlay_ip", String(64), nullable=False),
    Column("gateway", Boolean, nullable=False),
    Column("datapath", String(16), nullable=False),
    Column("gateway_cidrs", Text, nullable=False),
    Column("last_seen", Float, nullable=False),
    # Ready until the stale sweep says otherwise (migration 0004): a stored state, so the
    # ready -> stale transition is written to the change log once, by a guarded UPDATE.
    Column("ready", Boolean, nullable=False, server_default=text("true")),
)

# The topology change log (migration 0004): one row per object a transaction changed, in the
# same transaction, ordered by a revision the database assigns. Agents watch it from their
# last revision (ipam.changes says what the rows hold); the sweep compacts it to the newest
# rows and raises `change_log_floor` to the highest revision deleted.
change_log = Table(
    "change_log", metadata,
    Column("revision", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("kind", String(8), nullable=False),
    Column("key", String(253), nullable=False),
    Column("op", String(4), nullable=False),
    Column("node", String(253), nullable=False),
    Column("subnets", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    sqlite_autoincrement=True,
)

change_log_floor = Table(
    "change_log_floor", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("floor", BigInteger, nullable=False),
)

# One row (id 1): bumped by every change to pools, subnets or namespace defaults, so a replica
# can keep those in memory and check with one primary-key read that they are still current.
ipam_config = Table(
    "ipam_config", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),
)

# What the store released and ONOS was told to delete, kept for a while (pruned by the
# sweep): ONOS has no read-back, so an object that reappears there (an ONOS restored from a
# backup, a delete lost in a crash) is only removed by a full resync replaying these deletes.
released = Table(
    "released", metadata,
    Column("kind", String(16), primary_key=True),
    Column("object_id", String(36), primary_key=True),
    Column("released_at", Float, nullable=False),
    Index("ix_released_at", "released_at"),
)

sync_state = Table(
    "sync_state", metadata,
    Column("key", String(63), primary_key=True),
    Column("value", Text, nullable=False),
)
