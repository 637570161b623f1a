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

The two watches are written once: `AsyncEventWatch` in ``aio.py``, and `EventWatch` in
``client.py``, generated from it by ``python -m portex_pay_devtools.unasync``. What they share is
here: the requests, the resume position and retry decision (`_Position`) and the open call
(`BaseEventWatch`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias, TypedDict

import grpc  # type: ignore[import-untyped, unused-ignore]

from portex.payment.v1 import payment_pb2

from ._calls import build_request, strings
from .errors import PortexPayError
from .retry import RETRYABLE_CODES, RetryPolicy

__all__ = [
    "DEFAULT_WATCH_RETRY_POLICY",
    "BaseEventWatch",
    "ListEventsFields",
    "StartPositionLike",
    "build_list_events_request",
    "build_stream_request",
    "stream_ended_error",
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
        types=strings(types, "types"), after_cursor=after_cursor, start=_start_position(start)
    )
    if tg_payment_id is not None:
        request.tg_payment_id = tg_payment_id
    if tg_use_id is not None:
        request.tg_use_id = tg_use_id
    return request


class ListEventsFields(TypedDict, total=False):
    """The fields of a ``ListEventsRequest``, for ``list_events(**fields)``: by order, user and
    type, starting after a cursor or at a position (RETENTION_START when unset)."""

    tg_payment_id: int | None
    tg_use_id: int | None
    types: Iterable[str]
    after_cursor: str
    start: StartPositionLike
    page_size: int
    page_token: str


def build_list_events_request(
    request: payment_pb2.ListEventsRequest | None, fields: ListEventsFields
) -> payment_pb2.ListEventsRequest:
    """The ListEventsRequest to send: ``request`` as given, or one built from keyword ``fields``."""
    values: dict[str, Any] = dict(fields)
    if "types" in values:
        values["types"] = strings(values["types"], "types")
    if "start" in values:
        values["start"] = _start_position(values["start"])
    return build_request(payment_pb2.ListEventsRequest, request, values, call="list_events")


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


def stream_ended_error() -> PortexPayError:
    """The error of a stream that ended: the server never ends one, so it broke (UNAVAILABLE)."""
    return PortexPayError(
        grpc.StatusCode.UNAVAILABLE, "the event stream ended, which it never does on its own"
    )


class BaseEventWatch:
    """What both watches share: the resume position, the open call, whether the watch has ended.

    The call is opened and dropped under a lock, as the blocking watch may be closed from another
    thread while it waits; the asyncio watch only holds the lock for a moment, within one step.
    """

    __slots__ = ("_call", "_closed", "_lock", "_open", "_position")

    def __init__(
        self,
        open_stream: Callable[[payment_pb2.StreamInvoiceEventsRequest], Any],
        request: payment_pb2.StreamInvoiceEventsRequest,
        policy: RetryPolicy,
        rand: Callable[[], float],
        closed: asyncio.Event | threading.Event,
    ) -> None:
        self._open = open_stream
        self._position = _Position(request, policy, rand)
        self._call: Any = None
        self._closed = closed
        self._lock = threading.Lock()

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

    def _current_call(self) -> Any:
        """The open call, opened after the cursor if there is none; None once the watch ended."""
        with self._lock:
            if self._closed.is_set():
                return None
            if self._call is None:
                self._call = self._open(self._position.next_request())
            return self._call

    def _drop_call(self) -> None:
        """Cancels the open call, if any; the next `_current_call` opens another."""
        with self._lock:
            call, self._call = self._call, None
        if call is not None:
            call.cancel()
