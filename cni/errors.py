"""One exception hierarchy for the node side, mapped to CNI error codes at one edge.

Each class carries the CNI code it becomes (CNI spec "Error" section; 100+ are ours), so the
agent's request handler is the only place that turns exceptions into error objects.
"""
from __future__ import annotations


class CniError(Exception):
    """Root of every error the node side reports to a runtime."""

    code: int = 999
    default_msg: str = "internal error"

    def __init__(self, msg: str | None = None, details: str = "") -> None:
        self.msg = msg or self.default_msg
        self.details = details
        super().__init__(self.msg)

    def to_result(self, cni_version: str) -> dict[str, object]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg,
                "details": self.details}


class IncompatibleVersion(CniError):
    code = 1
    default_msg = "incompatible CNI version"


class UnsupportedField(CniError):
    code = 2
    default_msg = "unsupported field in network configuration"


class UnknownContainer(CniError):
    code = 3
    default_msg = "container unknown or does not exist"


class InvalidEnvironment(CniError):
    code = 4
    default_msg = "invalid necessary environment variables"


class IOFailure(CniError):
    code = 5
    default_msg = "I/O failure"


class DecodeFailure(CniError):
    code = 6
    default_msg = "failed to decode content"


class InvalidConfig(CniError):
    code = 7
    default_msg = "invalid network config"


class TryAgainLater(CniError):
    code = 11
    default_msg = "try again later"


class OvsUnavailable(TryAgainLater):
    """ovsdb-server did not answer, or ovs-vswitchd did not take the port, within the agent's
    OVSDB timeout: a restart or an outage that passes, so the runtime retries (11), unlike a
    port OVS refused (120)."""

    default_msg = "Open vSwitch unavailable, try again later"


class PluginNotAvailable(CniError):
    code = 50
    default_msg = "plugin not available"


class PluginNotAvailableConnectivity(CniError):
    """CNI 1.1 STATUS: not available, and existing pods may have limited connectivity."""

    code = 51
    default_msg = "plugin not available; existing pods may have limited connectivity"


class PoolExhausted(CniError):
    code = 100
    default_msg = "no free address in the pool"


class PolicyConflict(CniError):
    code = 101
    default_msg = "address policy conflict"


class NotFound(CniError):
    """A pool, subnet or requested address the request names does not exist."""

    code = 102
    default_msg = "not found"


class PlumbingError(CniError):
    """The pod's interface could not be built or verified (netlink)."""

    code = 110
    default_msg = "pod interface plumbing failed"


class NetnsNotFound(PlumbingError):
    code = 111
    default_msg = "network namespace not found"


class OvsAttachError(CniError):
    """OVSDB refused or timed out attaching the host end to the bridge."""

    code = 120
    default_msg = "attaching the port to Open vSwitch failed"


class CheckFailed(CniError):
    """CHECK found the container's networking not as ADD left it."""

    code = 130
    default_msg = "check failed"
