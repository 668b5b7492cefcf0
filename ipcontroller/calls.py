"""The controller's handlers on an asyncio gRPC server: one event loop serves every stream,
and the sync handlers (the servicers, authz's check) run on a thread pool of `--workers`.

Why asyncio: WatchTopology on grpc's sync server held a thread per stream, so one change
pushed to 1,000 agents woke 1,000 threads through the interpreter lock and grpc's
per-message hand-off (docs/topology-watch.md has the numbers). On grpc.aio a stream is a
coroutine: a change costs one wake-up of the loop and one write per relevant stream.

Why not grpc.aio's own migration of sync handlers (`migration_thread_pool`): its context's
`abort` does not raise in the handler's thread (grpc._cython `_SyncServicerContext.abort`
only waits for the abort coroutine), so a handler that aborts would run on after it, and
authz's refusal would not stop the call. `CallContext` gives the sync code what grpc's sync
server gave it, `abort` raising, and `run_sync` turns that into the aio call's abort on the
loop.
"""
from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc


class Aborted(Exception):
    """A sync handler ended its call (`CallContext.abort`): the status to send."""

    def __init__(self, code: grpc.StatusCode, details: str,
                 trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailing_metadata = tuple(trailing_metadata)


class CallContext:
    """The part of `grpc.ServicerContext` our sync handlers use, over an aio call, for a
    worker thread (the reads are of the call's fixed state; nothing here touches the loop)."""

    def __init__(self, call: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._call = call
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details, self._trailing)

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(metadata)

    def time_remaining(self) -> float | None:
        return self._call.time_remaining()

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._call.auth_context()  # type: ignore[no-any-return]

    def peer(self) -> str:
        return self._call.peer()

    def invocation_metadata(self) -> Any:
        return self._call.invocation_metadata()

    def is_active(self) -> bool:
        return not self._call.cancelled()


async def send_abort(call: grpc.aio.ServicerContext[Any, Any], aborted: Aborted) -> None:
    """End an aio call with what a sync handler aborted with (raises grpc's AbortError)."""
    if aborted.trailing_metadata:
        call.set_trailing_metadata(aborted.trailing_metadata)
    await call.abort(aborted.code, aborted.details)


async def run_sync(pool: futures.Executor, behaviour: Callable[[Any, Any], Any], request: Any,
                   call: grpc.aio.ServicerContext[Any, Any]) -> Any:
    """Run a sync unary behaviour on `pool` with a `CallContext`; its answer or its abort."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            pool, functools.partial(behaviour, request, CallContext(call)))
    except Aborted as aborted:
        await send_abort(call, aborted)


T = TypeVar("T")


class LoopThread:
    """The servers' event loop, on a thread of its own: the daemon's other pieces (sweeper,
    readiness, ONOS sync) are threads, and tests start a daemon in-process, so the loop
    does not take the caller's thread."""

    def __init__(self, name: str = "grpc-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result, from any other thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
