"""The IP controller killed (SIGKILL) under a node with pods: the pods keep talking; an ADD
fails fast with CNI code 11 and leaves nothing behind, and succeeds when retried once the
controller is back; a DEL takes the pod off the node at once but answers 11 until its address
can be released (the runtime's retry then succeeds, and if it gives up and removes the netns,
the agent's reconcile releases it); nothing the store held is lost, no address is doubled, and
ONOS (the emulator) converges to the store. Real binary, agent, controller process, private
userspace OVS, pods as netns."""
from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.lab.cluster import CniResult, Lab, LabNode, Pod, ping
from tests.lab.helpers import wait_until
from tests.lab.sync_lab import ControllerProcess, Stubs, onos_vs_store

if TYPE_CHECKING:
    from onos_emulator import EmulatorServer
    from tests.lab.postgres import PrivatePostgres

pytestmark = [pytest.mark.root, pytest.mark.ovs]
AGENT = ("--reconcile-interval", "0.5", "--reconcile-grace-seconds", "1",
         "--controller-timeout", "3")


def active(lab: Lab) -> set[str]:
    out = lab.ipctl("port", "list", "--state", "active", "-o", "json").stdout
    return {p["container_id"] for p in json.loads(out)}


def timed(node: LabNode, command: str, pod: Pod) -> CniResult:
    t0 = time.monotonic()
    res = node.cni(command, pod)
    print(f"{command} {pod.name}: code={res.out.get('code')} "
          f"in {time.monotonic() - t0:.2f}s")
    return res


FAST_SYNC = ("--onos-timeout", "1", "--onos-max-backoff", "1", "--onos-lease-ttl", "3",
             "--sweep-interval", "0.5")


@pytest.fixture
def onos_lab(tmp_path_factory: pytest.TempPathFactory,
             make_emulator: Callable[..., EmulatorServer]) -> Iterator[tuple[Lab, Any]]:
    """A node, a controller syncing to the ONOS emulator, a dynamic and a fixed pool; plaintext
    loopback gRPC so the test reads the store through the same stubs as the sync tests."""
    emu = make_emulator()
    with Lab(tmp_path_factory.mktemp("ctlrestart"), tls=False) as lab:
        lab.start_controller("--onos-url", emu.url, *FAST_SYNC)
        lab.ipctl("pool", "create", "lab", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "lab", "10.75.0.0/24")
        lab.ipctl("pool", "create", "vm", "--policy", "fixed")
        lab.ipctl("subnet", "create", "vm", "10.76.0.0/24")
        lab.add_node("n1", *AGENT)
        yield lab, emu


def converged(emu: Any, stubs: Stubs) -> bool:
    return not onos_vs_store(emu.snapshot(), stubs.ports(), stubs.subnets())


def test_controller_killed_loses_nothing_and_adds_retry(onos_lab: tuple[Lab, Any]) -> None:
    lab, emu = onos_lab
    node = lab.nodes[0]
    a, b, d, e = (node.add_pod(n) for n in ("a", "b", "d", "e"))
    node.add_pod("f", node.netconf(pool="vm"))       # a fixed one: its binding is kept
    stubs = Stubs(lab.port)
    try:
        assert wait_until(lambda: converged(emu, stubs), timeout=30)
        before = {p.id: (p.container_id, p.generation, tuple(ip.address for ip in p.ips))
                  for p in stubs.ports()}
        taps = node.taps()
        lab.stop_controller(signal.SIGKILL)
        # while it is down: the pods that exist keep talking
        assert ping(a, b.ip) and ping(b, a.ip)
        # a new pod: 11 within the agent's controller deadline, nothing left behind
        c = node.new_pod("c")
        res = timed(node, "ADD", c)
        assert (res.code, res.out.get("code")) == (1, 11), res.raw
        assert c.links() == [] and node.taps() == taps
        # a DEL: off the node at once, 11 until the address can be released; d's runtime
        # retries, e's gives up and removes the netns (the agent's reconcile releases e)
        for pod in (d, e):
            res = timed(node, "DEL", pod)
            assert (res.code, res.out.get("code")) == (1, 11), res.raw
            assert pod.host_if not in node.taps() and pod.links() == []
        lab.del_netns(e.netns)
        t0 = time.monotonic()
        lab.start_controller("--onos-url", emu.url, *FAST_SYNC)
        assert wait_until(lambda: node.cni("ADD", c).ok, timeout=30), node.agent_log()[-3000:]
        print(f"controller back: ADD retried ok {time.monotonic() - t0:.2f}s after the start")
        c.result = node.cni("ADD", c).out
        assert node.cni("DEL", d).ok
        assert wait_until(lambda: e.container_id not in active(lab), timeout=30)
        print(f"controller back: e released {time.monotonic() - t0:.2f}s after the start")
        assert ping(c, a.ip)
        # nothing lost: every port the store held is there, unchanged, but the two DELed
        after = {p.id: (p.container_id, p.generation, tuple(ip.address for ip in p.ips))
                 for p in stubs.ports()}
        gone = {d.container_id, e.container_id}
        assert {k: v for k, v in before.items() if v[0] not in gone} == {
            k: v for k, v in after.items() if v[0] != c.container_id}
        ips = [ip for v in after.values() for ip in v[2]]
        assert len(ips) == len(set(ips)) == 4          # a, b, c and the fixed f
        assert wait_until(lambda: converged(emu, stubs), timeout=30), "\n".join(
            onos_vs_store(emu.snapshot(), stubs.ports(), stubs.subnets()))
        print(f"controller back: ONOS converged {time.monotonic() - t0:.2f}s after the start")
    finally:
        stubs.close()


# ----------------------------------------------------------- the database crashed under two
def health(port: int) -> dict[str, int]:
    """Both services' gRPC health on a replica ("" the process, ecnet.v1.IPController its
    ability to serve pods); -1 when it does not answer."""
    out = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "ecnet.v1.IPController"):
            try:
                out[service] = stub.Check(health_pb2.HealthCheckRequest(service=service),
                                          timeout=2).status
            except grpc.RpcError:
                out[service] = -1
    return out


def add_until_ok(node: LabNode, pod: Pod, codes: list[int], timeout: float = 60) -> None:
    """As kubelet does: ADD again until it succeeds; every answer's code goes to `codes`."""
    def once() -> bool:
        res = node.cni("ADD", pod)
        codes.append(0 if res.ok else int(res.out.get("code", -1)))
        if res.ok:
            pod.result = res.out
        return res.ok
    assert wait_until(once, timeout=timeout, poll=0.2), (codes, node.agent_log()[-3000:])


def test_database_crash_under_two_replicas_loses_nothing(
        tmp_path_factory: pytest.TempPathFactory, private_pg: PrivatePostgres,
        make_emulator: Callable[..., EmulatorServer]) -> None:
    emu = make_emulator()
    sync = ("--onos-url", emu.url, *FAST_SYNC)
    with Lab(tmp_path_factory.mktemp("dbcrash"), db=private_pg.url, tls=False) as lab:
        lab.start_controller(*sync, "--holder", "r1")
        r2 = ControllerProcess(private_pg.url, emu.url, lab.dir / "r2.log", *FAST_SYNC,
                               "--holder", "r2", unix=str(lab.dir / "r2.sock"))
        r2.start()
        stubs = Stubs(lab.port)
        try:
            lab.ipctl("pool", "create", "lab", "--policy", "dynamic", "--quarantine", "0")
            lab.ipctl("subnet", "create", "lab", "10.77.0.0/24")
            n1 = lab.add_node("n1", *AGENT)          # dials replica r1
            n2 = LabNode(lab, "n2")                  # dials replica r2
            n2.controller = f"unix:{lab.dir / 'r2.sock'}"
            lab.nodes.append(n2)
            n2.start(*AGENT)
            pods = [n.add_pod(f"{n.name}-{i}") for n in (n1, n2) for i in range(3)]
            assert wait_until(lambda: converged(emu, stubs), timeout=30)
            before = snapshot(stubs)

            # 1. pg_ctl restart -m immediate while ADDs run: one stream per node, a kubelet
            # retrying each pod until it is up, going on until the database is back
            codes: list[int] = []
            restarted = threading.Event()
            queues = {n.name: [n.new_pod(f"{n.name}-during-{i}") for i in range(12)]
                      for n in (n1, n2)}

            def stream(queue: list[Pod]) -> list[Pod]:
                done = []
                for p in queue:
                    add_until_ok(p.node, p, codes)
                    done.append(p)
                    if restarted.is_set():
                        break
                return done

            with ThreadPoolExecutor(2) as ex:
                jobs = [ex.submit(stream, q) for q in queues.values()]
                assert wait_until(lambda: len(codes) >= 2, timeout=30)
                private_pg.restart()
                restarted.set()
                during = [p for j in jobs for p in j.result()]
            for q in queues.values():   # the ones the streams did not reach
                for p in q:
                    if p not in during:
                        lab.del_netns(p.netns)
            print(f"{len(during)} ADDs across the restart answered {len(codes)} times: "
                  f"{codes.count(0)} x 0, {codes.count(11)} x 11, others "
                  f"{[c for c in codes if c not in (0, 11)]}")
            assert set(codes) <= {0, 11}

            # 2. the database away (crashed, not back yet): 11 at once, replicas not ready
            private_pg.crash()
            for port in (lab.port, r2.port):
                assert wait_until(lambda p=port: health(p)["ecnet.v1.IPController"]
                                  == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=30)
            assert all(ping(p, q.ip, count=1) for p, q in zip(pods, pods[1:], strict=False)
                       if p.node is q.node)
            late = [n.new_pod(f"{n.name}-late") for n in (n1, n2)]
            for p in late:
                taps = p.node.taps()
                res = timed(p.node, "ADD", p)
                assert (res.code, res.out.get("code")) == (1, 11), res.raw
                assert p.links() == [] and p.node.taps() == taps
            t0 = time.monotonic()
            private_pg.start()
            for port in (lab.port, r2.port):
                assert wait_until(lambda p=port: health(p)["ecnet.v1.IPController"]
                                  == health_pb2.HealthCheckResponse.SERVING, timeout=30)
            print(f"database back: replicas serving {time.monotonic() - t0:.2f}s after")
            for p in late:
                add_until_ok(p.node, p, [])
            print(f"database back: ADDs retried ok {time.monotonic() - t0:.2f}s after")

            # nothing lost, nothing doubled, nothing held for the failed attempts
            after = snapshot(stubs)
            assert {k: v for k, v in after.items() if k in before} == before
            live = {p.container_id for p in (*pods, *during, *late)}
            assert {v[0] for v in after.values()} == live
            ips = [ip for v in after.values() for ip in v[2]]
            assert len(ips) == len(set(ips)) == len(live)
            for p in (*during, *late):
                assert ping(p, next(q for q in pods if q.node is p.node).ip, count=1)
            # the sync lease is held again and the outbox drains: ONOS equals the store
            assert wait_until(lambda: stubs.sync_status().holder in ("r1", "r2")
                              and stubs.sync_status().pending == 0, timeout=30)
            assert wait_until(lambda: converged(emu, stubs), timeout=30), "\n".join(
                onos_vs_store(emu.snapshot(), stubs.ports(), stubs.subnets()))
            print(f"database back: ONOS converged {time.monotonic() - t0:.2f}s after, "
                  f"lease held by {stubs.sync_status().holder}")
        finally:
            stubs.close()
            r2.stop()


def snapshot(stubs: Stubs) -> dict[str, tuple[str, int, tuple[str, ...]]]:
    """Port id -> (container, generation, addresses): what must survive unchanged."""
    return {p.id: (p.container_id, p.generation, tuple(ip.address for ip in p.ips))
            for p in stubs.ports()}
