"""Never leak an address: 200 pods whose DEL never comes, in thirds (netns deleted under a
running agent, netns deleted while the agent was down and it restarted, node deleted), are
all reclaimed by their policy, and no live pod is touched. Real binary, agents, controller,
private userspace OVS per node, pods as network namespaces."""
from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.cluster import Lab, LabNode, Pod, add_pods, ping
from tests.lab.helpers import wait_until

pytestmark = [pytest.mark.root, pytest.mark.ovs]

LEAKY = {"n1": 67, "n2": 67, "n3": 66}      # 200 pods whose DEL never comes
FIXED_LEAKY = 1                              # of them, per node, in the fixed pool
LIVE = {"n1": 2, "n2": 2}                   # pods that must not be touched
AGENT = ("--reconcile-interval", "0.5", "--reconcile-grace-seconds", "1",
         "--controller-timeout", "5")


@pytest.fixture
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("leaks")) as lab:
        lab.start_controller("--leak-grace-seconds", "1", "--node-gone-seconds", "0",
                             "--leak-sweep-interval", "0.5",
                             "--sweep-interval", "0.5")
        lab.ipctl("pool", "create", "lab", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "lab", "10.70.0.0/23")
        lab.ipctl("pool", "create", "vm", "--policy", "fixed")
        lab.ipctl("subnet", "create", "vm", "10.71.0.0/24")
        for name in LEAKY:
            lab.add_node(name, *AGENT)
        yield lab


def ports(lab: Lab, state: str) -> list[dict[str, Any]]:
    out = lab.ipctl("port", "list", "--state", state, "--limit", "5000", "-o", "json").stdout
    return list(json.loads(out))


def ovs_pod_ports(node: LabNode) -> set[str]:
    """Pod ports on br-int (they carry our container key), in one OVSDB call."""
    rows = json.loads(node.vsctl("--format=json", "--columns=name,external_ids", "list",
                                 "Interface"))["data"]
    return {name for name, (_, ids) in rows if any(k == "ecnet/container" for k, _ in ids)}


def make_pods(lab: Lab) -> tuple[dict[str, list[Pod]], dict[str, list[Pod]]]:
    """Every pod's netns first (the lab numbers them), then the ADDs concurrently."""
    leaky: dict[str, list[Pod]] = {}
    live: dict[str, list[Pod]] = {}
    jobs: list[tuple[LabNode, Pod, dict[str, Any] | None]] = []
    for node in lab.nodes:
        n = node.name
        leaky[n] = [node.new_pod(f"{n}-x{i}") for i in range(LEAKY[n])]
        live[n] = [node.new_pod(f"{n}-live{i}") for i in range(LIVE.get(n, 0))]
        jobs += [(node, p, node.netconf(pool="vm" if i < FIXED_LEAKY else "lab"))
                 for i, p in enumerate(leaky[n])]
        jobs += [(node, p, node.netconf(pool="lab")) for p in live[n]]
    add_pods(jobs)
    return leaky, live


def test_200_pods_without_del_are_reclaimed_and_no_live_pod_is_touched(lab: Lab) -> None:
    n1, n2, n3 = lab.nodes
    t0 = time.monotonic()
    leaky, live = make_pods(lab)
    created = time.monotonic() - t0
    live_before = {p["id"]: p for p in ports(lab, "active")
                   if p["container_id"] in {pod.container_id
                                            for pods in live.values() for pod in pods}}
    assert len(live_before) == sum(LIVE.values())
    assert len(ports(lab, "active")) == sum(LEAKY.values()) + sum(LIVE.values())

    t1 = time.monotonic()
    # n1: the runtime removed the netns and never sent DEL; the agent keeps running.
    for pod in leaky["n1"]:
        lab.del_netns(pod.netns)
    # n2: the agent dies, the pods' netns go meanwhile, the agent comes back.
    n2.stop_agent(signal.SIGKILL)
    for pod in leaky["n2"]:
        lab.del_netns(pod.netns)
    n2.start_agent()
    # n3: the whole node is gone, and the admin deletes it (without --release-ports: the
    # controller's sweep must find its ports).
    n3.stop_agent(signal.SIGKILL)
    for pod in leaky["n3"]:
        lab.del_netns(pod.netns)
    lab.ipctl("node", "delete", "n3")

    live_ids = set(live_before)
    assert wait_until(lambda: {p["id"] for p in ports(lab, "active")} == live_ids,
                      timeout=120, poll=0.5), (
        f"{len(ports(lab, 'active'))} active ports left; "
        f"n1: {n1.agent_log()[-1500:]}\nn2: {n2.agent_log()[-1500:]}")
    reclaimed = time.monotonic() - t1
    live_ifs = {pod.result["interfaces"][0]["name"]  # type: ignore[index]
                for pod in live["n1"] + live["n2"]}
    assert wait_until(lambda: ovs_pod_ports(n1) | ovs_pod_ports(n2) == live_ifs,
                      timeout=30, poll=0.5)
    converged = time.monotonic() - t1
    # each third by its own path: the agents' reconcile (n1 running, n2 restarted), the
    # controller's gone-node sweep (n3)
    assert n1.agent_log().count("reconcile released") == LEAKY["n1"]
    assert n2.agent_log().count("reconcile released") == LEAKY["n2"]
    assert "reconcile at start-up" in n2.agent_log()
    ctl_log = (lab.dir / "controller.log").read_text()
    assert ctl_log.count("reclaimed port=") == LEAKY["n3"]
    assert all(f"node={n3.name}" in line for line in ctl_log.splitlines()
               if "reclaimed port=" in line)
    # bound (fixed) pods keep their binding, unbound from the dead pod and host
    idle = ports(lab, "idle")
    assert len(idle) == FIXED_LEAKY * len(LEAKY)
    assert all(p["owner"] and not p.get("container_id") for p in idle)
    # the dynamic pool is whole again, minus the live pods
    usage = json.loads(lab.ipctl("pool", "show", "lab", "-o", "json").stdout)
    assert usage["pool"]["usage"]["used"] == sum(LIVE.values())
    # 0 live pods touched: same ports, same generation, and they still talk
    after = {p["id"]: p for p in ports(lab, "active")}
    assert {k: (v["generation"], v["container_id"]) for k, v in after.items()} == {
        k: (v["generation"], v["container_id"]) for k, v in live_before.items()}
    for name in LIVE:
        a, b = live[name]
        assert ping(a, b.ip) and ping(b, a.ip)
    print(f"\nleak test: created {sum(LEAKY.values())} leaky + {sum(LIVE.values())} live pods "
          f"in {created:.1f}s; all reclaimed (controller) in {reclaimed:.1f}s, nodes clean "
          f"in {converged:.1f}s (grace 1s, passes every 0.5s); live pods touched: 0")
