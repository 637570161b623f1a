"""PaymentService: proto in, use case, proto out. No business logic lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.api.grpc.convert import (
    EncodedEvents,
    bot_message_texts,
    bot_messages_message,
    catalog_item,
    catalog_item_message,
    event_message,
    order_message,
    pay_command,
    refund_filter,
    refund_message,
    refund_reason_code,
    star_balance_message,
    star_transaction_message,
    telegram_user_message,
    timestamp_value,
)
from portex_pay.api.grpc.interceptor import current_application
from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.paging import page_size
from portex_pay.domain.star_ledger import StarTransactionQuery
from portex_pay.service.bot_messages import BotMessagesService
from portex_pay.service.catalog import CatalogService
from portex_pay.service.clock import utcnow
from portex_pay.service.orders import OrderService
from portex_pay.service.refunds import RefundService
from portex_pay.service.star_ledger import StarLedger
from portex_pay.service.stream import EventFilter, EventStreamer
from portex_pay.service.subscriptions import SubscriptionService

if TYPE_CHECKING:
    from portex_pay.api.grpc.interceptor import Context


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(
        self,
        orders: OrderService,
        refunds: RefundService,
        streamer: EventStreamer,
        catalog: CatalogService,
        bot_messages: BotMessagesService,
        star_ledger: StarLedger,
        subscriptions: SubscriptionService,
    ) -> None:
        self._subscriptions = subscriptions
        self._orders = orders
        self._refunds = refunds
        self._streamer = streamer
        self._catalog = catalog
        self._bot_messages = bot_messages
        self._star_ledger = star_ledger
        self._encoded_events = EncodedEvents()

    async def Pay(
        self, request: payment_pb2.PayRequest, context: Context
    ) -> payment_pb2.PayResponse:
        order = await self._orders.pay(
            current_application.get(),
            pay_command(request),
            request.request_id,
            time_remaining=context.time_remaining(),
        )
        return payment_pb2.PayResponse(
            tg_payment_id=order.tg_payment_id,
            tg_payment_url=order.invoice_link or "",
            order=order_message(order, utcnow()),
        )

    async def QueryOrder(
        self, request: payment_pb2.QueryOrderRequest, context: Context
    ) -> payment_pb2.Order:
        application = current_application.get()
        if request.WhichOneof("lookup") == "telegram_payment_charge_id":
            order = await self._orders.query_order_by_charge(
                application, request.telegram_payment_charge_id
            )
        else:  # by id; unset is id 0, not found as before the oneof
            order = await self._orders.query_order(application, request.tg_payment_id)
        charges = await self._subscriptions.charges(application, order)
        return order_message(order, utcnow(), charges)

    async def ListOrders(
        self, request: payment_pb2.ListOrdersRequest, context: Context
    ) -> payment_pb2.ListOrdersResponse:
        page = await self._orders.list_orders(
            current_application.get(), request.filter, request.page_size, request.page_token
        )
        return payment_pb2.ListOrdersResponse(
            # Aged to the listing's time, the one its filter judged expiry at.
            orders=[order_message(order, page.as_of) for order in page.orders],
            next_page_token=page.next_page_token,
        )

    async def ResumePayment(
        self, request: payment_pb2.ResumePaymentRequest, context: Context
    ) -> payment_pb2.ResumePaymentResponse:
        order = await self._orders.resume_payment(current_application.get(), request.tg_use_id)
        if order is None:
            return payment_pb2.ResumePaymentResponse(has_pending_payment=False)
        return payment_pb2.ResumePaymentResponse(
            has_pending_payment=True,
            tg_payment_id=order.tg_payment_id,
            tg_payment_url=order.invoice_link or "",
            order=order_message(order, utcnow()),
        )

    async def RefundPayment(
        self, request: payment_pb2.RefundPaymentRequest, context: Context
    ) -> payment_pb2.RefundPaymentResponse:
        refund, order = await self._refunds.request(
            current_application.get(),
            request.tg_payment_id,
            refund_reason_code(request),
            request.reason_text,
            charge_id=request.telegram_payment_charge_id or None,
        )
        return payment_pb2.RefundPaymentResponse(
            refund=refund_message(refund), order=order_message(order, utcnow())
        )

    # --- Fulfilment and refunds as objects ----------------------------------------------------

    async def AcknowledgeOrder(
        self, request: payment_pb2.AcknowledgeOrderRequest, context: Context
    ) -> payment_pb2.Order:
        order = await self._orders.acknowledge(
            current_application.get(), request.tg_payment_id, request.request_id
        )
        return order_message(order, utcnow())

    async def ListRefunds(
        self, request: payment_pb2.ListRefundsRequest, context: Context
    ) -> payment_pb2.ListRefundsResponse:
        refunds, next_page_token = await self._refunds.list_refunds(
            current_application.get(),
            refund_filter(request),
            page_token=request.page_token,
            requested_page_size=request.page_size,
        )
        return payment_pb2.ListRefundsResponse(
            refunds=[refund_message(refund) for refund in refunds],
            next_page_token=next_page_token,
        )

    async def RetryRefund(
        self, request: payment_pb2.RetryRefundRequest, context: Context
    ) -> payment_pb2.Refund:
        refund = await self._refunds.retry(
            current_application.get(), request.telegram_payment_charge_id
        )
        return refund_message(refund)

    async def ReportInvoiceClosed(
        self, request: payment_pb2.ReportInvoiceClosedRequest, context: Context
    ) -> payment_pb2.ReportInvoiceClosedResponse:
        order = await self._orders.report_invoice_closed(
            current_application.get(), request.tg_payment_id, request.status
        )
        return payment_pb2.ReportInvoiceClosedResponse(order=order_message(order, utcnow()))

    async def CancelOrder(
        self, request: payment_pb2.CancelOrderRequest, context: Context
    ) -> payment_pb2.Order:
        order = await self._orders.cancel(current_application.get(), request.tg_payment_id)
        return order_message(order, utcnow())

    async def CancelSubscription(
        self, request: payment_pb2.CancelSubscriptionRequest, context: Context
    ) -> payment_pb2.Order:
        order, charges = await self._subscriptions.edit(
            current_application.get(), request.tg_payment_id, cancel=True
        )
        return order_message(order, utcnow(), charges)

    async def ResumeSubscription(
        self, request: payment_pb2.ResumeSubscriptionRequest, context: Context
    ) -> payment_pb2.Order:
        order, charges = await self._subscriptions.edit(
            current_application.get(), request.tg_payment_id, cancel=False
        )
        return order_message(order, utcnow(), charges)

    async def StreamInvoiceEvents(  # type: ignore[override]  # yields bytes
        self,
        request: payment_pb2.StreamInvoiceEventsRequest,
        context: Context,
    ) -> AsyncIterator[bytes]:
        # Serialized InvoiceEvents, each event's bytes made once for all its subscribers (the
        # interceptor writes bytes as they are).
        application = current_application.get()
        event_filter = _filter(request)
        cursor = await self._streamer.start_cursor(
            request.after_cursor, default_now=request.start != payment_pb2.RETENTION_START
        )
        subscription = self._streamer.subscribe(application.id)
        try:
            # Headers now, not with the first event: once a client has them it is subscribed
            # and misses nothing (an idle stream may carry nothing until its first heartbeat).
            await context.send_initial_metadata(())
            async for position, event in self._streamer.stream(subscription, event_filter, cursor):
                yield self._encoded_events(position, event)
        finally:
            self._streamer.unsubscribe(subscription)

    async def ListEvents(
        self, request: payment_pb2.ListEventsRequest, context: Context
    ) -> payment_pb2.ListEventsResponse:
        size = page_size(request.page_size)
        event_filter = _filter(request)
        cursor = await self._streamer.start_cursor(
            request.page_token or request.after_cursor,
            default_now=request.start == payment_pb2.NOW,
            field="page_token" if request.page_token else "after_cursor",
        )
        events, next_cursor = await self._streamer.page(
            current_application.get().id, event_filter, cursor, size
        )
        return payment_pb2.ListEventsResponse(
            events=[event_message(event.cursor, event) for event in events],
            next_page_token=next_cursor.encode() if next_cursor else "",
        )

    async def SetCatalogItem(
        self, request: payment_pb2.SetCatalogItemRequest, context: Context
    ) -> payment_pb2.CatalogItem:
        try:
            item = await self._catalog.set_item(
                current_application.get().id, catalog_item(request.item)
            )
        except InvalidArgument as error:  # the item's fields, by their path in the request
            raise InvalidArgument(
                [FieldViolation(f"item.{v.field}", v.description) for v in error.violations]
            ) from None
        return catalog_item_message(item)

    async def DeleteCatalogItem(
        self, request: payment_pb2.DeleteCatalogItemRequest, context: Context
    ) -> payment_pb2.DeleteCatalogItemResponse:
        deleted = await self._catalog.delete_item(current_application.get().id, request.key)
        return payment_pb2.DeleteCatalogItemResponse(deleted=deleted)

    async def ListCatalogItems(
        self, request: payment_pb2.ListCatalogItemsRequest, context: Context
    ) -> payment_pb2.ListCatalogItemsResponse:
        items = await self._catalog.list_items(current_application.get().id)
        return payment_pb2.ListCatalogItemsResponse(
            items=[catalog_item_message(item) for item in items]
        )

    async def GetTelegramUser(
        self, request: payment_pb2.GetTelegramUserRequest, context: Context
    ) -> payment_pb2.TelegramUser:
        seen = await self._catalog.get_user(current_application.get().id, request.tg_use_id)
        return telegram_user_message(seen)

    async def GetBotMessages(
        self, request: payment_pb2.GetBotMessagesRequest, context: Context
    ) -> payment_pb2.BotMessages:
        messages = await self._bot_messages.get(current_application.get().id)
        return bot_messages_message(messages)

    async def SetBotMessages(
        self, request: payment_pb2.SetBotMessagesRequest, context: Context
    ) -> payment_pb2.BotMessages:
        messages = await self._bot_messages.set(
            current_application.get().id,
            bot_message_texts(request),
            request.buyer_messages if request.HasField("buyer_messages") else None,
        )
        return bot_messages_message(messages)

    async def ListStarTransactions(
        self, request: payment_pb2.ListStarTransactionsRequest, context: Context
    ) -> payment_pb2.ListStarTransactionsResponse:
        query = StarTransactionQuery(
            date_start=timestamp_value(request, "date_start"),
            date_end=timestamp_value(request, "date_end"),
            partner_types=tuple(request.partner_types),
        )
        entries, next_page_token = await self._star_ledger.list_transactions(
            current_application.get(),
            query,
            page_size=page_size(request.page_size),
            page_token=request.page_token,
        )
        return payment_pb2.ListStarTransactionsResponse(
            transactions=[star_transaction_message(entry) for entry in entries],
            next_page_token=next_page_token,
        )

    async def GetStarBalance(
        self, request: payment_pb2.GetStarBalanceRequest, context: Context
    ) -> payment_pb2.StarBalance:
        balance = await self._star_ledger.balance(current_application.get())
        return star_balance_message(balance)


def _filter(
    request: payment_pb2.StreamInvoiceEventsRequest | payment_pb2.ListEventsRequest,
) -> EventFilter:
    return EventFilter.of(
        tg_payment_id=request.tg_payment_id if request.HasField("tg_payment_id") else None,
        tg_use_id=request.tg_use_id if request.HasField("tg_use_id") else None,
        types=request.types,
    )
