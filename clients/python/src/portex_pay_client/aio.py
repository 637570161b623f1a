"""The asyncio Portex Pay client, `AsyncPaymentClient`, on a ``grpc.aio`` channel.

Each method mirrors one RPC of ``portex.payment.v1.PaymentService``, takes and returns the
generated messages, sends ``authorization: Bearer <api key>`` with every attempt, applies the
client's deadline (or a per-call ``timeout=``) to all attempts together, retries UNAVAILABLE
only where repeating is safe (see `portex_pay_client.retry`) and raises every RPC failure as
`PortexPayError`. The exception is `watch`, the event stream: no deadline, and it resumes
after its last cursor whenever the stream breaks (see ``portex_pay_client._watch``). The client
owns the channel it creates and closes it on `close()` or on leaving ``async with``; a client
made `from_channel` leaves the channel to its owner unless told otherwise. It may be shared
between tasks, as the channel is. A paged list RPC has two iterators beside its one-page method
(``list_orders_pages`` over the pages, ``iter_orders`` over the orders): each page is one call
with its own deadline and retries, following ``next_page_token`` until it comes back empty.

Retries are gRPC's own: the channel a client creates carries a service config made from its
`RetryPolicy` (``retry.service_config``). Here too is the client's event watch,
`AsyncEventWatch`. The requests, the resume position and the retry policy are shared by both
clients (``_calls``, ``_watch``, ``retry``).
"""

# unasync: async-only
# The blocking client, client.py, is generated from this file: edit this one, then run
# `python -m portex_pay_devtools.unasync` (`make check` fails while client.py is stale). Lines
# and blocks marked `# unasync: ...` differ between the two; see that script.
# unasync: end
from __future__ import annotations

# unasync: sync-only
# import random
# import threading
# unasync: async-only
import asyncio
import contextlib
import random

# unasync: end
# unasync: sync-only
# from collections.abc import Callable, Iterable, Iterator, Sequence
# unasync: async-only
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

# unasync: end
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Unpack

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]  # unasync: remove

from portex.payment.v1 import payment_pb2, payment_pb2_grpc

from ._calls import (
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMEOUT,
    ApiKey,
    BotMessagesFields,
    CatalogItemFields,
    ListOrdersFields,
    ListRefundsFields,
    ListStarTransactionsFields,
    PayFields,
    RefundReasonLike,
    build_list_star_transactions_request,
    build_named_request,
    build_pay_request,
    build_query_order_request,
    build_request,
    build_resume_payment_request,
    build_set_catalog_item_request,
    channel_options,
    check_timeout,
    resolve_timeout,
)
from ._watch import (
    DEFAULT_WATCH_RETRY_POLICY,
    BaseEventWatch,
    ListEventsFields,
    StartPositionLike,
    build_list_events_request,
    build_stream_request,
    stream_ended_error,
)
from .errors import PortexPayError
from .retry import RetryPolicy
from .tls import TlsOptions

if TYPE_CHECKING:
    from portex.payment.v1.payment_pb2_grpc import PaymentServiceAsyncStub

__all__ = ["AsyncEventWatch", "AsyncPaymentClient"]


class AsyncPaymentClient:
    """An asyncio client of the Portex Pay PaymentService.

    ``target`` is a gRPC target such as ``"pay.example.com:443"``; ``channel_credentials``
    (e.g. ``grpc.ssl_channel_credentials()``) makes the channel secure, None makes it insecure;
    ``options`` are extra gRPC channel options. ``tls`` (a `TlsOptions`: the CA to trust, a
    client certificate for mTLS, the server's name) makes it secure too, in place of
    ``channel_credentials``. ``timeout`` is the default deadline of every
    call in seconds, all attempts together; ``retry`` None means `RetryPolicy()` (up to 4
    attempts on UNAVAILABLE), which becomes the channel's service config: gRPC itself repeats an
    attempt where that is safe (``options`` may replace it with a ``grpc.service_config`` of
    their own).
    """

    __slots__ = ("_api_key", "_channel", "_owns_channel", "_retry", "_stub", "_target", "_timeout")

    _api_key: ApiKey
    _channel: grpc.aio.Channel
    _owns_channel: bool
    _retry: RetryPolicy | None
    _stub: PaymentServiceAsyncStub
    _target: str
    _timeout: float

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        tls: TlsOptions | None = None,
    ) -> None:
        key = ApiKey(api_key)
        timeout = check_timeout(timeout)
        policy = DEFAULT_RETRY_POLICY if retry is None else retry
        if tls is not None:
            if channel_credentials is not None:
                raise ValueError("give tls or channel_credentials, not both")
            channel_credentials = tls.channel_credentials()
            options = [*tls.channel_options(), *(options or ())]
        merged_options = channel_options(options, policy)
        if channel_credentials is None:
            channel = grpc.aio.insecure_channel(target, options=merged_options)
        else:
            channel = grpc.aio.secure_channel(target, channel_credentials, options=merged_options)
        self._setup(channel, key, target, timeout, policy, owns_channel=True)

    @classmethod
    def from_channel(
        cls,
        channel: grpc.aio.Channel,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        close_channel: bool = False,
    ) -> Self:
        """A client on an existing ``grpc.aio`` channel, which `close()` closes only if
        ``close_channel`` is true. Its calls are retried only as the channel's own service config
        says, which this client cannot see or change (its `retry` is None): to retry as a client
        of its own would, make the channel with ``channel_options(retry=RetryPolicy(...))``."""
        client = cls.__new__(cls)
        client._setup(
            channel,
            ApiKey(api_key),
            "<channel>",
            check_timeout(timeout),
            None,
            owns_channel=close_channel,
        )
        return client

    def _setup(
        self,
        channel: grpc.aio.Channel,
        api_key: ApiKey,
        target: str,
        timeout: float,
        retry: RetryPolicy | None,
        *,
        owns_channel: bool,
    ) -> None:
        self._api_key = api_key
        self._channel = channel
        self._owns_channel = owns_channel
        self._retry = retry
        # Any: without grpc type stubs the channel is Any, and mypy would pick the sync overload.
        stub: Any = payment_pb2_grpc.PaymentServiceStub(channel)
        self._stub = stub
        self._target = target
        self._timeout = timeout

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying ``grpc.aio`` channel."""
        return self._channel

    @property
    def timeout(self) -> float:
        """The default deadline of every call, in seconds."""
        return self._timeout

    @property
    def retry(self) -> RetryPolicy | None:
        """The retry policy this client built its channel's service config from, by which gRPC
        retries its unary calls; None for a client made `from_channel`, whose calls are retried
        as that channel was configured. (A `watch` reconnects by its own ``retry``.)"""
        return self._retry

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self._target!r}, timeout={self._timeout!r})"

    async def _unary(self, method: str, message: Any, timeout: float | None) -> Any:
        """One RPC with the API key, within one deadline over all of gRPC's attempts."""
        rpc = getattr(self._stub, method)
        try:
            return await rpc(
                message,
                timeout=resolve_timeout(self._timeout, timeout),
                metadata=self._api_key.metadata(),
            )
        except grpc.RpcError as exc:
            raise PortexPayError.from_rpc_error(exc) from exc

    async def _pages(self, method: str, message: Any, timeout: float | None) -> AsyncIterator[Any]:
        """Every page of a list RPC from ``message`` on, following ``next_page_token`` until it
        comes back empty. Each page is one call, with its own deadline and retries; the caller's
        ``message`` is left as it was."""
        request = type(message)()
        request.CopyFrom(message)
        while True:
            page = await self._unary(method, request, timeout)
            yield page
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def _items(
        self,
        method: str,
        message: Any,
        timeout: float | None,
        field: str,
    ) -> AsyncIterator[Any]:
        """The items (the repeated ``field``) of every page `_pages` reads, in order."""
        async for page in self._pages(method, message, timeout):
            # unasync: sync-only
            # yield from getattr(page, field)
            # unasync: async-only
            for item in getattr(page, field):
                yield item
            # unasync: end

    # unasync: sync-only
    # def close(self) -> None:
    #     """Closes the channel if this client owns it, cancelling calls still in flight."""
    #     if self._owns_channel:
    #         self._channel.close()
    # unasync: async-only
    async def close(self, grace: float | None = None) -> None:
        """Closes the channel if this client owns it; in-flight calls get ``grace`` seconds."""
        if self._owns_channel:
            await self._channel.close(grace)

    # unasync: end

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def pay(
        self,
        request: payment_pb2.PayRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[PayFields],
    ) -> payment_pb2.PayResponse:
        """Creates an order and its Telegram Stars invoice link (the Pay RPC).

        Pass a ``PayRequest`` or its fields as keywords:
        ``await client.pay(tg_use_id=1, amount=5, label="x", title="t", description="d",
        request_id=str(uuid.uuid4()))``; ``subscription_period=2592000`` makes the order a
        Telegram Stars subscription (30 days, at most 10000 Stars). Without a ``request_id`` the
        client makes one (a UUID), the same for every attempt, so Pay too is retried on
        UNAVAILABLE without making a second order.
        """
        message = build_pay_request(request, fields)
        response: payment_pb2.PayResponse = await self._unary("Pay", message, timeout)
        return response

    async def query_order(
        self,
        tg_payment_id: int | payment_pb2.QueryOrderRequest | None = None,
        *,
        telegram_payment_charge_id: str | None = None,
        timeout: float | None = None,
    ) -> payment_pb2.Order:
        """Returns one of the application's orders (the QueryOrder RPC): by its id, or by a
        Telegram charge id (``telegram_payment_charge_id=``, the id the buyer's receipt shows;
        also a refunded or duplicate charge of the order). Exactly one of the two."""
        message = build_query_order_request(tg_payment_id, telegram_payment_charge_id)
        response: payment_pb2.Order = await self._unary("QueryOrder", message, timeout)
        return response

    async def resume_payment(
        self,
        tg_use_id: int | payment_pb2.ResumePaymentRequest,
        *,
        timeout: float | None = None,
    ) -> payment_pb2.ResumePaymentResponse:
        """Finds the user's most recent order that can still be paid (the ResumePayment RPC)."""
        message = build_resume_payment_request(tg_use_id)
        response: payment_pb2.ResumePaymentResponse = await self._unary(
            "ResumePayment",
            message,
            timeout,
        )
        return response

    # ------------------------------------------------------------------------ orders and refunds

    async def list_orders(
        self,
        request: payment_pb2.ListOrdersRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListOrdersFields],
    ) -> payment_pb2.ListOrdersResponse:
        """One page of the application's orders, newest first (the ListOrders RPC).

        Pass a ``ListOrdersRequest`` or its fields as keywords: ``filter`` (e.g.
        ``'tg_use_id = 42 AND state = PAID'``, see payment.proto), ``page_size``, ``page_token``.
        `list_orders_pages` and `iter_orders` follow ``next_page_token`` for you.
        """
        message = build_request(payment_pb2.ListOrdersRequest, request, fields, call="list_orders")
        response: payment_pb2.ListOrdersResponse = await self._unary("ListOrders", message, timeout)
        return response

    def list_orders_pages(
        self,
        request: payment_pb2.ListOrdersRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListOrdersFields],
    ) -> AsyncIterator[payment_pb2.ListOrdersResponse]:
        """Every page of `list_orders` from the first (or ``page_token``) to the last."""
        message = build_request(payment_pb2.ListOrdersRequest, request, fields, call="list_orders")
        return self._pages("ListOrders", message, timeout)

    def iter_orders(
        self,
        request: payment_pb2.ListOrdersRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListOrdersFields],
    ) -> AsyncIterator[payment_pb2.Order]:
        """Every order `list_orders` finds, newest first, page after page."""
        message = build_request(payment_pb2.ListOrdersRequest, request, fields, call="list_orders")
        return self._items("ListOrders", message, timeout, "orders")

    async def acknowledge_order(
        self,
        tg_payment_id: int | payment_pb2.AcknowledgeOrderRequest,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> payment_pb2.Order:
        """Records that a paid order's goods were delivered (the AcknowledgeOrder RPC); the
        order comes back with ``fulfilled_time``. Idempotent, so retried on UNAVAILABLE."""
        message = build_named_request(
            payment_pb2.AcknowledgeOrderRequest,
            tg_payment_id,
            "tg_payment_id",
            call="acknowledge_order",
            request_id=request_id,
        )
        response: payment_pb2.Order = await self._unary("AcknowledgeOrder", message, timeout)
        return response

    async def cancel_order(
        self,
        tg_payment_id: int | payment_pb2.CancelOrderRequest,
        *,
        timeout: float | None = None,
    ) -> payment_pb2.Order:
        """Withdraws an unpaid order (the CancelOrder RPC). Idempotent."""
        message = build_named_request(
            payment_pb2.CancelOrderRequest, tg_payment_id, "tg_payment_id", call="cancel_order"
        )
        response: payment_pb2.Order = await self._unary("CancelOrder", message, timeout)
        return response

    async def cancel_subscription(
        self,
        tg_payment_id: int | payment_pb2.CancelSubscriptionRequest,
        *,
        timeout: float | None = None,
    ) -> payment_pb2.Order:
        """Cancels the renewal of a subscription order (the CancelSubscription RPC, Telegram's
        editUserStarSubscription): the user keeps the period paid, the subscription becomes
        CANCELLED. Idempotent, so retried on UNAVAILABLE."""
        message = build_named_request(
            payment_pb2.CancelSubscriptionRequest,
            tg_payment_id,
            "tg_payment_id",
            call="cancel_subscription",
        )
        response: payment_pb2.Order = await self._unary("CancelSubscription", message, timeout)
        return response

    async def resume_subscription(
        self,
        tg_payment_id: int | payment_pb2.ResumeSubscriptionRequest,
        *,
        timeout: float | None = None,
    ) -> payment_pb2.Order:
        """Lifts the bot's own cancellation of a subscription (the ResumeSubscription RPC,
        editUserStarSubscription with is_canceled false); the order comes back with the
        subscription ACTIVE. It charges nothing, cannot undo a cancellation the user made in
        Telegram (the user re-enables that in their app) and does not recover a LAPSED or
        EXPIRED one (only a renewal payment does). Idempotent, so retried on UNAVAILABLE."""
        message = build_named_request(
            payment_pb2.ResumeSubscriptionRequest,
            tg_payment_id,
            "tg_payment_id",
            call="resume_subscription",
        )
        response: payment_pb2.Order = await self._unary("ResumeSubscription", message, timeout)
        return response

    async def report_invoice_closed(
        self,
        tg_payment_id: int | payment_pb2.ReportInvoiceClosedRequest,
        status: str | None = None,
        *,
        timeout: float | None = None,
    ) -> payment_pb2.ReportInvoiceClosedResponse:
        """Records the Mini App's ``invoiceClosed`` status ("paid", "cancelled", "failed",
        "pending") for an order (the ReportInvoiceClosed RPC); it never changes the state."""
        message = build_named_request(
            payment_pb2.ReportInvoiceClosedRequest,
            tg_payment_id,
            "tg_payment_id",
            call="report_invoice_closed",
            status=status,
        )
        response: payment_pb2.ReportInvoiceClosedResponse = await self._unary(
            "ReportInvoiceClosed", message, timeout
        )
        return response

    async def refund_payment(
        self,
        tg_payment_id: int | payment_pb2.RefundPaymentRequest,
        *,
        reason_code: RefundReasonLike = None,
        reason_text: str | None = None,
        telegram_payment_charge_id: str | None = None,
        timeout: float | None = None,
    ) -> payment_pb2.RefundPaymentResponse:
        """Refunds a paid order's payment (the RefundPayment RPC), with why: ``reason_code`` (a
        ``Refund.ReasonCode`` or its name, REQUESTED_BY_CUSTOMER when unset) and ``reason_text``.
        ``telegram_payment_charge_id`` names one charge of the order (one period of a
        subscription, ``Subscription.charges``); unset, the charge that paid the order. The
        refund comes back pending; a one-off order becomes REFUNDED when Telegram confirms (a
        subscription's stays PAID). Idempotent (one refund per charge), so retried on
        UNAVAILABLE."""
        message = build_named_request(
            payment_pb2.RefundPaymentRequest,
            tg_payment_id,
            "tg_payment_id",
            call="refund_payment",
            reason_code=reason_code,
            reason_text=reason_text,
            telegram_payment_charge_id=telegram_payment_charge_id,
        )
        response: payment_pb2.RefundPaymentResponse = await self._unary(
            "RefundPayment",
            message,
            timeout,
        )
        return response

    async def list_refunds(
        self,
        request: payment_pb2.ListRefundsRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListRefundsFields],
    ) -> payment_pb2.ListRefundsResponse:
        """One page of the application's refunds, newest first (the ListRefunds RPC), by
        ``tg_payment_id``, ``state`` and ``create_time_start`` / ``create_time_end``.
        `list_refunds_pages` and `iter_refunds` follow ``next_page_token`` for you."""
        message = build_request(
            payment_pb2.ListRefundsRequest, request, fields, call="list_refunds"
        )
        response: payment_pb2.ListRefundsResponse = await self._unary(
            "ListRefunds",
            message,
            timeout,
        )
        return response

    def list_refunds_pages(
        self,
        request: payment_pb2.ListRefundsRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListRefundsFields],
    ) -> AsyncIterator[payment_pb2.ListRefundsResponse]:
        """Every page of `list_refunds` from the first (or ``page_token``) to the last."""
        message = build_request(
            payment_pb2.ListRefundsRequest, request, fields, call="list_refunds"
        )
        return self._pages("ListRefunds", message, timeout)

    def iter_refunds(
        self,
        request: payment_pb2.ListRefundsRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListRefundsFields],
    ) -> AsyncIterator[payment_pb2.Refund]:
        """Every refund `list_refunds` finds, newest first, page after page."""
        message = build_request(
            payment_pb2.ListRefundsRequest, request, fields, call="list_refunds"
        )
        return self._items("ListRefunds", message, timeout, "refunds")

    async def retry_refund(
        self,
        telegram_payment_charge_id: str | payment_pb2.RetryRefundRequest,
        *,
        timeout: float | None = None,
    ) -> payment_pb2.Refund:
        """Sends a refund that ended FAILED to Telegram again (the RetryRefund RPC); it comes
        back pending. A pending refund is returned as it is, so retried on UNAVAILABLE."""
        message = build_named_request(
            payment_pb2.RetryRefundRequest,
            telegram_payment_charge_id,
            "telegram_payment_charge_id",
            call="retry_refund",
        )
        response: payment_pb2.Refund = await self._unary("RetryRefund", message, timeout)
        return response

    # ---------------------------------------------------------------------------------- events

    async def list_events(
        self,
        request: payment_pb2.ListEventsRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListEventsFields],
    ) -> payment_pb2.ListEventsResponse:
        """One page of the application's events in stream order (the ListEvents RPC).

        Pass a ``ListEventsRequest`` or its fields as keywords (``tg_payment_id``, ``tg_use_id``,
        ``types``, ``after_cursor``, ``start``, ``page_size``, ``page_token``). Without a cursor or
        page token the list starts at RETENTION_START; pass ``next_page_token`` as ``page_token``
        for the next page, until it comes back empty (then the list has reached the newest event;
        its last event's ``cursor`` can start a `watch`). `list_events_pages` and `iter_events`
        do that for you. Read-only, so retried on UNAVAILABLE.
        """
        message = build_list_events_request(request, fields)
        response: payment_pb2.ListEventsResponse = await self._unary("ListEvents", message, timeout)
        return response

    def list_events_pages(
        self,
        request: payment_pb2.ListEventsRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListEventsFields],
    ) -> AsyncIterator[payment_pb2.ListEventsResponse]:
        """Every page of `list_events` up to the newest event (the page whose
        ``next_page_token`` is empty); the last event's ``cursor`` can start a `watch`."""
        message = build_list_events_request(request, fields)
        return self._pages("ListEvents", message, timeout)

    def iter_events(
        self,
        request: payment_pb2.ListEventsRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListEventsFields],
    ) -> AsyncIterator[payment_pb2.InvoiceEvent]:
        """Every event `list_events` finds, in stream order, up to the newest one."""
        message = build_list_events_request(request, fields)
        return self._items("ListEvents", message, timeout, "events")

    def watch(
        self,
        *,
        tg_payment_id: int | None = None,
        tg_use_id: int | None = None,
        types: Iterable[str] = (),
        after_cursor: str = "",
        start: StartPositionLike = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncEventWatch:
        """The application's events as they happen (StreamInvoiceEvents), resuming on its own.

        ::

            async with client.watch(after_cursor=saved, types=["order.paid"]) as events:
                async for event in events:
                    await handle(event)
                    save(events.cursor)

        Yields each event once and never a heartbeat; ``events.cursor`` is the position to resume
        from (heartbeats move it too). Starts after ``after_cursor`` when given, else at
        ``start`` (NOW when unset; ``"RETENTION_START"`` for every retained event). The stream has
        no deadline. When it breaks (UNAVAILABLE, or it ends), the watch reconnects after the
        last cursor, waiting as ``retry`` says (default `DEFAULT_WATCH_RETRY_POLICY`: forever,
        0.1 s growing to 5 s; a policy's ``max_attempts`` bounds the failed attempts in a row,
        counted from the last message received). Any other failure raises `PortexPayError`, e.g.
        OUT_OF_RANGE with reason CURSOR_EXPIRED for a cursor past retention: re-list with
        `list_events`. See ``portex_pay_client._watch``. `AsyncEventWatch.aclose` may be called
        from another task to stop it.
        """
        request = build_stream_request(
            tg_payment_id=tg_payment_id,
            tg_use_id=tg_use_id,
            types=types,
            after_cursor=after_cursor,
            start=start,
        )
        metadata = self._api_key.metadata()

        def open_stream(message: payment_pb2.StreamInvoiceEventsRequest) -> Any:
            return self._stub.StreamInvoiceEvents(message, metadata=metadata)

        return AsyncEventWatch(
            open_stream, request, DEFAULT_WATCH_RETRY_POLICY if retry is None else retry
        )

    # -------------------------------------------------------------------- catalog, users, bot

    async def set_catalog_item(
        self,
        item: payment_pb2.CatalogItem | payment_pb2.SetCatalogItemRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[CatalogItemFields],
    ) -> payment_pb2.CatalogItem:
        """Adds the item to the application's catalog, or replaces the one with its ``key``
        (the SetCatalogItem RPC); returns the item as stored. Pass a ``CatalogItem`` (or the
        whole request) or its fields as keywords: ``set_catalog_item(key="sword", amount=50)``.
        Idempotent, so retried on UNAVAILABLE."""
        message = build_set_catalog_item_request(item, fields)
        response: payment_pb2.CatalogItem = await self._unary("SetCatalogItem", message, timeout)
        return response

    async def delete_catalog_item(
        self,
        key: str | payment_pb2.DeleteCatalogItemRequest,
        *,
        timeout: float | None = None,
    ) -> payment_pb2.DeleteCatalogItemResponse:
        """Removes an item from the catalog (the DeleteCatalogItem RPC); ``deleted`` is false
        when there was none. Not retried: a repeat would answer ``deleted`` false."""
        message = build_named_request(
            payment_pb2.DeleteCatalogItemRequest, key, "key", call="delete_catalog_item"
        )
        response: payment_pb2.DeleteCatalogItemResponse = await self._unary(
            "DeleteCatalogItem", message, timeout
        )
        return response

    async def list_catalog_items(
        self, *, timeout: float | None = None
    ) -> payment_pb2.ListCatalogItemsResponse:
        """The application's whole catalog, by key (the ListCatalogItems RPC; no pages)."""
        response: payment_pb2.ListCatalogItemsResponse = await self._unary(
            "ListCatalogItems", payment_pb2.ListCatalogItemsRequest(), timeout
        )
        return response

    async def get_telegram_user(
        self,
        tg_use_id: int | payment_pb2.GetTelegramUserRequest,
        *,
        timeout: float | None = None,
    ) -> payment_pb2.TelegramUser:
        """A Telegram user as the application's Mini App last saw them (the GetTelegramUser RPC);
        NOT_FOUND (reason USER_NOT_FOUND) for a user it never saved."""
        message = build_named_request(
            payment_pb2.GetTelegramUserRequest, tg_use_id, "tg_use_id", call="get_telegram_user"
        )
        response: payment_pb2.TelegramUser = await self._unary("GetTelegramUser", message, timeout)
        return response

    async def get_bot_messages(self, *, timeout: float | None = None) -> payment_pb2.BotMessages:
        """The bot's /paysupport and /terms texts and buyer messages (the GetBotMessages RPC)."""
        response: payment_pb2.BotMessages = await self._unary(
            "GetBotMessages", payment_pb2.GetBotMessagesRequest(), timeout
        )
        return response

    async def set_bot_messages(
        self,
        request: payment_pb2.SetBotMessagesRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[BotMessagesFields],
    ) -> payment_pb2.BotMessages:
        """Changes the bot's messages (the SetBotMessages RPC): a field left out is unchanged, an
        empty text goes back to the default; returns them as they are now."""
        message = build_request(
            payment_pb2.SetBotMessagesRequest, request, fields, call="set_bot_messages"
        )
        response: payment_pb2.BotMessages = await self._unary("SetBotMessages", message, timeout)
        return response

    # ------------------------------------------------------------------------ the Star ledger

    async def list_star_transactions(
        self,
        request: payment_pb2.ListStarTransactionsRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListStarTransactionsFields],
    ) -> payment_pb2.ListStarTransactionsResponse:
        """One page of the bot's Star transactions as the ledger read them, newest first (the
        ListStarTransactions RPC), by ``date_start`` / ``date_end`` and ``partner_types``.
        `list_star_transactions_pages` and `iter_star_transactions` follow the pages for you."""
        message = build_list_star_transactions_request(request, fields)
        response: payment_pb2.ListStarTransactionsResponse = await self._unary(
            "ListStarTransactions", message, timeout
        )
        return response

    def list_star_transactions_pages(
        self,
        request: payment_pb2.ListStarTransactionsRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListStarTransactionsFields],
    ) -> AsyncIterator[payment_pb2.ListStarTransactionsResponse]:
        """Every page of `list_star_transactions` from the first (or ``page_token``) on."""
        message = build_list_star_transactions_request(request, fields)
        return self._pages("ListStarTransactions", message, timeout)

    def iter_star_transactions(
        self,
        request: payment_pb2.ListStarTransactionsRequest | None = None,
        *,
        timeout: float | None = None,
        **fields: Unpack[ListStarTransactionsFields],
    ) -> AsyncIterator[payment_pb2.StarTransaction]:
        """Every transaction `list_star_transactions` finds, newest first, page after page."""
        message = build_list_star_transactions_request(request, fields)
        return self._items("ListStarTransactions", message, timeout, "transactions")

    async def get_star_balance(self, *, timeout: float | None = None) -> payment_pb2.StarBalance:
        """The bot's Star balance, Telegram's figure and the ledger's (the GetStarBalance RPC)."""
        response: payment_pb2.StarBalance = await self._unary(
            "GetStarBalance", payment_pb2.GetStarBalanceRequest(), timeout
        )
        return response


# The only steps of a watch that differ beyond the mechanical: reading the next message of the
# stream, and waiting before a reconnection (cut short when the watch is closed).
# unasync: sync-only
# def _next_message(call: Any) -> payment_pb2.InvoiceEvent | None:
#     """The stream's next message, or None when the stream has ended."""
#     message: payment_pb2.InvoiceEvent | None = next(call, None)
#     return message
#
#
# def _wait_closed(closed: threading.Event, timeout: float) -> None:
#     """Returns when ``closed`` is set, or after ``timeout`` seconds."""
#     closed.wait(timeout)
# unasync: async-only
async def _next_message(call: Any) -> payment_pb2.InvoiceEvent | None:
    """The stream's next message, or None when the stream has ended."""
    message = await call.read()
    if message is grpc.aio.EOF:
        return None
    event: payment_pb2.InvoiceEvent = message
    return event


async def _wait_closed(closed: asyncio.Event, timeout: float) -> None:
    """Returns when ``closed`` is set, or after ``timeout`` seconds."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closed.wait(), timeout)


# unasync: end


class AsyncEventWatch(BaseEventWatch):
    """The events of a ``StreamInvoiceEvents`` stream that resumes itself (see ``_watch``).

    ``async for event in watch`` yields each `InvoiceEvent` once (never a heartbeat); `cursor`
    is the position to resume from — persist it after handling an event, and pass it as
    ``after_cursor`` to a later watch. The stream opens on the first iteration. Use
    ``async with`` (or `aclose()`) to end it; `aclose()` may be called from another task, and the
    iteration then stops.
    Cancelling a task that waits for an event ends the current connection only, and a later
    iteration resumes from `cursor`.
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
        super().__init__(open_stream, request, policy, rand, asyncio.Event())

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> payment_pb2.InvoiceEvent:
        while True:
            call = self._current_call()
            if call is None:
                raise StopAsyncIteration
            try:
                message = await _next_message(call)
            except grpc.RpcError as exc:
                self._call = None
                if self._closed.is_set():
                    raise StopAsyncIteration from None
                error = PortexPayError.from_rpc_error(exc)
                delay = self._position.failed(error)
                if delay is None:
                    self._closed.set()
                    raise error from exc
            # unasync: async-only
            except asyncio.CancelledError:
                self._drop_call()
                task = asyncio.current_task()
                if self._closed.is_set() and not (task is not None and task.cancelling()):
                    raise StopAsyncIteration from None  # aclose() from another task
                raise
            # unasync: end
            except BaseException:  # KeyboardInterrupt and the like: a later iteration resumes
                self._drop_call()
                raise
            else:
                if message is not None:
                    if self._position.received(message):
                        return message
                    continue
                self._call = None
                error = stream_ended_error()
                delay = self._position.failed(error)
                if delay is None:
                    self._closed.set()
                    raise error
            await _wait_closed(self._closed, delay)

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
