"""Rows of the replica as the agent sees them: typed values, and the rule for when
ovs-vswitchd has given its verdict on a port. Pure functions, no I/O."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ovs_driver.idl import IdlRow, col


@dataclass(frozen=True)
class InterfaceInfo:
    """One Interface row as the agent needs it (DEL/CHECK/GC work from these)."""

    name: str
    type: str
    ofport: int  # -1 while ovs-vswitchd has assigned none (or failed to open the port)
    mac_in_use: str | None
    external_ids: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def optional(value: Any) -> Any:
    """An optional column (min 0, max 1) reads as a 0- or 1-element list in python-ovs."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def as_int(value: Any) -> int:
    """An integer column, -1 when unset (or not an integer)."""
    value = optional(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def as_map(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return {}


def optional_str(value: Any) -> str | None:
    value = optional(value)
    return str(value) if value is not None else None


def iface_info(row: IdlRow) -> InterfaceInfo:
    return InterfaceInfo(
        name=str(col(row, "name")),
        type=str(col(row, "type")),
        ofport=as_int(col(row, "ofport")),
        mac_in_use=optional_str(col(row, "mac_in_use")),
        external_ids=as_map(col(row, "external_ids")),
        options=as_map(col(row, "options")),
        error=optional_str(col(row, "error")),
    )


def port_settled(ofport: int, error: str | None, cur_cfg: int, target: int | None) -> bool:
    """Has ovs-vswitchd decided about this interface, as ovs-vsctl judges it?

    Yes once it has an ofport. Otherwise only once vswitchd has acted on our
    transaction (``cur_cfg`` reached the ``next_cfg`` we set), whatever ``error``
    says before that: a re-added port may still carry the error of an earlier try.
    When nothing was committed (``target`` None: python-ovs found nothing to change)
    there is no cfg to wait for, and an error already there is the answer.
    """
    if ofport > 0:
        return True
    if target is None:
        return error is not None
    return cur_cfg >= target
