"""How many unary calls a replica runs and queues: the limits `--workers` and
`--max-concurrent-rpcs` set.

The server is asyncio (ipcontroller.calls): the streams live on its event loop and the
sync unary handlers run on a pool of `workers` threads, never more (many runnable threads
under one interpreter lock make each call slower; daemon.py has the measurements). This
interceptor is where a unary call reaches that pool: beyond `max_pending` calls running or
waiting for a thread it is refused at once with RESOURCE_EXHAUSTED, instead of an unbounded
queue. Health checks are coroutines on the loop (grpc_health's aio servicer) and pass
untouched, so a probe answers while every worker waits on the database. Streams are
limited by `--max-watchers` (ipcontroller.watch), not here.
"""
from __future__ import annotations

from typing import Any

import grpc

from ecnet_api.v1 import ecnet_pb2 as pb

from .authz import HEALTH_SERVICE
from .calls import WorkerPool, run_sync
from .refusal import Refusal


class AdmissionInterceptor:
    """Runs every sync unary handler on `pool`, at most `max_pending` running or queued
    (a layer of `calls.WrapOnce`: each method is wrapped once, not per call)."""

    def __init__(self, pool: WorkerPool, max_pending: int) -> None:
        self.pool = pool
        self.max_pending = max_pending
        self._pending = 0     # only touched on the event loop: no lock

    @property
    def pending(self) -> int:
        """Unary calls running or waiting for a worker now (read from any thread)."""
        return self._pending

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None or method.startswith(HEALTH_SERVICE):
            return handler
        inner = handler.unary_unary

        async def admitted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if self._pending >= self.max_pending:
                refusal = Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, pb.ERROR_CODE_BUSY,
                                  f"{self.max_pending} requests are running or waiting "
                                  "(--max-concurrent-rpcs); retry")
                await refusal.abort_async(context)
            self._pending += 1
            try:
                return await run_sync(self.pool, inner, request, context)
            finally:
                self._pending -= 1

        return grpc.unary_unary_rpc_method_handler(
            admitted, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
