"""Getting into a pod's netns cheaply and never leaking out of the host's.

Two rules shape this module (DESIGN.md "Costs"; STYLE.md 7):

* Entering a pod's netns must be cheap and must never leak. `IPRoute(netns=...)` forks a helper
  process per call (7.7 ms); instead the *calling* thread does setns(CLONE_NEWNET) just long
  enough to create a raw netlink socket and an ioctl socket, then always switches back to the
  host netns. A socket keeps the namespace it was created in, so every later call on it acts
  inside the pod while the thread itself is home again. No pyroute2 code ever runs while the
  thread is away.
* pyroute2 0.9 keeps its socket and asyncio loop per *thread* (`threading.local`): one IPRoute
  shared by the agent's per-request threads would lazily open a new socket in each of them (in
  whatever netns that thread is in at that moment) and hold it until close(). So the warm host
  IPRoute lives on one dedicated thread that never leaves the host netns (`HostWorker`), and
  host calls are handed to it; pod-side IPRoutes are built per operation on the caller's thread
  and closed.

Also here: the small kernel helpers every verb shares (link lookup, errno text, "gone is
fine", the ethtool ioctl).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import NetnsNotFound, PlumbingError
from .batch import BatchStep, parse_acks
from .plan import IFNAMSIZ, errno_text, normalize_netns_path

log = logging.getLogger(__name__)

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
_NETLINK_ROUTE = 0
GONE = (errno.ENODEV, errno.ENOENT)


# ------------------------------------------------------------------------- errors, text
def exc_errno(exc: BaseException) -> int | None:
    if isinstance(exc, NetlinkError):
        return int(exc.code)
    if isinstance(exc, OSError) and exc.errno is not None:
        return int(exc.errno)
    return None


def exc_text(exc: BaseException) -> str:
    code = exc_errno(exc)
    if code is not None:
        return errno_text(code)
    return f"{type(exc).__name__}: {exc}"


def enodev() -> OSError:
    return OSError(errno.ENODEV, os.strerror(errno.ENODEV))


class StepFailed(Exception):
    """One kernel step of a verb failed; the verb turns it into a PlumbingError that names
    the step (and says what was rolled back)."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(step)
        self.step = step
        self.cause = cause


def step(what: str, fn: Callable[[], T], ok_errnos: Sequence[int] = ()) -> T | None:
    """Run one kernel step; remember which one failed so the error can name it."""
    try:
        return fn()
    except (NetlinkError, OSError) as exc:
        if exc_errno(exc) in ok_errnos:
            return None
        raise StepFailed(what, exc) from exc


def unless_gone(call: Callable[[], object]) -> bool:
    """Run a netlink request; False if its object is already gone, True if it ran."""
    try:
        call()
    except NetlinkError as exc:
        if exc.code in GONE:
            return False
        raise
    return True


def plumbing(call: Callable[[], T], what: str) -> T:
    """A host netlink call whose failure is the pod's plumbing error (CNI code 110)."""
    try:
        return call()
    except NetlinkError as exc:
        raise PlumbingError(f"{what} failed: {exc_text(exc)}", exc_text(exc)) from exc


# ---------------------------------------------------------------------- link messages
def get_link(ipr: Any, ifname: str) -> Any | None:
    try:
        links = ipr.link("get", ifname=ifname)
    except NetlinkError as exc:
        if exc.code in GONE:
            return None
        raise
    return links[0] if links else None


def attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


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


def is_netns_fd(fd: int) -> bool:
    """A netns fd links to "net:[inode]"; a stale mount point is a plain file."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("net:")
    except OSError:
        return False


def ethtool_value(sock: socket.socket, ifname: str, cmd: int, data: int = 0) -> int:
    """SIOCETHTOOL acts in the namespace of the socket it is issued on, not of the thread."""
    value = _EthtoolValue(cmd, data)
    req = _Ifreq(ifname.encode(), ctypes.cast(ctypes.pointer(value), ctypes.c_void_p))
    fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, req)
    return int(value.data)


_SIOCGIFINDEX = 0x8933
_IFREQ_INDEX = struct.Struct(f"={IFNAMSIZ}si20x")  # struct ifreq: name, ifr_ifindex, pad


def ifindex(sock: socket.socket, ifname: str) -> int:
    """The index of `ifname` in the namespace `sock` was created in (SIOCGIFINDEX): one
    system call, where a netlink lookup is a round trip and a parsed message."""
    req = _IFREQ_INDEX.pack(ifname.encode(), 0)
    return int(_IFREQ_INDEX.unpack(fcntl.ioctl(sock.fileno(), _SIOCGIFINDEX, req))[1])


def exchange(nl: socket.socket, data: bytes, seqs: set[int],
             timeout: float = 10.0) -> dict[int, int]:
    """Send rtnetlink requests in one sendmsg and read until each of `seqs` is acked:
    seq -> errno (0: done). Raises OSError (a timeout too: the kernel always acks, so a bug)."""
    acks: dict[int, int] = {}
    nl.settimeout(timeout)
    nl.send(data)
    while not seqs <= acks.keys():
        acks.update(parse_acks(nl.recv(65536)))
    return acks


def send_batch(nl: socket.socket, data: bytes, steps: Sequence[BatchStep],
               timeout: float = 10.0) -> None:
    """Send a batch of rtnetlink requests in one sendmsg and read every ack; the first
    step the kernel refused (beyond its "already so" errnos) raises StepFailed. The kernel
    acts on every message in order whatever an earlier one's outcome, so the caller's
    rollback (or a retried ADD) sees the whole batch done or named."""
    try:
        acks = exchange(nl, data, {s.seq for s in steps}, timeout)
    except OSError as exc:
        raise StepFailed(f"{steps[0].what} (and {len(steps) - 1} more in one batch)",
                         exc) from exc
    for s in steps:
        code = acks[s.seq]
        if code and code not in s.ok_errnos:
            raise StepFailed(s.what, OSError(code, os.strerror(code)))


def open_netns(netns: str) -> tuple[str, int]:
    """Normalise a runtime's netns path and open it: (path, fd). The one place a missing
    netns becomes NetnsNotFound (CNI code 111)."""
    path = normalize_netns_path(netns)
    try:
        return path, os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFound(f"network namespace {path} does not exist") from None
    except OSError as exc:
        raise PlumbingError(f"opening network namespace {path} failed: {exc_text(exc)}",
                            exc_text(exc)) from exc


# ------------------------------------------------------------------------ the threads
class HostWorker:
    """The one thread that owns a warm host-namespace IPRoute (see the module docstring)."""

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
        return self._on_thread(self._job, fn)

    def raw_socket(self) -> socket.socket:
        """A new plain netlink socket of the host netns, made on this thread: a socket keeps
        the namespace it was created in, and this thread never leaves the host's."""
        return self.run(lambda _ipr: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                                                   _NETLINK_ROUTE))

    def _on_thread(self, job: Callable[[Callable[[Any], T]], T], fn: Callable[[Any], T]) -> T:
        try:
            fut = self._pool.submit(job, fn)
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


class HostSockets:
    """Plain host-netns netlink sockets lent to request threads, one thread at a time.

    The veth creation is one request and its ack: on the request thread itself (the GIL is
    released while the kernel works) it needs no hand-off to the host thread and back, and
    concurrent ADDs do not queue on one Python thread (the kernel's RTNL lock orders them
    anyway). Sockets are made by the host thread (`HostWorker.raw_socket`), so they act in
    the host netns whatever netns the borrowing thread is in; one that saw an error may
    hold a stray ack and is closed instead of lent again."""

    def __init__(self, host: HostWorker, keep: int = 16) -> None:
        self._host = host
        self._keep = keep
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def lend(self) -> Iterator[socket.socket]:
        with self._lock:
            if self._closed:
                raise PlumbingError("the agent's netlink seam is closed")
            sock = self._idle.pop() if self._idle else None
        if sock is None:
            sock = self._host.raw_socket()
        kept = False
        try:
            yield sock
            with self._lock:
                if not self._closed and len(self._idle) < self._keep:
                    self._idle.append(sock)
                    kept = True
        finally:
            if not kept:
                sock.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()


@dataclass
class PodSockets:
    """Sockets living in one pod netns, usable from the thread that opened them."""

    path: str
    nsfd: int
    ipr: Any                        # None when entered raw
    ioctl: socket.socket
    nl: socket.socket | None = None  # the raw netlink socket, when entered raw


class HostNetns:
    """The agent's own netns, and the way into a pod's and back out.

    A calling thread briefly enters the pod's netns and is always put back into the host
    netns (the main thread's, recorded at construction), whatever netns it was in before."""

    def __init__(self) -> None:
        # /proc/self is the thread-group leader: the main thread's netns is the host's.
        self.fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._ino = os.fstat(self.fd).st_ino

    def close(self) -> None:
        os.close(self.fd)

    def _go_home(self) -> None:
        try:
            _setns(self.fd)
            ino = os.stat("/proc/thread-self/ns/net").st_ino
        except OSError as exc:
            log.critical("could not return thread to the host netns thread=%s err=%s",
                         threading.current_thread().name, exc_text(exc))
            raise PlumbingError("agent thread could not return to the host network namespace",
                                exc_text(exc)) from exc
        if ino != self._ino:
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

    def enter(self, path: str, nsfd: int, stack: ExitStack, raw: bool = False) -> PodSockets:
        """Open the pod-side sockets on the calling thread; `stack` closes them. `raw`: a
        plain netlink socket for `send_batch` instead of an IPRoute (pyroute2 builds an
        asyncio loop and more per IPRoute)."""
        try:
            nl, io = self._open_sockets(nsfd, path)
        except OSError as exc:
            raise PlumbingError(f"opening sockets in network namespace {path} failed: "
                                f"{exc_text(exc)}", exc_text(exc)) from exc
        stack.callback(io.close)
        if raw:
            stack.callback(nl.close)
            return PodSockets(path, nsfd, None, io, nl)
        ipr = IPRoute(fileno=nl.detach())
        stack.callback(ipr.close)
        return PodSockets(path, nsfd, ipr, io)

    @contextmanager
    def inside(self, netns: str) -> Iterator[PodSockets]:
        """The pod's netns for one operation: opened, entered, and closed again."""
        path, nsfd = open_netns(netns)
        with ExitStack() as stack:
            stack.callback(os.close, nsfd)
            yield self.enter(path, nsfd, stack)


__all__ = ["HostNetns", "HostSockets", "HostWorker", "PodSockets", "StepFailed", "exc_text",
           "get_link", "ifindex", "open_netns", "plumbing", "send_batch", "step", "unless_gone"]
