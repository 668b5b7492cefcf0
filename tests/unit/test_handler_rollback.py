"""`CniHandler.add` rolls back: a failure injected after each step of an ADD leaves no veth,
no OVS port, no allocation and no open pod-side handle, and the runtime gets the step's CNI
code. A bug (a TypeError) is no OVS failure: it reaches the runtime as a generic error 999
and the agent's log as a traceback. Runs on the shared stateful fakes (tests/fakes); every
assertion is on their state, through the same CNI edge (`serve_one`) the shim talks to."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cni import errors as ce
from cni.agent.handler import AgentConfig, CniHandler
from cni.agent.server import serve_one
from cni.agent.wire import encode_request
from ovs_driver.errors import OvsConnectionError, OvsTimeout, OvsTransactionError
from tests.fakes.agent_ovs import FakeAgentOvs
from tests.fakes.controller import FakeController
from tests.fakes.faults import Faults
from tests.fakes.netlink import FakeNetlink, FakePending

NETNS = "/var/run/netns/pod-a"
CID = "c0ffee0123456789"
CONF = {"cniVersion": "1.0.0", "name": "n", "type": "ecnet", "pool": "p"}


def cni_env(cmd: str, cid: str = CID) -> dict[str, str]:
    return {"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
            "CNI_NETNS": NETNS, "CNI_PATH": "/opt/cni/bin",
            "CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=a;K8S_POD_UID=u1"}


@dataclass
class Node:
    """One agent on fakes: the controller, OVSDB and the kernel's netlink state."""

    ctl: FakeController
    nl: FakeNetlink
    ovs: FakeAgentOvs
    handler: CniHandler[FakePending]

    def run(self, cmd: str, cid: str = CID) -> tuple[int, dict[str, Any], str]:
        raw = serve_one(self.handler, encode_request(cni_env(cmd, cid), json.dumps(CONF).encode()))
        head, _, body = raw.partition(b"\n")
        return int(head), (json.loads(body) if body else {}), body.decode()

    def leftovers(self) -> dict[str, Any]:
        """Everything an ADD could have left behind; empty values when nothing is."""
        return {"veths": set(self.nl.host_links), "pod ifaces": set(self.nl.pods(NETNS)),
                "open pod handles": set(self.nl.open_handles), "ovs ports": self.ovs.ports(),
                "allocations": set(self.ctl.ports)}


NOTHING: dict[str, Any] = {"veths": set(), "pod ifaces": set(), "open pod handles": set(),
                           "ovs ports": {}, "allocations": set()}


def make_node(answer_first: bool = True, mint_ids: bool = False) -> Node:
    nl = FakeNetlink()
    nl.add_netns(NETNS)
    ovs = FakeAgentOvs(netdev=nl.host_link_mac)
    ctl = FakeController(answer_first=answer_first, mint_ids=mint_ids)
    return Node(ctl, nl, ovs, CniHandler(AgentConfig(node="n1"), ctl, nl, ovs))


@pytest.fixture(params=[True, False], ids=["allocation-first", "veth-first"])
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    """Both orders the pipelined ADD knows: the allocation answered before the veth exists
    (one OVS attach with every id), or after it (attach at once, ids follow)."""
    n = make_node(answer_first=request.param)
    yield n
    n.handler.teardown.stop()


def test_add_then_del_leaves_nothing(node: Node) -> None:
    code, result, _ = node.run("ADD")
    assert code == 0
    (port,) = node.ctl.ports.values()
    tap = "tap" + port.id[:11]
    assert set(node.nl.host_links) == {tap}
    end = node.nl.pods(NETNS)["eth0"]
    assert (end.mac, end.up, end.addresses) == (port.mac, True,
                                               {(port.ips[0].address.split("/")[0], 24)})
    ids = node.ovs.ports()[tap]
    assert ids["iface-id"] == port.id and ids["attached-mac"] == port.mac
    assert ids["ecnet/container"] == CID
    assert result["interfaces"][0] == {"name": tap, "mac": node.nl.host_links[tap].mac}
    assert node.nl.open_handles == set()

    assert node.run("DEL")[0] == 0
    node.handler.teardown.drain(timeout=5)
    assert node.leftovers() == NOTHING


# (which fake, which of its methods, the error, the CNI code the runtime must get)
STEPS = {
    "allocation": ("ctl", "allocate", ce.PoolExhausted("pool p is full"), 100),
    "veth creation": ("nl", "prepare_pod_interface", ce.PlumbingError("no veth"), 110),
    "entering the pod": ("nl", "enter_pod", ce.PlumbingError("setns failed"), 110),
    "pod-side config": ("nl", "finish_pod_end", ce.PlumbingError("ENETUNREACH"), 110),
    "OVS attach": ("ovs", "add_port", OvsTransactionError("vswitchd said no"), 120),
    # OVSDB away or ovs-vswitchd not taking the port in time: it passes, so try again (11)
    "OVS attach, ovsdb-server away": ("ovs", "add_port", OvsConnectionError("no view"), 11),
    "OVS attach, no ofport in time": ("ovs", "add_port", OvsTimeout("no ofport"), 11),
    "result": ("ovs", "get_interface", OvsConnectionError("ovsdb-server went away"), 11),
}


def _faults(node: Node, who: str) -> Faults:
    fakes: dict[str, Any] = {"ctl": node.ctl, "nl": node.nl, "ovs": node.ovs}
    faults: Faults = fakes[who].faults
    return faults


@pytest.mark.parametrize("step", list(STEPS))
def test_a_failure_after_each_step_leaves_nothing(node: Node, step: str) -> None:
    who, method, exc, code = STEPS[step]
    faults = _faults(node, who)
    faults.arm(method, exc)
    got, body, _ = node.run("ADD")
    assert faults.pending() == set(), f"the {step} fault never fired"
    assert got == 1 and body["code"] == code
    assert node.leftovers() == NOTHING
    # The runtime DELs after a failed ADD: that forgives, and a new ADD works.
    assert node.run("DEL")[0] == 0
    assert node.run("ADD")[0] == 0


def test_the_ids_after_an_early_attach_failing_leave_nothing() -> None:
    """Veth first: the port is attached at once and its ids (MAC, IPs) follow in a second
    transaction; that one failing must undo the first."""
    node = make_node(answer_first=False)
    node.ovs.faults.arm("add_port", OvsTransactionError("second txn refused"), after=1)
    got, body, _ = node.run("ADD")
    assert node.ovs.faults.pending() == set()
    assert (got, body["code"]) == (1, 120)
    assert node.leftovers() == NOTHING


def test_the_host_mac_read_back_failing_leaves_nothing() -> None:
    """With no MAC in OVSDB's row the result's host MAC comes from netlink."""
    node = make_node()
    node.ovs.netdev = None  # vswitchd has not reported mac_in_use yet
    node.nl.faults.arm("host_mac", ce.PlumbingError("host end vanished"))
    got, body, _ = node.run("ADD")
    assert node.nl.faults.pending() == set()
    assert (got, body["code"]) == (1, 110)
    assert node.leftovers() == NOTHING


@pytest.mark.parametrize("step", ["careful veth setup", "OVS attach"])
def test_a_port_with_an_id_of_its_own_rolls_back_too(step: str) -> None:
    """A bound owner's port has its own id, so the speculative pair goes and the careful
    path builds the pair under the port's name; a failure there leaves nothing either."""
    node = make_node(mint_ids=True)
    if step == "OVS attach":
        node.ovs.faults.arm("add_port", OvsTransactionError("vswitchd said no"))
    else:
        node.nl.faults.arm("setup_pod_interface", ce.PlumbingError("route refused"))
    got, body, _ = node.run("ADD")
    assert node.ovs.faults.pending() == node.nl.faults.pending() == set()
    assert got == 1 and body["code"] in (110, 120)
    assert node.leftovers() == NOTHING


def test_a_failed_retry_leaves_the_first_add_in_place() -> None:
    """A retried ADD finds its port (existing) and its pair: a failure then must not take
    down what the first ADD built, nor release its address."""
    node = make_node()
    assert node.run("ADD")[0] == 0
    before = node.leftovers()
    node.ovs.faults.arm("add_port", OvsTransactionError("vswitchd said no"))
    got, body, _ = node.run("ADD")
    assert node.ovs.faults.pending() == set()
    assert (got, body["code"]) == (1, 120)
    assert node.leftovers()["veths"] == before["veths"]
    assert node.leftovers()["allocations"] == before["allocations"]
    assert node.run("ADD")[0] == 0              # and the next retry completes it
    assert node.leftovers() == before


@pytest.mark.parametrize("who,method", [("ovs", "add_port"), ("nl", "finish_pod_end"),
                                        ("ctl", "allocate"), ("ctl", "allocate_async")])
def test_a_bug_is_a_generic_999_with_its_traceback_in_the_log(
        who: str, method: str, caplog: pytest.LogCaptureFixture) -> None:
    node = make_node()
    _faults(node, who).arm(method, TypeError("unsupported operand type(s) for +"))
    with caplog.at_level(logging.ERROR, logger="cni.agent.server"):
        got, body, raw = node.run("ADD")
    assert got == 1 and body["code"] == 999
    assert "OVS" not in body["msg"] and "Traceback" not in raw
    assert body["details"] == "TypeError"
    crashed = [r for r in caplog.records if r.exc_info is not None]
    assert crashed and crashed[0].exc_info is not None
    assert crashed[0].exc_info[0] is TypeError
    assert node.leftovers() == NOTHING


def test_a_missing_netns_leaves_no_allocation() -> None:
    """The allocation is issued before the pair is asked for: an ADD into a netns that is
    gone (111) releases it again."""
    node = make_node()
    node.nl.remove_netns(NETNS)
    got, body, _ = node.run("ADD")
    assert (got, body["code"]) == (1, 111)
    assert node.leftovers()["allocations"] == set()
    node.handler.teardown.stop()
