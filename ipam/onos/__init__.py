"""ONOS edge of the IPAM: the only part of `ipam` that talks HTTP, and the one home of the sync.

ONOS learns about networks, subnets and ports through its openstacknetworking REST API
(shared/onos-contract.md). Changes reach it asynchronously through the outbox: the IPAM writes
a row in the same transaction as the change (`desired.OutboxWriter`), and `SyncWorker` drains
rows into `OnosClient` calls with retries, so ONOS being down never blocks an allocation and
never loses one. Stores serve the sync through one declared seam, `outbox.OutboxStore` (rows,
lease and state); `desired` maps domain values to ONOS objects, for the rows and for resyncs.
`ipam.onos.desired` is imported by its path (it reads the store, which imports `outbox`).
"""
from .client import OnosClient, read_password
from .errors import OnosAuthError, OnosError, OnosRejected, OnosUnavailable
from .model import (
    OnosNetwork,
    OnosPort,
    OnosSubnet,
    PayloadError,
    from_payload,
    network_body,
    port_body,
    subnet_body,
    to_payload,
)
from .outbox import (
    SYNC_LEASE,
    DeadLetter,
    OutboxItem,
    OutboxRow,
    OutboxStats,
    OutboxStore,
)
from .sync import DesiredState, SyncStatus, SyncWorker

__all__ = [
    "SYNC_LEASE", "DeadLetter", "DesiredState", "OnosAuthError", "OnosClient", "OnosError",
    "OnosNetwork", "OnosPort", "OnosRejected", "OnosSubnet", "OnosUnavailable", "OutboxItem",
    "OutboxRow", "OutboxStats", "OutboxStore", "PayloadError", "SyncStatus", "SyncWorker",
    "from_payload", "network_body", "port_body", "read_password", "subnet_body", "to_payload",
]
