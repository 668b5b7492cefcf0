"""The datapath's own errors, under one root.

The agent's start-up prints any of them as one line; the loop treats every one as "keep the
flows as they are and retry" (fail static). Nothing here is a CNI error: the datapath
never answers a pod request, so CNI codes are none of its business.
"""
from __future__ import annotations


class DatapathError(Exception):
    """The datapath could not be set up or brought in line with the topology."""


class DatapathConfigError(DatapathError):
    """The settings contradict each other or the host (e.g. an underlay address without
    the prefix it needs); fails the agent's start."""


class InterfaceMissing(DatapathError):
    """A netdev the datapath needs (the underlay NIC, a bridge's or the gateway port's
    netdev) is not there."""


class TopologyUnavailable(DatapathError):
    """GetTopology did not answer (controller down, deadline, refused). The loop keeps
    what is programmed and polls again."""
