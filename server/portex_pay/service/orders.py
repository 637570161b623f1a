"""The order use cases: Pay, QueryOrder, ListOrders, ResumePayment, CancelOrder,
ReportInvoiceClosed and AcknowledgeOrder.

Pay runs in phases so that a crash at any point is recoverable and no database connection is held
while Telegram is called: (1) one statement claims the idempotency key, inserts the order and its
event, and leases the invoice creation to this call; (2) with no connection held, createInvoiceLink;
(3) one statement stores the link (or the failure) with its event. A retry with the same
`request_id` finds the order and resumes where it stopped; a concurrent duplicate waits for the
lease holder instead of creating a second invoice.

ListOrders reads one page per call, by keyset (domain/paging.py): the time the expiry rule is
judged at is fixed by the first page and carried in the page token, so an order cannot turn from
PENDING to EXPIRED between two pages of one listing, and the orders shown are aged to that time,
the state they were selected by.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import structlog

from portex_pay.domain.application import Application
from portex_pay.domain.checkout import charge_id_problem
from portex_pay.domain.errors import (
    DomainError,
    FieldViolation,
    IdempotencyKeyReused,
    IllegalTransition,
    InvalidArgument,
    OrderExpired,
    OrderNotFound,
    TelegramRateLimited,
    TelegramRejected,
    TelegramUnavailable,
)
from portex_pay.domain.fulfilment import acknowledgement_refusal
from portex_pay.domain.order import Order, OrderState, check_transition
from portex_pay.domain.order_filter import OrderListQuery, parse_order_filter, sort_key
from portex_pay.domain.paging import (
    decode_page_token,
    encode_page_token,
    micros,
    page_size,
    position_time,
)
from portex_pay.domain.pay import (
    PayCommand,
    request_id_problem,
    require_valid_pay,
    sign_invoice_payload,
)
from portex_pay.domain.telegram import (
    InvoiceRequest,
    TelegramApiError,
    TelegramNetworkError,
    failure_error,
)
from portex_pay.service.clock import Clock, utcnow
from portex_pay.service.ports import Orders, TelegramBot

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

# Waiting for a concurrent duplicate: poll quickly first, then back off.
_WAIT_FIRST_POLL = 0.02
_WAIT_MAX_POLL = 0.25


@dataclass(frozen=True, slots=True)
class PaymentSettings:
    max_amount: int
    order_ttl_seconds: int
    telegram_timeout: float
    payload_secret: bytes

    @property
    def lease_seconds(self) -> float:
        # Longer than any createInvoiceLink call may take, so a live holder is never overtaken.
        return self.telegram_timeout + 5.0


@dataclass(frozen=True, slots=True)
class OrderPage:
    """One page of ListOrders: the orders, the token of the next page ("" on the last), and the
    time their state is shown at (the listing's expiry time, fixed by its first page)."""

    orders: list[Order]
    next_page_token: str
    as_of: datetime


class OrderService:
    def __init__(
        self,
        orders: Orders,
        bot_api: TelegramBot,
        settings: PaymentSettings,
        clock: Clock = utcnow,
    ) -> None:
        self._orders = orders
        self._bot_api = bot_api
        self._settings = settings
        self._clock = clock
        # Strong references to fire-and-forget clean-ups, so they are not garbage-collected.
        self._background: set[asyncio.Task[None]] = set()

    async def pay(
        self,
        application: Application,
        command: PayCommand,
        request_id: str,
        *,
        time_remaining: float | None = None,
    ) -> Order:
        require_valid_pay(command, request_id, max_amount=self._settings.max_amount)
        application.require_bot()  # before any order is made
        deadline = None if time_remaining is None else time.monotonic() + time_remaining
        ttl, lease = self._settings.order_ttl_seconds, self._settings.lease_seconds
        if not request_id:
            order = await self._orders.create(
                application.id, command, ttl_seconds=ttl, lease_seconds=lease
            )
            return await self._create_invoice(application, order)

        claim = await self._orders.create_idempotent(
            application.id, request_id, command, ttl_seconds=ttl, lease_seconds=lease
        )
        if claim.created:
            return await self._create_invoice(application, claim.order)
        if claim.request_hash != command.fingerprint():
            raise IdempotencyKeyReused(
                f"request_id {request_id!r} was already used with different fields; "
                "use a new request_id for a new order"
            )
        return await self._resume(application, claim.order, deadline)

    async def _resume(
        self, application: Application, order: Order, deadline: float | None
    ) -> Order:
        """A retry of an earlier Pay: return its order, finish it, or wait for its holder."""
        waited_since = None
        poll = _WAIT_FIRST_POLL
        while True:
            now = self._clock()
            if order.invoice_link is not None:
                return order
            if order.invoice_in_progress(now):
                # Another call (maybe on another replica) is creating the link: wait for it.
                if waited_since is None:
                    waited_since = order.updated_at
                if deadline is not None and time.monotonic() + poll > deadline:
                    raise TelegramUnavailable("the invoice is still being created; retry")
                await asyncio.sleep(poll)
                poll = min(poll * 2, _WAIT_MAX_POLL)
                reloaded = await self._orders.get(application.id, order.tg_payment_id)
                assert reloaded is not None
                order = reloaded
                continue
            if (
                waited_since is not None
                and order.state is OrderState.FAILED
                and order.updated_at > waited_since
            ):
                # The holder we waited for failed just now: report its failure, don't repeat it.
                raise _failure_error(order)
            if order.state_at(now) is OrderState.EXPIRED:
                raise OrderExpired(f"order {order.tg_payment_id} expired before its invoice")
            leased = await self._orders.take_invoice_lease(
                application.id, order.tg_payment_id, self._settings.lease_seconds
            )
            if leased is not None:
                return await self._create_invoice(application, leased)
            reloaded = await self._orders.get(application.id, order.tg_payment_id)
            assert reloaded is not None
            order = reloaded

    async def _create_invoice(self, application: Application, order: Order) -> Order:
        try:
            link = await self._bot_api.create_invoice_link(
                application.require_bot(), self._invoice(order)
            )
        except asyncio.CancelledError:
            # The caller's deadline passed or it went away: gRPC cancelled this task, and the
            # Telegram request with it. Hand the lease back so that a retry need not wait for
            # it to lapse; the order stays pending without a link.
            self._release_lease_soon(order.tg_payment_id)
            raise
        except TelegramApiError as error:
            failure = _telegram_error(error)
        except TelegramNetworkError as error:
            failure = TelegramUnavailable(f"Telegram is unreachable ({error.reason}); retry")
        else:
            check_transition(order.state, OrderState.PENDING)
            stored = await self._orders.record_invoice_link(order.tg_payment_id, link)
            if stored is None:
                raise OrderNotFound(f"order {order.tg_payment_id} changed while being created")
            return stored
        check_transition(order.state, OrderState.FAILED)
        retry_after = failure.retry_after if isinstance(failure, TelegramRateLimited) else None
        await self._orders.record_invoice_failure(
            order.tg_payment_id, failure.reason, failure.message, retry_after
        )
        log.warning(
            "invoice creation failed",
            tg_payment_id=order.tg_payment_id,
            reason=failure.reason,
            detail=failure.message,
        )
        raise failure

    def _release_lease_soon(self, tg_payment_id: int) -> None:
        task = asyncio.create_task(
            self._orders.release_invoice_lease(tg_payment_id), name="release-invoice-lease"
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _invoice(self, order: Order) -> InvoiceRequest:
        # The payload is our signed reference, never the app's payload.
        return InvoiceRequest(
            title=order.title,
            description=order.description,
            payload=sign_invoice_payload(
                self._settings.payload_secret, order.tg_payment_id, order.amount
            ),
            label=order.label,
            amount=order.amount,
            photo_url=order.photo_url,
            photo_size=order.photo_size,
            photo_width=order.photo_width,
            photo_height=order.photo_height,
            subscription_period=order.subscription_period,
        )

    async def query_order(self, application: Application, tg_payment_id: int) -> Order:
        order = None
        if tg_payment_id > 0:
            order = await self._orders.get(application.id, tg_payment_id)
        if order is None:
            raise OrderNotFound(f"order {tg_payment_id} not found")
        return order

    async def query_order_by_charge(self, application: Application, charge_id: str) -> Order:
        """The order a Telegram charge was recorded for (paid it, duplicated it, or was refunded
        since). Another application's charge answers exactly as an unknown one."""
        problem = charge_id_problem(charge_id)
        if problem is not None:
            raise InvalidArgument([FieldViolation("telegram_payment_charge_id", problem)])
        order = await self._orders.find_by_charge(application.id, charge_id)
        if order is None:
            # The charge id is not echoed: the message is the same for every unknown charge.
            raise OrderNotFound("no order of this application has this charge id")
        return order

    async def list_orders(
        self, application: Application, filter_text: str, requested_size: int, page_token: str
    ) -> OrderPage:
        """One page of the application's orders the filter selects, newest first. Every bad
        field (page_size, filter, page_token) is reported at once."""
        violations: list[FieldViolation] = []
        filters = {"filter": filter_text}
        size = _checked(lambda: page_size(requested_size), violations)
        order_filter = _checked(lambda: parse_order_filter(filter_text), violations)
        position = None
        if page_token:
            # (as of, created_at, tg_payment_id): the first page's time judges every page.
            position = _checked(
                lambda: decode_page_token(page_token, filters, (int, int, int)), violations
            )
        if violations:
            raise InvalidArgument(violations)
        assert size is not None and order_filter is not None
        as_of, after = self._clock(), None
        if position is not None:
            as_of = position_time(position[0])
            after = (position_time(position[1]), int(position[2]))
        # One more than asked: whether there is a next page, without an empty last page.
        query = OrderListQuery(order_filter, as_of, after, size + 1)
        orders = await self._orders.list(application.id, query)
        next_token = ""
        if len(orders) > size:
            orders = orders[:size]
            created_at, tg_payment_id = sort_key(orders[-1])
            next_token = encode_page_token(
                (micros(as_of), micros(created_at), tg_payment_id), filters
            )
        return OrderPage(orders, next_token, as_of)

    async def find_by_request_id(self, application: Application, request_id: str) -> Order | None:
        """The order a Pay with this idempotency key made, if one did (and is remembered)."""
        claim = await self._orders.find_by_request_id(application.id, request_id)
        return None if claim is None else claim.order

    async def resume_payment(self, application: Application, tg_use_id: int) -> Order | None:
        if tg_use_id <= 0:
            raise InvalidArgument([FieldViolation("tg_use_id", "must be a positive user id")])
        return await self._orders.find_resumable(application.id, tg_use_id)

    async def cancel(self, application: Application, tg_payment_id: int) -> Order:
        cancelled = None
        if tg_payment_id > 0:
            cancelled = await self._orders.cancel(application.id, tg_payment_id)
        if cancelled is not None:
            return cancelled
        order = await self.query_order(application, tg_payment_id)
        if order.state is OrderState.CANCELLED:
            return order  # withdrawing twice is not an error
        check_transition(order.state_at(self._clock()), OrderState.CANCELLED)
        # It was cancellable when read: it changed between the two statements.
        raise IllegalTransition(f"order {tg_payment_id} changed while being cancelled; retry")

    async def report_invoice_closed(
        self, application: Application, tg_payment_id: int, status: str
    ) -> Order:
        """Records the client's report. It never pays or ends an order: the Mini App's status
        is not proof of anything (clients report `failed` for charges that went through)."""
        require_client_status(status)
        order = None
        if tg_payment_id > 0:
            order = await self._orders.record_client_report(application.id, tg_payment_id, status)
        if order is None:
            raise OrderNotFound(f"order {tg_payment_id} not found")
        return order

    # --- AcknowledgeOrder (domain/fulfilment.py) ---------------------------------------------

    async def acknowledge(
        self, application: Application, tg_payment_id: int, request_id: str
    ) -> Order:
        """Records that a paid order's goods were delivered (idempotent: a repeat, with the same
        request id or none, answers the order unchanged)."""
        violations = []
        if tg_payment_id <= 0:
            violations.append(FieldViolation("tg_payment_id", "must be a positive order id"))
        if request_id and (problem := request_id_problem(request_id)) is not None:
            violations.append(FieldViolation("request_id", problem))
        if violations:
            raise InvalidArgument(violations)
        given = request_id or None
        acknowledged = await self._orders.acknowledge(application.id, tg_payment_id, given)
        if acknowledged is not None:
            log.info("order fulfilled", tg_payment_id=tg_payment_id)
            return acknowledged
        order = await self.query_order(application, tg_payment_id)
        refusal = acknowledgement_refusal(order, given)
        if refusal is not None:
            raise refusal
        return order


def _checked(check: Callable[[], _T], violations: list[FieldViolation]) -> _T | None:
    """What `check()` returns, or None with its violations added to `violations`: so that a
    request's bad fields are all reported at once."""
    try:
        return check()
    except InvalidArgument as error:
        violations.extend(error.violations)
        return None


def _telegram_error(error: TelegramApiError) -> DomainError:
    return failure_error(error, "Telegram refused the invoice")


def _failure_error(order: Order) -> DomainError:
    """Rebuilds the error another call recorded on the order."""
    message = order.failure_reason or "invoice creation failed"
    if order.failure_code == TelegramRateLimited.reason:
        return TelegramRateLimited(message, order.retry_after or 1)
    if order.failure_code == TelegramRejected.reason:
        return TelegramRejected(message)
    return TelegramUnavailable(message)


CLIENT_STATUSES = ("paid", "cancelled", "failed", "pending")


def require_client_status(status: str) -> None:
    """InvalidArgument unless `status` is one a Mini App's invoiceClosed reports."""
    if status not in CLIENT_STATUSES:
        raise InvalidArgument(
            [FieldViolation("status", f"must be one of {', '.join(CLIENT_STATUSES)}")]
        )
