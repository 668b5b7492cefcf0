"""What ecnet tells ONOS, as plain values, and the exact Neutron-style bodies ONOS expects.

The dataclasses are the unit the outbox stores (as plain JSON, see `to_payload`), so a row can
be replayed long after the IPAM's own objects changed. The `*_body` functions are the only
place that knows openstack4j's field names (see shared/onos-contract.md section 4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TENANT_ID = "ecnet"
DEVICE_OWNER = "compute:kubernetes"
NETWORK_TYPE = "vxlan"


@dataclass(frozen=True)
class OnosNetwork:
    id: str
    name: str
    segmentation_id: int
    mtu: int
    subnet_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class OnosSubnet:
    id: str
    name: str
    network_id: str
    cidr: str
    gateway_ip: str | None
    ip_version: int
    allocation_pools: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OnosPort:
    id: str
    name: str
    network_id: str
    mac_address: str
    fixed_ips: tuple[tuple[str, str], ...]  # (subnet_id, ip_address)
    device_id: str                          # the pod uid
    device_owner: str = DEVICE_OWNER
    host_id: str = ""                       # the node name (binding:host_id)


OnosObject = OnosNetwork | OnosSubnet | OnosPort


def network_body(n: OnosNetwork) -> dict[str, Any]:
    # ONOS parses provider:segmentation_id as a string; sending an int would still coerce,
    # but the reference client (networking-onos) sends a string, so do the same.
    return {"network": {
        "id": n.id, "name": n.name, "admin_state_up": True, "status": "ACTIVE",
        "shared": False, "tenant_id": TENANT_ID, "provider:network_type": NETWORK_TYPE,
        "provider:segmentation_id": str(n.segmentation_id), "router:external": False,
        "mtu": n.mtu, "subnets": list(n.subnet_ids),
    }}


def subnet_body(s: OnosSubnet) -> dict[str, Any]:
    return {"subnet": {
        "id": s.id, "name": s.name, "network_id": s.network_id, "tenant_id": TENANT_ID,
        "cidr": s.cidr, "gateway_ip": s.gateway_ip, "ip_version": s.ip_version,
        "enable_dhcp": False, "dns_nameservers": [],
        "allocation_pools": [{"start": a, "end": b} for a, b in s.allocation_pools],
        "host_routes": [],
    }}


def port_body(p: OnosPort) -> dict[str, Any]:
    return {"port": {
        "id": p.id, "name": p.name, "network_id": p.network_id, "tenant_id": TENANT_ID,
        "mac_address": p.mac_address, "admin_state_up": True, "status": "ACTIVE",
        "fixed_ips": [{"subnet_id": sid, "ip_address": ip} for sid, ip in p.fixed_ips],
        "device_id": p.device_id, "device_owner": p.device_owner,
        "binding:host_id": p.host_id, "binding:vnic_type": "normal",
        "binding:vif_type": "ovs", "binding:vif_details": {}, "binding:profile": {},
        "security_groups": [], "allowed_address_pairs": [], "port_security_enabled": False,
    }}


def kind_of(obj: OnosObject) -> str:
    if isinstance(obj, OnosNetwork):
        return "network"
    if isinstance(obj, OnosSubnet):
        return "subnet"
    return "port"


# ---------------------------------------------------------------- outbox payloads
#
# Payload = {"<kind>": {<dataclass field>: value}} with tuples as JSON lists, i.e. exactly
# what ipam.onos.desired writes. Pairs are accepted either as 2-lists or as the Neutron dicts
# ({"start","end"} / {"subnet_id","ip_address"}) so hand-written rows also load.


class PayloadError(ValueError):
    """An outbox payload that cannot become a model object: a producer bug, not ONOS's."""


def to_payload(obj: OnosObject) -> dict[str, Any]:
    if isinstance(obj, OnosNetwork):
        inner: dict[str, Any] = {"id": obj.id, "name": obj.name,
                                 "segmentation_id": obj.segmentation_id, "mtu": obj.mtu,
                                 "subnet_ids": list(obj.subnet_ids)}
    elif isinstance(obj, OnosSubnet):
        inner = {"id": obj.id, "name": obj.name, "network_id": obj.network_id,
                 "cidr": obj.cidr, "gateway_ip": obj.gateway_ip, "ip_version": obj.ip_version,
                 "allocation_pools": [list(p) for p in obj.allocation_pools]}
    else:
        inner = {"id": obj.id, "name": obj.name, "network_id": obj.network_id,
                 "mac_address": obj.mac_address,
                 "fixed_ips": [list(f) for f in obj.fixed_ips],
                 "device_id": obj.device_id, "device_owner": obj.device_owner,
                 "host_id": obj.host_id}
    return {kind_of(obj): inner}


def _pair(v: Any, keys: tuple[str, str]) -> tuple[str, str]:
    if isinstance(v, dict):
        return str(v[keys[0]]), str(v[keys[1]])
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return str(v[0]), str(v[1])
    raise PayloadError(f"expected a pair {keys}, got {v!r}")


def from_payload(kind: str, payload: dict[str, Any] | None) -> OnosObject:
    if not isinstance(payload, dict) or not isinstance(payload.get(kind), dict):
        raise PayloadError(f"payload for kind={kind} must be {{{kind!r}: {{...}}}}")
    d: dict[str, Any] = payload[kind]
    try:
        if kind == "network":
            return OnosNetwork(
                id=str(d["id"]), name=str(d.get("name") or d["id"]),
                segmentation_id=int(d.get("segmentation_id") or 0),
                mtu=int(d.get("mtu") or 0),
                subnet_ids=tuple(str(x) for x in d.get("subnet_ids") or ()))
        if kind == "subnet":
            gw = d.get("gateway_ip")
            return OnosSubnet(
                id=str(d["id"]), name=str(d.get("name") or d["id"]),
                network_id=str(d["network_id"]), cidr=str(d["cidr"]),
                gateway_ip=None if gw in (None, "") else str(gw),
                ip_version=int(d.get("ip_version") or (6 if ":" in str(d["cidr"]) else 4)),
                allocation_pools=tuple(_pair(p, ("start", "end"))
                                       for p in d.get("allocation_pools") or ()))
        if kind == "port":
            return OnosPort(
                id=str(d["id"]), name=str(d.get("name") or d["id"]),
                network_id=str(d["network_id"]), mac_address=str(d["mac_address"]),
                fixed_ips=tuple(_pair(f, ("subnet_id", "ip_address"))
                                for f in d.get("fixed_ips") or ()),
                device_id=str(d.get("device_id") or ""),
                device_owner=str(d.get("device_owner") or DEVICE_OWNER),
                host_id=str(d.get("host_id") or ""))
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, PayloadError):
            raise
        raise PayloadError(f"bad {kind} payload: {type(e).__name__}: {e}") from e
    raise PayloadError(f"unknown kind {kind!r}")
