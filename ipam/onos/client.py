"""ONOS REST client for the openstacknetworking app: upsert and delete, nothing else.

ONOS offers no GET for networks, subnets or ports, so "upsert" is POST and, when ONOS answers
400 "... already exists", PUT of the same body (contract section 6). Every failure becomes one
of the `ipam.onos.errors` classes so the caller can decide between retrying and alarming
without looking at HTTP details. The password lives only inside httpx's auth object: it is
never logged, never in repr() and never in an exception's text.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Self
from urllib.parse import quote

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
        self._http = httpx.Client(
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
    def _send(self, method: str, rel: str, body: dict[str, Any] | None) -> httpx.Response:
        path = APP_PATH + rel
        start = time.monotonic()
        with self._lock:
            self.requests_made += 1
        try:
            resp = self._http.request(method, rel, json=body)
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
        resp = self._send("DELETE", f"/{coll}/{quote(obj_id, safe='')}", None)
        if resp.status_code not in _OK:
            raise OnosRejected(_error_message(resp), status=resp.status_code,
                               method="DELETE", path=resp.request.url.path)
