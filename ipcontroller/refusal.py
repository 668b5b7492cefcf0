"""How a refusal travels between the controller and its callers: the wire half of the errors.

The reason is an `ErrorCode` in an `ErrorDetail`, packed into the google.rpc.Status that gRPC
carries in the "grpc-status-details-bin" trailing metadata (the grpcio-status package does the
encoding, so any gRPC client that knows rich status reads it). For one release the controller
also sends "ecnet-error": the name an older agent or ipctl maps. The names come from the
ErrorCode through the frozen table below, never from a live class, so they stay what older
agents expect whoever renames what.

Kept apart from `ipcontroller.errors` (which imports the IPAM and ONOS exception classes):
ipctl reads refusals with this module alone. The agent decodes the ErrorDetail itself
(`cni.agent.controller`): `cni` imports nothing of `ipcontroller`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from ecnet_api.v1 import ecnet_pb2 as pb

DETAILS_KEY = "grpc-status-details-bin"  # where gRPC carries a google.rpc.Status
LEGACY_KEY = "ecnet-error"
# What controllers before ErrorCode sent, per reason (the IPAM class the old table matched).
# Drop with the "ecnet-error" metadata, one release after every agent reads ErrorDetail.
LEGACY_NAMES: dict[pb.ErrorCode, str] = {
    pb.ERROR_CODE_UNSPECIFIED: "Internal",
    pb.ERROR_CODE_INTERNAL: "Internal",
    pb.ERROR_CODE_INVALID_ARGUMENT: "InvalidArgument",
    pb.ERROR_CODE_NOT_FOUND: "NotFound",
    pb.ERROR_CODE_ALREADY_EXISTS: "AlreadyExists",
    pb.ERROR_CODE_POLICY_CONFLICT: "PolicyConflict",
    pb.ERROR_CODE_IN_USE: "InUse",
    pb.ERROR_CODE_POOL_EXHAUSTED: "PoolExhausted",
    pb.ERROR_CODE_BUSY: "Busy",
    pb.ERROR_CODE_ONOS_UNAVAILABLE: "OnosError",
    pb.ERROR_CODE_ONOS_AUTH: "OnosAuthError",
    pb.ERROR_CODE_ONOS_REJECTED: "OnosRejected",
    pb.ERROR_CODE_PERMISSION_DENIED: "PermissionDenied",
}


@dataclass(frozen=True)
class Refusal:
    """One non-OK answer: the gRPC status, the reason as data, and the line for humans."""

    status: grpc.StatusCode
    code: pb.ErrorCode
    message: str

    def trailing_metadata(self, *, legacy: bool = True) -> tuple[tuple[str, str | bytes], ...]:
        """The rich status (and, with `legacy`, the older name) for `context.abort`."""
        detail = any_pb2.Any()
        detail.Pack(pb.ErrorDetail(code=self.code, message=self.message))
        rich = rpc_status.to_status(status_pb2.Status(
            code=self.status.value[0], message=self.message, details=[detail]))
        meta: tuple[tuple[str, str | bytes], ...] = tuple(rich.trailing_metadata)
        if legacy:
            meta += ((LEGACY_KEY, LEGACY_NAMES[self.code]),)
        return meta

    def abort(self, context: grpc.ServicerContext) -> None:
        """End the call with this refusal (grpc raises out of `context.abort`)."""
        context.set_trailing_metadata(self.trailing_metadata())
        context.abort(self.status, self.message)

    async def abort_async(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """`abort` for a coroutine handler on the asyncio server (raises grpc's AbortError)."""
        context.set_trailing_metadata(self.trailing_metadata())
        await context.abort(self.status, self.message)


def gave_reason(err: grpc.RpcError) -> bool:
    """Whether the controller said why it refused (a rich status, where this controller packs
    its ErrorDetail, or an older controller's "ecnet-error"), as opposed to a transport failure
    or a proxy's answer. ipctl needs no more: every reason keeps the controller's sentence."""
    if not isinstance(err, grpc.Call):
        return False
    return any(key in (DETAILS_KEY, LEGACY_KEY) for key, _ in err.trailing_metadata() or ())
