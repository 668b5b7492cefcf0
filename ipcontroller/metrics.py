"""Prometheus metrics of the controller (served on --metrics-listen)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("ecnet_controller_requests_total", "gRPC requests by method and status",
                   ["method", "code"])
REQUEST_SECONDS = Histogram(
    "ecnet_controller_request_seconds", "gRPC request latency by method", ["method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
SYNC_PENDING = Gauge("ecnet_onos_sync_pending", "outbox rows not yet applied to ONOS")
SYNC_FAILED = Gauge("ecnet_onos_sync_failed", "outbox rows ONOS refused (config or payload)")
SYNC_OLDEST = Gauge("ecnet_onos_sync_oldest_pending_seconds", "age of the oldest outbox row")
SYNC_OUTBOX_CAP = Gauge("ecnet_onos_sync_outbox_cap",
                        "outbox rows kept before the port rows give way to a full resync")
SYNC_OUTBOX_OVERFLOWS = Counter(
    "ecnet_onos_sync_outbox_overflows_total",
    "times the outbox reached its cap (alert on any increase: ONOS is far behind)")

WATCHERS = Gauge("ecnet_watch_streams", "WatchTopology streams open on this replica")
WATCH_EVENTS = Counter("ecnet_watch_events_total", "WatchTopology messages sent")
WATCH_BYTES = Counter("ecnet_watch_bytes_total", "WatchTopology message bytes sent")
WATCH_SNAPSHOTS = Counter(
    "ecnet_watch_snapshots_total",
    "snapshots sent, by why: first (from revision 0), resync (a revision compacted away or "
    "unknown here), behind (a watcher too slow for its bounded backlog)", ["reason"])
WATCH_COALESCED = Counter("ecnet_watch_coalesced_rows_total",
                          "log rows a slow watcher was spared (an older state of an object "
                          "whose newer state it got)")
WATCH_OVERFLOWS = Counter("ecnet_watch_overflows_total",
                          "backlogs dropped for a fresh snapshot (a watcher far behind)")
