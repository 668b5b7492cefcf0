"""The standalone datapath loop against a stateful OVS (tests/fakes/ovs.py): which tunnels,
flows and ARP answers are there after each poll, and that an unchanged topology writes
nothing to the switch. Also the agent's datapath flags."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import grpc
import pytest

from cni.agent.main import parse_args
from datapath import DatapathSettings, StandaloneDatapath, TopologyUnavailable
from ecnet_api.v1 import ecnet_pb2 as pb
from tests.fakes.ovs import FakeFlowTable, FakeOvsdb

MAC2 = "0a:00:00:00:00:02"


class FakeController:
    """GetTopology as the controller answers it: the whole topology, or just "unchanged"
    when the caller already has this revision. ``down`` makes it fail as an unreachable
    controller does."""

    def __init__(self) -> None:
        self.current = pb.TopologyResponse()
        self.down = False

    def GetTopology(self, request: pb.TopologyRequest, *,  # the RPC's own name
                    timeout: float | None = None) -> pb.TopologyResponse:
        if self.down:
            raise grpc.RpcError("controller unreachable")
        if request.since_revision and request.since_revision == self.current.revision:
            return pb.TopologyResponse(revision=self.current.revision, unchanged=True)
        return self.current


@dataclass
class FakeHost:
    """The host side: addresses per netdev, the gateway ports brought up, primed peers."""

    addresses: dict[str, list[str]] = field(default_factory=dict)
    gateway_ports: dict[str, int] = field(default_factory=dict)   # port -> mtu
    primed: set[str] = field(default_factory=set)

    def move_underlay_address(self, bridge: str, nic: str, underlay_ip: str) -> None:
        self.addresses.setdefault(bridge, []).append(underlay_ip)

    def bring_up_gateway_port(self, port: str, mtu: int) -> None:
        self.gateway_ports[port] = mtu

    def set_gateway_addresses(self, port: str, cidrs: list[str]) -> None:
        self.addresses[port] = list(cidrs)

    def prime_neighbor(self, remote_ip: str) -> None:
        self.primed.add(remote_ip)


def topology(*ports: tuple[str, str, str, str], nodes: tuple[str, ...] = ("h1", "h2", "h3"),
             revision: int = 1, gateway: str = "") -> pb.TopologyResponse:
    return pb.TopologyResponse(
        revision=revision,
        nodes=[pb.NodeInfo(name=n, underlay_ip=f"172.31.0.{n[1:]}", state="ready",
                           gateway=n == gateway) for n in nodes],
        ports=[pb.RemotePort(port_id=i, mac=m, ips=[ip], node=n) for i, m, ip, n in ports],
        subnets=[pb.Subnet(cidr="10.70.0.0/24", gateway="10.70.0.1")])


@dataclass
class Node:
    dp: StandaloneDatapath
    ovs: FakeOvsdb
    br_int: FakeFlowTable
    br_tun: FakeFlowTable
    controller: FakeController
    host: FakeHost

    def tunnels(self) -> dict[str, tuple[str, str]]:
        """Tunnel ports on br-tun: name -> (remote_ip, node)."""
        out = {}
        for name in self.ovs.list_ports("br-tun"):
            i = self.ovs.interfaces[name]
            if i.type == "vxlan":
                assert i.options["key"] == "flow" and i.external_ids["ecnet/role"] == "tunnel"
                out[name] = (i.options["remote_ip"], i.external_ids["ecnet/node"])
        return out

    def ofport(self, name: str) -> int:
        return self.ovs.interfaces[name].ofport


def make_node(gateway: bool = False, mtu: int = 1450) -> Node:
    ovs = FakeOvsdb()
    ovs.ensure_bridge("br-int")
    br_int, br_tun = FakeFlowTable("br-int"), FakeFlowTable("br-tun")
    controller, host = FakeController(), FakeHost()
    d = StandaloneDatapath(DatapathSettings(node="h1", gateway=gateway, mtu=mtu),
                           ovs, controller, threading.Event(), flows=(br_int, br_tun),
                           host=host)
    d.setup()
    return Node(d, ovs, br_int, br_tun, controller, host)


@pytest.fixture
def node() -> Node:
    return make_node()


def test_setup_makes_a_secure_tunnel_bridge_patched_to_br_int(node: Node) -> None:
    assert node.ovs.bridges["br-tun"].fail_mode == "secure"
    assert node.ovs.interfaces["patch-tun"].options == {"peer": "patch-int"}
    assert node.ovs.bridge_of("patch-tun") == "br-int"
    assert node.ovs.bridge_of("patch-int") == "br-tun"


def test_first_sync_builds_tunnels_and_replaces_tables_then_unchanged_costs_nothing(
        node: Node) -> None:
    node.controller.current = topology(("p2", MAC2, "10.70.0.2", "h2"))
    assert node.dp.sync_once()
    assert node.tunnels() == {"vxac1f0002": ("172.31.0.2", "h2"),
                              "vxac1f0003": ("172.31.0.3", "h3")}
    assert node.host.primed == {"172.31.0.2", "172.31.0.3"}
    assert node.br_int.replaced == node.br_tun.replaced == 1
    assert len(node.br_int.flows) == 4 and len(node.br_tun.flows) == 4
    assert node.br_int.arp_entries() == {"10.70.0.2": MAC2}
    patch, tun2 = node.ofport("patch-int"), node.ofport("vxac1f0002")
    assert node.br_int.actions(f"dl_dst={MAC2}") == [f"output:{node.ofport('patch-tun')}"]
    assert node.br_tun.actions(f"in_port={patch},dl_dst={MAC2}") == [
        f"set_field:0x64->tun_id,output:{tun2}"]
    assert node.br_tun.actions(f"in_port={tun2},tun_id=0x64") == [f"output:{patch}"]
    assert node.br_tun.actions("") == ["drop"] and node.br_int.actions("") == ["NORMAL"]
    assert {f.cookie for t in (node.br_int, node.br_tun) for f in t.flows.values()} == {0xEC0001}

    txns, versions = node.ovs.transactions, (node.br_int.version, node.br_tun.version)
    assert not node.dp.sync_once()
    assert not node.dp.sync_once()
    assert node.ovs.transactions == txns
    assert (node.br_int.version, node.br_tun.version) == versions


def test_a_port_moving_and_a_node_leaving_are_applied_incrementally(node: Node) -> None:
    node.controller.current = topology(("p2", MAC2, "10.70.0.2", "h2"))
    node.dp.sync_once()
    txns, int_version = node.ovs.transactions, node.br_int.version
    patch = node.ofport("patch-int")

    node.controller.current = topology(("p2", MAC2, "10.70.0.2", "h3"), revision=2)
    assert node.dp.sync_once()
    assert node.ovs.transactions == txns                  # no tunnel added or removed
    assert node.br_int.version == int_version             # br-int: the MAC still goes to br-tun
    assert (node.br_tun.replaced, node.br_tun.bundles) == (1, 1)
    assert node.br_tun.actions(f"in_port={patch},dl_dst={MAC2}") == [
        f"set_field:0x64->tun_id,output:{node.ofport('vxac1f0003')}"]

    before_int, before_tun = node.br_int.specs(), node.br_tun.specs()
    tun3 = node.ofport("vxac1f0003")
    node.controller.current = topology(("p2", MAC2, "10.70.0.2", "h3"), nodes=("h1", "h2"),
                                       revision=3)
    assert node.dp.sync_once()
    assert node.tunnels() == {"vxac1f0002": ("172.31.0.2", "h2")}
    assert "vxac1f0003" not in node.ovs.interfaces
    # p2's flows and ARP answer went with its node, and nothing was added or changed
    assert node.br_int.mentioning(MAC2) == [] and node.br_tun.mentioning(MAC2) == []
    assert node.br_int.arp_entries() == {}
    assert node.br_tun.actions(f"in_port={tun3},tun_id=0x64") == []
    assert node.br_int.specs() < before_int and node.br_tun.specs() < before_tun
    assert node.br_int.replaced == node.br_tun.replaced == 1


def test_a_local_pod_plugged_later_gets_its_flow(node: Node) -> None:
    node.controller.current = topology(("p1", "0a:00:00:00:00:01", "10.70.0.5", "h1"))
    node.dp.sync_once()
    assert node.br_int.arp_entries() == {"10.70.0.5": "0a:00:00:00:00:01"}
    before, tun_version = node.br_int.specs(), node.br_tun.version
    ofport = node.ovs.add_port("br-int", "tapp1", {"iface-id": "p1",
                                                   "attached-mac": "0A:00:00:00:00:01"})
    assert node.dp.sync_once()
    assert node.br_int.specs() - before == {(0, 50, "dl_dst=0a:00:00:00:00:01",
                                              f"output:{ofport}")}
    assert before <= node.br_int.specs()
    assert (node.br_int.replaced, node.br_int.bundles) == (1, 1)
    assert node.br_tun.version == tun_version


def test_an_unreachable_controller_keeps_the_flows_and_the_next_poll_replaces_tables(
        node: Node) -> None:
    node.controller.current = topology(("p2", MAC2, "10.70.0.2", "h2"))
    node.dp.sync_once()
    flows = node.br_int.specs(), node.br_tun.specs()
    node.controller.down = True
    with pytest.raises(TopologyUnavailable):
        node.dp.sync_once()
    assert (node.br_int.specs(), node.br_tun.specs()) == flows
    assert len(node.tunnels()) == 2


def test_the_gateway_node_owns_the_gateway_mac_and_the_subnet_gateways() -> None:
    n = make_node(gateway=True, mtu=1400)
    gw = n.ovs.interfaces["ecgw0"]
    assert n.ovs.bridge_of("ecgw0") == "br-int" and gw.type == "internal"
    assert gw.mac_in_use == "0a:ec:00:00:00:01" and n.host.gateway_ports == {"ecgw0": 1400}
    n.controller.current = topology(gateway="h1")
    assert n.dp.sync_once()
    assert n.host.addresses["ecgw0"] == ["10.70.0.1/24"]
    assert n.br_int.arp_entries() == {"10.70.0.1": "0a:ec:00:00:00:01"}
    assert n.br_int.actions("dl_dst=0a:ec:00:00:00:01") == [f"output:{gw.ofport}"]


def test_agent_datapath_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVS_RUNDIR", raising=False)
    s = parse_args(["--ovsdb", "unix:/run/x/db.sock"])
    assert s.datapath == "standalone" and s.topology_interval == 0.5
    assert s.ovs_rundir == "/run/x" and s.tunnel_bridge == "br-tun"
    assert s.flow_apply_window == 0.05
    assert parse_args(["--flow-apply-window", "0"]).flow_apply_window == 0.0
    with pytest.raises(SystemExit):
        parse_args(["--flow-apply-window", "-0.1"])
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
