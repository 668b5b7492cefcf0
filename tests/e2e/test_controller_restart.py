"""The IP controller killed (SIGKILL) under a node with pods: the pods keep talking; an ADD
fails fast with CNI code 11 and leaves nothing behind, and succeeds when retried once the
controller is back; a DEL takes the pod off the node at once but answers 11 until its address
can be released (the runtime's retry then succeeds, and if it gives up and removes the netns,
the agent's reconcile releases it); nothing the store held is lost, no address is doubled, and
ONOS (the emulator) converges to the store. Real binary, agent, controller process, private
userspace OVS, pods as netns."""
from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.lab.cluster import CniResult, Lab, LabNode, Pod, ping
from tests.lab.helpers import wait_until
from tests.lab.sync_lab import Stubs, onos_vs_store

if TYPE_CHECKING:
    from onos_emulator import EmulatorServer

pytestmark = [pytest.mark.root, pytest.mark.ovs]
AGENT = ("--reconcile-interval", "0.5", "--reconcile-grace-seconds", "1",
         "--controller-timeout", "3")


def active(lab: Lab) -> set[str]:
    out = lab.ipctl("port", "list", "--state", "active", "-o", "json").stdout
    return {p["container_id"] for p in json.loads(out)}


def timed(node: LabNode, command: str, pod: Pod) -> CniResult:
    t0 = time.monotonic()
    res = node.cni(command, pod)
    print(f"controller down: {command} code={res.out.get('code')} "
          f"in {time.monotonic() - t0:.2f}s")
    return res


FAST_SYNC = ("--onos-timeout", "1", "--onos-max-backoff", "1", "--onos-lease-ttl", "3",
             "--sweep-interval", "0.5")


@pytest.fixture
def onos_lab(tmp_path_factory: pytest.TempPathFactory,
             make_emulator: Callable[..., EmulatorServer]) -> Iterator[tuple[Lab, Any]]:
    """A node, a controller syncing to the ONOS emulator, a dynamic and a fixed pool; plaintext
    loopback gRPC so the test reads the store through the same stubs as the sync tests."""
    emu = make_emulator()
    with Lab(tmp_path_factory.mktemp("ctlrestart"), tls=False) as lab:
        lab.start_controller("--onos-url", emu.url, *FAST_SYNC)
        lab.ipctl("pool", "create", "lab", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "lab", "10.75.0.0/24")
        lab.ipctl("pool", "create", "vm", "--policy", "fixed")
        lab.ipctl("subnet", "create", "vm", "10.76.0.0/24")
        lab.add_node("n1", *AGENT)
        yield lab, emu


def converged(emu: Any, stubs: Stubs) -> bool:
    return not onos_vs_store(emu.snapshot(), stubs.ports(), stubs.subnets())


def test_controller_killed_loses_nothing_and_adds_retry(onos_lab: tuple[Lab, Any]) -> None:
    lab, emu = onos_lab
    node = lab.nodes[0]
    a, b, d, e = (node.add_pod(n) for n in ("a", "b", "d", "e"))
    node.add_pod("f", node.netconf(pool="vm"))       # a fixed one: its binding is kept
    stubs = Stubs(lab.port)
    try:
        assert wait_until(lambda: converged(emu, stubs), timeout=30)
        before = {p.id: (p.container_id, p.generation, tuple(ip.address for ip in p.ips))
                  for p in stubs.ports()}
        taps = node.taps()
        lab.stop_controller(signal.SIGKILL)
        # while it is down: the pods that exist keep talking
        assert ping(a, b.ip) and ping(b, a.ip)
        # a new pod: 11 within the agent's controller deadline, nothing left behind
        c = node.new_pod("c")
        res = timed(node, "ADD", c)
        assert (res.code, res.out.get("code")) == (1, 11), res.raw
        assert c.links() == [] and node.taps() == taps
        # a DEL: off the node at once, 11 until the address can be released; d's runtime
        # retries, e's gives up and removes the netns (the agent's reconcile releases e)
        for pod in (d, e):
            res = timed(node, "DEL", pod)
            assert (res.code, res.out.get("code")) == (1, 11), res.raw
            assert pod.host_if not in node.taps() and pod.links() == []
        lab.del_netns(e.netns)
        t0 = time.monotonic()
        lab.start_controller("--onos-url", emu.url, *FAST_SYNC)
        assert wait_until(lambda: node.cni("ADD", c).ok, timeout=30), node.agent_log()[-3000:]
        print(f"controller back: ADD retried ok {time.monotonic() - t0:.2f}s after the start")
        c.result = node.cni("ADD", c).out
        assert node.cni("DEL", d).ok
        assert wait_until(lambda: e.container_id not in active(lab), timeout=30)
        print(f"controller back: e released {time.monotonic() - t0:.2f}s after the start")
        assert ping(c, a.ip)
        # nothing lost: every port the store held is there, unchanged, but the two DELed
        after = {p.id: (p.container_id, p.generation, tuple(ip.address for ip in p.ips))
                 for p in stubs.ports()}
        gone = {d.container_id, e.container_id}
        assert {k: v for k, v in before.items() if v[0] not in gone} == {
            k: v for k, v in after.items() if v[0] != c.container_id}
        ips = [ip for v in after.values() for ip in v[2]]
        assert len(ips) == len(set(ips)) == 4          # a, b, c and the fixed f
        assert wait_until(lambda: converged(emu, stubs), timeout=30), "\n".join(
            onos_vs_store(emu.snapshot(), stubs.ports(), stubs.subnets()))
        print(f"controller back: ONOS converged {time.monotonic() - t0:.2f}s after the start")
    finally:
        stubs.close()
