"""AllocatePort rate of one controller process, several code trees side by side in one run.

    .venv/bin/python -m tests.bench.alloc_compare --tree /tmp/old --tree . --runs 3
    .venv/bin/python -m tests.bench.alloc_compare --backend postgres --tree /tmp/old --tree .

Each tree is a checkout of this project (a `git worktree` of another commit, say): its
controller is started from that tree (`python -m ipcontroller.daemon` with the tree as the
working directory, this interpreter, unless `--python` names one per tree) on a fresh SQLite
file (with `--backend postgres`: a fresh database on ECNET_TEST_PG_URL's server, dropped
afterwards), with the flags the lab's bench gives it (`--log-level warning`, plaintext
loopback), and gets the load of `cni_bench`'s allocation row (tests.bench.ipam_scale.run_load:
2 client processes x 8 calls in flight, 2 rounds of 2 s allocating then releasing). Runs are
interleaved (tree A, tree B, A, B, ...) so a busy moment of the shared machine hits both.
Reported per run: allocations/s, releases/s, the controller's CPU (% of a core) and CPU ms per
call (utime+stime of the whole process over the load, divided by allocations + releases), on
PostgreSQL the same for its backends serving the run's database (the server's share of each
call: on a busy machine the two cores are shared by both), and the machine's 1-minute load
average when the run began.
Not a test: pytest never collects this module (no test_ names).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.bench.cni_bench import proc_cpu_ms
from tests.bench.ipam_scale import PG_URL, _pg_db, run_load
from tests.lab.helpers import free_port


@dataclass
class Run:
    tree: str
    alloc_per_s: float
    rel_per_s: float
    cpu_pct: float
    cpu_ms_per_call: float
    errors: int
    load_avg: float = 0.0
    db_cpu_ms_per_call: float = float("nan")   # PostgreSQL: its backends for this database


def _start(tree: Path, python: str, db: str, log: Path, extra: list[str]
           ) -> tuple[subprocess.Popen[bytes], str]:
    target = f"127.0.0.1:{free_port()}"
    out = open(log, "ab")  # noqa: SIM115 - the child holds it; closed with the process
    proc = subprocess.Popen([python, "-m", "ipcontroller.daemon", "--listen", target,
                             "--db", db, "--log-level", "warning", *extra],
                            cwd=tree, stdout=out, stderr=out)
    out.close()
    return proc, target


def _ipctl(tree: Path, python: str, target: str, *args: str) -> None:
    subprocess.run([python, "-m", "ipcontroller.cli", "--controller", target, *args],
                   cwd=tree, check=True, capture_output=True, timeout=60)


def _wait_ready(proc: subprocess.Popen[bytes], target: str) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"controller exited with {proc.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.05)
    raise TimeoutError("controller did not become ready")


def one_run(tree: Path, python: str, work: Path, extra: list[str], clients: int,
            rounds: int, window: float, profile: Path | None = None, gil: bool = False,
            backend: str = "sqlite") -> Run:
    d = Path(tempfile.mkdtemp(prefix="db-", dir=work))
    if backend == "postgres":
        with _pg_db() as url:
            return _one_run(tree, python, d, url, extra, clients, rounds, window, profile, gil)
    return _one_run(tree, python, d, f"sqlite:///{d}/ipam.db", extra, clients, rounds, window,
                    profile, gil)


def _backends_cpu_ms(db: str) -> dict[int, float]:
    """CPU so far of each PostgreSQL backend serving database `db` (same machine: /proc)."""
    import psycopg
    name = db.rpartition("/")[2]
    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"),
                         autocommit=True) as conn:
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))]
    return {pid: proc_cpu_ms(pid) for pid in pids}


def _one_run(tree: Path, python: str, d: Path, db: str, extra: list[str], clients: int,
             rounds: int, window: float, profile: Path | None, gil: bool) -> Run:
    load_avg = os.getloadavg()[0]
    proc, target = _start(tree, python, db, d / "controller.log", extra)
    try:
        _wait_ready(proc, target)
        _ipctl(tree, python, target, "pool", "create", "rate", "--policy", "dynamic",
               "--quarantine", "0")
        _ipctl(tree, python, target, "subnet", "create", "rate", "10.128.0.0/12")
        spy = None
        if profile is not None:   # py-spy's own sampling costs the controller a little
            spy = subprocess.Popen(["py-spy", "record", "-r", "200", "--nonblocking",
                                    "--format", "raw", *(["--gil"] if gil else []),
                                    "-o", str(profile), "-p", str(proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)   # attached before the load starts
        pg = db.startswith("postgresql")
        db0 = _backends_cpu_ms(db) if pg else {}
        cpu0, t0 = proc_cpu_ms(proc.pid), time.perf_counter()
        load = run_load(target, clients, 8, rounds=rounds, window=window, pool="rate")
        cpu, wall = proc_cpu_ms(proc.pid) - cpu0, time.perf_counter() - t0
        # Backends that left during the load are not counted (the pool keeps its own).
        db_cpu = (sum(v - db0.get(pid, 0.0) for pid, v in _backends_cpu_ms(db).items()
                      if v == v) if pg else float("nan"))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    allocs = load.alloc_per_s * rounds * window
    calls = 2 * allocs   # every allocation is released again within its round
    return Run(str(tree), load.alloc_per_s, load.rel_per_s, cpu / wall / 10,
               cpu / calls if calls else float("nan"), load.errors, load_avg,
               db_cpu / calls if calls else float("nan"))


def _rng(xs: list[float], fmt: str) -> str:
    return f"{min(xs):{fmt}}-{max(xs):{fmt}}" if len(xs) > 1 else f"{xs[0]:{fmt}}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", action="append", default=[], metavar="DIR",
                   help="a checkout whose controller to measure (repeat; default: this one)")
    p.add_argument("--python", action="append", default=[], metavar="EXE",
                   help="interpreter per --tree, in order (default: this one for all)")
    p.add_argument("--runs", type=int, default=3, help="interleaved runs per tree")
    p.add_argument("--clients", type=int, default=2, help="load client processes")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--window", type=float, default=2.0)
    p.add_argument("--controller-arg", action="append", default=[], metavar="ARG",
                   help="extra controller argument for every tree (repeat)")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                   help="the controllers' database (postgres: a scratch database per run)")
    p.add_argument("--py-spy", default="", metavar="DIR",
                   help="record each run's controller with py-spy (collapsed stacks, "
                        "DIR/<n>-<tree>.txt; py-spy on PATH)")
    p.add_argument("--py-spy-gil", action="store_true",
                   help="with --py-spy: sample only the thread holding the GIL")
    args = p.parse_args(argv)
    trees = [Path(t).resolve() for t in args.tree] or [Path(__file__).resolve().parents[2]]
    pythons = args.python or [sys.executable] * len(trees)
    if len(pythons) != len(trees):
        p.error("give one --python per --tree, or none")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="ecnet-alloc-cmp-") as work:
        for i in range(args.runs):
            for tree, py in zip(trees, pythons):
                prof = (Path(args.py_spy) / f"{i + 1}-{tree.name}.txt" if args.py_spy
                        else None)
                r = one_run(tree, py, Path(work), args.controller_arg, args.clients,
                            args.rounds, args.window, prof, args.py_spy_gil, args.backend)
                runs.append(r)
                print(f"  run {i + 1} {tree} (load {r.load_avg:.1f}): {r.alloc_per_s:.0f} alloc/s, "
                      f"{r.rel_per_s:.0f} rel/s, controller {r.cpu_pct:.0f} % of a core, "
                      f"{r.cpu_ms_per_call:.3f} ms CPU per call, database "
                      f"{r.db_cpu_ms_per_call:.3f}, {r.errors} errors",
                      file=sys.stderr, flush=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (at each run's start "
          f"{_rng([r.load_avg for r in runs], '.1f')}); {args.backend}; "
          f"{args.clients} clients x 8 in flight, "
          f"{args.rounds} rounds of {args.window:g}s, {args.runs} interleaved runs per tree")
    print(f"{'tree':40} {'alloc/s':>11} {'release/s':>11} {'ctl % core':>11} "
          f"{'CPU ms/call':>12} {'DB CPU ms/call':>15} {'errors':>6}")
    for tree in trees:
        mine = [r for r in runs if r.tree == str(tree)]
        print(f"{str(tree)[-40:]:40} {_rng([r.alloc_per_s for r in mine], '.0f'):>11} "
              f"{_rng([r.rel_per_s for r in mine], '.0f'):>11} "
              f"{_rng([r.cpu_pct for r in mine], '.0f'):>11} "
              f"{_rng([r.cpu_ms_per_call for r in mine], '.3f'):>12} "
              f"{_rng([r.db_cpu_ms_per_call for r in mine], '.3f'):>15} "
              f"{sum(r.errors for r in mine):>6}")


if __name__ == "__main__":
    main()
