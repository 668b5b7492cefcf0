"""ADD and DEL latency with ONOS healthy, slow or dead: the pod path must not notice.

    .venv/bin/python -m tests.bench.onos_impact [--calls 500]

For each ONOS condition a fresh controller process (`python -m ipcontroller.daemon`, SQLite
file, default sync settings: 5 s ONOS timeout) is started against the ONOS emulator, also a
separate process, so neither shares a GIL with the measuring client. One client then makes
`--calls` AllocatePort + ReleasePort pairs over gRPC, one at a time, and the table shows the
p50/p99 of each, the outbox backlog left at the end and how many calls ONOS saw.

Conditions: off (no --onos-url: the baseline), healthy, slow (every ONOS call takes 2 s),
dead (nothing listens: connection refused) and hung (a socket that accepts and never answers:
every ONOS call runs into the 5 s timeout).

Not part of the test run: no test_ names, and everything runs under __main__.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb
from tests.lab.helpers import free_port, wait_until
from tests.lab.sync_lab import Stubs

ROOT = Path(__file__).resolve().parents[2]
CONDITIONS = ("off", "healthy", "slow", "dead", "hung")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def start_emulator(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "onos_emulator", "--listen",
                             f"127.0.0.1:{port}", "--log-level", "WARNING"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    if not wait_until(up, 15):
        proc.kill()
        raise RuntimeError("emulator did not start")
    return proc


def emulator_hook(port: int, name: str, body: object | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/_emulator/{name}", data=data,
                                 method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


def start_controller(db: str, onos_url: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    args = [sys.executable, "-m", "ipcontroller.daemon", "--listen", f"127.0.0.1:{port}",
            "--db", db, "--log-level", "warning"]
    if onos_url:
        args += ["--onos-url", onos_url]
    with open(log, "ab") as f:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=f, stderr=f)
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(ch).result(timeout=30)
    finally:
        ch.close()
    return proc, port


def measure(port: int, calls: int, tag: str) -> tuple[list[float], list[float], int]:
    s = Stubs(port)
    try:
        s.setup_pool("bench", "10.128.0.0/16")
        for i in range(50):  # warm-up: channel, caches, the first outbox rows
            s.ctl.AllocatePort(_req(f"w{i}"), timeout=30)
            s.ctl.ReleasePort(pb.ReleaseRequest(container_id=f"w{i}", ifname="eth0"),
                              timeout=30)
        add: list[float] = []
        rel: list[float] = []
        for i in range(calls):
            cid = f"{tag}-{i}"
            t0 = time.perf_counter()
            s.ctl.AllocatePort(_req(cid), timeout=30)
            t1 = time.perf_counter()
            s.ctl.ReleasePort(pb.ReleaseRequest(container_id=cid, ifname="eth0"), timeout=30)
            t2 = time.perf_counter()
            add.append((t1 - t0) * 1000)
            rel.append((t2 - t1) * 1000)
        pending = s.sync_status().pending
        return add, rel, pending
    finally:
        s.close()


def _req(cid: str) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_id=cid, ifname="eth0", node="node-1", pool="bench",
                              pod=pb.PodRef(namespace="bench", name=cid, uid=f"uid-{cid}"))


def run(condition: str, calls: int, tmp: Path) -> dict[str, object]:
    onos_port = free_port()
    emu: subprocess.Popen[bytes] | None = None
    hung: socket.socket | None = None
    ctl: subprocess.Popen[bytes] | None = None
    try:
        if condition in ("healthy", "slow"):
            emu = start_emulator(onos_port)
            if condition == "slow":
                emulator_hook(onos_port, "faults", {"mode": "slow", "delay": 2.0})
        elif condition == "hung":
            hung = socket.socket()
            hung.bind(("127.0.0.1", onos_port))
            hung.listen(4096)  # the kernel completes handshakes; nobody ever reads
        url = "" if condition == "off" else f"http://127.0.0.1:{onos_port}"
        ctl, port = start_controller(f"sqlite:///{tmp}/{condition}.db", url,
                                     tmp / f"{condition}.log")
        t0 = time.perf_counter()
        add, rel, pending = measure(port, calls, condition)
        wall = time.perf_counter() - t0
        onos_calls = emulator_hook(onos_port, "calls")["total"] if emu is not None else "-"
        return {"condition": condition, "add": add, "rel": rel, "pending": pending,
                "onos_calls": onos_calls, "wall": wall}
    finally:
        if ctl is not None:
            ctl.send_signal(signal.SIGTERM)
            try:
                ctl.wait(timeout=15)
            except subprocess.TimeoutExpired:
                ctl.kill()
        if emu is not None:
            emu.kill()
            emu.wait(timeout=10)
        if hung is not None:
            hung.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="onos-impact-") as d:
        for cond in a.conditions.split(","):
            print(f"... {cond}", file=sys.stderr, flush=True)
            rows.append(run(cond, a.calls, Path(d)))
    print(f"\nAllocatePort / ReleasePort over gRPC, {a.calls} sequential pairs each, "
          f"{os.cpu_count()} CPUs, ms")
    print(f"{'ONOS':<9}{'ADD p50':>9}{'ADD p99':>9}{'DEL p50':>9}{'DEL p99':>9}"
          f"{'ADD mean':>10}{'backlog':>9}{'ONOS calls':>12}")
    for r in rows:
        add, rel = r["add"], r["rel"]
        assert isinstance(add, list) and isinstance(rel, list)
        print(f"{r['condition']:<9}{pct(add, 50):>9.2f}{pct(add, 99):>9.2f}"
              f"{pct(rel, 50):>9.2f}{pct(rel, 99):>9.2f}{statistics.fmean(add):>10.2f}"
              f"{r['pending']!s:>9}{r['onos_calls']!s:>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
