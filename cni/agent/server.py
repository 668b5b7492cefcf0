"""The agent's unix-socket server: one thread per shim connection, one CNI answer each.

This is the one edge where exceptions become CNI error objects: whatever happens, the shim
gets an exit code and a JSON body, never a traceback.
"""
from __future__ import annotations

import json
import logging
import os
import socketserver
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import errors as ce
from ..netconf import parse_request
from . import wire
from .handler import CniHandler

log = logging.getLogger(__name__)


def _version_hint(stdin: str) -> str:
    try:
        v = json.loads(stdin).get("cniVersion", "")
        return v if isinstance(v, str) and v else "1.0.0"
    except (ValueError, AttributeError):
        return "1.0.0"


def serve_one(handler: CniHandler[Any], data: bytes) -> bytes:
    """Turn one raw request into one raw answer; every failure becomes a CNI error."""
    version = "1.0.0"
    t0 = time.perf_counter()
    cmd = cid = "?"
    try:
        env, stdin = wire.parse(data)
        cmd, cid = env.get("CNI_COMMAND", "?"), env.get("CNI_CONTAINERID", "?")[:12]
        version = _version_hint(stdin)
        req = parse_request(env, stdin)
        version = req.conf.cni_version
        result = handler.handle(req)
        out = json.dumps(result) if result is not None else ""
        log.debug("served cmd=%s container=%s ms=%.2f", cmd, cid, (time.perf_counter() - t0) * 1e3)
        return wire.answer(0, out)
    except ce.CniError as exc:
        log.warning("cmd=%s container=%s failed code=%d msg=%s details=%s", cmd, cid, exc.code,
                    exc.msg, exc.details)
        return wire.answer(1, json.dumps(exc.to_result(version)))
    except Exception as exc:  # noqa: BLE001 - the CNI edge: unmapped errors become 999
        # A bug, not a failure we know: its traceback goes to the agent's log, the runtime
        # gets a generic error object (never the traceback, never a misleading code).
        log.exception("cmd=%s container=%s crashed", cmd, cid)
        err = ce.CniError("internal error in ecnet-agent; its log has the details",
                          type(exc).__name__)
        return wire.answer(1, json.dumps(err.to_result(version)))


REQUEST_READ_TIMEOUT = 10.0


class _RequestHandler(socketserver.StreamRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        chunks: list[bytes] = []
        size = 0
        # The shim sends everything at once and half-closes; a client that never does must
        # not pin one of the agent's few workers. One deadline for the whole request, not
        # per read: a client dripping a byte now and then would otherwise hold it forever.
        deadline = time.monotonic() + REQUEST_READ_TIMEOUT
        while True:
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.connection.recv(65536)
            except TimeoutError:
                log.warning("client sent no complete request in %.0f s; dropped",
                            REQUEST_READ_TIMEOUT)
                return
            if not chunk:
                break
            size += len(chunk)
            if size > wire.MAX_REQUEST:
                self.connection.sendall(wire.answer(1, json.dumps(ce.DecodeFailure(
                    "request too large").to_result("1.0.0"))))
                return
            chunks.append(chunk)
        if not chunks:
            return  # a liveness probe: connected and hung up
        answer = serve_one(self.server.cni, b"".join(chunks))
        try:
            self.connection.sendall(answer)
        except OSError as exc:
            # The shim was killed (runtime timeout): the work is done and idempotent; the
            # runtime's retry gets the same answer.
            log.warning("shim went away before the answer: %s", exc)


class AgentServer(socketserver.UnixStreamServer):
    """Requests run on a pool of long-lived threads, not a thread per connection: pyroute2
    keeps per-thread state (an event loop, sockets) that costs milliseconds to build, and a
    warm thread pays it once."""

    request_queue_size = 256

    def __init__(self, path: str, cni: CniHandler[Any], workers: int = 64,
                 queue: int = 256) -> None:
        self.cni = cni
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cni")
        # Connections running or waiting for a worker: beyond it a client gets "try again"
        # at once (each waiting one holds a file descriptor; the executor's queue has no end).
        self._slots = threading.BoundedSemaphore(workers + queue)
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a stale socket from a previous run
        except FileNotFoundError:
            pass
        # Only root (kubelet's runtime) may drive the agent: the socket is created without
        # group or other access, never open for a moment between bind and a chmod.
        old = os.umask(0o077)
        try:
            super().__init__(path, _RequestHandler)
        finally:
            os.umask(old)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("too many CNI requests waiting; told a client to try again")
            try:
                request.sendall(wire.answer(1, json.dumps(ce.TryAgainLater(
                    "ecnet-agent is overloaded").to_result("1.0.0"))))
            except OSError:
                pass   # it went away already: nothing to tell
            self.shutdown_request(request)
            return
        self.pool.submit(self._work, request, client_address)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - one broken connection must not stop the server
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def shutdown_and_remove(self) -> None:
        self.shutdown()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.server_close()
        try:
            os.unlink(str(self.server_address))
        except OSError:
            pass


def request_for(env: dict[str, str], conf: dict[str, Any]) -> bytes:
    """Build a raw request as the shim would (for tests and tools)."""
    return wire.encode_request(env, json.dumps(conf).encode())
