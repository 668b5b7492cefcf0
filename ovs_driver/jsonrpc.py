"""A thread-safe OVSDB JSON-RPC 1.0 client (RFC 7047 section 4) over unix or TCP.

Why our own: the node agent needs an OVSDB round trip in well under a millisecond and
cannot afford the import time or the per-transaction machinery of the OVS IDL or
ovsdbapp (DESIGN.md, costs table). One persistent connection is shared by every
thread; a single reader thread owns the receive side, matches replies to requests by
id, answers the server's inactivity probes ("echo"), hands notifications to a
callback and reconnects when the connection drops.
"""
from __future__ import annotations

import codecs
import errno
import itertools
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ovs_driver.errors import OvsConnectionError, OvsError, OvsTimeout, OvsTransactionError

log = logging.getLogger(__name__)

NotificationHandler = Callable[[str, Any], None]
ConnectHandler = Callable[["JsonRpcConnection"], None]
DisconnectHandler = Callable[[], None]

_RECV_SIZE = 256 * 1024
_MIN_BACKOFF = 0.05
# A stream that grows this large without completing one message is not OVSDB talking.
_MAX_MESSAGE = 256 * 1024 * 1024


class JsonStreamError(ValueError):
    """The byte stream is not a sequence of JSON objects/arrays."""


# Outside a string only brackets and quotes matter to find where a value ends; inside a
# string only the quote and the backslash do. Jumping between them with a regex keeps
# the scan in C for the long runs of ordinary characters.
_OUTSIDE = re.compile(r'["{}\[\]]')
_INSIDE = re.compile(r'["\\]')
_SPACE = " \t\r\n"


class JsonStreamDecoder:
    """Incremental framing for a stream of concatenated JSON texts.

    OVSDB sends JSON objects back to back with no delimiter or length prefix, and a
    recv() may end anywhere, even inside a multi-byte UTF-8 character. A small
    bracket/string scanner (state kept across feeds, so the work is linear) finds where
    each top-level value ends; ``json.JSONDecoder.raw_decode`` then parses exactly that
    slice. Asking raw_decode alone cannot tell "incomplete" from "malformed" (a cut
    ``tr|ue`` and a bad ``tx`` fail alike), which is why the scanner decides framing.
    """

    def __init__(self, max_message: int = _MAX_MESSAGE) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        self._max = max_message
        self.reset()

    def reset(self) -> None:
        """Forget any partial message (used when a connection is replaced)."""
        self._utf8.reset()
        self._buf = ""
        self._pos = 0  # how far the scanner has looked into _buf
        self._depth = 0
        self._in_string = False
        self._escape = False

    @property
    def pending(self) -> int:
        """Characters of an incomplete message held back (for tests and diagnostics)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes from the wire; return every message they complete, in order."""
        try:
            self._buf += self._utf8.decode(data)
        except UnicodeDecodeError as exc:
            raise JsonStreamError(f"invalid UTF-8 in stream: {exc}") from exc
        out: list[Any] = []
        while True:
            end = self._scan()
            if end < 0:
                break
            text = self._buf[:end]
            self._buf = self._buf[end:]
            self._pos = 0
            try:
                value, used = self._json.raw_decode(text)
            except json.JSONDecodeError as exc:
                raise JsonStreamError(f"malformed JSON message: {exc}") from exc
            if text[used:].strip(_SPACE):
                raise JsonStreamError("trailing data inside one framed message")
            out.append(value)
        if len(self._buf) > self._max:
            raise JsonStreamError(f"message larger than {self._max} characters")
        return out

    def _scan(self) -> int:
        """Index just past the first complete top-level value in _buf, or -1."""
        buf = self._buf
        pos = self._pos
        n = len(buf)
        if self._depth == 0 and not self._in_string:
            # Between messages: skip whitespace; anything but [ or { is not OVSDB.
            while pos < n and buf[pos] in _SPACE:
                pos += 1
            if pos > 0:
                self._buf = buf = buf[pos:]
                n -= pos
                pos = 0
            if n == 0:
                self._pos = 0
                return -1
            if buf[0] not in "{[":
                raise JsonStreamError(f"stream does not start an object: {buf[:20]!r}")
        while pos < n:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    pos += 1
                    continue
                m = _INSIDE.search(buf, pos)
                if m is None:
                    pos = n
                    break
                pos = m.end()
                if m.group() == "\\":
                    self._escape = True
                else:
                    self._in_string = False
                continue
            m = _OUTSIDE.search(buf, pos)
            if m is None:
                pos = n
                break
            pos = m.end()
            ch = m.group()
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth < 0:
                    raise JsonStreamError("unbalanced closing bracket")
                if self._depth == 0:
                    self._pos = pos
                    return pos
        self._pos = pos
        return -1


def parse_remote(remote: str) -> tuple[int, Any]:
    """Turn "unix:/path" or "tcp:host:port" (IPv6 as tcp:[addr]:port) into
    (address family, socket address)."""
    kind, sep, rest = remote.partition(":")
    if not sep or not rest:
        raise ValueError(f"bad OVSDB remote {remote!r}: want unix:PATH or tcp:HOST:PORT")
    if kind == "unix":
        return socket.AF_UNIX, rest
    if kind == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"bad OVSDB remote {remote!r}: want tcp:HOST:PORT")
        if host.startswith("[") and host.endswith("]"):
            return socket.AF_INET6, (host[1:-1], int(port))
        if ":" in host:
            return socket.AF_INET6, (host, int(port))
        return socket.AF_INET, (host, int(port))
    raise ValueError(f"unsupported OVSDB remote {remote!r}: only unix: and tcp:")


class JsonRpcConnection:
    """One persistent JSON-RPC connection shared by all threads.

    ``on_connected`` runs on the reader thread after every (re)connect, before any
    message of the new connection is read, so it must not block waiting for a reply:
    it sends with :meth:`request` and reacts in a future's done-callback (that is how
    the OVSDB client re-issues its monitor). Notifications ("update", "update2", ...)
    also arrive on the reader thread, in wire order. ``on_disconnected`` tells the
    owner that whatever it cached from the old connection may now be stale.
    """

    def __init__(
        self,
        remote: str,
        *,
        on_notification: NotificationHandler | None = None,
        on_connected: ConnectHandler | None = None,
        on_disconnected: DisconnectHandler | None = None,
        connect_timeout: float = 5.0,
        probe_interval: float = 5.0,
        max_backoff: float = 1.0,
    ) -> None:
        self.remote = remote
        self._family, self._address = parse_remote(remote)
        self._on_notification = on_notification
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._connect_timeout = connect_timeout
        self._probe_interval = probe_interval
        self._max_backoff = max_backoff
        self._lock = threading.Lock()  # guards _sock, _pending
        self._send_lock = threading.Lock()  # one writer at a time on the socket
        self._sock: socket.socket | None = None
        self._pending: dict[int, Future[Any]] = {}
        self._ids = itertools.count(1)
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._reader: threading.Thread | None = None
        self._decoder = JsonStreamDecoder()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Connect once, synchronously, so a wrong remote fails fast at start-up;
        later drops are repaired in the background."""
        sock = self._open_socket()
        self._install(sock)
        self._reader = threading.Thread(
            target=self._run, name=f"ovsdb-reader {self.remote}", daemon=True
        )
        self._reader.start()

    def close(self) -> None:
        """Stop the reader thread and fail whatever is still pending."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            _shutdown(sock)
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)
        self._drop(OvsConnectionError(f"connection closed remote={self.remote}"))

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- requests ----------------------------------------------------------------

    def request(self, method: str, params: list[Any]) -> Future[Any]:
        """Send a request now; the future holds the "result" or an OvsError."""
        fut: Future[Any] = Future()
        with self._lock:
            sock = self._sock
            if sock is None or self._closed.is_set():
                raise OvsConnectionError(f"not connected to ovsdb-server remote={self.remote}")
            req_id = next(self._ids)
            self._pending[req_id] = fut
        try:
            self._send(sock, {"method": method, "params": params, "id": req_id})
        except OvsConnectionError:
            with self._lock:
                self._pending.pop(req_id, None)
            raise
        return fut

    def call(self, method: str, params: list[Any], timeout: float) -> Any:
        """Send a request and wait for its result.

        While the connection is being re-established the call waits for it (up to
        ``timeout``) instead of failing at once: a restart of ovsdb-server should
        cost a pod ADD some latency, not an error.
        """
        if not self._connected.wait(timeout):
            raise OvsConnectionError(
                f"not connected to ovsdb-server remote={self.remote} waited={timeout}s"
            )
        fut = self.request(method, params)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            raise OvsTimeout(
                f"no reply from ovsdb-server method={method} remote={self.remote} "
                f"timeout={timeout}s"
            ) from None

    def notify(self, method: str, params: list[Any]) -> None:
        """Send a JSON-RPC notification (no reply expected), e.g. "monitor_cancel"."""
        with self._lock:
            sock = self._sock
        if sock is None:
            raise OvsConnectionError(f"not connected to ovsdb-server remote={self.remote}")
        self._send(sock, {"method": method, "params": params, "id": None})

    # -- internals ---------------------------------------------------------------

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        sock.settimeout(self._connect_timeout)
        try:
            sock.connect(self._address)
        except OSError as exc:
            sock.close()
            raise OvsConnectionError(
                f"cannot connect to ovsdb-server remote={self.remote}: {exc}"
            ) from exc
        if self._family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return sock

    def _install(self, sock: socket.socket) -> None:
        self._decoder.reset()
        with self._lock:
            self._sock = sock
        self._connected.set()
        log.info("ovsdb connected remote=%s", self.remote)

    def _send(self, sock: socket.socket, msg: dict[str, Any]) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode()
        try:
            with self._send_lock:
                sock.sendall(data)
        except OSError as exc:
            # Let the reader notice and reconnect; this request is lost either way.
            _shutdown(sock)
            raise OvsConnectionError(
                f"send to ovsdb-server failed remote={self.remote}: {exc}"
            ) from exc

    def _drop(self, exc: OvsError) -> None:
        """Forget the current socket and fail every request waiting on it."""
        self._connected.clear()
        with self._lock:
            sock, self._sock = self._sock, None
            pending, self._pending = self._pending, {}
        if sock is not None:
            _shutdown(sock)
            sock.close()
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        if sock is not None and self._on_disconnected is not None:
            try:
                self._on_disconnected()
            except Exception:  # a bad handler must not kill the reader thread
                log.exception("ovsdb on_disconnected handler failed remote=%s", self.remote)

    def _run(self) -> None:
        backoff = _MIN_BACKOFF
        while not self._closed.is_set():
            with self._lock:
                sock = self._sock
            if sock is None:
                try:
                    sock = self._open_socket()
                except OvsConnectionError as exc:
                    log.debug("ovsdb reconnect failed remote=%s backoff=%.2f: %s",
                              self.remote, backoff, exc)
                    self._closed.wait(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                self._install(sock)
            since = time.monotonic()
            if self._on_connected is not None:
                try:
                    self._on_connected(self)
                except OvsError as exc:
                    log.warning("ovsdb on_connected failed remote=%s: %s", self.remote, exc)
            reason = self._read_until_error(sock)
            if self._closed.is_set():
                break
            log.warning("ovsdb connection lost remote=%s reason=%s; reconnecting",
                        self.remote, reason)
            self._drop(OvsConnectionError(
                f"connection to ovsdb-server lost remote={self.remote}: {reason}"
            ))
            if time.monotonic() - since < 1.0:
                # A server that accepts and hangs up at once must not make us spin.
                self._closed.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            else:
                backoff = _MIN_BACKOFF

    def _read_until_error(self, sock: socket.socket) -> str:
        """Read and dispatch until the connection fails; return why it failed."""
        probe_sent = False
        sock.settimeout(self._probe_interval if self._probe_interval > 0 else None)
        while not self._closed.is_set():
            try:
                data = sock.recv(_RECV_SIZE)
            except TimeoutError:
                # Idle: ask the server whether it is still there (what ovsdb-server's
                # own inactivity probe does to us); a second silent interval is fatal.
                if probe_sent:
                    return f"no answer to inactivity probe in {self._probe_interval}s"
                try:
                    self.request("echo", [])
                except OvsConnectionError as exc:
                    return str(exc)
                probe_sent = True
                continue
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return f"recv failed: {exc}"
            if not data:
                return "closed by peer"
            probe_sent = False
            try:
                messages = self._decoder.feed(data)
            except JsonStreamError as exc:
                log.error("ovsdb protocol error remote=%s: %s", self.remote, exc)
                return f"protocol error: {exc}"
            for msg in messages:
                self._dispatch(sock, msg)
        return "closed"

    def _dispatch(self, sock: socket.socket, msg: Any) -> None:
        if not isinstance(msg, dict):
            log.warning("ovsdb non-object message ignored remote=%s", self.remote)
            return
        method = msg.get("method")
        if method is None:
            self._on_reply(msg)
            return
        msg_id = msg.get("id")
        params = msg.get("params")
        if method == "echo" and msg_id is not None:
            try:
                self._send(sock, {"result": params, "error": None, "id": msg_id})
            except OvsConnectionError as exc:
                log.warning("ovsdb echo reply failed remote=%s: %s", self.remote, exc)
            return
        if msg_id is not None:
            # A request we do not implement: say so instead of leaving the server waiting.
            try:
                self._send(sock, {"result": None, "error": "unknown method", "id": msg_id})
            except OvsConnectionError:
                pass
            return
        if self._on_notification is not None:
            try:
                self._on_notification(method, params)
            except Exception:  # a bad handler must not kill the reader thread
                log.exception("ovsdb notification handler failed method=%s", method)

    def _on_reply(self, msg: dict[str, Any]) -> None:
        msg_id = msg.get("id")
        with self._lock:
            fut = self._pending.pop(msg_id, None) if isinstance(msg_id, int) else None
        if fut is None:
            log.debug("ovsdb reply for unknown id=%r ignored", msg_id)
            return
        error = msg.get("error")
        if error is not None:
            fut.set_exception(OvsTransactionError(
                f"ovsdb-server error: {error}", error=str(error), details=error
            ))
        else:
            fut.set_result(msg.get("result"))


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
