"""The agent's controller client keeps --controller-timeout as the whole budget of a call:
the wait for a restarted controller's channel and the one retry come out of it. Before,
a call to a controller that was down waited the 2 s reconnect wait on top of any timeout
(and an allocation's retry got a fresh full timeout), so a pod's ADD or DEL outlived the
operator's setting."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from cni import errors as ce
from cni.agent.controller import GrpcControllerClient
from ecnet_api.v1 import ecnet_pb2 as pb

BUDGET = 0.3
# Far below the 2 s reconnect wait the old code always added, far above the budget.
LIMIT = 1.5


@pytest.fixture
def dead_target() -> Iterator[str]:
    """An address where nothing listens (bound, never listened on, so nobody takes it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


def test_a_call_to_a_controller_that_is_down_fails_within_its_budget(dead_target: str) -> None:
    client = GrpcControllerClient(dead_target, timeout=BUDGET)
    try:
        t0 = time.monotonic()
        with pytest.raises(ce.TryAgainLater):
            client.release(pb.ReleaseRequest(container_id="c1", ifname="eth0"))
        assert time.monotonic() - t0 < LIMIT
    finally:
        client.close()


def test_an_allocation_to_a_controller_that_is_down_fails_within_its_budget(
        dead_target: str) -> None:
    client = GrpcControllerClient(dead_target, timeout=BUDGET)
    try:
        t0 = time.monotonic()
        pending = client.allocate_async(pb.AllocateRequest(
            container_id="c1", ifname="eth0", node="n1", pool="p"))
        with pytest.raises(ce.TryAgainLater):
            pending()
        assert time.monotonic() - t0 < LIMIT
    finally:
        client.close()
