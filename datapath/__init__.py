"""The standalone SDN datapath the node agent drives when ONOS does not: VXLAN tunnels,
br-int/br-tun flows, the ARP responder, gateway routing and the underlay address move.

``model`` decides (pure: topology in, desired tunnels and flows out); ``loop`` polls the
controller and applies; ``switch`` is the OVS side (OVSDB ports, OpenFlow tables);
``host`` the netlink side; ``seams`` declares what each of them is driven through.
Imports ``ovs_driver`` and ``ecnet_api`` only (import-linter contracts in pyproject.toml).
"""
from datapath.errors import (
    DatapathConfigError,
    DatapathError,
    InterfaceMissing,
    TopologyUnavailable,
)
from datapath.loop import StandaloneDatapath
from datapath.model import GATEWAY_MAC
from datapath.settings import DatapathSettings, default_rundir

__all__ = [
    "GATEWAY_MAC",
    "DatapathConfigError",
    "DatapathError",
    "DatapathSettings",
    "InterfaceMissing",
    "StandaloneDatapath",
    "TopologyUnavailable",
    "default_rundir",
]
