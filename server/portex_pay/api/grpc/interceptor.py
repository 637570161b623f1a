"""One interceptor for PaymentService: authentication, error mapping, the canonical log line.

For every PaymentService RPC it resolves the `authorization: Bearer <api key>` metadata to the
calling application (UNAUTHENTICATED otherwise), runs the handler with that application in a
context variable, turns domain errors into rich statuses (api/grpc/errors.py), and writes one log
line: method, code, duration, application id, request id, peer. Health and reflection pass through
untouched: they must answer without a key.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from portex_pay.adapters.postgres.applications import Application
from portex_pay.api.grpc import errors
from portex_pay.domain.errors import DomainError
from portex_pay.service.auth import ApiKeyAuthenticator

log = structlog.get_logger("portex_pay.rpc")

PROTECTED_PREFIX = "/portex.payment.v1.PaymentService/"

if TYPE_CHECKING:  # the generic forms exist only in the type stubs
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]

current_application: contextvars.ContextVar[Application] = contextvars.ContextVar(
    "current_application"
)


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for entry_key, value in details.invocation_metadata or ():
        if entry_key == key:
            return value.decode() if isinstance(value, bytes) else value
    return None


class _Call:
    """What the canonical log line needs to know about one RPC."""

    def __init__(self, method: str, peer: str) -> None:
        self.method = method
        self.peer = peer
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.application_id: str | None = None
        self.request_id: str | None = None

    def finish(self) -> None:
        log.info(
            "rpc",
            method=self.method,
            code=self.code.name,
            duration_ms=round((time.perf_counter() - self.started) * 1000, 2),
            application_id=self.application_id,
            request_id=self.request_id,
            peer=self.peer,
        )


class PaymentInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: ApiKeyAuthenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(PROTECTED_PREFIX):
            return handler
        authorization = _metadata_value(handler_call_details, "authorization")
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, authorization),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, authorization),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    async def _enter(
        self, call: _Call, authorization: str | None, request: Any
    ) -> contextvars.Token[Application]:
        call.request_id = getattr(request, "request_id", None) or None
        application = await self._authenticator.authenticate(authorization)
        call.application_id = str(application.id)
        return current_application.set(application)

    async def _fail(self, call: _Call, context: Context, error: Exception) -> None:
        aborted = context.code()
        if aborted is not None and aborted != grpc.StatusCode.OK:
            call.code = aborted  # the handler aborted on its own: pass its status through
            raise error
        if isinstance(error, DomainError):
            status = errors.to_status(error)
        else:
            if not errors.is_database_outage(error):
                log.error("unhandled error", method=call.method, exc_info=error)
            status = errors.unexpected_status(error)
        call.code = status.code
        await context.abort(status.code, status.details, status.trailing_metadata)

    def _cancelled_code(self, context: Context) -> grpc.StatusCode:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED

    def _wrap_unary(
        self, behavior: Any, method: str, authorization: str | None
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        async def wrapper(request: Any, context: Context) -> Any:
            call = _Call(method, context.peer())
            try:
                token = await self._enter(call, authorization, request)
                try:
                    return await behavior(request, context)
                finally:
                    current_application.reset(token)
            except asyncio.CancelledError:
                call.code = self._cancelled_code(context)
                raise
            except Exception as error:
                await self._fail(call, context, error)
            finally:
                call.finish()

        return wrapper

    def _wrap_stream(
        self, behavior: Any, method: str, authorization: str | None
    ) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _Call(method, context.peer())
            try:
                token = await self._enter(call, authorization, request)
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    current_application.reset(token)
            except asyncio.CancelledError:
                call.code = self._cancelled_code(context)
                raise
            except Exception as error:
                await self._fail(call, context, error)
            finally:
                call.finish()

        return wrapper
