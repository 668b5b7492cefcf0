"""ecnet vs the reference `bridge`+`host-local` plugins, side by side in one run.

    .venv/bin/python -m tests.bench.cni_bench [--pods 60] [--burst 100]

Builds the lab itself (controller, one node namespace with a private userspace OVS and the
agent), then runs the measuring loop *inside the node's namespace* so both plugins are exec'd
the same way a runtime on that node would (the reference plugin's bridge and addresses live
only in that namespace). Pods are interleaved ecnet, reference, ecnet, ... ; a warm-up is
discarded. Prints one table: ADD/DEL p50/p90/p99/max, burst wall times, allocation rate
through gRPC vs host-local exec'd per allocation, STATUS latency, how many DELs returned with
the pod's interface still there (the CNI spec says none may), which CNI binary the agent
installed, agent and controller RSS, the ratios, and CPU per pod and per process (the CNI
binaries exec'd, agent, controller, ovs-vswitchd, ovsdb-server: utime+stime deltas over each
phase from /proc/<pid>/stat, the exec'd binaries' from RUSAGE_CHILDREN around each exec) with
`--agent-debug` runs the agent at DEBUG and reports its own phase timings per ADD and per DEL
(and how each doomed veth pair was found gone) and its OVSDB
transactions (how many ports each attach carried: the group commit); the log lines cost
CPU per pod, so the other figures are from runs without it.
Not part of the test run (no test_ names; tests/bench is never collected for assertions).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
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


def proc_cpu_ms(pid: int) -> float:
    """utime+stime of every thread of `pid` so far (fields 14 and 15 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def children_cpu_ms() -> float:
    """CPU of every waited-for child so far (the CNI binaries and what they exec'd)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * 1000


class Cpu:
    """CPU per process over one phase of the benchmark."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = {k: proc_cpu_ms(p) for k, p in pids.items()}

    def done(self, shim_ms: float, reference_ms: float = 0.0) -> dict[str, float]:
        out = {k: proc_cpu_ms(p) - self.t0[k] for k, p in self.pids.items()}
        out["shim"], out["reference plugins"] = shim_ms, reference_ms
        return out


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
    pids = cfg["pids"]
    cpu: dict[str, dict[str, float]] = {}
    if True:
        child = {k: 0.0 for k in plugins}   # CPU of the exec'd binaries, per plugin
        for i in range(args.warmup + args.pods):
            if i == args.warmup:
                seq = Cpu(pids)
                child = {k: 0.0 for k in plugins}
            for kind in ("ecnet", "reference"):
                binary, conf, cni_path = plugins[kind]
                ns = new_netns()
                created.append(ns)
                cid = uuid.uuid4().hex
                c0 = children_cpu_ms()
                dt_add, rc, out = exec_cni(binary, "ADD", cid, f"/var/run/netns/{ns}", conf,
                                           cni_path)
                if rc != 0:
                    errors.append(f"{kind} ADD: {out}")
                dt_del, rc, out = exec_cni(binary, "DEL", cid, f"/var/run/netns/{ns}", conf,
                                           cni_path)
                child[kind] += children_cpu_ms() - c0
                if rc != 0:
                    errors.append(f"{kind} DEL: {out}")
                # the CNI spec's DEL promise, checked outside the timing
                if subprocess.run(["ip", "-n", ns, "link", "show", "eth0"],
                                  capture_output=True).returncode == 0:
                    left[kind] += 1
                if i >= args.warmup:
                    results[kind]["ADD"].append(dt_add)
                    results[kind]["DEL"].append(dt_del)
        cpu["sequential ADD+DEL"] = seq.done(child["ecnet"], child["reference"])
        bursts: dict[str, float] = {}
        for kind in ("ecnet", "reference"):
            binary, conf, cni_path = plugins[kind]
            pods = []
            for _ in range(args.burst):
                ns = new_netns()
                created.append(ns)
                pods.append((uuid.uuid4().hex, f"/var/run/netns/{ns}"))
            phase, c0 = Cpu(pids), children_cpu_ms()
            t = time.perf_counter()
            with ThreadPoolExecutor(args.burst) as ex:
                outs = list(ex.map(
                    lambda p, b=binary, c=conf, cp=cni_path: exec_cni(b, "ADD", p[0], p[1],
                                                                      c, cp), pods))
            bursts[kind] = time.perf_counter() - t
            shim = children_cpu_ms() - c0
            cpu[f"burst ADD ({kind})"] = (phase.done(shim) if kind == "ecnet"
                                          else phase.done(0.0, shim))
            errors += [f"{kind} burst ADD: {o[2]}" for o in outs if o[1] != 0]
            phase, c0 = Cpu(pids), children_cpu_ms()
            with ThreadPoolExecutor(16) as ex:
                list(ex.map(
                    lambda p, b=binary, c=conf, cp=cni_path: exec_cni(b, "DEL", p[0], p[1],
                                                                      c, cp), pods))
            if kind == "ecnet":
                cpu["burst DEL (ecnet)"] = phase.done(children_cpu_ms() - c0)
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
                                            "left": left, "status": status, "cpu": cpu}))


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
        node = lab.add_node("bench", "--log-level",
                            "debug" if args.agent_debug else "warning", *args.agent_arg)
        out = Path(tmp) / "out.json"
        count = 2 * (args.warmup + args.pods) + 2 * args.burst
        netns = [lab.make_netns(f"b{i}") for i in range(count)]
        assert node.agent is not None and lab.controller is not None and node.ovs.dir
        pids = {"agent": node.agent.pid, "controller": lab.controller.pid,
                "ovs-vswitchd": int((node.ovs.dir / "vswitchd.pid").read_text()),
                "ovsdb-server": int((node.ovs.dir / "ovsdb.pid").read_text())}
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"work": tmp, "socket": node.socket, "tag": lab.tag,
                                    "ecnet_binary": node.binary,
                                    "ecnet_bin_dir": str(node.bin_dir), "out": str(out),
                                    "netns": netns, "pids": pids}))
        subprocess.run(["ip", "netns", "exec", node.netns, sys.executable, "-m",
                        "tests.bench.cni_bench", "--inner", str(spec), "--pods",
                        str(args.pods), "--warmup", str(args.warmup), "--burst",
                        str(args.burst), "--alloc", str(args.alloc), "--status",
                        str(args.status)],
                       check=True, cwd=lab.repo)
        data = json.loads(out.read_text())
        args.binary_kind = ("python" if Path(node.binary).read_bytes()[:2] == b"#!"
                            else "static C")
        phase, t0 = Cpu(pids), time.perf_counter()
        rate = grpc_alloc_rate(lab.controller_addr, args.clients)
        used = phase.done(0.0)
        data["alloc_cpu"] = {k: used[k] / (time.perf_counter() - t0) / 10  # % of a core
                             for k in ("agent", "controller", "ovs-vswitchd")}
        agent_rss = rss_mb(node.agent.pid) if node.agent else float("nan")
        ctl_rss = rss_mb(lab.controller.pid) if lab.controller else float("nan")
        log = node.agent_log()
        if args.agent_log:
            Path(args.agent_log).write_text(log)
        if args.alloc_without_agent:  # the same controller and database, agent stopped
            node.stop_agent()
            data["rate_no_agent"] = grpc_alloc_rate(lab.controller_addr, args.clients)
    report(data, rate, agent_rss, ctl_rss, args, log)


def report(data: dict[str, Any], rate: float, agent_rss: float, ctl_rss: float,
           args: argparse.Namespace, agent_log: str) -> None:
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
    if "rate_no_agent" in data:
        print(f"{'allocations/s, the same with the agent stopped':52} "
              f"{data['rate_no_agent']:10.2f}")
    print(f"{'CPU during the allocation run (% of a core)':52} " + ", ".join(
        f"{k} {v:.0f}" for k, v in data["alloc_cpu"].items()))
    st = data["status"]
    print(f"{'STATUS p50 / p99 (ms)':52} {pct(st, 50):10.2f} {pct(st, 99):10.2f}")
    left = data["left"]
    print(f"{'DELs returning with eth0 still in the netns':52} {left['ecnet']:10d} "
          f"{left['reference']:10d}")
    print(f"{'CNI binary':52} {args.binary_kind:>10}")
    print(f"{'agent RSS (MB)':52} {agent_rss:10.1f}")
    print(f"{'controller RSS (MB)':52} {ctl_rss:10.1f}")
    # --agent-debug: the agent's own phase timings, in log order (sequential ADDs first)
    phases = re.findall(r"ADD container=.* veth_ms=([0-9.]+) alloc_wait_ms=([0-9.]+) "
                        r"plumb_ms=([0-9.]+) total_ms=([0-9.]+)", agent_log)
    if phases:
        seq = phases[args.warmup:args.warmup + args.pods]
        burst = phases[args.warmup + args.pods:]
        for i, name in enumerate(("veth_ms", "alloc_wait_ms", "plumb_ms", "total_ms")):
            print(f"{'agent ' + name + ' p50 / p99, sequential ADDs':52} "
                  f"{pct([float(p[i]) for p in seq], 50):10.2f} "
                  f"{pct([float(p[i]) for p in seq], 99):10.2f}")
        print(f"{'agent total_ms p50 / p99, burst ADDs':52} "
              f"{pct([float(p[3]) for p in burst], 50):10.2f} "
              f"{pct([float(p[3]) for p in burst], 99):10.2f}")
        dphases = re.findall(r"DEL container=.* off_node_ms=([0-9.]+) release_ms=([0-9.]+) "
                             r"veth_wait_ms=([0-9.]+) total_ms=([0-9.]+)", agent_log)
        dseq = dphases[args.warmup:args.warmup + args.pods]
        for i, name in enumerate(("off_node_ms", "release_ms", "veth_wait_ms", "total_ms")):
            if dseq:
                print(f"{'agent ' + name + ' p50 / p99, sequential DELs':52} "
                      f"{pct([float(p[i]) for p in dseq], 50):10.2f} "
                      f"{pct([float(p[i]) for p in dseq], 99):10.2f}")
        gone = re.findall(r"veth pair gone host_ifname=\S+ by=(\w+(?: \w+)*) ms=([0-9.]+)",
                          agent_log)
        if gone:   # how each doomed pair was found gone, and when after its doom
            for how in sorted({g[0] for g in gone}):
                ms = [float(g[1]) for g in gone if g[0] == how]
                print(f"{'veth pairs gone by ' + how + ': n, p50 ms':52} {len(ms):10d} "
                      f"{pct(ms, 50):10.2f}")
        sizes = [int(n) if n else 1 for n in re.findall(
            r"ovsdb transact what='add_port(?:s n=(\d+)| bridge=br-int)", agent_log)]
        print(f"{'OVSDB attach transactions / ports attached':52} {len(sizes):10d} "
              f"{sum(sizes):10d}   (largest batch {max(sizes, default=0)})")
        dels = [int(n) if n else 1 for n in re.findall(
            r"ovsdb transact what='delete_port(?:s n=(\d+)| bridge=br-int)", agent_log)]
        print(f"{'OVSDB detach transactions / ports detached':52} {len(dels):10d} "
              f"{sum(dels):10d}   (largest batch {max(dels, default=0)})")
    print("ratios: ecnet/reference for latencies and bursts; ecnet/host-local for allocations")
    pods = {"sequential ADD+DEL": args.pods, "burst ADD (ecnet)": args.burst,
            "burst ADD (reference)": args.burst, "burst DEL (ecnet)": args.burst}
    procs = ["shim", "agent", "controller", "ovs-vswitchd", "ovsdb-server",
             "reference plugins"]
    print()
    print("CPU ms per pod, per process (sequential: one ADD + one DEL; reference plugins:"
          " bridge + host-local)")
    print(f"{'phase':24}" + "".join(f"{p[:12]:>13}" for p in procs) + f"{'total':>9}")
    for phase, got in data["cpu"].items():
        n = pods[phase]
        print(f"{phase:24}" + "".join(f"{got[p] / n:13.2f}" for p in procs)
              + f"{sum(got[p] for p in procs) / n:9.2f}")
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
    p.add_argument("--agent-debug", action="store_true",
                   help="agent at DEBUG: report its own total_ms per ADD")
    p.add_argument("--agent-arg", action="append", default=[],
                   help="one more agent argument (repeat: --agent-arg=--datapath "
                        "--agent-arg=onos)")
    p.add_argument("--agent-log", default="",
                   help="write the agent's log here (with --agent-debug: every ADD's phases)")
    p.add_argument("--alloc-without-agent", action="store_true",
                   help="measure the allocation rate again with the agent stopped")
    p.add_argument("--inner", default="")
    a = p.parse_args()
    inner(a) if a.inner else outer(a)


if __name__ == "__main__":
    main()
