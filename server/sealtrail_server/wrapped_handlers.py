"""Interceptors wrap a service's method handlers; each wraps a method's handler
once, not once per call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in grpc-stubs


class WrappedHandlers:
    """The wrapped handler an interceptor made for each method. The handler it
    wraps is the same object on every call, so its wrapping is too: making it
    anew per call cost every RPC a handler object and a closure or two."""

    def __init__(self) -> None:
        self._made: dict[str, tuple[Handler, Handler]] = {}

    def get(
        self, handler: Handler, method: str, wrap: Callable[[Handler, str], Handler]
    ) -> Handler:
        made = self._made.get(method)
        if made is None or made[0] is not handler:
            made = (handler, wrap(handler, method))
            self._made[method] = made
        return made[1]
