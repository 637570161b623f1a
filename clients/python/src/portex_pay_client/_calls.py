"""Plumbing shared by the blocking and the asyncio client: credentials, requests and deadlines.

Holds the API key behind a masked holder (so that no repr, log line or traceback shows it),
builds the request messages from the convenience arguments, resolves the per-call deadline and
merges the channel options, among them the service config by which gRPC retries calls
(`retry.service_config`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias, TypedDict, TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from portex.payment.v1 import payment_pb2

from .retry import RetryPolicy, service_config

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
    metadata: Mapping[str, str]
    subscription_period: int | None


class CatalogItemFields(TypedDict, total=False):
    """The fields of a ``CatalogItem``, for ``set_catalog_item(**fields)``."""

    key: str
    amount: int
    title: str | None
    description: str | None
    photo_url: str | None
    metadata: Mapping[str, str]
    subscription_period: int | None


class BotMessagesFields(TypedDict, total=False):
    """The fields of a ``SetBotMessagesRequest``, for ``set_bot_messages(**fields)``: a field left
    out (or None) is unchanged, an empty text goes back to the default."""

    support_text: str | None
    terms_text: str | None
    buyer_messages: bool | None
    paid_message: str | None
    refunded_message: str | None


class ListOrdersFields(TypedDict, total=False):
    """The fields of a ``ListOrdersRequest``: an AIP-160 ``filter`` (see payment.proto), e.g.
    ``'tg_use_id = 42 AND state = PAID'``, the page size and the page token."""

    filter: str
    page_size: int
    page_token: str


TimeLike: TypeAlias = "datetime | timestamp_pb2.Timestamp | None"
"""A point in time: a timezone-aware ``datetime``, a ``Timestamp``, or None (unset)."""

RefundStateLike: TypeAlias = "payment_pb2.Refund.State.ValueType | str | None"
"""A Refund.State: the enum value (``payment_pb2.Refund.FAILED``), its name or None (unset)."""

RefundReasonLike: TypeAlias = "payment_pb2.Refund.ReasonCode.ValueType | str | None"
"""A Refund.ReasonCode: the enum value, its name (``"FRAUDULENT"``) or None (unset)."""


class ListRefundsFields(TypedDict, total=False):
    """The fields of a ``ListRefundsRequest``: by order, state and creation time (start
    inclusive, end exclusive); unset filters match every refund."""

    tg_payment_id: int | None
    state: RefundStateLike
    create_time_start: TimeLike
    create_time_end: TimeLike
    page_size: int
    page_token: str


class ListStarTransactionsFields(TypedDict, total=False):
    """The fields of a ``ListStarTransactionsRequest``: by date (start inclusive, end exclusive)
    and partner kind (``["user", "fragment"]``)."""

    date_start: TimeLike
    date_end: TimeLike
    partner_types: Iterable[str]
    page_size: int
    page_token: str


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


def channel_options(
    options: Sequence[tuple[str, Any]] | None = None, retry: RetryPolicy = DEFAULT_RETRY_POLICY
) -> list[tuple[str, Any]]:
    """The options of a client's channel: `DEFAULT_CHANNEL_OPTIONS` and the service config that
    makes gRPC retry calls as ``retry`` says, with the caller's ``options`` replacing or adding
    entries. Public, for a channel made elsewhere and given to ``from_channel``."""
    merged: dict[str, Any] = dict(DEFAULT_CHANNEL_OPTIONS)
    merged["grpc.enable_retries"] = 1
    merged["grpc.service_config"] = service_config(retry)
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


M = TypeVar("M", bound=Message)


def strings(values: Iterable[str], name: str) -> list[str]:
    """A repeated string field's values; one string would otherwise become its characters."""
    if isinstance(values, str):
        raise TypeError(f"{name} must be a collection of strings, not one string")
    return list(values)


def build_request(
    message_type: type[M], request: M | None, fields: Mapping[str, Any], *, call: str
) -> M:
    """The request to send: ``request`` as given, or one built from the keyword ``fields``.

    A field given as None is left unset. Enum fields take their value or their name, time fields
    a ``datetime`` or a ``Timestamp`` (protobuf converts both).
    """
    given = {name: value for name, value in fields.items() if value is not None}
    if request is None:
        factory: Any = message_type
        built: M = factory(**given)
        return built
    if given:
        raise TypeError(
            f"{call}() takes either a {message_type.__name__} or keyword fields, not both"
        )
    if not isinstance(request, message_type):
        raise TypeError(f"request must be a {message_type.__name__}, not {type(request).__name__}")
    return request


def build_named_request(
    message_type: type[M], name: object, field: str, *, call: str, **fields: Any
) -> M:
    """The request for one object named by ``name`` (an order id, a charge id, an item key) put
    in ``field``, with the other ``fields`` (None: unset); or ``name`` itself, a whole request."""
    if isinstance(name, message_type):
        return build_request(message_type, name, fields, call=call)
    return build_request(message_type, None, {field: name, **fields}, call=call)


def build_pay_request(
    request: payment_pb2.PayRequest | None, fields: PayFields
) -> payment_pb2.PayRequest:
    """The PayRequest to send: ``request`` as given, or one built from keyword ``fields``; with a
    ``request_id`` of its own (a UUID) when it has none, so that a retried Pay (after a lost
    answer) finds the order its first attempt made instead of making another. The caller's
    request is copied, not changed."""
    message = build_request(payment_pb2.PayRequest, request, fields, call="pay")
    if message.request_id:
        return message
    with_id = payment_pb2.PayRequest()
    with_id.CopyFrom(message)
    with_id.request_id = str(uuid.uuid4())
    return with_id


def build_query_order_request(
    tg_payment_id: int | payment_pb2.QueryOrderRequest | None = None,
    telegram_payment_charge_id: str | None = None,
) -> payment_pb2.QueryOrderRequest:
    """A QueryOrderRequest by order id or by Telegram charge id (exactly one), or the request."""
    if (tg_payment_id is None) == (telegram_payment_charge_id is None):
        raise TypeError(
            "query_order() takes an order id (or a QueryOrderRequest) or "
            "telegram_payment_charge_id, exactly one of them"
        )
    if telegram_payment_charge_id is not None:
        return payment_pb2.QueryOrderRequest(telegram_payment_charge_id=telegram_payment_charge_id)
    return build_named_request(
        payment_pb2.QueryOrderRequest, tg_payment_id, "tg_payment_id", call="query_order"
    )


def build_resume_payment_request(
    tg_use_id: int | payment_pb2.ResumePaymentRequest,
) -> payment_pb2.ResumePaymentRequest:
    """A ResumePaymentRequest from a Telegram user id, or the request itself."""
    return build_named_request(
        payment_pb2.ResumePaymentRequest, tg_use_id, "tg_use_id", call="resume_payment"
    )


def build_set_catalog_item_request(
    item: payment_pb2.CatalogItem | payment_pb2.SetCatalogItemRequest | None,
    fields: CatalogItemFields,
) -> payment_pb2.SetCatalogItemRequest:
    """The SetCatalogItemRequest to send: for ``item`` (a CatalogItem, or the whole request), or
    for the item built from keyword ``fields``."""
    if isinstance(item, payment_pb2.SetCatalogItemRequest):
        return build_request(
            payment_pb2.SetCatalogItemRequest, item, fields, call="set_catalog_item"
        )
    built = build_request(payment_pb2.CatalogItem, item, fields, call="set_catalog_item")
    return payment_pb2.SetCatalogItemRequest(item=built)


def build_list_star_transactions_request(
    request: payment_pb2.ListStarTransactionsRequest | None, fields: ListStarTransactionsFields
) -> payment_pb2.ListStarTransactionsRequest:
    """The ListStarTransactionsRequest to send: ``request`` as given, or one built from keyword
    ``fields``."""
    values: dict[str, Any] = dict(fields)
    if "partner_types" in values:
        values["partner_types"] = strings(values["partner_types"], "partner_types")
    return build_request(
        payment_pb2.ListStarTransactionsRequest, request, values, call="list_star_transactions"
    )
