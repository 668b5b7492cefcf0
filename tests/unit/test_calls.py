"""The unary calls' plumbing (ipcontroller.calls) on a real event loop and real threads:
`WorkerPool` answers on the loop (results, exceptions, several answers in one wake-up, a
job whose caller went away is not run) and `WrapOnce` wraps a method's handler once."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc

from ipcontroller.calls import WorkerPool, WrapOnce


def test_worker_pool_answers_results_and_exceptions_on_the_loop() -> None:
    pool = WorkerPool(2)
    seen: list[str] = []

    def job(x: int) -> tuple[int, str]:
        seen.append(threading.current_thread().name)
        if x < 0:
            raise ValueError(f"negative {x}")
        return x * 2, threading.current_thread().name

    async def main() -> None:
        loop_thread = threading.current_thread().name
        answers = await asyncio.gather(*(pool.submit(job, i) for i in range(50)))
        assert [a for a, _ in answers] == [i * 2 for i in range(50)]
        assert all(name.startswith("grpc-worker") and name != loop_thread
                   for _, name in answers)
        fut = pool.submit(job, -1)
        try:
            await fut
        except ValueError as exc:
            assert str(exc) == "negative -1"
        else:
            raise AssertionError("the job's exception did not reach its caller")

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert len(seen) == 51


def test_worker_pool_skips_a_job_whose_caller_went_away() -> None:
    pool = WorkerPool(1)
    hold, entered = threading.Event(), threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        entered.set()
        hold.wait(10)
        ran.append("blocker")

    async def main() -> None:
        first = pool.submit(blocker)
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
        queued = pool.submit(ran.append, "queued")   # waits behind the blocker
        queued.cancel()
        after = pool.submit(ran.append, "after")
        hold.set()
        await first
        await after

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert ran == ["blocker", "after"]


def _handler(tag: str) -> grpc.RpcMethodHandler:
    def behaviour(request: Any, context: Any) -> str:
        return tag
    return grpc.unary_unary_rpc_method_handler(behaviour)


class CountingLayer:
    def __init__(self) -> None:
        self.wraps: list[str] = []

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        self.wraps.append(method)
        inner = handler.unary_unary

        def outer(request: Any, context: Any) -> str:
            return f"[{inner(request, context)}]"
        return grpc.unary_unary_rpc_method_handler(outer)


def test_wrap_once_wraps_each_method_once_in_order() -> None:
    outer, inner = CountingLayer(), CountingLayer()
    chain = WrapOnce([outer, inner])
    a, b = _handler("a"), _handler("b")
    first = chain.wrapped("/s/A", a)
    assert chain.wrapped("/s/A", a) is first          # the same handler: kept
    assert first is not None and first.unary_unary(None, None) == "[[a]]"
    assert chain.wrapped("/s/B", b) is not first
    assert outer.wraps == inner.wraps == ["/s/A", "/s/B"]
    replaced = _handler("a2")                          # a method's handler changed
    again = chain.wrapped("/s/A", replaced)
    assert again is not None and again.unary_unary(None, None) == "[[a2]]"
    assert chain.wrapped("/s/none", None) is None      # unknown method: grpc answers it
