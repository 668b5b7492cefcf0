"""Open vSwitch for the node agent: an OVSDB client (bridges, ports with
external_ids, tunnels, patch ports) on python-ovs's Idl, and a small OpenFlow helper.

Imports nothing of ours (see the import-linter contracts in pyproject.toml).
"""
from ovs_driver.errors import (
    OvsConnectionError,
    OvsError,
    OvsFlowError,
    OvsNotFound,
    OvsTimeout,
    OvsTransactionError,
)
from ovs_driver.flows import OpenFlowBridge
from ovs_driver.ovsdb import OvsdbClient
from ovs_driver.rows import InterfaceInfo

__all__ = [
    "InterfaceInfo",
    "OpenFlowBridge",
    "OvsConnectionError",
    "OvsError",
    "OvsFlowError",
    "OvsNotFound",
    "OvsTimeout",
    "OvsTransactionError",
    "OvsdbClient",
]
