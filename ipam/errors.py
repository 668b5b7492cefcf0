"""IPAM's exception hierarchy; the gRPC edge maps each class to one status code."""
from __future__ import annotations


class IpamError(Exception):
    """Root of everything the IPAM reports to its callers."""


class InvalidArgument(IpamError):
    """The request itself is wrong (bad CIDR, unknown policy, address outside the subnet)."""


class NotFound(IpamError):
    """A named pool, subnet, binding or address does not exist."""


class AlreadyExists(IpamError):
    """Creating something whose name or range is already taken (overlapping subnets too)."""


class PolicyConflict(IpamError):
    """The request contradicts a binding or policy (e.g. a bound IP held by another live pod)."""


class InUse(IpamError):
    """Deleting something that live ports still use."""


class PoolExhausted(IpamError):
    """No free address left in the pool (for one address family)."""


class Busy(IpamError):
    """Contention we could not resolve within our retries; the caller should try again."""
