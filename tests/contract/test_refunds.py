"""The refunds' contract (service/ports.py: RefundIntents in the unit of work, and the refund
worker's Payments.claim_due_refunds / refund_attempt_failed), on the fake and on PostgreSQL. A
charge is refunded at most once, and only a charge that was recorded; the worker leases due
refunds (a lease keeps a refund from every other claim until it lapses, and a claim takes no more
than it returns); a failed attempt backs off or gives up with its event; states change only as
domain/refunds.py's table allows; another application's refund is not settled."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from portex_pay.domain.checkout import RefundReason
from portex_pay.domain.order import Order
from portex_pay.domain.refunds import Refund, RefundCause, RefundReasonCode, RefundState
from portex_pay.service.ledger import CUSTOMER_REQUEST, Ledger
from tests.contract.backend import Backend
from tests.contract.steps import (
    BOT_ID,
    announced,
    event_types,
    events_of,
    new_bot_token,
    new_charge_id,
    new_order,
    pay,
    request_refund,
    requested_refund,
)
from tests.integration.helpers import eventually
from tests.unit.fakes import ConstraintViolation

LONG = 3600.0


async def paid_order(backend: Backend, bot_token: str | None = "") -> Order:
    """A paid order of a new application with a bot (a token of its own unless given), or with
    none (`bot_token` None)."""
    if bot_token == "":
        bot_token = new_bot_token()
    app = await backend.add_application(bot_token)
    return await pay(backend, await new_order(backend, app))


async def test_a_charge_is_refunded_at_most_once_and_announced(backend: Backend) -> None:
    order = await paid_order(backend)
    charge_id = await request_refund(backend, order)
    async with backend.payments.transaction() as tx:
        again = await tx.refunds.add(
            charge_id,
            BOT_ID,
            order.application_id,
            order.tg_payment_id,
            order.tg_use_id,
            order.amount,
            RefundCause.own(RefundReason.DUPLICATE_CHARGE),
        )
    assert not again
    refund = await requested_refund(backend, order)
    assert refund is not None
    assert (refund.telegram_payment_charge_id, refund.tg_payment_id, refund.amount) == (
        charge_id,
        order.tg_payment_id,
        order.amount,
    )
    assert (refund.state, refund.reason, refund.attempts, refund.last_error) == (
        RefundState.PENDING,
        "requested",
        0,
        None,
    )
    # The first cause stands: the second ask changed nothing.
    assert (refund.reason_code, refund.reason_text, refund.tg_use_id, refund.retries) == (
        RefundReasonCode.REQUESTED_BY_CUSTOMER,
        None,
        order.tg_use_id,
        0,
    )
    assert refund.completed_at is None
    events = await events_of(backend, order.application_id)
    assert [event.type for event in events].count("refund.requested") == 1
    event = events[-1]
    assert (event.type, event.tg_payment_id) == ("refund.requested", order.tg_payment_id)
    assert (event.data["telegram_payment_charge_id"], event.data["reason"]) == (
        charge_id,
        "requested",
    )
    assert announced(event) == order
    assert Refund.from_snapshot(event.data["refund"]) == refund


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (RefundReason.DUPLICATE_CHARGE, RefundReasonCode.DUPLICATE),
        (RefundReason.CANCELLED_ORDER, RefundReasonCode.ORDER_CANCELLED),
        (RefundReason.ANOMALY, RefundReasonCode.OTHER),
        (RefundReason.UNFULFILLED, RefundReasonCode.NOT_FULFILLED),
        (RefundReason.OUTSIDE, RefundReasonCode.OTHER),
    ],
)
async def test_the_orders_refund_is_its_charges_whoever_asked_with_its_code(
    backend: Backend, reason: RefundReason, code: RefundReasonCode
) -> None:
    order = await paid_order(backend)
    await request_refund(backend, order, RefundCause.own(reason))
    refund = await requested_refund(backend, order)
    assert refund is not None
    assert (refund.reason, refund.reason_code, refund.reason_text) == (reason.value, code, None)


async def test_a_callers_reason_is_kept_with_the_refund(backend: Backend) -> None:
    order = await paid_order(backend)
    text = "Wrong item\nbought by mistake"
    await request_refund(backend, order, RefundCause.requested(RefundReasonCode.FRAUDULENT, text))
    refund = await requested_refund(backend, order)
    assert refund is not None
    assert (refund.reason, refund.reason_code, refund.reason_text) == (
        "requested",
        RefundReasonCode.FRAUDULENT,
        text,
    )
    (event,) = [
        e for e in await events_of(backend, order.application_id) if e.type == "refund.requested"
    ]
    assert Refund.from_snapshot(event.data["refund"]) == refund


async def test_a_refund_needs_a_recorded_charge(backend: Backend) -> None:
    order = await paid_order(backend)
    with pytest.raises((asyncpg.ForeignKeyViolationError, ConstraintViolation)):
        async with backend.payments.transaction() as tx:
            await tx.refunds.add(
                new_charge_id(),
                BOT_ID,
                order.application_id,
                order.tg_payment_id,
                order.tg_use_id,
                order.amount,
                CUSTOMER_REQUEST,
            )
    assert await requested_refund(backend, order) is None
    assert "refund.requested" not in await event_types(backend, order.application_id)


async def test_a_refund_succeeds_once_for_its_application_only(backend: Backend) -> None:
    order = await paid_order(backend)
    other = await backend.add_application(None)
    charge_id = await request_refund(backend, order)
    async with backend.payments.transaction() as tx:
        await tx.refunds.complete(other, charge_id)
        await tx.refunds.complete(order.application_id, new_charge_id())
    untouched = await requested_refund(backend, order)
    assert untouched is not None and untouched.state is RefundState.PENDING
    async with backend.payments.transaction() as tx:
        await tx.refunds.complete(order.application_id, charge_id)
    done = await requested_refund(backend, order)
    assert done is not None
    assert (done.state, done.attempts) == (RefundState.SUCCEEDED, 1)
    assert done.completed_at is not None
    async with backend.payments.transaction() as tx:
        await tx.refunds.complete(order.application_id, charge_id)
    assert await requested_refund(backend, order) == done
    assert await backend.payments.claim_due_refunds(10, LONG) == []


async def test_the_worker_leases_a_due_refund_until_the_lease_lapses(backend: Backend) -> None:
    order = await paid_order(backend, bot_token="7:secret")
    charge_id = await request_refund(backend, order)
    (due,) = await backend.payments.claim_due_refunds(10, 0.0)
    assert (due.telegram_payment_charge_id, due.application_id, due.tg_payment_id) == (
        charge_id,
        order.application_id,
        order.tg_payment_id,
    )
    assert (due.tg_use_id, due.attempts, due.bot_token) == (order.tg_use_id, 0, "7:secret")
    # A lease of no time lapses at once: the refund is due again.
    (again,) = await backend.payments.claim_due_refunds(10, LONG)
    assert again == due
    assert await backend.payments.claim_due_refunds(10, LONG) == []


async def test_a_claim_leases_no_more_refunds_than_it_returns(backend: Backend) -> None:
    charges = []
    for _ in range(3):
        charges.append(await request_refund(backend, await paid_order(backend)))
    first = await backend.payments.claim_due_refunds(2, LONG)
    rest = await backend.payments.claim_due_refunds(10, LONG)
    assert len(first) == 2 and len(rest) == 1
    claimed = {due.telegram_payment_charge_id for due in first + rest}
    assert claimed == set(charges)


async def test_the_refund_of_an_application_without_a_bot_token_says_so(backend: Backend) -> None:
    order = await paid_order(backend, bot_token=None)
    await request_refund(backend, order)
    (due,) = await backend.payments.claim_due_refunds(10, LONG)
    assert due.bot_token is None


async def test_a_failed_attempt_backs_off(backend: Backend) -> None:
    order = await paid_order(backend)
    charge_id = await request_refund(backend, order)
    assert await backend.payments.claim_due_refunds(10, LONG)
    await backend.payments.refund_attempt_failed(charge_id, "429 Too Many Requests", LONG)
    refund = await requested_refund(backend, order)
    assert refund is not None
    assert (refund.state, refund.attempts, refund.last_error) == (
        RefundState.PENDING,
        1,
        "429 Too Many Requests",
    )
    assert await backend.payments.claim_due_refunds(10, LONG) == []  # backing off
    await backend.payments.refund_attempt_failed(charge_id, "timed out", 0.0)
    (due,) = await backend.payments.claim_due_refunds(10, LONG)  # no back-off: due at once
    assert due.attempts == 2
    assert "refund.failed" not in await event_types(backend, order.application_id)


async def test_the_last_failed_attempt_gives_up_once_and_announces_it(backend: Backend) -> None:
    order = await paid_order(backend)
    charge_id = await request_refund(backend, order)
    await backend.payments.refund_attempt_failed(charge_id, "400 CHARGE_NOT_FOUND", None)
    await backend.payments.refund_attempt_failed(charge_id, "again", None)  # failed: no change
    await backend.payments.refund_attempt_failed(charge_id, "again", 0.0)
    refund = await requested_refund(backend, order)
    assert refund is not None
    assert (refund.state, refund.attempts, refund.last_error) == (
        RefundState.FAILED,
        1,
        "400 CHARGE_NOT_FOUND",
    )
    assert await backend.payments.claim_due_refunds(10, 0.0) == []
    failed = [
        e for e in await events_of(backend, order.application_id) if e.type == "refund.failed"
    ]
    assert len(failed) == 1
    assert failed[0].data["telegram_payment_charge_id"] == charge_id
    assert failed[0].data["error"] == "400 CHARGE_NOT_FOUND"
    assert announced(failed[0]) == order
    assert Refund.from_snapshot(failed[0].data["refund"]) == refund
    # Telegram's word that the charge was refunded after all still settles it (the table).
    async with backend.payments.transaction() as tx:
        await tx.refunds.complete(order.application_id, charge_id)
    settled = await requested_refund(backend, order)
    assert settled is not None and settled.state is RefundState.SUCCEEDED


async def test_a_failed_attempt_changes_no_settled_or_unknown_refund(backend: Backend) -> None:
    order = await paid_order(backend)
    charge_id = await request_refund(backend, order)
    async with backend.payments.transaction() as tx:
        await tx.refunds.complete(order.application_id, charge_id)
    done = await requested_refund(backend, order)
    await backend.payments.refund_attempt_failed(charge_id, "late", None)
    await backend.payments.refund_attempt_failed(new_charge_id(), "unknown", None)
    assert await requested_refund(backend, order) == done
    assert "refund.failed" not in await event_types(backend, order.application_id)


async def test_settling_a_refund_waits_for_a_refund_asked_for_on_its_order(
    postgres_backend: Backend, contract_pool: asyncpg.Pool
) -> None:
    """Telegram's confirmation of a refund (the worker's, or a refunded_payment update) while a
    caller asks for the same refund again: asking locks the order, then the refund's row;
    settling must lock in that order too, or each waits for the other until PostgreSQL's
    deadlock check aborts one (seen as a RefundPayment answered UNAVAILABLE after 1 s)."""
    backend = postgres_backend
    order = await paid_order(backend)
    charge_id = await request_refund(backend, order)
    async with backend.payments.transaction() as tx:
        assert await tx.orders.lock(order.application_id, order.tg_payment_id) is not None
        orders: Any = tx.orders  # the PostgreSQL adapter's: its connection is this transaction's
        holder = await orders._conn.fetchval("SELECT pg_backend_pid()")
        settling = asyncio.create_task(
            Ledger(backend.payments).settle_refund(order.application_id, charge_id)
        )

        async def settling_waits() -> bool:
            # For a lock this transaction holds: only a backend blocked by this one counts (the
            # shared session service and other tests use the same database, and may wait on
            # locks of their own). Nothing else here waits for this transaction but settling.
            waiting = await contract_pool.fetchval(
                """
                SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock'
                  AND $1::int = ANY(pg_blocking_pids(pid))
                """,
                holder,
            )
            return bool(waiting)

        await eventually(settling_waits, what="settling blocked on a lock")
        assert not settling.done()
        asked = await tx.refunds.add(
            charge_id,
            BOT_ID,
            order.application_id,
            order.tg_payment_id,
            order.tg_use_id,
            order.amount,
            CUSTOMER_REQUEST,
        )
        assert not asked  # asked before: the same refund
    assert await settling
    refund = await requested_refund(backend, order)
    assert refund is not None and refund.state is RefundState.SUCCEEDED
