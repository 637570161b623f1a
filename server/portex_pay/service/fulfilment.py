"""The unfulfilled-order policy at work: paid orders nobody acknowledged within their application's
deadline (domain/fulfilment.py) are refunded, reason `unfulfilled`, code NOT_FULFILLED.

One `PeriodicWorker` step (service/worker.py) reads a bounded batch of such orders as of the
service clock's now, and asks for each one's refund through the same unit of work as RefundPayment
(service/ledger.py: the order locked, judged, the refund and its event recorded together), then
wakes the refund worker, which sends them. It is idempotent and safe on any number of replicas: a
refund per charge is the refunds table's key, and the order is judged under its lock, so an
acknowledgement that commits first wins and an order refunded once is never refunded again.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from portex_pay.domain.checkout import RefundReason
from portex_pay.domain.refunds import RefundCause
from portex_pay.service.clock import Clock, utcnow
from portex_pay.service.ledger import Ledger
from portex_pay.service.ports import Payments, UnfulfilledOrders

log = structlog.get_logger(__name__)

# Orders read per step: a backlog (a policy switched on, a long outage) is refunded in batches.
BATCH = 100

UNFULFILLED = RefundCause.own(RefundReason.UNFULFILLED)


class UnfulfilledRefunds:
    def __init__(
        self,
        orders: UnfulfilledOrders,
        payments: Payments,
        *,
        clock: Clock = utcnow,
        batch: int = BATCH,
        wake_refunds: Callable[[], None] = lambda: None,
    ) -> None:
        self._orders = orders
        self._ledger = Ledger(payments)
        self._clock = clock
        self._batch = batch
        self._wake_refunds = wake_refunds

    async def step(self) -> int:
        """Refunds a batch of the paid orders left unacknowledged past their deadline; returns
        how many refunds it recorded (the worker runs again at once while it records some)."""
        due = await self._orders.unfulfilled_past_deadline(self._clock(), self._batch)
        recorded = 0
        for order in due:
            found = await self._ledger.request_refund(
                order.application_id, order.tg_payment_id, order.bot_id, UNFULFILLED
            )
            # Not recorded: acknowledged, refunded or asked for since it was read (here or on
            # another replica), and left as it is.
            if found is not None and found.recorded:
                recorded += 1
                log.info("unfulfilled order refunded", tg_payment_id=order.tg_payment_id)
        if recorded:
            self._wake_refunds()
        return recorded
