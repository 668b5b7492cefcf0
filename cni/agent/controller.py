"""The agent's warm gRPC channel to the IP controller, with refusals mapped to CNI codes.

The controller says why it refused as data: an `ErrorCode` in an `ErrorDetail` packed into the
gRPC status details. `_CNI_BY_CODE` is the one table from that code to a CNI error; a class
renamed on the controller cannot change it. An older controller sends no detail, only the
IPAM class name in the "ecnet-error" trailing metadata: `_CODE_BY_LEGACY_NAME` turns that
name into the same ErrorCode, for one release.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_status import rpc_status

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc

from .. import errors as ce
from .seams import PendingReply

log = logging.getLogger(__name__)
T = TypeVar("T")

# Every ErrorCode, exhaustively (tests check it). None: not a refusal a pod can act on, so the
# gRPC status decides (retryable means try again later, anything else is an error of ours).
_CNI_BY_CODE: dict[pb.ErrorCode, type[ce.CniError] | None] = {
    pb.ERROR_CODE_UNSPECIFIED: None,
    pb.ERROR_CODE_INTERNAL: None,
    pb.ERROR_CODE_INVALID_ARGUMENT: ce.InvalidConfig,
    pb.ERROR_CODE_NOT_FOUND: ce.NotFound,
    pb.ERROR_CODE_ALREADY_EXISTS: ce.PolicyConflict,
    pb.ERROR_CODE_POLICY_CONFLICT: ce.PolicyConflict,
    pb.ERROR_CODE_IN_USE: ce.PolicyConflict,
    pb.ERROR_CODE_POOL_EXHAUSTED: ce.PoolExhausted,
    pb.ERROR_CODE_BUSY: ce.TryAgainLater,
    # Only `ipctl sync now` reaches ONOS; never a pod's request.
    pb.ERROR_CODE_ONOS_UNAVAILABLE: None,
    pb.ERROR_CODE_ONOS_AUTH: None,
    pb.ERROR_CODE_ONOS_REJECTED: None,
    # The agent's certificate may not do this: an error of ours, not the pod's, never retried.
    pb.ERROR_CODE_PERMISSION_DENIED: None,
}
# What controllers before ErrorCode sent in "ecnet-error" (names they sent that are not here,
# "Internal" and the ONOS classes, meant "decide by the status" then too).
_CODE_BY_LEGACY_NAME: dict[str, pb.ErrorCode] = {
    "InvalidArgument": pb.ERROR_CODE_INVALID_ARGUMENT,
    "NotFound": pb.ERROR_CODE_NOT_FOUND,
    "AlreadyExists": pb.ERROR_CODE_ALREADY_EXISTS,
    "PolicyConflict": pb.ERROR_CODE_POLICY_CONFLICT,
    "InUse": pb.ERROR_CODE_IN_USE,
    "PoolExhausted": pb.ERROR_CODE_POOL_EXHAUSTED,
    "Busy": pb.ERROR_CODE_BUSY,
}
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}


def refusal_code(call: grpc.Call) -> pb.ErrorCode:
    """The controller's reason: its ErrorDetail, else (an older controller) the class it
    named; ERROR_CODE_UNSPECIFIED when it gave none (a transport failure, a proxy)."""
    try:
        rich = rpc_status.from_call(call)
    except ValueError:  # the details disagree with the status (rewritten on the way)
        rich = None
    for packed in rich.details if rich is not None else ():
        if packed.Is(pb.ErrorDetail.DESCRIPTOR):
            detail = pb.ErrorDetail()
            packed.Unpack(detail)
            return detail.code
    legacy = dict(call.trailing_metadata() or ()).get("ecnet-error", "")
    return _CODE_BY_LEGACY_NAME.get(str(legacy), pb.ERROR_CODE_UNSPECIFIED)


def to_cni_error(err: grpc.RpcError, target: str) -> ce.CniError:
    if not isinstance(err, grpc.Call):  # raised by the library itself, not from a call
        unknown = grpc.StatusCode.UNKNOWN
        return ce.CniError(f"IP controller error: {unknown}", unknown.name)
    code = err.code()
    details = err.details() or str(code)
    # A value added by a newer controller is not in the table: decide by the status.
    cni_class = _CNI_BY_CODE.get(refusal_code(err))
    if cni_class is not None:
        return cni_class(details)
    if code in _RETRYABLE:
        return ce.TryAgainLater(f"IP controller at {target} unavailable, try again later",
                                details)
    return ce.CniError(f"IP controller error: {details}", code.name)


@dataclass(frozen=True)
class AgentTls:
    """The node's client certificate (CN node:<node>) and the CA of the controller's."""

    cert: str
    key: str
    ca: str
    # The name the controller's certificate must carry when the agent dials an address it
    # does not name (a Service's cluster IP: no DNS before the pod network exists).
    server_name: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        """Read at start: a missing file is a start-up error (OSError), not a pod's."""
        ca, key, cert = (Path(p).read_bytes() for p in (self.ca, self.key, self.cert))
        return grpc.ssl_channel_credentials(ca, key, cert)


class GrpcControllerClient:
    def __init__(self, target: str, timeout: float = 10.0, reconnect_wait: float = 2.0,
                 tls: AgentTls | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.reconnect_wait = reconnect_wait
        options: list[tuple[str, int | str]] = [
            ("grpc.keepalive_time_ms", 30000),
            ("grpc.enable_retries", 1),
            ("grpc.initial_reconnect_backoff_ms", 100),
            # Below reconnect_wait (with grpc's 20 % jitter): a channel backing off from a
            # restarted controller is tried again within the wait `_call` gives it.
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if tls is not None and tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        self.channel = (grpc.insecure_channel(target, options=options) if tls is None else
                        grpc.secure_channel(target, tls.credentials(), options=options))
        self.stub = pb_grpc.IPControllerStub(self.channel)

    def _call(self, fn: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        """One call within one budget (`timeout`, else --controller-timeout): the wait for a
        restarted controller's channel and the one retry come out of it, so a pod's verb
        never waits longer than the operator said."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            return fn(request, timeout=deadline - time.monotonic(), wait_for_ready=False)
        except grpc.RpcError as err:
            if not self._back_in_time(err, deadline):
                raise to_cni_error(err, self.target) from None
        return self._retry(fn, request, deadline)

    def _back_in_time(self, err: grpc.RpcError, deadline: float) -> bool:
        """Whether `err` was the channel in reconnect backoff (controller restarted) and the
        controller answers again before `deadline`, leaving time for one retry."""
        if not isinstance(err, grpc.Call) or err.code() != grpc.StatusCode.UNAVAILABLE:
            return False
        wait = min(self.reconnect_wait, deadline - time.monotonic())
        return wait > 0 and self.ready(wait) and deadline - time.monotonic() > 0

    def _retry(self, fn: Callable[..., T], request: Any, deadline: float) -> T:
        try:
            return fn(request, timeout=max(0.0, deadline - time.monotonic()),
                      wait_for_ready=False)
        except grpc.RpcError as err:
            raise to_cni_error(err, self.target) from None

    def allocate_async(self, req: pb.AllocateRequest) -> PendingReply[pb.AllocateResponse]:
        """Start the allocation now, collect it later: the agent builds the veth meanwhile."""
        deadline = time.monotonic() + self.timeout
        fut = self.stub.AllocatePort.future(req, timeout=self.timeout, wait_for_ready=False)

        def result() -> pb.AllocateResponse:
            try:
                return fut.result()  # type: ignore[no-any-return]
            except grpc.RpcError as err:
                if self._back_in_time(err, deadline):
                    return self._retry(self.stub.AllocatePort, req, deadline)
                raise to_cni_error(err, self.target) from None
        def wait(timeout: float) -> bool:
            try:
                fut.exception(timeout=timeout)  # the error, or None: either way, answered
            except grpc.FutureTimeoutError:
                return False
            except grpc.FutureCancelledError:
                pass
            return True

        return PendingReply(result, fut.done, wait)

    def release(self, req: pb.ReleaseRequest) -> pb.ReleaseResponse:
        return self._call(self.stub.ReleasePort, req)

    def get_port(self, container_id: str, ifname: str) -> pb.Port:
        return self._call(self.stub.GetPort, pb.GetPortRequest(
            container_id=container_id, ifname=ifname)).port

    def register_node(self, node: pb.NodeInfo) -> pb.RegisterNodeResponse:
        return self._call(self.stub.RegisterNode, pb.RegisterNodeRequest(node=node), 5.0)

    def list_node_ports(self, node: str) -> list[pb.Port] | None:
        """The active ports the controller placed on `node`; None from a controller too old
        to say (UNIMPLEMENTED)."""
        try:
            resp = self.stub.ListNodePorts(pb.ListNodePortsRequest(node=node),
                                           timeout=self.timeout, wait_for_ready=False)
        except grpc.RpcError as err:
            if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise to_cni_error(err, self.target) from None
        return list(resp.ports)

    def ready(self, timeout: float = 1.0) -> bool:
        fut = grpc.channel_ready_future(self.channel)
        try:
            fut.result(timeout=timeout)
            return True
        except grpc.FutureTimeoutError:
            # An unfinished future stays subscribed to the channel until it connects:
            # without cancel, every check during an outage would pile one up.
            fut.cancel()
            return False

    def close(self) -> None:
        self.channel.close()
