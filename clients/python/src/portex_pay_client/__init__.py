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

``PaymentClient`` has the same methods without ``await``, and ``with`` in place of
``async with``. Pass ``channel_credentials=grpc.ssl_channel_credentials()`` for TLS.
"""

from portex.payment.v1.payment_pb2 import (
    InvoiceEvent,
    Order,
    PayRequest,
    PayResponse,
    QueryOrderRequest,
    ResumePaymentRequest,
    ResumePaymentResponse,
    StreamInvoiceEventsRequest,
)

from ._calls import DEFAULT_RETRY_POLICY, DEFAULT_TIMEOUT, PayFields
from .aio import AsyncPaymentClient
from .client import PaymentClient
from .errors import ERROR_DOMAIN, PortexPayError
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_TIMEOUT",
    "ERROR_DOMAIN",
    "AsyncPaymentClient",
    "InvoiceEvent",
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
    "StreamInvoiceEventsRequest",
]
