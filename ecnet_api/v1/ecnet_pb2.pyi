from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_ARGUMENT: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_ALREADY_EXISTS: _ClassVar[ErrorCode]
    ERROR_CODE_POLICY_CONFLICT: _ClassVar[ErrorCode]
    ERROR_CODE_IN_USE: _ClassVar[ErrorCode]
    ERROR_CODE_POOL_EXHAUSTED: _ClassVar[ErrorCode]
    ERROR_CODE_BUSY: _ClassVar[ErrorCode]
    ERROR_CODE_ONOS_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_ONOS_AUTH: _ClassVar[ErrorCode]
    ERROR_CODE_ONOS_REJECTED: _ClassVar[ErrorCode]
    ERROR_CODE_PERMISSION_DENIED: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_INTERNAL: ErrorCode
ERROR_CODE_INVALID_ARGUMENT: ErrorCode
ERROR_CODE_NOT_FOUND: ErrorCode
ERROR_CODE_ALREADY_EXISTS: ErrorCode
ERROR_CODE_POLICY_CONFLICT: ErrorCode
ERROR_CODE_IN_USE: ErrorCode
ERROR_CODE_POOL_EXHAUSTED: ErrorCode
ERROR_CODE_BUSY: ErrorCode
ERROR_CODE_ONOS_UNAVAILABLE: ErrorCode
ERROR_CODE_ONOS_AUTH: ErrorCode
ERROR_CODE_ONOS_REJECTED: ErrorCode
ERROR_CODE_PERMISSION_DENIED: ErrorCode

class ErrorDetail(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class PodRef(_message.Message):
    __slots__ = ("namespace", "name", "uid")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    uid: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., uid: _Optional[str] = ...) -> None: ...

class AllocateRequest(_message.Message):
    __slots__ = ("container_id", "ifname", "netns", "node", "pod", "product_type", "pool", "requested_ip", "owner", "network", "hostname", "port_id", "config_pool", "pod_pool")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_TYPE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_IP_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PORT_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_POOL_FIELD_NUMBER: _ClassVar[int]
    POD_POOL_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    ifname: str
    netns: str
    node: str
    pod: PodRef
    product_type: str
    pool: str
    requested_ip: str
    owner: str
    network: str
    hostname: str
    port_id: str
    config_pool: str
    pod_pool: str
    def __init__(self, container_id: _Optional[str] = ..., ifname: _Optional[str] = ..., netns: _Optional[str] = ..., node: _Optional[str] = ..., pod: _Optional[_Union[PodRef, _Mapping]] = ..., product_type: _Optional[str] = ..., pool: _Optional[str] = ..., requested_ip: _Optional[str] = ..., owner: _Optional[str] = ..., network: _Optional[str] = ..., hostname: _Optional[str] = ..., port_id: _Optional[str] = ..., config_pool: _Optional[str] = ..., pod_pool: _Optional[str] = ...) -> None: ...

class IPConfig(_message.Message):
    __slots__ = ("address", "gateway", "subnet_id", "cidr")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    SUBNET_ID_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    address: str
    gateway: str
    subnet_id: str
    cidr: str
    def __init__(self, address: _Optional[str] = ..., gateway: _Optional[str] = ..., subnet_id: _Optional[str] = ..., cidr: _Optional[str] = ...) -> None: ...

class Port(_message.Message):
    __slots__ = ("id", "mac", "ips", "pool", "policy", "mtu", "container_id", "ifname", "node", "pod", "owner", "state", "generation", "hostname", "netns", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    mac: str
    ips: _containers.RepeatedCompositeFieldContainer[IPConfig]
    pool: str
    policy: str
    mtu: int
    container_id: str
    ifname: str
    node: str
    pod: PodRef
    owner: str
    state: str
    generation: int
    hostname: str
    netns: str
    created_at: str
    def __init__(self, id: _Optional[str] = ..., mac: _Optional[str] = ..., ips: _Optional[_Iterable[_Union[IPConfig, _Mapping]]] = ..., pool: _Optional[str] = ..., policy: _Optional[str] = ..., mtu: _Optional[int] = ..., container_id: _Optional[str] = ..., ifname: _Optional[str] = ..., node: _Optional[str] = ..., pod: _Optional[_Union[PodRef, _Mapping]] = ..., owner: _Optional[str] = ..., state: _Optional[str] = ..., generation: _Optional[int] = ..., hostname: _Optional[str] = ..., netns: _Optional[str] = ..., created_at: _Optional[str] = ...) -> None: ...

class AllocateResponse(_message.Message):
    __slots__ = ("port", "existing")
    PORT_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    port: Port
    existing: bool
    def __init__(self, port: _Optional[_Union[Port, _Mapping]] = ..., existing: _Optional[bool] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("container_id", "ifname", "pod_uid")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    POD_UID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    ifname: str
    pod_uid: str
    def __init__(self, container_id: _Optional[str] = ..., ifname: _Optional[str] = ..., pod_uid: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("found", "port_id", "outcome")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    PORT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    found: bool
    port_id: str
    outcome: str
    def __init__(self, found: _Optional[bool] = ..., port_id: _Optional[str] = ..., outcome: _Optional[str] = ...) -> None: ...

class GetPortRequest(_message.Message):
    __slots__ = ("container_id", "ifname")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    ifname: str
    def __init__(self, container_id: _Optional[str] = ..., ifname: _Optional[str] = ...) -> None: ...

class GetPortResponse(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: Port
    def __init__(self, port: _Optional[_Union[Port, _Mapping]] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("name", "underlay_ip", "gateway", "datapath", "state", "last_seen", "gateway_cidrs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNDERLAY_IP_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    DATAPATH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_CIDRS_FIELD_NUMBER: _ClassVar[int]
    name: str
    underlay_ip: str
    gateway: bool
    datapath: str
    state: str
    last_seen: str
    gateway_cidrs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., underlay_ip: _Optional[str] = ..., gateway: _Optional[bool] = ..., datapath: _Optional[str] = ..., state: _Optional[str] = ..., last_seen: _Optional[str] = ..., gateway_cidrs: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: NodeInfo
    def __init__(self, node: _Optional[_Union[NodeInfo, _Mapping]] = ...) -> None: ...

class RegisterNodeResponse(_message.Message):
    __slots__ = ("node", "heartbeat_seconds")
    NODE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    node: NodeInfo
    heartbeat_seconds: int
    def __init__(self, node: _Optional[_Union[NodeInfo, _Mapping]] = ..., heartbeat_seconds: _Optional[int] = ...) -> None: ...

class TopologyRequest(_message.Message):
    __slots__ = ("node", "since_revision")
    NODE_FIELD_NUMBER: _ClassVar[int]
    SINCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    node: str
    since_revision: int
    def __init__(self, node: _Optional[str] = ..., since_revision: _Optional[int] = ...) -> None: ...

class RemotePort(_message.Message):
    __slots__ = ("port_id", "mac", "ips", "node")
    PORT_ID_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    port_id: str
    mac: str
    ips: _containers.RepeatedScalarFieldContainer[str]
    node: str
    def __init__(self, port_id: _Optional[str] = ..., mac: _Optional[str] = ..., ips: _Optional[_Iterable[str]] = ..., node: _Optional[str] = ...) -> None: ...

class TopologyResponse(_message.Message):
    __slots__ = ("revision", "nodes", "ports", "subnets", "unchanged")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    SUBNETS_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    ports: _containers.RepeatedCompositeFieldContainer[RemotePort]
    subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    unchanged: bool
    def __init__(self, revision: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., ports: _Optional[_Iterable[_Union[RemotePort, _Mapping]]] = ..., subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ..., unchanged: _Optional[bool] = ...) -> None: ...

class ListNodePortsRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class ListNodePortsResponse(_message.Message):
    __slots__ = ("ports",)
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    def __init__(self, ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ...) -> None: ...

class WatchTopologyRequest(_message.Message):
    __slots__ = ("node", "from_revision")
    NODE_FIELD_NUMBER: _ClassVar[int]
    FROM_REVISION_FIELD_NUMBER: _ClassVar[int]
    node: str
    from_revision: int
    def __init__(self, node: _Optional[str] = ..., from_revision: _Optional[int] = ...) -> None: ...

class TopologyChange(_message.Message):
    __slots__ = ("port", "port_removed", "node", "node_removed", "subnet", "subnet_removed")
    PORT_FIELD_NUMBER: _ClassVar[int]
    PORT_REMOVED_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    NODE_REMOVED_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    SUBNET_REMOVED_FIELD_NUMBER: _ClassVar[int]
    port: RemotePort
    port_removed: str
    node: NodeInfo
    node_removed: str
    subnet: Subnet
    subnet_removed: str
    def __init__(self, port: _Optional[_Union[RemotePort, _Mapping]] = ..., port_removed: _Optional[str] = ..., node: _Optional[_Union[NodeInfo, _Mapping]] = ..., node_removed: _Optional[str] = ..., subnet: _Optional[_Union[Subnet, _Mapping]] = ..., subnet_removed: _Optional[str] = ...) -> None: ...

class WatchTopologyEvent(_message.Message):
    __slots__ = ("revision", "reset", "complete", "changes")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    revision: int
    reset: bool
    complete: bool
    changes: _containers.RepeatedCompositeFieldContainer[TopologyChange]
    def __init__(self, revision: _Optional[int] = ..., reset: _Optional[bool] = ..., complete: _Optional[bool] = ..., changes: _Optional[_Iterable[_Union[TopologyChange, _Mapping]]] = ...) -> None: ...

class Pool(_message.Message):
    __slots__ = ("name", "policy", "quarantine_seconds", "retention_seconds", "mtu", "product_type", "group")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_TYPE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    name: str
    policy: str
    quarantine_seconds: int
    retention_seconds: int
    mtu: int
    product_type: str
    group: str
    def __init__(self, name: _Optional[str] = ..., policy: _Optional[str] = ..., quarantine_seconds: _Optional[int] = ..., retention_seconds: _Optional[int] = ..., mtu: _Optional[int] = ..., product_type: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("total", "used", "reserved", "quarantined", "free", "bound")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    total: int
    used: int
    reserved: int
    quarantined: int
    free: int
    bound: int
    def __init__(self, total: _Optional[int] = ..., used: _Optional[int] = ..., reserved: _Optional[int] = ..., quarantined: _Optional[int] = ..., free: _Optional[int] = ..., bound: _Optional[int] = ...) -> None: ...

class Subnet(_message.Message):
    __slots__ = ("id", "pool", "cidr", "gateway", "excludes", "usage", "network_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    pool: str
    cidr: str
    gateway: str
    excludes: _containers.RepeatedScalarFieldContainer[str]
    usage: Usage
    network_id: str
    def __init__(self, id: _Optional[str] = ..., pool: _Optional[str] = ..., cidr: _Optional[str] = ..., gateway: _Optional[str] = ..., excludes: _Optional[_Iterable[str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., network_id: _Optional[str] = ...) -> None: ...

class CreatePoolRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class CreatePoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class ListPoolsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolWithUsage(_message.Message):
    __slots__ = ("pool", "usage", "subnets")
    POOL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SUBNETS_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    usage: Usage
    subnets: int
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., subnets: _Optional[int] = ...) -> None: ...

class ListPoolsResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolWithUsage]
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolWithUsage, _Mapping]]] = ...) -> None: ...

class GetPoolRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPoolResponse(_message.Message):
    __slots__ = ("pool", "subnets")
    POOL_FIELD_NUMBER: _ClassVar[int]
    SUBNETS_FIELD_NUMBER: _ClassVar[int]
    pool: PoolWithUsage
    subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    def __init__(self, pool: _Optional[_Union[PoolWithUsage, _Mapping]] = ..., subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ...) -> None: ...

class DeletePoolRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePoolResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateSubnetRequest(_message.Message):
    __slots__ = ("pool", "cidr", "gateway", "excludes")
    POOL_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDES_FIELD_NUMBER: _ClassVar[int]
    pool: str
    cidr: str
    gateway: str
    excludes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool: _Optional[str] = ..., cidr: _Optional[str] = ..., gateway: _Optional[str] = ..., excludes: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateSubnetResponse(_message.Message):
    __slots__ = ("subnet",)
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    subnet: Subnet
    def __init__(self, subnet: _Optional[_Union[Subnet, _Mapping]] = ...) -> None: ...

class ListSubnetsRequest(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: str
    def __init__(self, pool: _Optional[str] = ...) -> None: ...

class ListSubnetsResponse(_message.Message):
    __slots__ = ("subnets",)
    SUBNETS_FIELD_NUMBER: _ClassVar[int]
    subnets: _containers.RepeatedCompositeFieldContainer[Subnet]
    def __init__(self, subnets: _Optional[_Iterable[_Union[Subnet, _Mapping]]] = ...) -> None: ...

class DeleteSubnetRequest(_message.Message):
    __slots__ = ("cidr", "id")
    CIDR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    cidr: str
    id: str
    def __init__(self, cidr: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class DeleteSubnetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPortsRequest(_message.Message):
    __slots__ = ("pool", "node", "limit", "state", "page_token")
    POOL_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pool: str
    node: str
    limit: int
    state: str
    page_token: str
    def __init__(self, pool: _Optional[str] = ..., node: _Optional[str] = ..., limit: _Optional[int] = ..., state: _Optional[str] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPortsResponse(_message.Message):
    __slots__ = ("ports", "next_page_token")
    PORTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    next_page_token: str
    def __init__(self, ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("pool", "addresses", "note", "unreserve")
    POOL_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    UNRESERVE_FIELD_NUMBER: _ClassVar[int]
    pool: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    note: str
    unreserve: bool
    def __init__(self, pool: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., note: _Optional[str] = ..., unreserve: _Optional[bool] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: int
    def __init__(self, changed: _Optional[int] = ...) -> None: ...

class BindRequest(_message.Message):
    __slots__ = ("pool", "owner", "ip", "hostname")
    POOL_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    pool: str
    owner: str
    ip: str
    hostname: str
    def __init__(self, pool: _Optional[str] = ..., owner: _Optional[str] = ..., ip: _Optional[str] = ..., hostname: _Optional[str] = ...) -> None: ...

class BindResponse(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: Port
    def __init__(self, port: _Optional[_Union[Port, _Mapping]] = ...) -> None: ...

class UnbindRequest(_message.Message):
    __slots__ = ("pool", "owner")
    POOL_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    pool: str
    owner: str
    def __init__(self, pool: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class UnbindResponse(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...

class SetNamespaceDefaultRequest(_message.Message):
    __slots__ = ("namespace", "pool")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    pool: str
    def __init__(self, namespace: _Optional[str] = ..., pool: _Optional[str] = ...) -> None: ...

class SetNamespaceDefaultResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SyncStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SyncStatusResponse(_message.Message):
    __slots__ = ("enabled", "pending", "failed", "oldest_pending_seconds", "last_error", "last_success", "last_resync", "holder", "dead_letters")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_PENDING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LAST_RESYNC_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    pending: int
    failed: int
    oldest_pending_seconds: float
    last_error: str
    last_success: str
    last_resync: str
    holder: str
    dead_letters: int
    def __init__(self, enabled: _Optional[bool] = ..., pending: _Optional[int] = ..., failed: _Optional[int] = ..., oldest_pending_seconds: _Optional[float] = ..., last_error: _Optional[str] = ..., last_success: _Optional[str] = ..., last_resync: _Optional[str] = ..., holder: _Optional[str] = ..., dead_letters: _Optional[int] = ...) -> None: ...

class SyncNowRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SyncNowResponse(_message.Message):
    __slots__ = ("queued", "holder", "forwarded")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    queued: int
    holder: str
    forwarded: bool
    def __init__(self, queued: _Optional[int] = ..., holder: _Optional[str] = ..., forwarded: _Optional[bool] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class DeleteNodeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteNodeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReclaimedPort(_message.Message):
    __slots__ = ("port", "outcome")
    PORT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    port: Port
    outcome: str
    def __init__(self, port: _Optional[_Union[Port, _Mapping]] = ..., outcome: _Optional[str] = ...) -> None: ...

class ReleaseNodePortsRequest(_message.Message):
    __slots__ = ("node", "dry_run")
    NODE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    node: str
    dry_run: bool
    def __init__(self, node: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ReleaseNodePortsResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: _containers.RepeatedCompositeFieldContainer[ReclaimedPort]
    def __init__(self, released: _Optional[_Iterable[_Union[ReclaimedPort, _Mapping]]] = ...) -> None: ...

class ReclaimPortRequest(_message.Message):
    __slots__ = ("port_id", "dry_run")
    PORT_ID_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    port_id: str
    dry_run: bool
    def __init__(self, port_id: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ReclaimPortResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: ReclaimedPort
    def __init__(self, released: _Optional[_Union[ReclaimedPort, _Mapping]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("id", "kind", "object_id", "op", "attempts", "last_error", "created_at", "dead_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEAD_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: str
    object_id: str
    op: str
    attempts: int
    last_error: str
    created_at: str
    dead_at: str
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[str] = ..., object_id: _Optional[str] = ..., op: _Optional[str] = ..., attempts: _Optional[int] = ..., last_error: _Optional[str] = ..., created_at: _Optional[str] = ..., dead_at: _Optional[str] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters",)
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ...) -> None: ...

class SkipDeadLetterRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class SkipDeadLetterResponse(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...

class RetryDeadLettersRequest(_message.Message):
    __slots__ = ("ids", "all")
    IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    all: bool
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., all: _Optional[bool] = ...) -> None: ...

class RetryDeadLettersResponse(_message.Message):
    __slots__ = ("retried",)
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    retried: int
    def __init__(self, retried: _Optional[int] = ...) -> None: ...
