"""What ONOS accepts and answers, as plain data and pure functions (shared/onos-contract.md).

The paths, the message texts of OpenstackNetworkManager and of ONOS's exception mapper, and
openstack4j's Jackson binding of request bodies. No HTTP and no state here: the server asks
these functions whether a body is one ONOS would take, and which text to answer with.
"""
from __future__ import annotations

import json
from typing import Any

APP_PREFIX = "/onos/openstacknetworking"
HOOK_PREFIX = "/_emulator"
COLLECTIONS = {"networks": "network", "subnets": "subnet", "ports": "port"}

# jsonToModelEntity throws IllegalArgumentException() without a message; ONOS's mapper then
# reports the top stack frame.
PARSE_ERROR_FRAME = ("org.onosproject.openstacknetworking.util.OpenstackNetworkingUtil"
                     ".jsonToModelEntity(OpenstackNetworkingUtil.java:178)")
FORBIDDEN_MESSAGE = "User has insufficient privilege for this request"

# ONOS OpenstackNetworkManager's texts.
ERR_NULL_ID = {"network": "OpenStack network ID cannot be null",
               "subnet": "OpenStack subnet ID cannot be null",
               "port": "OpenStack port ID cannot be null"}
ERR_NULL_SUBNET_NET_ID = "OpenStack subnet network ID cannot be null"
ERR_NULL_SUBNET_CIDR = "OpenStack subnet CIDR cannot be null"
ERR_NULL_PORT_NET_ID = "OpenStack port network ID cannot be null"


class HttpError(Exception):
    """An ONOS-mapped exception: becomes {"code","message"} with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------ body type checks
# openstack4j's Jackson binding: what each known field may hold. Jackson coerces scalars into
# String fields and numeric strings into int fields, but refuses objects/arrays where a scalar
# is expected (and vice versa); unknown fields are ignored.
STR, BOOL, INT, LSTR, LOBJ, OBJ = "str", "bool", "int", "list[str]", "list[obj]", "obj"
_FIELDS: dict[str, dict[str, str]] = {
    "network": {"id": STR, "name": STR, "status": STR, "tenant_id": STR, "project_id": STR,
                "provider:network_type": STR, "provider:physical_network": STR,
                "provider:segmentation_id": STR, "admin_state_up": BOOL, "shared": BOOL,
                "router:external": BOOL, "mtu": INT, "subnets": LSTR,
                "availability_zone_hints": LSTR},
    "subnet": {"id": STR, "name": STR, "network_id": STR, "tenant_id": STR, "project_id": STR,
               "cidr": STR, "gateway_ip": STR, "ip_version": INT, "enable_dhcp": BOOL,
               "dns_nameservers": LSTR, "allocation_pools": LOBJ, "host_routes": LOBJ,
               "ipv6_address_mode": STR, "ipv6_ra_mode": STR},
    "port": {"id": STR, "name": STR, "network_id": STR, "tenant_id": STR, "project_id": STR,
             "mac_address": STR, "device_id": STR, "device_owner": STR, "status": STR,
             "binding:host_id": STR, "binding:vnic_type": STR, "binding:vif_type": STR,
             "admin_state_up": BOOL, "port_security_enabled": BOOL, "fixed_ips": LOBJ,
             "security_groups": LSTR, "allowed_address_pairs": LOBJ, "extra_dhcp_opts": LOBJ,
             "binding:vif_details": OBJ, "binding:profile": OBJ},
}
_NESTED: dict[str, dict[str, str]] = {
    "fixed_ips": {"subnet_id": STR, "ip_address": STR},
    "allocation_pools": {"start": STR, "end": STR},
    "allowed_address_pairs": {"ip_address": STR, "mac_address": STR},
    "host_routes": {"destination": STR, "nexthop": STR},
}


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _type_ok(kind: str, v: Any) -> bool:
    if v is None:
        return True
    if kind == STR:
        return _is_scalar(v)
    if kind == BOOL:
        return isinstance(v, (bool, int)) or (isinstance(v, str) and v in ("true", "false"))
    if kind == INT:
        if isinstance(v, bool):
            return False
        if isinstance(v, (int, float)):
            return True
        if isinstance(v, str):
            try:
                int(v.strip())
            except ValueError:
                return False
            return True
        return False
    if kind == LSTR:
        return isinstance(v, list) and all(_is_scalar(x) for x in v)
    if kind == LOBJ:
        return isinstance(v, list) and all(x is None or isinstance(x, dict) for x in v)
    return isinstance(v, dict)


def _well_typed(kind: str, obj: dict[str, Any]) -> bool:
    for key, ftype in _FIELDS[kind].items():
        if key not in obj:
            continue
        v = obj[key]
        if not _type_ok(ftype, v):
            return False
        nested = _NESTED.get(key)
        if nested and isinstance(v, list):
            for item in v:
                if isinstance(item, dict) and not all(
                        _type_ok(t, item[k]) for k, t in nested.items() if k in item):
                    return False
    return True


def java_string(v: Any) -> str | None:
    """The String Jackson makes of a JSON scalar (so id 5 is stored under "5")."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")  # Jackson refuses NaN/Infinity


def parse_body(kind: str, body: bytes) -> dict[str, Any]:
    """openstack4j's root mapper with UNWRAP_ROOT_VALUE: exactly one top-level key, the
    wrapper, holding an object; any failure is a message-less IllegalArgumentException."""
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, PARSE_ERROR_FRAME) from None
    if not isinstance(doc, dict) or list(doc) != [kind] or not isinstance(doc[kind], dict):
        raise HttpError(400, PARSE_ERROR_FRAME)
    inner: dict[str, Any] = doc[kind]
    if not _well_typed(kind, inner):
        raise HttpError(400, PARSE_ERROR_FRAME)
    return inner


def validate(kind: str, body: dict[str, Any]) -> str:
    """OpenstackNetworkManager's null checks; returns the object's id as ONOS stores it."""
    obj_id = java_string(body.get("id"))
    if not obj_id:
        raise HttpError(400, ERR_NULL_ID[kind])
    if kind == "subnet":
        if not java_string(body.get("network_id")):
            raise HttpError(400, ERR_NULL_SUBNET_NET_ID)
        if not java_string(body.get("cidr")):
            raise HttpError(400, ERR_NULL_SUBNET_CIDR)
    if kind == "port" and not java_string(body.get("network_id")):
        raise HttpError(400, ERR_NULL_PORT_NET_ID)
    return obj_id
