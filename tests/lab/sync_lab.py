"""Lab pieces for the ONOS sync tests: the controller as a real process (so it can be SIGKILLed),
gRPC helpers, and the one comparison that matters: ONOS (the emulator) holds exactly what the
store holds, field by field."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipam.onos.model import OnosPort, port_body
from tests.lab.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]


class Stubs:
    """One channel to a controller and both services on it."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.ctl = pb_grpc.IPControllerStub(self.channel)
        self.admin = pb_grpc.IPAdminStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def sync_status(self) -> pb.SyncStatusResponse:
        return self.admin.SyncStatus(pb.SyncStatusRequest(), timeout=5)

    def ports(self) -> list[pb.Port]:
        return list(self.admin.ListPorts(pb.ListPortsRequest(limit=1_000_000),
                                         timeout=10).ports)

    def subnets(self) -> list[pb.Subnet]:
        return list(self.admin.ListSubnets(pb.ListSubnetsRequest(), timeout=10).subnets)

    def setup_pool(self, pool: str, *cidrs: str) -> None:
        self.admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name=pool, policy="dynamic")),
                              timeout=10)
        for cidr in cidrs:
            self.admin.CreateSubnet(pb.CreateSubnetRequest(pool=pool, cidr=cidr), timeout=10)


def alloc_req(cid: str, pool: str = "p", node: str = "node-a") -> pb.AllocateRequest:
    return pb.AllocateRequest(container_id=cid, ifname="eth0", node=node, pool=pool,
                              pod=pb.PodRef(namespace="ns", name=f"pod-{cid}", uid=f"uid-{cid}"))


class ControllerProcess:
    """`python -m ipcontroller.daemon` as a child process; its log goes to a file."""

    def __init__(self, db: str, onos_url: str, log_path: Path, *extra: str,
                 unix: str = "") -> None:
        """`unix`: a unix socket to listen on as well (agents in a node's netns dial it)."""
        self.db = db
        self.onos_url = onos_url
        self.log_path = log_path
        self.extra = extra
        self.unix = unix
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.port = free_port()
        listen = f"127.0.0.1:{self.port}" + (f",unix:{self.unix}" if self.unix else "")
        cmd = [sys.executable, "-m", "ipcontroller.daemon", "--listen", listen,
               "--db", self.db, "--onos-url", self.onos_url, "--sweep-interval", "0.5",
               *self.extra]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ch = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        try:
            health = health_pb2_grpc.HealthStub(ch)

            def serving() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"controller exited rc={self.proc.returncode}: "
                                       f"{self.log_tail()}")
                try:
                    r = health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                except grpc.RpcError:
                    return False
                return bool(r.status == health_pb2.HealthCheckResponse.SERVING)

            if not wait_until(serving, timeout, poll=0.1):
                raise RuntimeError(f"controller not serving in {timeout}s: {self.log_tail()}")
        finally:
            ch.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def expected_port(p: pb.Port, network_id: str) -> dict[str, Any]:
    """The Neutron body ONOS must hold for a port the controller reports."""
    return port_body(OnosPort(
        id=p.id, name=f"{p.pod.namespace}_{p.pod.name}", network_id=network_id,
        mac_address=p.mac,
        fixed_ips=tuple((ip.subnet_id, ip.address.split("/")[0]) for ip in p.ips),
        device_id=p.pod.uid, host_id=p.node))["port"]


def onos_vs_store(state: dict[str, Any], ports: list[pb.Port],
                  subnets: list[pb.Subnet]) -> list[str]:
    """Every difference between ONOS and the store (empty when they agree exactly).

    Networks are found by name (= pool name), since the pool's network id is not exposed over
    gRPC; everything else is compared by id and full body."""
    diffs: list[str] = []
    net_by_pool = {b["name"]: nid for nid, b in state["networks"].items()}
    pools = {s.pool for s in subnets}
    if set(net_by_pool) != pools:
        diffs.append(f"networks for pools {sorted(net_by_pool)} != {sorted(pools)}")
    for pool in pools & set(net_by_pool):
        want = sorted(s.id for s in subnets if s.pool == pool)
        got = sorted(state["networks"][net_by_pool[pool]]["subnets"])
        if got != want:
            diffs.append(f"network of pool {pool}: subnets {got} != {want}")
    if set(state["subnets"]) != {s.id for s in subnets}:
        diffs.append(f"subnet ids differ: onos-only "
                     f"{sorted(set(state['subnets']) - {s.id for s in subnets})}, store-only "
                     f"{sorted({s.id for s in subnets} - set(state['subnets']))}")
    for s in subnets:
        body = state["subnets"].get(s.id)
        if body is not None and (body["cidr"], body["gateway_ip"], body["network_id"]) != \
                (s.cidr, s.gateway, net_by_pool.get(s.pool)):
            diffs.append(f"subnet {s.id} body differs: {body}")
    want_ports = {p.id: expected_port(p, net_by_pool.get(p.pool, "?")) for p in ports}
    extra = sorted(set(state["ports"]) - set(want_ports))
    missing = sorted(set(want_ports) - set(state["ports"]))
    if extra:
        diffs.append(f"{len(extra)} ports in ONOS but not in the store: {extra[:5]}")
    if missing:
        diffs.append(f"{len(missing)} ports in the store but not in ONOS: {missing[:5]}")
    wrong = [pid for pid in set(want_ports) & set(state["ports"])
             if state["ports"][pid] != want_ports[pid]]
    if wrong:
        pid = wrong[0]
        diffs.append(f"{len(wrong)} port bodies differ, e.g. {pid}: onos={state['ports'][pid]} "
                     f"want={want_ports[pid]}")
    return diffs
