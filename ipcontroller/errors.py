"""The one table from IPAM (and ONOS) exceptions to what a refusal says on the wire.

Each class maps to a gRPC status code and an `ErrorCode` (proto), the reason as data: the
agent and ipctl map the ErrorCode, never a class name, so renaming a class here changes
nothing a pod sees as long as this table keeps its row. How the reason travels is
`ipcontroller.refusal`.
"""
from __future__ import annotations

import logging

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb
from ipam import errors as e
from ipam.onos import errors as onos

from .refusal import Refusal

log = logging.getLogger(__name__)

S = grpc.StatusCode
REFUSAL_BY_ERROR: dict[type[Exception], tuple[grpc.StatusCode, pb.ErrorCode]] = {
    e.InvalidArgument: (S.INVALID_ARGUMENT, pb.ERROR_CODE_INVALID_ARGUMENT),
    e.NotFound: (S.NOT_FOUND, pb.ERROR_CODE_NOT_FOUND),
    e.AlreadyExists: (S.ALREADY_EXISTS, pb.ERROR_CODE_ALREADY_EXISTS),
    e.PolicyConflict: (S.FAILED_PRECONDITION, pb.ERROR_CODE_POLICY_CONFLICT),
    e.InUse: (S.FAILED_PRECONDITION, pb.ERROR_CODE_IN_USE),
    e.PoolExhausted: (S.RESOURCE_EXHAUSTED, pb.ERROR_CODE_POOL_EXHAUSTED),
    e.Busy: (S.UNAVAILABLE, pb.ERROR_CODE_BUSY),
    # `ipctl sync now` talks to ONOS on the caller's behalf
    onos.OnosAuthError: (S.FAILED_PRECONDITION, pb.ERROR_CODE_ONOS_AUTH),
    onos.OnosRejected: (S.FAILED_PRECONDITION, pb.ERROR_CODE_ONOS_REJECTED),
    onos.OnosError: (S.UNAVAILABLE, pb.ERROR_CODE_ONOS_UNAVAILABLE),
}


# What a refusal (and its log line) may echo. Messages quote their input (a pool name, an
# address): a 1 MB name must not become a 1 MB log line, nor a reply over gRPC's metadata
# limit, which the caller cannot tell from a transport failure.
MESSAGE_MAX = 512


def clip(text: str, limit: int = MESSAGE_MAX) -> str:
    """`text`, cut to about `limit` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters, cut)"


def refusal_for(exc: BaseException) -> Refusal:
    """The refusal for any exception; one outside the table is a bug: INTERNAL, logged with
    its traceback here (once), and named by its class only in the message."""
    for cls in type(exc).__mro__:
        if cls in REFUSAL_BY_ERROR:
            status, code = REFUSAL_BY_ERROR[cls]
            return Refusal(status, code, clip(str(exc)))
    log.exception("unexpected error in request handler")
    return Refusal(S.INTERNAL, pb.ERROR_CODE_INTERNAL, f"internal error: {type(exc).__name__}")
