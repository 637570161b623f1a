"""Watching an application's events: StreamInvoiceEvents as an iterator that keeps its place.

`AsyncEventWatch` (``AsyncPaymentClient.watch``) and `EventWatch` (``PaymentClient.watch``) open
the stream, hand out every event that is not a heartbeat, and remember the ``cursor`` of every
message, heartbeats included (a heartbeat carries the stream's position, which moves past events
that the filters leave out). When the stream breaks — the call fails with UNAVAILABLE (server
shutting down or gone, connection lost, a keepalive ping unanswered) or the stream ends although
it never should — the watch waits as the `RetryPolicy` says and opens it again with
``after_cursor`` set to that cursor; the server then sends exactly the events after it, so the
caller sees each event once, in stream order, across any number of reconnections.

Every other failure ends the watch with `PortexPayError`: OUT_OF_RANGE / CURSOR_EXPIRED above all
(the events after the cursor are gone: re-list from RETENTION_START with ListEvents), as well as
UNAUTHENTICATED, INVALID_ARGUMENT (a malformed cursor) and the like. So does a run of
``policy.max_attempts`` failed attempts in a row, counted since the last message received; the
default policy, `DEFAULT_WATCH_RETRY_POLICY`, never runs out (``max_attempts=sys.maxsize``).

Before the first message of a watch started without ``after_cursor`` there is no cursor yet; a
reconnection then starts from ``start`` again. For ``start=RETENTION_START`` that is the same
place; for NOW (the default) events committed between the two connections are not seen, as the
server sends its first heartbeat only after a heartbeat interval of idleness. Pass a cursor (or
RETENTION_START) when even those must not be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeAlias

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from portex.payment.v1 import payment_pb2

from .errors import PortexPayError
from .retry import RETRYABLE_CODES, RetryPolicy

__all__ = [
    "DEFAULT_WATCH_RETRY_POLICY",
    "AsyncEventWatch",
    "EventWatch",
    "StartPositionLike",
    "build_list_events_request",
    "build_stream_request",
]

log = logging.getLogger("portex_pay_client.watch")

DEFAULT_WATCH_RETRY_POLICY = RetryPolicy(
    max_attempts=sys.maxsize, initial_backoff=0.1, max_backoff=5.0
)
"""Reconnects forever, after waits growing from 0.1 s with jitter to at most 5 s."""

StartPositionLike: TypeAlias = "payment_pb2.StartPosition.ValueType | str | None"
"""A StartPosition: the enum value (``payment_pb2.NOW``), its name (``"NOW"``) or None (unset)."""


def _start_position(start: StartPositionLike) -> payment_pb2.StartPosition.ValueType:
    if start is None:
        return payment_pb2.START_POSITION_UNSPECIFIED
    if isinstance(start, str):
        try:
            return payment_pb2.StartPosition.Value(start)
        except ValueError:
            raise ValueError(f"unknown start position {start!r}") from None
    return payment_pb2.StartPosition.ValueType(start)


def _types(types: Iterable[str]) -> list[str]:
    if isinstance(types, str):
        raise TypeError("types must be a collection of event types, not one string")
    return list(types)


def build_stream_request(
    *,
    tg_payment_id: int | None,
    tg_use_id: int | None,
    types: Iterable[str],
    after_cursor: str,
    start: StartPositionLike,
) -> payment_pb2.StreamInvoiceEventsRequest:
    """A StreamInvoiceEventsRequest from the convenience arguments of ``watch``."""
    request = payment_pb2.StreamInvoiceEventsRequest(
        types=_types(types), after_cursor=after_cursor, start=_start_position(start)
    )
    if tg_payment_id is not None:
        request.tg_payment_id = tg_payment_id
    if tg_use_id is not None:
        request.tg_use_id = tg_use_id
    return request


def build_list_events_request(
    request: payment_pb2.ListEventsRequest | None,
    *,
    tg_payment_id: int | None,
    tg_use_id: int | None,
    types: Iterable[str],
    after_cursor: str,
    start: StartPositionLike,
    page_size: int,
    page_token: str,
) -> payment_pb2.ListEventsRequest:
    """The ListEventsRequest to send: ``request`` as given, or one built from the keywords."""
    if request is not None:
        if not isinstance(request, payment_pb2.ListEventsRequest):
            raise TypeError(f"request must be a ListEventsRequest, not {type(request).__name__}")
        given = (tg_payment_id, tg_use_id, _types(types), after_cursor, start, page_size)
        if given != (None, None, [], "", None, 0) or page_token:
            raise TypeError("list_events() takes either a ListEventsRequest or keywords, not both")
        return request
    built = payment_pb2.ListEventsRequest(
        types=_types(types),
        after_cursor=after_cursor,
        start=_start_position(start),
        page_size=page_size,
        page_token=page_token,
    )
    if tg_payment_id is not None:
        built.tg_payment_id = tg_payment_id
    if tg_use_id is not None:
        built.tg_use_id = tg_use_id
    return built


class _Position:
    """What both watches share: the request, the last cursor, failures since the last message."""

    __slots__ = ("cursor", "failures", "policy", "rand", "reconnects", "request")

    def __init__(
        self,
        request: payment_pb2.StreamInvoiceEventsRequest,
        policy: RetryPolicy,
        rand: Callable[[], float],
    ) -> None:
        self.request = request
        self.cursor: str = request.after_cursor
        self.failures = 0
        self.reconnects = 0
        self.policy = policy
        self.rand = rand

    def next_request(self) -> payment_pb2.StreamInvoiceEventsRequest:
        """The request of the next connection: the original one, resumed after the cursor."""
        request = payment_pb2.StreamInvoiceEventsRequest()
        request.CopyFrom(self.request)
        request.after_cursor = self.cursor
        return request

    def received(self, message: payment_pb2.InvoiceEvent) -> bool:
        """Takes the message's cursor; True when it is an event for the caller (no heartbeat)."""
        if message.cursor:
            self.cursor = message.cursor
        self.failures = 0
        return not message.heartbeat

    def failed(self, error: PortexPayError) -> float | None:
        """Seconds to wait before reconnecting after ``error``, or None to raise it."""
        self.failures += 1
        if error.code not in RETRYABLE_CODES or self.failures >= self.policy.max_attempts:
            return None
        delay = self.policy.backoff(self.failures, self.rand)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        self.reconnects += 1
        log.info(
            "event stream interrupted (%s); resuming in %.2f s after cursor %r",
            error,
            delay,
            self.cursor,
        )
        return delay


def _ended_error() -> PortexPayError:
    return PortexPayError(
        grpc.StatusCode.UNAVAILABLE, "the event stream ended, which it never does on its own"
    )


class _Watch:
    """What both watches share: the resume position and whether the watch has ended."""

    __slots__ = ("_call", "_closed", "_open", "_position")

    _position: _Position
    _closed: asyncio.Event | threading.Event

    @property
    def cursor(self) -> str:
        """The last cursor received (event or heartbeat): resume after it. Empty before any."""
        return self._position.cursor

    @property
    def reconnects(self) -> int:
        """How many times the stream was opened again after breaking."""
        return self._position.reconnects

    @property
    def closed(self) -> bool:
        """True once the watch has ended: closed, or failed for good."""
        return self._closed.is_set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cursor={self.cursor!r}, reconnects={self.reconnects})"


class AsyncEventWatch(_Watch):
    """The events of a ``StreamInvoiceEvents`` stream that resumes itself (see the module doc).

    ``async for event in watch`` yields each `InvoiceEvent` once (never a heartbeat); `cursor`
    is the position to resume from — persist it after handling an event, and pass it as
    ``after_cursor`` to a later watch. The stream opens on the first iteration. Use
    ``async with`` (or `aclose()`) to end it; cancelling a task that waits for an event ends the
    current connection only, and a later iteration resumes from `cursor`.
    """

    __slots__ = ()
    _closed: asyncio.Event

    def __init__(
        self,
        open_stream: Callable[[payment_pb2.StreamInvoiceEventsRequest], Any],
        request: payment_pb2.StreamInvoiceEventsRequest,
        policy: RetryPolicy,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._open = open_stream
        self._position = _Position(request, policy, rand)
        self._call: Any = None
        self._closed = asyncio.Event()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> payment_pb2.InvoiceEvent:
        while True:
            if self._closed.is_set():
                raise StopAsyncIteration
            if self._call is None:
                self._call = self._open(self._position.next_request())
            try:
                message = await self._call.read()
            except grpc.RpcError as exc:
                self._call = None
                if self._closed.is_set():
                    raise StopAsyncIteration from None
                error = PortexPayError.from_rpc_error(exc)
                delay = self._position.failed(error)
                if delay is None:
                    self._closed.set()
                    raise error from exc
            except asyncio.CancelledError:
                self._drop_call()
                task = asyncio.current_task()
                if self._closed.is_set() and not (task is not None and task.cancelling()):
                    raise StopAsyncIteration from None  # aclose() from another task
                raise
            except BaseException:
                self._drop_call()
                raise
            else:
                if message is not grpc.aio.EOF:
                    if self._position.received(message):
                        event: payment_pb2.InvoiceEvent = message
                        return event
                    continue
                self._call = None
                error = _ended_error()
                delay = self._position.failed(error)
                if delay is None:
                    self._closed.set()
                    raise error
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)

    def _drop_call(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            call.cancel()

    async def aclose(self) -> None:
        """Ends the watch: cancels the stream; iterating further stops at once."""
        self._closed.set()
        self._drop_call()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class EventWatch(_Watch):
    """The blocking twin of `AsyncEventWatch`: ``for event in watch``, `cursor`, ``with``.

    `close()` may be called from another thread; the iteration then stops.
    """

    __slots__ = ("_lock",)
    _closed: threading.Event

    def __init__(
        self,
        open_stream: Callable[[payment_pb2.StreamInvoiceEventsRequest], Any],
        request: payment_pb2.StreamInvoiceEventsRequest,
        policy: RetryPolicy,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._open = open_stream
        self._position = _Position(request, policy, rand)
        self._call: Any = None
        self._closed = threading.Event()
        self._lock = threading.Lock()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> payment_pb2.InvoiceEvent:
        while True:
            with self._lock:
                if self._closed.is_set():
                    raise StopIteration
                if self._call is None:
                    self._call = self._open(self._position.next_request())
                call = self._call
            try:
                message = next(call)
            except StopIteration:
                self._call = None
                error = _ended_error()
                delay = self._position.failed(error)
                if delay is None:
                    self._closed.set()
                    raise error from None
            except grpc.RpcError as exc:
                self._call = None
                if self._closed.is_set():
                    raise StopIteration from None
                error = PortexPayError.from_rpc_error(exc)
                delay = self._position.failed(error)
                if delay is None:
                    self._closed.set()
                    raise error from exc
            except BaseException:  # KeyboardInterrupt and the like: a later next() resumes
                self._drop_call()
                raise
            else:
                if self._position.received(message):
                    event: payment_pb2.InvoiceEvent = message
                    return event
                continue
            self._closed.wait(delay)

    def _drop_call(self) -> None:
        with self._lock:
            call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def close(self) -> None:
        """Ends the watch: cancels the stream; iterating further stops at once."""
        self._closed.set()
        self._drop_call()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
