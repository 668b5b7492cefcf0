"""Which threads run a call and how many unary calls a replica runs and queues: the limits
`--workers` and `--max-concurrent-rpcs` set, kept as they were once watch streams came.

A WatchTopology stream holds a thread for its life. Were streams on the server's workers,
the pool would need a thread per watcher on top of them, and then every unary call finds
a thread of its own: many runnable threads under one interpreter lock make each call slower
(daemon.py has the measurements; with 1,028 threads and a semaphore in front of the
handlers, a unary call cost ~0.8 ms of controller CPU, against ~0.6 ms on `workers`
threads, tests/bench/alloc_compare.py). So streams run on an executor of their own (gRPC
reads `experimental_thread_pool` off the behaviour, listeners.OnPool), sized for
`--max-watchers`, and unary calls queue for the `workers` threads of `WorkerPool`, which
counts what it holds. A unary call that finds `max_pending` calls there (running or queued)
is refused at once with RESOURCE_EXHAUSTED, on a thread of the refusals' own, not behind the
queue it is refused from. Health checks run on their own executor (listeners.add_health)
and pass untouched, so a probe answers while every worker is taken. Streams are limited
by `--max-watchers` (ipcontroller.watch), not here.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb

from .authz import HEALTH_SERVICE
from .listeners import OnPool
from .refusal import Refusal


class WorkerPool(futures.ThreadPoolExecutor):
    """The server's workers, knowing how many calls they hold (running or queued). gRPC runs
    everything it submits (a call cancelled while queued included: the call's own code
    notices), so the count cannot leak."""

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers, thread_name_prefix="grpc-worker")
        self._count_lock = threading.Lock()
        self.held = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any,  # type: ignore[override]
               **kwargs: Any) -> futures.Future[Any]:
        with self._count_lock:
            self.held += 1

        def counted() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                with self._count_lock:
                    self.held -= 1
        try:
            return super().submit(counted)
        except BaseException:   # shut down: nothing will run it
            with self._count_lock:
                self.held -= 1
            raise


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Streams to `streams`, unary calls to the server's `workers` unless `max_pending` of
    them are there already. Runs on gRPC's one polling thread, before the call is queued:
    the count it reads is not racing another admission."""

    def __init__(self, workers: WorkerPool, max_pending: int,
                 streams: futures.ThreadPoolExecutor) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self.streams = streams
        # Refusals are quick (one status); one thread answers them whatever the backlog.
        self._refusals = futures.ThreadPoolExecutor(max_workers=1,
                                                    thread_name_prefix="refusals")

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        method: str = details.method  # type: ignore[attr-defined]
        if handler is None or method.startswith(HEALTH_SERVICE):
            return handler
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                OnPool(handler.unary_stream, self.streams),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_unary is None or self.workers.held < self.max_pending:
            return handler

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, pb.ERROR_CODE_BUSY,
                    f"{self.max_pending} requests are running or waiting "
                    "(--max-concurrent-rpcs); retry").abort(context)

        return grpc.unary_unary_rpc_method_handler(
            OnPool(refuse, self._refusals), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def close(self) -> None:
        self._refusals.shutdown(wait=False, cancel_futures=True)
