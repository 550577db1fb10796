"""The outermost interceptor of AuditLogService: each server-streaming call's
responses are written by a coroutine of the call's own, which closes the
handler's generator before the call's task ends, however it ends.

gRPC iterates a handler that is an async generator itself and, when the call
is cancelled while gRPC waits (to send a response its client has not taken,
which is where a stalled stream or export spends its time), drops it unclosed:
the generator was closed once it was collected, by a task of the event loop's
a moment later, in another call's context, or, caught in a reference cycle,
whenever the garbage collector ran. Until then the stream or export kept its
place among the tenant's and the process's, its hub subscription, its pooled
connection and its page (helper-224). A handler that is a coroutine writing
through `context.write` is gRPC's other way of streaming: the cancellation
then lands in it, and it closes the generator there and then.

Listed first, so that it wraps every other interceptor's generator: one
closed by it closes the one it iterates (each wrapper does, in `aclosing`)."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, cast

import grpc

from .service_interceptor import Behavior, Handler, ServiceInterceptor


class StreamScope(ServiceInterceptor):
    def _wrap_unary(self, handler: Handler, method_path: str) -> Handler:
        return handler  # a unary call's coroutine is its scope already

    def _wrap_stream(self, handler: Handler, method_path: str) -> Handler:
        inner = cast(Behavior, handler.unary_stream)

        async def written(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            responses = inner(request, context)
            async with aclosing(responses):  # closed in the call's task, as it ends
                async for response in responses:
                    await context.write(response)

        return grpc.unary_stream_rpc_method_handler(
            written,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
