"""ONOS REST client for the openstacknetworking app: upsert and delete, nothing else.

ONOS offers no GET for networks, subnets or ports, so "upsert" is POST and, when ONOS answers
400 "... already exists", PUT of the same body (contract section 6). Every failure becomes one
of the `ipam.onos.errors` classes so the caller can decide between retrying and alarming
without looking at HTTP details. The password lives only inside httpx's auth object: it is
never logged, never in repr() and never in an exception's text.

`timeout` bounds each public call as a whole (an upsert's POST and PUT together). httpx only
bounds each phase: every read may take up to the timeout, so a server dripping a byte every
3 s kept one call alive 18 s against a 5 s timeout (issue 12). The connections here are made
by `_DeadlineBackend`, whose streams give every connect, read and write only what is left of
the calling thread's deadline.
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Self
from urllib.parse import quote

import httpcore
import httpx

from .errors import OnosAuthError, OnosRejected, OnosUnavailable
from .model import OnosNetwork, OnosPort, OnosSubnet, network_body, port_body, subnet_body

log = logging.getLogger(__name__)

APP_PATH = "/onos/openstacknetworking"
DEFAULT_PASSWORD = "rocks"
_OK = (200, 201, 204)
_UPSERT_ROUNDS = 3


def read_password(path: str | None, env_var: str = "ECNET_ONOS_PASSWORD") -> str:
    """Where the ONOS password comes from: a secret file (mounted by Kubernetes), else the
    environment, else ONOS's factory default. An explicitly configured file that cannot be
    read is an error: silently falling back would hide a broken secret mount."""
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    value = os.environ.get(env_var, "").strip()
    if value:
        return value
    log.info("onos password source=default (neither a file nor %s is set)", env_var)
    return DEFAULT_PASSWORD


def _error_message(resp: httpx.Response) -> str:
    """ONOS's mapped exceptions answer {"code","message"}; Jetty's own errors are HTML."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"]
    text = resp.text.strip()
    return text[:200] if text else resp.reason_phrase


class _Deadline(threading.local):
    """The monotonic time by which the calling thread's ONOS call must be over (None: no
    call running)."""

    at: float | None = None

    def left(self, timeout: float | None,
             exc: type[httpcore.TimeoutException] = httpcore.ReadTimeout) -> float | None:
        """What an I/O step may wait: the step's own timeout, cut to the time left; `exc`
        (the step's own timeout class, which tells whether a request may have left) once
        nothing is left."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise exc("the call's total deadline passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        left = self._deadline.left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, left),
                               self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, with streams that honour the calling thread's deadline (a
    kept-alive connection serves later calls, so the deadline is read at each step)."""

    def __init__(self, deadline: _Deadline) -> None:
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        left = self._deadline.left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, left, local_address,
                                                       socket_options), self._deadline)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        left = self._deadline.left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, left, socket_options),
                               self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _transport(deadline: _Deadline) -> httpx.HTTPTransport:
    """httpx's transport on a pool that connects through `_DeadlineBackend`. httpx takes no
    network backend, so its pool is swapped for one built the same way (no proxy: ONOS is
    reached directly, as before, since a given transport already ignores proxy variables)."""
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(   # noqa: SLF001 - see the docstring
        ssl_context=httpx.create_ssl_context(), max_connections=100,
        max_keepalive_connections=20, keepalive_expiry=5.0,
        network_backend=_DeadlineBackend(deadline))
    return transport


class OnosClient:
    """A persistent keep-alive connection to one ONOS; safe to share between threads."""

    def __init__(self, base_url: str, user: str, password: str, timeout: float = 5.0) -> None:
        url = httpx.URL(base_url)
        if url.password or url.username:
            raise ValueError("put the ONOS credentials in user/password, not in base_url")
        self.base_url = str(base_url).rstrip("/")
        self.user = user
        self.timeout = timeout
        self._lock = threading.Lock()
        self.requests_made = 0
        self._deadline = _Deadline()
        self._http = httpx.Client(
            transport=_transport(self._deadline),
            base_url=self.base_url + APP_PATH,
            auth=httpx.BasicAuth(user, password),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"OnosClient(base_url={self.base_url!r}, user={self.user!r}, " \
               f"timeout={self.timeout!r})"

    __str__ = __repr__

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API
    def upsert_network(self, n: OnosNetwork) -> str:
        return self._upsert("networks", n.id, network_body(n))

    def upsert_subnet(self, s: OnosSubnet) -> str:
        return self._upsert("subnets", s.id, subnet_body(s))

    def upsert_port(self, p: OnosPort) -> str:
        return self._upsert("ports", p.id, port_body(p))

    def delete_port(self, port_id: str) -> None:
        self._delete("ports", port_id)

    def delete_subnet(self, subnet_id: str) -> None:
        self._delete("subnets", subnet_id)

    def delete_network(self, network_id: str) -> None:
        """Raises OnosRejected with `in_use` set while the network still has subnets and
        ports in ONOS; callers treat that as "not yet"."""
        self._delete("networks", network_id)

    # ------------------------------------------------------------------ internals
    @contextmanager
    def _call(self) -> Iterator[None]:
        """One public call: every request and I/O step in it shares `timeout`."""
        self._deadline.at = time.monotonic() + self.timeout
        try:
            yield
        finally:
            self._deadline.at = None

    def _send(self, method: str, rel: str, body: dict[str, Any] | None) -> httpx.Response:
        path = APP_PATH + rel
        start = time.monotonic()
        with self._lock:
            self.requests_made += 1
        try:
            left = self._deadline.left(self.timeout, httpcore.PoolTimeout)
            resp = self._http.request(method, rel, json=body, timeout=httpx.Timeout(left))
        except httpcore.PoolTimeout:
            # The deadline passed before this request (an upsert's PUT) was sent.
            raise OnosUnavailable(f"timeout after {self.timeout}s: deadline", method=method,
                                  path=path, ambiguous=False) from None
        except httpx.TimeoutException as e:
            # Only a connect or pool timeout proves the request never left.
            sent = not isinstance(e, (httpx.ConnectTimeout, httpx.PoolTimeout))
            raise OnosUnavailable(f"timeout after {self.timeout}s: {type(e).__name__}",
                                  method=method, path=path, ambiguous=sent) from None
        except httpx.TransportError as e:
            # Connection refused/reset, server vanished mid-request: ONOS is not there. A
            # refused connection sent nothing; a reset or a dropped answer may have.
            sent = not isinstance(e, httpx.ConnectError)
            raise OnosUnavailable(f"connection failed: {type(e).__name__}: {e}",
                                  method=method, path=path, ambiguous=sent) from None
        log.debug("onos call method=%s path=%s status=%s ms=%.1f", method, path,
                  resp.status_code, (time.monotonic() - start) * 1000)
        if resp.status_code in _OK:
            return resp
        msg = _error_message(resp)
        if resp.status_code in (401, 403):
            raise OnosAuthError(f"ONOS refused user {self.user!r}: {msg}",
                                status=resp.status_code, method=method, path=path)
        if resp.status_code >= 500:
            raise OnosUnavailable(f"ONOS server error: {msg}", status=resp.status_code,
                                  method=method, path=path)
        return resp

    def _upsert(self, coll: str, obj_id: str, body: dict[str, Any]) -> str:
        """POST, and PUT on "already exists". If the object vanishes between the two (PUT
        says "does not exist"), start over; a few rounds settle any such race."""
        item = f"/{coll}/{quote(obj_id, safe='')}"
        resp: httpx.Response | None = None
        with self._call():
            for _ in range(_UPSERT_ROUNDS):
                resp = self._send("POST", f"/{coll}", body)
                if resp.status_code in _OK:
                    log.debug("onos upsert coll=%s id=%s result=created", coll, obj_id)
                    return "created"
                if resp.status_code != 400 or not _error_message(resp).endswith("already exists"):
                    break
                resp = self._send("PUT", item, body)
                if resp.status_code in _OK:
                    log.debug("onos upsert coll=%s id=%s result=updated", coll, obj_id)
                    return "updated"
                if resp.status_code != 400 or not _error_message(resp).endswith("does not exist"):
                    break
        assert resp is not None
        raise OnosRejected(_error_message(resp), status=resp.status_code,
                           method=resp.request.method, path=resp.request.url.path)

    def _delete(self, coll: str, obj_id: str) -> None:
        with self._call():
            resp = self._send("DELETE", f"/{coll}/{quote(obj_id, safe='')}", None)
        if resp.status_code not in _OK:
            raise OnosRejected(_error_message(resp), status=resp.status_code,
                               method="DELETE", path=resp.request.url.path)
