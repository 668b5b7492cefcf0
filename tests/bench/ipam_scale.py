"""IPAM at scale, through the gRPC API: one /12 pool (1,048,574 addresses) at 1%, 50%, 90% and
99% occupancy, on SQLite and on PostgreSQL.

For each backend and fill level: the pool is filled directly in the store (tests.bench.bulk_fill,
the controller stopped), a fresh controller *process* is started and timed until it answers
(health SERVING) and until its first allocation, then several client processes x threads run
rounds through gRPC: every client allocates fresh pods until the round's window closes, then
releases all of them (so occupancy returns to the level between rounds). Reported: sustained
AllocatePort and ReleasePort throughput and per-call latency (p50/p99), the controller's RSS
afterwards.

    python -m tests.bench.ipam_scale                       # both backends, defaults
    python -m tests.bench.ipam_scale --backends sqlite --levels 1,99 --rounds 2

PostgreSQL: ECNET_TEST_PG_URL (default the local server); a scratch database is created and
dropped. Not a test: pytest never collects this module (no test_ names).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lab.helpers import free_port

CIDR = "10.0.0.0/12"
POOL = "bench"
LEVELS = (1, 50, 90, 99)
PG_URL = os.environ.get("ECNET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Row:
    backend: str
    level: int
    in_store: int
    ready_s: float
    first_alloc_s: float
    load: Load
    rss_mb: float


# ------------------------------------------------------------------ controller process
class ControllerProcess:
    """`ecnet-ipcontroller` as operators run it (default log level, logs to a file)."""

    def __init__(self, db: str, log_path: Path, workers: int | None,
                 extra: tuple[str, ...] = (), port: int = 0, root: Path = ROOT) -> None:
        self.port = port or free_port()   # a restart keeps its predecessor's port
        self.target = f"127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "ipcontroller.daemon", "--listen", self.target,
                "--db", db, *extra]
        if workers:
            args += ["--workers", str(workers)]
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        # `root`: the tree whose code runs (cwd comes first on sys.path): a bench may run
        # an older commit's controller under today's driver, side by side.
        self.proc = subprocess.Popen(args, cwd=root, stdout=self.log, stderr=self.log)

    def wait_ready(self, timeout: float = 30.0) -> float:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        deadline = time.perf_counter() + timeout
        with grpc.insecure_channel(self.target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"controller exited with {self.proc.returncode}")
                try:
                    r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.2)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - self.started
                except grpc.RpcError:
                    time.sleep(0.01)
        raise TimeoutError("controller did not become ready")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------- clients
def _alloc_req(pb: Any, cid: str, pool: str = POOL) -> Any:
    return pb.AllocateRequest(container_id=cid, ifname="eth0", node="bench-node", pool=pool,
                              pod=pb.PodRef(namespace="bench", name=cid, uid=f"uid-{cid}"))


def _client(target: str, tag: str, concurrency: int, rounds: int, window: float,
            barrier: Any, out: Any, pool: str = POOL) -> None:
    """One client process: `concurrency` calls in flight (asyncio: a load generator cheap
    enough to leave the CPU to the controller on a 2-core machine). Each round: allocate
    fresh container ids until the window closes, then release all of them."""
    import asyncio

    import grpc

    from ecnet_api.v1 import ecnet_pb2 as pb
    from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc

    async def main() -> None:
        async with grpc.aio.insecure_channel(target) as ch:
            stub = pb_grpc.IPControllerStub(ch)
            warm = f"{tag}-warm"
            await stub.AllocatePort(_alloc_req(pb, warm, pool))
            await stub.ReleasePort(pb.ReleaseRequest(container_id=warm, ifname="eth0"))
            allocs: list[float] = []
            rels: list[float] = []
            release_secs: list[float] = []
            errors = 0
            seq = 0
            async def allocator(prefix: str, end: float, done: list[str]) -> None:
                nonlocal seq, errors
                while time.perf_counter() < end:
                    seq += 1
                    cid = f"{prefix}-{seq}"
                    t0 = time.perf_counter()
                    try:
                        await stub.AllocatePort(_alloc_req(pb, cid, pool))
                    except grpc.RpcError:
                        errors += 1
                        continue
                    allocs.append(time.perf_counter() - t0)
                    done.append(cid)

            async def releaser(done: list[str]) -> None:
                nonlocal errors
                while done:
                    cid = done.pop()
                    t0 = time.perf_counter()
                    try:
                        await stub.ReleasePort(pb.ReleaseRequest(container_id=cid,
                                                                 ifname="eth0"))
                    except grpc.RpcError:
                        errors += 1
                        continue
                    rels.append(time.perf_counter() - t0)

            for r in range(rounds):
                barrier.wait()
                end = time.perf_counter() + window
                done: list[str] = []
                await asyncio.gather(*(allocator(f"{tag}-{r}", end, done)
                                       for _ in range(concurrency)))
                barrier.wait()
                t_rel = time.perf_counter()
                await asyncio.gather(*(releaser(done) for _ in range(concurrency)))
                release_secs.append(time.perf_counter() - t_rel)
            out.put((allocs, rels, release_secs, errors))

    asyncio.run(main())


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000


@dataclass
class Load:
    alloc_p50: float
    alloc_p99: float
    rel_p50: float
    rel_p99: float
    alloc_per_s: float
    rel_per_s: float
    errors: int


def run_load(target: str, clients: int, concurrency: int, rounds: int, window: float,
             pool: str = POOL) -> Load:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    barrier = ctx.Barrier(clients)
    tag = uuid.uuid4().hex[:8]
    procs = [ctx.Process(target=_client, args=(target, f"{tag}{c}", concurrency, rounds,
                                                window, barrier, out, pool))
             for c in range(clients)]
    for p in procs:
        p.start()
    allocs: list[float] = []
    rels: list[float] = []
    per_round = [0.0] * rounds
    errors = 0
    for _ in procs:
        a, r, secs, e = out.get(timeout=rounds * (window + 120))
        allocs += a
        rels += r
        errors += e
        per_round = [max(x, y) for x, y in zip(per_round, secs)]
    for p in procs:
        p.join()
    return Load(_pct(allocs, 50), _pct(allocs, 99), _pct(rels, 50), _pct(rels, 99),
                len(allocs) / (rounds * window), len(rels) / sum(per_round), errors)


# -------------------------------------------------------------------------- backends
@contextmanager
def _sqlite_db() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ecnet-bench-")
    try:
        yield f"sqlite:///{d}/ipam.db"
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def _pg_db() -> Iterator[str]:
    import psycopg
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"ecnet_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_backend(backend: str, db: str, args: argparse.Namespace, workdir: Path) -> list[Row]:
    from ipam import addr
    from ipam.service import IpamService
    from ipam.store.sql import SqlStore
    from tests.bench.bulk_fill import fill, used_count

    store = SqlStore(db)
    svc = IpamService(store)
    svc.create_pool(POOL, "dynamic", quarantine_seconds=0)
    subnet = svc.create_subnet(POOL, CIDR)
    total = addr.total_addresses(addr.parse_network(CIDR))
    rows = []
    for level in args.levels:
        t0 = time.perf_counter()
        target = total * level // 100
        fill(store, CIDR, target)
        in_store = used_count(store, subnet.id)
        print(f"  {backend} {level}%: {in_store} allocations in the store "
              f"(filled in {time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
        ctl = ControllerProcess(db, workdir / f"controller-{backend}.log", args.workers,
                                tuple(args.controller_arg))
        try:
            ready = ctl.wait_ready()
            first = _first_allocation(ctl)
            load = run_load(ctl.target, args.clients, args.concurrency, args.rounds,
                            args.window)
            rss = ctl.rss_mb()
        finally:
            ctl.stop()
        rows.append(Row(backend, level, in_store, ready, first, load, rss))
        print(f"  {_fmt(rows[-1])}", file=sys.stderr, flush=True)
    store.close()
    return rows


def _first_allocation(ctl: ControllerProcess) -> float:
    import grpc

    from ecnet_api.v1 import ecnet_pb2 as pb
    from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
    with grpc.insecure_channel(ctl.target) as ch:
        stub = pb_grpc.IPControllerStub(ch)
        cid = f"first-{uuid.uuid4().hex[:8]}"
        stub.AllocatePort(_alloc_req(pb, cid))
        took = time.perf_counter() - ctl.started
        stub.ReleasePort(pb.ReleaseRequest(container_id=cid, ifname="eth0"))
    return took


HEADER = ("backend  fill   in store  ready  1st alloc | alloc/s  p50 ms  p99 ms | release/s"
          "  p50 ms  p99 ms | errors  RSS MB")


def _fmt(r: Row) -> str:
    x = r.load
    return (f"{r.backend:<8} {r.level:>3}%  {r.in_store:>9,}  {r.ready_s:>4.2f}s  "
            f"{r.first_alloc_s:>8.2f}s | {x.alloc_per_s:>7.0f}  {x.alloc_p50:>6.2f}  "
            f"{x.alloc_p99:>6.2f} | {x.rel_per_s:>9.0f}  {x.rel_p50:>6.2f}  {x.rel_p99:>6.2f} | "
            f"{x.errors:>6}  {r.rss_mb:>6.0f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--levels", default=",".join(map(str, LEVELS)))
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--concurrency", type=int, default=8,
                   help="calls in flight per client process")
    p.add_argument("--rounds", type=int, default=3,
                   help="allocate-then-release rounds per fill level")
    p.add_argument("--window", type=float, default=2.0,
                   help="seconds each round allocates (then releases what it got)")
    p.add_argument("--workers", type=int, default=0, help="controller --workers (0: default)")
    p.add_argument("--controller-arg", action="append", default=[], metavar="ARG",
                   help="extra controller argument (repeat), e.g. --controller-arg=--log-level"
                        " --controller-arg=warning")
    args = p.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",")]
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ecnet-bench-logs-") as logs:
        for backend in args.backends.split(","):
            db_cm = _sqlite_db() if backend == "sqlite" else _pg_db()
            with db_cm as db:
                rows += bench_backend(backend, db, args, Path(logs))
    print(f"\n/12 pool ({CIDR}), {args.clients} client processes x {args.concurrency} calls in "
          f"flight, {args.rounds} rounds of {args.window:.0f}s allocating then releasing all, "
          f"{os.cpu_count()} CPUs shared by controller and clients.\nready: fresh controller "
          f"process until health SERVING; 1st alloc: until its first AllocatePort returned\n")
    print(HEADER)
    for r in rows:
        print(_fmt(r))
    for backend in args.backends.split(","):
        mine = [r for r in rows if r.backend == backend]
        lo = next((r for r in mine if r.level == min(args.levels)), None)
        hi = next((r for r in mine if r.level == max(args.levels)), None)
        if lo and hi and lo is not hi:
            print(f"{backend}: alloc p50 at {hi.level}% / at {lo.level}% = "
                  f"{hi.load.alloc_p50 / lo.load.alloc_p50:.2f}x")
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
