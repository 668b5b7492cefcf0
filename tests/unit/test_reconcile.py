"""The agent's reconcile rules, pure: what `plan` decides from three views of a node, the
two-observation rule, and when a netns counts as gone (never on a guess); and what a
re-plugged port carries (on the stateful OVS fake)."""
from __future__ import annotations

import os
from pathlib import Path

from cni.agent.netlink.plan import (
    IFF_UP,
    PodInterfaceSpec,
    network_alias,
    network_from_alias,
    plan_interface,
    pod_link_changes,
)
from cni.agent.reconcile import (
    Attachment,
    Confirmations,
    NodeView,
    Reconciler,
    host_ifname,
    netns_gone,
    plan,
)
from ecnet_api.v1 import ecnet_pb2 as pb
from tests.fakes.agent_ovs import FakeAgentOvs

PID = "0123456789ab-cdef-4000-8000-000000000000"


def att(cid: str, netns: str, host_if: str = "", port_id: str = PID) -> Attachment:
    return Attachment(cid, "eth0", netns, port_id, f"uid-{cid}", host_if)


def test_plan_sorts_each_attachment_by_what_the_views_say() -> None:
    live_if, lost_if, gone_if = "tap00000000-01", "tap00000000-02", "tap00000000-03"
    ovs = (att("live", "/run/netns/a", live_if),     # all there: nothing to do
           att("lost-veth", "/run/netns/b", lost_if),  # pod alive, veth gone: half-built
           att("gone", "/run/netns/c", gone_if))      # netns gone: stale
    ctl = (att("live", "/run/netns/a"),
           att("no-ovs", "/run/netns/d"),             # pod and veth there, OVS lost it
           att("no-ovs-no-veth", "/run/netns/e", port_id="f" * 36),  # leave alone
           att("gone-no-ovs", "/run/netns/f"),         # rebooted: only the controller knows
           att("unknown", ""))                         # no netns: never a guess
    veths = frozenset({live_if, gone_if, host_ifname(PID)})
    p = plan(NodeView(ovs, ctl, veths, frozenset({"/run/netns/c", "/run/netns/f"})))
    assert [a.container_id for a in p.unplug] == ["lost-veth"]
    assert [a.container_id for a in p.replug] == ["no-ovs"]
    assert sorted(a.container_id for a in p.stale) == ["gone", "gone-no-ovs"]
    # without the controller's view (an older controller): OVSDB and the netns alone
    p = plan(NodeView(ovs, None, veths, frozenset({"/run/netns/c"})))
    assert [a.container_id for a in p.stale] == ["gone"] and p.replug == ()


def test_confirmations_need_two_identical_observations_grace_apart() -> None:
    c = Confirmations(grace=5)
    a, b = att("a", "/x"), att("b", "/y")
    assert c.confirm("stale", [a, b], 0) == []
    assert c.confirm("unplug", [a], 1) == []              # kinds are kept apart
    assert c.confirm("stale", [a, att("b", "/other")], 4) == []   # b changed: over
    assert c.confirm("stale", [a, att("b", "/other")], 5) == [a]
    assert c.confirm("stale", [att("b", "/other")], 8) == []      # a dropped out
    assert c.confirm("stale", [a, att("b", "/other")], 9) == [att("b", "/other")]


def test_netns_gone_only_when_we_can_tell(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.touch()
    assert not netns_gone(str(present))
    assert netns_gone(str(tmp_path / "missing"))
    assert not netns_gone(str(tmp_path / "no-such-dir" / "ns"))   # not visible here
    assert not netns_gone("")
    assert not netns_gone(f"/proc/{os.getpid()}/ns/net")
    assert netns_gone("/proc/999999999/ns/net")


def test_a_replugged_port_gets_back_the_network_pod_and_uid_gc_needs() -> None:
    """OVSDB lost the port; the controller knows the attachment, the pod's interface knows
    its network (the alias ADD wrote): the port comes back with both, so GC sees it."""
    ovs = FakeAgentOvs()
    port = pb.Port(id=PID, mac="02:00:00:00:00:01", container_id="c1", ifname="eth0",
                   netns="/run/netns/a", state="active",
                   pod=pb.PodRef(namespace="default", name="web-0", uid="uid-c1"),
                   ips=[pb.IPConfig(address="10.0.0.5/24")])
    asked: list[tuple[str, str]] = []

    class Ports:
        def list_node_ports(self, node: str) -> list[pb.Port]:
            return [port]

    def network_of(netns: str, ifname: str) -> str:
        asked.append((netns, ifname))
        return "ecnet-k8s"

    r = Reconciler(node="n1", bridge="br-int", ovs=ovs, controller=Ports(),
                   host_veths=lambda: [host_ifname(PID)], reclaim=lambda *a: "released",
                   network_of=network_of, grace=1, interval=1, is_gone=lambda p: False)
    assert [a.container_id for a in r.start_up().replug] == ["c1"]
    ids = ovs.ports()[host_ifname(PID)]
    assert asked == [("/run/netns/a", "eth0")]
    assert (ids["ecnet/network"], ids["ecnet/pod"], ids["ecnet/pod-uid"], ids["iface-id"],
            ids["ecnet/ips"]) == ("ecnet-k8s", "default/web-0", "uid-c1", PID, "10.0.0.5")
    assert ovs.find_interfaces(**{"ecnet/network": "ecnet-k8s"})   # what CNI GC looks up


def test_the_network_rides_on_the_pod_interface_alias() -> None:
    spec = PodInterfaceSpec(netns="/run/netns/a", ifname="eth0", host_ifname="tap0",
                            mac="02:00:00:00:00:01", addresses=[("10.0.0.5", 24)],
                            alias=network_alias("ecnet-k8s"))
    p = plan_interface(spec)
    up = IFF_UP
    assert pod_link_changes(p, "02:00:00:00:00:01", 1500, up, "") == {
        "ifalias": "ecnet:network=ecnet-k8s"}
    assert pod_link_changes(p, "02:00:00:00:00:01", 1500, up, p.alias) == {}  # a retry
    assert network_from_alias(p.alias) == "ecnet-k8s"
    assert network_from_alias("someone else's alias") == ""
    assert network_alias("") == ""
