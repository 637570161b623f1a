"""Thin asyncio and blocking clients for the Portex Pay gRPC service (Telegram Stars payments).

`AsyncPaymentClient` (``grpc.aio``) and `PaymentClient` (blocking) mirror the RPCs of
``portex.payment.v1.PaymentService`` and take and return its generated messages, re-exported
here. Every call authenticates with the API key, has a deadline (10 s unless told otherwise),
is retried on UNAVAILABLE where that is safe (see `RetryPolicy`), and fails with
`PortexPayError`::

    import uuid

    from portex_pay_client import AsyncPaymentClient, PortexPayError

    async with AsyncPaymentClient("localhost:50051", api_key) as client:
        try:
            paid = await client.pay(
                tg_use_id=42, amount=5, label="Sword", title="Sword",
                description="A sharp sword", request_id=str(uuid.uuid4()),
            )
        except PortexPayError as err:
            print(err.code, err.reason, err.field_violations, err.retry_after)
        else:
            order = await client.query_order(paid.tg_payment_id, timeout=2.0)
            resumable = await client.resume_payment(42)

The application's events, as they happen, each once, resuming by itself after the last cursor
when the stream breaks (a server restart, a lost connection); persist ``events.cursor`` to carry
on after a restart of your own::

    async with client.watch(after_cursor=load_cursor(), types=["order.paid"]) as events:
        async for event in events:
            await deliver(event.order)
            save_cursor(events.cursor)

Every list RPC comes three ways: ``list_orders(...)`` is one page (the RPC as it is; pass
``page_token=page.next_page_token`` for the next), ``list_orders_pages(...)`` iterates over every
page, following ``next_page_token`` until it comes back empty, and ``iter_orders(...)`` over every
order of those pages. Each page is one call with its own deadline and retries, so a long listing
holds nothing open between pages; an error is raised where the iteration reaches it. The same goes
for ``list_refunds``, ``list_star_transactions`` and ``list_events`` (whose last page is the
newest event: its ``cursor`` can start a watch)::

    async for order in client.iter_orders(filter="state = PAID AND fulfilled = false"):
        await deliver(order)
        await client.acknowledge_order(order.tg_payment_id)

    order = await client.query_order(telegram_payment_charge_id="stxAbC...")  # a buyer's receipt

The ``portex-pay-watch`` command prints the event stream as JSON lines; ``portex-pay-orders``
lists orders (``--filter``) or shows one (by id or ``--charge``) for support staff.

``PaymentClient`` has the same methods without ``await``, and ``with`` in place of
``async with``. Pass ``tls=TlsOptions()`` for TLS (``TlsOptions(root_certificates="ca.pem",
certificate="me.pem", private_key="me.key")`` for a private CA and mTLS), or your own
``channel_credentials``.
"""

from portex.payment.v1.payment_pb2 import (
    NOW,
    RETENTION_START,
    AcknowledgeOrderRequest,
    BotMessages,
    CatalogItem,
    DeleteCatalogItemResponse,
    HeldStars,
    InvoiceClosedResult,
    InvoiceEvent,
    ListCatalogItemsResponse,
    ListEventsRequest,
    ListEventsResponse,
    ListOrdersRequest,
    ListOrdersResponse,
    ListRefundsRequest,
    ListRefundsResponse,
    ListStarTransactionsRequest,
    ListStarTransactionsResponse,
    Order,
    PayRequest,
    PayResponse,
    QueryOrderRequest,
    Refund,
    RefundPaymentRequest,
    RefundPaymentResponse,
    ReportInvoiceClosedResponse,
    ResumePaymentRequest,
    ResumePaymentResponse,
    SetBotMessagesRequest,
    SetCatalogItemRequest,
    StarBalance,
    StartPosition,
    StarTransaction,
    StreamInvoiceEventsRequest,
    TelegramUser,
)

from ._calls import (
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMEOUT,
    BotMessagesFields,
    CatalogItemFields,
    ListOrdersFields,
    ListRefundsFields,
    ListStarTransactionsFields,
    PayFields,
    channel_options,
)
from ._watch import DEFAULT_WATCH_RETRY_POLICY, ListEventsFields
from .aio import AsyncEventWatch, AsyncPaymentClient
from .client import EventWatch, PaymentClient
from .errors import ERROR_DOMAIN, PortexPayError
from .retry import RetryPolicy
from .tls import TlsOptions

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WATCH_RETRY_POLICY",
    "ERROR_DOMAIN",
    "NOW",
    "RETENTION_START",
    "AcknowledgeOrderRequest",
    "AsyncEventWatch",
    "AsyncPaymentClient",
    "BotMessages",
    "BotMessagesFields",
    "CatalogItem",
    "CatalogItemFields",
    "DeleteCatalogItemResponse",
    "EventWatch",
    "HeldStars",
    "InvoiceClosedResult",
    "InvoiceEvent",
    "ListCatalogItemsResponse",
    "ListEventsFields",
    "ListEventsRequest",
    "ListEventsResponse",
    "ListOrdersFields",
    "ListOrdersRequest",
    "ListOrdersResponse",
    "ListRefundsFields",
    "ListRefundsRequest",
    "ListRefundsResponse",
    "ListStarTransactionsFields",
    "ListStarTransactionsRequest",
    "ListStarTransactionsResponse",
    "Order",
    "PayFields",
    "PayRequest",
    "PayResponse",
    "PaymentClient",
    "PortexPayError",
    "QueryOrderRequest",
    "Refund",
    "RefundPaymentRequest",
    "RefundPaymentResponse",
    "ReportInvoiceClosedResponse",
    "ResumePaymentRequest",
    "ResumePaymentResponse",
    "RetryPolicy",
    "SetBotMessagesRequest",
    "SetCatalogItemRequest",
    "StarBalance",
    "StarTransaction",
    "StartPosition",
    "StreamInvoiceEventsRequest",
    "TelegramUser",
    "TlsOptions",
    "channel_options",
]
