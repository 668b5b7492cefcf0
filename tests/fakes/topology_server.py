"""A scripted controller for the datapath's topology feed, served by a real gRPC server on
loopback: WatchTopology (a snapshot in chunks, then the deltas a test commits) and
GetTopology (the poll fallback). ``watch=False`` serves only GetTopology, as a controller
older than WatchTopology does: the RPC answers UNIMPLEMENTED from gRPC itself.

It holds the state the real change log would (nodes, ports, subnets, a log of revisions
with a compaction floor), so a test commits changes and asserts what the agent has,
not which calls were made. ``requests`` records every watch's ``from_revision`` (did the
agent resume, or start over?); ``break_streams`` ends every open stream UNAVAILABLE, the
way a controller going away does.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc


@dataclass
class _Stream:
    context: grpc.ServicerContext
    broken: bool = False


class TopologyState:
    """The cluster as the controller's change log sees it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.revision = 0
        self.floor = 0                      # revisions <= floor are compacted away
        self.nodes: dict[str, pb.NodeInfo] = {}
        self.ports: dict[str, pb.RemotePort] = {}
        self.subnets: dict[str, pb.Subnet] = {}
        self.log: list[tuple[int, list[pb.TopologyChange]]] = []
        self.requests: list[pb.WatchTopologyRequest] = []
        self.streams: list[_Stream] = []
        self.snapshots = 0
        self.chunk = 2                      # changes per snapshot message

    def commit(self, *changes: pb.TopologyChange) -> int:
        """One transaction's changes under one new revision; returns it."""
        with self.cond:
            for c in changes:
                kind = c.WhichOneof("change")
                if kind == "port":
                    self.ports[c.port.port_id] = c.port
                elif kind == "port_removed":
                    self.ports.pop(c.port_removed, None)
                elif kind == "node":
                    self.nodes[c.node.name] = c.node
                elif kind == "node_removed":
                    self.nodes.pop(c.node_removed, None)
                elif kind == "subnet":
                    self.subnets[c.subnet.id] = c.subnet
                elif kind == "subnet_removed":
                    self.subnets.pop(c.subnet_removed, None)
            self.revision += 1
            self.log.append((self.revision, list(changes)))
            self.cond.notify_all()
            return self.revision

    def compact(self) -> None:
        """Drop the whole log: any watcher resuming from before now gets a snapshot."""
        with self.cond:
            self.floor = self.revision
            self.log.clear()

    def snapshot_changes(self) -> list[pb.TopologyChange]:
        return ([pb.TopologyChange(node=n) for n in self.nodes.values()]
                + [pb.TopologyChange(subnet=s) for s in self.subnets.values()]
                + [pb.TopologyChange(port=p) for p in self.ports.values()])

    def topology(self) -> pb.TopologyResponse:
        with self.cond:
            return pb.TopologyResponse(
                revision=self.revision, nodes=list(self.nodes.values()),
                ports=list(self.ports.values()),
                subnets=[pb.Subnet(id=s.id, cidr=s.cidr, gateway=s.gateway)
                         for s in self.subnets.values()])


class PollOnlyServicer(pb_grpc.IPControllerServicer):
    """A controller from before WatchTopology: the generated base answers it
    UNIMPLEMENTED."""

    def __init__(self, state: TopologyState) -> None:
        self.state = state

    def GetTopology(self, request: pb.TopologyRequest,
                    context: grpc.ServicerContext) -> pb.TopologyResponse:
        t = self.state.topology()
        if request.since_revision and request.since_revision == t.revision:
            return pb.TopologyResponse(revision=t.revision, unchanged=True)
        return t


class WatchServicer(PollOnlyServicer):
    def WatchTopology(self, request: pb.WatchTopologyRequest,
                      context: grpc.ServicerContext) -> Iterator[pb.WatchTopologyEvent]:
        st = self.state
        stream = _Stream(context)
        with st.cond:
            st.requests.append(request)
            st.streams.append(stream)
            at = request.from_revision
            first: list[pb.WatchTopologyEvent] = []
            if at == 0 or at < st.floor or at > st.revision:
                changes = st.snapshot_changes()
                chunks = [changes[i:i + st.chunk] for i in range(0, len(changes), st.chunk)]
                chunks = chunks or [[]]
                for i, chunk in enumerate(chunks):
                    first.append(pb.WatchTopologyEvent(
                        revision=st.revision, reset=i == 0, complete=i == len(chunks) - 1,
                        changes=chunk))
                st.snapshots += 1
                at = st.revision
        try:
            yield from first
            while context.is_active():
                with st.cond:
                    st.cond.wait_for(_news(st, stream, at), timeout=0.5)
                    if stream.broken:
                        break
                    todo = [(r, c) for r, c in st.log if r > at]
                for rev, changes in todo:
                    yield pb.WatchTopologyEvent(revision=rev, complete=True, changes=changes)
                    at = rev
        finally:
            with st.cond:
                st.streams.remove(stream)
        if stream.broken:
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted break")


def _news(st: TopologyState, stream: _Stream, at: int) -> Callable[[], bool]:
    return lambda: stream.broken or st.revision > at or not stream.context.is_active()


class TopologyServer:
    """The servicer on a real gRPC server, on 127.0.0.1 at ``port`` (0: any free one).
    ``stop`` and a new ``TopologyServer`` on the same port with the same state is a
    controller restart."""

    def __init__(self, state: TopologyState | None = None, *, watch: bool = True,
                 port: int = 0) -> None:
        self.state = state or TopologyState()
        self.watch = watch
        self.port = port
        self.server = self._serve()

    def _serve(self) -> grpc.Server:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        servicer = (WatchServicer if self.watch else PollOnlyServicer)(self.state)
        pb_grpc.add_IPControllerServicer_to_server(servicer, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        return server

    def restart(self) -> None:
        """A controller restart: the same state (the store) on the same port."""
        self.stop()
        self.server = self._serve()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def break_streams(self) -> None:
        with self.state.cond:
            for s in self.state.streams:
                s.broken = True
            self.state.cond.notify_all()

    def open_streams(self) -> int:
        with self.state.cond:
            return len(self.state.streams)

    def stop(self) -> None:
        self.server.stop(grace=None).wait()


__all__ = ["PollOnlyServicer", "TopologyServer", "TopologyState", "WatchServicer"]
