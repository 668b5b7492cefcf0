"""The standalone datapath's decisions (topology -> tunnels and flows, diffs), no root."""
from __future__ import annotations

from datapath.model import (
    COOKIE,
    GATEWAY_MAC,
    DatapathConfig,
    Flow,
    LocalPort,
    NodeView,
    Ofports,
    PortView,
    SubnetView,
    Topology,
    Tunnel,
    active_gateway,
    arp_responder,
    desired_flows,
    desired_tunnels,
    diff_flows,
    diff_tunnels,
    gateway_addresses,
    topology_from_pb,
    tunnel_name,
)
from ecnet_api.v1 import ecnet_pb2 as pb

MAC1, MAC2, MAC3, MAC4 = (f"0a:58:00:00:00:0{i}" for i in range(1, 5))


def topo(*, stale: tuple[str, ...] = (), gateway: str = "h1",
         ports: tuple[PortView, ...] | None = None) -> Topology:
    nodes = tuple(NodeView(n, f"172.31.0.{i}", ready=n not in stale, gateway=n == gateway)
                  for i, n in enumerate(("h1", "h2", "h3"), start=1))
    if ports is None:
        ports = (PortView("p1", MAC1, ("10.70.0.2",), "h1"),
                 PortView("p2", MAC2, ("10.70.0.3",), "h2"),
                 PortView("p3", MAC3, ("10.70.0.4",), "h3"),
                 PortView("p4", MAC4, ("10.70.0.5",), "h3"))
    return Topology(revision=7, nodes=nodes, ports=ports,
                    subnets=(SubnetView("10.70.0.0/24", "10.70.0.1"),))


def ofports(me: str, gateway: int = -1) -> Ofports:
    tunnels = {n: 10 + i for i, n in enumerate(("h1", "h2", "h3")) if n != me}
    return Ofports(int_patch=1, tun_patch=2, gateway=gateway, tunnels=tunnels)


def flows_for(me: str, t: Topology | None = None, local: tuple[LocalPort, ...] = (),
              gateway_ofport: int = -1) -> tuple[list[str], list[str]]:
    d = desired_flows(t or topo(), DatapathConfig(node=me), local, ofports(me, gateway_ofport))
    assert not d.conflicts
    return [f.spec() for f in d.br_int], [f.spec() for f in d.br_tun]


def test_tunnel_names_are_short_stable_and_readable() -> None:
    assert tunnel_name("172.31.0.2") == "vxac1f0002"
    v6 = tunnel_name("fd00::2")
    assert v6.startswith("vx6") and len(v6) <= 15 and v6 == tunnel_name("fd00::2")


def test_a_tunnel_to_every_other_ready_node() -> None:
    assert desired_tunnels(topo(), "h2") == {
        "vxac1f0001": Tunnel("vxac1f0001", "172.31.0.1", "h1"),
        "vxac1f0003": Tunnel("vxac1f0003", "172.31.0.3", "h3"),
    }


def test_stale_or_unaddressed_or_onos_nodes_get_no_tunnel() -> None:
    t = topo(stale=("h3",))
    t = Topology(nodes=t.nodes + (NodeView("h4", "", ready=True),
                                  NodeView("h5", "172.31.0.5", ready=True, datapath="onos")))
    assert set(desired_tunnels(t, "h2")) == {"vxac1f0001"}


def test_diff_tunnels_adds_changed_and_removes_unwanted() -> None:
    want = desired_tunnels(topo(), "h1")
    current = {"vxac1f0002": Tunnel("vxac1f0002", "172.31.0.2", "old-name"),
               "vxac1f0009": Tunnel("vxac1f0009", "172.31.0.9", "gone")}
    plan = diff_tunnels(want, current)
    assert [t.name for t in plan.add] == ["vxac1f0002", "vxac1f0003"]
    assert plan.remove == ("vxac1f0009",)
    assert diff_tunnels(want, dict(want)).empty


def test_remote_ports_go_to_their_tunnel_with_the_vni() -> None:
    br_int, br_tun = flows_for("h2")
    assert f"cookie={COOKIE:#x},table=0,priority=50,dl_dst={MAC3} actions=output:1" in br_int
    # p3 and p4 live on h3 (tunnel ofport 12), p1 on h1 (ofport 10)
    assert (f"cookie={COOKIE:#x},table=0,priority=50,in_port=2,dl_dst={MAC3} "
            "actions=set_field:0x64->tun_id,output:12") in br_tun
    assert any(f"dl_dst={MAC1} actions=set_field:0x64->tun_id,output:10" in f for f in br_tun)
    # from each tunnel to br-int, and nothing else: default drop, no flooding rule at all
    assert any("in_port=10,tun_id=0x64 actions=output:2" in f for f in br_tun)
    assert any("in_port=12,tun_id=0x64 actions=output:2" in f for f in br_tun)
    assert br_tun[0].endswith("priority=0 actions=drop")
    assert not any("FLOOD" in f or "ALL" in f or "NORMAL" in f for f in br_tun)


def test_local_ports_get_explicit_output_only_once_plugged() -> None:
    br_int, _ = flows_for("h2")
    assert not any(f"dl_dst={MAC2}" in f for f in br_int)
    br_int, br_tun = flows_for("h2", local=(LocalPort("p2", MAC2, 5),))
    assert any(f.endswith(f"dl_dst={MAC2} actions=output:5") for f in br_int)
    assert not any(MAC2 in f for f in br_tun)


def test_a_port_plugged_here_but_placed_elsewhere_by_the_controller_follows_the_controller(
) -> None:
    br_int, _ = flows_for("h2", local=(LocalPort("p3", MAC3, 5),))
    assert any(f.endswith(f"dl_dst={MAC3} actions=output:1") for f in br_int)


def test_arp_is_answered_for_every_known_address() -> None:
    br_int, _ = flows_for("h2")
    answered = {f.split("arp_tpa=")[1].split()[0] for f in br_int if "arp_tpa=" in f}
    assert answered == {"10.70.0.1", "10.70.0.2", "10.70.0.3", "10.70.0.4", "10.70.0.5"}
    gw = next(f for f in br_int if "arp_tpa=10.70.0.1 " in f)
    assert f"mod_dl_src:{GATEWAY_MAC}" in gw and "load:0x0aec00000001->NXM_NX_ARP_SHA[]" in gw
    assert "load:0xa460001->NXM_OF_ARP_SPA[]" in gw and gw.endswith("IN_PORT")
    # probes (sender 0.0.0.0) are left to their owner, everything else to NORMAL
    assert any("priority=110,arp,arp_op=1,arp_spa=0.0.0.0 actions=NORMAL" in f for f in br_int)
    assert br_int[0].endswith("priority=0 actions=NORMAL")


def test_arp_responder_swaps_sender_and_target() -> None:
    f = arp_responder("10.0.0.5", "0A:00:00:00:00:05".lower())
    assert f.match == "arp,arp_op=1,arp_tpa=10.0.0.5"
    assert f.actions.split(",")[:3] == ["move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[]",
                                        "mod_dl_src:0a:00:00:00:00:05",
                                        "load:0x2->NXM_OF_ARP_OP[]"]


def test_gateway_mac_goes_to_the_gateway_node_or_the_local_gateway_port() -> None:
    br_int, br_tun = flows_for("h3")
    assert any(f.endswith(f"dl_dst={GATEWAY_MAC} actions=output:1") for f in br_int)
    assert any(f"dl_dst={GATEWAY_MAC} actions=set_field:0x64->tun_id,output:10" in f
               for f in br_tun)
    br_int, br_tun = flows_for("h1", gateway_ofport=7)
    assert any(f.endswith(f"dl_dst={GATEWAY_MAC} actions=output:7") for f in br_int)
    assert not any(GATEWAY_MAC in f for f in br_tun)


def test_no_gateway_no_gateway_flows() -> None:
    br_int, br_tun = flows_for("h2", topo(gateway=""))
    assert not any(GATEWAY_MAC in f for f in br_int + br_tun)
    assert not any("arp_tpa=10.70.0.1 " in f for f in br_int)


def test_the_first_ready_gateway_by_name_is_active() -> None:
    t = topo(gateway="h1")
    assert active_gateway(t, "h2") == "h1"
    assert active_gateway(topo(gateway="h1", stale=("h1",)), "h2") is None
    nodes = tuple(NodeView(n.name, n.underlay_ip, n.ready, gateway=n.name in ("h1", "h3"))
                  for n in topo(stale=("h1",)).nodes)
    assert active_gateway(Topology(nodes=nodes), "h2") == "h3"
    # a gateway in ONOS mode is nobody's tunnel peer here: the standalone standby serves
    nodes = tuple(NodeView(n.name, n.underlay_ip, n.ready, gateway=n.name in ("h1", "h3"),
                           datapath="onos" if n.name == "h1" else "standalone")
                  for n in topo().nodes)
    assert active_gateway(Topology(nodes=nodes), "h2") == "h3"


def test_gateway_addresses_take_the_subnet_prefix() -> None:
    t = Topology(subnets=(SubnetView("10.70.0.0/24", "10.70.0.1"),
                          SubnetView("10.71.0.0/16", "10.71.0.1"),
                          SubnetView("fd00::/64", "fd00::1"), SubnetView("10.9.0.0/24", "")))
    assert gateway_addresses(t) == ["10.70.0.1/24", "10.71.0.1/16"]


def test_a_stale_node_loses_its_ports_flows_and_arp_answers() -> None:
    t = topo(stale=("h3",))
    d = desired_flows(t, DatapathConfig(node="h2"), (), ofports("h2"))
    text = " ".join(f.spec() for f in d.br_int + d.br_tun)
    assert MAC3 not in text and MAC4 not in text
    assert "10.70.0.4" not in text and "10.70.0.5" not in text
    assert "in_port=12" not in text
    assert MAC1 in text


def test_a_moved_port_follows_its_node() -> None:
    before = topo()
    moved = topo(ports=tuple(PortView(p.port_id, p.mac, p.ips, "h2" if p.port_id == "p3"
                                      else p.node) for p in before.ports))
    cfg = DatapathConfig(node="h1")
    old = desired_flows(before, cfg, (), ofports("h1"))
    new = desired_flows(moved, cfg, (), ofports("h1"))
    lines = diff_flows(old.br_tun, new.br_tun)
    assert lines == [f"add cookie={COOKIE:#x},table=0,priority=50,in_port=2,dl_dst={MAC3} "
                     "actions=set_field:0x64->tun_id,output:11"]
    assert diff_flows(old.br_int, new.br_int) == []   # still "remote": out the patch port


def test_diff_flows_deletes_strictly_then_adds() -> None:
    a = Flow(0, 50, "dl_dst=0a:00:00:00:00:01", "output:1")
    b = Flow(0, 50, "dl_dst=0a:00:00:00:00:02", "output:1")
    b2 = Flow(0, 50, "dl_dst=0a:00:00:00:00:02", "output:3")
    c = Flow(0, 0, "", "NORMAL")
    assert diff_flows([a, b, c], [b2, c]) == [
        "delete_strict table=0,priority=50,dl_dst=0a:00:00:00:00:01",
        f"add cookie={COOKIE:#x},table=0,priority=50,dl_dst=0a:00:00:00:00:02 "
        "actions=output:3"]
    assert diff_flows([a, c], [a, c]) == []
    assert diff_flows([], [c]) == [f"add cookie={COOKIE:#x},table=0,priority=0 actions=NORMAL"]


def test_nothing_remote_without_the_ofports() -> None:
    d = desired_flows(topo(), DatapathConfig(node="h2"), (), Ofports())
    assert [f.spec() for f in d.br_tun] == [f"cookie={COOKIE:#x},table=0,priority=0 actions=drop"]
    assert not any("output:" in f.actions for f in d.br_int)


def test_one_ip_claimed_twice_is_reported_and_first_wins() -> None:
    ports = (PortView("a", MAC1, ("10.70.0.9",), "h1"), PortView("b", MAC2, ("10.70.0.9",), "h3"))
    d = desired_flows(topo(ports=ports), DatapathConfig(node="h2"), (), ofports("h2"))
    assert d.conflicts == ("ip 10.70.0.9",)
    responders = [f for f in d.br_int if "arp_tpa=10.70.0.9" in f.match]
    assert len(responders) == 1 and MAC1 in responders[0].actions


def test_topology_from_pb() -> None:
    resp = pb.TopologyResponse(
        revision=3,
        nodes=[pb.NodeInfo(name="b", underlay_ip="172.31.0.2", state="stale"),
               pb.NodeInfo(name="a", underlay_ip="172.31.0.1", state="ready", gateway=True)],
        ports=[pb.RemotePort(port_id="x", mac="0A:58:00:00:00:01", ips=["10.70.0.2"],
                             node="a")],
        subnets=[pb.Subnet(cidr="10.70.0.0/24", gateway="10.70.0.1")])
    t = topology_from_pb(resp)
    assert t.revision == 3
    assert t.nodes == (NodeView("a", "172.31.0.1", True, True),
                       NodeView("b", "172.31.0.2", False, False))
    assert t.ports == (PortView("x", "0a:58:00:00:00:01", ("10.70.0.2",), "a"),)
    assert t.subnets == (SubnetView("10.70.0.0/24", "10.70.0.1"),)
