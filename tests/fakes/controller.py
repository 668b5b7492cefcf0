"""A stateful stand-in for the IP controller, as the agent's handler sees it
(cni.agent.seams.ControllerClient): it holds allocations keyed like the real one
(container id, ifname), so a test asserts what is allocated, not which calls were made."""
from __future__ import annotations

import ipaddress
import threading
import uuid
from dataclasses import dataclass, field

from cni import errors as ce
from cni.agent.seams import ControllerClient, PendingReply
from ecnet_api.v1 import ecnet_pb2 as pb
from tests.fakes.faults import Faults


@dataclass
class FakeController:
    """One /24 pool; a retried ADD gets its port again (existing=True), as AllocatePort
    promises. `answer_first` says whether an allocation is already answered when the
    handler asks `done()` (it then attaches OVS once, after it); `mint_ids` ignores the
    proposed port id, like a bound owner's port that has an id of its own."""

    subnet: str = "10.77.0.0/24"
    mtu: int = 0
    answer_first: bool = True
    mint_ids: bool = False
    reachable: bool = True
    ports: dict[tuple[str, str], pb.Port] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


    def _allocate(self, req: pb.AllocateRequest) -> pb.AllocateResponse:
        self.faults.check("allocate")
        with self._lock:
            key = (req.container_id, req.ifname)
            if key in self.ports:
                return pb.AllocateResponse(port=self.ports[key], existing=True)
            net = ipaddress.ip_network(self.subnet)
            used = {ip.address for p in self.ports.values() for ip in p.ips}
            gateway = str(net.network_address + 1)
            for host in net.hosts():
                address = f"{host}/{net.prefixlen}"
                if str(host) != gateway and address not in used:
                    break
            else:
                raise ce.PoolExhausted(f"no free address in {self.subnet}")
            n = int(host) & 0xFFFFFF
            port = pb.Port(
                id=str(uuid.uuid4()) if self.mint_ids or not req.port_id else req.port_id,
                mac="02:ec:%02x:%02x:%02x:%02x" % (0, n >> 16, (n >> 8) & 0xFF, n & 0xFF),
                ips=[pb.IPConfig(address=address, gateway=gateway)], mtu=self.mtu)
            self.ports[key] = port
            return pb.AllocateResponse(port=port, existing=False)

    def allocate_async(self, req: pb.AllocateRequest) -> PendingReply[pb.AllocateResponse]:
        self.faults.check("allocate_async")  # issuing the call (a closed channel raises)
        answer_first = self.answer_first
        return PendingReply(lambda: self._allocate(req), lambda: answer_first)

    def release(self, req: pb.ReleaseRequest) -> pb.ReleaseResponse:
        self.faults.check("release")
        with self._lock:
            found = self.ports.pop((req.container_id, req.ifname), None) is not None
        return pb.ReleaseResponse(found=found, outcome="released" if found else "unknown")

    def get_port(self, container_id: str, ifname: str) -> pb.Port:
        self.faults.check("get_port")
        with self._lock:
            port = self.ports.get((container_id, ifname))
        if port is None:
            raise ce.NotFound(f"no port for {container_id} {ifname}")
        return port

    def ready(self, timeout: float = 1.0) -> bool:
        return self.reachable


def _satisfies_the_protocol(c: FakeController) -> ControllerClient:
    return c  # mypy checks this line: the fake is a ControllerClient, no ignore needed


__all__ = ["FakeController"]
