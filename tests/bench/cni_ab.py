"""ecnet's ADD and DEL latency, this tree against another checkout, pod by pod in one run.

    .venv/bin/python -m tests.bench.cni_ab --other /work/main [--pods 100] [--burst 100]

On a shared machine the load moves more between two benchmark runs than a change moves the
latency, so the two trees are measured at the same moments: each tree builds its own lab
(controller, one node with a private userspace OVS and the agent) in a child process run
by that tree's own venv from that tree (so each runs its own code), and this process execs
the two trees' CNI binaries by turns: one pod's ADD and DEL on one tree, then on the other,
the first of the two swapping every pod. Then the bursts (`--burst` concurrent ADDs, then
their DELs), `--bursts` per tree, strictly by turns. Prints p50/p90/p99/max per tree and
the ratio this/other. The reference plugins are cni_bench's business, not this one's.
Not part of the test run (tests/bench is never collected).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.bench.cni_bench import exec_cni, pct

HERE = Path(__file__).resolve().parents[2]

# Runs in the child, in the tree under test, with that tree's tests.lab.
SERVE = """
import json, sys, tempfile
from tests.lab.cluster import Lab
n, log_path = int(sys.argv[1]), sys.argv[2]
with tempfile.TemporaryDirectory(prefix="ecnet-ab-") as tmp, Lab(tmp, tls=False) as lab:
    lab.start_controller("--log-level", "warning")
    lab.ipctl("pool", "create", "bench", "--policy", "dynamic", "--quarantine", "0")
    lab.ipctl("subnet", "create", "bench", "10.70.0.0/16")
    node = lab.add_node("ab", "--log-level", "warning", *sys.argv[3:])
    netns = [lab.make_netns(f"ab{i}") for i in range(n)]
    print(json.dumps({"socket": node.socket, "binary": node.binary,
                      "bin_dir": str(node.bin_dir), "netns": netns}), flush=True)
    sys.stdin.read()
    open(log_path, "w").write(node.agent_log())
"""


class Tree:
    """One tree's lab, kept up by its child until `close`."""

    def __init__(self, root: Path, count: int, agent_args: list[str], log: Path) -> None:
        self.root = root
        self.log = log
        self.commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                     capture_output=True, text=True).stdout.strip()
        self.child = subprocess.Popen([str(root / ".venv/bin/python"), "-c", SERVE,
                                       str(count), str(log), *agent_args], cwd=root,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.child.stdout is not None
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError(f"the lab of {root} did not start")
        spec = json.loads(line)
        self.binary, self.bin_dir = spec["binary"], spec["bin_dir"]
        self.netns = iter(spec["netns"])
        self.conf = {"cniVersion": "1.0.0", "name": "ecnet-ab", "type": "ecnet",
                     "agentSocket": spec["socket"], "pool": "bench"}
        self.add: list[float] = []
        self.dele: list[float] = []
        self.bursts: list[float] = []
        self.errors: list[str] = []

    def pod(self, keep: bool) -> None:
        cid, ns = uuid.uuid4().hex, f"/var/run/netns/{next(self.netns)}"
        for verb, into in (("ADD", self.add), ("DEL", self.dele)):
            dt, rc, out = exec_cni(self.binary, verb, cid, ns, self.conf, self.bin_dir)
            if rc != 0:
                self.errors.append(f"{verb}: {out}")
            if keep:
                into.append(dt)

    def burst(self, n: int) -> None:
        pods = [(uuid.uuid4().hex, f"/var/run/netns/{next(self.netns)}") for _ in range(n)]

        def run(verb: str, p: tuple[str, str]) -> tuple[float, int, str]:
            return exec_cni(self.binary, verb, p[0], p[1], self.conf, self.bin_dir)

        t = time.perf_counter()
        with ThreadPoolExecutor(n) as ex:
            outs = list(ex.map(lambda p: run("ADD", p), pods))
        self.bursts.append(time.perf_counter() - t)
        with ThreadPoolExecutor(16) as ex:
            outs += list(ex.map(lambda p: run("DEL", p), pods))
        self.errors += [o[2] for o in outs if o[1] != 0]

    def close(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()
        self.child.wait(timeout=120)

    def phases(self, first: int, n: int) -> dict[str, list[float]]:
        """The agent's own ADD phases (its DEBUG line; --agent-debug), pods first..first+n."""
        text = self.log.read_text() if self.log.exists() else ""
        rows = re.findall(r"ADD container=.* veth_ms=([0-9.]+) alloc_wait_ms=([0-9.]+) "
                          r"plumb_ms=([0-9.]+) total_ms=([0-9.]+)", text)[first:first + n]
        names = ("veth_ms", "alloc_wait_ms", "plumb_ms", "total_ms")
        return {k: [float(r[i]) for r in rows] for i, k in enumerate(names)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--other", required=True, help="the checkout to compare with (its .venv)")
    p.add_argument("--pods", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--burst", type=int, default=100)
    p.add_argument("--bursts", type=int, default=2)
    p.add_argument("--agent-arg", action="append", default=[])
    p.add_argument("--agent-debug", action="store_true",
                   help="agents at DEBUG: also compare their own ADD phase timings")
    a = p.parse_args()
    if a.agent_debug:
        a.agent_arg += ["--log-level", "debug"]
    count = a.warmup + a.pods + a.bursts * a.burst
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    logs = Path(tempfile.mkdtemp(prefix="ecnet-ab-logs-"))
    this = Tree(HERE, count, a.agent_arg, logs / "this.log")
    try:
        other = Tree(Path(a.other).resolve(), count, a.agent_arg, logs / "other.log")
    except BaseException:
        this.close()
        raise
    try:
        for i in range(a.warmup + a.pods):
            for t in ((this, other) if i % 2 else (other, this)):
                t.pod(keep=i >= a.warmup)
        # Strictly other, this, other, this: each burst follows the other tree's (after its
        # own burst's DELs a tree's vswitchd is still removing ports, so two bursts of one
        # tree back to back would handicap the second).
        for _ in range(a.bursts):
            for t in (other, this):
                t.burst(a.burst)
    finally:
        this.close()
        other.close()
    load1 = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} this={HERE} ({this.commit}) "
          f"other={other.root} ({other.commit}); load {' '.join(load0)} -> {' '.join(load1)}")
    print(f"{a.pods} pods each after {a.warmup} warm-up, interleaved; "
          f"{a.bursts} bursts of {a.burst} each, alternated")
    print(f"{'metric':28} {'this':>10} {'other':>10} {'ratio':>7}")
    rows: list[tuple[str, float, float]] = []
    for verb, mine, theirs in (("ADD", this.add, other.add), ("DEL", this.dele, other.dele)):
        for label, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
            rows.append((f"{verb} {label} (ms)", pct(mine, q), pct(theirs, q)))
    mine, theirs = this.phases(a.warmup, a.pods), other.phases(a.warmup, a.pods)
    for k in mine if mine["total_ms"] and theirs["total_ms"] else ():
        for label, q in (("p50", 50), ("p99", 99)):
            rows.append((f"agent {k} {label}", pct(mine[k], q), pct(theirs[k], q)))
    for i, (b_this, b_other) in enumerate(zip(this.bursts, other.bursts, strict=True)):
        rows.append((f"burst {i + 1} of {a.burst} ADDs (s)", b_this, b_other))
    for name, x, y in rows:
        print(f"{name:28} {x:10.2f} {y:10.2f} {x / y if y else float('nan'):7.2f}")
    for t, name in ((this, "this"), (other, "other")):
        text = t.log.read_text() if t.log.exists() else ""
        sizes = [int(n) if n else 1 for n in re.findall(
            r"ovsdb transact what='add_port(?:s n=(\d+)| bridge=br-int)", text)]
        print(f"{name}: OVSDB attach transactions {len(sizes)}, ports {sum(sizes)}, "
              f"largest {max(sizes, default=0)}; agent log {t.log}")
    errors: list[Any] = this.errors[:5] + other.errors[:5]
    if errors:
        print("errors:", *errors, sep="\n  ")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
