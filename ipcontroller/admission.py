"""How many unary calls a replica runs and queues: the limits `--workers` and
`--max-concurrent-rpcs` set, kept as they were once watch streams share the gRPC pool.

A WatchTopology stream holds a pool thread for its life, so the pool has one thread per
watcher on top of the workers. Without this gate every unary call would then find a free
thread and run at once: many runnable threads under one interpreter lock make each call
slower (daemon.py has the measurements), and nothing would refuse a flood. So every unary
handler but the health service's first counts itself in: beyond
`max_pending` calls running or waiting it is refused at once with RESOURCE_EXHAUSTED; then
it waits for one of `workers` slots. Health checks run on an executor of their own
(listeners.add_health) and pass untouched, so a probe answers while every slot is taken.
Streams are limited by `--max-watchers` (ipcontroller
.watch), not here.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb

from .authz import HEALTH_SERVICE
from .refusal import Refusal


class AdmissionInterceptor(grpc.ServerInterceptor):
    def __init__(self, workers: int, max_pending: int) -> None:
        self.max_pending = max_pending
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._pending = 0

    def _enter(self) -> bool:
        with self._lock:
            if self._pending >= self.max_pending:
                return False
            self._pending += 1
            return True

    def _leave(self) -> None:
        with self._lock:
            self._pending -= 1

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        method: str = details.method  # type: ignore[attr-defined]
        if handler is None or handler.unary_unary is None or \
                method.startswith(HEALTH_SERVICE):
            return handler
        inner = handler.unary_unary

        def admitted(request: Any, context: grpc.ServicerContext) -> Any:
            if not self._enter():
                refusal = Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, pb.ERROR_CODE_BUSY,
                                  f"{self.max_pending} requests are running or waiting "
                                  "(--max-concurrent-rpcs); retry")
                refusal.abort(context)
            try:
                with self._slots:
                    return inner(request, context)
            finally:
                self._leave()

        return grpc.unary_unary_rpc_method_handler(
            admitted, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
