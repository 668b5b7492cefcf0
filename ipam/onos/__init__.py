"""ONOS edge of the IPAM: the only part of `ipam` that talks HTTP.

ONOS learns about networks, subnets and ports through its openstacknetworking REST API
(shared/onos-contract.md). Changes reach it asynchronously through the outbox: the IPAM writes
a row in the same transaction as the change, and `SyncWorker` drains rows into `OnosClient`
calls with retries, so ONOS being down never blocks an allocation and never loses one.
`ipam.onos.emulator` is a faithful stand-in for ONOS used by tests and the lab.
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
from .sync import (
    DesiredState,
    OutboxItem,
    OutboxStats,
    OutboxStore,
    StoreOutbox,
    SyncStatus,
    SyncWorker,
)

__all__ = [
    "DesiredState", "OnosAuthError", "OnosClient", "OnosError", "OnosNetwork", "OnosPort",
    "OnosRejected", "OnosSubnet", "OnosUnavailable", "OutboxItem", "OutboxStats",
    "OutboxStore", "PayloadError", "StoreOutbox", "SyncStatus", "SyncWorker", "from_payload",
    "network_body", "port_body", "read_password", "subnet_body", "to_payload",
]
