"""GC, STATUS and CHECK on the shared stateful fakes, through the CNI edge (`serve_one`):
what each verb releases, reports or finds, asserted on the fakes' state."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from cni.agent.server import serve_one
from cni.agent.wire import encode_request
from cni.errors import TryAgainLater
from ovs_driver.errors import OvsConnectionError
from tests.unit.test_handler_rollback import CONF, NETNS, Node, cni_env, make_node


def run(node: Node, cmd: str, cid: str = "", conf: dict[str, Any] | None = None,
        netns: str = NETNS) -> tuple[int, dict[str, Any]]:
    env = cni_env(cmd, cid) if cid else {"CNI_COMMAND": cmd, "CNI_PATH": "/opt/cni/bin"}
    if cid:
        env["CNI_NETNS"] = netns
    raw = serve_one(node.handler, encode_request(env, json.dumps(conf or CONF).encode()))
    head, _, body = raw.partition(b"\n")
    return int(head), (json.loads(body) if body else {})


def grace(node: Node, seconds: float) -> None:
    node.handler.cfg = dataclasses.replace(node.handler.cfg, gc_grace_seconds=seconds)


@pytest.fixture
def node() -> Any:
    n = make_node()
    grace(n, 0.0)
    for i in range(3):
        n.nl.add_netns(f"/var/run/netns/p{i}")
    yield n
    n.handler.teardown.stop()


def add(node: Node, i: int) -> str:
    cid = f"c{i:015d}"
    code, out = run(node, "ADD", cid, netns=f"/var/run/netns/p{i}")
    assert code == 0, out
    return cid


def gc_conf(valid: list[str], key: str = "cni.dev/valid-attachments",
            name: str = "n") -> dict[str, Any]:
    return {**CONF, "name": name, key: [{"containerID": c, "ifname": "eth0"} for c in valid]}


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_releases_only_what_the_runtime_no_longer_lists(node: Node, key: str) -> None:
    kept, gone1, gone2 = (add(node, i) for i in range(3))
    assert run(node, "GC", conf=gc_conf([kept], key))[0] == 0
    # the listed attachment is intact; the others lost port, OVS interface and veth
    assert {cid for cid, _ in node.ctl.ports} == {kept}
    assert {ids["ecnet/container"] for ids in node.ovs.ports().values()} == {kept}
    assert len(node.nl.host_links) == 1
    assert set(node.nl.pods("/var/run/netns/p0")) == {"eth0"}
    assert node.nl.pods("/var/run/netns/p1") == {} and node.nl.pods("/var/run/netns/p2") == {}
    assert {gone1, gone2}.isdisjoint(ids["ecnet/container"]
                                     for ids in node.ovs.ports().values())


def test_gc_leaves_other_networks_and_young_attachments(node: Node) -> None:
    add(node, 0)
    assert run(node, "GC", conf=gc_conf([], name="another-network"))[0] == 0
    assert len(node.ctl.ports) == 1  # not this network's to collect
    grace(node, 3600)
    assert run(node, "GC", conf=gc_conf([]))[0] == 0
    assert len(node.ctl.ports) == 1  # too young: an ADD may be in flight
    grace(node, 0)
    assert run(node, "GC", conf=gc_conf([]))[0] == 0
    assert node.ctl.ports == {} and node.ovs.ports() == {} and node.nl.host_links == {}


def test_gc_without_a_list_releases_nothing_and_says_why(node: Node) -> None:
    add(node, 0)
    code, out = run(node, "GC", conf=dict(CONF))
    assert code == 1 and out["code"] == 7 and "valid-attachments" in out["msg"]
    assert len(node.ctl.ports) == 1


def test_gc_keeps_going_on_errors_and_asks_to_try_again(node: Node) -> None:
    for i in range(3):
        add(node, i)
    node.ctl.faults.arm("release", TryAgainLater(
        "controller busy"))
    code, out = run(node, "GC", conf=gc_conf([]))
    assert code == 1 and out["code"] == 11 and "2 of 3" in out["msg"]
    assert len(node.ctl.ports) == 1            # the other two were released regardless
    assert run(node, "GC", conf=gc_conf([]))[0] == 0   # the next GC finishes the job
    assert node.ctl.ports == {} and node.ovs.ports() == {}


def test_status_is_0_50_or_51(node: Node) -> None:
    assert run(node, "STATUS") == (0, {})
    node.ctl.reachable = False
    code, out = run(node, "STATUS")
    assert code == 1 and out["code"] == 50 and "controller" in out["msg"]
    node.ovs.faults.arm("bridge_exists", OvsConnectionError("db.sock: connection refused"))
    code, out = run(node, "STATUS")
    assert code == 1 and out["code"] == 51 and "Open vSwitch" in out["msg"]
    node.ctl.reachable = True
    del node.ovs.bridges["br-int"]
    code, out = run(node, "STATUS")
    assert code == 1 and out["code"] == 51 and "br-int" in out["msg"]


def test_check_finds_each_difference(node: Node) -> None:
    cid = add(node, 0)
    netns = "/var/run/netns/p0"
    assert run(node, "CHECK", cid, netns=netns)[0] == 0
    end = node.nl.pods(netns)["eth0"]
    end.mtu = 1280
    code, out = run(node, "CHECK", cid, netns=netns)
    assert (code, out["code"]) == (1, 130) and "MTU is 1280" in out["msg"]
    end.mtu = 1500
    saved = set(end.routes)
    end.routes.clear()
    code, out = run(node, "CHECK", cid, netns=netns)
    assert (code, out["code"]) == (1, 130) and "default route" in out["msg"]
    end.routes |= saved
    (tap,) = node.ovs.ports()
    node.ovs.bridges["br-int"][tap].external_ids["ecnet/container"] = "someone-else"
    code, out = run(node, "CHECK", cid, netns=netns)
    assert (code, out["code"]) == (1, 130) and "external_ids" in out["msg"]
