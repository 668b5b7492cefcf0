"""The seams the datapath is driven through, declared: what it needs from the controller,
from OVSDB, from an OpenFlow bridge and from the host's netlink.

The production objects satisfy them structurally (the agent's gRPC ``IPControllerStub``,
``ovs_driver.OvsdbClient``, ``ovs_driver.OpenFlowBridge``, :class:`datapath.host.HostNetwork`);
so do the stateful fakes of the unit tests. Optional arguments are keyword-only here, so an
implementation may order its own parameters as it likes.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from ecnet_api.v1 import ecnet_pb2 as pb
from ovs_driver import InterfaceInfo


class EventStream(Protocol):
    """A server stream as a gRPC stub returns it: iterate to receive (raises
    ``grpc.RpcError`` when the stream breaks), ``cancel`` to end it from another thread."""

    def __iter__(self) -> Iterator[pb.WatchTopologyEvent]: ...

    def __next__(self) -> pb.WatchTopologyEvent: ...

    def cancel(self) -> bool: ...


class TopologySource(Protocol):
    """The controller, as far as the datapath needs it: the cluster's nodes, ports and
    subnets as a stream of changes from a revision, or (older controllers, which answer
    WatchTopology UNIMPLEMENTED) as a snapshot since a revision. Raises ``grpc.RpcError``
    when it cannot answer."""

    def GetTopology(self, request: pb.TopologyRequest, *,  # the RPC's own name
                    timeout: float | None = None) -> pb.TopologyResponse: ...

    def WatchTopology(self, request: pb.WatchTopologyRequest, *,  # the RPC's own name
                      timeout: float | None = None) -> EventStream: ...


class OvsdbPorts(Protocol):
    """The OVSDB verbs the datapath uses: bridges, ports, tunnels, reads of the cache."""

    def ensure_bridge(self, name: str, *, datapath_type: str | None = "netdev",
                      fail_mode: str | None = None) -> None: ...

    def add_port(self, bridge: str, name: str, external_ids: Mapping[str, str], *,
                 iface_type: str = "", mac: str | None = None) -> int: ...

    def add_tunnel(self, bridge: str, name: str, kind: str, remote_ip: str, *,
                   key: str = "flow", external_ids: Mapping[str, str] | None = None) -> int: ...

    def add_patch_pair(self, bridge_a: str, port_a: str, bridge_b: str,
                       port_b: str) -> tuple[int, int]: ...

    def delete_port(self, bridge: str, name: str) -> bool: ...

    def list_ports(self, bridge: str) -> list[str]: ...

    def get_interface(self, name: str) -> InterfaceInfo | None: ...

    def find_interfaces(self, **external_ids: str) -> list[InterfaceInfo]: ...


class FlowTable(Protocol):
    """One bridge's OpenFlow table, changed in ``ovs-ofctl`` flow-mod lines."""

    def replace_flows(self, flows: Iterable[str]) -> None: ...

    def apply_flow_mods(self, lines: Iterable[str]) -> int: ...


class HostNet(Protocol):
    """The host-side (netlink, sysctl, socket) steps of the datapath."""

    def move_underlay_address(self, bridge: str, nic: str, underlay_ip: str) -> None: ...

    def bring_up_gateway_port(self, port: str, mtu: int) -> None: ...

    def set_gateway_addresses(self, port: str, cidrs: list[str]) -> None: ...

    def prime_neighbor(self, remote_ip: str) -> None: ...
