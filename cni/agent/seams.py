"""The seams the CNI handler stands on, declared (STYLE.md 16): the IP controller client, the
OVSDB client and the netlink layer. The real implementations are `GrpcControllerClient`
(cni.agent.controller), `ovs_driver.OvsdbClient` and `PodNetlink`
(cni.agent.netlink.verbs); tests/fakes holds one stateful fake of each.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

from ecnet_api.v1 import ecnet_pb2 as pb

from .netlink.plan import PodInterfaceResult, PodInterfaceSpec, VethEnds

T = TypeVar("T")
PendingT = TypeVar("PendingT")


class PendingReply(Generic[T]):
    """An RPC in flight: calling it waits for (and returns) the answer or raises its
    CniError; `wait(t)` says whether the answer came within `t` seconds (the handler
    attaches OVS once, with every id, when the allocation is there by the veth's end)."""

    __slots__ = ("_collect", "_done", "_wait")

    def __init__(self, collect: Callable[[], T], done: Callable[[], bool],
                 wait: Callable[[float], bool] | None = None) -> None:
        self._collect = collect
        self._done = done
        self._wait = wait

    def __call__(self) -> T:
        return self._collect()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the answer; whether it is there (without a
        `wait` of its own: whether it is there now)."""
        return self._wait(timeout) if self._wait is not None else self._done()


class ControllerClient(Protocol):
    """What the handler asks of the IP controller; errors arrive as CniErrors."""

    def allocate_async(self, req: pb.AllocateRequest) -> PendingReply[pb.AllocateResponse]: ...
    def release(self, req: pb.ReleaseRequest) -> pb.ReleaseResponse: ...
    def get_port(self, container_id: str, ifname: str) -> pb.Port: ...
    def ready(self, timeout: float = 1.0) -> bool: ...


class OvsInterface(Protocol):
    """One OVS Interface row as the handler reads it (ovs_driver.InterfaceInfo)."""

    @property
    def name(self) -> str: ...
    @property
    def mac_in_use(self) -> str | None: ...
    @property
    def external_ids(self) -> Mapping[str, str]: ...


class OvsClient(Protocol):
    """What the handler asks of OVSDB; errors are ovs_driver.OvsError."""

    def add_port(self, bridge: str, name: str, external_ids: Mapping[str, str],
                 iface_type: str = "", options: Mapping[str, str] | None = None,
                 wait_ofport: float | None = 2.0) -> int: ...
    def delete_port(self, bridge: str, name: str) -> bool: ...
    def find_interfaces(self, **external_ids: str) -> Sequence[OvsInterface]: ...
    def get_interface(self, name: str) -> OvsInterface | None: ...
    def bridge_exists(self, name: str) -> bool: ...


class VethReaper(Protocol):
    """The part of the netlink layer the batched teardown uses. `reap_doomed` may be called
    from several threads at once; `watch_unregistered`'s callbacks run on a thread of the
    netlink layer's, with the nsid (None: the agent's own netns) and ifindexes of links the
    kernel unregistered, in the order it did."""

    def delete_pod_interface(self, host_ifname: str, netns: str | None = None,
                             ifname: str | None = None) -> bool: ...
    def doom_host_end(self, host_ifname: str) -> VethEnds | None: ...
    def reap_doomed(self) -> bool: ...
    def watch_unregistered(self, on_gone: Callable[[int | None, list[int]], None],
                           on_overrun: Callable[[], None]) -> None: ...
    def links_gone(self, host_indexes: list[int]) -> set[int]: ...


class PodNetlinkClient(VethReaper, Protocol[PendingT]):
    """The netlink layer as the handler drives it. `PendingT` is the implementation's handle
    for a veth pair created ahead of its port: the handler only hands it back.
    `finish_pod_end` enters the pod itself when `enter_pod` was not called first."""

    def prepare_pod_interface(self, netns: str, ifname: str, mtu: int,
                              host_ifname: str | None = None) -> PendingT | None: ...
    def enter_pod(self, pend: PendingT) -> None: ...
    def finish_host_end(self, pend: PendingT, host_ifname: str, mtu: int) -> str: ...
    def finish_pod_end(self, pend: PendingT, spec: PodInterfaceSpec,
                       host_mac: str) -> PodInterfaceResult: ...
    def host_mac(self, pend: PendingT) -> str: ...
    def abort_pending(self, pend: PendingT) -> None: ...
    def setup_pod_interface(self, spec: PodInterfaceSpec) -> PodInterfaceResult: ...
    def check_pod_interface(self, netns: str, ifname: str, mac: str,
                            addresses: list[tuple[str, int]], mtu: int = 0,
                            gateways: dict[int, str] | None = None) -> None: ...


__all__ = ["ControllerClient", "OvsClient", "OvsInterface", "PendingReply",
           "PodNetlinkClient", "VethReaper"]
