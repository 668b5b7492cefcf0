"""Watching the kernel unregister links, in the agent's netns and in every pod's.

Why: a veth deletion's request returns only after `netdev_run_todo`'s RCU barrier (14-26 ms
here), but the kernel has unlisted both ends, run their NETDEV_UNREGISTER notifiers
(addresses and routes gone) and sent one RTM_DELLINK per end 0.4-1.1 ms into the request
(docs/performance.md "Where DEL's time goes"). A DEL waiting for those notifications instead
of the request's return is done when the CNI spec says it may be.

One socket in the agent's netns, subscribed to the link group with NETLINK_LISTEN_ALL_NSID:
the kernel also delivers notifications from every netns the agent's netns has an id for (a
pod's netns has one: the veth crossed it, and the host end's IFLA_LINK_NETNSID named it),
with that id in the SOL_NETLINK/NETLINK_LISTEN_ALL_NSID control message; the agent's own
notifications come without one. Everything arrives on this one socket in the order the
kernel sent it, which Teardown relies on. When the socket overruns (ENOBUFS) notifications
were lost: the callback is told, and asks the kernel what is still there.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from functools import partial

from .batch import parse_unregistered
from .netns import _NETLINK_ROUTE, _setns

log = logging.getLogger(__name__)

SOL_NETLINK = 270
NETLINK_LISTEN_ALL_NSID = 8
RTMGRP_LINK = 0x1
RCVBUF = 4 << 20  # a burst of DELs is a few hundred notifications of ~1 KiB
_NSID = struct.Struct("=i")

OnGone = Callable[[int | None, list[int]], None]   # (nsid or None: ours, ifindexes)


class LinkMonitor:
    """A thread reading RTM_DELLINK notifications from every netns; `on_gone` runs on it
    (keep it short: while it runs, nothing is read)."""

    def __init__(self, host_fd: int, on_gone: OnGone, on_overrun: Callable[[], None],
                 rcvbuf: int = RCVBUF) -> None:
        self._on_gone = on_gone
        self._rcvbuf = rcvbuf
        self._on_overrun = on_overrun
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, args=(host_fd,),
                                        name="ecnet-link-monitor", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._close_fds()
            raise self._error

    def _open(self, host_fd: int) -> socket.socket:
        _setns(host_fd)  # a no-op normally; the socket must be the host netns's
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            sock.bind((0, RTMGRP_LINK))
            sock.setsockopt(SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, 1)
        except BaseException:
            sock.close()
            raise
        return sock

    def _run(self, host_fd: int) -> None:
        try:
            self._sock = sock = self._open(host_fd)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        poll.register(self._wake_r, select.POLLIN)
        cmsg_space = socket.CMSG_SPACE(_NSID.size)
        with sock:
            while True:
                if any(fd == self._wake_r for fd, _ev in poll.poll()):
                    return
                try:
                    data, anc, _flags, _addr = sock.recvmsg(65536, cmsg_space,
                                                            socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        log.warning("link monitor overrun: notifications lost, rechecking")
                        self._safe(self._on_overrun)
                        continue
                    log.error("link monitor stopped: %s", exc)
                    return
                nsid = None
                for level, kind, value in anc:
                    if level == SOL_NETLINK and kind == NETLINK_LISTEN_ALL_NSID:
                        (nsid,) = _NSID.unpack_from(value)
                try:
                    gone = parse_unregistered(data)
                except ValueError as exc:
                    log.error("link monitor: undecodable notification: %s", exc)
                    continue
                if gone:
                    self._safe(partial(self._on_gone, nsid, gone))

    @staticmethod
    def _safe(call: Callable[[], object]) -> None:
        try:
            call()
        except Exception:  # noqa: BLE001 - the monitor must outlive a callback's bug
            log.exception("link monitor callback failed")

    def _close_fds(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join()
        self._close_fds()


__all__ = ["LinkMonitor", "OnGone"]
