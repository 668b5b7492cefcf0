"""An ONOS emulator for the openstacknetworking REST API, faithful to shared/onos-contract.md.

Real ONOS offers no read-back, so tests need a stand-in that answers exactly as ONOS does
(status codes, message texts, Location, auth) and lets them look inside (`/_emulator/...`).
It must be no stricter and no looser than ONOS: a test that passes here must not fail
against the real thing because the emulator accepted or refused something ONOS would not.

Order of checks mirrors Jetty + Jersey + ONOS: injected fault, BASIC auth (401, Jetty), path
match (404), method match (405), media type (415), role filter (403, AuthorizationFilter runs
after matching), body parsing (400), validation and the store (400/409).

The k8snetworking tree (contract section 8) is not emulated.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)

APP_PREFIX = "/onos/openstacknetworking"
HOOK_PREFIX = "/_emulator"
COLLECTIONS = {"networks": "network", "subnets": "subnet", "ports": "port"}
FAULT_MODES = ("none", "error500", "slow", "unauthorized", "reset")

# jsonToModelEntity throws IllegalArgumentException() without a message; ONOS's mapper then
# reports the top stack frame.
PARSE_ERROR_FRAME = ("org.onosproject.openstacknetworking.util.OpenstackNetworkingUtil"
                     ".jsonToModelEntity(OpenstackNetworkingUtil.java:178)")
FORBIDDEN_MESSAGE = "User has insufficient privilege for this request"

# ONOS OpenstackNetworkManager's texts.
ERR_NULL_ID = {"network": "OpenStack network ID cannot be null",
               "subnet": "OpenStack subnet ID cannot be null",
               "port": "OpenStack port ID cannot be null"}
ERR_NULL_SUBNET_NET_ID = "OpenStack subnet network ID cannot be null"
ERR_NULL_SUBNET_CIDR = "OpenStack subnet CIDR cannot be null"
ERR_NULL_PORT_NET_ID = "OpenStack port network ID cannot be null"

_UNAUTHORIZED_HTML = (b"<html>\n<head>\n<meta http-equiv=\"Content-Type\" "
                      b"content=\"text/html;charset=ISO-8859-1\"/>\n<title>Error 401 "
                      b"Unauthorized</title>\n</head>\n<body><h2>HTTP ERROR 401</h2>\n"
                      b"<p>Problem accessing /onos/openstacknetworking. Reason:\n<pre>    "
                      b"Unauthorized</pre></p>\n</body>\n</html>\n")

# ------------------------------------------------------------------ body type checks
# openstack4j's Jackson binding: what each known field may hold. Jackson coerces scalars into
# String fields and numeric strings into int fields, but refuses objects/arrays where a scalar
# is expected (and vice versa); unknown fields are ignored.
STR, BOOL, INT, LSTR, LOBJ, OBJ = "str", "bool", "int", "list[str]", "list[obj]", "obj"
_FIELDS: dict[str, dict[str, str]] = {
    "network": {"id": STR, "name": STR, "status": STR, "tenant_id": STR, "project_id": STR,
                "provider:network_type": STR, "provider:physical_network": STR,
                "provider:segmentation_id": STR, "admin_state_up": BOOL, "shared": BOOL,
                "router:external": BOOL, "mtu": INT, "subnets": LSTR,
                "availability_zone_hints": LSTR},
    "subnet": {"id": STR, "name": STR, "network_id": STR, "tenant_id": STR, "project_id": STR,
               "cidr": STR, "gateway_ip": STR, "ip_version": INT, "enable_dhcp": BOOL,
               "dns_nameservers": LSTR, "allocation_pools": LOBJ, "host_routes": LOBJ,
               "ipv6_address_mode": STR, "ipv6_ra_mode": STR},
    "port": {"id": STR, "name": STR, "network_id": STR, "tenant_id": STR, "project_id": STR,
             "mac_address": STR, "device_id": STR, "device_owner": STR, "status": STR,
             "binding:host_id": STR, "binding:vnic_type": STR, "binding:vif_type": STR,
             "admin_state_up": BOOL, "port_security_enabled": BOOL, "fixed_ips": LOBJ,
             "security_groups": LSTR, "allowed_address_pairs": LOBJ, "extra_dhcp_opts": LOBJ,
             "binding:vif_details": OBJ, "binding:profile": OBJ},
}
_NESTED: dict[str, dict[str, str]] = {
    "fixed_ips": {"subnet_id": STR, "ip_address": STR},
    "allocation_pools": {"start": STR, "end": STR},
    "allowed_address_pairs": {"ip_address": STR, "mac_address": STR},
    "host_routes": {"destination": STR, "nexthop": STR},
}


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _type_ok(kind: str, v: Any) -> bool:
    if v is None:
        return True
    if kind == STR:
        return _is_scalar(v)
    if kind == BOOL:
        return isinstance(v, (bool, int)) or (isinstance(v, str) and v in ("true", "false"))
    if kind == INT:
        if isinstance(v, bool):
            return False
        if isinstance(v, (int, float)):
            return True
        if isinstance(v, str):
            try:
                int(v.strip())
            except ValueError:
                return False
            return True
        return False
    if kind == LSTR:
        return isinstance(v, list) and all(_is_scalar(x) for x in v)
    if kind == LOBJ:
        return isinstance(v, list) and all(x is None or isinstance(x, dict) for x in v)
    return isinstance(v, dict)


def _well_typed(kind: str, obj: dict[str, Any]) -> bool:
    for key, ftype in _FIELDS[kind].items():
        if key not in obj:
            continue
        v = obj[key]
        if not _type_ok(ftype, v):
            return False
        nested = _NESTED.get(key)
        if nested and isinstance(v, list):
            for item in v:
                if isinstance(item, dict) and not all(
                        _type_ok(t, item[k]) for k, t in nested.items() if k in item):
                    return False
    return True


def java_string(v: Any) -> str | None:
    """The String Jackson makes of a JSON scalar (so id 5 is stored under "5")."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")  # Jackson refuses NaN/Infinity


# ------------------------------------------------------------------ state


class HttpError(Exception):
    """An ONOS-mapped exception: becomes {"code","message"} with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Faults:
    modes: tuple[str, ...] = ()
    rate: float = 1.0
    delay: float = 0.0
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"mode": list(self.modes) or "none", "rate": self.rate, "delay": self.delay,
                "seed": self.seed}


@dataclass
class EmulatorState:
    """The emulated ONOS store; survives server stop/start like ONOS's distributed store."""

    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    subnets: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    by_object: Counter[str] = field(default_factory=Counter)
    # user -> {"calls", "first", "last"} (wall clock): which replica talked to ONOS, and when
    by_user: dict[str, dict[str, float]] = field(default_factory=dict)
    total: int = 0
    faults: Faults = field(default_factory=Faults)
    rng: random.Random = field(default_factory=random.Random)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def table(self, coll: str) -> dict[str, dict[str, Any]]:
        return {"networks": self.networks, "subnets": self.subnets, "ports": self.ports}[coll]

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps({"networks": self.networks, "subnets": self.subnets,
                                          "ports": self.ports}))

    def call_stats(self) -> dict[str, Any]:
        with self.lock:
            return {"total": self.total, "counts": dict(self.calls),
                    "by_object": dict(self.by_object),
                    "by_user": {u: dict(v) for u, v in self.by_user.items()}}

    def reset(self) -> None:
        with self.lock:
            self.networks.clear()
            self.subnets.clear()
            self.ports.clear()
            self.calls.clear()
            self.by_object.clear()
            self.by_user.clear()
            self.total = 0
            self.faults = Faults()

    def set_faults(self, spec: dict[str, Any]) -> Faults:
        mode = spec.get("mode", "none")
        modes = tuple(mode) if isinstance(mode, list) else (str(mode),)
        if any(m not in FAULT_MODES for m in modes):
            raise ValueError(f"mode must be one of {FAULT_MODES} or a list of them")
        modes = tuple(m for m in modes if m != "none")
        rate = float(spec.get("rate", 1.0))
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within 0..1")
        seed = spec.get("seed")
        f = Faults(modes, rate, float(spec.get("delay", 0.0)),
                   int(seed) if seed is not None else None)
        with self.lock:
            self.faults = f
            self.rng = random.Random(f.seed)
        return f

    def draw_fault(self) -> tuple[str, float]:
        with self.lock:
            f = self.faults
            if not f.modes or self.rng.random() >= f.rate:
                return "none", 0.0
            return (f.modes[0] if len(f.modes) == 1 else self.rng.choice(f.modes)), f.delay

    def count(self, method: str, coll: str, status: int | str, obj: str | None,
              user: str | None = None) -> None:
        with self.lock:
            if user is not None:
                now = time.time()
                u = self.by_user.setdefault(user, {"calls": 0, "first": now, "last": now})
                u["calls"] += 1
                u["last"] = now
            self.total += 1
            self.calls[f"{method} {coll} {status}"] += 1
            if obj is not None:
                self.by_object[f"{method} {coll}/{obj}"] += 1

    # -------------------------------------------------------------- ONOS semantics
    def create(self, kind: str, body: dict[str, Any]) -> str:
        coll = kind + "s"
        obj_id = self._validate(kind, body)
        with self.lock:
            table = self.table(coll)
            if obj_id in table:
                # Networks name the *name* in the duplicate message (DistributedOpenstack-
                # NetworkStore); Java renders a null name as "null".
                who = java_string(body.get("name")) if kind == "network" else obj_id
                raise HttpError(400, f"{who if who is not None else 'null'} already exists")
            table[obj_id] = body
        return obj_id

    def update(self, kind: str, body: dict[str, Any]) -> str:
        coll = kind + "s"
        obj_id = self._validate(kind, body)
        with self.lock:
            table = self.table(coll)
            if obj_id not in table:
                who = java_string(body.get("name")) if kind == "network" else obj_id
                raise HttpError(400, f"{who if who is not None else 'null'} does not exist")
            table[obj_id] = body
        return obj_id

    def delete(self, kind: str, obj_id: str) -> None:
        with self.lock:
            if kind == "network":
                # isNetworkInUse: >=1 subnet AND >=1 port naming this network. The real text
                # has two spaces: String.format("OpenStack network %s %s", id, " still in use").
                has_subnet = any(java_string(s.get("network_id")) == obj_id
                                 for s in self.subnets.values())
                has_port = any(java_string(p.get("network_id")) == obj_id
                               for p in self.ports.values())
                if has_subnet and has_port:
                    raise HttpError(409, f"OpenStack network {obj_id}  still in use")
            self.table(kind + "s").pop(obj_id, None)

    @staticmethod
    def _validate(kind: str, body: dict[str, Any]) -> str:
        obj_id = java_string(body.get("id"))
        if not obj_id:
            raise HttpError(400, ERR_NULL_ID[kind])
        if kind == "subnet":
            if not java_string(body.get("network_id")):
                raise HttpError(400, ERR_NULL_SUBNET_NET_ID)
            if not java_string(body.get("cidr")):
                raise HttpError(400, ERR_NULL_SUBNET_CIDR)
        if kind == "port" and not java_string(body.get("network_id")):
            raise HttpError(400, ERR_NULL_PORT_NET_ID)
        return obj_id


# ------------------------------------------------------------------ HTTP


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
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

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

        status, obj = self._onos_inner(path, segs, coll, body, fault == "unauthorized")
        st.count(method, coll_label, status, obj, user)

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
            inner = self._parse(kind, body)
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

    def _parse(self, kind: str, body: bytes) -> dict[str, Any]:
        """openstack4j's root mapper with UNWRAP_ROOT_VALUE: exactly one top-level key, the
        wrapper, holding an object; any failure is a message-less IllegalArgumentException."""
        try:
            doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, PARSE_ERROR_FRAME) from None
        if not isinstance(doc, dict) or list(doc) != [kind] or not isinstance(doc[kind], dict):
            raise HttpError(400, PARSE_ERROR_FRAME)
        inner: dict[str, Any] = doc[kind]
        if not _well_typed(kind, inner):
            raise HttpError(400, PARSE_ERROR_FRAME)
        return inner


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ecnet-onos-emulator",
                                description="Emulate ONOS's openstacknetworking REST API.")
    p.add_argument("--listen", default="127.0.0.1:8181", help="host:port (default %(default)s)")
    p.add_argument("--user", default="onos")
    p.add_argument("--password", default="rocks")
    p.add_argument("--viewer-user", default=None, help="a user with the viewer role only")
    p.add_argument("--viewer-password", default=None)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        p.error("--listen must be host:port")
    if (args.viewer_user is None) != (args.viewer_password is None):
        p.error("--viewer-user and --viewer-password go together")
    srv = EmulatorServer(host.strip("[]"), int(port), user=args.user, password=args.password,
                         viewer_user=args.viewer_user, viewer_password=args.viewer_password)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    srv.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
