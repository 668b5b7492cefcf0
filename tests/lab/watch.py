"""A minimal WatchTopology client for tests: applies the stream to a view the way an agent
must (reset, upsert by key, complete), follows a list of controller replicas (the next one
when a stream breaks, resuming from its revision), and records what a test checks: every
revision seen, snapshots, message sizes. Plus the same view read straight from the database."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from sqlalchemy import create_engine, text

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc


@dataclass
class WatchView:
    node: str
    ports: dict[str, tuple[str, tuple[str, ...], str]] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)      # name -> state
    subnets: dict[str, str] = field(default_factory=dict)    # id -> cidr
    revision: int = 0            # of the last complete event applied
    complete: bool = False
    resets: int = 0
    delta_revisions: list[int] = field(default_factory=list)
    largest_message: int = 0
    messages: int = 0
    errors: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def apply(self, ev: pb.WatchTopologyEvent) -> None:
        with self.changed:
            self.messages += 1
            self.largest_message = max(self.largest_message, ev.ByteSize())
            if ev.reset:
                self.resets += 1
                self.ports.clear()
                self.nodes.clear()
                self.subnets.clear()
            elif ev.complete and ev.changes:
                if self.delta_revisions and ev.revision <= self.delta_revisions[-1]:
                    self.errors.append(f"revision {ev.revision} after "
                                       f"{self.delta_revisions[-1]}: a repeated change")
                self.delta_revisions.append(ev.revision)
            for c in ev.changes:
                kind = c.WhichOneof("change")
                if kind == "port":
                    self.ports[c.port.port_id] = (c.port.mac, tuple(c.port.ips), c.port.node)
                elif kind == "port_removed":
                    self.ports.pop(c.port_removed, None)
                elif kind == "node":
                    self.nodes[c.node.name] = c.node.state
                elif kind == "node_removed":
                    self.nodes.pop(c.node_removed, None)
                elif kind == "subnet":
                    self.subnets[c.subnet.id] = c.subnet.cidr
                elif kind == "subnet_removed":
                    self.subnets.pop(c.subnet_removed, None)
            self.complete = ev.complete
            if ev.complete:
                if ev.revision < self.revision and not ev.reset:
                    self.errors.append(f"went back from {self.revision} to {ev.revision}")
                self.revision = ev.revision
            self.changed.notify_all()

    def wait_for(self, pred: Callable[[WatchView], bool], timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        with self.changed:
            while not pred(self):
                left = end - time.monotonic()
                assert left > 0, f"watch view of {self.node} never got there: " \
                                 f"revision={self.revision} ports={len(self.ports)}"
                self.changed.wait(min(left, 0.5))


class Follower:
    """Follows `targets` in turn from a thread, as an agent would (resume from the last
    complete revision on whichever replica answers)."""

    def __init__(self, targets: list[str], view: WatchView) -> None:
        self.targets = targets
        self.view = view
        self.connects: list[tuple[str, int]] = []     # (target, from_revision)
        self._stop = threading.Event()
        self._call: grpc.Future | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            target = self.targets[i % len(self.targets)]
            try:
                with grpc.insecure_channel(target) as chan:
                    stub = pb_grpc.IPControllerStub(chan)
                    frm = self.view.revision if self.view.complete else 0
                    self.connects.append((target, frm))
                    call = stub.WatchTopology(pb.WatchTopologyRequest(
                        node=self.view.node, from_revision=frm))
                    self._call = call
                    for ev in call:
                        self.view.apply(ev)
            except grpc.RpcError:
                pass
            if self._stop.wait(0.1):
                return
            i += 1

    def stop(self) -> None:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
        self._thread.join(timeout=10)


def db_view(url: str, node: str) -> tuple[dict[str, tuple[str, tuple[str, ...], str]],
                                          dict[str, str], int]:
    """(ports, subnets, head) from the database itself: the active ports with an address in
    a subnet where `node` has an active port of its own, every subnet, the log's head."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            mine = {r[0] for r in conn.execute(text(
                "SELECT DISTINCT a.subnet_id FROM addresses a JOIN ports p ON p.id = a.port_id"
                " WHERE p.state = 'active' AND p.node = :n"), {"n": node})}
            rows = conn.execute(text(
                "SELECT p.id, p.mac, p.node, a.ip, a.subnet_id FROM ports p JOIN addresses a"
                " ON a.port_id = p.id WHERE p.state = 'active'")).all()
            subnets = {r[0]: r[1] for r in conn.execute(text("SELECT id, cidr FROM subnets"))}
            head = conn.execute(text("SELECT COALESCE(MAX(revision), 0) FROM change_log")
                                ).scalar_one()
    finally:
        engine.dispose()
    ips: dict[str, list[str]] = {}
    meta: dict[str, tuple[str, str]] = {}
    keep: set[str] = set()
    for pid, mac, pnode, ip, subnet in rows:
        ips.setdefault(pid, []).append(ip)
        meta[pid] = (mac, pnode)
        if subnet in mine:
            keep.add(pid)
    ports = {p: (meta[p][0], tuple(sorted(ips[p], key=lambda a: (":" in a, a))), meta[p][1])
             for p in keep}
    return ports, subnets, int(head)
