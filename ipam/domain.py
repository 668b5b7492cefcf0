"""The IPAM's vocabulary as plain frozen dataclasses, shared by every store and the service."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Policy(str, enum.Enum):
    """A pool's policy by the name stored and sent over the API; what each one does is its
    `ipam.policy.IpPolicy` object."""

    FIXED = "fixed"      # light-VM: one IP (and hostname) for the owner's life
    STICKY = "sticky"    # stateful group member: gets its old IP back
    DYNAMIC = "dynamic"  # stateless: any free IP, freed on DEL after a quarantine


class PortState(str, enum.Enum):
    ACTIVE = "active"    # a live pod (container id + ifname) uses it
    IDLE = "idle"        # bound to an owner, no pod right now


class AddressState(str, enum.Enum):
    ALLOCATED = "allocated"
    QUARANTINED = "quarantined"
    RESERVED = "reserved"


DEFAULT_QUARANTINE_SECONDS = 60


@dataclass(frozen=True)
class Pool:
    id: str
    name: str
    policy: Policy
    quarantine_seconds: int = DEFAULT_QUARANTINE_SECONDS
    retention_seconds: int = 0
    mtu: int = 0
    product_type: str = ""
    group: str = ""
    network_id: str = ""          # the ONOS network this pool maps to
    segmentation_id: int = 0


@dataclass(frozen=True)
class Subnet:
    id: str
    pool_id: str
    cidr: str
    version: int
    gateway: str | None
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortAddress:
    subnet_id: str
    ip: str
    offset: int


@dataclass(frozen=True)
class Port:
    id: str
    pool_id: str
    mac: str
    state: PortState
    generation: int
    addresses: tuple[PortAddress, ...] = ()
    owner: str | None = None
    container_id: str | None = None
    ifname: str | None = None
    pod_uid: str = ""
    pod_namespace: str = ""
    pod_name: str = ""
    node: str = ""
    netns: str = ""
    hostname: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class Usage:
    total: int = 0
    used: int = 0
    reserved: int = 0
    quarantined: int = 0
    free: int = 0
    bound: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, int, int, int, int, int]:
        return (self.total, self.used, self.reserved, self.quarantined, self.free, self.bound)


@dataclass(frozen=True)
class PodIdentity:
    namespace: str = ""
    name: str = ""
    uid: str = ""


@dataclass(frozen=True)
class AllocationRequest:
    """One pod interface asking for a port; (pod uid, container id, ifname) identifies it."""

    container_id: str
    ifname: str
    pod: PodIdentity = field(default_factory=PodIdentity)
    node: str = ""
    netns: str = ""
    product_type: str = ""
    pool: str = ""          # chosen by the pod (ecnet.io/pool annotation)
    requested_ip: str = ""
    owner: str = ""
    hostname: str = ""
    port_id: str = ""       # proposed id for a new port (the agent names the host end from it)
    config_pool: str = ""   # the network config's pool: after the pod's own choices


@dataclass(frozen=True)
class Allocation:
    port: Port
    pool: Pool
    subnets: tuple[Subnet, ...]
    existing: bool = False


@dataclass(frozen=True)
class ReleaseResult:
    found: bool
    port_id: str = ""
    outcome: str = "unknown"   # released | quarantined | kept | unknown | stale


@dataclass(frozen=True)
class Node:
    name: str
    underlay_ip: str
    gateway: bool = False
    datapath: str = "standalone"
    last_seen: float = 0.0
    gateway_cidrs: tuple[str, ...] = ()
    # False once the node missed its heartbeats (set by the stale sweep, once, so the change
    # log says it once); a heartbeat makes it True again.
    ready: bool = True
