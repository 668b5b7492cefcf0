"""How ipctl talks to the IP controller: one channel, one IPAdmin call at a time, and every
gRPC failure turned into the one line an operator reads (`IpctlError`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click
import grpc
from google.protobuf.message import Message

from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc

from .refusal import gave_reason

# Statuses whose text the controller writes for humans: show it as is.
DOMAIN_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})


class IpctlError(click.ClickException):
    """A failure the user should read as one line, with exit code 1 (not click's usage 2)."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()) or "unknown error")

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"ipctl: error: {self.format_message()}", file=file, err=file is None)


@dataclass(frozen=True)
class ClientTls:
    """ipctl's client certificate (CN admin:<name>) and the CA the controller's must chain to."""

    cert: str
    key: str
    ca: str

    def credentials(self) -> grpc.ChannelCredentials:
        try:
            files = [Path(p).read_bytes() for p in (self.ca, self.key, self.cert)]
        except OSError as exc:
            raise IpctlError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from None
        return grpc.ssl_channel_credentials(*files)


def open_channel(target: str, tls: ClientTls | None = None) -> grpc.Channel:
    """The only place a channel is made, so every command dials the controller the same way."""
    if tls is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, tls.credentials())


def rpc_error_message(err: grpc.RpcError, target: str, timeout: float) -> str:
    """Turn a status into the sentence an operator needs. A refusal (the controller gave an
    ErrorCode, or an older one its "ecnet-error") keeps the server's text whatever its code:
    that text is written for humans, and every failure exits 1 (the module's promise)."""
    code = err.code() if isinstance(err, grpc.Call) else None
    details = (err.details() if isinstance(err, grpc.Call) else None) or ""
    refused = gave_reason(err)
    if code == grpc.StatusCode.UNAVAILABLE and not refused:
        # No reason given: the transport failed, not the controller's logic.
        return f"cannot reach the IP controller at {target} ({details or 'unavailable'})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the IP controller at {target} did not answer within {timeout:g}s"
    if code in DOMAIN_CODES or refused:
        return details or (code.name if code else str(err))
    name = code.name if code else "error"
    return f"{details} ({name})" if details else f"IP controller call failed ({name})"


@dataclass
class IpctlSettings:
    """Where and how to talk; subcommand-level options may still change it before the first call."""

    controller: str
    output: str
    timeout: float
    tls: ClientTls | None = None
    _channel: grpc.Channel | None = field(default=None, repr=False)

    def call(self, method: str, request: Message) -> Any:
        """One IPAdmin RPC; every gRPC failure leaves here as an IpctlError."""
        if self._channel is None:
            self._channel = open_channel(self.controller, self.tls)
        rpc = getattr(pb_grpc.IPAdminStub(self._channel), method)
        try:
            return rpc(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise IpctlError(rpc_error_message(err, self.controller, self.timeout)) from None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
