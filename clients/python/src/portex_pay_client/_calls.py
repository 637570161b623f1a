"""Plumbing shared by the blocking and the asyncio client: credentials, requests and deadlines.

Holds the API key behind a masked holder (so that no repr, log line or traceback shows it),
builds the request messages from the convenience arguments, resolves the per-call deadline and
merges the channel options. The retry loop that runs one logical call as a series of attempts is
``acall_with_retries`` in ``aio.py``; its blocking twin ``call_with_retries`` in ``client.py`` is
generated from it (``python -m portex_pay_devtools.unasync``), and both leave the decision to
the pure `retry.retry_delay`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from portex.payment.v1 import payment_pb2

from .retry import RetryPolicy

DEFAULT_TIMEOUT = 10.0
"""The default deadline of every call, in seconds, all attempts together."""

DEFAULT_RETRY_POLICY = RetryPolicy()
"""Up to 4 attempts, waits growing from 0.1 s with jitter, capped at 2 s, UNAVAILABLE only."""

DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    # While a call is open (a watch, above all), ping every 30 s and give up on a connection that
    # does not answer within 10 s: a server that vanished without closing the connection then
    # fails the stream with UNAVAILABLE, and the watch resumes elsewhere. The server accepts
    # pings every 10 s or more (payment.proto); a stream that only receives keeps pinging.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's own reconnection backoff grows to 120 s by default; a watch waiting for a restarted
    # server would sit that long after its own (at most 5 s) wait. Keep the two alike.
    ("grpc.max_reconnect_backoff_ms", 5_000),
)
"""Channel options of the channels the clients create; ``options=`` entries override them."""


class PayFields(TypedDict, total=False):
    """The fields of a ``PayRequest``, for ``pay(**fields)``; see payment.proto for each rule."""

    tg_use_id: int
    amount: int
    label: str
    title: str
    description: str
    payload: str | None
    photo_url: str | None
    photo_size: int | None
    photo_width: int | None
    photo_height: int | None
    callback_url: str | None
    request_id: str


class ApiKey:
    """An API key that renders as ``ApiKey(***)`` and only shows itself in call metadata."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("api_key must be a non-empty string")
        if not (value.isascii() and value.isprintable()) or value.strip() != value:
            # The key itself is deliberately left out of the message.
            raise ValueError(
                "api_key must be printable ASCII without surrounding whitespace "
                "(it is sent as gRPC metadata)"
            )
        self._value = value

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata that authenticates a call: ``authorization: Bearer <key>``."""
        return (("authorization", f"Bearer {self._value}"),)

    def __repr__(self) -> str:
        return "ApiKey(***)"

    __str__ = __repr__


def channel_options(options: Sequence[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    """`DEFAULT_CHANNEL_OPTIONS` with the caller's ``options`` replacing or adding entries."""
    merged = dict(DEFAULT_CHANNEL_OPTIONS)
    merged.update(options or ())
    return list(merged.items())


def check_timeout(timeout: float) -> float:
    """Returns ``timeout`` as a float if it is a usable deadline (positive, finite)."""
    value = float(timeout)
    if not 0 < value < float("inf"):
        raise ValueError("timeout must be a positive, finite number of seconds")
    return value


def resolve_timeout(default: float, override: float | None) -> float:
    """The deadline of one call: the per-call ``override`` if given, else the client's."""
    return default if override is None else check_timeout(override)


def build_pay_request(
    request: payment_pb2.PayRequest | None, fields: PayFields
) -> payment_pb2.PayRequest:
    """The PayRequest to send: ``request`` as given, or one built from keyword ``fields``."""
    if request is None:
        return payment_pb2.PayRequest(**fields)
    if fields:
        raise TypeError("pay() takes either a PayRequest or keyword fields, not both")
    if not isinstance(request, payment_pb2.PayRequest):
        raise TypeError(f"request must be a PayRequest, not {type(request).__name__}")
    return request


def build_query_order_request(
    tg_payment_id: int | payment_pb2.QueryOrderRequest,
) -> payment_pb2.QueryOrderRequest:
    """A QueryOrderRequest from an order id, or the request itself."""
    if isinstance(tg_payment_id, payment_pb2.QueryOrderRequest):
        return tg_payment_id
    return payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id)


def build_resume_payment_request(
    tg_use_id: int | payment_pb2.ResumePaymentRequest,
) -> payment_pb2.ResumePaymentRequest:
    """A ResumePaymentRequest from a Telegram user id, or the request itself."""
    if isinstance(tg_use_id, payment_pb2.ResumePaymentRequest):
        return tg_use_id
    return payment_pb2.ResumePaymentRequest(tg_use_id=tg_use_id)
