"""CNI result objects, built from the port the controller handed out. Pure."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

HOST_IFNAME_PREFIX = "tap"


@dataclass(frozen=True)
class PortIP:
    address: str   # CIDR form: the pod's address with the subnet's prefix length
    gateway: str   # "" when the subnet has none

    @property
    def version(self) -> int:
        return ipaddress.ip_interface(self.address).version


@dataclass(frozen=True)
class PortInfo:
    id: str
    mac: str
    ips: tuple[PortIP, ...]
    mtu: int = 0
    hostname: str = ""


def host_ifname(port_id: str) -> str:
    """ONOS binds a Neutron port to the OVS interface named tap + the first 11 characters of
    the port id (onos-contract.md, "Dataplane binding"), so the name is not ours to choose."""
    return HOST_IFNAME_PREFIX + port_id[:11]


def default_routes(port: PortInfo) -> list[tuple[str, str]]:
    """One default route per family that has a gateway."""
    routes = []
    for ip in port.ips:
        if ip.gateway:
            routes.append(("0.0.0.0/0" if ip.version == 4 else "::/0", ip.gateway))
    return routes


def build_result(cni_version: str, port: PortInfo, host_if: str, host_mac: str,
                 ifname: str, netns: str) -> dict[str, Any]:
    """The ADD result: host end first (index 0), container end with its sandbox (index 1)."""
    legacy = cni_version in ("0.3.0", "0.3.1", "0.4.0")
    ips = []
    for ip in port.ips:
        entry: dict[str, Any] = {"address": ip.address, "interface": 1}
        if ip.gateway:
            entry["gateway"] = ip.gateway
        if legacy:
            entry["version"] = str(ip.version)
        ips.append(entry)
    return {
        "cniVersion": cni_version,
        "interfaces": [
            {"name": host_if, "mac": host_mac},
            {"name": ifname, "mac": port.mac, "sandbox": netns},
        ],
        "ips": ips,
        "routes": [{"dst": dst, "gw": gw} for dst, gw in default_routes(port)],
        "dns": {},
    }


def version_result(cni_version: str, supported: tuple[str, ...]) -> dict[str, Any]:
    return {"cniVersion": cni_version, "supportedVersions": list(supported)}
