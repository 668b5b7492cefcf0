"""How the controller opens its gRPC listeners: mutual TLS on TCP, a 0660 unix socket, and the
rule that plaintext TCP stays on loopback unless the operator says `--insecure`.

Unix socket: created 0660, owned by the daemon's user and `--socket-group` (else the user's
primary group), in directories created 0750; whoever can open it is trusted as admin
(`ipcontroller.authz`), exactly like the containerd socket. Give the agents' group, not
everyone, access to it.

Health checks on every listener are coroutines on the server's event loop (`add_health`):
the probe must answer while every worker waits on the database.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from .secrets import warn_if_exposed

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
SOCKET_DIR_MODE = 0o750


@dataclass(frozen=True)
class TlsFiles:
    """The controller's certificate and key, and the CA its clients' certificates must chain to."""

    cert: str
    key: str
    client_ca: str

    def server_credentials(self) -> grpc.ServerCredentials:
        warn_if_exposed(self.key, "TLS key")
        return grpc.ssl_server_credentials(
            [(_read(self.key), _read(self.cert))], root_certificates=_read(self.client_ca),
            require_client_auth=True)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def is_unix(address: str) -> bool:
    return address.startswith("unix:")


def is_loopback(address: str) -> bool:
    """Whether a HOST:PORT listens on loopback only ("localhost", 127.0.0.0/8, [::1])."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:   # a name (or 0.0.0.0 spelled as ""): may resolve anywhere
        return False


def plaintext_refusal(addresses: list[str], tls: bool, insecure: bool) -> str:
    """Why these listeners may not start ("" when they may): plaintext on a TCP address other
    than loopback needs `--insecure`."""
    if tls or insecure:
        return ""
    open_ = [a for a in addresses if not is_unix(a) and not is_loopback(a)]
    if not open_:
        return ""
    return (f"refusing plaintext gRPC on {', '.join(open_)}: give --tls-cert, --tls-key and "
            "--tls-client-ca (or --insecure to serve it unauthenticated)")


def _make_dirs(directory: Path) -> None:
    """Create the socket's missing directories 0750 (not the umask's 0755)."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        d.mkdir(mode=SOCKET_DIR_MODE)
        d.chmod(SOCKET_DIR_MODE)   # mkdir's mode passes through the umask


def add_listener(server: grpc.aio.Server, address: str, tls: TlsFiles | None,
                 socket_group: str = "") -> int:
    """Bind one address: TLS on TCP when configured, plaintext on a unix socket (0660, group
    `socket_group`). The port bound (0 for a unix socket); OSError when it cannot be bound."""
    if is_unix(address):
        sock = Path(address[len("unix:"):])
        _make_dirs(sock.parent)
        sock.unlink(missing_ok=True)  # stale socket of a previous run
    try:
        if tls is not None and not is_unix(address):
            bound = server.add_secure_port(address, tls.server_credentials())
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:  # what grpcio raises for a port in use or a missing dir
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    if not is_unix(address):
        return bound
    # grpcio creates the socket file when binding, under the umask: connecting takes write
    # permission, so until the chmod it is the owner's alone (never wider than 0660).
    if socket_group:
        shutil.chown(sock, group=socket_group)
    os.chmod(sock, SOCKET_MODE)
    return 0


def add_health(server: grpc.aio.Server, servicer: health.aio.HealthServicer) -> None:
    """Serve `servicer` on `server`. Its Check and Watch are coroutines on the server's event
    loop: they need no worker thread, so they answer while every worker waits on the
    database (nothing on the loop waits for the store: ipcontroller.calls)."""
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
