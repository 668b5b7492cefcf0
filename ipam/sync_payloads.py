"""What the outbox carries for ONOS: the desired object, built from domain values.

Pure functions; the sync worker (ipam.onos.sync) turns these payloads into REST calls. The
payload is the ONOS model's fields as a plain dict under the object kind, so a row can be
replayed long after the domain objects changed.
"""
from __future__ import annotations

from typing import Any

from . import addr
from .domain import Pool, Port, PortState, Subnet

TENANT = "ecnet"


def network_payload(pool: Pool, subnets: list[Subnet]) -> dict[str, Any]:
    return {"network": {
        "id": pool.network_id, "name": pool.name,
        "segmentation_id": pool.segmentation_id, "mtu": pool.mtu or 1450,
        "subnet_ids": [s.id for s in subnets],
    }}


def subnet_payload(pool: Pool, subnet: Subnet, free: list[tuple[int, int]]) -> dict[str, Any]:
    net = addr.parse_network(subnet.cidr)
    pools = [[str(addr.address_at(net, lo)), str(addr.address_at(net, hi))] for lo, hi in free]
    return {"subnet": {
        "id": subnet.id, "name": f"{pool.name}-{subnet.cidr}", "network_id": pool.network_id,
        "cidr": subnet.cidr, "gateway_ip": subnet.gateway, "ip_version": subnet.version,
        # Keep the payload bounded: a fragmented subnet would otherwise list thousands.
        "allocation_pools": pools[:64],
    }}


def port_payload(pool: Pool, port: Port) -> dict[str, Any]:
    name = (f"{port.pod_namespace}_{port.pod_name}" if port.pod_name
            else (port.owner or port.id))
    # An idle bound port (fixed/sticky owner between pods) is kept but bound to nothing, as
    # an unplugged Neutron port: no device, no host.
    idle = port.state is PortState.IDLE
    return {"port": {
        "id": port.id, "name": name, "network_id": pool.network_id,
        "mac_address": port.mac,
        "fixed_ips": [[a.subnet_id, a.ip] for a in port.addresses],
        "device_id": "" if idle else port.pod_uid, "device_owner": "compute:kubernetes",
        "host_id": "" if idle else port.node,
    }}
