"""The agent's netlink seam: builds, verifies and removes a pod's veth pair.

Two rules shape this module (DESIGN.md "Costs"; STYLE.md 7, 9):

* Entering a pod's netns must be cheap and must never leak. `IPRoute(netns=...)` forks a helper
  process per call (7.7 ms); instead the *calling* thread does setns(CLONE_NEWNET) just long
  enough to create a raw netlink socket and an ioctl socket, then always switches back to the
  host netns. A socket keeps the namespace it was created in, so every later call on it acts
  inside the pod while the thread itself is home again. No pyroute2 code ever runs while the
  thread is away.
* pyroute2 0.9 keeps its socket and asyncio loop per *thread* (`threading.local`): one IPRoute
  shared by the agent's per-request threads would lazily open a new socket in each of them (in
  whatever netns that thread is in at that moment) and hold it until close(). So the warm host
  IPRoute lives on one dedicated thread that never leaves the host netns, and host calls are
  handed to it; pod-side IPRoutes are built per operation on the caller's thread and closed.

ADD rolls back everything it created; DEL treats "already gone" as success.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Self, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import CheckFailed, CniError, NetnsNotFound, PlumbingError

log = logging.getLogger(__name__)

T = TypeVar("T")

IFNAMSIZ = 16  # kernel limit including the NUL: names are at most 15 characters
NETNS_RUN_DIR = "/var/run/netns"
MIN_MTU = 68
MIN_MTU_IPV6 = 1280  # below this the kernel disables IPv6 on the link (RFC 8200 section 5)
MAX_MTU = 65535

_CLONE_NEWNET = 0x40000000
_SIOCETHTOOL = 0x8946
_ETHTOOL_GTXCSUM = 0x16
_ETHTOOL_STXCSUM = 0x17
_IFA_F_NODAD = 0x02
_IFF_UP = 0x1
_NETLINK_ROUTE = 0
_GONE = (errno.ENODEV, errno.ENOENT)
# IFLA_GROUP of host veth ends whose pod was deleted, waiting for one batched delete
# (`PodNetlink.reap_doomed`). Group 0 is every link's default; this one is ours alone.
DOOMED_GROUP = 0xEC0DE


# --------------------------------------------------------------------------------- errors
class InvalidInterfaceSpec(PlumbingError):
    """The request itself is unusable (bad name, MAC, address, MTU); nothing was touched."""

    default_msg = "invalid pod interface specification"


class InterfaceConflict(PlumbingError):
    """A name we need is held by something that is not this pod's veth; we refuse to touch it."""

    default_msg = "pod interface name conflict"


# ------------------------------------------------------------------------ spec and result
@dataclass(frozen=True)
class PodInterfaceSpec:
    """What the agent wants a pod's interface to look like; built from the allocated port."""

    netns: str                                   # path: /var/run/netns/X, /proc/PID/ns/net
    ifname: str                                  # container side, e.g. eth0
    host_ifname: str                             # host side, tap + 11 chars of the port id
    mac: str                                     # container side MAC
    addresses: list[tuple[str, int]]             # (ip, prefixlen), IPv4 and/or IPv6
    gateways: dict[int, str] = field(default_factory=dict)   # 4/6 (or AF_*) -> gateway ip
    routes: list[tuple[str, str | None]] = field(default_factory=list)  # (dst cidr, gw|None)
    mtu: int = 1500                              # both ends
    tx_checksum_off: bool = False                # userspace OVS datapath needs it for TCP


@dataclass(frozen=True)
class PodInterfaceResult:
    host_ifname: str
    host_mac: str
    container_ifindex: int
    container_mac: str
    created: bool = True   # False when a retried ADD found the pair already in place


@dataclass(frozen=True)
class AddressPlan:
    version: int
    address: str
    prefixlen: int

    @property
    def family(self) -> int:
        return socket.AF_INET if self.version == 4 else socket.AF_INET6

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class RoutePlan:
    version: int
    dst: str          # network address
    dst_len: int
    gateway: str | None

    @property
    def family(self) -> int:
        return socket.AF_INET if self.version == 4 else socket.AF_INET6

    def describe(self) -> str:
        dst = "default" if self.dst_len == 0 else f"{self.dst}/{self.dst_len}"
        return f"{dst} via {self.gateway}" if self.gateway else f"{dst} (on-link)"


@dataclass(frozen=True)
class InterfacePlan:
    """A validated, normalised spec: everything the kernel will be asked for, decided up front
    so a bad request fails before anything is created."""

    netns: str
    ifname: str
    host_ifname: str
    mac: str
    mtu: int
    addresses: tuple[AddressPlan, ...]
    routes: tuple[RoutePlan, ...]
    tx_checksum_off: bool


# ----------------------------------------------------------------------------- pure core
_IFNAME_BAD = re.compile(r"[\s/:]")
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
_FAMILY_KEYS: dict[object, int] = {
    4: 4, 6: 6, socket.AF_INET: 4, socket.AF_INET6: 6,
    "4": 4, "6": 6, "ipv4": 4, "ipv6": 6, "inet": 4, "inet6": 6, "v4": 4, "v6": 6,
}


def validate_ifname(name: str, what: str = "interface name") -> str:
    """The kernel's own rules (dev_valid_name), checked early so the error names the field."""
    if not name or len(name) >= IFNAMSIZ or name in (".", "..") or _IFNAME_BAD.search(name):
        raise InvalidInterfaceSpec(
            f"{what} {name!r} is not a valid Linux interface name "
            f"(1-{IFNAMSIZ - 1} characters, no whitespace, '/' or ':')")
    return name


def normalize_mac(mac: str) -> str:
    """Lower-case colon form; a multicast MAC is refused here because the kernel would refuse
    it later with a much less helpful EADDRNOTAVAIL."""
    m = mac.strip().lower()
    if not _MAC_RE.match(m):
        raise InvalidInterfaceSpec(f"MAC address {mac!r} is not of the form aa:bb:cc:dd:ee:ff")
    m = m.replace("-", ":")
    if int(m[:2], 16) & 1:
        raise InvalidInterfaceSpec(f"MAC address {mac!r} is a multicast address")
    if m == "00:00:00:00:00:00":
        raise InvalidInterfaceSpec("MAC address 00:00:00:00:00:00 is not usable")
    return m


def normalize_netns_path(netns: str) -> str:
    """Runtimes pass a path (/var/run/netns/X, /run/netns/X, /proc/PID/ns/net); a bare name is
    taken as one made by `ip netns add`."""
    ns = (netns or "").strip()
    if not ns:
        raise InvalidInterfaceSpec("network namespace path is empty")
    if "/" not in ns:
        return f"{NETNS_RUN_DIR}/{ns}"
    if not ns.startswith("/"):
        raise InvalidInterfaceSpec(f"network namespace path {netns!r} is not absolute")
    return ns


def parse_address(item: tuple[str, int] | str) -> AddressPlan:
    """Accepts (ip, prefixlen) or 'ip/prefixlen'."""
    try:
        if isinstance(item, str):
            iface = ipaddress.ip_interface(item.strip())
        else:
            ip, plen = item
            iface = ipaddress.ip_interface(f"{str(ip).strip()}/{int(plen)}")
    except (ValueError, TypeError) as exc:
        raise InvalidInterfaceSpec(f"address {item!r} is not a valid IP address with a "
                                   f"prefix length: {exc}") from None
    return AddressPlan(iface.version, str(iface.ip), iface.network.prefixlen)


def family_version(key: object) -> int:
    """Gateways may be keyed by IP version (4/6), by AF_INET/AF_INET6 or by name."""
    if isinstance(key, str):
        key = key.strip().lower()
    try:
        return _FAMILY_KEYS[key]
    except (KeyError, TypeError):
        raise InvalidInterfaceSpec(f"gateway family {key!r} is not one of 4, 6, "
                                   "'ipv4', 'ipv6'") from None


def _parse_ip(value: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise InvalidInterfaceSpec(f"{what} {value!r} is not an IP address") from None


def parse_route(dst: str, gateway: str | None) -> RoutePlan:
    """'default' is accepted for either family only with a gateway that tells which."""
    gw = _parse_ip(gateway, "route gateway") if gateway else None
    d = (dst or "").strip()
    if d == "default":
        if gw is None:
            raise InvalidInterfaceSpec("a 'default' route needs a gateway")
        d = "0.0.0.0/0" if gw.version == 4 else "::/0"
    try:
        net = ipaddress.ip_network(d, strict=False)
    except ValueError:
        raise InvalidInterfaceSpec(f"route destination {dst!r} is not a network") from None
    if gw is not None and gw.version != net.version:
        raise InvalidInterfaceSpec(f"route {dst} has an IPv{gw.version} gateway {gateway} "
                                   f"for an IPv{net.version} destination")
    return RoutePlan(net.version, str(net.network_address), net.prefixlen,
                     str(gw) if gw is not None else None)


def build_routes(gateways: Mapping[Any, str],
                 routes: Iterable[tuple[str, str | None]],
                 versions: set[int]) -> tuple[RoutePlan, ...]:
    """On-link routes first (a gateway may depend on them), then one default route per gateway,
    then the explicit routes via gateways; duplicates are dropped, contradictions refused."""
    plans: list[RoutePlan] = []
    for key, gw in gateways.items():
        if not gw:
            continue
        version = family_version(key)
        gw_ip = _parse_ip(gw, f"IPv{version} gateway")
        if gw_ip.version != version:
            raise InvalidInterfaceSpec(f"gateway {gw} is given for IPv{version} but is "
                                       f"IPv{gw_ip.version}")
        plans.append(RoutePlan(version, "0.0.0.0" if version == 4 else "::", 0, str(gw_ip)))
    for dst, via in routes:
        plans.append(parse_route(dst, via or None))
    seen: dict[tuple[int, str, int], RoutePlan] = {}
    for p in plans:
        key = (p.version, p.dst, p.dst_len)
        if key in seen:
            if seen[key].gateway != p.gateway:
                raise InvalidInterfaceSpec(f"conflicting routes to {p.describe()} and "
                                           f"{seen[key].describe()}")
            continue
        if p.version not in versions:
            raise InvalidInterfaceSpec(f"route {p.describe()} is IPv{p.version} but the pod "
                                       f"has no IPv{p.version} address")
        seen[key] = p
    ordered = list(seen.values())
    return tuple([p for p in ordered if p.gateway is None] +
                 [p for p in ordered if p.gateway is not None])


def plan_interface(spec: PodInterfaceSpec) -> InterfacePlan:
    """Validate and normalise a spec without touching the system."""
    ifname = validate_ifname(spec.ifname, "container interface name")
    host = validate_ifname(spec.host_ifname, "host interface name")
    addrs: list[AddressPlan] = []
    for item in spec.addresses:
        a = parse_address(item)
        if a not in addrs:
            addrs.append(a)
    versions = {a.version for a in addrs}
    if not isinstance(spec.mtu, int) or not MIN_MTU <= spec.mtu <= MAX_MTU:
        raise InvalidInterfaceSpec(f"MTU {spec.mtu!r} is outside {MIN_MTU}..{MAX_MTU}")
    if 6 in versions and spec.mtu < MIN_MTU_IPV6:
        raise InvalidInterfaceSpec(f"MTU {spec.mtu} is below {MIN_MTU_IPV6}, the minimum "
                                   "for an interface with IPv6 addresses")
    return InterfacePlan(
        netns=normalize_netns_path(spec.netns), ifname=ifname, host_ifname=host,
        mac=normalize_mac(spec.mac), mtu=spec.mtu, addresses=tuple(addrs),
        routes=build_routes(spec.gateways, spec.routes, versions),
        tx_checksum_off=spec.tx_checksum_off)


def errno_text(code: int) -> str:
    """'ENETUNREACH (Network is unreachable)': the symbol for searching, the text for reading."""
    name = errno.errorcode.get(code, f"errno {code}")
    return f"{name} ({os.strerror(code)})"


def exc_text(exc: BaseException) -> str:
    code = _exc_errno(exc)
    if code is not None:
        return errno_text(code)
    return f"{type(exc).__name__}: {exc}"


def _exc_errno(exc: BaseException) -> int | None:
    if isinstance(exc, NetlinkError):
        return int(exc.code)
    if isinstance(exc, OSError) and exc.errno is not None:
        return int(exc.errno)
    return None


# ------------------------------------------------------------------------- kernel access
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _EthtoolValue(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]


class _Ifreq(ctypes.Structure):
    # struct ifreq: a 16-byte name and a 24-byte union; we use its pointer member.
    _fields_ = [("ifr_name", ctypes.c_char * IFNAMSIZ), ("ifr_data", ctypes.c_void_p),
                ("_pad", ctypes.c_char * 16)]


def _is_netns_fd(fd: int) -> bool:
    """A netns fd links to "net:[inode]"; a stale mount point is a plain file."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("net:")
    except OSError:
        return False


def _ethtool_value(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    """SIOCETHTOOL acts in the namespace of the socket it is issued on, not of the thread."""
    value = _EthtoolValue(cmd, data)
    req = _Ifreq(ifname.encode(), ctypes.cast(ctypes.pointer(value), ctypes.c_void_p))
    fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, req)
    return int(value.data)


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def _kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _unless_gone(call: Callable[[], object]) -> bool:
    """Run a netlink request; False if its object is already gone, True if it ran."""
    try:
        call()
    except NetlinkError as exc:
        if exc.code in _GONE:
            return False
        raise
    return True


def _plumbing(call: Callable[[], T], what: str) -> T:
    """A host netlink call whose failure is the pod's plumbing error (CNI code 110)."""
    try:
        return call()
    except NetlinkError as exc:
        raise PlumbingError(f"{what} failed: {exc_text(exc)}", exc_text(exc)) from exc


def _get_link(ipr: Any, ifname: str) -> Any | None:
    try:
        links = ipr.link("get", ifname=ifname)
    except NetlinkError as exc:
        if exc.code in _GONE:
            return None
        raise
    return links[0] if links else None


class _StepFailed(Exception):
    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(step)
        self.step = step
        self.cause = cause


def _step(step: str, fn: Callable[[], T], ok_errnos: Sequence[int] = ()) -> T | None:
    """Run one kernel step; remember which one failed so the error can name it."""
    try:
        return fn()
    except (NetlinkError, OSError) as exc:
        if _exc_errno(exc) in ok_errnos:
            return None
        raise _StepFailed(step, exc) from exc


class _HostWorker:
    """The one thread that owns the warm host-namespace IPRoute (see the module docstring)."""

    def __init__(self, host_fd: int) -> None:
        self._host_fd = host_fd
        self._ipr: Any = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecnet-netlink-host")
        self.run(lambda ipr: None)  # open now: fail at start-up, not on the first pod

    def _job(self, fn: Callable[[Any], T]) -> T:
        if self._ipr is None:
            _setns(self._host_fd)  # a no-op normally; makes "host" explicit for this thread
            self._ipr = IPRoute()
        return fn(self._ipr)

    def run(self, fn: Callable[[Any], T]) -> T:
        try:
            fut = self._pool.submit(self._job, fn)
        except RuntimeError:  # submit after shutdown
            raise PlumbingError("the agent's netlink seam is closed") from None
        return fut.result()

    def close(self) -> None:
        def _close() -> None:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None
        try:
            self._pool.submit(_close).result()
        except RuntimeError:  # already shut down
            pass
        self._pool.shutdown(wait=True)


@dataclass
class PendingInterface:
    """A veth pair created ahead of its port: see PodNetlink.prepare_pod_interface."""

    netns: str
    ifname: str
    tmp_host: str
    stack: ExitStack
    pod: Any
    host_ifname: str = ""
    nsfd: int = -1
    pod_index: int = 0


@dataclass
class _Pod:
    """Sockets living in one pod netns, usable from the thread that opened them."""

    path: str
    nsfd: int
    ipr: Any
    ioctl: socket.socket


class PodNetlink:
    """One per agent process; safe to call from many threads at once.

    A calling thread briefly enters the pod's netns and is always put back into the host netns
    (the main thread's, recorded at construction), whatever netns it was in before."""

    def __init__(self) -> None:
        # /proc/self is the thread-group leader: the main thread's netns is the host's.
        self._host_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._host_ino = os.fstat(self._host_fd).st_ino
        self._closed = False
        self._close_lock = threading.Lock()
        try:
            self._host = _HostWorker(self._host_fd)
            # Batched deletes wait out the kernel's RCU grace periods; on their own thread
            # and socket so pod creation never queues behind them.
            self._reaper = _HostWorker(self._host_fd)
        except BaseException:
            if getattr(self, "_host", None) is not None:
                self._host.close()
            os.close(self._host_fd)
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._host.close()
        self._reaper.close()
        os.close(self._host_fd)

    # ------------------------------------------------------------- namespace plumbing
    def _go_home(self) -> None:
        try:
            _setns(self._host_fd)
            ino = os.stat("/proc/thread-self/ns/net").st_ino
        except OSError as exc:
            log.critical("could not return thread to the host netns thread=%s err=%s",
                         threading.current_thread().name, exc_text(exc))
            raise PlumbingError("agent thread could not return to the host network namespace",
                                exc_text(exc)) from exc
        if ino != self._host_ino:
            log.critical("thread is not in the host netns after setns thread=%s",
                         threading.current_thread().name)
            raise PlumbingError("agent thread is not in the host network namespace after "
                                "returning from a pod")

    def _open_sockets(self, nsfd: int, path: str) -> tuple[socket.socket, socket.socket]:
        try:
            _setns(nsfd)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise NetnsNotFound(f"{path} is not a network namespace (a stale mount point?)",
                                    exc_text(exc)) from None
            raise PlumbingError(f"entering network namespace {path} failed: {exc_text(exc)}",
                                exc_text(exc)) from exc
        try:
            nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_ROUTE)
            try:
                io = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            except BaseException:
                nl.close()
                raise
        finally:
            self._go_home()
        return nl, io

    @contextmanager
    def _in_netns(self, netns: str) -> Iterator[_Pod]:
        path = normalize_netns_path(netns)
        try:
            nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NetnsNotFound(f"network namespace {path} does not exist") from None
        except OSError as exc:
            raise PlumbingError(f"opening network namespace {path} failed: {exc_text(exc)}",
                                exc_text(exc)) from exc
        try:
            try:
                nl, io = self._open_sockets(nsfd, path)
            except OSError as exc:
                raise PlumbingError(f"opening sockets in network namespace {path} failed: "
                                    f"{exc_text(exc)}", exc_text(exc)) from exc
            try:
                ipr = IPRoute(fileno=nl.detach())
            except BaseException:
                io.close()
                raise
            try:
                yield _Pod(path, nsfd, ipr, io)
            finally:
                ipr.close()
                io.close()
        finally:
            os.close(nsfd)

    # --------------------------------------------------------------------- host queries
    def host_veths(self, prefixes: tuple[str, ...]) -> list[str]:
        """Names of veth host ends in the agent's netns starting with one of `prefixes`."""
        def job(ipr: Any) -> list[str]:
            out = []
            for link in ipr.link("dump"):
                name = str(_attr(link, "IFLA_IFNAME") or "")
                if name.startswith(prefixes) and _kind(link) == "veth":
                    out.append(name)
            return out
        return self._host.run(job)

    def host_link_exists(self, name: str) -> bool:
        return self._host.run(lambda ipr: _get_link(ipr, name)) is not None

    def host_link_mac(self, name: str) -> str | None:
        link = self._host.run(lambda ipr: _get_link(ipr, name))
        return None if link is None else str(_attr(link, "IFLA_ADDRESS"))

    # ---------------------------------------------------------------------------- ADD
    def setup_pod_interface(self, spec: PodInterfaceSpec) -> PodInterfaceResult:
        """Create (or, for a retried ADD, verify and complete) the pod's veth pair."""
        plan = plan_interface(spec)
        t0 = time.perf_counter()
        with self._in_netns(plan.netns) as pod:
            try:
                host_link = self._host.run(lambda ipr: _get_link(ipr, plan.host_ifname))
                pod_link = _get_link(pod.ipr, plan.ifname)
            except (NetlinkError, OSError) as exc:
                raise PlumbingError(f"looking up {plan.host_ifname} (host) and {plan.ifname} "
                                    f"(netns {plan.netns}) failed: {exc_text(exc)}",
                                    exc_text(exc)) from exc
            if host_link is not None:
                res = self._complete_existing(plan, pod, host_link, pod_link)
            elif pod_link is not None:
                raise InterfaceConflict(
                    f"interface {plan.ifname} already exists in netns {plan.netns} "
                    f"(kind={_kind(pod_link) or 'unknown'}, mac={_attr(pod_link, 'IFLA_ADDRESS')})"
                    f" and is not the peer of {plan.host_ifname}; refusing to touch it")
            else:
                res = self._create(plan, pod)
        log.debug("pod interface ready netns=%s ifname=%s host_ifname=%s created=%s ms=%.2f",
                  plan.netns, plan.ifname, plan.host_ifname, res.created,
                  (time.perf_counter() - t0) * 1e3)
        return res

    def _create(self, plan: InterfacePlan, pod: _Pod) -> PodInterfaceResult:
        created = False
        try:
            _step(f"creating veth {plan.host_ifname} with peer {plan.ifname} in netns "
                  f"{plan.netns}",
                  lambda: self._host.run(lambda ipr: ipr.link(
                      "add", ifname=plan.host_ifname, kind="veth", mtu=plan.mtu,
                      peer={"ifname": plan.ifname, "address": plan.mac, "mtu": plan.mtu,
                            "net_ns_fd": pod.nsfd})))
            created = True
            return self._configure(plan, pod, retry=False)
        except BaseException as exc:
            if created:
                self._rollback(plan)
            if isinstance(exc, _StepFailed):
                suffix = f"; rolled back (deleted {plan.host_ifname})" if created else ""
                raise PlumbingError(f"{exc.step} failed: {exc_text(exc.cause)}{suffix}",
                                    exc_text(exc.cause)) from exc.cause
            if isinstance(exc, Exception) and not isinstance(exc, CniError):
                raise PlumbingError(f"setting up {plan.ifname} in netns {plan.netns} failed "
                                    f"unexpectedly: {exc!r}", repr(exc)) from exc
            raise

    def _rollback(self, plan: InterfacePlan) -> None:
        try:
            self._host.run(lambda ipr: ipr.link("del", ifname=plan.host_ifname))
            log.warning("rolled back pod interface netns=%s ifname=%s host_ifname=%s",
                        plan.netns, plan.ifname, plan.host_ifname)
        except NetlinkError as exc:
            if exc.code not in _GONE:
                log.error("rollback failed netns=%s ifname=%s host_ifname=%s err=%s",
                          plan.netns, plan.ifname, plan.host_ifname, exc_text(exc))

    def _complete_existing(self, plan: InterfacePlan, pod: _Pod, host_link: Any,
                           pod_link: Any | None) -> PodInterfaceResult:
        """A retried ADD: the pair must be ours (peers of each other, in this netns, same MAC);
        then finish whatever the first attempt did not. Nothing is deleted on failure: this
        call did not create it, and the runtime's DEL will."""
        where = f"netns {plan.netns}"
        if _kind(host_link) != "veth":
            raise InterfaceConflict(f"host interface {plan.host_ifname} already exists and is "
                                    f"not a veth (kind={_kind(host_link)})")
        try:
            nsid = self._host.run(lambda ipr: ipr.get_netnsid(fd=pod.nsfd)) or {}
        except NetlinkError as exc:
            raise PlumbingError(f"looking up the id of {where} failed: {exc_text(exc)}",
                                exc_text(exc)) from exc
        peer_ok = (pod_link is not None and _kind(pod_link) == "veth"
                   and _attr(host_link, "IFLA_LINK") == pod_link["index"]
                   and _attr(pod_link, "IFLA_LINK") == host_link["index"]
                   and _attr(host_link, "IFLA_LINK_NETNSID") == nsid.get("nsid"))
        if not peer_ok:
            raise InterfaceConflict(
                f"host interface {plan.host_ifname} already exists but its peer is not "
                f"{plan.ifname} in {where}; it is left over from another sandbox: DEL that "
                f"container (or delete {plan.host_ifname}) and retry")
        have_mac = str(_attr(pod_link, "IFLA_ADDRESS")).lower()
        if have_mac != plan.mac:
            raise InterfaceConflict(f"interface {plan.ifname} in {where} is our veth but has "
                                    f"MAC {have_mac}, want {plan.mac}")
        if _attr(host_link, "IFLA_GROUP") == DOOMED_GROUP:
            # A DEL doomed this pair and its batch did not remove it: this ADD owns it
            # again, so the next batch must not take it.
            _plumbing(lambda: self._host.run(
                lambda ipr: ipr.link("set", index=host_link["index"], group=0)),
                f"reclaiming {plan.host_ifname} from deletion")
        try:
            res = self._configure(plan, pod, retry=True, pod_link=pod_link, host_link=host_link)
        except _StepFailed as exc:
            raise PlumbingError(f"{exc.step} failed on a retried ADD: {exc_text(exc.cause)} "
                                f"(interfaces left in place)", exc_text(exc.cause)) from exc.cause
        log.info("retried ADD found pod interface in place netns=%s ifname=%s host_ifname=%s",
                 plan.netns, plan.ifname, plan.host_ifname)
        return res

    def _configure(self, plan: InterfacePlan, pod: _Pod, retry: bool,
                   pod_link: Any | None = None, host_link: Any | None = None
                   ) -> PodInterfaceResult:
        ipr = pod.ipr
        where = f"in netns {plan.netns}"
        if pod_link is None:
            pod_link = _step(f"looking up {plan.ifname} {where}",
                             lambda: _get_link(ipr, plan.ifname))
            if pod_link is None:
                raise _StepFailed(f"looking up {plan.ifname} {where}",
                                  OSError(errno.ENODEV, os.strerror(errno.ENODEV)))
        idx = int(pod_link["index"])
        if retry and _attr(pod_link, "IFLA_MTU") != plan.mtu:
            _step(f"setting MTU {plan.mtu} on {plan.ifname} {where}",
                  lambda: ipr.link("set", index=idx, mtu=plan.mtu))
        _step(f"bringing up lo {where}", lambda: ipr.link("set", ifname="lo", state="up"))
        if not (pod_link["flags"] & _IFF_UP):
            _step(f"bringing up {plan.ifname} {where}",
                  lambda: ipr.link("set", index=idx, state="up"))
        for a in plan.addresses:
            flags = _IFA_F_NODAD if a.version == 6 else 0  # usable at once, no DAD wait
            _step(f"adding address {a.cidr} to {plan.ifname} {where}",
                  partial(ipr.addr, "add", index=idx, address=a.address,
                          prefixlen=a.prefixlen, flags=flags),
                  ok_errnos=(errno.EEXIST,))
        for r in plan.routes:
            kw: dict[str, Any] = {"family": r.family, "dst_len": r.dst_len, "oif": idx}
            if r.dst_len:
                kw["dst"] = r.dst
            if r.gateway:
                kw["gateway"] = r.gateway
            else:
                kw["scope"] = 253  # RT_SCOPE_LINK
            _step(f"adding route {r.describe()} on {plan.ifname} {where}",
                  partial(ipr.route, "add", **kw), ok_errnos=(errno.EEXIST,))
        if plan.tx_checksum_off:
            # DESIGN.md "The lab": on the userspace datapath TCP hangs unless the pod's eth0
            # leaves checksums to the stack.
            _step(f"turning TX checksum offload off on {plan.ifname} {where}",
                  lambda: _ethtool_value(pod.ioctl, plan.ifname, _ETHTOOL_STXCSUM, 0))

        def host_up(hipr: Any) -> Any:
            link = host_link
            if link is None or _attr(link, "IFLA_MTU") != plan.mtu or not link["flags"] & _IFF_UP:
                hipr.link("set", ifname=plan.host_ifname, mtu=plan.mtu, state="up")
                link = _get_link(hipr, plan.host_ifname)
            return link

        hlink = _step(f"bringing up host end {plan.host_ifname} (MTU {plan.mtu})",
                      lambda: self._host.run(host_up))
        if hlink is None:
            raise _StepFailed(f"looking up host end {plan.host_ifname}",
                              OSError(errno.ENODEV, os.strerror(errno.ENODEV)))
        return PodInterfaceResult(
            host_ifname=plan.host_ifname, host_mac=str(_attr(hlink, "IFLA_ADDRESS")),
            container_ifindex=idx, container_mac=str(_attr(pod_link, "IFLA_ADDRESS")).lower(),
            created=not retry)

    # ------------------------------------------------------------ pipelined ADD (fast)
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
        path = normalize_netns_path(netns)
        try:
            nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NetnsNotFound(f"network namespace {path} does not exist") from None
        except OSError as exc:
            raise PlumbingError(f"opening network namespace {path} failed: {exc_text(exc)}",
                                exc_text(exc)) from exc
        stack = ExitStack()
        stack.callback(os.close, nsfd)
        t0 = time.perf_counter()
        try:
            # With its final name the host end is created up, ready for OVS at once.
            self._host.run(lambda ipr: ipr.link(
                "add", ifname=tmp, kind="veth", mtu=mtu, **({"state": "up"} if final else {}),
                peer={"ifname": ifname, "mtu": mtu, "net_ns_fd": nsfd}))
        except NetlinkError as exc:
            stack.close()
            if exc.code == errno.EEXIST:
                return None
            if exc.code == errno.EINVAL and not _is_netns_fd(nsfd):
                raise NetnsNotFound(f"{path} is not a network namespace (a stale mount "
                                    "point?)", exc_text(exc)) from exc
            raise PlumbingError(f"creating veth with peer {ifname} in netns {path} "
                                f"failed: {exc_text(exc)}", exc_text(exc)) from exc
        except BaseException:
            stack.close()
            raise
        log.debug("veth created netns=%s host_ifname=%s ms=%.2f", path, tmp,
                  (time.perf_counter() - t0) * 1e3)
        return PendingInterface(netns=path, ifname=ifname, tmp_host=tmp, stack=stack,
                                pod=None, host_ifname=tmp if final else "", nsfd=nsfd)

    def enter_pod(self, pend: PendingInterface) -> None:
        """Open the pod-side sockets (from the thread that will use them) and find the
        container interface's index."""
        if pend.pod is not None:
            return
        try:
            nl, io = self._open_sockets(pend.nsfd, pend.netns)
        except OSError as exc:
            raise PlumbingError(f"opening sockets in network namespace {pend.netns} failed: "
                                f"{exc_text(exc)}", exc_text(exc)) from exc
        pend.stack.callback(io.close)
        ipr = IPRoute(fileno=nl.detach())
        pend.stack.callback(ipr.close)
        pend.pod = _Pod(pend.netns, pend.nsfd, ipr, io)
        try:
            link = _get_link(ipr, pend.ifname)
        except (NetlinkError, OSError) as exc:
            raise PlumbingError(f"looking up {pend.ifname} in netns {pend.netns} failed: "
                                f"{exc_text(exc)}", exc_text(exc)) from exc
        pend.pod_index = int(link["index"]) if link is not None else 0

    def host_mac(self, pend: PendingInterface) -> str:
        name = pend.host_ifname or pend.tmp_host
        link = self._host.run(lambda ipr: _get_link(ipr, name))
        if link is None:
            raise PlumbingError(f"host end {name} vanished")
        return str(_attr(link, "IFLA_ADDRESS"))

    def finish_host_end(self, pend: PendingInterface, host_ifname: str, mtu: int) -> str:
        """Give the host end its real name, MTU and state up; returns its MAC."""
        host_ifname = validate_ifname(host_ifname, "host interface name")

        def job(ipr: Any) -> str:
            link = _get_link(ipr, pend.tmp_host)
            if link is None:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            # One RTM_NEWLINK: the kernel renames before it brings the link up.
            ipr.link("set", index=link["index"], ifname=host_ifname, mtu=mtu, state="up")
            return str(_attr(link, "IFLA_ADDRESS"))

        try:
            mac = self._host.run(job)
        except (NetlinkError, OSError) as exc:
            raise PlumbingError(f"naming host end {host_ifname} (was {pend.tmp_host}) failed: "
                                f"{exc_text(exc)}", exc_text(exc)) from exc
        pend.host_ifname = host_ifname
        return mac

    def finish_pod_end(self, pend: PendingInterface, spec: PodInterfaceSpec,
                       host_mac: str) -> PodInterfaceResult:
        """MAC, MTU, up, addresses, routes, checksum offload inside the pod; then close the
        pod's sockets. Loopback is the runtime's (CNI loopback plugin), not ours."""
        plan = plan_interface(spec)
        try:
            self.enter_pod(pend)
        except BaseException:
            pend.stack.close()
            raise
        ipr, where = pend.pod.ipr, f"in netns {pend.netns}"
        try:
            idx = pend.pod_index
            if not idx:
                link = _step(f"looking up {plan.ifname} {where}",
                             lambda: _get_link(ipr, plan.ifname))
                if link is None:
                    raise _StepFailed(f"looking up {plan.ifname} {where}",
                                      OSError(errno.ENODEV, os.strerror(errno.ENODEV)))
                idx = int(link["index"])
            _step(f"setting MAC {plan.mac}, MTU {plan.mtu} and up on {plan.ifname} {where}",
                  lambda: ipr.link("set", index=idx, address=plan.mac, mtu=plan.mtu,
                                   state="up"))
            for a in plan.addresses:
                flags = _IFA_F_NODAD if a.version == 6 else 0
                _step(f"adding address {a.cidr} to {plan.ifname} {where}",
                      partial(ipr.addr, "add", index=idx, address=a.address,
                              prefixlen=a.prefixlen, flags=flags), ok_errnos=(errno.EEXIST,))
            for r in plan.routes:
                kw: dict[str, Any] = {"family": r.family, "dst_len": r.dst_len, "oif": idx}
                if r.dst_len:
                    kw["dst"] = r.dst
                if r.gateway:
                    kw["gateway"] = r.gateway
                else:
                    kw["scope"] = 253  # RT_SCOPE_LINK
                _step(f"adding route {r.describe()} on {plan.ifname} {where}",
                      partial(ipr.route, "add", **kw), ok_errnos=(errno.EEXIST,))
            if plan.tx_checksum_off:
                _step(f"turning TX checksum offload off on {plan.ifname} {where}",
                      lambda: _ethtool_value(pend.pod.ioctl, plan.ifname, _ETHTOOL_STXCSUM, 0))
        except _StepFailed as exc:
            raise PlumbingError(f"{exc.step} failed: {exc_text(exc.cause)}",
                                exc_text(exc.cause)) from exc.cause
        finally:
            pend.stack.close()
        return PodInterfaceResult(host_ifname=plan.host_ifname, host_mac=host_mac,
                                  container_ifindex=idx, container_mac=plan.mac, created=True)

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
            with self._in_netns(netns) as pod:
                link = _get_link(pod.ipr, ifname)
                if link is None:
                    return False
                if _kind(link) != "veth":
                    log.warning("not deleting non-veth interface netns=%s ifname=%s kind=%s",
                                netns, ifname, _kind(link))
                    return False
                try:
                    pod.ipr.link("del", index=link["index"])
                except NetlinkError as exc:
                    if exc.code in _GONE:
                        return False
                    raise PlumbingError(f"deleting {ifname} in netns {netns} failed: "
                                        f"{exc_text(exc)}", exc_text(exc)) from exc
        except NetnsNotFound:
            return False
        log.info("deleted pod interface from inside netns netns=%s ifname=%s host_ifname=%s",
                 netns, ifname, host_ifname)
        return True

    def doom_host_end(self, host_ifname: str) -> bool:
        """Mark a pod's host veth end for the next `reap_doomed`; True if there was one.

        Deleting a veth pair makes the kernel wait out RCU grace periods, about 16 ms per
        pair here, but one request deleting a whole link group pays them once for the batch
        (forty pairs in ~26 ms). Moving a link into a group is a plain attribute change,
        cheap enough for DEL's own path."""
        host_ifname = validate_ifname(host_ifname, "host interface name")
        return self._on_host_veth(host_ifname, "marking host interface {} for deletion",
                                  lambda ipr, index: ipr.link("set", index=index,
                                                              group=DOOMED_GROUP))

    def reap_doomed(self) -> bool:
        """Delete every doomed pair in one request; False if there was none."""
        def job(ipr: Any) -> bool:
            return _unless_gone(lambda: ipr.link("del", group=DOOMED_GROUP))
        return _plumbing(lambda: self._reaper.run(job), "deleting the doomed veth pairs")

    def _delete_host_end(self, host_ifname: str) -> bool:
        return self._on_host_veth(host_ifname, "deleting host interface {}",
                                  lambda ipr, index: ipr.link("del", index=index))

    def _on_host_veth(self, host_ifname: str, what: str,
                      action: Callable[[Any, int], object]) -> bool:
        """Run `action` on our host veth end by that name; False if there is none (or it is
        not a veth: never ours to touch), or it vanished meanwhile."""
        def job(ipr: Any) -> bool:
            link = _get_link(ipr, host_ifname)
            if link is None:
                return False
            if _kind(link) != "veth":
                log.warning("not touching host interface that is not a veth host_ifname=%s "
                            "kind=%s", host_ifname, _kind(link))
                return False
            return _unless_gone(lambda: action(ipr, link["index"]))
        return _plumbing(lambda: self._host.run(job), what.format(host_ifname))

    # -------------------------------------------------------------------------- CHECK
    def check_pod_interface(self, netns: str, ifname: str, mac: str,
                            addresses: list[tuple[str, int]]) -> None:
        """Raise CheckFailed listing every way the interface differs from what ADD built."""
        want = [parse_address(a) for a in addresses]
        want_mac = normalize_mac(mac)
        try:
            with self._in_netns(netns) as pod:
                link = _get_link(pod.ipr, ifname)
                if link is None:
                    raise CheckFailed(f"interface {ifname} is missing from netns {netns}")
                idx = link["index"]
                have = {(ipaddress.ip_address(_attr(m, "IFA_ADDRESS")), int(m["prefixlen"]))
                        for m in pod.ipr.addr("dump", index=idx)
                        if _attr(m, "IFA_ADDRESS") is not None}
        except NetnsNotFound as exc:
            raise CheckFailed(f"netns {netns} is missing", exc.msg) from None
        except CheckFailed:
            raise
        except (PlumbingError, NetlinkError, OSError) as exc:
            text = exc.msg if isinstance(exc, PlumbingError) else exc_text(exc)
            raise CheckFailed(f"could not inspect {ifname} in netns {netns}: {text}") from exc
        problems: list[str] = []
        have_mac = str(_attr(link, "IFLA_ADDRESS")).lower()
        if have_mac != want_mac:
            problems.append(f"MAC is {have_mac}, want {want_mac}")
        for a in want:
            if (ipaddress.ip_address(a.address), a.prefixlen) not in have:
                problems.append(f"address {a.cidr} is missing")
        if not link["flags"] & _IFF_UP:
            problems.append("interface is down")
        if problems:
            raise CheckFailed(f"interface {ifname} in netns {netns}: " + "; ".join(problems))


__all__ = [
    "AddressPlan", "InterfaceConflict", "PendingInterface", "InterfacePlan", "InvalidInterfaceSpec",
    "PodInterfaceResult",
    "PodInterfaceSpec", "PodNetlink", "RoutePlan", "build_routes", "errno_text", "family_version",
    "normalize_mac", "normalize_netns_path", "parse_address", "parse_route", "plan_interface",
    "validate_ifname",
]
