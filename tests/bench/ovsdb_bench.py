"""ovs_driver per-port latency, this tree vs another checkout (the old hand-written
JSON-RPC driver), side by side on one private userspace OVS.

    .venv/bin/python -m tests.bench.ovsdb_bench [--old /tmp/ovs-old] [--runs 3]
    # the old driver: git worktree add /tmp/ovs-old 68ca517

Each run starts one worker process per driver (so each imports its own ovs_driver,
checked by path), drivers interleaved run by run, against the same ovsdb-server and
ovs-vswitchd. A worker plugs --ports fresh veths into its own bridge one at a time and
times, per port:
  add      add_port with external_ids until ovs-vswitchd has it (ofport), the agent's ADD
  add_nw   add_port(wait_ofport=None): until committed and in the client's view
  del      delete_port, until committed and in the client's view (the driver's DEL)
and the wall time of --burst concurrent add_port calls (threads, as the agent's ADDs).
Also the client process's CPU time per add and per delete (all its threads; on a shared
machine the least noisy figure). Prints one table (medians and p90 in ms per run, then
the median over runs).
Not part of the test run (tests/bench is never collected).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[2]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))]


def _veths(netns: str, names: list[str], op: str) -> None:
    lines = []
    for n in names:
        if op == "add":
            lines += [f"link add {n} type veth peer name {n}p", f"link set {n} up"]
        else:
            lines.append(f"link del {n}")
    subprocess.run(["ip", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n",
                   text=True, check=op == "add", capture_output=True)


def _json_parser() -> str:
    """Which JSON parser python-ovs used in this worker, if the driver uses python-ovs."""
    ovs_json = sys.modules.get("ovs.json")
    if ovs_json is None:
        return "stdlib json (driver's own JSON-RPC client)"
    import ovs.version  # noqa: PLC0415 - only where the driver brought python-ovs in

    version = ovs.version.VERSION
    if ovs_json.PARSER == ovs_json.PARSER_C:
        return f"python-ovs {version}, its C parser (ovs._json)"
    return (f"python-ovs {version}, parser "
            f"{ovs_json.Parser.__module__}.{ovs_json.Parser.__name__}")


def worker(tree: str, remote: str, netns: str, ports: int, burst: int) -> dict[str, Any]:
    """Runs in its own process with ``tree`` first on sys.path."""
    sys.path.insert(0, tree)
    import ovs_driver  # noqa: PLC0415 - the driver under test is chosen at run time

    where = Path(ovs_driver.__file__).resolve()
    if not where.is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"imported {where}, not the driver in {tree}")
    tag = uuid.uuid4().hex[:5]
    names = [f"vb{tag}{i:03d}" for i in range(ports)]
    burst_names = [f"vc{tag}{i:03d}" for i in range(burst)]
    _veths(netns, names + burst_names, "add")
    out: dict[str, list[float]] = {"add": [], "add_nw": [], "del": []}
    with ovs_driver.OvsdbClient(remote) as c:
        br = f"brb{tag}"
        c.ensure_bridge(br)
        try:
            for n in names:  # warm-up: one of each, not counted
                c.add_port(br, n, {"iface-id": f"warm-{n}"})
                c.delete_port(br, n)
                break
            cpu = time.process_time()
            for n in names:
                ids = {"iface-id": str(uuid.uuid4()), "attached-mac": "02:00:00:00:00:02",
                       "ecnet/container": n, "ecnet/ifname": "eth0"}
                t = time.perf_counter()
                if c.add_port(br, n, ids) <= 0:
                    raise SystemExit(f"no ofport for {n}")
                out["add"].append((time.perf_counter() - t) * 1e3)
            cpu_add = (time.process_time() - cpu) * 1e3 / len(names)
            cpu = time.process_time()
            for n in names:
                t = time.perf_counter()
                c.delete_port(br, n)
                out["del"].append((time.perf_counter() - t) * 1e3)
            cpu_del = (time.process_time() - cpu) * 1e3 / len(names)
            for n in names:
                t = time.perf_counter()
                c.add_port(br, n, {"iface-id": n}, wait_ofport=None)
                out["add_nw"].append((time.perf_counter() - t) * 1e3)
            errors: list[BaseException] = []
            gate = threading.Barrier(len(burst_names) + 1)

            def add(n: str) -> None:
                gate.wait()
                try:
                    c.add_port(br, n, {"iface-id": n}, wait_ofport=10.0)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=add, args=(n,)) for n in burst_names]
            for th in threads:
                th.start()
            gate.wait()
            t = time.perf_counter()
            for th in threads:
                th.join()
            burst_ms = (time.perf_counter() - t) * 1e3
            if errors:
                raise SystemExit(f"burst failed: {errors[0]!r}")
        finally:
            c.delete_bridge(br)
            _veths(netns, names + burst_names, "del")
    return {"driver": str(where.parent), "json": _json_parser(), "burst_ms": burst_ms,
            "cpu_add": cpu_add,
            "cpu_del": cpu_del,
            **{k: {"p50": statistics.median(v), "p90": pct(v, 90)} for k, v in out.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", default="/tmp/ovs-old", help="checkout with the other driver")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ports", type=int, default=50)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--worker", nargs=3, metavar=("TREE", "REMOTE", "NETNS"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(*a.worker, a.ports, a.burst)))
        return
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespace, private OVS)")
    sys.path.insert(0, str(HERE))
    from tests.lab.ovs import running_private_ovs  # noqa: PLC0415

    drivers = {"old": a.old, "new": str(HERE)}
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in drivers}
    with running_private_ovs() as ovs:
        assert ovs.netns is not None
        for _ in range(a.runs):
            for label, tree in drivers.items():
                proc = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--ports", str(a.ports),
                     "--burst", str(a.burst), "--worker", tree, ovs.remote, ovs.netns],
                    cwd="/", capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"{label} worker failed:\n{proc.stderr[-3000:]}")
                results[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cols = ("add", "add_nw", "del")
    head = " ".join(f"{c + ' p50':>11} {c + ' p90':>11}" for c in cols)
    print(f"\novs_driver per-port latency, ms ({a.ports} ports per run, userspace OVS, "
          f"veths; burst = {a.burst} concurrent add_port, wall ms)")
    print(f"{'driver':<6} {'run':>3} {head} {'burst':>8} {'cpu add':>8} {'cpu del':>8}")
    for label, runs in results.items():
        for i, r in enumerate(runs, 1):
            cells = " ".join(f"{r[c]['p50']:>11.2f} {r[c]['p90']:>11.2f}" for c in cols)
            print(f"{label:<6} {i:>3} {cells} {r['burst_ms']:>8.1f} {r['cpu_add']:>8.2f} "
                  f"{r['cpu_del']:>8.2f}")
    for label, runs in results.items():
        cells = " ".join(
            f"{statistics.median(r[c]['p50'] for r in runs):>11.2f} "
            f"{statistics.median(r[c]['p90'] for r in runs):>11.2f}" for c in cols)
        print(f"{label:<6} {'med':>3} {cells} "
              f"{statistics.median(r['burst_ms'] for r in runs):>8.1f} "
              f"{statistics.median(r['cpu_add'] for r in runs):>8.2f} "
              f"{statistics.median(r['cpu_del'] for r in runs):>8.2f}")
    for label, runs in results.items():
        print(f"{label}: {runs[0]['driver']}; {runs[0]['json']}")


if __name__ == "__main__":
    main()
