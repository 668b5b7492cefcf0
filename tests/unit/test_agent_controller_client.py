"""The agent's controller client keeps --controller-timeout as the whole budget of a call:
the wait for a restarted controller's channel and the one retry come out of it. Before,
a call to a controller that was down waited the 2 s reconnect wait on top of any timeout
(and an allocation's retry got a fresh full timeout), so a pod's ADD or DEL outlived the
operator's setting."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import grpc
import pytest

from cni import errors as ce
from cni.agent import controller
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


class _Refused(grpc.RpcError, grpc.Call):
    """What a stub raises: an RpcError that is also the call, with its status."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


class _Clock:
    """The client's `time`, moved by the fake calls: the budget is checked without
    waiting on anything real."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_the_retry_after_a_restart_gets_only_what_is_left_of_the_budget(
        dead_target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(controller, "time", clock)
    client = GrpcControllerClient(dead_target, timeout=2.0)
    monkeypatch.setattr(client, "ready", lambda timeout=1.0: True)   # it came back
    budgets: list[float] = []

    def call(request: object, *, timeout: float, wait_for_ready: bool) -> str:
        budgets.append(timeout)
        clock.now += 0.5          # each attempt takes half a second of the budget
        if len(budgets) == 1:
            raise _Refused(grpc.StatusCode.UNAVAILABLE)
        return "answered"
    try:
        assert client._call(call, object()) == "answered"
    finally:
        client.close()
    assert budgets == [2.0, 1.5]      # the retry had 1.5 s left, not a fresh 2 s


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.DEADLINE_EXCEEDED])
def test_only_an_unavailable_controller_is_retried(
        dead_target: str, monkeypatch: pytest.MonkeyPatch, code: grpc.StatusCode) -> None:
    client = GrpcControllerClient(dead_target, timeout=2.0)
    monkeypatch.setattr(client, "ready", lambda timeout=1.0: True)
    calls: list[float] = []

    def call(request: object, *, timeout: float, wait_for_ready: bool) -> str:
        calls.append(timeout)
        raise _Refused(code)
    try:
        with pytest.raises(ce.CniError):
            client._call(call, object())
    finally:
        client.close()
    assert len(calls) == 1
