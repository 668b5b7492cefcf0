"""The agent's warm gRPC channel to the IP controller, with errors mapped to CNI codes.

The controller sends the IPAM error class in the "ecnet-error" trailing metadata; that (not
the message text) decides the CNI code.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc

from .. import errors as ce
from .seams import PendingReply

log = logging.getLogger(__name__)
T = TypeVar("T")

_BY_CLASS: dict[str, type[ce.CniError]] = {
    "PoolExhausted": ce.PoolExhausted,
    "PolicyConflict": ce.PolicyConflict,
    "InUse": ce.PolicyConflict,
    "AlreadyExists": ce.PolicyConflict,
    "NotFound": ce.NotFound,
    "InvalidArgument": ce.InvalidConfig,
    "Busy": ce.TryAgainLater,
}
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}


def to_cni_error(err: grpc.RpcError, target: str) -> ce.CniError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else "") or str(code)
    cls_name = ""
    for key, value in (err.trailing_metadata() or ()) if hasattr(err, "trailing_metadata") else ():
        if key == "ecnet-error":
            cls_name = str(value)
    if cls_name in _BY_CLASS:
        return _BY_CLASS[cls_name](details)
    if code in _RETRYABLE:
        return ce.TryAgainLater(f"IP controller at {target} unavailable, try again later",
                                details)
    return ce.CniError(f"IP controller error: {details}", code.name)


class GrpcControllerClient:
    def __init__(self, target: str, timeout: float = 10.0, reconnect_wait: float = 2.0) -> None:
        self.target = target
        self.timeout = timeout
        self.reconnect_wait = reconnect_wait
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.keepalive_time_ms", 30000),
            ("grpc.enable_retries", 1),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ])
        self.stub = pb_grpc.IPControllerStub(self.channel)

    def _call(self, fn: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return fn(request, timeout=timeout or self.timeout, wait_for_ready=False)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or not self.ready(self.reconnect_wait):
                raise to_cni_error(err, self.target) from None
        # The channel was in reconnect backoff (controller restarted) and is back: one retry.
        try:
            return fn(request, timeout=timeout or self.timeout, wait_for_ready=False)
        except grpc.RpcError as err:
            raise to_cni_error(err, self.target) from None

    def allocate(self, req: pb.AllocateRequest) -> pb.AllocateResponse:
        return self._call(self.stub.AllocatePort, req)

    def allocate_async(self, req: pb.AllocateRequest) -> PendingReply[pb.AllocateResponse]:
        """Start the allocation now, collect it later: the agent builds the veth meanwhile."""
        fut = self.stub.AllocatePort.future(req, timeout=self.timeout, wait_for_ready=False)

        def result() -> pb.AllocateResponse:
            try:
                return fut.result()  # type: ignore[no-any-return]
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE and self.ready(self.reconnect_wait):
                    return self._call(self.stub.AllocatePort, req)  # controller came back
                raise to_cni_error(err, self.target) from None
        return PendingReply(result, fut.done)

    def release_async(self, req: pb.ReleaseRequest) -> Callable[[], pb.ReleaseResponse]:
        fut = self.stub.ReleasePort.future(req, timeout=self.timeout, wait_for_ready=False)

        def result() -> pb.ReleaseResponse:
            try:
                return fut.result()  # type: ignore[no-any-return]
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE and self.ready(self.reconnect_wait):
                    return self._call(self.stub.ReleasePort, req)
                raise to_cni_error(err, self.target) from None
        return result

    def release(self, req: pb.ReleaseRequest) -> pb.ReleaseResponse:
        return self._call(self.stub.ReleasePort, req)

    def get_port(self, container_id: str, ifname: str) -> pb.Port:
        return self._call(self.stub.GetPort, pb.GetPortRequest(
            container_id=container_id, ifname=ifname)).port

    def register_node(self, node: pb.NodeInfo) -> pb.RegisterNodeResponse:
        return self._call(self.stub.RegisterNode, pb.RegisterNodeRequest(node=node), 5.0)

    def topology(self, node: str) -> pb.TopologyResponse:
        return self._call(self.stub.GetTopology, pb.TopologyRequest(node=node))

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


# The datapath still imports the old name until it moves to its own package (issue 9).
ControllerClient = GrpcControllerClient
