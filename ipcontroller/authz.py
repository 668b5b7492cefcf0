"""Who may call what: the controller's one authorization check, a gRPC server interceptor.

The caller's identity comes from the transport, never from the request:

- over TLS, the subject CN of the client certificate (the handshake already proved the
  certificate is signed by `--tls-client-ca`; no certificate, or another CA's, never gets here):
  `admin:<name>` may call everything; `node:<name>` only the agent RPCs of the IPController
  service, and only for itself (its own node name in the request, its own ports to look up or
  release); any other CN is refused with PERMISSION_DENIED;
- over the unix socket, admin: the socket is 0660 and its owner and group (`--socket-group`)
  are the control, as for the Docker or containerd sockets;
- over plaintext TCP (loopback only, or anywhere with `--insecure`): admin when the controller
  has no TLS at all (the operator chose no authentication, and the daemon warns at start);
  with TLS configured there is no plaintext listener on this server (`--health-listen` is a
  server of its own with the health service alone, for kubelet's probe, which has no TLS).

Kept out of the servicers so no handler can forget it: every RPC passes here first.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb

from .refusal import Refusal

log = logging.getLogger(__name__)

ADMIN_PREFIX = "admin:"
NODE_PREFIX = "node:"
CONTROLLER_SERVICE = "/ecnet.v1.IPController/"
HEALTH_SERVICE = "/grpc.health.v1.Health/"


class PermissionDenied(Exception):
    """The caller's identity may not make this call. Not an IPAM error, so not in
    `ipcontroller.errors`' table: only this module refuses with it."""

    def refusal(self) -> Refusal:
        return Refusal(grpc.StatusCode.PERMISSION_DENIED, pb.ERROR_CODE_PERMISSION_DENIED,
                       str(self))


class PortNodes(Protocol):
    """Which node holds a port: what a node's ReleasePort/GetPort is checked against."""

    def node_of_port(self, container_id: str, ifname: str) -> str | None:
        """The port's node, or None when no port answers the request (nothing to protect)."""


@dataclass(frozen=True)
class Identity:
    """Who is calling: an admin (any name), a node (by name), or nobody we know."""

    kind: str   # "admin", "node" or "unknown"
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class Caller(Protocol):
    """What the check reads of a call: grpc's context, sync or aio."""

    def auth_context(self) -> Mapping[str, Sequence[bytes]]: ...

    def peer(self) -> str: ...


def identity_of(context: Caller, plaintext_tcp_admin: bool) -> Identity:
    """The caller, from the transport (see the module docstring for the rules)."""
    auth = context.auth_context()
    if auth.get("transport_security_type", [b""])[0] != b"ssl":
        if context.peer().startswith("unix:"):
            return Identity("admin", "unix-socket")     # the file's permissions decided
        if plaintext_tcp_admin:
            return Identity("admin", "plaintext")       # no TLS configured: nothing to check
        return Identity("unknown", "plaintext TCP")     # the health listener: probes only
    names = auth.get("x509_common_name") or []
    cn = names[0].decode("utf-8", "replace") if names else ""
    for prefix, kind in ((ADMIN_PREFIX, "admin"), (NODE_PREFIX, "node")):
        if cn.startswith(prefix) and len(cn) > len(prefix):
            return Identity(kind, cn[len(prefix):])
    return Identity("unknown", cn)


def _node_names(method: str, request: Any, ports: PortNodes) -> list[str]:
    """The node(s) an agent RPC acts for: each must be the caller's own."""
    if method == "RegisterNode":
        return [request.node.name]
    if method in ("ListNodePorts", "WatchTopology"):
        return [request.node]     # a node lists (and watches for) only itself
    if method in ("AllocatePort", "ReleasePort", "GetPort"):
        # A retried ADD answers with the existing port: it must be the caller's too.
        held = ports.node_of_port(request.container_id, request.ifname)
        asked = [request.node] if method == "AllocatePort" else []
        return asked + ([] if held is None else [held])
    return []   # GetTopology: every node's view of the overlay, nobody's in particular


def check(identity: Identity, full_method: str, request: Any, ports: PortNodes) -> None:
    """Raise PermissionDenied unless `identity` may make this call with this request."""
    if identity.kind == "admin" or full_method.startswith(HEALTH_SERVICE):
        return
    if identity.kind != "node":
        raise PermissionDenied(f"caller {identity.name!r} is neither admin:<name> nor "
                               f"node:<name>: it may not call {full_method}")
    if not full_method.startswith(CONTROLLER_SERVICE):
        raise PermissionDenied(f"node {identity.name!r} may not call {full_method}")
    method = full_method[len(CONTROLLER_SERVICE):]
    for name in _node_names(method, request, ports):
        if name != identity.name:
            raise PermissionDenied(f"node {identity.name!r} may not act for node {name!r}")


def _refusal(method: str, who: Identity, exc: PermissionDenied) -> Refusal:
    refusal = exc.refusal()
    log.warning("%s denied identity=%s code=%s msg=%s", method, who,
                pb.ErrorCode.Name(refusal.code), refusal.message)
    return refusal


class AuthzInterceptor:
    """Runs `check` before every handler: the sync unary ones (on a worker thread, where
    they run: a check may read the store) and the watch, a coroutine on the event loop
    (its check reads only the request). A layer of `calls.WrapOnce`, which every RPC
    passes: each method is wrapped once, not per call."""

    def __init__(self, ports: PortNodes, plaintext_tcp_admin: bool) -> None:
        self.ports = ports
        self.plaintext_tcp_admin = plaintext_tcp_admin

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method.startswith(HEALTH_SERVICE):
            return handler     # health is open to every caller (`check`)

        def denial(request: Any, context: Caller) -> Refusal | None:
            who = identity_of(context, self.plaintext_tcp_admin)
            try:
                check(who, method, request, self.ports)
            except PermissionDenied as exc:
                return _refusal(method, who, exc)
            return None

        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]
                                     ) -> AsyncIterator[Any]:
                refusal = denial(request, context)
                if refusal is not None:
                    await refusal.abort_async(context)
                async for message in stream(request, context):
                    yield message

            return grpc.unary_stream_rpc_method_handler(
                guarded_stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            refusal = denial(request, context)
            if refusal is not None:
                refusal.abort(context)
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
