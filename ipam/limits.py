"""The limits of every stored value, checked by the service before any store sees it.

Why here and not in the schema: PostgreSQL refuses an over-long string or an integer past
2^31-1 with an error the edge can only call INTERNAL, SQLite stores it silently, and the
memory store knows no limit at all. Checking once, in front of every store, gives the same
`InvalidArgument` on every backend, naming the field and its limit. The numbers are the
schema's column sizes (ipam/store/schema.py) or, where a column is unbounded text, the
kernel's or Kubernetes' own limit.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .domain import AllocationRequest, Node
from .errors import InvalidArgument

INT32_MAX = (1 << 31) - 1
IFNAME_MAX = 15          # IFNAMSIZ - 1: the kernel's limit, below the column's 16
CONTAINER_ID_MAX = 128
POD_UID_MAX = 64
K8S_NAME_MAX = 253       # namespaces, pod names, node names, owners, hostnames, groups
POOL_NAME_MAX = 63
PRODUCT_TYPE_MAX = 63
PATH_MAX = 4096          # netns paths
IP_TEXT_MAX = 64
NOTE_MAX = 1024
GATEWAY_CIDRS_MAX = 64
DATAPATHS = ("standalone", "onos")


def text(field: str, value: str, limit: int) -> None:
    """Refuse `value` longer than `limit` characters (the value itself is not echoed)."""
    if len(value) > limit:
        raise InvalidArgument(f"{field} is {len(value)} characters; the limit is {limit}")


def number(field: str, value: int, low: int = 0, high: int = INT32_MAX) -> None:
    if not low <= value <= high:
        raise InvalidArgument(f"{field} {value} is out of range {low}..{high}")


def allocation_request(req: AllocationRequest) -> None:
    text("container id", req.container_id, CONTAINER_ID_MAX)
    text("ifname", req.ifname, IFNAME_MAX)
    text("pod uid", req.pod.uid, POD_UID_MAX)
    text("pod namespace", req.pod.namespace, K8S_NAME_MAX)
    text("pod name", req.pod.name, K8S_NAME_MAX)
    text("node", req.node, K8S_NAME_MAX)
    text("netns", req.netns, PATH_MAX)
    text("product type", req.product_type, PRODUCT_TYPE_MAX)
    text("pool", req.pool, POOL_NAME_MAX)
    text("config pool", req.config_pool, POOL_NAME_MAX)
    text("requested ip", req.requested_ip, IP_TEXT_MAX)
    text("owner", req.owner, K8S_NAME_MAX)
    text("hostname", req.hostname, K8S_NAME_MAX)
    text("port id", req.port_id, 36)


def pool_settings(name: str, quarantine_seconds: int | None, retention_seconds: int,
                  product_type: str, group: str) -> None:
    text("pool name", name, POOL_NAME_MAX)
    if quarantine_seconds is not None:
        number("quarantine seconds", quarantine_seconds)
    number("retention seconds", retention_seconds)
    text("product type", product_type, PRODUCT_TYPE_MAX)
    text("group", group, K8S_NAME_MAX)


def binding(owner: str, ip: str, hostname: str) -> None:
    text("owner", owner, K8S_NAME_MAX)
    text("ip", ip, IP_TEXT_MAX)
    text("hostname", hostname, K8S_NAME_MAX)


def reservation(addresses: Iterable[str], note: str) -> None:
    for a in addresses:
        text("address", a, IP_TEXT_MAX)
    text("note", note, NOTE_MAX)


def node(n: Node) -> None:
    text("node name", n.name, K8S_NAME_MAX)
    text("underlay ip", n.underlay_ip, IP_TEXT_MAX)
    if n.datapath not in DATAPATHS:
        raise InvalidArgument(f"datapath must be one of {', '.join(DATAPATHS)}; "
                              f"got {n.datapath[:32]!r}")
    if len(n.gateway_cidrs) > GATEWAY_CIDRS_MAX:
        raise InvalidArgument(f"{len(n.gateway_cidrs)} gateway CIDRs; the limit is "
                              f"{GATEWAY_CIDRS_MAX}")
    for cidr in n.gateway_cidrs:
        text("gateway cidr", cidr, IP_TEXT_MAX)
        try:   # host bits allowed, as the agent's --gateway-cidr allows them
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise InvalidArgument(f"gateway cidr {cidr!r} is not a CIDR") from None
