"""`ecnet-ipcontroller`: the central IP controller daemon.

Start-up does no scan of the store (no in-memory authority to rebuild, see peers.md on
Kube-OVN's 200 s rebuilds): migrate, open the gRPC port, report SERVING.

The gRPC servers are grpc.aio on one event loop in a thread of its own (ipcontroller.calls
says why): the watch streams and health are coroutines there, the unary handlers run on
`--workers` threads.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2
from sqlalchemy.exc import SQLAlchemyError

from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipam.errors import IpamError
from ipam.service import IpamService
from ipam.store import open_store

from . import logconfig
from .admission import AdmissionInterceptor
from .authz import AuthzInterceptor
from .calls import LoopThread, WorkerPool, WrapOnce
from .listeners import (
    TlsFiles,
    add_health,
    add_listener,
    is_loopback,
    is_unix,
    plaintext_refusal,
)
from .secrets import redact_url, warn_if_exposed
from .servicer import IPAdminServicer, IPControllerServicer
from .watch import WatchService, WatchSettings, WireInterceptor

log = logging.getLogger("ipcontroller")

DEFAULT_DB = "sqlite:////var/lib/ecnet/ipam.db"
# What start-up fails with when the environment, not the code, is wrong: a port taken, a
# directory or secret missing, the database unreachable or refusing, its driver not installed.
# Anything else is a bug and keeps its traceback.
STARTUP_ERRORS: tuple[type[Exception], ...] = (OSError, ImportError, SQLAlchemyError, IpamError)


@dataclass(frozen=True)
class DaemonSettings:
    """Read once at start and validated, so a bad flag fails before we listen."""

    listen: str
    db: str
    metrics_listen: str
    onos_url: str
    onos_user: str
    onos_password_file: str
    onos_timeout: float
    onos_resync_interval: float
    heartbeat_seconds: int
    sweep_interval: float
    workers: int
    log_level: str
    holder: str
    onos_lease_ttl: float = 15.0
    onos_max_backoff: float = 30.0
    tls: TlsFiles | None = None
    insecure: bool = False
    socket_group: str = ""
    health_listen: str = ""
    leak_grace_seconds: float = 60.0
    node_gone_seconds: float = 600.0
    leak_sweep_interval: float = 10.0
    onos_outbox_cap: int = 100_000
    max_concurrent_rpcs: int = 256
    onos_dead_letter_after: int = 5
    db_check_interval: float = 2.0
    max_watchers: int = 1024
    change_log_keep: int = 100_000
    watch_batch_max_ms: float = 100.0


# Unary-call worker threads by database (--workers 0, the default).
SQLITE_WORKERS = 4
PG_WORKERS = 16


def pool_size_for(workers: int) -> int:
    """Pooled database connections for `workers` unary-call threads: one each, and room for
    the sweeps, the watch's tailer, the ONOS sync and the health check."""
    return max(8, workers + 4)


def parse_args(argv: list[str] | None = None) -> DaemonSettings:
    p = argparse.ArgumentParser(prog="ecnet-ipcontroller", description=__doc__)
    p.add_argument("--listen", default=os.environ.get("ECNET_LISTEN", "127.0.0.1:7400"),
                   help="gRPC listen addresses, comma-separated: HOST:PORT or unix:PATH "
                        "(a unix socket reaches agents in other network namespaces)")
    p.add_argument("--db", default=os.environ.get("ECNET_DB", DEFAULT_DB),
                   help="SQLAlchemy URL (default: a SQLite file under /var/lib/ecnet)")
    p.add_argument("--metrics-listen", default="",
                   help="HOST:PORT for Prometheus metrics (off by default)")
    p.add_argument("--onos-url", default="", help="ONOS base URL; no sync without it")
    p.add_argument("--onos-user", default="onos")
    p.add_argument("--onos-password-file", default="",
                   help="file holding the ONOS password (else $ECNET_ONOS_PASSWORD)")
    p.add_argument("--onos-timeout", type=float, default=5.0, help="seconds per ONOS call")
    p.add_argument("--onos-resync-interval", type=float, default=300.0,
                   help="seconds between full resyncs of the store to ONOS (0 = never)")
    p.add_argument("--onos-lease-ttl", type=float, default=15.0,
                   help="seconds the ONOS sync lease outlives its holder: how long the other "
                        "replicas wait before one takes over from a dead holder")
    p.add_argument("--onos-max-backoff", type=float, default=30.0,
                   help="longest pause between retries while ONOS is unreachable: the "
                        "worst-case delay before the backlog moves once ONOS is back")
    p.add_argument("--onos-outbox-cap", type=int, default=100_000,
                   help="outbox rows kept while ONOS is behind; beyond it the port rows are "
                        "dropped for a full resync (0 = no cap)")
    p.add_argument("--onos-dead-letter-after", type=int, default=5,
                   help="rejections after which an outbox row moves to the dead letters "
                        "(`ipctl sync dead-letters`) and stops blocking its object "
                        "(0 = never: retried every --onos-max-backoff)")
    p.add_argument("--heartbeat-seconds", type=int, default=10)
    p.add_argument("--sweep-interval", type=float, default=1.0)
    p.add_argument("--leak-grace-seconds", type=float, default=60.0,
                   help="the ports of a gone node are released when two sweeps this far "
                        "apart both found the node gone (two observations, Calico's rule)")
    p.add_argument("--leak-sweep-interval", type=float, default=10.0,
                   help="seconds between looks for the ports of gone nodes (each look reads "
                        "every active port, so less often than the 1 s sweep)")
    p.add_argument("--node-gone-seconds", type=float, default=600.0,
                   help="a node silent (no heartbeat) this long (at least 6 heartbeats) is "
                        "gone and its ports are released by policy; 0 = only nodes deleted "
                        "with `ipctl node delete`")
    # Few on SQLite: the server is bound by one interpreter lock, and every extra runnable
    # thread makes each call slower (context switches, lock handoffs). Measured on 2 cores
    # through gRPC, allocations/s with 16 concurrent clients: 16 workers ~1,550 (SQLite),
    # 4 workers ~2,200 (sync server, 2026-11-29). On PostgreSQL a worker waits on the
    # server's answers and the group commit's batches are as large as the workers allow:
    # 16 workers gave a median ~476 allocations/s against ~345 with 4 (6 runs each,
    # 2026-12-01, docs/performance.md "The pod path's round trips on PostgreSQL").
    # Requests beyond the workers queue, they are not refused.
    p.add_argument("--workers", type=int, default=0,
                   help="threads running the unary gRPC calls (streams need none); default "
                        f"{SQLITE_WORKERS}, or {PG_WORKERS} on PostgreSQL")
    p.add_argument("--max-concurrent-rpcs", type=int, default=256,
                   help="requests running or queued for a worker; beyond it a caller gets "
                        "RESOURCE_EXHAUSTED at once instead of an unbounded queue")
    p.add_argument("--max-watchers", type=int, default=1024,
                   help="WatchTopology streams this replica serves at once (each a coroutine "
                        "on the server's event loop, no thread); beyond it an agent is "
                        "refused with UNAVAILABLE and retries, on this replica or another")
    p.add_argument("--change-log-keep", type=int, default=100_000,
                   help="newest topology change-log rows kept; an agent whose revision is "
                        "older gets a snapshot when it reconnects")
    p.add_argument("--watch-batch-max-ms", type=float, default=100.0,
                   help="bound of the change-log tailer's batching window (10 ms + 0.05 ms "
                        "per watcher, at most this): smaller, a change reaches agents "
                        "sooner; larger, the controller sends fewer messages per change")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--holder", default=f"{os.uname().nodename}:{os.getpid()}",
                   help="this replica's name for the ONOS sync lease")
    p.add_argument("--tls-cert", default="", metavar="FILE",
                   help="the controller's TLS certificate (PEM): TCP listeners then take "
                        "only clients with a certificate signed by --tls-client-ca")
    p.add_argument("--tls-key", default="", metavar="FILE", help="its private key (PEM, 0600)")
    p.add_argument("--tls-client-ca", default="", metavar="FILE",
                   help="CA (PEM) that signs client certificates: CN admin:<name> for ipctl, "
                        "node:<name> for agents")
    p.add_argument("--insecure", action="store_true",
                   help="allow plaintext, unauthenticated gRPC on a non-loopback TCP address")
    p.add_argument("--health-listen", default="",
                   help="plaintext HOST:PORT[,...] for probes (kubelet's gRPC probe has no TLS): "
                        "a server of its own that serves the health service alone (health "
                        "runs on the servers' event loop, not on a worker, so it answers "
                        "even while every worker waits on the database)")
    p.add_argument("--db-check-interval", type=float, default=2.0,
                   help="seconds between the database checks behind the health service "
                        "ecnet.v1.IPController (NOT_SERVING while the database does not "
                        "answer: the readiness probe); \"\" (liveness) stays SERVING")
    p.add_argument("--socket-group", default="",
                   help="group of the unix sockets in --listen (mode 0660; its members are "
                        "trusted as admin)")
    a = p.parse_args(argv)
    tls_given = [bool(a.tls_cert), bool(a.tls_key), bool(a.tls_client_ca)]
    if any(tls_given) and not all(tls_given):
        p.error("--tls-cert, --tls-key and --tls-client-ca go together")
    tls = TlsFiles(a.tls_cert, a.tls_key, a.tls_client_ca) if all(tls_given) else None
    health = [h for h in a.health_listen.split(",") if h]
    for addr in health:
        if is_unix(addr) or not addr.rpartition(":")[2].isdigit():
            p.error(f"--health-listen takes HOST:PORT, got {addr!r}")
    refusal = plaintext_refusal(a.listen.split(",") + health, tls is not None, a.insecure)
    if refusal:
        p.error(refusal)
    if a.leak_grace_seconds < 0 or a.node_gone_seconds < 0 or a.leak_sweep_interval <= 0:
        p.error("--leak-grace-seconds and --node-gone-seconds must be >= 0, "
                "--leak-sweep-interval > 0")
    for addr in a.listen.split(","):
        if ":" not in addr:
            p.error(f"--listen takes HOST:PORT or unix:PATH, got {addr!r}")
    if a.metrics_listen and not a.metrics_listen.rpartition(":")[2].isdigit():
        p.error(f"--metrics-listen takes HOST:PORT, got {a.metrics_listen!r}")
    if a.onos_password_file and not Path(a.onos_password_file).is_file():
        p.error(f"--onos-password-file {a.onos_password_file}: no such file")
    if a.max_concurrent_rpcs < 1:
        p.error("--max-concurrent-rpcs must be >= 1")
    if not 0.1 <= a.db_check_interval <= 300:
        p.error("--db-check-interval must be in 0.1..300")
    if a.max_watchers < 1 or a.change_log_keep < 1:
        p.error("--max-watchers and --change-log-keep must be >= 1")
    if not 0 <= a.watch_batch_max_ms <= 1000:
        p.error("--watch-batch-max-ms must be in 0..1000")
    if a.onos_outbox_cap < 0 or a.onos_dead_letter_after < 0:
        p.error("--onos-outbox-cap and --onos-dead-letter-after must be >= 0")
    if a.onos_timeout <= 0 or a.onos_max_backoff <= 0 or a.onos_resync_interval < 0:
        p.error("--onos-timeout and --onos-max-backoff must be > 0, "
                "--onos-resync-interval >= 0")
    # The holder renews its lease between ONOS calls, not during one: a lease shorter than a
    # few calls could expire under a slow call and let a second replica drain concurrently.
    # It also outlasts the 2 x timeout a timed-out call is given to land in ONOS, which the
    # new holder cannot know about (ipam.onos.sync, "settle").
    if a.onos_url and a.onos_lease_ttl < 3 * a.onos_timeout:
        p.error(f"--onos-lease-ttl ({a.onos_lease_ttl:g}s) must be at least 3 x "
                f"--onos-timeout ({a.onos_timeout:g}s)")
    if a.workers < 0:
        p.error("--workers must be >= 1 (0: the default for the database)")
    workers = a.workers or (PG_WORKERS if a.db.startswith("postgresql") else SQLITE_WORKERS)
    return DaemonSettings(a.listen, a.db, a.metrics_listen, a.onos_url.rstrip("/"), a.onos_user,
                    a.onos_password_file, a.onos_timeout, a.onos_resync_interval,
                    a.heartbeat_seconds, a.sweep_interval, workers,
                    a.log_level, a.holder, a.onos_lease_ttl, a.onos_max_backoff,
                    tls, a.insecure, a.socket_group, a.health_listen,
                    leak_grace_seconds=a.leak_grace_seconds,
                    node_gone_seconds=a.node_gone_seconds,
                    leak_sweep_interval=a.leak_sweep_interval,
                    onos_outbox_cap=a.onos_outbox_cap,
                    max_concurrent_rpcs=a.max_concurrent_rpcs,
                    onos_dead_letter_after=a.onos_dead_letter_after,
                    db_check_interval=a.db_check_interval,
                    max_watchers=a.max_watchers, change_log_keep=a.change_log_keep,
                    watch_batch_max_ms=a.watch_batch_max_ms)


class IpControllerDaemon:
    """The running pieces of one replica, startable in-process for tests."""

    def __init__(self, settings: DaemonSettings) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        if settings.db.startswith("sqlite:///"):
            path = settings.db[len("sqlite:///"):]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        if settings.onos_url and settings.db.startswith("memory"):
            raise SystemExit("ecnet-ipcontroller: --onos-url needs a database (the sync keeps "
                             "its outbox, lease and state there); --db memory:// has none")
        # Every worker holds a pooled connection through its transaction, and the sweeps, the
        # watch's tailer, the sync and the health check take theirs: connections beyond the
        # pool's size are opened and closed per transaction (a PostgreSQL backend forked each
        # time), so the pool follows --workers. A replica may hold twice the pool (overflow):
        # 40 connections with the default 16 workers, against PostgreSQL's default
        # max_connections of 100 shared by every replica.
        self.store = open_store(settings.db, pool_size=pool_size_for(settings.workers))
        self.ipam = IpamService(self.store, sync_enabled=bool(settings.onos_url))
        self.sync = None
        if settings.onos_url:
            from .sync_runner import SyncRunner
            self.sync = SyncRunner(self.store, settings, self.ipam)
        # The gRPC servers run on one event loop (ipcontroller.calls): a watch stream is a
        # coroutine there, not a thread; unary handlers run on `workers` threads and queue
        # up to --max-concurrent-rpcs (ipcontroller.admission).
        self.watch = WatchService(self.ipam, WatchSettings(
            max_watchers=settings.max_watchers,
            batch_window_max=settings.watch_batch_max_ms / 1000))
        self.workers = WorkerPool(settings.workers)
        # Health: coroutines on the loop, so they answer while every worker waits on the
        # database (a held lock, a slow disk); the same answers on --health-listen.
        self.health = health.aio.HealthServicer()
        self.health_server: grpc.aio.Server | None = None
        self.health_port = 0
        self.port = 0
        self._loop = LoopThread()
        try:
            self.server = self._loop.call(self._build_servers())
        except BaseException:
            self._loop.close()
            self.workers.shutdown()
            raise
        if settings.onos_password_file:
            warn_if_exposed(settings.onos_password_file, "ONOS password file")
        self._threads: list[threading.Thread] = []

    async def _build_servers(self) -> grpc.aio.Server:
        """The servers and their listeners, made on the loop they run on."""
        settings = self.settings
        self.admission = AdmissionInterceptor(self.workers, settings.max_concurrent_rpcs)
        # No migration_thread_pool: every sync handler reaches the workers through
        # admission, with a context whose abort raises (ipcontroller.calls).
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0)],
            interceptors=[WrapOnce([self.admission,
                                    AuthzInterceptor(_PortNodes(self.ipam),
                                                     plaintext_tcp_admin=settings.tls is None),
                                    WireInterceptor()])],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs + settings.max_watchers)
        on_change = self.sync.wake if self.sync is not None else None
        pb_grpc.add_IPControllerServicer_to_server(
            IPControllerServicer(self.ipam, settings.heartbeat_seconds, on_change,
                                 watch=self.watch), server)
        pb_grpc.add_IPAdminServicer_to_server(
            IPAdminServicer(self.ipam, self.sync, settings.heartbeat_seconds), server)
        add_health(server, self.health)
        # The same answers on a plaintext server of their own (kubelet's probe has no TLS).
        if settings.health_listen:
            self.health_server = grpc.aio.server()
            add_health(self.health_server, self.health)
            for address in filter(None, settings.health_listen.split(",")):
                bound = add_listener(self.health_server, address, None)
                self.health_port = self.health_port or bound
        for address in settings.listen.split(","):
            bound = add_listener(server, address, settings.tls, settings.socket_group)
            if bound and not self.port:
                self.port = bound
            if settings.tls is None and not is_unix(address):
                log.warning("plaintext gRPC on %s: every caller that reaches it is admin%s",
                            address, "" if is_loopback(address) else " (--insecure)")
        return server

    async def _start_servers(self) -> None:
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("ecnet.v1.IPController", health_pb2.HealthCheckResponse.SERVING)

    def set_health(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus
                   ) -> None:
        """Set a health status from a thread (the servicer lives on the loop)."""
        self._loop.call(self.health.set(service, status))

    def start(self) -> None:
        self.watch.start()
        self._loop.call(self._start_servers())
        for target, name in ((self._sweeper, "sweeper"), (self._db_watch, "db-watch")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.sync is not None:
            self._threads.append(self.sync.start(self.stop_event))
        if self.settings.metrics_listen:
            from prometheus_client import start_http_server
            host, _, port = self.settings.metrics_listen.rpartition(":")
            start_http_server(int(port), addr=host or "127.0.0.1")
        log.info("serving listen=%s port=%d db=%s onos=%s", self.settings.listen, self.port,
                 redact_url(self.settings.db), self.settings.onos_url or "off")

    def _sweeper(self) -> None:
        gone_after = self.settings.node_gone_seconds
        if gone_after:
            # Never sooner than a node turns stale (3 heartbeats), whatever the flags say:
            # a slow heartbeat is no dead node.
            gone_after = max(gone_after, 6.0 * self.settings.heartbeat_seconds)
        leaks = self.ipam.gone_node_sweep(grace=self.settings.leak_grace_seconds,
                                          gone_after=gone_after)
        next_leak_look = 0.0
        while not self.stop_event.wait(self.settings.sweep_interval):
            try:
                freed, expired = self.ipam.sweep()
                if freed or expired:
                    log.info("sweep freed=%d expired_sticky=%d", freed, expired)
                for node in self.ipam.mark_stale_nodes(3.0 * self.settings.heartbeat_seconds):
                    log.info("node stale node=%s", node.name)
                self.ipam.topology.compact(self.settings.change_log_keep)
                self.watch.snapshots.expire()
                if time.monotonic() >= next_leak_look:
                    next_leak_look = time.monotonic() + self.settings.leak_sweep_interval
                    reclaimed = leaks.sweep()
                    if reclaimed:
                        log.info("sweep reclaimed=%d ports of gone nodes", len(reclaimed))
            except IpamError as exc:
                log.warning("sweep failed: %s", exc)
            except Exception:  # noqa: BLE001 - keep the sweeper alive, log once per failure
                log.exception("sweep crashed")

    def _db_watch(self) -> None:
        """Readiness follows the database: while it does not answer, every pod request would
        fail anyway, so the IPController service says NOT_SERVING (kubelet takes the replica
        out of the Service; nobody restarts it). "" is liveness: the process answers."""
        serving = True
        while not self.stop_event.wait(self.settings.db_check_interval):
            try:
                self.ipam.check_store()
                ok, why = True, ""
            except (IpamError, SQLAlchemyError) as exc:
                ok, why = False, str(exc)
            if ok == serving:
                continue
            serving = ok
            self.set_health("ecnet.v1.IPController", health_pb2.HealthCheckResponse.SERVING
                            if ok else health_pb2.HealthCheckResponse.NOT_SERVING)
            if ok:
                log.info("database answers again: serving")
            else:
                log.warning("database unreachable, not serving until it answers: %s", why)

    async def _stop_servers(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)

    def stop(self, grace: float = 2.0) -> None:
        self.stop_event.set()
        self._loop.call(self._stop_servers(grace))
        self._loop.close()
        self.watch.stop()
        self.workers.shutdown()
        for t in self._threads:
            t.join(timeout=5)
        self.store.close()


class _PortNodes:
    """`authz.PortNodes` over the IPAM service: which node a request's port is on."""

    def __init__(self, ipam: IpamService) -> None:
        self.ipam = ipam

    def node_of_port(self, container_id: str, ifname: str) -> str | None:
        return self.ipam.port_node(container_id, ifname)


def tune_gc() -> None:
    """Start-up's heap out of the collector's reach (`gc.freeze`; what the watch builds
    later is not frozen), and full collections made rare: at most one per 100
    middle-generation collections (~1,000 young ones; the default is 10), on top of 3.11's
    own rule (25 % new long-lived objects). At 100k ports the watch holds a few hundred
    thousand long-lived objects (the shared snapshot, every row's wire bytes), and each full
    collection rescanned them all with every thread stopped: 9 a run of topology_sim at
    100k x 1,000, 86-186 ms each, which every AllocatePort and stream in flight waited out;
    now 1 a run, 43-46 ms (docs/topology-watch.md). Those objects hold no reference cycles
    (rows, bytes, tuples), so nothing waits longer to be freed; cycles that die young still
    go in the young collections."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    logconfig.setup(settings.log_level)
    try:
        ctl = IpControllerDaemon(settings)
        ctl.start()
        tune_gc()
    except STARTUP_ERRORS as exc:  # an operator's to fix: one clean line, no traceback
        log.error("start-up failed: %s", exc)
        print(f"ecnet-ipcontroller: {exc}", file=sys.stderr)
        sys.exit(1)
    done = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    done.wait()
    ctl.stop()


if __name__ == "__main__":
    main()
