"""The datapath's settings, read once by the agent at start."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .model import DEFAULT_VNI, GATEWAY_MAC


@dataclass(frozen=True)
class DatapathSettings:
    node: str
    int_bridge: str = "br-int"
    tun_bridge: str = "br-tun"
    datapath_type: str = "netdev"
    ovs_rundir: str = ""
    interval: float = 0.5          # the poll's period; with a watch, the local-state check's
    watch: bool = True             # False: GetTopology polls only (tests of the fallback)
    watch_queue: int = 1024        # events received and not yet applied (see datapath.watch)
    backoff_base: float = 0.25     # reconnect delay: full jitter in [0, min(cap, base*2**n))
    backoff_cap: float = 5.0
    watch_silence: float = 60.0    # a stream quiet this long is presumed dead: reconnect
    resync_seconds: float = 30.0
    apply_window: float = 0.05     # watch changes within this of the last apply go together
    vni: int = DEFAULT_VNI
    underlay_ip: str = ""          # bare or CIDR; CIDR tells the prefix to put on the bridge
    underlay_iface: str = ""
    underlay_bridge: str = ""      # e.g. br-phy: the userspace datapath routes tunnels via it
    gateway: bool = False
    gateway_port: str = "ecgw0"
    gateway_mac: str = GATEWAY_MAC
    mtu: int = 1450
    controller: str = ""           # where GetTopology goes; only named in log lines


def default_rundir(ovsdb_remote: str) -> str:
    """Where ovs-vswitchd keeps <bridge>.mgmt: $OVS_RUNDIR, else next to the database
    socket (both live in OVS_RUNDIR unless an operator split them)."""
    if os.environ.get("OVS_RUNDIR"):
        return os.environ["OVS_RUNDIR"]
    if ovsdb_remote.startswith("unix:"):
        return os.path.dirname(ovsdb_remote[len("unix:"):]) or "/var/run/openvswitch"
    return "/var/run/openvswitch"
