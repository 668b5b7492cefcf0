"""The one table from IPAM exceptions to gRPC status codes.

The class name also travels as trailing metadata ("ecnet-error") so the node agent maps it to a
CNI error code without parsing message text.
"""
from __future__ import annotations

import logging

import grpc

from ipam import errors as e
from ipam.onos import errors as onos

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[Exception], grpc.StatusCode] = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.PolicyConflict: grpc.StatusCode.FAILED_PRECONDITION,
    e.InUse: grpc.StatusCode.FAILED_PRECONDITION,
    e.PoolExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.Busy: grpc.StatusCode.UNAVAILABLE,
    # `ipctl sync now` talks to ONOS on the caller's behalf
    onos.OnosAuthError: grpc.StatusCode.FAILED_PRECONDITION,
    onos.OnosRejected: grpc.StatusCode.FAILED_PRECONDITION,
    onos.OnosError: grpc.StatusCode.UNAVAILABLE,
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(code, message, error class) for any exception; unknown ones are INTERNAL."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls], str(exc), cls.__name__
    log.exception("unexpected error in request handler")
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}", "Internal"
