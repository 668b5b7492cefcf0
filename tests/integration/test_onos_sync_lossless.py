"""Issue 4: every port reaches ONOS, exactly, whatever ONOS does.

Real components only: the controller (in-process `Controller`, or `python -m
ipcontroller.daemon` where it must be SIGKILLed) on a real SQLite file or PostgreSQL, the ONOS
emulator as an HTTP server on 127.0.0.1, and real gRPC calls. Each test ends by comparing the
emulator's store with the controller's port and subnet lists field by field
(tests.lab.sync_lab.onos_vs_store), after the outbox drained.
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from ecnet_api.v1 import ecnet_pb2 as pb
from ipcontroller.cli import cli
from onos_emulator import EmulatorServer, EmulatorState
from tests.lab.controller import running_controller, sqlite_url
from tests.lab.helpers import wait_until
from tests.lab.sync_lab import (
    ControllerProcess,
    Stubs,
    alloc_req,
    expected_port,
    onos_vs_store,
)

# Short sync timings so outages and takeovers resolve in seconds, not minutes; the defaults
# (5 s timeout, 30 s max backoff, 15 s lease) only change how long the same steps take.
FAST = ("--onos-timeout", "1", "--onos-max-backoff", "1", "--onos-lease-ttl", "3")


@pytest.fixture
def emu(make_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    return make_emulator(start=False)  # not started: each test decides when ONOS is up


def drained(s: Stubs) -> bool:
    return s.sync_status().pending == 0


def assert_onos_equals_store(emu: EmulatorServer, s: Stubs) -> None:
    diffs = onos_vs_store(emu.snapshot(), s.ports(), s.subnets())
    assert not diffs, "\n".join(diffs)


def ipctl(port: int, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["--controller", f"127.0.0.1:{port}", *args],
                           catch_exceptions=False)
    return r.exit_code, r.stdout + r.stderr


# ------------------------------------------------------------------ 1. outage


def test_outage_500_allocations_arrive_exactly_once(tmp_path: Path, emu: EmulatorServer) -> None:
    """ONOS is down the whole time 500 pods come and 100 go; once it is back (same port),
    each live port is POSTed exactly once with the right fields and the released ones are
    never left behind. The resync is off so every call seen is the outbox's own."""
    with running_controller(sqlite_url(tmp_path), "--onos-url", emu.url, *FAST,
                            "--onos-resync-interval", "0") as ctl:
        s = Stubs(ctl.port)
        s.setup_pool("p", "10.60.0.0/22")
        cids = [f"c{i:03d}" for i in range(500)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            ports = list(pool.map(lambda c: s.ctl.AllocatePort(alloc_req(c), timeout=10).port,
                                  cids))
        released = cids[::5]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda c: s.ctl.ReleasePort(
                pb.ReleaseRequest(container_id=c, ifname="eth0"), timeout=10), released))
        assert time.perf_counter() - t0 < 20  # ONOS being down never slows the pod path
        st = s.sync_status()
        # network, subnet, 400 upserts, 100 deletes: a released port's delete supersedes
        # its pending upsert (issue 12: the outbox keeps what the newest state needs)
        assert st.pending == 2 + 400 + 100
        assert "unavailable" in st.last_error and st.failed == 0
        assert emu.calls()["total"] == 0

        emu.start()  # ONOS is back on the same address
        assert wait_until(lambda: drained(s), timeout=30), s.sync_status()
        assert_onos_equals_store(emu, s)
        live = [p for p in ports if p.container_id not in set(released)]
        assert {p.id for p in s.ports()} == {p.id for p in live}
        state, calls = emu.snapshot(), emu.calls()
        net_id = next(iter(state["networks"]))
        for p in live:
            body = state["ports"][p.id]
            assert body == expected_port(p, net_id)
            assert (body["device_id"], body["binding:host_id"], body["device_owner"]) == \
                (f"uid-{p.container_id}", "node-a", "compute:kubernetes")
            assert calls["by_object"][f"POST ports/{p.id}"] == 1
        gone = {p.id for p in ports} - {p.id for p in live}
        assert not gone & set(state["ports"])
        assert calls["counts"]["POST ports 201"] == 400   # the released never reached ONOS
        assert calls["counts"]["DELETE ports 204"] == 100
        assert not any(k.startswith("PUT") for k in calls["counts"])
        s.close()


# ------------------------------------------------------------------ 2. faults


def test_random_500s_resets_and_timeouts_converge(tmp_path: Path, emu: EmulatorServer) -> None:
    """30% of ONOS calls fail (500, connection reset, or slower than the client's timeout, in
    which case ONOS still applies the call after the client gave up) while pods come and go
    concurrently, some released right after allocation. Once drained, ONOS == store: in
    particular no port whose DELETE went out before a late POST landed is left behind."""
    emu.start()
    # slow: 0.25 s > the 0.15 s client timeout, so the call lands in ONOS after the client gave
    # up on it (the controller waits 2 x timeout before touching that object again).
    emu.set_faults(["error500", "reset", "slow"], rate=0.3, delay=0.25, seed=7)
    with running_controller(sqlite_url(tmp_path), "--onos-url", emu.url,
                            "--onos-timeout", "0.15", "--onos-max-backoff", "0.1",
                            "--onos-lease-ttl", "3", "--onos-resync-interval", "0") as ctl:
        s = Stubs(ctl.port)
        s.setup_pool("p", "10.61.0.0/22")
        rnd = random.Random(3)

        def client(n: int) -> None:
            mine: list[str] = []
            for i in range(45):
                cid = f"t{n}-{i}"
                s.ctl.AllocatePort(alloc_req(cid, node=f"node-{n}"), timeout=10)
                mine.append(cid)
                r = rnd.random()
                if r < 0.25:  # released at once: its DELETE chases its POST
                    victim = mine.pop()
                elif r < 0.45:
                    victim = mine.pop(rnd.randrange(len(mine)))
                else:
                    continue
                s.ctl.ReleasePort(pb.ReleaseRequest(container_id=victim, ifname="eth0"),
                                  timeout=10)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(client, range(4)))
        assert wait_until(lambda: drained(s), timeout=40), s.sync_status()
        emu.set_faults("none")
        time.sleep(0.3)  # any slow call still sleeping in the emulator lands now
        assert_onos_equals_store(emu, s)
        assert len(s.ports()) > 80
        counts = emu.calls()["counts"]
        failures = {kind: sum(v for k, v in counts.items() if k.endswith(kind))
                    for kind in (" 500", " reset")}
        assert failures[" 500"] > 10 and failures[" reset"] > 10, counts
        assert "unavailable" in s.sync_status().last_error
        s.close()


# ------------------------------------------------------------------ 3. SIGKILL


def test_sigkill_mid_burst_loses_nothing(tmp_path: Path, emu: EmulatorServer) -> None:
    """The controller process is SIGKILLed while four clients allocate and release and ONOS
    lags behind (each call takes 20 ms). Restarted on the same SQLite file it drains what was
    pending; every allocation answered OK (and not released OK) is in the store and in ONOS."""
    emu.start()
    emu.set_faults("slow", delay=0.02)
    db = sqlite_url(tmp_path)
    proc = ControllerProcess(db, emu.url, tmp_path / "ctl-1.log", *FAST)
    proc2 = ControllerProcess(db, emu.url, tmp_path / "ctl-2.log", *FAST)
    try:
        proc.start()
        s = Stubs(proc.port)
        s.setup_pool("p", "10.62.0.0/22")
        ok_alloc: dict[str, str] = {}
        ok_release: set[str] = set()
        tried_release: set[str] = set()  # a kill between commit and answer: either outcome
        lock = threading.Lock()
        stop = threading.Event()

        def client(n: int) -> None:
            for i in range(400):
                if stop.is_set():
                    return
                cid = f"k{n}-{i}"
                try:
                    port = s.ctl.AllocatePort(alloc_req(cid), timeout=5).port
                    with lock:
                        ok_alloc[cid] = port.id
                    if i % 4 == 0:
                        with lock:
                            tried_release.add(cid)
                        s.ctl.ReleasePort(pb.ReleaseRequest(container_id=cid, ifname="eth0"),
                                          timeout=5)
                        with lock:
                            ok_release.add(cid)
                except grpc.RpcError:
                    return  # the controller is gone: this client stops

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(ok_alloc) >= 150, timeout=20)
        proc.kill()
        stop.set()
        for t in threads:
            t.join(timeout=10)
        s.close()

        from ipam.store.sql import SqlStore
        store = SqlStore(db, migrate=False)
        try:
            pending = store.outbox_rows()
        finally:
            store.close()
        assert len(pending) > 20, "the kill should leave a backlog"

        emu.set_faults("none")
        proc2.start()  # same DB; a new holder takes the lease once the dead one's expires
        s = Stubs(proc2.port)
        assert wait_until(lambda: drained(s), timeout=30), (s.sync_status(),
                                                            proc2.log_tail())
        assert_onos_equals_store(emu, s)
        in_store = {p.container_id: p.id for p in s.ports()}
        state = emu.snapshot()
        for cid, port_id in ok_alloc.items():
            if cid in ok_release:
                assert cid not in in_store and port_id not in state["ports"]
            elif cid in tried_release and cid not in in_store:
                assert port_id not in state["ports"]   # released, answer lost in the kill
            else:
                assert in_store.get(cid) == port_id, cid
                assert port_id in state["ports"]
        s.close()
    finally:
        proc.kill()
        proc2.kill()


# ------------------------------------------------------------------ 4. auth


def test_bad_password_is_reported_and_nothing_is_dropped(tmp_path: Path,
                                                         emu: EmulatorServer) -> None:
    """ONOS answers 401: `ipctl sync status` names the authentication failure, every row
    stays queued. A restart with the right password drains at once, without waiting out the
    long backoff the failing run put on the rows."""
    emu.start()
    bad, good = tmp_path / "bad.pw", tmp_path / "good.pw"
    bad.write_text("not-rocks\n")
    good.write_text("rocks\n")
    db = sqlite_url(tmp_path)
    with running_controller(db, "--onos-url", emu.url, *FAST,
                            "--onos-password-file", str(bad)) as ctl:
        s = Stubs(ctl.port)
        s.setup_pool("p", "10.63.0.0/24")
        for i in range(30):
            s.ctl.AllocatePort(alloc_req(f"a{i}"), timeout=10)
        s.ctl.ReleasePort(pb.ReleaseRequest(container_id="a0", ifname="eth0"), timeout=10)
        assert wait_until(lambda: "authentication" in s.sync_status().last_error, timeout=10)
        code, out = ipctl(ctl.port, "sync", "status")
        assert code == 0 and "authentication failed (HTTP 401)" in out, out
        st = s.sync_status()
        # a0's delete superseded its upsert: one row for it
        assert st.pending == 2 + 29 + 1 and st.failed >= 1
        assert emu.snapshot() == {"networks": {}, "subnets": {}, "ports": {}}
        assert set(emu.calls()["counts"]) <= {"POST networks 401", "POST subnets 401",
                                               "POST ports 401"}
        s.close()

    with running_controller(db, "--onos-url", emu.url, *FAST,
                            "--onos-password-file", str(good)) as ctl:
        s = Stubs(ctl.port)
        t0 = time.monotonic()
        assert wait_until(lambda: drained(s), timeout=15), s.sync_status()
        assert time.monotonic() - t0 < 10  # not the 60 s auth backoff of the first run
        assert_onos_equals_store(emu, s)
        assert len(emu.snapshot()["ports"]) == 29
        s.close()


# ------------------------------------------------------------------ 5. replicas


@pytest.mark.postgres
def test_replicas_on_postgres_one_drainer_and_takeover(tmp_path: Path, pg_url: str,
                                                       emu: EmulatorServer) -> None:
    """Three controller processes on one PostgreSQL, each talking to ONOS as its own user so
    the emulator can tell them apart. Only the lease holder ever calls ONOS; when it is
    SIGKILLed mid-drain, exactly one other replica takes over within the lease TTL and drains
    the rest, and the two drainers' calls never overlap in time."""
    from ipam.store.sql import SqlStore
    SqlStore(pg_url).close()  # migrate once up front (the replicas would serialise on a lock)
    users = {f"replica-{i}": f"pw-{i}" for i in range(3)}
    emu = EmulatorServer(port=emu.port, extra_admins=users)
    emu.start()
    emu.set_faults("slow", delay=0.03)  # ONOS lags: the backlog outlives the holder
    ttl = 3.0
    procs: list[ControllerProcess] = []
    try:
        for user, pw in users.items():
            pwfile = tmp_path / f"{user}.pw"
            pwfile.write_text(pw)
            procs.append(ControllerProcess(
                pg_url, emu.url, tmp_path / f"{user}.log", "--holder", user,
                "--onos-user", user, "--onos-password-file", str(pwfile),
                "--onos-timeout", "1", "--onos-max-backoff", "1", "--onos-lease-ttl", str(ttl)))
            procs[-1].start()
        stubs = [Stubs(p.port) for p in procs]
        stubs[0].setup_pool("p", "10.64.0.0/22")
        with ThreadPoolExecutor(6) as pool:  # pods arrive through every replica
            list(pool.map(lambda i: stubs[i % 3].ctl.AllocatePort(alloc_req(f"r{i}"),
                                                                   timeout=10), range(240)))
        assert wait_until(lambda: len(emu.snapshot()["ports"]) >= 50, timeout=20)
        holder = stubs[1].sync_status().holder
        assert holder in users and all(s.sync_status().holder == holder for s in stubs)
        by_user = emu.calls()["by_user"]
        assert set(by_user) == {holder}, by_user  # the others never called ONOS

        victim = int(holder.rsplit("-", 1)[1])
        t_kill = time.time()
        procs[victim].kill()
        stubs[victim].close()
        emu.set_faults("none")  # the takeover is the point now, not ONOS's pace
        survivors = [s for i, s in enumerate(stubs) if i != victim]
        assert wait_until(lambda: drained(survivors[0]), timeout=40), \
            survivors[0].sync_status()
        new_holder = survivors[0].sync_status().holder
        assert new_holder in users and new_holder != holder
        by_user = emu.calls()["by_user"]
        assert set(by_user) == {holder, new_holder}, by_user  # exactly one took over
        old, new = by_user[holder], by_user[new_holder]
        # The dead holder's last call (possibly still in flight when killed) ends before the
        # new one's first, which comes within the TTL (plus the 1 s idle poll and slack).
        assert old["last"] <= new["first"] + 0.05
        assert new["first"] - t_kill < ttl + 2.5, (new["first"] - t_kill)
        assert_onos_equals_store(emu, survivors[0])
        assert len(emu.snapshot()["ports"]) == 240
        for s in survivors:
            s.close()
    finally:
        for p in procs:
            p.kill()
        emu.stop()


# ------------------------------------------------------------------ 6. resync


def test_resync_restores_what_onos_lost_and_tombstones_win(tmp_path: Path,
                                                           emu: EmulatorServer) -> None:
    """(a) ONOS restarts with an empty store: the periodic resync alone restores every live
    network, subnet and port. (b) ONOS goes down, pods are released and created, the
    controller stops, ONOS comes back from a backup taken before those releases: after a
    restart and `ipctl sync now` ONOS equals the store. Released ports are deleted because
    their queued delete rows are tombstones; the resync never re-creates them. (c) A port
    whose delete reached ONOS long ago and which the backup brings back: ONOS has no GET to
    find it, so the resync replays the deletes of everything the store released recently
    (the `released` table) and it goes too."""
    db = sqlite_url(tmp_path)
    emu.start()
    with running_controller(db, "--onos-url", emu.url, *FAST,
                            "--onos-resync-interval", "1") as ctl:
        s = Stubs(ctl.port)
        s.setup_pool("p", "10.65.0.0/24", "10.65.1.0/24")
        s.setup_pool("q", "10.66.0.0/24")
        for i in range(40):
            s.ctl.AllocatePort(alloc_req(f"x{i}", pool="pq"[i % 2]), timeout=10)
        long_gone = s.ctl.ReleasePort(pb.ReleaseRequest(container_id="x0", ifname="eth0"),
                                      timeout=10).port_id
        assert wait_until(lambda: drained(s), timeout=10)
        assert wait_until(lambda: not onos_vs_store(emu.snapshot(), s.ports(), s.subnets()),
                          timeout=10)
        ghost = s.ctl.AllocatePort(alloc_req("ghost"), timeout=10).port  # for (c)
        assert wait_until(lambda: ghost.id in emu.snapshot()["ports"], timeout=10)
        backup = emu.snapshot()
        s.ctl.ReleasePort(pb.ReleaseRequest(container_id="ghost", ifname="eth0"), timeout=10)
        assert wait_until(lambda: ghost.id not in emu.snapshot()["ports"], timeout=10)

        # (a) ONOS lost its store.
        emu.stop()
        emu.state = EmulatorState()
        emu.start()
        assert wait_until(lambda: not onos_vs_store(emu.snapshot(), s.ports(), s.subnets()),
                          timeout=10)
        assert len(emu.snapshot()["ports"]) == 39 and long_gone not in emu.snapshot()["ports"]
        assert len(emu.snapshot()["networks"]) == 2 and len(emu.snapshot()["subnets"]) == 3

        # (b) changes while ONOS is down, then the controller goes down too.
        emu.stop()
        released = [f"x{i}" for i in range(1, 11)]
        released_ids = {s.ctl.ReleasePort(pb.ReleaseRequest(container_id=c, ifname="eth0"),
                                          timeout=10).port_id for c in released}
        for i in range(5):
            s.ctl.AllocatePort(alloc_req(f"y{i}"), timeout=10)
        assert s.sync_status().pending >= 15
        s.close()

    # ONOS comes back from a backup taken before the releases (and holding the ghost).
    emu.state = EmulatorState(networks=dict(backup["networks"]),
                              subnets=dict(backup["subnets"]), ports=dict(backup["ports"]))
    emu.start()
    assert released_ids <= set(emu.snapshot()["ports"])
    with running_controller(db, "--onos-url", emu.url, *FAST,
                            "--onos-resync-interval", "0") as ctl:
        s = Stubs(ctl.port)
        code, out = ipctl(ctl.port, "sync", "now")
        assert code == 0 and "resync requested" in out, out
        assert wait_until(lambda: drained(s), timeout=15), s.sync_status()
        # (c) the ghost, deleted for good before the backup came back, is deleted again.
        assert wait_until(lambda: ghost.id not in emu.snapshot()["ports"], timeout=15)
        state = emu.snapshot()
        assert not released_ids & set(state["ports"])
        assert set(state["ports"]) == {p.id for p in s.ports()}
        diffs = onos_vs_store(state, s.ports(), s.subnets())
        assert not diffs, "\n".join(diffs)
        code, out = ipctl(ctl.port, "sync", "status")
        assert code == 0 and "last resync" in out
        s.close()


# ------------------------------------------------------------------ 7. the outbox cap

def test_a_full_outbox_gives_way_to_a_resync_and_loses_nothing(tmp_path: Path,
                                                              emu: EmulatorServer) -> None:
    """ONOS is down while 60 pods come against a cap of 40 rows: the port rows are dropped,
    the alert counter goes up, and once ONOS is back the resync brings every live port and
    no released one."""
    from ipcontroller.metrics import SYNC_OUTBOX_OVERFLOWS
    overflows = SYNC_OUTBOX_OVERFLOWS._value.get()
    with running_controller(sqlite_url(tmp_path), "--onos-url", emu.url, *FAST,
                            "--onos-resync-interval", "0", "--onos-outbox-cap", "40") as ctl:
        s = Stubs(ctl.port)
        s.setup_pool("p", "10.64.0.0/24")
        for i in range(60):
            s.ctl.AllocatePort(alloc_req(f"k{i}"), timeout=10)
        for i in range(0, 60, 6):
            s.ctl.ReleasePort(pb.ReleaseRequest(container_id=f"k{i}", ifname="eth0"),
                              timeout=10)
        assert wait_until(lambda: SYNC_OUTBOX_OVERFLOWS._value.get() > overflows, timeout=20)
        assert s.sync_status().pending < 60
        emu.start()
        assert wait_until(lambda: drained(s) and len(emu.snapshot()["ports"]) == 50,
                          timeout=60), s.sync_status()
        assert_onos_equals_store(emu, s)
        assert set(emu.snapshot()["ports"]) == {p.id for p in s.ports()}
        s.close()
