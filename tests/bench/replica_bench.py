"""Controller replicas on PostgreSQL: allocation throughput for 1, 2 and 3 replicas under the
same load, PostgreSQL's own CPU, duplicates (0 expected), and watches served by each replica.

    .venv/bin/python -m tests.bench.replica_bench --seconds 20 --clients 6 --threads 4

Per replica count: a fresh database, N `ecnet-ipcontroller` processes (unix sockets), load
generator processes that each spread their threads over the replicas (ADD, then DEL of the
oldest once a client holds 20 ports), and 2 watchers per replica (--watchers) that must
receive the changes. PostgreSQL's CPU is the sum of utime+stime over every `postgres`
process of the machine (other users of the server count too: say so with the numbers).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc


def _pg_cpu_seconds() -> float:
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name.startswith("postgres"):
            fields = stat[stat.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _client(args: tuple[int, list[str], int, float]) -> tuple[int, int, list[tuple[str, str]]]:
    """One load process: `threads` threads round-robin over the replicas for `seconds`.
    Returns (allocations, errors, (container, ip) of every port still held)."""
    import threading
    index, targets, threads, seconds = args
    done = [0, 0]
    held: list[tuple[str, str]] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def run(t: int) -> None:
        target = targets[(index * threads + t) % len(targets)]
        mine: list[tuple[str, str]] = []
        n = 0
        with grpc.insecure_channel(target) as chan:
            stub = pb_grpc.IPControllerStub(chan)
            while time.monotonic() < end:
                n += 1
                cid = f"b{index}-{t}-{n}"
                try:
                    r = stub.AllocatePort(pb.AllocateRequest(
                        container_id=cid, ifname="eth0", node=f"load{index}", pod_pool="p",
                        pod=pb.PodRef(namespace="bench", name=cid, uid=cid)), timeout=30)
                    mine.append((cid, r.port.ips[0].address))
                    with lock:
                        done[0] += 1
                    if len(mine) > 20:
                        old, _ = mine.pop(0)
                        stub.ReleasePort(pb.ReleaseRequest(container_id=old, ifname="eth0"),
                                         timeout=30)
                except grpc.RpcError:
                    with lock:
                        done[1] += 1
        with lock:
            held.extend(mine)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return done[0], done[1], held


def _one(replicas: int, clients: int, threads: int, seconds: float, tmp: Path,
         watchers: int = 2) -> dict[str, Any]:
    from ipam.service import IpamService
    from ipam.store.sql import SqlStore
    from tests.bench.ipam_scale import _pg_db
    from tests.lab.controller import replica_process
    from tests.lab.watch import Follower, WatchView
    with _pg_db() as db, ExitStack() as stack:
        store = SqlStore(db)
        svc = IpamService(store)
        svc.create_pool("p", "dynamic", quarantine_seconds=0)
        svc.create_subnet("p", "10.128.0.0/12")
        store.close()
        socks = [tmp / f"r{replicas}-{i}.sock" for i in range(replicas)]
        procs = [stack.enter_context(replica_process(db, s, tmp / f"r{replicas}-{i}.log"))
                 for i, s in enumerate(socks)]
        targets = [f"unix:{s}" for s in socks]
        with grpc.insecure_channel(targets[0]) as chan:   # watchers see pool p's ports
            stub = pb_grpc.IPControllerStub(chan)
            for w in range(watchers * replicas):
                stub.AllocatePort(pb.AllocateRequest(
                    container_id=f"watch-{w}", ifname="eth0", node=f"watch{w}", pod_pool="p",
                    pod=pb.PodRef(namespace="bench", name=f"w{w}", uid=f"w{w}")))
        views = [WatchView(f"watch{w}") for w in range(watchers * replicas)]
        followers = [Follower([targets[w % replicas]], v) for w, v in enumerate(views)]
        stack.callback(lambda: [f.stop() for f in followers])
        for v in views:
            v.wait_for(lambda w: w.complete)
        pg0, ctl0 = _pg_cpu_seconds(), [_proc_cpu_seconds(p.pid) for p in procs]
        t0 = time.monotonic()
        load0 = _children_cpu_seconds()
        with mp.get_context("spawn").Pool(clients) as pool:
            results = pool.map(_client, [(i, targets, threads, seconds)
                                         for i in range(clients)])
        took = time.monotonic() - t0
        # The pool's processes are reaped when its block ends: their CPU is counted now.
        load_cpu = _children_cpu_seconds() - load0
        pg1, ctl1 = _pg_cpu_seconds(), [_proc_cpu_seconds(p.pid) for p in procs]
        allocs = sum(r[0] for r in results)
        errors = sum(r[1] for r in results)
        ips = [ip for r in results for _, ip in r[2]]
        from sqlalchemy import create_engine, text
        engine = create_engine(db)
        with engine.connect() as conn:
            dup_rows = conn.execute(text(
                "SELECT count(*) FROM (SELECT ip FROM addresses GROUP BY ip HAVING count(*) > 1)"
                " d")).scalar_one()
            head = conn.execute(text("SELECT max(revision) FROM change_log")).scalar_one()
        engine.dispose()
        for v in views:
            v.wait_for(lambda w, h=head: w.revision >= h, timeout=120)
        return {"replicas": replicas, "allocs": allocs, "errors": errors,
                "per_s": allocs / seconds, "took": took,
                "pg_cores": (pg1 - pg0) / seconds, "load_cores": load_cpu / took,
                "pg_ms": (pg1 - pg0) * 1e3 / max(1, allocs),
                "ctl_ms": sum(b - a for a, b in zip(ctl0, ctl1, strict=True)) * 1e3
                / max(1, allocs),
                "ctl_cores": [(b - a) / seconds for a, b in zip(ctl0, ctl1, strict=True)],
                "dup_held": len(ips) - len(set(ips)), "dup_db": int(dup_rows),
                "watch_msgs": [v.messages for v in views],
                "watch_errors": sum(len(v.errors) for v in views)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--clients", type=int, default=6, help="load generator processes")
    p.add_argument("--threads", type=int, default=4, help="threads per load process")
    p.add_argument("--replicas", default="1,2,3")
    p.add_argument("--watchers", type=int, default=2, help="watch streams per replica")
    p.add_argument("--tmp", default="/tmp/ecnet-replica-bench")
    a = p.parse_args()
    tmp = Path(a.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    rows = [_one(int(n), a.clients, a.threads, a.seconds, tmp, a.watchers)
            for n in a.replicas.split(",")]
    base = rows[0]["per_s"] or 1.0
    print(f"\n{a.clients} load processes x {a.threads} threads, {a.seconds:g} s each, "
          f"{os.cpu_count()} CPUs")
    print("| replicas | allocations/s | vs 1 | PostgreSQL CPU (cores) | controllers' CPU "
          "(cores each) | load generator CPU (cores) | controller CPU per allocation (ms, "
          "all replicas) | PostgreSQL CPU per allocation (ms) | errors | duplicates "
          "(held / db) | watch messages per watcher |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['replicas']} | {r['per_s']:.0f} | {r['per_s'] / base:.2f}x | "
              f"{r['pg_cores']:.2f} | {', '.join(f'{c:.2f}' for c in r['ctl_cores'])} | "
              f"{r['load_cores']:.2f} | {r['ctl_ms']:.2f} | {r['pg_ms']:.2f} | "
              f"{r['errors']} | {r['dup_held']} / {r['dup_db']} | "
              f"{', '.join(map(str, r['watch_msgs']))} (errors {r['watch_errors']}) |")
    # What the table means on a machine with fewer cores than the processes it runs: when
    # PostgreSQL + controllers + load use every core whatever the replica count, the rate
    # cannot scale here; a flat controller CPU per allocation says it would with the cores.
    busy = [r["pg_cores"] + sum(r["ctl_cores"]) + r["load_cores"] for r in rows]
    print(f"CPU in use (PostgreSQL + controllers + load), cores: "
          f"{', '.join(f'{b:.2f}' for b in busy)} of {os.cpu_count()}")

if __name__ == "__main__":
    main()
