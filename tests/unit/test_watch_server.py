"""WatchTopology on the controller's asyncio server (issue 14, scale-out), over real gRPC
with a real SQLite store: many streams hold no thread each, the --max-watchers bound still
refuses the one too many and frees its slot when a watcher leaves. (That a sync handler
stops where it aborts, authz's refusal above all, is tests/unit/test_authn.py's: a denied
ReleasePort leaves the port as it was.)
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from tests.lab.controller import running_controller, sqlite_url

WATCHERS = 40


def _first_complete(call: Iterator[pb.WatchTopologyEvent]) -> pb.WatchTopologyEvent:
    for ev in call:
        if ev.complete:
            return ev
    raise AssertionError("the stream ended before a complete event")


def _has_port(call: Iterator[pb.WatchTopologyEvent], port_id: str) -> None:
    for ev in call:
        if any(c.WhichOneof("change") == "port" and c.port.port_id == port_id
               for c in ev.changes):
            return
    raise AssertionError("the stream ended before the port arrived")


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[grpc.Channel]:
    with running_controller(sqlite_url(tmp_path), "--max-watchers", str(WATCHERS)) as ctl, \
            grpc.insecure_channel(f"127.0.0.1:{ctl.port}") as ch:
        admin = pb_grpc.IPAdminStub(ch)
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.70.0.0/16"))
        stub = pb_grpc.IPControllerStub(ch)
        for i in range(WATCHERS):   # a port of its own: every node is sent the subnet's
            _alloc(stub, f"own-{i}", f"w{i}")
        yield ch


def _alloc(stub: pb_grpc.IPControllerStub, cid: str, node: str) -> pb.Port:
    return stub.AllocatePort(pb.AllocateRequest(
        container_id=cid, ifname="eth0", node=node, pool="p",
        pod=pb.PodRef(namespace="ns", name=cid, uid=f"u-{cid}")), timeout=30).port


def _watch(stub: pb_grpc.IPControllerStub, node: str) -> Iterator[pb.WatchTopologyEvent]:
    return stub.WatchTopology(pb.WatchTopologyRequest(node=node), timeout=60)


def test_many_watchers_hold_no_thread_each_and_all_get_a_change(channel: grpc.Channel) -> None:
    stub = pb_grpc.IPControllerStub(channel)
    one = _watch(stub, "w0")
    _first_complete(one)
    threads_with_one = threading.active_count()
    calls = [one] + [_watch(stub, f"w{i}")
                     for i in range(1, WATCHERS)]
    for call in calls[1:]:
        _first_complete(call)
    # The sync server held a thread per stream (39 more here); on the event loop the
    # streams are coroutines: at most the watch's few store-reading threads start.
    assert threading.active_count() - threads_with_one < WATCHERS // 4
    port = _alloc(stub, "c1", "w0")
    for call in calls:
        _has_port(call, port.id)
    for call in calls:
        call.cancel()   # type: ignore[attr-defined]


def test_one_watcher_too_many_is_refused_and_a_leaving_one_frees_its_slot(
        channel: grpc.Channel) -> None:
    stub = pb_grpc.IPControllerStub(channel)
    calls = [_watch(stub, f"w{i}") for i in range(WATCHERS)]
    for call in calls:
        _first_complete(call)
    with pytest.raises(grpc.RpcError) as refused:
        _first_complete(_watch(stub, "late"))
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    calls.pop().cancel()   # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while True:   # the server sees the cancel on its own time: wait for the slot
        late = _watch(stub, "late")
        try:
            _first_complete(late)
            break
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the slot was never freed"
            time.sleep(0.05)
    calls.append(late)
    for call in calls:
        call.cancel()   # type: ignore[attr-defined]
