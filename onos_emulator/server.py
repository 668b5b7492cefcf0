"""The emulator over HTTP: Jetty + Jersey + ONOS's order of checks, and a server to run it.

Order of checks mirrors Jetty + Jersey + ONOS: injected fault, BASIC auth (401, Jetty), path
match (404), method match (405), media type (415), role filter (403, AuthorizationFilter runs
after matching), body parsing (400), validation and the store (400/409). What each check
answers comes from `contract`; what the store does from `state`.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

from .contract import (
    APP_PREFIX,
    COLLECTIONS,
    FORBIDDEN_MESSAGE,
    HOOK_PREFIX,
    HttpError,
    java_string,
    parse_body,
)
from .state import EmulatorState

log = logging.getLogger(__name__)

_UNAUTHORIZED_HTML = (b"<html>\n<head>\n<meta http-equiv=\"Content-Type\" "
                      b"content=\"text/html;charset=ISO-8859-1\"/>\n<title>Error 401 "
                      b"Unauthorized</title>\n</head>\n<body><h2>HTTP ERROR 401</h2>\n"
                      b"<p>Problem accessing /onos/openstacknetworking. Reason:\n<pre>    "
                      b"Unauthorized</pre></p>\n</body>\n</html>\n")


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    viewer_user: str | None = None
    viewer_password: str | None = None
    # More admin users (name, password): lets tests tell several clients (replicas) apart.
    extra_admins: tuple[tuple[str, str], ...] = ()

    def role(self, header: str | None) -> str | None:
        """"admin", "viewer" or None (refused) for an Authorization header."""
        return self.identify(header)[1]

    def identify(self, header: str | None) -> tuple[str | None, str | None]:
        """(user, role) of an Authorization header; role None means refused."""
        if not header or header[:6].lower() != "basic ":
            return None, None
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        user, sep, pw = raw.partition(":")
        if not sep:
            return None, None
        if (user, pw) == (self.user, self.password) or (user, pw) in self.extra_admins:
            return user, "admin"
        if self.viewer_user is not None and user == self.viewer_user \
                and pw == self.viewer_password:
            return user, "viewer"
        return user, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], state: EmulatorState, creds: Credentials) -> None:
        self.state = state
        self.creds = creds
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished, or a stop() under an in-flight slow request: not news.
        log.debug("emulator connection error peer=%s error=%r", client_address,
                  sys.exc_info()[1])

    def close_connections(self) -> None:
        """Keep-alive connections outlive serve_forever(); a stopped ONOS must drop them."""
        with self.conns_lock:
            conns, self.conns = list(self.conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Jetty(9.4.35.v20201120)"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is dropped, as Jetty does
    disable_nagle_algorithm = True  # else headers+body in two writes wait for a delayed ACK
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.conns_lock:
            self.server.conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.conns_lock:
                self.server.conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator %s", format % args)

    # -------------------------------------------------------------- plumbing
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes = b"", ctype: str | None = None,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status != 204:
            if body and ctype:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and status != 204 and self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        # Compact, as Jackson writes it.
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json",
                   headers)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"code": status, "message": message}, headers)

    def _reset(self) -> None:
        """Drop the connection with a RST and no answer: a crash or a lost response."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass

    # -------------------------------------------------------------- dispatch
    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except ValueError:  # a malformed Content-Length or chunk size: Jetty's 400
            self.close_connection = True
            self._send(400, b"Bad Request", "text/plain")
            return
        path = urlsplit(self.path).path
        try:
            if path == HOOK_PREFIX or path.startswith(HOOK_PREFIX + "/"):
                self._hook(path, body)
            else:
                self._onos(path, body)
        except HttpError as e:
            self._error(e.status, e.message)

    # Every method goes through the same checks; which ones a path allows is decided there
    # (405 with Allow), as Jersey does. Other methods get http.server's 501.
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _hook(self, path: str, body: bytes) -> None:
        st = self.server.state
        name, method = path[len(HOOK_PREFIX):], self.command
        if name == "/state" and method == "GET":
            self._send_json(200, st.snapshot())
        elif name == "/calls" and method == "GET":
            self._send_json(200, st.call_stats())
        elif name == "/reset" and method == "POST":
            st.reset()
            self._send(204)
        elif name == "/faults" and method in ("GET", "POST"):
            if method == "POST":
                try:
                    spec = json.loads(body or b"{}")
                    st.set_faults(spec if isinstance(spec, dict) else {"mode": spec})
                except (ValueError, TypeError) as e:
                    raise HttpError(400, str(e)) from None
            self._send_json(200, st.faults.as_dict())
        else:
            raise HttpError(404, "HTTP 404 Not Found")

    def _onos(self, path: str, body: bytes) -> None:
        st, method = self.server.state, self.command
        segs = [unquote(s) for s in path.rstrip("/").split("/")[1:]] if path != "/" else []
        coll = segs[2] if len(segs) >= 3 and path.startswith(APP_PREFIX + "/") else ""
        coll_label = coll if coll in COLLECTIONS else "other"

        user = self.server.creds.identify(self.headers.get("Authorization"))[0]
        fault, delay = st.draw_fault()
        if fault == "reset":
            st.count(method, coll_label, "reset", None, user)
            self._reset()
            return
        if fault == "slow":
            time.sleep(delay)
        if fault == "error500":
            st.count(method, coll_label, 500, None, user)
            self._error(500, "java.lang.RuntimeException: injected fault")
            return

        # The answer is held until the call is counted: a test that reads the counts once
        # its call returned must see that call.
        held = io.BytesIO()
        real, self.wfile = self.wfile, held
        try:
            status, obj = self._onos_inner(path, segs, coll, body, fault == "unauthorized")
        finally:
            self.wfile = real
        st.count(method, coll_label, status, obj, user)
        self.wfile.write(held.getvalue())

    def _onos_inner(self, path: str, segs: list[str], coll: str, body: bytes,
                    force_401: bool) -> tuple[int, str | None]:
        st, method = self.server.state, self.command
        role = None if force_401 else self.server.creds.role(self.headers.get("Authorization"))
        if role is None:
            # Jetty's BASIC authenticator answers before Jersey runs: HTML, not JSON.
            self._send(401, _UNAUTHORIZED_HTML, "text/html;charset=iso-8859-1",
                       {"WWW-Authenticate": 'Basic realm="karaf"',
                        "Cache-Control": "must-revalidate,no-cache,no-store"})
            return 401, None

        in_app = path.startswith(APP_PREFIX + "/") and coll in COLLECTIONS \
            and len(segs) in (3, 4) and all(segs[3:])
        if not in_app:
            self._error(404, "HTTP 404 Not Found")
            return 404, None
        is_item = len(segs) == 4
        allowed = ("PUT", "DELETE") if is_item else ("POST",)
        if method not in allowed:
            allow = ", ".join(allowed + ("OPTIONS",))
            if method == "OPTIONS":
                self._send(200, headers={"Allow": allow})
                return 200, None
            self._error(405, "HTTP 405 Method Not Allowed", {"Allow": allow})
            return 405, None
        if method in ("POST", "PUT"):
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                self._error(415, "HTTP 415 Unsupported Media Type")
                return 415, None
        if role != "admin":
            self._error(403, FORBIDDEN_MESSAGE)
            return 403, None

        kind = COLLECTIONS[coll]
        obj: str | None = None
        try:
            if method == "DELETE":
                obj = segs[3]
                st.delete(kind, obj)
                self._send(204)
                return 204, obj
            inner = parse_body(kind, body)
            obj = java_string(inner.get("id"))
            if method == "POST":
                obj_id = st.create(kind, inner)
                addr = self.server.server_address
                host = self.headers.get("Host") or f"{addr[0]!s}:{addr[1]}"
                self._send(201, headers={
                    "Location": f"http://{host}{APP_PREFIX}/{coll}/{quote(obj_id, safe='')}"})
                return 201, obj_id
            st.update(kind, inner)  # the path id is ignored; ONOS uses the body's
            self._send(200)
            return 200, obj
        except HttpError as e:
            self._error(e.status, e.message)
            return e.status, obj


class EmulatorServer:
    """The emulator in-process: start() serves on a background thread, stop() makes ONOS
    vanish (listening socket and keep-alive connections), start() again brings it back on the
    same port with its store intact."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, user: str = "onos",
                 password: str = "rocks", viewer_user: str | None = None,
                 viewer_password: str | None = None, state: EmulatorState | None = None,
                 extra_admins: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.creds = Credentials(user, password, viewer_user, viewer_password,
                                 tuple((extra_admins or {}).items()))
        self.state = state or EmulatorState()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"EmulatorServer(host={self.host!r}, port={self.port!r}, " \
               f"running={self.running})"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        """ONOS's root URL, what OnosClient takes as base_url."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> int:
        if self._server is not None:
            return self.port
        srv = _Server((self.host, self.port), self.state, self.creds)
        self.port = srv.server_address[1]
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"onos-emulator-{self.port}", daemon=True)
        self._thread.start()
        log.info("onos emulator started url=%s", self.url)
        return self.port

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        srv.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("onos emulator stopped url=%s", self.url)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # in-process conveniences (the same as the /_emulator hooks)
    def snapshot(self) -> dict[str, Any]:
        return self.state.snapshot()

    def calls(self) -> dict[str, Any]:
        return self.state.call_stats()

    def set_faults(self, mode: str | list[str] = "none", rate: float = 1.0,
                   delay: float = 0.0, seed: int | None = None) -> None:
        self.state.set_faults({"mode": mode, "rate": rate, "delay": delay, "seed": seed})

    def reset(self) -> None:
        self.state.reset()
