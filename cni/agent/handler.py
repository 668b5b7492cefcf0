"""CNI verbs on the node: ADD rolls back, DEL forgives, CHECK names what is wrong.

One keyed lock per container serialises ADD/DEL/CHECK of the same container (antrea's
containerAccessArbitrator); different containers run concurrently and the controller's
database does the arbitration between them.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ecnet_api.v1 import ecnet_pb2 as pb
from ovs_driver.errors import OvsConnectionError, OvsError, OvsTimeout

from .. import errors as ce
from ..netconf import SUPPORTED_VERSIONS, CniRequest, valid_attachments
from ..result import PortInfo, PortIP, build_result, default_routes, host_ifname, version_result
from .netlink.plan import PodInterfaceResult, PodInterfaceSpec, network_alias
from .seams import ControllerClient, OvsClient, OvsInterface, PendingT, PodNetlinkClient
from .teardown import Teardown

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MTU = 1450  # leaves room for VXLAN on a 1500 underlay (DESIGN.md "The lab")


@dataclass(frozen=True)
class AgentConfig:
    node: str
    bridge: str = "br-int"
    default_mtu: int = DEFAULT_MTU
    tx_checksum_off: bool = True   # userspace (netdev) datapath: TCP needs it (DESIGN.md)
    ofport_timeout: float = 2.0
    # How long a veth made before its allocation waits for it before attaching without it:
    # about what the second OVSDB change that attaching first costs (a commit round trip
    # after the ofport, ~1-2 ms; docs/performance.md).
    alloc_grace: float = 0.002
    gc_grace_seconds: float = 60.0  # GC leaves younger attachments alone (an ADD in flight)
    status_timeout: float = 0.5     # STATUS is polled every 5 s: an answer, not a wait


def port_info(port: pb.Port) -> PortInfo:
    return PortInfo(id=port.id, mac=port.mac,
                    ips=tuple(PortIP(ip.address, ip.gateway) for ip in port.ips),
                    mtu=port.mtu, hostname=port.hostname)


# Prefix of the lock keys for host interface names (the others are container ids).
_NAME_LOCK = "host-if:"


class KeyedLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._users: dict[str, int] = defaultdict(int)

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks[key]
            self._users[key] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key]
                    del self._locks[key]


class CniHandler(Generic[PendingT]):
    """The CNI verbs over three declared seams (cni.agent.seams). `PendingT` is the netlink
    layer's handle for a veth pair built ahead of its port."""

    def __init__(self, cfg: AgentConfig, controller: ControllerClient,
                 netlink: PodNetlinkClient[PendingT], ovs: OvsClient) -> None:
        self.cfg = cfg
        self.controller = controller
        self.netlink = netlink
        self.ovs = ovs
        self.locks = KeyedLocks()
        self.teardown = Teardown(netlink)
        # The OVS attach and the pod-side netlink work of one ADD run beside each other.
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="add-beside")

    def handle(self, req: CniRequest) -> dict[str, Any] | None:
        """Run one verb; the result to print, or None for verbs with no output."""
        if req.command == "VERSION":
            return version_result(req.conf.cni_version, SUPPORTED_VERSIONS)
        if req.command == "STATUS":
            self.status()
            return None
        if req.command == "GC":
            self.gc(req)
            return None
        with self.locks.hold(req.container_id):
            self.teardown.wait_for(req.container_id)
            if req.command == "ADD":
                return self.add(req)
            if req.command == "DEL":
                self.delete(req)
                return None
            self.check(req)
            return None

    # ------------------------------------------------------------------- ADD
    def add(self, req: CniRequest) -> dict[str, Any]:
        """Steps that do not depend on each other overlap (DESIGN.md costs). The agent
        proposes the new port's id, so the veth pair is created under its final name
        (tap + id[:11]) and attached to OVS while the allocation is in flight; the pod side
        is configured once the address is known. An existing port (retried ADD, bound owner)
        has its own id: the speculative pair is discarded and the careful path runs. Every
        step has a compensation if a later one fails."""
        t0 = time.perf_counter()
        proposed = str(uuid.uuid4())
        spec_host = host_ifname(proposed)
        pending_alloc = self.controller.allocate_async(self._allocate_request(req, proposed))
        pend: PendingT | None = None
        attach: Future[None] | None = None
        try:
            pend = self.netlink.prepare_pod_interface(
                req.netns, req.ifname, req.conf.mtu or self.cfg.default_mtu, spec_host)
            # Usually the allocation beats the kernel's veth creation: then the host end is
            # attached once, with every id, after it (each OVSDB change costs ovs-vswitchd
            # a pass over all its ports). An answer that is nearly there is waited for
            # (alloc_grace): attaching first would cost a second change, and a commit round
            # trip after the ofport, to save less. Otherwise attach now, add the ids later.
            if pend is not None and not pending_alloc.wait(self.cfg.alloc_grace):
                attach = self._pool.submit(self._attach, req, None, spec_host, proposed)
                # pod-side sockets while OVS attaches; with the answer already there,
                # finish_pod_end opens them instead, once the attach is under way
                self.netlink.enter_pod(pend)
        except BaseException:
            self._undo(pend, attach, spec_host)
            early = _quietly(pending_alloc)
            if early is not None and not early.existing:
                self._release_quietly(req)
            raise
        t1 = time.perf_counter()
        try:
            resp = pending_alloc()
        except BaseException:
            self._undo(pend, attach, spec_host)
            raise
        t2 = time.perf_counter()
        port = port_info(resp.port)
        if pend is not None and port.id != proposed:
            self._undo(pend, attach, spec_host)
            pend, attach = None, None
        host_if = host_ifname(port.id)
        mtu = req.conf.mtu or port.mtu or self.cfg.default_mtu
        spec = PodInterfaceSpec(
            netns=req.netns, ifname=req.ifname, host_ifname=host_if, mac=port.mac,
            addresses=[_split(ip.address) for ip in port.ips],
            gateways={ip.version: ip.gateway for ip in port.ips if ip.gateway},
            routes=[], mtu=mtu, tx_checksum_off=self.cfg.tx_checksum_off,
            alias=network_alias(req.conf.name))
        built = False  # the careful path made a new pair (a retried ADD's stays for DEL)
        pod_side: Future[PodInterfaceResult] | None = None
        try:
            if pend is None:
                with self.locks.hold(_NAME_LOCK + host_if):
                    self.teardown.wait_for(host_if)  # a bound port's old pair, same name
                    res = self.netlink.setup_pod_interface(spec)
                    built = res.created
                    self._attach(req, port, host_if, port.id)
                host_mac = res.host_mac
            else:
                if mtu != (req.conf.mtu or self.cfg.default_mtu):
                    self.netlink.finish_host_end(pend, host_if, mtu)
                if attach is None:
                    # One transaction with every id. The attach is the long leg (ovsdb-server,
                    # then vswitchd's pass until the ofport), so it starts at once on this
                    # thread and the pod side goes beside it: on a busy machine a woken pool
                    # thread waits milliseconds for a CPU, and that wait belongs on the
                    # shorter leg.
                    pod_side = self._pool.submit(self.netlink.finish_pod_end, pend, spec, "")
                    attach = _settled(lambda: self._attach(req, port, host_if, port.id))
                    attach.result()
                    pod_side.result()
                else:
                    # the ids that need the port (attached-mac, ips) follow the attach
                    first = attach

                    def ids_after_attach() -> None:
                        first.result()
                        self._attach(req, port, host_if, port.id, wait=False)

                    attach = ids = self._pool.submit(ids_after_attach)
                    self.netlink.finish_pod_end(pend, spec, "")
                    ids.result()
                iface = self._read_back(host_if)
                host_mac = (iface.mac_in_use if iface is not None and iface.mac_in_use
                            else self.netlink.host_mac(pend))
        except BaseException as exc:
            if pod_side is not None:
                _quietly(pod_side.exception)  # the pair is not taken away under its feet
            self._undo(pend, attach, host_if)
            if built:
                if not isinstance(exc, ce.OvsUnavailable):
                    _quietly(lambda: self.ovs.delete_port(self.cfg.bridge, host_if))
                _quietly(lambda: self.netlink.delete_pod_interface(host_if))
            if not resp.existing:
                self._release_quietly(req)
            raise
        t3 = time.perf_counter()
        # debug, not info: a line per pod on the hot path costs the GIL at 100 pods/s
        log.debug("ADD container=%s ifname=%s port=%s ip=%s fast=%s veth_ms=%.2f "
                  "alloc_wait_ms=%.2f plumb_ms=%.2f total_ms=%.2f", req.container_id[:12],
                  req.ifname, port.id, ",".join(ip.address for ip in port.ips),
                  pend is not None, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3,
                  (t3 - t0) * 1e3)
        return build_result(req.conf.cni_version, port, host_if, host_mac, req.ifname,
                            req.netns)

    def _undo(self, pend: PendingT | None, attach: Future[None] | None, host_if: str) -> None:
        """Compensate a partly built interface: OVS port first, then the veth pair. An attach
        that failed because Open vSwitch is away is not undone in OVSDB (that would only wait
        out the timeout once more): it committed nothing (ovsdb-server away), or ovs_driver
        rolled back its own port (ovs-vswitchd took no ofport), or the connection dropped
        mid-commit and the port, whose veth is gone after this, is what the reconcile
        removes as half-built."""
        if attach is not None and not isinstance(_quietly(attach.exception),
                                                 ce.OvsUnavailable):
            _quietly(lambda: self.ovs.delete_port(self.cfg.bridge, host_if))
        if pend is not None:
            doomed = pend
            _quietly(lambda: self.netlink.abort_pending(doomed))

    def _allocate_request(self, req: CniRequest, proposed: str) -> pb.AllocateRequest:
        return pb.AllocateRequest(
            port_id=proposed,
            container_id=req.container_id, ifname=req.ifname, netns=req.netns,
            node=self.cfg.node,
            pod=pb.PodRef(namespace=req.args.pod_namespace, name=req.args.pod_name,
                          uid=req.args.pod_uid),
            product_type=req.product_type, pool=req.pool or req.config_pool,
            pod_pool=req.pool, config_pool=req.config_pool,
            requested_ip=req.requested_ip,
            owner=req.owner, hostname=req.hostname)

    def _attach(self, req: CniRequest, port: PortInfo | None, host_if: str, port_id: str,
                wait: bool = True) -> None:
        """Add (or update) the host end on the bridge in one OVSDB transaction; with `wait`,
        return only once ovs-vswitchd has it (ofport assigned)."""
        try:
            self.ovs.add_port(self.cfg.bridge, host_if, self._external_ids(req, port, port_id),
                              wait_ofport=self.cfg.ofport_timeout if wait else None)
        except OvsError as exc:  # a bug is no OVS failure: it reaches the edge as one (999)
            raise _ovs_failure(exc, f"attaching {host_if} to {self.cfg.bridge} failed") from exc

    def _read_back(self, host_if: str) -> OvsInterface | None:
        """The attached interface as OVSDB has it (its MAC in use, for the result)."""
        try:
            return self.ovs.get_interface(host_if)
        except OvsError as exc:
            raise _ovs_failure(exc, f"reading back {host_if} from OVSDB failed") from exc

    def _external_ids(self, req: CniRequest, port: PortInfo | None,
                      port_id: str) -> dict[str, str]:
        """The container keys are there from the first write so a DEL finds even a
        half-built port."""
        return port_external_ids(
            port_id, req.container_id, req.ifname, req.netns, network=req.conf.name,
            mac=port.mac if port is not None else None,
            ips=bare_addresses(ip.address for ip in port.ips) if port is not None else None,
            pod=pod_ref(req.args.pod_namespace, req.args.pod_name),
            pod_uid=req.args.pod_uid)

    def _release_quietly(self, req: CniRequest) -> None:
        try:
            self.controller.release(pb.ReleaseRequest(
                container_id=req.container_id, ifname=req.ifname, pod_uid=req.args.pod_uid))
        except ce.CniError as exc:
            # The runtime will DEL after a failed ADD; that DEL releases it then.
            log.warning("rollback release failed container=%s: %s", req.container_id[:12], exc)

    # ------------------------------------------------------------------- DEL
    def delete(self, req: CniRequest) -> None:
        """DEL forgives: nothing left is success. Works from OVSDB (no netns needed).

        When DEL returns, the pod is off the network (its OVS port gone), its interface is
        gone (a runtime may ADD the same ifname into the same netns next) and its address is
        released (or kept, for bound policies). Deleting a veth pair costs the kernel ~16 ms
        of RCU grace periods, so concurrent DELs share one batched request (`Teardown`, a
        group commit), and DEL waits only until the kernel reports both ends unregistered
        (~1-3 ms in), not for the grace periods; the controller's release runs meanwhile."""
        t0 = time.perf_counter()
        doomed = self._take_off_node(req.container_id, req.ifname, req.netns)
        t1 = time.perf_counter()
        outcome = self._release(req.container_id, req.ifname, req.args.pod_uid)
        t2 = time.perf_counter()
        if doomed:
            self.teardown.wait_for(req.container_id)
        t3 = time.perf_counter()
        log.debug("DEL container=%s ifname=%s outcome=%s off_node_ms=%.2f release_ms=%.2f "
                  "veth_wait_ms=%.2f total_ms=%.2f", req.container_id[:12], req.ifname,
                  outcome, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t3 - t0) * 1e3)

    def _take_off_node(self, container_id: str, ifname: str, netns: str) -> bool:
        """Delete the attachment's OVS port and doom its veth pair; True when there is a
        pair whose batched delete the caller must wait for (DEL's and reclaim's first step;
        the group delete starts at once, so the caller's release overlaps it)."""
        doomed = False
        try:
            found = self.ovs.find_interfaces(**{"ecnet/container": container_id,
                                                "ecnet/ifname": ifname})
            for iface in found:
                # Under the host name's lock, and only if the port is still this container's:
                # a bound port's next ADD (same name, new container) may have taken it over
                # since the lookup; then it is that pod's, not ours to delete. Otherwise the
                # next ADD comes after the pair is doomed and waits for it to go.
                with self.locks.hold(_NAME_LOCK + iface.name):
                    now = self.ovs.get_interface(iface.name)
                    if now is None or now.external_ids.get("ecnet/container") != container_id:
                        log.info("DEL container=%s: port %s now belongs to container %s; "
                                 "left alone", container_id[:12], iface.name,
                                 (now.external_ids.get("ecnet/container", "?")[:12]
                                  if now is not None else "none"))
                        continue
                    # Doomed first: the kernel's deletion of the pair (once most of DEL)
                    # runs while the OVS port goes; a pair without its veth
                    # is off the network already.
                    doomed |= self.teardown.start(container_id, [iface.name], None, ifname)
                    self.ovs.delete_port(self.cfg.bridge, iface.name)
        except OvsError as exc:
            raise ce.TryAgainLater(f"OVSDB unavailable while deleting the pod's port: {exc}",
                                   str(exc)) from exc
        if not found:
            doomed |= self.teardown.start(container_id, [], netns or None, ifname)
        return doomed

    def _release(self, container_id: str, ifname: str, pod_uid: str) -> str:
        resp = self.controller.release(pb.ReleaseRequest(
            container_id=container_id, ifname=ifname, pod_uid=pod_uid))
        return str(resp.outcome)

    # ------------------------------------------------------------------- GC
    def gc(self, req: CniRequest) -> None:
        """CNI GC: release every attachment of this network on this node that the runtime no
        longer lists (port, OVS interface, veth, address), and nothing else. This node's
        OVSDB is the record of its attachments: each port carries its network's name. One
        failure does not stop the rest; any failure makes the answer "try again later", so
        the runtime's next GC finishes the job."""
        valid = valid_attachments(req.conf)
        try:
            ours = self.ovs.find_interfaces(**{"ecnet/network": req.conf.name})
        except OvsError as exc:
            raise ce.TryAgainLater(f"OVSDB unavailable, cannot collect garbage: {exc}",
                                   str(exc)) from exc
        now = time.time()
        stale = []
        for iface in ours:
            ids = iface.external_ids
            key = (ids.get("ecnet/container", ""), ids.get("ecnet/ifname", ""))
            if not key[0] or key in valid:
                continue
            # An ADD may finish between the runtime's listing and this call: anything
            # younger than the grace period is left for the next GC.
            if now - _float(ids.get("ecnet/created", "")) < self.cfg.gc_grace_seconds:
                continue
            stale.append((key, ids))
        failed: list[str] = []
        for (cid, ifname), ids in stale:
            try:
                outcome = self.reclaim(cid, ifname, ids.get("ecnet/pod-uid", ""),
                                       ids.get("ecnet/netns", ""))
                log.info("GC released container=%s ifname=%s outcome=%s", cid[:12], ifname,
                         outcome)
            except ce.CniError as exc:
                log.warning("GC of container=%s ifname=%s failed: %s", cid[:12], ifname,
                            exc.msg)
                failed.append(f"{cid[:12]}/{ifname}: {exc.msg}")
        if failed:
            raise ce.TryAgainLater(f"GC released {len(stale) - len(failed)} of {len(stale)} "
                                   "stale attachments", "; ".join(failed)[:2000])

    def reclaim(self, container_id: str, ifname: str, pod_uid: str, netns: str) -> str:
        """Release an attachment whose DEL never came, then take it off the node (GC's and
        the restart reconcile's step); the controller's release outcome. The address first:
        if the controller cannot be reached, the OVS port (this node's record of the
        attachment) stays for the next try."""
        with self.locks.hold(container_id):
            outcome = self._release(container_id, ifname, pod_uid)
            if self._take_off_node(container_id, ifname, netns):
                self.teardown.wait_for(container_id)
        return outcome

    # ---------------------------------------------------------------- STATUS
    def status(self) -> None:
        """CNI STATUS, polled every few seconds by containerd 2.x, so it is cheap: one look
        at the local OVSDB replica and at the controller channel's state. OVS down means
        existing pods may have lost connectivity (51); no controller means no ADD (50)."""
        try:
            bridge = self.ovs.bridge_exists(self.cfg.bridge)
        except OvsError as exc:
            raise ce.PluginNotAvailableConnectivity(
                "Open vSwitch unreachable: existing pods may have lost connectivity",
                str(exc)) from exc
        if not bridge:
            raise ce.PluginNotAvailableConnectivity(
                f"bridge {self.cfg.bridge} is missing from Open vSwitch")
        if not self.controller.ready(timeout=self.cfg.status_timeout):
            raise ce.PluginNotAvailable("IP controller unreachable: ADD cannot allocate")

    # ----------------------------------------------------------------- CHECK
    def check(self, req: CniRequest) -> None:
        """CNI CHECK: the controller still holds this port for this container, its OVS port
        traces back to it, and the pod's interface has the MAC, addresses, MTU and routes
        ADD gave it."""
        try:
            port = port_info(self.controller.get_port(req.container_id, req.ifname))
        except ce.NotFound:
            raise ce.CheckFailed(f"no port is allocated for container "
                                 f"{req.container_id[:12]} {req.ifname}") from None
        host_if = host_ifname(port.id)
        try:
            iface = self.ovs.get_interface(host_if)
        except OvsError as exc:
            raise ce.TryAgainLater(f"OVSDB unavailable, cannot check {host_if}: {exc}",
                                   str(exc)) from exc
        if iface is None:
            raise ce.CheckFailed(f"OVS port {host_if} is missing from {self.cfg.bridge}")
        want_ids = {"iface-id": port.id, "attached-mac": port.mac,
                    "ecnet/container": req.container_id, "ecnet/ifname": req.ifname}
        wrong = [f"{k}={iface.external_ids.get(k)!r} (want {v!r})"
                 for k, v in want_ids.items() if iface.external_ids.get(k) != v]
        if wrong:
            raise ce.CheckFailed(f"OVS port {host_if} external_ids differ: " + ", ".join(wrong))
        self.netlink.check_pod_interface(
            req.netns, req.ifname, port.mac, [_split(ip.address) for ip in port.ips],
            mtu=req.conf.mtu or port.mtu or self.cfg.default_mtu,
            gateways={ip.version: ip.gateway for ip in port.ips if ip.gateway})
        prev = req.conf.prev_result
        if prev:
            want = {ip.address for ip in port.ips}
            have = {str(i.get("address")) for i in prev.get("ips", []) if isinstance(i, dict)}
            if have and have != want:
                raise ce.CheckFailed(f"prevResult addresses {sorted(have)} differ from the "
                                     f"allocated {sorted(want)}")


def port_external_ids(port_id: str, container_id: str, ifname: str, netns: str, *,
                      network: str = "", mac: str | None = None, ips: str | None = None,
                      pod: str = "", pod_uid: str = "") -> dict[str, str]:
    """What traces an OVS port back to its pod (DESIGN.md "Names"), written by ADD and by
    the restart reconcile's re-plug alike: DEL, CHECK and GC find ports by these keys."""
    ids = {"iface-id": port_id, "iface-status": "active", "ecnet/container": container_id,
           "ecnet/ifname": ifname, "ecnet/netns": netns,
           "ecnet/created": str(int(time.time()))}
    if network:
        ids["ecnet/network"] = network
    if mac is not None:
        ids["attached-mac"] = mac
    if ips is not None:
        ids["ecnet/ips"] = ips
    if pod:
        ids["ecnet/pod"] = pod
    if pod_uid:
        ids["ecnet/pod-uid"] = pod_uid
    return ids


def pod_ref(namespace: str, name: str) -> str:
    """The ecnet/pod value ("namespace/name"), "" without a pod name: ADD and the restart
    reconcile's re-plug write the same."""
    return f"{namespace}/{name}" if name else ""


def bare_addresses(cidrs: Iterable[str]) -> str:
    """"10.0.0.5/24", "fd00::5/64" -> "10.0.0.5,fd00::5": the form of ecnet/ips."""
    return ",".join(c.split("/")[0] for c in cidrs)


def _ovs_failure(exc: OvsError, msg: str) -> ce.CniError:
    """OVSDB or ovs-vswitchd away (no answer in time, connection lost) passes: try again
    later (11); anything else OVS said is a failed attach (120)."""
    if isinstance(exc, OvsConnectionError | OvsTimeout):
        return ce.OvsUnavailable(f"{msg}: Open vSwitch unavailable, try again later", str(exc))
    return ce.OvsAttachError(msg, str(exc))


def _settled(fn: Callable[[], None]) -> Future[None]:
    """Run `fn` here and now; its outcome as a finished future, as if a pool had run it
    (the compensation reads every attach the same way)."""
    fut: Future[None] = Future()
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - kept in the future; result() raises it
        fut.set_exception(exc)
    else:
        fut.set_result(None)
    return fut


def _quietly(fn: Callable[[], T]) -> T | None:
    """Run a compensation step; its own failure must not hide the original error."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - logged; the original error is what matters
        log.warning("compensation step failed: %s", exc)
        return None


def _split(cidr: str) -> tuple[str, int]:
    ip, _, plen = cidr.partition("/")
    return ip, int(plen)


__all__ = ["AgentConfig", "CniHandler", "default_routes"]


def _float(text: str) -> float:
    """A stored number, or 0 (long ago) when absent or unreadable."""
    try:
        return float(text)
    except ValueError:
        return 0.0
