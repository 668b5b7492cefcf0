"""The one exception hierarchy of ovs_driver.

Callers (the node agent) translate these at their own edge; inside this package every
failure is one of these, so nothing OVS-specific leaks as a bare OSError or KeyError.
"""
from __future__ import annotations


class OvsError(Exception):
    """Root of every error raised by ovs_driver."""


class OvsConnectionError(OvsError):
    """ovsdb-server cannot be reached, or the connection was lost mid-request.

    A request that fails this way may or may not have been committed: the caller's
    operations are idempotent, so retrying is the way to find out.
    """


class OvsTransactionError(OvsError):
    """OVSDB or ovs-vswitchd refused a change: an op error, a constraint violation, a
    missing bridge, a port vswitchd could not open, or races lost to other writers
    until the retries ran out. The server's text is kept in the message and in
    ``error``/``details`` so an operator sees what OVS said.
    """

    def __init__(self, message: str, *, error: str | None = None,
                 details: object = None) -> None:
        super().__init__(message)
        self.error = error  # OVSDB's short error tag, e.g. "constraint violation"
        self.details = details


class OvsTimeout(OvsError):
    """ovsdb-server or ovs-vswitchd did not answer in time (e.g. no ``ofport`` yet)."""


class OvsNotFound(OvsError):
    """A bridge, port or interface that a read asked about does not exist."""


class OvsFlowError(OvsError):
    """``ovs-ofctl`` rejected a flow operation; the message carries its stderr."""
