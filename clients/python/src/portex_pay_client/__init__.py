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

``list_events`` pages through the same events (``page_token=response.next_page_token``). The
``portex-pay-watch`` command prints the stream as JSON lines.

``PaymentClient`` has the same methods without ``await``, and ``with`` in place of
``async with``. Pass ``channel_credentials=grpc.ssl_channel_credentials()`` for TLS.
"""

from portex.payment.v1.payment_pb2 import (
    NOW,
    RETENTION_START,
    InvoiceClosedResult,
    InvoiceEvent,
    ListEventsRequest,
    ListEventsResponse,
    Order,
    PayRequest,
    PayResponse,
    QueryOrderRequest,
    ResumePaymentRequest,
    ResumePaymentResponse,
    StartPosition,
    StreamInvoiceEventsRequest,
)

from ._calls import DEFAULT_RETRY_POLICY, DEFAULT_TIMEOUT, PayFields
from ._watch import DEFAULT_WATCH_RETRY_POLICY
from .aio import AsyncEventWatch, AsyncPaymentClient
from .client import EventWatch, PaymentClient
from .errors import ERROR_DOMAIN, PortexPayError
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WATCH_RETRY_POLICY",
    "ERROR_DOMAIN",
    "NOW",
    "RETENTION_START",
    "AsyncEventWatch",
    "AsyncPaymentClient",
    "EventWatch",
    "InvoiceClosedResult",
    "InvoiceEvent",
    "ListEventsRequest",
    "ListEventsResponse",
    "Order",
    "PayFields",
    "PayRequest",
    "PayResponse",
    "PaymentClient",
    "PortexPayError",
    "QueryOrderRequest",
    "ResumePaymentRequest",
    "ResumePaymentResponse",
    "RetryPolicy",
    "StartPosition",
    "StreamInvoiceEventsRequest",
]
