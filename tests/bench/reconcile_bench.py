"""How long the agent takes to reconcile its node on restart.

    .venv/bin/python -m tests.bench.reconcile_bench [--pods 500]

Builds a lab (controller, one node with a private userspace OVS and its agent), ADDs
`--pods` pods concurrently, then measures two restarts:
* live: the agent restarts with every pod alive; its start-up pass (OVSDB, the netns, the
  controller's ports for the node) finds nothing to do. Reports that pass (from the agent's
  log) and the time until the agent serves again;
* reboot: every pod netns is removed, the agent restarts; reports the time until every
  address is released and br-int has no pod port left (grace 1 s, passes every 0.5 s).
Not part of the test run (no test_ names).
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import tempfile
import time

from tests.lab.cluster import Lab, add_pods
from tests.lab.helpers import wait_for

AGENT = ("--reconcile-interval", "0.5", "--reconcile-grace-seconds", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=500)
    a = ap.parse_args()
    with Lab(tempfile.mkdtemp(prefix="ecnet-reconcile-")) as lab:
        lab.start_controller()
        lab.ipctl("pool", "create", "lab", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "lab", "10.80.0.0/22")
        node = lab.add_node("n1", *AGENT)
        pods = [node.new_pod(f"b{i}") for i in range(a.pods)]
        t = time.monotonic()
        add_pods([(node, p, None) for p in pods], workers=4, retries=3)
        print(f"{a.pods} pods added in {time.monotonic() - t:.1f}s")

        def active() -> int:
            out = lab.ipctl("port", "list", "--state", "active", "--limit", "5000",
                            "-o", "json").stdout
            return len(json.loads(out))

        def pod_ports() -> int:
            return node.vsctl("list-ports", "br-int").count("tap")

        node.stop_agent(signal.SIGTERM)
        t = time.monotonic()
        node.start_agent()
        serving = time.monotonic() - t
        passes = re.findall(r"reconcile at start-up took ([0-9.]+)s", node.agent_log())
        print(f"live restart, {a.pods} ports: start-up reconcile {float(passes[-1]):.3f}s, "
              f"agent serving after {serving:.2f}s")
        assert active() == a.pods and pod_ports() == a.pods

        node.stop_agent(signal.SIGKILL)
        for p in pods:
            lab.del_netns(p.netns)
        t = time.monotonic()
        node.start_agent()
        wait_for(lambda: active() == 0 and pod_ports() == 0, 600, "the reboot to converge")
        print(f"reboot, {a.pods} ports: all released and br-int clean after "
              f"{time.monotonic() - t:.1f}s (of which the grace period 1s)")


if __name__ == "__main__":
    main()
