"""Refunds: recorded first, delivered by a worker with backoff, settled exactly once; listed and
retried as objects.

RefundPayment only records the intent, with the caller's reason (domain/refunds.RefundCause), and
wakes the worker, so a crash or a Telegram outage between intent and call loses nothing: the
worker claims due refunds in the database and calls refundStarPayment with no connection held.
Telegram's `CHARGE_ALREADY_REFUNDED` counts as done (Bot API, refundStarPayment); rate limits wait
`retry_after`; other failures back off, and after `max_attempts` the refund is marked failed and
announced. RetryRefund makes a failed refund pending again with a fresh budget of attempts (one
statement with its `refund.retried` event) and wakes the worker. ListRefunds reads a page per call
(domain/paging.py), each one short statement.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import structlog

from portex_pay.domain.application import Application
from portex_pay.domain.checkout import charge_id_problem
from portex_pay.domain.errors import (
    FieldViolation,
    IllegalTransition,
    InvalidArgument,
    OrderNotFound,
    RefundNotFound,
    RefundSucceeded,
)
from portex_pay.domain.order import Order
from portex_pay.domain.paging import (
    decode_page_token,
    encode_page_token,
    micros,
    page_size,
    position_time,
)
from portex_pay.domain.refunds import (
    DUE,
    DueRefund,
    Refund,
    RefundCause,
    RefundFilter,
    RefundPosition,
    RefundReasonCode,
    RefundState,
)
from portex_pay.domain.retry import retry_in as next_retry_in
from portex_pay.domain.telegram import (
    ChargeAlreadyRefunded,
    TelegramApiError,
    TelegramNetworkError,
)
from portex_pay.service.ledger import Ledger
from portex_pay.service.ports import NO_METRICS, Metrics, Payments, Refunds, TelegramBot

log = structlog.get_logger(__name__)


class RefundService:
    def __init__(
        self,
        payments: Payments,
        refunds: Refunds,
        bot_api: TelegramBot,
        *,
        max_attempts: int,
        base_backoff: float = 2.0,
        max_backoff: float = 3600.0,
        batch: int = 20,
        lease_seconds: float = 60.0,
        wake: Callable[[], None] = lambda: None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._lease_seconds = lease_seconds
        self._metrics = metrics
        self._payments = payments
        self._refunds = refunds
        self._ledger = Ledger(payments)
        self._bot_api = bot_api
        self._max_attempts = max_attempts
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._batch = batch
        self.wake = wake

    async def request(
        self,
        application: Application,
        tg_payment_id: int,
        reason_code: RefundReasonCode | None = None,
        reason_text: str = "",
        *,
        charge_id: str | None = None,
    ) -> tuple[Refund, Order]:
        """Records a refund of a paid order (idempotent: asking again returns the same one, with
        the reason it was first asked for): of the charge that paid it, or of `charge_id`, one
        of its paying charges (a subscription's period)."""
        cause = RefundCause.requested(reason_code, reason_text)
        bot = application.require_bot()
        if charge_id is not None:
            return await self._request_charge(application, tg_payment_id, charge_id, cause)
        found = None
        if tg_payment_id > 0:
            found = await self._ledger.request_refund(application.id, tg_payment_id, bot.id, cause)
        if found is None:
            raise OrderNotFound(f"order {tg_payment_id} not found")
        return self._asked(found.order, found.refund)

    async def _request_charge(
        self, application: Application, tg_payment_id: int, charge_id: str, cause: RefundCause
    ) -> tuple[Refund, Order]:
        problem = charge_id_problem(charge_id)
        if problem is not None:
            raise InvalidArgument([FieldViolation("telegram_payment_charge_id", problem)])
        order = None
        if tg_payment_id > 0:
            order = await self._ledger.request_charge_refund(
                application.id, tg_payment_id, charge_id, application.require_bot().id, cause
            )
        if order is None:
            raise OrderNotFound(f"order {tg_payment_id} not found")
        return self._asked(order, await self._refunds.get(application.id, charge_id))

    def _asked(self, order: Order, refund: Refund | None) -> tuple[Refund, Order]:
        """The refund asked for (None: the order was not refundable), its delivery woken when
        it is due."""
        if refund is None:
            raise IllegalTransition(
                f"order {order.tg_payment_id} is {order.state}: only a paid order can be refunded",
                metadata={"state": order.state.value},
            )
        if refund.state in DUE:
            self.wake()
        return refund, order

    async def retry(self, application: Application, charge_id: str) -> Refund:
        """Sends a failed refund again (RetryRefund); a pending one is returned as it is."""
        problem = charge_id_problem(charge_id)
        if problem is not None:
            raise InvalidArgument([FieldViolation("telegram_payment_charge_id", problem)])
        retried = await self._refunds.retry(application.id, charge_id)
        if retried is not None:
            log.info("refund retried", tg_payment_id=retried.tg_payment_id, retries=retried.retries)
            self.wake()
            return retried
        refund = await self._refunds.get(application.id, charge_id)
        if refund is None:
            raise RefundNotFound(f"no refund of charge {charge_id!r}")
        if refund.state is RefundState.SUCCEEDED:
            raise RefundSucceeded(f"the refund of charge {charge_id!r} succeeded")
        if refund.state in DUE:
            return refund  # being sent already
        raise IllegalTransition(f"the refund of charge {charge_id!r} changed; retry")

    async def list_refunds(
        self,
        application: Application,
        refund_filter: RefundFilter,
        *,
        page_token: str = "",
        requested_page_size: int = 0,
    ) -> tuple[list[Refund], str]:
        """One page of the application's refunds (ListRefunds), newest first, and the token of
        the next page ("" on the last)."""
        size = page_size(requested_page_size)
        if refund_filter.tg_payment_id is not None and refund_filter.tg_payment_id <= 0:
            raise InvalidArgument([FieldViolation("tg_payment_id", "must be positive")])
        filters = _filter_key(refund_filter)
        after = None
        if page_token:
            created, charge_id = decode_page_token(page_token, filters, (int, str))
            after = RefundPosition(position_time(created), str(charge_id))
        # One more than the page: whether a next page exists, without an empty last page.
        found = await self._refunds.list(application.id, refund_filter, after, size + 1)
        page = found[:size]
        next_token = ""
        if len(found) > size:
            last = page[-1]
            next_token = encode_page_token(
                (micros(last.created_at), last.telegram_payment_charge_id), filters
            )
        return page, next_token

    async def step(self) -> int:
        """One batch of due refunds, delivered concurrently; returns how many were tried."""
        # The lease outlasts the call: a refund in flight on a replica that dies is retried by
        # another once it lapses (Telegram's CHARGE_ALREADY_REFUNDED makes a repeat harmless).
        due = await self._payments.claim_due_refunds(self._batch, self._lease_seconds)
        await asyncio.gather(*(self._deliver(refund) for refund in due))
        return len(due)

    async def _deliver(self, refund: DueRefund) -> None:
        charge_id = refund.telegram_payment_charge_id
        if refund.bot_token is None:
            await self._failed(refund, "the application has no bot token", None)
            return
        try:
            await self._bot_api.refund_star_payment(refund.bot_token, refund.tg_use_id, charge_id)
        except ChargeAlreadyRefunded:
            self._metrics.refund_attempted("already_refunded")
            await self._ledger.settle_refund(refund.application_id, charge_id)
            return
        except TelegramApiError as error:
            await self._failed(refund, f"{error.error_code} {error.description}", error.retry_after)
            return
        except TelegramNetworkError as error:
            await self._failed(refund, error.reason, None)
            return
        self._metrics.refund_attempted("succeeded")
        await self._ledger.settle_refund(refund.application_id, charge_id)
        log.info("refund delivered", tg_payment_id=refund.tg_payment_id)

    async def _failed(self, refund: DueRefund, error: str, retry_after: int | None) -> None:
        attempts = refund.attempts + 1
        retry_in = next_retry_in(
            attempts, self._max_attempts, base=self._base_backoff, cap=self._max_backoff
        )
        if retry_in is not None and retry_after is not None:
            retry_in = max(retry_in, float(retry_after))
        self._metrics.refund_attempted("failed" if retry_in is None else "retrying")
        log.warning(
            "refund attempt failed",
            tg_payment_id=refund.tg_payment_id,
            attempts=attempts,
            error=error,
            retry_in=retry_in,
        )
        await self._payments.refund_attempt_failed(
            refund.telegram_payment_charge_id, error, retry_in
        )


def _filter_key(refund_filter: RefundFilter) -> dict[str, object]:
    """The filters a page token is bound to: every field of the filter."""
    return dataclasses.asdict(refund_filter)


__all__ = ["RefundService"]
