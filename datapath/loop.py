"""The standalone datapath (``--datapath standalone``): the agent programs tunnels and
flows itself from the controller's node and port lists, the job ONOS does otherwise.

The decisions live in :mod:`datapath.model` (pure); this module polls the controller,
reads the current state through :mod:`datapath.switch`, has it and :mod:`datapath.host`
apply what differs, and loops.

Polling, not a watch: GetTopology answers an unchanged cluster with just its revision,
so a 0.5 s poll costs one small RPC and a cache read per tick; a change anywhere shows up
within one interval plus the ~20 ms to apply it, well inside the 2 s target. When the
controller cannot be reached the flows stay as they are (fail static): pods keep talking
on what was last known rather than losing everything with the controller.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import grpc
from pyroute2.netlink.exceptions import NetlinkError

from ecnet_api.v1 import ecnet_pb2 as pb
from ovs_driver import OpenFlowBridge, OvsError

from .errors import DatapathConfigError, DatapathError, TopologyUnavailable
from .host import HostNetwork
from .model import (
    DatapathConfig,
    Topology,
    desired_flows,
    desired_tunnels,
    diff_tunnels,
    gateway_addresses,
    topology_from_pb,
)
from .seams import FlowTable, HostNet, OvsdbPorts, TopologySource
from .settings import DatapathSettings
from .switch import Bridges, FlowProgrammer

log = logging.getLogger(__name__)


def fetch_topology(source: TopologySource, node: str, since: int, target: str = "",
                   timeout: float = 2.0) -> pb.TopologyResponse:
    """GetTopology with a short deadline: a poll that hangs would delay the next one."""
    try:
        return source.GetTopology(pb.TopologyRequest(node=node, since_revision=since),
                                  timeout=timeout)
    except grpc.RpcError as err:
        # What a stub raises is also a grpc.Call, which carries the status.
        status = str(err)
        if isinstance(err, grpc.Call):
            status = f"{err.code().name} {err.details() or ''}"
        raise TopologyUnavailable(f"GetTopology from IP controller {target or '-'} failed: "
                                  f"{status}".rstrip()) from None


class StandaloneDatapath:
    def __init__(self, s: DatapathSettings, ovs: OvsdbPorts, topology: TopologySource,
                 stop_event: threading.Event, *, flows: tuple[FlowTable, FlowTable] | None = None,
                 host: HostNet | None = None) -> None:
        """``flows`` (br-int's, br-tun's table) and ``host`` default to the real ones:
        ``ovs-ofctl`` on the bridges' management sockets, and netlink."""
        self.s = s
        self.source = topology
        self.stop_event = stop_event
        self.cfg = DatapathConfig(node=s.node, vni=s.vni, gateway_mac=s.gateway_mac)
        if flows is None:
            rundir = s.ovs_rundir or "/var/run/openvswitch"
            flows = (OpenFlowBridge(s.int_bridge, rundir), OpenFlowBridge(s.tun_bridge, rundir))
        self.bridges = Bridges(ovs, s.int_bridge, s.tun_bridge)
        self.flows = FlowProgrammer(*flows)
        self.host: HostNet = host or HostNetwork()
        self.topology: Topology | None = None
        self._applied_key: tuple[Any, ...] | None = None
        self._gw_addrs: list[str] | None = None
        self._next_resync = 0.0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Bridges and ports that do not depend on the topology; at start, so a bad flag
        or a missing NIC fails the agent's start instead of a background loop."""
        s = self.s
        if s.underlay_bridge:
            # The recipe's br-phy: the NIC becomes a port of a bridge that owns the
            # underlay address, because the userspace datapath sends tunnel packets by its
            # own routing table, which only knows routes through OVS bridges.
            if not s.underlay_ip:
                raise DatapathConfigError("--underlay-bridge needs --underlay-ip")
            self.bridges.ensure_underlay_bridge(s.underlay_bridge, s.underlay_iface,
                                                s.datapath_type)
            self.host.move_underlay_address(s.underlay_bridge, s.underlay_iface,
                                            s.underlay_ip)
        self.bridges.ensure_tunnel_bridge(s.datapath_type)
        if s.gateway:
            # It owns the gateway MAC (and, once the topology is known, every subnet's
            # gateway IP); Linux routes between it and the rest.
            self.bridges.add_gateway_port(s.gateway_port, s.gateway_mac)
            self.host.bring_up_gateway_port(s.gateway_port, s.mtu)
            log.info("gateway port ready port=%s mac=%s mtu=%d ip_forward=1",
                     s.gateway_port, s.gateway_mac, s.mtu)
        log.info("datapath set up node=%s int=%s tun=%s underlay=%s gateway=%s",
                 s.node, s.int_bridge, s.tun_bridge, s.underlay_ip or "-", s.gateway)

    # -------------------------------------------------------------------- loop
    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="datapath", daemon=True)
        self._thread.start()
        return self._thread

    def run(self) -> None:
        failing_since: float | None = None
        last_warning = 0.0
        while not self.stop_event.is_set():
            try:
                self.sync_once()
                if failing_since is not None:
                    log.info("datapath sync recovered after_s=%.1f",
                             time.monotonic() - failing_since)
                    failing_since = None
            except (DatapathError, OvsError, NetlinkError, OSError) as exc:
                # Fail static: keep what is programmed; re-plan whole tables next time.
                now = time.monotonic()
                failing_since = failing_since or now
                # Every failed poll at 2 Hz would drown the log: warn now and then.
                level = logging.WARNING if now - last_warning >= 30 else logging.DEBUG
                if level == logging.WARNING:
                    last_warning = now
                log.log(level, "datapath sync failed (keeping current flows, will retry) "
                        "failing_s=%.1f: %s", now - failing_since, exc)
                self.flows.forget()
                self._applied_key = None
            if self.stop_event.wait(self.s.interval):
                return

    def sync_once(self) -> bool:
        """One poll; True when it changed something in OVS."""
        since = self.topology.revision if self.topology is not None else 0
        resp = fetch_topology(self.source, self.s.node, since, self.s.controller)
        if not resp.unchanged:
            self.topology = topology_from_pb(resp)
        topo = self.topology
        assert topo is not None
        t0 = time.perf_counter()
        local = self.bridges.local_ports()
        want_tunnels = desired_tunnels(topo, self.s.node)
        plan = diff_tunnels(want_tunnels, self.bridges.current_tunnels())
        # Make before break: new tunnels first, then the flows, then the tunnels no flow
        # points at any more go.
        for t in plan.add:
            self.bridges.add_tunnel(t)
            self.host.prime_neighbor(t.remote_ip)
        ofports = self.bridges.ofports(want_tunnels,
                                       self.s.gateway_port if self.s.gateway else None)
        key = (topo.revision, local, ofports.int_patch, ofports.tun_patch, ofports.gateway,
               tuple(sorted(ofports.tunnels.items())))
        # Whole tables are replaced at start, after a failure, and every resync_seconds
        # (ovs-vswitchd restarted, someone ran ovs-ofctl): replace-flows sends only what
        # differs, so a resync that finds nothing wrong disturbs nothing.
        resync = self.flows.applied is None or time.monotonic() >= self._next_resync
        if not resync and key == self._applied_key and plan.empty:
            return False
        want = desired_flows(topo, self.cfg, local, ofports)
        if want.conflicts:
            log.warning("datapath conflicts (first claim wins): %s", ", ".join(want.conflicts))
        mods = 0
        if resync:
            self.flows.replace(want)
            self._next_resync = time.monotonic() + self.s.resync_seconds
        else:
            mods = self.flows.update(want)
        changed = key != self._applied_key or not plan.empty
        self._applied_key = key
        for name in plan.remove:
            self.bridges.remove_tunnel(name)
        if self.s.gateway:
            self._sync_gateway_addresses(gateway_addresses(topo))
        log.log(logging.INFO if changed else logging.DEBUG,
                "datapath applied revision=%d tunnels=%d tunnels_added=%d tunnels_removed=%d "
                "flows_int=%d flows_tun=%d flow_mods=%s ms=%.1f", topo.revision,
                len(want_tunnels), len(plan.add), len(plan.remove), len(want.br_int),
                len(want.br_tun), "replace" if resync else mods,
                (time.perf_counter() - t0) * 1e3)
        return changed

    def _sync_gateway_addresses(self, want: list[str]) -> None:
        if want == self._gw_addrs:
            return
        self.host.set_gateway_addresses(self.s.gateway_port, want)
        log.info("gateway addresses port=%s addresses=%s", self.s.gateway_port,
                 ",".join(want) or "-")
        self._gw_addrs = list(want)
