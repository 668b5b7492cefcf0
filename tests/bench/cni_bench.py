"""ecnet vs the reference `bridge`+`host-local` plugins, side by side in one run.

    sudo .venv/bin/python -m tests.bench.cni_bench [--pods 60] [--burst 100]

Builds the lab itself (controller, one node namespace with a private userspace OVS and the
agent), then runs the measuring loop *inside the node's namespace* so both plugins are exec'd
the same way a runtime on that node would (the reference plugin's bridge and addresses live
only in that namespace). Pods are interleaved ecnet, reference, ecnet, ... ; a warm-up is
discarded. Prints one table: ADD/DEL p50/p90/p99/max, burst wall times, allocation rate
through gRPC vs host-local exec'd per allocation, STATUS latency, how many DELs returned with
the pod's interface still there (the CNI spec says none may), which CNI binary the agent
installed, agent and controller RSS, and the ratios.
Not part of the test run (no test_ names; tests/bench is never collected for assertions).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REF_DIR = "/usr/lib/cni"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def exec_cni(binary: str, command: str, cid: str, netns: str, conf: dict[str, Any],
             cni_path: str) -> tuple[float, int, str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
           "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
           "CNI_PATH": cni_path,
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p-{cid[:8]};"
                       f"K8S_POD_UID={cid}"}
    data = json.dumps(conf).encode()
    t = time.perf_counter()
    p = subprocess.run([binary], input=data, env=env, capture_output=True)
    dt = (time.perf_counter() - t) * 1e3
    return dt, p.returncode, p.stdout.decode()[:300]


# ---------------------------------------------------------------- inner (in node netns)
def inner(args: argparse.Namespace) -> None:
    cfg = json.loads(Path(args.inner).read_text())
    work = Path(cfg["work"])
    ecnet_conf = {"cniVersion": "1.0.0", "name": "ecnet-bench", "type": "ecnet",
                  "agentSocket": cfg["socket"], "pool": "bench"}
    ref_conf = {"cniVersion": "1.0.0", "name": "ref-bench", "type": "bridge",
                "bridge": "cniref0", "isGateway": True, "ipMasq": False, "mtu": 1450,
                "ipam": {"type": "host-local", "subnet": "10.99.0.0/16",
                         "dataDir": str(work / "host-local")}}
    plugins = {"ecnet": (cfg["ecnet_binary"], ecnet_conf, cfg["ecnet_bin_dir"]),
               "reference": (f"{REF_DIR}/bridge", ref_conf, REF_DIR)}
    # Namespaces were made by the outer process: one made here, inside `ip netns exec`'s
    # private mount namespace, would be invisible to the agent (a stale mount point there).
    pool = iter(cfg["netns"])

    def new_netns() -> str:
        return str(next(pool))

    results: dict[str, dict[str, list[float]]] = {k: {"ADD": [], "DEL": []} for k in plugins}
    errors: list[str] = []
    created: list[str] = []
    left = {k: 0 for k in plugins}   # DELs that returned with the pod's eth0 still there
    if True:
        for i in range(args.warmup + args.pods):
            for kind in ("ecnet", "reference"):
                binary, conf, cni_path = plugins[kind]
                ns = new_netns()
                created.append(ns)
                cid = uuid.uuid4().hex
                dt_add, rc, out = exec_cni(binary, "ADD", cid, f"/var/run/netns/{ns}", conf,
                                           cni_path)
                if rc != 0:
                    errors.append(f"{kind} ADD: {out}")
                dt_del, rc, out = exec_cni(binary, "DEL", cid, f"/var/run/netns/{ns}", conf,
                                           cni_path)
                if rc != 0:
                    errors.append(f"{kind} DEL: {out}")
                # the CNI spec's DEL promise, checked outside the timing
                if subprocess.run(["ip", "-n", ns, "link", "show", "eth0"],
                                  capture_output=True).returncode == 0:
                    left[kind] += 1
                if i >= args.warmup:
                    results[kind]["ADD"].append(dt_add)
                    results[kind]["DEL"].append(dt_del)
        bursts: dict[str, float] = {}
        for kind in ("ecnet", "reference"):
            binary, conf, cni_path = plugins[kind]
            pods = []
            for _ in range(args.burst):
                ns = new_netns()
                created.append(ns)
                pods.append((uuid.uuid4().hex, f"/var/run/netns/{ns}"))
            t = time.perf_counter()
            with ThreadPoolExecutor(args.burst) as ex:
                outs = list(ex.map(
                    lambda p, b=binary, c=conf, cp=cni_path: exec_cni(b, "ADD", p[0], p[1],
                                                                      c, cp), pods))
            bursts[kind] = time.perf_counter() - t
            errors += [f"{kind} burst ADD: {o[2]}" for o in outs if o[1] != 0]
            with ThreadPoolExecutor(16) as ex:
                list(ex.map(
                    lambda p, b=binary, c=conf, cp=cni_path: exec_cni(b, "DEL", p[0], p[1],
                                                                      c, cp), pods))
        # host-local alone, exec'd per allocation (its allocation rate)
        hl_conf = {"cniVersion": "1.0.0", "name": "hl-bench",
                   "ipam": {"type": "host-local", "subnet": "10.98.0.0/16",
                            "dataDir": str(work / "host-local-alone")}}
        n = args.alloc
        t = time.perf_counter()
        for _ in range(n):
            exec_cni(f"{REF_DIR}/host-local", "ADD", uuid.uuid4().hex, "/var/run/netns/x",
                     hl_conf, REF_DIR)
        hl_rate = n / (time.perf_counter() - t)
        # STATUS, which containerd 2.x execs every 5 s on every node
        status = [exec_cni(cfg["ecnet_binary"], "STATUS", "", "", ecnet_conf,
                           cfg["ecnet_bin_dir"])[0] for _ in range(args.status)]
    Path(cfg["out"]).write_text(json.dumps({"results": results, "bursts": bursts,
                                            "hl_rate": hl_rate, "errors": errors[:20],
                                            "left": left, "status": status}))


# ---------------------------------------------------------------- outer (builds the lab)
def grpc_alloc_rate(addr: str, clients: int) -> float:
    """Sustained AllocatePort rate with the same load generator as tests.bench.ipam_scale
    (asyncio clients in separate processes, 8 calls in flight each)."""
    from tests.bench.ipam_scale import run_load
    return run_load(addr, clients, 8, rounds=2, window=2.0, pool="rate").alloc_per_s


def outer(args: argparse.Namespace) -> None:
    from tests.lab.cluster import Lab
    # Plaintext on loopback: the load generator below dials the controller without TLS.
    with tempfile.TemporaryDirectory(prefix="ecnet-bench-") as tmp, Lab(tmp, tls=False) as lab:
        lab.start_controller("--log-level", "warning")
        lab.ipctl("pool", "create", "bench", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "bench", "10.70.0.0/16")
        lab.ipctl("pool", "create", "rate", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "rate", "10.128.0.0/12")
        node = lab.add_node("bench", "--log-level", "warning")
        out = Path(tmp) / "out.json"
        count = 2 * (args.warmup + args.pods) + 2 * args.burst
        netns = [lab.make_netns(f"b{i}") for i in range(count)]
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"work": tmp, "socket": node.socket, "tag": lab.tag,
                                    "ecnet_binary": node.binary,
                                    "ecnet_bin_dir": str(node.bin_dir), "out": str(out),
                                    "netns": netns}))
        subprocess.run(["ip", "netns", "exec", node.netns, sys.executable, "-m",
                        "tests.bench.cni_bench", "--inner", str(spec), "--pods",
                        str(args.pods), "--warmup", str(args.warmup), "--burst",
                        str(args.burst), "--alloc", str(args.alloc), "--status",
                        str(args.status)],
                       check=True, cwd=lab.repo)
        data = json.loads(out.read_text())
        args.binary_kind = ("python" if Path(node.binary).read_bytes()[:2] == b"#!"
                            else "static C")
        rate = grpc_alloc_rate(lab.controller_addr, args.clients)
        agent_rss = rss_mb(node.agent.pid) if node.agent else float("nan")
        ctl_rss = rss_mb(lab.controller.pid) if lab.controller else float("nan")
    report(data, rate, agent_rss, ctl_rss, args)


def report(data: dict[str, Any], rate: float, agent_rss: float, ctl_rss: float,
           args: argparse.Namespace) -> None:
    r = data["results"]
    rows = []
    for verb in ("ADD", "DEL"):
        e, ref = r["ecnet"][verb], r["reference"][verb]
        for label, fn in (("p50", lambda v: pct(v, 50)), ("p90", lambda v: pct(v, 90)),
                          ("p99", lambda v: pct(v, 99)), ("max", max)):
            rows.append((f"{verb} {label} (ms)", fn(e), fn(ref)))
    b = data["bursts"]
    rows.append((f"burst of {args.burst} ADDs, wall (s)", b["ecnet"], b["reference"]))
    rows.append(("allocations/s (ecnet: gRPC; ref: host-local exec)", rate, data["hl_rate"]))
    print()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"sequential pods per plugin: {args.pods} (after {args.warmup} warm-up), "
          "interleaved ecnet/reference")
    print(f"{'metric':52} {'ecnet':>10} {'reference':>10} {'ratio':>7}")
    for name, e, ref in rows:
        ratio = e / ref if ref and e else float("nan")
        print(f"{name:52} {e:10.2f} {ref:10.2f} {ratio:7.2f}")
    st = data["status"]
    print(f"{'STATUS p50 / p99 (ms)':52} {pct(st, 50):10.2f} {pct(st, 99):10.2f}")
    left = data["left"]
    print(f"{'DELs returning with eth0 still in the netns':52} {left['ecnet']:10d} "
          f"{left['reference']:10d}")
    print(f"{'CNI binary':52} {args.binary_kind:>10}")
    print(f"{'agent RSS (MB)':52} {agent_rss:10.1f}")
    print(f"{'controller RSS (MB)':52} {ctl_rss:10.1f}")
    print("ratios: ecnet/reference for latencies and bursts; ecnet/host-local for allocations")
    if data["errors"]:
        print("errors:", *data["errors"], sep="\n  ")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pods", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--burst", type=int, default=100)
    p.add_argument("--alloc", type=int, default=300)
    p.add_argument("--clients", type=int, default=2, help="gRPC load client processes")
    p.add_argument("--status", type=int, default=200, help="STATUS execs to time")
    p.add_argument("--inner", default="")
    a = p.parse_args()
    inner(a) if a.inner else outer(a)


if __name__ == "__main__":
    main()
