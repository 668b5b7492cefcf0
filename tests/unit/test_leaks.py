"""Reclaiming ports whose DEL never came: the gone-node sweep (two observations and a grace
period, on every store, with fake time), and the admin's repairs through ipctl against a real
controller (`port release`, `node delete --release-ports`, each with its dry run and its
confirmation)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipam.domain import AllocationRequest, Node, PodIdentity
from ipam.leaks import TwoObservations
from ipam.service import IpamService
from ipcontroller.cli import cli
from tests.lab.controller import running_controller, sqlite_url
from tests.lab.helpers import FakeClock


def req(cid: str, pool: str, node: str, **kw: Any) -> AllocationRequest:
    return AllocationRequest(container_id=cid, ifname="eth0",
                             pod=PodIdentity("ns", f"pod-{cid}", f"uid-{cid}"),
                             pool=pool, node=node, **kw)


def test_two_observations_need_the_same_token_grace_apart() -> None:
    obs = TwoObservations(grace=10)
    assert obs.observe({"a": 1, "b": 1}, 100) == []
    assert obs.observe({"a": 1, "b": 2}, 105) == []      # b changed: starts over at 105
    assert obs.observe({"a": 1, "b": 2}, 110) == ["a"]
    assert obs.observe({"b": 2}, 114) == []               # a left the candidates
    assert obs.observe({"a": 1, "b": 2}, 115) == ["b"]   # a is new again at 115


@pytest.fixture
def svc(store: Any, clock: FakeClock) -> IpamService:
    s = IpamService(store, clock=clock)
    s.create_pool("dyn", "dynamic", quarantine_seconds=0)
    s.create_subnet("dyn", "10.60.0.0/24")
    s.create_pool("vm", "fixed")
    s.create_subnet("vm", "10.61.0.0/24")
    for name in ("dead", "live"):
        s.register_node(Node(name, ""))
    return s


def test_gone_node_ports_are_released_by_policy_after_two_observations(
        svc: IpamService, clock: FakeClock) -> None:
    dead = [svc.allocate(req(f"d{i}", "dyn", "dead")) for i in range(3)]
    vm = svc.allocate(req("v1", "vm", "dead", owner="ns/vm-1"))
    live = [svc.allocate(req(f"l{i}", "dyn", "live")) for i in range(2)]
    sweep = svc.gone_node_sweep(grace=30, gone_after=0)
    assert sweep.sweep() == []                      # every node is registered
    assert svc.delete_node("dead")
    assert sweep.sweep() == []                      # first observation
    clock.sleep(29)
    assert sweep.sweep() == []                      # not yet grace apart
    clock.sleep(1)
    done = {r.port.id: r.outcome for r in sweep.sweep()}
    assert done == {**{a.port.id: "released" for a in dead}, vm.port.id: "kept"}
    active = {p.id for p, _ in svc.list_ports(state="active")}
    assert active == {a.port.id for a in live}      # 0 live pods touched
    [(idle, _)] = svc.list_ports(pool_name="vm")
    assert idle.id == vm.port.id and idle.owner == "ns/vm-1" and idle.container_id is None
    assert sweep.sweep() == []


def test_a_node_that_heartbeats_again_keeps_its_ports(svc: IpamService,
                                                      clock: FakeClock) -> None:
    a = svc.allocate(req("c1", "dyn", "dead"))
    sweep = svc.gone_node_sweep(grace=30, gone_after=100)
    clock.sleep(101)                                # both nodes silent past gone_after
    svc.register_node(Node("live", ""))
    assert sweep.sweep() == []
    svc.register_node(Node("dead", ""))             # back before the second observation
    clock.sleep(30)
    svc.register_node(Node("live", ""))
    assert sweep.sweep() == []
    assert [p.id for p, _ in svc.list_ports(node="dead")] == [a.port.id]
    # silent again: two fresh observations, grace apart, are needed
    clock.sleep(101)
    assert sweep.sweep() == []
    clock.sleep(30)
    assert [r.port.id for r in sweep.sweep()] == [a.port.id]


def test_a_port_that_changes_between_observations_starts_over(
        svc: IpamService, clock: FakeClock) -> None:
    vm = svc.allocate(req("v1", "vm", "dead", owner="ns/vm-1"))
    sweep = svc.gone_node_sweep(grace=30, gone_after=0)
    svc.delete_node("dead")
    assert sweep.sweep() == []
    clock.sleep(20)
    svc.release("v1", "eth0")                       # the pod moved: same port, new pod
    moved = svc.allocate(req("v2", "vm", "dead", owner="ns/vm-1"))
    assert moved.port.id == vm.port.id and moved.port.generation > vm.port.generation
    clock.sleep(10)
    assert sweep.sweep() == []                      # a new generation is a new observation
    clock.sleep(30)
    assert [r.outcome for r in sweep.sweep()] == ["kept"]


def test_a_gone_node_behind_the_sweeps_page_is_still_found(svc: IpamService,
                                                          clock: FakeClock) -> None:
    """The sweep reads at most `limit` ports a pass; a gone node whose ports were created
    after `limit` live ones was never among them (it read the first `limit` active ports
    and looked for gone nodes there), so its ports leaked for good."""
    live = [svc.allocate(req(f"l{i}", "dyn", "live")) for i in range(4)]
    dead = svc.allocate(req("d1", "dyn", "dead"))
    sweep = svc.gone_node_sweep(grace=30, gone_after=0, limit=3)
    assert svc.delete_node("dead")
    assert sweep.sweep() == []                      # first observation
    clock.sleep(30)
    assert [(r.port.id, r.outcome) for r in sweep.sweep()] == [(dead.port.id, "released")]
    assert {p.id for p, _ in svc.list_ports(state="active")} == {a.port.id for a in live}


def test_the_sweep_takes_at_most_its_page_and_the_rest_on_later_passes(
        svc: IpamService, clock: FakeClock) -> None:
    dead = {svc.allocate(req(f"d{i}", "dyn", "dead")).port.id for i in range(5)}
    sweep = svc.gone_node_sweep(grace=30, gone_after=0, limit=3)
    assert svc.delete_node("dead")
    released: set[str] = set()
    for _ in range(4):
        sweep.sweep()
        clock.sleep(30)
        released |= {r.port.id for r in sweep.sweep()}
    assert released == dead


# ------------------------------------------------------------------ ipctl
@pytest.fixture
def addr(tmp_path: Any) -> Iterator[str]:
    with running_controller(sqlite_url(tmp_path)) as ctl:
        ctl.ipam.create_pool("dyn", "dynamic", quarantine_seconds=0)
        ctl.ipam.create_subnet("dyn", "10.62.0.0/24")
        ctl.ipam.register_node(Node("n1", ""))
        yield f"127.0.0.1:{ctl.port}"


def ipctl(addr: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["--controller", addr, *args], input=stdin,
                           catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def active(addr: str) -> list[dict[str, Any]]:
    code, out, _ = ipctl(addr, "-o", "json", "port", "list", "--state", "active")
    assert code == 0
    return list(json.loads(out))


def test_ipctl_port_release_dry_run_confirm_and_yes(addr: str, tmp_path: Any) -> None:
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.IPControllerStub(ch)
        for cid in ("c1", "c2"):
            stub.AllocatePort(pb.AllocateRequest(container_id=cid, ifname="eth0", node="n1",
                                                 pool="dyn"), timeout=10)
    ports = {p["container_id"]: p["id"] for p in active(addr)}
    code, out, _ = ipctl(addr, "port", "release", ports["c1"], "--dry-run")
    assert code == 0 and "would-release" in out and "nothing changed" in out
    assert len(active(addr)) == 2
    code, out, _ = ipctl(addr, "port", "release", ports["c1"], stdin="n\n")
    assert code == 1 and len(active(addr)) == 2    # refused at the prompt
    code, out, _ = ipctl(addr, "port", "release", ports["c1"], stdin="y\n")
    assert code == 0 and "released 1 port" in out
    assert [p["container_id"] for p in active(addr)] == ["c2"]
    code, _, err = ipctl(addr, "port", "release", "no-such-port", "--yes")
    assert code == 1 and "does not exist" in err
    # the whole node: dry run, then --yes
    code, out, _ = ipctl(addr, "node", "delete", "n1", "--release-ports", "--dry-run")
    assert code == 0 and ports["c2"][:11] in out and len(active(addr)) == 1
    code, out, _ = ipctl(addr, "-o", "json", "node", "list")
    assert [n["name"] for n in json.loads(out)] == ["n1"]
    code, out, _ = ipctl(addr, "node", "delete", "n1", "--release-ports", "--yes")
    assert code == 0 and "released 1 port" in out and "node n1 deleted" in out
    assert active(addr) == []
    code, out, _ = ipctl(addr, "-o", "json", "node", "list")
    assert json.loads(out) == []


def test_ipctl_port_release_takes_a_unique_prefix_and_refuses_an_ambiguous_one(
        addr: str) -> None:
    ids = {"c1": "aaaaaaaa-1111-4111-8111-111111111111",
           "c2": "aaaaaaaa-2222-4222-8222-222222222222",
           "c3": "bbbbbbbb-3333-4333-8333-333333333333"}
    with grpc.insecure_channel(addr) as ch:
        stub = pb_grpc.IPControllerStub(ch)
        for cid, port_id in ids.items():
            stub.AllocatePort(pb.AllocateRequest(container_id=cid, ifname="eth0", node="n1",
                                                 pool="dyn", port_id=port_id), timeout=10)
    assert {p["container_id"]: p["id"] for p in active(addr)} == ids
    code, _, err = ipctl(addr, "port", "release", "aaaaaaaa-", "--yes")
    assert code == 1 and "ambiguous" in err and ids["c1"] in err and ids["c2"] in err
    assert len(active(addr)) == 3                    # nothing released on a guess
    code, out, _ = ipctl(addr, "port", "release", ids["c2"][:11], "--dry-run")
    assert code == 0 and "would release 1 port" in out and len(active(addr)) == 3
    code, out, _ = ipctl(addr, "port", "release", "aaaaaaaa-2", "--yes")   # unique
    assert code == 0 and "released 1 port" in out
    code, out, _ = ipctl(addr, "port", "release", "bbbb", "--yes")
    assert code == 0 and "released 1 port" in out
    assert [p["container_id"] for p in active(addr)] == ["c1"]
    code, _, err = ipctl(addr, "port", "release", "cccc", "--yes")         # no such port
    assert code == 1 and "does not exist" in err


def test_ipctl_node_delete_release_ports_repairs_a_node_already_deleted(addr: str) -> None:
    with grpc.insecure_channel(addr) as ch:
        pb_grpc.IPControllerStub(ch).AllocatePort(pb.AllocateRequest(
            container_id="c1", ifname="eth0", node="n1", pool="dyn"), timeout=10)
    assert ipctl(addr, "node", "delete", "n1")[0] == 0      # the ports stayed behind
    assert len(active(addr)) == 1
    code, out, _ = ipctl(addr, "-o", "json", "node", "delete", "n1", "--release-ports",
                         "--dry-run")
    assert code == 0 and [r["outcome"] for r in json.loads(out)] == ["would-release"]
    code, out, err = ipctl(addr, "node", "delete", "n1", "--release-ports", "--yes")
    assert code == 0 and "released 1 port" in out and "not registered" in err
    assert active(addr) == []


# ----------------------------------------------------- agent <-> controller
def test_agent_reads_its_node_ports_and_an_older_controller_says_it_cannot(
        addr: str) -> None:
    from concurrent import futures

    from cni.agent.controller import GrpcControllerClient
    with grpc.insecure_channel(addr) as ch:
        pb_grpc.IPControllerStub(ch).AllocatePort(pb.AllocateRequest(
            container_id="c1", ifname="eth0", node="n1", pool="dyn", netns="/run/netns/x"),
            timeout=10)
    client = GrpcControllerClient(addr, timeout=5)
    try:
        [port] = client.list_node_ports("n1") or []
        assert (port.container_id, port.netns, port.state) == ("c1", "/run/netns/x", "active")
        assert port.ips and client.list_node_ports("other") == []
    finally:
        client.close()
    # A controller from before ListNodePorts: every method it lacks is UNIMPLEMENTED.
    old = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_IPControllerServicer_to_server(pb_grpc.IPControllerServicer(), old)
    port_no = old.add_insecure_port("127.0.0.1:0")
    old.start()
    client = GrpcControllerClient(f"127.0.0.1:{port_no}", timeout=5)
    try:
        assert client.list_node_ports("n1") is None
    finally:
        client.close()
        old.stop(0).wait()
