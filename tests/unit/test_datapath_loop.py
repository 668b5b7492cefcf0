"""The standalone datapath loop against fakes: what it writes, and that an unchanged
topology writes nothing. Also the agent's datapath flags."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from cni.agent import datapath as dp
from cni.agent.main import parse_args
from ecnet_api.v1 import ecnet_pb2 as pb
from ovs_driver import InterfaceInfo


@dataclass
class FakeOvs:
    ifaces: dict[str, InterfaceInfo] = field(default_factory=dict)
    bridges: dict[str, list[str]] = field(default_factory=lambda: {"br-int": [], "br-tun": []})
    writes: list[str] = field(default_factory=list)
    next_ofport: int = 10

    def plug(self, bridge: str, name: str, type_: str = "", ids: dict[str, str] | None = None,
             options: dict[str, str] | None = None) -> int:
        self.next_ofport += 1
        self.ifaces[name] = InterfaceInfo(name, type_, self.next_ofport, None, ids or {},
                                          options or {})
        if name not in self.bridges[bridge]:
            self.bridges[bridge].append(name)
        return self.next_ofport

    def list_ports(self, bridge: str) -> list[str]:
        return sorted(self.bridges[bridge])

    def get_interface(self, name: str) -> InterfaceInfo | None:
        return self.ifaces.get(name)

    def find_interfaces(self, **ids: str) -> list[InterfaceInfo]:
        return list(self.ifaces.values())

    def add_tunnel(self, bridge: str, name: str, kind: str, remote_ip: str, key: str = "flow",
                   external_ids: dict[str, str] | None = None, **_: Any) -> int:
        self.writes.append(f"add_tunnel {name}")
        return self.plug(bridge, name, kind, external_ids, {"remote_ip": remote_ip})

    def delete_port(self, bridge: str, name: str) -> bool:
        self.writes.append(f"delete_port {name}")
        self.bridges[bridge].remove(name)
        return self.ifaces.pop(name, None) is not None


@dataclass
class FakeOpenFlow:
    name: str
    log: list[str]

    def replace_flows(self, flows: Any) -> None:
        self.log.append(f"replace {self.name} {len(list(flows))}")

    def apply_flow_mods(self, lines: Any) -> int:
        lines = list(lines)
        if lines:
            self.log.append(f"mods {self.name} {lines}")
        return len(lines)


def topology(*ports: tuple[str, str, str, str], nodes: tuple[str, ...] = ("h1", "h2", "h3"),
             revision: int = 1) -> pb.TopologyResponse:
    return pb.TopologyResponse(
        revision=revision,
        nodes=[pb.NodeInfo(name=n, underlay_ip=f"172.31.0.{n[1:]}", state="ready")
               for n in nodes],
        ports=[pb.RemotePort(port_id=i, mac=m, ips=[ip], node=n) for i, m, ip, n in ports],
        subnets=[pb.Subnet(cidr="10.70.0.0/24", gateway="10.70.0.1")])


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> tuple[dp.StandaloneDatapath, FakeOvs, list[str],
                                                    list[pb.TopologyResponse]]:
    ovs = FakeOvs()
    ovs.plug("br-int", "patch-tun", "patch")
    ovs.plug("br-tun", "patch-int", "patch")
    answers: list[pb.TopologyResponse] = []

    def fetch(client: Any, node: str, since: int, timeout: float = 2.0) -> pb.TopologyResponse:
        resp = answers[0] if len(answers) == 1 else answers.pop(0)
        if since and since == resp.revision:
            return pb.TopologyResponse(revision=resp.revision, unchanged=True)
        return resp

    monkeypatch.setattr(dp, "fetch_topology", fetch)
    monkeypatch.setattr(dp, "_prime_neighbor", lambda ip: None)
    d = dp.StandaloneDatapath(dp.DatapathSettings(node="h1"), ovs, None,  # type: ignore[arg-type]
                              threading.Event())
    of_log: list[str] = []
    d.of_int = FakeOpenFlow("br-int", of_log)  # type: ignore[assignment]
    d.of_tun = FakeOpenFlow("br-tun", of_log)  # type: ignore[assignment]
    return d, ovs, of_log, answers


def test_first_sync_builds_tunnels_and_replaces_tables_then_unchanged_costs_nothing(
        loop: Any) -> None:
    d, ovs, of_log, answers = loop
    answers.append(topology(("p2", "0a:00:00:00:00:02", "10.70.0.2", "h2")))
    assert d.sync_once()
    assert ovs.writes == ["add_tunnel vxac1f0002", "add_tunnel vxac1f0003"]
    assert of_log == ["replace br-int 4", "replace br-tun 4"]
    ovs.writes.clear()
    of_log.clear()
    assert not d.sync_once()
    assert not d.sync_once()
    assert ovs.writes == [] and of_log == []


def test_a_port_moving_and_a_node_leaving_are_applied_incrementally(loop: Any) -> None:
    d, ovs, of_log, answers = loop
    answers.append(topology(("p2", "0a:00:00:00:00:02", "10.70.0.2", "h2")))
    d.sync_once()
    of_log.clear()
    ovs.writes.clear()
    answers[0] = topology(("p2", "0a:00:00:00:00:02", "10.70.0.2", "h3"), revision=2)
    assert d.sync_once()
    assert ovs.writes == []
    assert len(of_log) == 1 and of_log[0].startswith("mods br-tun")
    assert "output:" + str(ovs.ifaces["vxac1f0003"].ofport) in of_log[0]
    of_log.clear()
    answers[0] = topology(("p2", "0a:00:00:00:00:02", "10.70.0.2", "h3"), nodes=("h1", "h2"),
                          revision=3)
    assert d.sync_once()
    assert ovs.writes == ["delete_port vxac1f0003"]
    mods = " ".join(of_log)
    assert "delete_strict" in mods and "0a:00:00:00:00:02" in mods and "add " not in mods


def test_a_local_pod_plugged_later_gets_its_flow(loop: Any) -> None:
    d, ovs, of_log, answers = loop
    answers.append(topology(("p1", "0a:00:00:00:00:01", "10.70.0.5", "h1")))
    d.sync_once()
    of_log.clear()
    ofport = ovs.plug("br-int", "tapp1", ids={"iface-id": "p1",
                                              "attached-mac": "0A:00:00:00:00:01"})
    assert d.sync_once()
    assert of_log == [f"mods br-int ['add cookie=0xec0001,table=0,priority=50,"
                      f"dl_dst=0a:00:00:00:00:01 actions=output:{ofport}']"]


def test_agent_datapath_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVS_RUNDIR", raising=False)
    s = parse_args(["--ovsdb", "unix:/run/x/db.sock"])
    assert s.datapath == "standalone" and s.topology_interval == 0.5
    assert s.ovs_rundir == "/run/x" and s.tunnel_bridge == "br-tun"
    s = parse_args(["--datapath", "onos", "--gateway", "--gateway-cidr", "172.30.0.0/24",
                    "--underlay-ip", "172.31.0.1/24", "--underlay-iface", "ul0",
                    "--underlay-bridge", "br-phy"])
    assert s.datapath == "onos" and s.gateway and s.gateway_cidrs == ("172.30.0.0/24",)
    assert (s.underlay_ip, s.underlay_iface, s.underlay_bridge) == ("172.31.0.1/24", "ul0",
                                                                    "br-phy")
    with pytest.raises(SystemExit):
        parse_args(["--underlay-bridge", "br-phy"])
    with pytest.raises(SystemExit):
        parse_args(["--gateway-cidr", "nope"])
