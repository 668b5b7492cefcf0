"""The agent's netlink verbs: build, verify and remove a pod's veth pair.

There is one pod-side step (`PodNetlink._configure_pod_side`: link attributes, addresses,
routes, checksum offload) and two ways to reach it, both through `HostNetns`:

* pipelined (the handler's usual ADD): `prepare_pod_interface` creates the pair before the
  port is known, `enter_pod` opens the pod's sockets while OVS attaches the host end, and
  `finish_pod_end` configures the pod side once the address is known;
* careful (`setup_pod_interface`): a retried ADD or a port with an id of its own; verifies a
  pair already in place, or creates it, then configures it, all in one call.

ADD rolls back everything it created; DEL treats "already gone" as success (STYLE.md 9).
Deleting a pair is batched (`doom_host_end`, `reap_doomed`; the handler's Teardown drives it).
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, Self

from pyroute2.netlink.exceptions import NetlinkError

from ...errors import NetnsNotFound, PlumbingError
from .batch import BatchStep, group_delete, link_probe, pod_side_batch, veth_add
from .check import check_pod_interface
from .monitor import LinkMonitor, OnGone
from .netns import (
    ETHTOOL_STXCSUM,
    GONE,
    HostNetns,
    HostSockets,
    HostWorker,
    PodSockets,
    StepFailed,
    attr,
    enodev,
    ethtool_value,
    exc_errno,
    exc_text,
    exchange,
    get_link,
    ifindex,
    is_netns_fd,
    kind,
    open_netns,
    plumbing,
    send_batch,
    step,
    unless_gone,
)
from .plan import (
    DOOMED_GROUP,
    IFF_UP,
    InterfaceConflict,
    InterfacePlan,
    PodInterfaceResult,
    PodInterfaceSpec,
    VethEnds,
    address_request,
    network_from_alias,
    plan_interface,
    pod_link_changes,
    route_request,
    validate_ifname,
)

log = logging.getLogger(__name__)

_LINK_ATTR = {"address": "MAC", "mtu": "MTU", "state": "state",   # for error messages
              "ifalias": "alias"}
REAP_TIMEOUT = 60.0   # a deletion's RCU barrier on a loaded machine; the kernel always acks
_seqs = itertools.count(1000)  # unique per request: a late ack is never taken for another's


@dataclass
class PendingInterface:
    """A veth pair created ahead of its port: see PodNetlink.prepare_pod_interface."""

    netns: str
    ifname: str
    tmp_host: str
    nsfd: int
    stack: ExitStack               # closes the netns fd and, once entered, the pod's sockets
    host_ifname: str = ""          # its final name, once it has one
    pod: PodSockets | None = None  # set by enter_pod (raw: a netlink socket, no IPRoute)
    pod_index: int = 0             # the container end's ifindex, found by enter_pod


def _tx_checksum_off(plan: InterfacePlan, pod: PodSockets, where: str) -> None:
    """DESIGN.md "The lab": on the userspace datapath TCP hangs unless the pod's eth0 leaves
    checksums to the stack. Raises StepFailed."""
    if plan.tx_checksum_off:
        step(f"turning TX checksum offload off on {plan.ifname} {where}",
             lambda: ethtool_value(pod.ioctl, plan.ifname, ETHTOOL_STXCSUM, 0))


class PodNetlink:
    """One per agent process; safe to call from many threads at once."""

    def __init__(self) -> None:
        self._ns = HostNetns()
        self._closed = False
        self._close_lock = threading.Lock()
        with ExitStack() as undo:   # a failed start-up leaves no thread and no fd behind
            undo.callback(self._ns.close)
            self._host = HostWorker(self._ns.fd)
            undo.callback(self._host.close)
            self._sockets = HostSockets(self._host)
            undo.callback(self._sockets.close)
            self._monitor: LinkMonitor | None = None
            undo.pop_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._monitor is not None:
            self._monitor.close()
        self._sockets.close()
        self._host.close()
        self._ns.close()

    # --------------------------------------------------------------------- host queries
    def host_veths(self, prefixes: tuple[str, ...]) -> list[str]:
        """Names of veth host ends in the agent's netns starting with one of `prefixes`."""
        def job(ipr: Any) -> list[str]:
            out = []
            for link in ipr.link("dump"):
                name = str(attr(link, "IFLA_IFNAME") or "")
                if name.startswith(prefixes) and kind(link) == "veth":
                    out.append(name)
            return out
        return self._host.run(job)

    # ------------------------------------------------------------- the pod-side step
    def _configure_pod_side(self, plan: InterfacePlan, pod: PodSockets, pod_link: Any | None,
                            loopback: bool) -> int:
        """Make the container end what the plan says: link attributes (one request), then
        addresses, routes and checksum offload; returns its ifindex. Raises StepFailed; the
        caller decides what to roll back. What is already in place is left alone, so a
        retried ADD changes nothing."""
        ipr, where = pod.ipr, f"in netns {plan.netns}"
        if pod_link is None:
            pod_link = step(f"looking up {plan.ifname} {where}",
                            lambda: get_link(ipr, plan.ifname))
            if pod_link is None:
                raise StepFailed(f"looking up {plan.ifname} {where}", enodev())
        idx = int(pod_link["index"])
        changes = pod_link_changes(plan, str(attr(pod_link, "IFLA_ADDRESS")),
                                   attr(pod_link, "IFLA_MTU"), pod_link["flags"],
                                   str(attr(pod_link, "IFLA_IFALIAS") or ""))
        if changes:
            what = ", ".join(f"{_LINK_ATTR[k]} {v}" for k, v in changes.items())
            step(f"setting {what} on {plan.ifname} {where}",
                 lambda: ipr.link("set", index=idx, **changes))
        if loopback:
            step(f"bringing up lo {where}", lambda: ipr.link("set", ifname="lo", state="up"))
        for a in plan.addresses:
            step(f"adding address {a.cidr} to {plan.ifname} {where}",
                 partial(ipr.addr, "add", index=idx, **address_request(a)),
                 ok_errnos=(errno.EEXIST,))
        for r in plan.routes:
            step(f"adding route {r.describe()} on {plan.ifname} {where}",
                 partial(ipr.route, "add", **route_request(r, idx)), ok_errnos=(errno.EEXIST,))
        _tx_checksum_off(plan, pod, where)
        return idx

    # ------------------------------------------------------------------ careful ADD
    def setup_pod_interface(self, spec: PodInterfaceSpec) -> PodInterfaceResult:
        """Create (or, for a retried ADD, verify and complete) the pod's veth pair."""
        plan = plan_interface(spec)
        t0 = time.perf_counter()
        with self._ns.inside(plan.netns) as pod:
            try:
                host_link = self._host.run(lambda ipr: get_link(ipr, plan.host_ifname))
                pod_link = get_link(pod.ipr, plan.ifname)
            except (NetlinkError, OSError) as exc:
                raise PlumbingError(f"looking up {plan.host_ifname} (host) and {plan.ifname} "
                                    f"(netns {plan.netns}) failed: {exc_text(exc)}",
                                    exc_text(exc)) from exc
            if host_link is not None:
                res = self._complete_existing(plan, pod, host_link, pod_link)
            elif pod_link is not None:
                raise InterfaceConflict(
                    f"interface {plan.ifname} already exists in netns {plan.netns} "
                    f"(kind={kind(pod_link) or 'unknown'}, mac={attr(pod_link, 'IFLA_ADDRESS')})"
                    f" and is not the peer of {plan.host_ifname}; refusing to touch it")
            else:
                res = self._create(plan, pod)
        log.debug("pod interface ready netns=%s ifname=%s host_ifname=%s created=%s ms=%.2f",
                  plan.netns, plan.ifname, plan.host_ifname, res.created,
                  (time.perf_counter() - t0) * 1e3)
        return res

    def _create(self, plan: InterfacePlan, pod: PodSockets) -> PodInterfaceResult:
        created = False
        try:
            step(f"creating veth {plan.host_ifname} with peer {plan.ifname} in netns "
                 f"{plan.netns}",
                 lambda: self._host.run(lambda ipr: ipr.link(
                     "add", ifname=plan.host_ifname, kind="veth", mtu=plan.mtu,
                     peer={"ifname": plan.ifname, "address": plan.mac, "mtu": plan.mtu,
                           "net_ns_fd": pod.nsfd})))
            created = True
            return self._configure(plan, pod, None, None)
        except BaseException as exc:
            if created:
                self._rollback(plan)
            if isinstance(exc, StepFailed):
                suffix = f"; rolled back (deleted {plan.host_ifname})" if created else ""
                raise PlumbingError(f"{exc.step} failed: {exc_text(exc.cause)}{suffix}",
                                    exc_text(exc.cause)) from exc.cause
            if isinstance(exc, (NetlinkError, OSError)):  # a bug stays a bug (999 at the edge)
                raise PlumbingError(f"setting up {plan.ifname} in netns {plan.netns} failed "
                                    f"unexpectedly: {exc_text(exc)}", exc_text(exc)) from exc
            raise

    def _rollback(self, plan: InterfacePlan) -> None:
        try:
            self._host.run(lambda ipr: ipr.link("del", ifname=plan.host_ifname))
            log.warning("rolled back pod interface netns=%s ifname=%s host_ifname=%s",
                        plan.netns, plan.ifname, plan.host_ifname)
        except NetlinkError as exc:
            if exc.code not in GONE:
                log.error("rollback failed netns=%s ifname=%s host_ifname=%s err=%s",
                          plan.netns, plan.ifname, plan.host_ifname, exc_text(exc))

    def _complete_existing(self, plan: InterfacePlan, pod: PodSockets, host_link: Any,
                           pod_link: Any | None) -> PodInterfaceResult:
        """A retried ADD: the pair must be ours (peers of each other, in this netns, same MAC);
        then finish whatever the first attempt did not. Nothing is deleted on failure: this
        call did not create it, and the runtime's DEL will."""
        where = f"netns {plan.netns}"
        if kind(host_link) != "veth":
            raise InterfaceConflict(f"host interface {plan.host_ifname} already exists and is "
                                    f"not a veth (kind={kind(host_link)})")
        try:
            nsid = self._host.run(lambda ipr: ipr.get_netnsid(fd=pod.nsfd)) or {}
        except NetlinkError as exc:
            raise PlumbingError(f"looking up the id of {where} failed: {exc_text(exc)}",
                                exc_text(exc)) from exc
        peer_ok = (pod_link is not None and kind(pod_link) == "veth"
                   and attr(host_link, "IFLA_LINK") == pod_link["index"]
                   and attr(pod_link, "IFLA_LINK") == host_link["index"]
                   and attr(host_link, "IFLA_LINK_NETNSID") == nsid.get("nsid"))
        if not peer_ok:
            raise InterfaceConflict(
                f"host interface {plan.host_ifname} already exists but its peer is not "
                f"{plan.ifname} in {where}; it is left over from another sandbox: DEL that "
                f"container (or delete {plan.host_ifname}) and retry")
        have_mac = str(attr(pod_link, "IFLA_ADDRESS")).lower()
        if have_mac != plan.mac:
            raise InterfaceConflict(f"interface {plan.ifname} in {where} is our veth but has "
                                    f"MAC {have_mac}, want {plan.mac}")
        if attr(host_link, "IFLA_GROUP") == DOOMED_GROUP:
            # A DEL doomed this pair and its batch did not remove it: this ADD owns it
            # again, so the next batch must not take it.
            plumbing(lambda: self._host.run(
                lambda ipr: ipr.link("set", index=host_link["index"], group=0)),
                f"reclaiming {plan.host_ifname} from deletion")
        try:
            res = self._configure(plan, pod, pod_link, host_link)
        except StepFailed as exc:
            raise PlumbingError(f"{exc.step} failed on a retried ADD: {exc_text(exc.cause)} "
                                f"(interfaces left in place)", exc_text(exc.cause)) from exc.cause
        log.info("retried ADD found pod interface in place netns=%s ifname=%s host_ifname=%s",
                 plan.netns, plan.ifname, plan.host_ifname)
        return res

    def _configure(self, plan: InterfacePlan, pod: PodSockets, pod_link: Any | None,
                   host_link: Any | None) -> PodInterfaceResult:
        """The pod side, then the host end up with the pod's MTU. `host_link` is the host end
        a retried ADD found (None: this call created it)."""
        idx = self._configure_pod_side(plan, pod, pod_link, loopback=True)

        def host_up(hipr: Any) -> Any:
            link = host_link
            if link is None or attr(link, "IFLA_MTU") != plan.mtu or not link["flags"] & IFF_UP:
                hipr.link("set", ifname=plan.host_ifname, mtu=plan.mtu, state="up")
                link = get_link(hipr, plan.host_ifname)
            return link

        hlink = step(f"bringing up host end {plan.host_ifname} (MTU {plan.mtu})",
                     lambda: self._host.run(host_up))
        if hlink is None:
            raise StepFailed(f"looking up host end {plan.host_ifname}", enodev())
        return PodInterfaceResult(
            host_ifname=plan.host_ifname, host_mac=str(attr(hlink, "IFLA_ADDRESS")),
            container_ifindex=idx, container_mac=plan.mac, created=host_link is None)

    # ---------------------------------------------------------------- pipelined ADD
    def prepare_pod_interface(self, netns: str, ifname: str, mtu: int,
                              host_ifname: str | None = None) -> PendingInterface | None:
        """Create the veth pair before the port is known, so the kernel's veth creation
        overlaps the allocation round trip. The peer is created straight into the pod's
        netns by fd (no setns on this path); `enter_pod` opens the pod-side sockets later,
        while OVS attaches the host end. Without `host_ifname` the host end gets a temporary
        name. None means `ifname` already exists in the netns: a retried ADD (or a
        conflict), which `setup_pod_interface` sorts out."""
        ifname = validate_ifname(ifname, "container interface name")
        final = host_ifname is not None
        tmp = validate_ifname(host_ifname, "host interface name") if host_ifname else \
            "ectmp" + secrets.token_hex(5)
        path, nsfd = open_netns(netns)
        stack = ExitStack()
        stack.callback(os.close, nsfd)
        t0 = time.perf_counter()
        # With its final name the host end is created up, ready for OVS at once. A plain
        # netlink request, sent from this thread on a lent host socket (HostSockets): no
        # pyroute2 machinery around it, no hand-off to the host thread and back
        # (docs/performance.md).
        what = f"creating veth with peer {ifname} in netns {path}"
        request = veth_add(1, tmp, mtu, final, ifname, nsfd)
        try:
            with self._sockets.lend() as nl:
                send_batch(nl, request, [BatchStep(1, what)])
        except StepFailed as exc:
            stack.close()
            code = exc_errno(exc.cause)
            if code == errno.EEXIST:
                return None
            if code == errno.EINVAL and not is_netns_fd(nsfd):
                raise NetnsNotFound(f"{path} is not a network namespace (a stale mount "
                                    "point?)", exc_text(exc.cause)) from exc.cause
            raise PlumbingError(f"{what} failed: {exc_text(exc.cause)}",
                                exc_text(exc.cause)) from exc.cause
        except BaseException:
            stack.close()
            raise
        log.debug("veth created netns=%s host_ifname=%s ms=%.2f", path, tmp,
                  (time.perf_counter() - t0) * 1e3)
        return PendingInterface(netns=path, ifname=ifname, tmp_host=tmp, nsfd=nsfd,
                                stack=stack, host_ifname=tmp if final else "")

    def enter_pod(self, pend: PendingInterface) -> None:
        """Open the pod-side sockets (from the thread that will use them) and find the
        container end."""
        if pend.pod is not None:
            return
        pend.pod = self._ns.enter(pend.netns, pend.nsfd, pend.stack, raw=True)
        try:
            pend.pod_index = ifindex(pend.pod.ioctl, pend.ifname)
        except OSError as exc:
            raise PlumbingError(f"looking up {pend.ifname} in netns {pend.netns} failed: "
                                f"{exc_text(exc)}", exc_text(exc)) from exc

    def host_mac(self, pend: PendingInterface) -> str:
        name = pend.host_ifname or pend.tmp_host
        link = self._host.run(lambda ipr: get_link(ipr, name))
        if link is None:
            raise PlumbingError(f"host end {name} vanished")
        return str(attr(link, "IFLA_ADDRESS"))

    def finish_host_end(self, pend: PendingInterface, host_ifname: str, mtu: int) -> str:
        """Give the host end its real name, MTU and state up; returns its MAC."""
        host_ifname = validate_ifname(host_ifname, "host interface name")

        def job(ipr: Any) -> str:
            link = get_link(ipr, pend.tmp_host)
            if link is None:
                raise enodev()
            # One RTM_NEWLINK: the kernel renames before it brings the link up.
            ipr.link("set", index=link["index"], ifname=host_ifname, mtu=mtu, state="up")
            return str(attr(link, "IFLA_ADDRESS"))

        try:
            mac = self._host.run(job)
        except (NetlinkError, OSError) as exc:
            raise PlumbingError(f"naming host end {host_ifname} (was {pend.tmp_host}) failed: "
                                f"{exc_text(exc)}", exc_text(exc)) from exc
        pend.host_ifname = host_ifname
        return mac

    def finish_pod_end(self, pend: PendingInterface, spec: PodInterfaceSpec,
                       host_mac: str) -> PodInterfaceResult:
        """The pod-side step as one netlink batch (netlink.batch: this pair is new, so
        there is nothing to compare first), then close the pod's sockets. Loopback is the
        runtime's (CNI loopback plugin), not ours. On failure the pair stays for
        `abort_pending`."""
        plan = plan_interface(spec)
        try:
            self.enter_pod(pend)
        except BaseException:
            pend.stack.close()
            raise
        pod = pend.pod
        assert pod is not None and pod.nl is not None  # enter_pod set it (raw) or raised
        try:
            data, steps = pod_side_batch(plan, pend.pod_index)
            send_batch(pod.nl, data, steps)
            _tx_checksum_off(plan, pod, f"in netns {plan.netns}")
        except StepFailed as exc:
            raise PlumbingError(f"{exc.step} failed: {exc_text(exc.cause)}",
                                exc_text(exc.cause)) from exc.cause
        finally:
            pend.stack.close()
        return PodInterfaceResult(host_ifname=plan.host_ifname, host_mac=host_mac,
                                  container_ifindex=pend.pod_index, container_mac=plan.mac,
                                  created=True)

    def abort_pending(self, pend: PendingInterface) -> None:
        """Undo `prepare_pod_interface` (allocation failed or a later step did)."""
        pend.stack.close()
        self.delete_pod_interface(pend.host_ifname or pend.tmp_host)

    # ---------------------------------------------------------------------------- DEL
    def delete_pod_interface(self, host_ifname: str, netns: str | None = None,
                             ifname: str | None = None) -> bool:
        """Remove the pair; True if something was removed. Gone already is success."""
        if host_ifname and self._delete_host_end(host_ifname):
            log.debug("deleted pod interface host_ifname=%s netns=%s ifname=%s",
                      host_ifname, netns, ifname)
            return True
        if not (netns and ifname):
            return False
        try:
            with self._ns.inside(netns) as pod:
                link = get_link(pod.ipr, ifname)
                if link is None:
                    return False
                if kind(link) != "veth":
                    log.warning("not deleting non-veth interface netns=%s ifname=%s kind=%s",
                                netns, ifname, kind(link))
                    return False
                try:
                    pod.ipr.link("del", index=link["index"])
                except NetlinkError as exc:
                    if exc.code in GONE:
                        return False
                    raise PlumbingError(f"deleting {ifname} in netns {netns} failed: "
                                        f"{exc_text(exc)}", exc_text(exc)) from exc
        except NetnsNotFound:
            return False
        log.info("deleted pod interface from inside netns netns=%s ifname=%s host_ifname=%s",
                 netns, ifname, host_ifname)
        return True

    def doom_host_end(self, host_ifname: str) -> VethEnds | None:
        """Mark a pod's host veth end for the next `reap_doomed`; what identifies both ends
        (for `watch_unregistered`), or None if there was no such veth.

        Deleting a veth pair makes the kernel wait out RCU grace periods, about 16 ms per
        pair here, but one request deleting a whole link group pays them once for the batch
        (forty pairs in ~26 ms). Moving a link into a group is a plain attribute change,
        cheap enough for DEL's own path."""
        host_ifname = validate_ifname(host_ifname, "host interface name")
        found: list[VethEnds] = []

        def doom(ipr: Any, link: Any) -> None:
            found.append(VethEnds(host_index=int(link["index"]),
                                  pod_nsid=attr(link, "IFLA_LINK_NETNSID"),
                                  pod_index=int(attr(link, "IFLA_LINK") or 0)))
            ipr.link("set", index=link["index"], group=DOOMED_GROUP)

        if not self._on_host_veth(host_ifname, "marking host interface {} for deletion", doom):
            return None
        return found[0]

    def reap_doomed(self) -> bool:
        """Delete every doomed pair in one request; False if there was none. Several calls
        may be in flight at once (teardown.SENDERS), each on a lent socket of its own: the
        request holds it ~15 ms (the kernel's RCU barrier after it let go of the RTNL), and
        the next DEL's must not queue behind it, nor pod creation."""
        what = "deleting the doomed veth pairs"
        seq = next(_seqs)
        try:
            with self._sockets.lend() as nl:
                code = exchange(nl, group_delete(seq, DOOMED_GROUP), {seq}, REAP_TIMEOUT)[seq]
        except OSError as exc:
            raise PlumbingError(f"{what} failed: {exc_text(exc)}", exc_text(exc)) from exc
        if code in GONE:
            return False
        if code:
            err = OSError(code, os.strerror(code))
            raise PlumbingError(f"{what} failed: {exc_text(err)}", exc_text(err))
        return True

    def watch_unregistered(self, on_gone: OnGone, on_overrun: Callable[[], None]) -> None:
        """Start reporting the links the kernel unregisters, here and in every pod's netns
        (netlink.monitor); `on_overrun` when some reports were lost."""
        if self._monitor is not None:
            raise RuntimeError("the link monitor is already running")
        self._monitor = LinkMonitor(self._ns.fd, on_gone, on_overrun)

    def links_gone(self, host_indexes: list[int]) -> set[int]:
        """Which of these links of the agent's netns are gone, unregistering done (a veth's
        pod end goes in the same pass as its host end). One request each, in one sendmsg."""
        if not host_indexes:
            return set()
        seqs = {next(_seqs): index for index in host_indexes}
        data = b"".join(link_probe(seq, index) for seq, index in seqs.items())
        try:
            with self._sockets.lend() as nl:
                acks = exchange(nl, data, set(seqs))
        except OSError as exc:
            raise PlumbingError(f"checking {len(seqs)} doomed links failed: {exc_text(exc)}",
                                exc_text(exc)) from exc
        return {seqs[seq] for seq, code in acks.items() if seq in seqs and code in GONE}

    def _delete_host_end(self, host_ifname: str) -> bool:
        return self._on_host_veth(host_ifname, "deleting host interface {}",
                                  lambda ipr, link: ipr.link("del", index=link["index"]))

    def _on_host_veth(self, host_ifname: str, what: str,
                      action: Callable[[Any, Any], object]) -> bool:
        """Run `action` on our host veth end by that name; False if there is none (or it is
        not a veth: never ours to touch), or it vanished meanwhile."""
        def job(ipr: Any) -> bool:
            link = get_link(ipr, host_ifname)
            if link is None:
                return False
            if kind(link) != "veth":
                log.warning("not touching host interface that is not a veth host_ifname=%s "
                            "kind=%s", host_ifname, kind(link))
                return False
            return unless_gone(lambda: action(ipr, link))
        return plumbing(lambda: self._host.run(job), what.format(host_ifname))

    # -------------------------------------------------------------------------- CHECK
    def pod_network(self, netns: str, ifname: str) -> str:
        """The CNI network ADD recorded on the pod's interface (its ifalias); "" when the
        netns or interface is gone, or ADD recorded none (an older agent)."""
        try:
            with self._ns.inside(netns) as pod:
                link = get_link(pod.ipr, ifname)
        except (PlumbingError, NetlinkError, OSError) as exc:
            log.debug("no network alias netns=%s ifname=%s: %s", netns, ifname, exc)
            return ""
        return network_from_alias(str(attr(link, "IFLA_IFALIAS") or "")) if link else ""

    def check_pod_interface(self, netns: str, ifname: str, mac: str,
                            addresses: list[tuple[str, int]], mtu: int = 0,
                            gateways: dict[int, str] | None = None) -> None:
        check_pod_interface(self._ns, netns, ifname, mac, addresses, mtu, gateways)


__all__ = ["PendingInterface", "PodNetlink"]
