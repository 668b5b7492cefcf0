"""Exec cost of the two CNI binaries the agent can install, side by side in one run.

What a runtime pays per call before the agent does any work: VERSION (answered by the binary
itself) and a forwarded STATUS-like request against a trivial agent that answers at once.
Prints wall-clock medians and the CPU (user+sys) per exec, over --runs runs of --execs each.

    python tests/bench/shim_startup.py --runs 3 --execs 300
"""
from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cni.agent import wire  # noqa: E402
from cni.install import install_shim, install_static  # noqa: E402


def _agent(path: str) -> socket.socket:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while conn.recv(65536):
                    pass
                conn.sendall(wire.answer(0, ""))

    threading.Thread(target=serve, daemon=True).start()
    return srv


def _measure(binary: Path, env: dict[str, str], stdin: bytes, n: int) -> tuple[float, float]:
    walls = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([str(binary)], input=stdin, env=env, stdout=subprocess.DEVNULL,
                       check=True)
        walls.append(time.perf_counter() - t0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return statistics.median(walls) * 1e3, cpu / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--execs", type=int, default=300)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "prefix"
        subprocess.run(["bash", str(ROOT / "packaging/build-shim.sh"), str(prefix)], check=True,
                       capture_output=True)
        static = install_static(f"{tmp}/static", prefix / "libexec/ecnet/ecnet")
        python = install_shim(f"{tmp}/python")
        sock = f"{tmp}/agent.sock"
        srv = _agent(sock)
        conf = b'{"cniVersion":"1.1.0","name":"ecnet","type":"ecnet","agentSocket":"%s"}' % (
            sock.encode())
        cases = {"VERSION": {"CNI_COMMAND": "VERSION"},
                 "STATUS (forwarded)": {"CNI_COMMAND": "STATUS"}}
        rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(a.runs):
            for case, env in cases.items():
                for kind, binary in (("static C", static), ("python launcher", python)):
                    rows.setdefault((case, kind), []).append(
                        _measure(binary, {**env, "PATH": os.environ["PATH"]}, conf, a.execs))
        srv.close()
    print(f"# shim start-up, {a.runs} runs x {a.execs} execs, range of per-run medians")
    print("| request | binary | wall p50 (ms) | CPU per exec (ms) |")
    print("|---|---|---|---|")
    for (case, kind), vals in rows.items():
        w = [v[0] for v in vals]
        c = [v[1] for v in vals]
        print(f"| {case} | {kind} | {min(w):.2f}–{max(w):.2f} | {min(c):.2f}–{max(c):.2f} |")


if __name__ == "__main__":
    main()
