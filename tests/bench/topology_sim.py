"""The topology feed at scale: simulated agents (grpc.aio, a few processes) against one real
controller process, under a churn of pods, on WatchTopology, or on the GetTopology poll
the agents used before (the baseline of issue 14).

Per size (PORTS x AGENTS): a /12 pool is filled with synthetic ports directly in the store
(tests.bench.bulk_fill, the controller stopped); a controller process starts; every agent
gets one port of its own through AllocatePort (so every agent is relevant to the subnet);
the agents subscribe; the churn driver allocates CHURN pods/s (and releases as many once
a few seconds' worth exist) on random agents' nodes. Measured:

* convergence: from AllocatePort returning to the last of the agents having the entry
  (an agent's event that arrived before the call returned counts as 0), p50/p99;
* bytes per change (what all agents received in delta events, over allocations +
  releases) and the controller's CPU per change (its utime+stime over the churn window:
  the allocation's own work included), the controller's RSS, the largest message;
* the snapshot (bytes, seconds) for the agents that start from nothing; the others
  subscribe from the revision the first snapshot was at, as agents that already have
  the view do after a restart of their controller (1,000 fresh snapshots of 100k ports
  would measure the snapshot, not the watch);
* the time for all agents to resubscribe after a controller restart (SIGTERM, a new
  process on the same port): from the new process answering health until every agent
  has a port allocated right then.

Poll mode (``--mode poll``): each agent calls GetTopology(since_revision) every 0.5 s, as
the agents did, and "has the entry" when an answer lists it.

    python -m tests.bench.topology_sim --sizes 10000x100
    python -m tests.bench.topology_sim --sizes 10000x100,100000x1000 --seconds 20
    python -m tests.bench.topology_sim --sizes 10000x100 --mode poll

CPU layout: by default the controller, the agent processes and the churn driver share every
CPU (on a 2-core machine the simulated agents then take CPU the controller would have);
``--pin`` puts the controller on CPU 0 and everything else of the sim on the other CPUs, as
real agents run on other nodes. The table says which layout ran (and the load average).
On 2 cores the pinned agents and churn share one core and can fall behind: it models the
controller's side best with 3 or more.

Old against new: ``--controller-tree DIR`` runs the controller from another tree (an export
of an older commit with the same schema) under this driver, so both run interleaved:

    git -C /work/main archive 2cbe420 | tar -x -C /tmp/old
    python -m tests.bench.topology_sim --sizes 100000x1000 --pin --controller-tree /tmp/old

Replicas: ``--replicas N`` starts N controller processes on the same database and spreads
the agent processes over them (the churn goes to the first; each replica's tailer follows
the others' commits through the log), as a cluster spreads its agents over replicas.

PostgreSQL: ``--backend postgres`` (ECNET_TEST_PG_URL, a scratch database is created and
dropped). Not a test: pytest never collects this module.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.ipam_scale import ROOT, ControllerProcess, _pct, _pg_db, _sqlite_db

CIDR = "10.0.0.0/12"
POOL = "sim"
CHURN_TAG = 0x51A1          # churn port ids start with "51a1" (uuid4 with a fixed top)
BIG = 64 * 1024 * 1024      # the sim's own receive limit: it reports the largest message
CHANNEL_OPTS = [("grpc.max_receive_message_length", BIG)]


def churn_id(run: int, seq: int) -> str:
    return str(uuid.UUID(int=(CHURN_TAG << 112) | (run << 40) | seq, version=4))


def is_churn(port_id: str) -> bool:
    return port_id.startswith("51a1")


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` on `cpus` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except ProcessLookupError:    # a thread that just ended
            pass


def layout(args: argparse.Namespace) -> tuple[set[int], set[int]] | None:
    """(the controller's CPUs, the rest of the sim's) under ``--pin``; None unpinned. Read
    once (`main` pins this process to the rest)."""
    if not args.pin:
        return None
    if getattr(args, "layout", None) is None:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin needs at least 2 CPUs")
        args.layout = ({cpus[0]}, set(cpus[1:]))
    return args.layout  # type: ignore[no-any-return]


def layout_text(args: argparse.Namespace) -> str:
    lay = layout(args)
    if lay is None:
        return f"unpinned: {os.cpu_count()} CPUs shared by the controller and the agents"
    ctl, rest = lay
    return (f"pinned: controller on CPU {','.join(map(str, sorted(ctl)))}, agents and churn "
            f"on CPU {','.join(map(str, sorted(rest)))}")


def _own_cpu_seconds() -> float:
    """This process's CPU (the churn driver's, with the fills' threads idle by then)."""
    t = os.times()
    return t.user + t.system


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------ agents
@dataclass
class AgentStats:
    """One agent process's totals (summed over its agents)."""

    delta_bytes: int = 0
    snapshot_bytes: int = 0
    snapshot_s: list[float] = field(default_factory=list)
    largest: int = 0
    events: int = 0
    streams: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)   # code -> its first detail
    # churn port id -> [agents that have it, latest arrival (monotonic)]
    arrivals: dict[str, list[float]] = field(default_factory=dict)


def note(st: AgentStats, err: Any) -> None:
    key = err.code().name
    st.errors[key] = st.errors.get(key, 0) + 1
    st.details.setdefault(key, str(err.details())[:120])


def _agent_proc(target: str, mode: str, names: list[str], fresh: int, from_revision: Any,
                ready: Any, cmds: Any, out: Any, interval: float,
                cpus: set[int] | None) -> None:
    """``fresh`` of ``names`` start from revision 0 (a snapshot), the rest from
    ``from_revision`` (an mp.Value set by the parent once a snapshot is in)."""
    if cpus:
        os.sched_setaffinity(0, cpus)     # before grpc starts any thread
    import grpc

    from datapath.watch import backoff_delay
    from ecnet_api.v1 import ecnet_pb2 as pb
    from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc

    st = AgentStats()
    markers: dict[str, asyncio.Event] = {}
    n = len(names)

    def seen(pid: str, now: float) -> None:
        a = st.arrivals.get(pid)
        if a is None:
            a = st.arrivals[pid] = [0, 0.0]
        a[0] += 1
        a[1] = max(a[1], now)
        if a[0] >= n and pid in markers:
            markers[pid].set()

    async def watcher(name: str, start_from: int, first: asyncio.Event) -> None:
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTS) as ch:
            stub = pb_grpc.IPControllerStub(ch)
            resume, attempt, t0, in_snapshot = start_from, 0, time.monotonic(), False
            while True:
                try:
                    st.streams += 1
                    call = stub.WatchTopology(pb.WatchTopologyRequest(node=name,
                                                                      from_revision=resume))
                    async for ev in call:
                        now = time.monotonic()
                        attempt = 0
                        size = ev.ByteSize()
                        st.events += 1
                        st.largest = max(st.largest, size)
                        in_snapshot = in_snapshot or ev.reset
                        if in_snapshot:
                            st.snapshot_bytes += size
                        else:
                            st.delta_bytes += size
                            for c in ev.changes:
                                if c.WhichOneof("change") == "port" and is_churn(c.port.port_id):
                                    seen(c.port.port_id, now)
                        if ev.complete:
                            if in_snapshot:
                                st.snapshot_s.append(now - t0)
                            in_snapshot = False
                            resume = ev.revision
                            first.set()
                except grpc.aio.AioRpcError as err:
                    note(st, err)
                in_snapshot = False
                await asyncio.sleep(backoff_delay(attempt, 0.25, 5.0))
                attempt += 1

    async def poller(name: str, first: asyncio.Event) -> None:
        async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTS) as ch:
            stub = pb_grpc.IPControllerStub(ch)
            rev = 0
            have: set[str] = set()
            await asyncio.sleep(random.random() * interval)   # agents are not in phase
            while True:
                t = time.monotonic()
                try:
                    resp = await stub.GetTopology(pb.TopologyRequest(node=name,
                                                                     since_revision=rev))
                    now = time.monotonic()
                    size = resp.ByteSize()
                    st.events += 1
                    st.largest = max(st.largest, size)
                    if rev == 0:
                        st.snapshot_bytes += size
                        st.snapshot_s.append(now - t)
                    else:
                        st.delta_bytes += size
                    if not resp.unchanged:
                        rev = resp.revision
                        ids = {p.port_id for p in resp.ports if is_churn(p.port_id)}
                        for pid in ids - have:
                            seen(pid, now)
                        have = ids
                    first.set()
                except grpc.aio.AioRpcError as err:
                    note(st, err)
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - t)))

    async def main() -> None:
        firsts = [asyncio.Event() for _ in names]
        tasks = []
        for i, name in enumerate(names):
            if mode == "poll":
                tasks.append(asyncio.create_task(poller(name, firsts[i])))
                continue
            if i >= fresh:
                while from_revision.value < 0:
                    await asyncio.sleep(0.05)
            start = 0 if i < fresh else int(from_revision.value)
            tasks.append(asyncio.create_task(watcher(name, start, firsts[i])))
        for f in firsts:
            await f.wait()
        ready.put(1)
        loop = asyncio.get_running_loop()
        while True:
            cmd = await loop.run_in_executor(None, cmds.get)
            if cmd[0] == "marker":
                ev = markers.setdefault(cmd[1], asyncio.Event())
                if st.arrivals.get(cmd[1], [0])[0] >= n:
                    ev.set()
                try:
                    await asyncio.wait_for(ev.wait(), timeout=cmd[2])
                    out.put(("marker", st.arrivals[cmd[1]][1]))
                except TimeoutError:
                    out.put(("marker", None))
            elif cmd[0] == "report":
                out.put(("report", st))
            else:
                break
        for t in tasks:
            t.cancel()

    asyncio.run(main())


class Agents:
    """The agent processes and their pipes."""

    def __init__(self, targets: list[str], mode: str, names: list[str], procs: int,
                 fresh: int, interval: float, cpus: set[int] | None = None) -> None:
        """Agent process i follows replica ``targets[i % len(targets)]``."""
        ctx = mp.get_context("spawn")
        self.from_revision = ctx.Value("q", -1)
        self.ready = ctx.Queue()
        self.cmds = [ctx.Queue() for _ in range(procs)]
        self.outs = [ctx.Queue() for _ in range(procs)]
        chunks = [names[i::procs] for i in range(procs)]
        fresh_per = [fresh // procs + (1 if i < fresh % procs else 0) for i in range(procs)]
        self.procs = [ctx.Process(target=_agent_proc, args=(
            targets[i % len(targets)], mode, chunks[i], fresh_per[i], self.from_revision,
            self.ready, self.cmds[i], self.outs[i], interval, cpus)) for i in range(procs)]
        for p in self.procs:
            p.start()

    def wait_ready(self, timeout: float) -> None:
        for _ in self.procs:
            self.ready.get(timeout=timeout)

    def marker(self, pid: str, timeout: float) -> float | None:
        """The latest arrival of ``pid`` over all agents; None if some never got it."""
        for q in self.cmds:
            q.put(("marker", pid, timeout))
        got = [o.get(timeout=timeout + 30)[1] for o in self.outs]
        return None if any(g is None for g in got) else max(got)

    def report(self) -> list[AgentStats]:
        for q in self.cmds:
            q.put(("report",))
        return [o.get(timeout=120)[1] for o in self.outs]

    def stop(self) -> None:
        for q in self.cmds:
            q.put(("stop",))
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()


# ------------------------------------------------------------------------- churn
def _alloc(pb: Any, run: int, seq: int, node: str) -> Any:
    cid = f"sim-{run}-{seq}"
    return pb.AllocateRequest(container_id=cid, ifname="eth0", node=node, pool=POOL,
                              port_id=churn_id(run, seq),
                              pod=pb.PodRef(namespace="sim", name=cid, uid=f"uid-{cid}"))


async def _churn(targets: list[str], run: int, nodes: list[str], rate: float, seconds: float,
                 first_seq: int, home: list[int] | None = None
                 ) -> tuple[dict[str, float], int, int, int]:
    """Allocations at ``rate``/s for ``seconds`` (each on a random node), and as many
    releases of the oldest once ``2 * rate`` churn pods exist; node i's calls go to
    ``targets[home[i]]`` (the replica its agent follows). Returns port id -> when
    AllocatePort returned, allocations, releases, errors."""
    import grpc

    from ecnet_api.v1 import ecnet_pb2 as pb
    from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc

    returned: dict[str, float] = {}
    live: list[tuple[int, int]] = []
    counts = {"alloc": 0, "release": 0, "errors": 0}
    codes: dict[str, str] = {}
    routes = home or [0] * len(nodes)
    channels = [grpc.aio.insecure_channel(t) for t in targets]
    try:
        stubs = [pb_grpc.IPControllerStub(ch) for ch in channels]

        async def allocate(seq: int) -> None:
            i = random.randrange(len(nodes))
            try:
                await stubs[routes[i]].AllocatePort(_alloc(pb, run, seq, nodes[i]))
                returned[churn_id(run, seq)] = time.monotonic()
                counts["alloc"] += 1
                live.append((seq, routes[i]))
            except grpc.aio.AioRpcError as err:
                counts["errors"] += 1
                codes.setdefault(err.code().name, str(err.details())[:120])

        async def release(seq_home: tuple[int, int]) -> None:
            seq, at = seq_home
            try:
                await stubs[at].ReleasePort(pb.ReleaseRequest(container_id=f"sim-{run}-{seq}",
                                                              ifname="eth0"))
                counts["release"] += 1
            except grpc.aio.AioRpcError as err:
                counts["errors"] += 1
                codes.setdefault(err.code().name, str(err.details())[:120])

        tasks = []
        start = time.monotonic()
        seq = first_seq
        while (elapsed := time.monotonic() - start) < seconds:
            tasks.append(asyncio.create_task(allocate(seq)))
            seq += 1
            if len(live) > 2 * rate:
                tasks.append(asyncio.create_task(release(live.pop(0))))
            await asyncio.sleep(max(0.0, (seq - first_seq) / rate - elapsed))
        await asyncio.gather(*tasks)
    finally:
        for ch in channels:
            await ch.close()
    if codes:
        log(f"  churn RPC errors: {codes}")
    return returned, counts["alloc"], counts["release"], counts["errors"]


async def _allocate_each(target: str, run: int, nodes: list[str], first_seq: int) -> float:
    """One port per node (so every agent has a port in the subnet); returns when the last
    one returned. Concurrency 32."""
    import grpc

    from ecnet_api.v1 import ecnet_pb2 as pb
    from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
    async with grpc.aio.insecure_channel(target) as ch:
        stub = pb_grpc.IPControllerStub(ch)
        sem = asyncio.Semaphore(32)

        async def one(i: int, node: str) -> None:
            async with sem:
                await stub.AllocatePort(_alloc(pb, run, first_seq + i, node))
        await asyncio.gather(*(one(i, n) for i, n in enumerate(nodes)))
    return time.monotonic()


# -------------------------------------------------------------------------- run
@dataclass
class Result:
    ports: int
    agents: int
    mode: str
    in_store: int
    allocs: int
    releases: int
    errors: int
    p50_ms: float
    p99_ms: float
    missing: int
    bytes_per_change: float
    cpu_ms_per_change: float
    rss_mb: float
    largest: int
    snapshot_mb: float
    snapshot_s: float
    resubscribe_s: float | None
    stream_errors: dict[str, int]
    # Cores used over the churn window by the controller, the agent processes and this
    # driver: when they add up to the machine's, convergence measures the machine.
    cores: tuple[float, float, float] = (0.0, 0.0, 0.0)


def run_size(ports: int, agents: int, args: argparse.Namespace, db: str,
             logs: Path) -> Result:
    from ipam.domain import Node
    from ipam.service import IpamService
    from ipam.store.sql import SqlStore
    from tests.bench.bulk_fill import fill, used_count

    run = random.randrange(1 << 20)
    nodes = [f"sim-{i:05d}" for i in range(agents)]
    store = SqlStore(db)
    svc = IpamService(store)
    svc.create_pool(POOL, "dynamic", quarantine_seconds=0)
    subnet = svc.create_subnet(POOL, CIDR)
    t0 = time.perf_counter()
    fill(store, CIDR, max(0, ports - agents))
    in_store = used_count(store, subnet.id)
    # Registered, as agents register themselves: the leak sweep then finds no gone node
    # (with unregistered nodes it would read 10,000 ports a pass, a cost no cluster has).
    for name in ("bench", *nodes):
        svc.register_node(Node(name, ""))
    store.close()
    log(f"{ports}x{agents} {args.mode}: {in_store} ports filled in "
        f"{time.perf_counter() - t0:.1f}s")
    # The nodes never heartbeat here: --node-gone-seconds (600) is longer than a run, and
    # the grace keeps the sweep from reclaiming anything if a run takes longer.
    extra = ("--leak-grace-seconds", "86400", *args.controller_arg)
    lay = layout(args)
    tree = Path(args.controller_tree) if args.controller_tree else ROOT
    ctl = ControllerProcess(db, logs / "controller.log", args.workers, extra, root=tree)
    if lay:
        pin(ctl.proc.pid, lay[0])     # at once (its threads inherit), and again when up
    ctl.wait_ready(timeout=120)
    if lay:
        pin(ctl.proc.pid, lay[0])
    # Watch-only replicas: the agent processes are spread over them; the churn goes to the
    # first. Their tailers hear its commits by NOTIFY on PostgreSQL, a 50 ms poll on SQLite.
    others = [ControllerProcess(db, logs / f"controller-{k}.log", args.workers, extra,
                                root=tree) for k in range(1, args.replicas)]
    for o in others:
        if lay:
            pin(o.proc.pid, lay[0])
        o.wait_ready(timeout=120)
        if lay:
            pin(o.proc.pid, lay[0])
    asyncio.run(_allocate_each(ctl.target, run, nodes, 0))
    in_store += agents
    ag = Agents([ctl.target, *(o.target for o in others)], args.mode, nodes,
                args.agent_procs, args.fresh_agents, args.interval, lay[1] if lay else None)
    try:
        if args.mode == "watch":
            # the snapshot's revision, for the agents that "already have the view": what
            # the last setup allocation's marker reaches the fresh agents at is good
            # enough, since they resume from there and get every later change
            ag.from_revision.value = _current_revision(ctl.target)
        ag.wait_ready(timeout=args.timeout)
        log("  agents subscribed")
        cpu0 = sum(cpu_seconds(c.proc.pid) for c in (ctl, *others))
        agents0 = sum(cpu_seconds(p.pid) for p in ag.procs if p.pid is not None)
        driver0, wall0 = _own_cpu_seconds(), time.monotonic()
        before = ag.report()
        targets = [ctl.target, *(o.target for o in others)]
        # Node i is followed by agent process i % procs, which follows replica (that) % R:
        # its pods' calls go there too, as an agent calls the replica it watches.
        home = [(i % args.agent_procs) % len(targets) for i in range(len(nodes))]
        returned, allocs, releases, errors = asyncio.run(_churn(
            targets, run, nodes, args.churn, args.seconds, agents, home))
        # everything committed before this marker arrives before it (streams are ordered)
        marker_seq = 10**9
        asyncio.run(_allocate_each(ctl.target, run, [nodes[0]], marker_seq))
        ag.marker(churn_id(run, marker_seq), timeout=args.timeout)
        cpu = sum(cpu_seconds(c.proc.pid) for c in (ctl, *others)) - cpu0
        wall = max(1e-9, time.monotonic() - wall0)
        split = (cpu / wall,
                 (sum(cpu_seconds(p.pid) for p in ag.procs if p.pid is not None) - agents0)
                 / wall, (_own_cpu_seconds() - driver0) / wall)
        rss = max(c.rss_mb() for c in (ctl, *others))
        after = ag.report()
        lat, missing = [], 0
        merged: dict[str, list[float]] = {}
        for s in after:
            for pid, (count, latest) in s.arrivals.items():
                m = merged.setdefault(pid, [0, 0.0])
                m[0] += count
                m[1] = max(m[1], latest)
        for pid, t_ret in returned.items():
            m = merged.get(pid)
            if m is None or m[0] < agents:
                missing += 1
                continue
            lat.append(max(0.0, m[1] - t_ret))
        changes = max(1, allocs + releases)
        delta_bytes = (sum(s.delta_bytes for s in after) - sum(s.delta_bytes for s in before))
        snaps = [x for s in after for x in s.snapshot_s]
        resub = None
        if args.restart and args.mode == "watch" and not others:
            port = ctl.port
            ctl.stop()
            ctl = ControllerProcess(db, logs / "controller.log", args.workers, extra, port,
                                    root=tree)
            if lay:
                pin(ctl.proc.pid, lay[0])
            ctl.wait_ready(timeout=120)
            if lay:
                pin(ctl.proc.pid, lay[0])
            up = time.monotonic()
            asyncio.run(_allocate_each(ctl.target, run, [nodes[0]], marker_seq + 1))
            got = ag.marker(churn_id(run, marker_seq + 1), timeout=args.timeout)
            resub = None if got is None else got - up
        final = ag.report()
        errs: dict[str, int] = {}
        for s in final:
            for k, v in s.errors.items():
                errs[k] = errs.get(k, 0) + v
            for k, d in s.details.items():
                log(f"  stream error {k}: {d}")
        return Result(
            ports=ports, agents=agents, mode=args.mode, in_store=in_store, allocs=allocs,
            releases=releases, errors=errors, p50_ms=_pct(lat, 50), p99_ms=_pct(lat, 99),
            missing=missing, bytes_per_change=delta_bytes / changes,
            cpu_ms_per_change=cpu * 1000 / changes, rss_mb=rss,
            largest=max(s.largest for s in final),
            snapshot_mb=sum(s.snapshot_bytes for s in after) / max(1, len(snaps)) / 1e6,
            snapshot_s=max(snaps) if snaps else float("nan"), resubscribe_s=resub,
            stream_errors=errs, cores=split)
    finally:
        ag.stop()
        ctl.stop()
        for o in others:
            o.stop()


def _current_revision(target: str) -> int:
    """Where a watch that wants no snapshot starts: the revision of a fresh watch's first
    complete event."""
    import grpc

    from ecnet_api.v1 import ecnet_pb2 as pb
    from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
    with grpc.insecure_channel(target, options=CHANNEL_OPTS) as ch:
        call = pb_grpc.IPControllerStub(ch).WatchTopology(
            pb.WatchTopologyRequest(node="sim-probe", from_revision=0))
        for ev in call:
            if ev.complete:
                call.cancel()
                return int(ev.revision)
    raise RuntimeError("the watch ended before a complete event")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


HEADER = ("mode   ports    agents | changes | converge p50  p99 ms  missing | bytes/change "
          "ctl CPU ms/change | ctl RSS MB | largest msg | snapshot MB  s | resubscribe s")


def fmt(r: Result) -> str:
    resub = "-" if r.resubscribe_s is None else f"{r.resubscribe_s:.2f}"
    return (f"{r.mode:<6} {r.ports:>7,} {r.agents:>6} | {r.allocs + r.releases:>7} | "
            f"{r.p50_ms:>12.1f} {r.p99_ms:>7.1f} {r.missing:>8} | {r.bytes_per_change:>12,.0f} "
            f"{r.cpu_ms_per_change:>17.2f} | {r.rss_mb:>10.0f} | {r.largest:>11,} | "
            f"{r.snapshot_mb:>11.2f} {r.snapshot_s:>4.1f} | {resub:>13}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000x100,100000x1000", help="PORTSxAGENTS,...")
    p.add_argument("--mode", choices=["watch", "poll"], default="watch")
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--churn", type=float, default=100.0, help="pods per second")
    p.add_argument("--seconds", type=float, default=10.0, help="churn window")
    p.add_argument("--agent-procs", type=int, default=2)
    p.add_argument("--replicas", type=int, default=1,
                   help="controller processes serving the watches (the agent processes "
                        "spread over them; the churn goes to the first; no restart "
                        "measured with more than one); use --backend postgres")
    p.add_argument("--fresh-agents", type=int, default=2,
                   help="agents that start from nothing (a snapshot); the rest resume")
    p.add_argument("--interval", type=float, default=0.5, help="poll mode: seconds")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--no-restart", dest="restart", action="store_false")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--controller-arg", action="append", default=[], metavar="ARG")
    p.add_argument("--logs", default="", help="keep the controller's log in this directory")
    p.add_argument("--controller-tree", default="", metavar="DIR",
                   help="run the controller from this source tree (an export of another "
                        "commit, same schema), to compare it side by side")
    p.add_argument("--pin", action="store_true",
                   help="controller on CPU 0, agents and churn on the other CPUs")
    args = p.parse_args(argv)
    lay = layout(args)
    if lay:
        os.sched_setaffinity(0, lay[1])    # this process (the churn driver) and the fills
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ecnet-topo-sim-") as tmp:
        logs = args.logs or tmp
        Path(logs).mkdir(parents=True, exist_ok=True)
        for size in args.sizes.split(","):
            ports, agents = (int(x) for x in size.split("x"))
            with (_sqlite_db() if args.backend == "sqlite" else _pg_db()) as db:
                rows.append(run_size(ports, agents, args, db, Path(logs)))
            log(fmt(rows[-1]))
    print(f"\n{args.backend}, churn {args.churn:.0f} pods/s for {args.seconds:.0f}s "
          f"(allocations + releases), {args.agent_procs} agent processes, "
          f"{args.replicas} controller replica(s); "
          f"controller from {args.controller_tree or ROOT}; "
          f"{layout_text(args)}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
          f"\n")
    print(HEADER)
    for r in rows:
        print(fmt(r))
        ctl_c, agents_c, driver_c = r.cores
        print(f"  cores used during the churn: controller {ctl_c:.2f}, agents "
              f"{agents_c:.2f}, churn driver {driver_c:.2f}; {ctl_c + agents_c + driver_c:.2f} "
              f"of {os.cpu_count()}")
        if r.stream_errors or r.errors:
            print(f"  stream errors {r.stream_errors}, churn RPC errors {r.errors}")
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
