"""One interceptor for PaymentService: authentication, error mapping, the canonical log line.

For every PaymentService RPC it resolves the `authorization: Bearer <api key>` metadata to the
calling application (UNAUTHENTICATED otherwise), counts the call against the application's rate
limit when one is set (RESOURCE_EXHAUSTED with RetryInfo over it), runs the handler with that
application in a context variable, turns domain errors into rich statuses (api/grpc/errors.py),
and writes one log line: method, code, duration, application id, request id, peer. Health and
reflection need no key.
The same timing feeds the grpc-ecosystem metrics (portex_pay/metrics.py) of PaymentService's RPCs:
started, handled by code, handling seconds, messages received and sent, each series bound to its
labels once per method, so that a call pays a few increments and one observe.

Requests of every service are decoded by a deserializer that cannot raise: bytes that are not the
request message are INVALID_ARGUMENT before anything else (authentication included), with at most
one warning line per peer address a minute and no canonical line (anyone can send them).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from portex_pay.api.grpc import errors
from portex_pay.domain.application import Application
from portex_pay.domain.errors import DomainError, RateLimited
from portex_pay.logging import OwnText, RateLimitedWarnings
from portex_pay.metrics import UNRECORDED, PrometheusMetrics, RpcSeries, UnrecordedSeries
from portex_pay.service.auth import ApiKeyAuthenticator
from portex_pay.service.ratelimit import RateLimits, retry_after_seconds

log = structlog.get_logger("portex_pay.rpc")

PROTECTED_PREFIX = "/portex.payment.v1.PaymentService/"

if TYPE_CHECKING:  # the generic forms exist only in the type stubs
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]

current_application: contextvars.ContextVar[Application] = contextvars.ContextVar(
    "current_application"
)

# The canonical line's values of our own making, made once (redaction passes OwnText by).
_CODE_NAMES = {code: OwnText(code.name) for code in grpc.StatusCode}
_OK = _CODE_NAMES[grpc.StatusCode.OK]


def _generated_request_id() -> OwnText:
    # A log correlation id, nothing more (never a key or a token): `random` (seeded in every
    # process, reseeded after a fork) instead of `secrets`, whose os.urandom is a system call
    # on every RPC.
    return OwnText(f"rpc-{random.getrandbits(48):012x}")


def _metadata_value(metadata: Any, key: str) -> str | None:
    for entry_key, value in metadata or ():
        if entry_key == key:
            return value.decode() if isinstance(value, bytes) else value
    return None


class _Call:
    """What the canonical log line needs to know about one RPC."""

    __slots__ = ("application_id", "code", "method", "peer", "request_id", "series", "started")

    def __init__(self, method: OwnText, peer: str, series: RpcSeries | UnrecordedSeries) -> None:
        self.method = method
        self.peer = peer
        self.series = series
        series.started.inc()
        series.received.inc()  # a unary request, or a server stream's one request
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.application_id: str | None = None
        self.request_id: str | None = None

    def finish(self) -> None:
        seconds = time.perf_counter() - self.started
        self.series.handled(self.code, seconds)
        log.info(
            "rpc",
            method=self.method,
            # OK without a lookup: hashing an Enum member is a Python-level call.
            code=_OK if self.code is grpc.StatusCode.OK else _CODE_NAMES[self.code],
            duration_ms=round(seconds * 1000, 2),
            application_id=self.application_id,
            request_id=self.request_id,
            peer=self.peer,
        )


class _Undecodable:
    """What a request that does not decode becomes: the deserializer never raises into gRPC
    (which would answer UNKNOWN and log a traceback for anyone who sends garbage)."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    message_type = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_type, "DESCRIPTOR", None)
    undecodable = _Undecodable(getattr(descriptor, "full_name", "request"))

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # DecodeError, or anything a deserializer may raise on bad bytes
            return undecodable

    return deserialize


def _peer_host(peer: str) -> str:
    """`ipv4:127.0.0.1:5555` -> `ipv4:127.0.0.1` (a client's ports change, its address not)."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class PaymentInterceptor(grpc.aio.ServerInterceptor):
    """Every service's requests are decoded without raising (undecodable: INVALID_ARGUMENT,
    before authentication); PaymentService's RPCs are authenticated, mapped and logged."""

    def __init__(
        self,
        authenticator: ApiKeyAuthenticator,
        metrics: PrometheusMetrics | None,
        limits: RateLimits | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._metrics = metrics
        self._limits = limits  # per application; None: unlimited
        self._undecodable = RateLimitedWarnings(log)
        # Per method served (bounded): its handler and the handler wrapped around it.
        self._handlers: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        # The wrapped handler depends on the method's handler alone (what varies per call is
        # read from the call's context): made once per method, not on every call.
        name = handler_call_details.method
        made = self._handlers.get(name)
        if made is None or made[0] is not handler:
            # A method we serve (a handler was found): its name is ours, so OwnText.
            made = self._handlers[name] = (handler, self._wrap(handler, OwnText(name)))
        return made[1]

    def _wrap(self, handler: Handler, method: OwnText) -> Handler:
        deserializer = _safe(handler.request_deserializer)
        serializer = handler.response_serializer
        if method.startswith(PROTECTED_PREFIX):
            if handler.unary_unary is not None:
                return grpc.unary_unary_rpc_method_handler(
                    self._wrap_unary(handler.unary_unary, method, self._series("unary", method)),
                    request_deserializer=deserializer,
                    response_serializer=serializer,
                )
            if handler.unary_stream is not None:
                return grpc.unary_stream_rpc_method_handler(
                    self._wrap_stream(
                        handler.unary_stream, method, self._series("server_stream", method)
                    ),
                    request_deserializer=deserializer,
                    # PaymentService's streams yield serialized messages (StreamInvoiceEvents
                    # shares each event's bytes among its subscribers): written as they are.
                    response_serializer=None,
                )
        # Health, reflection (and any PaymentService RPC with a streamed request, none today):
        # passed through as they are, but for the check of each request message.
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._checked_unary(handler.unary_unary, method),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._checked_unary(handler.unary_stream, method),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._checked_stream(handler.stream_unary, method),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._checked_stream(handler.stream_stream, method),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        return handler

    async def _refuse(self, context: Context, method: str, request: _Undecodable) -> None:
        host = _peer_host(context.peer())
        self._undecodable.warn(
            host, "undecodable request", peer=host, method=method, type=request.type_name
        )
        status = errors.undecodable_status(request.type_name)
        await context.abort(status.code, status.details, status.trailing_metadata)

    def _checked_unary(self, behavior: Any, method: str) -> Any:
        if inspect.isasyncgenfunction(behavior):

            async def checked_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                if isinstance(request, _Undecodable):
                    await self._refuse(context, method, request)
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response

            return checked_stream

        async def checked_call(request: Any, context: Context) -> Any:
            if isinstance(request, _Undecodable):
                await self._refuse(context, method, request)
            return await behavior(request, context)

        return checked_call

    def _checked_stream(self, behavior: Any, method: str) -> Any:
        def checked_requests(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async def check() -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, _Undecodable):
                        await self._refuse(context, method, request)
                    yield request

            return check()

        if inspect.isasyncgenfunction(behavior):

            async def checked_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
                responses = behavior(checked_requests(requests, context), context)
                async with contextlib.aclosing(responses):
                    async for response in responses:
                        yield response

            return checked_stream

        async def checked_call(requests: Any, context: Context) -> Any:
            return await behavior(checked_requests(requests, context), context)

        return checked_call

    async def _enter(self, call: _Call, context: Context, request: Any) -> None:
        # The client's idempotency key when the request has one, else an id of our own: every
        # log line of this RPC carries it, with the method and (once known) the application.
        call.request_id = getattr(request, "request_id", None) or _generated_request_id()
        # Never reset (these and current_application): gRPC runs each RPC in a task of its own,
        # whose context dies with it, and a stream's generator may be closed later from another
        # task (another Context), where reset would raise.
        structlog.contextvars.bind_contextvars(method=call.method, request_id=call.request_id)
        authorization = _metadata_value(context.invocation_metadata(), "authorization")
        application = await self._authenticator.authenticate(authorization)
        call.application_id = OwnText(application.id)
        structlog.contextvars.bind_contextvars(application_id=call.application_id)
        if self._limits is not None:
            wait = self._limits.take(str(application.id))
            if wait:
                raise RateLimited(
                    "too many requests for this application", retry_after_seconds(wait)
                )
        current_application.set(application)

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

    def _series(self, grpc_type: str, method: str) -> RpcSeries | UnrecordedSeries:
        """The method's series, or with metrics off one that records nothing (bound once per
        method, so the hot path never asks again)."""
        return UNRECORDED if self._metrics is None else self._metrics.rpc(grpc_type, method)

    def _refused(self, series: RpcSeries | UnrecordedSeries) -> None:
        """An undecodable request, refused before its call began: counted, not logged."""
        series.started.inc()
        series.received.inc()
        series.handled(grpc.StatusCode.INVALID_ARGUMENT, 0.0)

    def _wrap_unary(
        self, behavior: Any, method: OwnText, series: RpcSeries | UnrecordedSeries
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        async def wrapper(request: Any, context: Context) -> Any:
            if isinstance(request, _Undecodable):
                self._refused(series)
                await self._refuse(context, method, request)
            call = _Call(method, context.peer(), series)
            try:
                await self._enter(call, context, request)
                response = await behavior(request, context)
                series.sent.inc()
                return response
            except asyncio.CancelledError:
                call.code = self._cancelled_code(context)
                raise
            except Exception as error:
                await self._fail(call, context, error)
            finally:
                call.finish()

        return wrapper

    def _wrap_stream(
        self, behavior: Any, method: OwnText, series: RpcSeries | UnrecordedSeries
    ) -> Callable[[Any, Context], Awaitable[None]]:
        # A coroutine that writes each response itself (gRPC's reader/writer form), not an
        # async generator gRPC iterates: one generator fewer to resume for every message of
        # every stream (a thousand subscribers, each event).
        async def wrapper(request: Any, context: Context) -> None:
            if isinstance(request, _Undecodable):
                self._refused(series)
                await self._refuse(context, method, request)
            call = _Call(method, context.peer(), series)
            sent = series.sent
            try:
                await self._enter(call, context, request)
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        await context.write(response)
                        sent.inc()
            except asyncio.CancelledError:  # the client went away, or the server is stopping
                call.code = self._cancelled_code(context)
                raise
            except Exception as error:
                await self._fail(call, context, error)
            finally:
                call.finish()

        return wrapper
