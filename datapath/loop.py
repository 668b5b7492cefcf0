"""The standalone datapath (``--datapath standalone``): the agent programs tunnels and
flows itself from the controller's node and port lists, the job ONOS does otherwise.

The decisions live in :mod:`datapath.model` (pure); this module follows the controller,
reads the current state through :mod:`datapath.switch`, has it and :mod:`datapath.host`
apply what differs, and loops.

A watch, not a poll: :mod:`datapath.watch` holds a WatchTopology stream open and this loop
applies its events to the view (:mod:`datapath.view`). A delta re-plans only the flows of
what it touched (a port's own flows; a node's tunnel and the flows that use it), so a
change costs the same at 100 ports as at 100,000; a snapshot (first connect, or a
revision the controller compacted away) re-plans every flow. A change after a quiet
spell is applied at once; those within ``apply_window`` of the last apply go together at
the window's end, one ``ovs-ofctl`` exec for a burst, and a change to this node's own
ports waits for the window's end (:mod:`datapath.coalesce`). Between events the loop wakes
every ``interval`` to pick up what OVSDB says changed locally (a pod plugged, a tunnel's
ofport): cache reads, no RPC. A controller that answers WatchTopology
UNIMPLEMENTED (older than the agent) gets the GetTopology poll instead: an unchanged
cluster costs one small RPC per interval there, a change the whole snapshot.

When the controller cannot be reached the flows stay as they are (fail static): pods keep
talking on what was last known rather than losing everything with the controller.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import grpc
from pyroute2.netlink.exceptions import NetlinkError

from ecnet_api.v1 import ecnet_pb2 as pb
from ovs_driver import OpenFlowBridge, OvsError

from .coalesce import ApplyWindow
from .errors import DatapathConfigError, DatapathError, TopologyUnavailable
from .host import HostNetwork
from .model import (
    OWNER_PORT,
    DatapathConfig,
    DesiredFlows,
    FlowBook,
    FlowContext,
    all_owners,
    desired_tunnels,
    diff_tunnels,
    dirty_owners,
    flow_context,
    owner_flows,
)
from .seams import FlowTable, HostNet, OvsdbPorts, TopologySource
from .settings import DatapathSettings
from .switch import Bridges, FlowProgrammer
from .view import Applied, TopologyView, WatchedTopology
from .watch import Disconnected, Item, TopologyWatcher, Unimplemented

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
                 host: HostNet | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``flows`` (br-int's, br-tun's table) and ``host`` default to the real ones:
        ``ovs-ofctl`` on the bridges' management sockets, and netlink; ``clock`` is what
        the apply window (:mod:`datapath.coalesce`) is measured by."""
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
        self.watched = WatchedTopology()
        self.mode = "watch" if s.watch else "poll"   # "poll": the controller has no watch
        self.watcher: TopologyWatcher | None = None
        self._ctx: FlowContext | None = None         # what the book was last planned with
        self._poll_revision = 0
        self._gw_addrs: list[str] | None = None
        self._next_resync = 0.0
        # Changes taken into the view but not yet programmed (datapath.coalesce).
        self._clock = clock
        self._window = ApplyWindow(s.apply_window)
        self._held_reset = False
        self._held_ports: set[str] = set()
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
        events: queue.Queue[Item] = queue.Queue(maxsize=self.s.watch_queue)
        if self.mode == "watch":
            self.watcher = TopologyWatcher(
                self.source, self.s.node, events, self.stop_event, target=self.s.controller,
                backoff_base=self.s.backoff_base, backoff_cap=self.s.backoff_cap)
            self.watcher.start()
        failing_since: float | None = None
        last_warning = 0.0
        try:
            while not self.stop_event.is_set():
                try:
                    if self.mode == "watch":
                        self.watch_step(events, self.s.interval)
                        if self.watcher is not None:
                            self.watcher.cancel_if_silent(self.s.watch_silence)
                    else:
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
                    self._ctx = None
                if self.mode == "poll" and self.stop_event.wait(self.s.interval):
                    return
        finally:
            if self.watcher is not None:
                self.watcher.close()

    def watch_step(self, events: queue.Queue[Item], wait: float) -> bool:
        """Take in what the stream delivered (everything queued, as one batch) and apply it
        now or, within ``apply_window`` of the last apply, at the window's end
        (:mod:`datapath.coalesce`); after ``wait`` seconds of silence look at the local
        state. True when OVS changed."""
        due = self._window.due_in(self._clock())
        try:
            items = [events.get(timeout=wait if due is None else min(wait, due))]
        except queue.Empty:
            if due is not None:
                # Held changes go at the window's end, not at the end of a shorter wait
                # (--topology-interval below --flow-apply-window): the apply then does the
                # local-state look too.
                left = self._window.due_in(self._clock())
                return self._apply_held() if not left else False
            return self._program(frozenset()) if self.watched.whole else False
        while len(items) < self.s.watch_queue:
            try:
                items.append(events.get_nowait())
            except queue.Empty:
                break
        hold, changed = True, False
        for item in items:
            if isinstance(item, Unimplemented):
                self.mode = "poll"
                log.warning("controller has no WatchTopology (older than this agent): "
                            "polling GetTopology every %.1fs instead controller=%s detail=%s",
                            self.s.interval, self.s.controller or "-", item.detail or "-")
                return self.sync_once()
            if isinstance(item, Disconnected):
                self.watched.on_disconnect()
                continue
            hold = hold and self._only_local_ports(item)
            applied: Applied | None = self.watched.on_event(item)
            if applied is not None:
                changed = True
                self._held_reset = self._held_reset or applied.reset
                self._held_ports |= applied.ports
        if not self.watched.whole:
            return False    # nothing whole yet: keep what is programmed
        if not changed:
            # A disconnect or a snapshot's partial chunk changes no flow: no apply to
            # schedule, and the window's leading edge stays for the next real change.
            return False
        if self._window.offer(self._clock(), hold=hold):
            return self._apply_held()
        return False

    def _only_local_ports(self, ev: pb.WatchTopologyEvent) -> bool:
        """Whether a delta only adds, changes or removes ports of this node (as the view
        knew them before it; a port the view never had counts as ours). Such a change
        comes from this agent's own ADD or DEL, which is attaching or detaching the port
        right now: its flows cannot be whole before the attach gives it an ofport, the pod
        is not in use before its ADD returns, and br-int's NORMAL forwards meanwhile, so
        it waits for the window's end rather than compete with the attach for vswitchd."""
        if ev.reset or not ev.complete or not ev.changes:
            return False
        for c in ev.changes:
            kind = c.WhichOneof("change")
            if kind == "port":
                if c.port.node != self.s.node:
                    return False
            elif kind == "port_removed":
                known = self.watched.live.ports.get(c.port_removed)
                if known is not None and known.node != self.s.node:
                    return False
            else:
                return False
        return True

    def _apply_held(self) -> bool:
        """Program what the stream delivered since the last apply."""
        ports = None if self._held_reset else frozenset(self._held_ports)
        self._held_reset, self._held_ports = False, set()
        try:
            return self._program(ports)
        finally:
            # A failure counts too: the run loop forgets the tables, and whatever programs
            # next replaces them whole from the view, which has every change.
            self._window.applied(self._clock())

    def sync_once(self) -> bool:
        """One GetTopology poll (the fallback); True when it changed something in OVS."""
        resp = fetch_topology(self.source, self.s.node, self._poll_revision, self.s.controller)
        if resp.unchanged:
            return self._program(frozenset())
        self.watched.replace(TopologyView.from_topology(resp))
        self._poll_revision = resp.revision
        return self._program(None)

    def _program(self, ports: frozenset[str] | None) -> bool:
        """Bring OVS in line with the view. ``ports``: the ports whose entries changed
        (a delta; the owners a node, plug or ofport change touches are found by comparing
        contexts); None: every flow re-planned (a snapshot)."""
        view = self.watched.live
        frame = view.frame()
        t0 = time.perf_counter()
        local = self.bridges.local_ports()
        want_tunnels = desired_tunnels(frame, self.s.node)
        plan = diff_tunnels(want_tunnels, self.bridges.current_tunnels())
        # Make before break: new tunnels first, then the flows, then the tunnels no flow
        # points at any more go.
        for t in plan.add:
            self.bridges.add_tunnel(t)
            self.host.prime_neighbor(t.remote_ip)
        ofports = self.bridges.ofports(want_tunnels,
                                       self.s.gateway_port if self.s.gateway else None)
        ctx = flow_context(frame, self.cfg, local, ofports)
        owners = None
        if ports is not None and self._ctx is not None:
            owners = dirty_owners(self._ctx, ctx, view.ports_by_node)
        # Whole tables are replaced at start, after a failure, and every resync_seconds
        # (ovs-vswitchd restarted, someone ran ovs-ofctl): replace-flows sends only what
        # differs, so a resync that finds nothing wrong disturbs nothing.
        resync = self.flows.book is None or time.monotonic() >= self._next_resync
        book = self.flows.book
        want: DesiredFlows | None = None    # the rebuilt book's tables, computed once
        if owners is None or book is None:
            book = FlowBook.build(all_owners(sorted(view.ports), ctx), view.ports, ctx)
            want = book.desired()
            if want.conflicts:
                log.warning("datapath conflicts (first claim wins): %s",
                            ", ".join(want.conflicts))
            planned = len(view.ports)
        else:
            # The book is right but for the owners this change touched.
            assert ports is not None
            owners |= {(OWNER_PORT, p) for p in ports}
            for o in sorted(owners):
                book.set(o, owner_flows(o, view.ports, ctx))
            planned = len(owners)
        mods: int | str
        if resync:
            self.flows.replace(book, want)
            self._next_resync = time.monotonic() + self.s.resync_seconds
            mods = "replace"
        elif book is not self.flows.book:
            mods = self.flows.switch_to(book, want)
        else:
            mods = self.flows.apply_pending()
        self._ctx = ctx
        for name in plan.remove:
            self.bridges.remove_tunnel(name)
        if self.s.gateway:
            self._sync_gateway_addresses(list(ctx.gateway_addrs))
        changed = mods != 0 or not plan.empty
        # Per delta this is one line at DEBUG: an INFO line per pod would flood the log.
        big = mods == "replace" or not plan.empty or ports is None
        log.log(logging.INFO if big else logging.DEBUG,
                "datapath applied mode=%s revision=%d tunnels=%d tunnels_added=%d "
                "tunnels_removed=%d owners_planned=%d flow_mods=%s ms=%.1f", self.mode,
                view.revision, len(want_tunnels), len(plan.add), len(plan.remove), planned,
                mods, (time.perf_counter() - t0) * 1e3)
        return changed

    def _sync_gateway_addresses(self, want: list[str]) -> None:
        if want == self._gw_addrs:
            return
        self.host.set_gateway_addresses(self.s.gateway_port, want)
        log.info("gateway addresses port=%s addresses=%s", self.s.gateway_port,
                 ",".join(want) or "-")
        self._gw_addrs = list(want)
