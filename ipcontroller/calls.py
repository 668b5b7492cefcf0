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
import collections
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

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


async def send_abort(call: grpc.aio.ServicerContext[Any, Any], aborted: Aborted) -> None:
    """End an aio call with what a sync handler aborted with (raises grpc's AbortError)."""
    if aborted.trailing_metadata:
        call.set_trailing_metadata(aborted.trailing_metadata)
    await call.abort(aborted.code, aborted.details)


class WorkerPool:
    """`workers` threads for the sync unary handlers, answering on the event loop.

    Not `loop.run_in_executor` over a ThreadPoolExecutor: per call that made a concurrent
    Future (with its Condition), an asyncio Future chained to it, and one
    `call_soon_threadsafe` (a write to the loop's self-pipe, and a loop wake-up) per answer:
    together ~0.1 ms of the controller's CPU per call (py-spy). Here a job is a tuple on a
    SimpleQueue, and answers finished while the loop is busy go back in one wake-up: a
    worker that finds answers already waiting for the loop adds its own to them.
    """

    def __init__(self, workers: int, name: str = "grpc-worker") -> None:
        self._jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._answers: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]]
        self._answers = collections.deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run `fn(*args)` on a worker; its result or exception, on the running loop."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop   # one loop serves every call (ipcontroller.daemon)
        fut = loop.create_future()
        self._jobs.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args = job
            if fut.cancelled():   # the caller went away while it queued: nothing to run
                continue
            try:
                answer: tuple[Any, Any, BaseException | None] = (fut, fn(*args), None)
            except BaseException as exc:  # noqa: BLE001 - the caller's, raised on the loop
                answer = (fut, None, exc)
            self._answers.append(answer)
            if not self._wake_pending:
                self._wake_pending = True
                loop = self._loop
                assert loop is not None
                try:
                    loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:   # the loop closed (shutdown): nobody waits any more
                    return

    def _deliver(self) -> None:
        """On the loop: hand every finished answer to its caller. The flag is cleared before
        the queue is read, so an answer appended after the last read schedules a new run."""
        self._wake_pending = False
        answers = self._answers
        while answers:
            fut, result, exc = answers.popleft()
            if fut.cancelled():
                continue
            if exc is None:
                fut.set_result(result)
            else:
                fut.set_exception(exc)

    def shutdown(self) -> None:
        """Stop the threads: the jobs still queued are dropped (the server stopped, nobody
        waits for them), the running ones end on their own."""
        try:
            while True:
                self._jobs.get_nowait()
        except queue.Empty:
            pass
        for _ in self._threads:
            self._jobs.put(None)


async def run_sync(pool: WorkerPool, behaviour: Callable[[Any, Any], Any], request: Any,
                   call: grpc.aio.ServicerContext[Any, Any]) -> Any:
    """Run a sync unary behaviour on `pool` with a `CallContext`; its answer or its abort."""
    try:
        return await pool.submit(behaviour, request, CallContext(call))
    except Aborted as aborted:
        await send_abort(call, aborted)


class Wrapper(Protocol):
    """One layer around the servicers' handlers (authz, admission, the watch's wire)."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to serve `method` with, around `handler` (or `handler` itself)."""


class WrapOnce(grpc.aio.ServerInterceptor):
    """The layers' interceptor, each method wrapped once, not on every call.

    grpc.aio calls `intercept_service` for every RPC; three interceptors, each awaiting the
    next and each building a new handler (closures, an RpcMethodHandler) per call, cost the
    controller ~5 % of its CPU per call (py-spy). The handler grpc resolves for a method is
    the same object every time (the servicers are registered once), so the wrapped one is
    kept per method and made again only if that object changes. `layers[0]` is outermost,
    as in grpc's `interceptors` list.
    """

    def __init__(self, layers: Sequence[Wrapper]) -> None:
        self.layers = tuple(layers)
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrapped(self, method: str, handler: grpc.RpcMethodHandler | None
                ) -> grpc.RpcMethodHandler | None:
        if handler is None:
            return None
        hit = self._cache.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        out = handler
        for layer in reversed(self.layers):
            out = layer.wrap(method, out)
        self._cache[method] = (handler, out)
        return out

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[grpc.RpcMethodHandler]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return self.wrapped(details.method,  # type: ignore[attr-defined,return-value]
                            await continuation(details))


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
