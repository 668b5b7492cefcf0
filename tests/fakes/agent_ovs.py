"""A stateful stand-in for OVSDB as the agent's handler sees it (cni.agent.seams.OvsClient):
bridges holding interfaces with external_ids, may-exist add_port, forgiving delete_port.

With `netdev` (a function from an interface name to its MAC, e.g. FakeNetlink.host_link_mac)
it behaves like ovs-vswitchd: a port whose network device does not exist gets no ofport, so
an attach that waits for one fails and leaves nothing, as the real driver does. (The datapath's
fake, with bridges, tunnels and flow tables, is tests/fakes/ovs.py.)"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cni.agent.seams import OvsClient
from ovs_driver.errors import OvsTransactionError
from tests.fakes.faults import Faults


@dataclass(frozen=True)
class FakeInterface:
    name: str
    mac_in_use: str | None
    external_ids: dict[str, str]
    ofport: int


@dataclass
class FakeAgentOvs:
    netdev: Callable[[str], str | None] | None = None
    bridges: dict[str, dict[str, FakeInterface]] = field(
        default_factory=lambda: {"br-int": {}})
    faults: Faults = field(default_factory=Faults)
    _next_ofport: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


    def ports(self, bridge: str = "br-int") -> dict[str, dict[str, str]]:
        """name -> external_ids of every port on `bridge`: what a test asserts on."""
        with self._lock:
            return {name: dict(i.external_ids) for name, i in self.bridges[bridge].items()}

    def add_port(self, bridge: str, name: str, external_ids: Mapping[str, str],
                 iface_type: str = "", options: Mapping[str, str] | None = None,
                 wait_ofport: float | None = 2.0) -> int:
        self.faults.check("add_port")
        with self._lock:
            if bridge not in self.bridges:
                raise OvsTransactionError(f"no bridge {bridge}")
            ports = self.bridges[bridge]
            mac = self.netdev(name) if self.netdev is not None else None
            if self.netdev is not None and mac is None and wait_ofport is not None:
                ports.pop(name, None)  # the driver deletes the port this call created
                raise OvsTransactionError(f"could not open network device {name} "
                                          "(No such device)")
            old = ports.get(name)
            ofport = old.ofport if old is not None else self._next_ofport
            if old is None:
                self._next_ofport += 1
            ports[name] = FakeInterface(name, mac, dict(external_ids), ofport)
            return ofport if wait_ofport is not None else -1

    def delete_port(self, bridge: str, name: str) -> bool:
        self.faults.check("delete_port")
        with self._lock:
            return self.bridges.get(bridge, {}).pop(name, None) is not None

    def bridge_exists(self, name: str) -> bool:
        self.faults.check("bridge_exists")
        with self._lock:
            return name in self.bridges

    def find_interfaces(self, **external_ids: str) -> list[FakeInterface]:
        self.faults.check("find_interfaces")
        with self._lock:
            return [i for ports in self.bridges.values() for i in ports.values()
                    if external_ids.items() <= i.external_ids.items()]

    def get_interface(self, name: str) -> FakeInterface | None:
        self.faults.check("get_interface")
        with self._lock:
            for ports in self.bridges.values():
                if name in ports:
                    return ports[name]
        return None


def _satisfies_the_protocol(o: FakeAgentOvs) -> OvsClient:
    return o  # mypy checks this line: the fake is an OvsClient, no ignore needed


__all__ = ["FakeInterface", "FakeAgentOvs"]
