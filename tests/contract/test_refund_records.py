"""The Refunds port's contract (service/ports.py: refunds as objects, for ListRefunds and
RetryRefund), on the fake and on PostgreSQL. Every read and the retry are scoped to the caller's
application; a retry makes only a failed refund pending again, with a fresh budget of attempts,
one more retry and its `refund.retried` event; a list is newest first (creation time, then charge
id), filtered by order, state and creation time, and continues strictly after a position."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from portex_pay.domain.refunds import (
    Refund,
    RefundFilter,
    RefundPosition,
    RefundState,
)
from tests.contract.backend import Backend
from tests.contract.steps import (
    events_of,
    new_bot_token,
    new_charge_id,
    new_order,
    pay,
    request_refund,
    requested_refund,
)

LONG = 3600.0


async def refunded_order(backend: Backend, app: UUID | None = None) -> tuple[Refund, UUID]:
    """A pending refund of a new paid order (of `app`, or of a new application)."""
    if app is None:
        app = await backend.add_application(new_bot_token())
    order = await pay(backend, await new_order(backend, app))
    await request_refund(backend, order)
    refund = await requested_refund(backend, order)
    assert refund is not None
    backend.pass_time()
    return refund, app


async def failed(backend: Backend, refund: Refund) -> None:
    await backend.payments.refund_attempt_failed(
        refund.telegram_payment_charge_id, "400 Bad Request: BALANCE_TOO_LOW", None
    )


async def test_a_refund_is_found_by_its_charge_in_its_application_only(backend: Backend) -> None:
    refund, app = await refunded_order(backend)
    other = await backend.add_application(None)
    charge_id = refund.telegram_payment_charge_id
    assert await backend.refunds.get(app, charge_id) == refund
    assert await backend.refunds.get(other, charge_id) is None
    assert await backend.refunds.get(app, new_charge_id()) is None


async def test_a_failed_refund_is_retried_with_a_fresh_budget_and_announced(
    backend: Backend,
) -> None:
    refund, app = await refunded_order(backend)
    charge_id = refund.telegram_payment_charge_id
    await failed(backend, refund)
    assert await backend.payments.claim_due_refunds(10, LONG) == []
    retried = await backend.refunds.retry(app, charge_id)
    assert retried is not None
    assert (retried.state, retried.attempts, retried.retries, retried.last_error) == (
        RefundState.PENDING,
        0,
        1,
        "400 Bad Request: BALANCE_TOO_LOW",
    )
    assert await backend.refunds.get(app, charge_id) == retried
    (due,) = await backend.payments.claim_due_refunds(10, LONG)  # due at once
    assert (due.telegram_payment_charge_id, due.attempts) == (charge_id, 0)
    (event,) = [e for e in await events_of(backend, app) if e.type == "refund.retried"]
    assert (event.tg_payment_id, event.data["telegram_payment_charge_id"]) == (
        refund.tg_payment_id,
        charge_id,
    )
    assert Refund.from_snapshot(event.data["refund"]) == retried
    assert event.data["order"]["tg_payment_id"] == refund.tg_payment_id
    # Fails again, and is retried again: the count goes on.
    await failed(backend, retried)
    again = await backend.refunds.retry(app, charge_id)
    assert again is not None and (again.retries, again.attempts) == (2, 0)


async def test_only_a_failed_refund_of_the_callers_application_is_retried(
    backend: Backend,
) -> None:
    pending, app = await refunded_order(backend)
    other = await backend.add_application(None)
    assert await backend.refunds.retry(app, pending.telegram_payment_charge_id) is None
    await failed(backend, pending)
    assert await backend.refunds.retry(other, pending.telegram_payment_charge_id) is None
    assert await backend.refunds.retry(app, new_charge_id()) is None
    succeeded, app2 = await refunded_order(backend)
    async with backend.payments.transaction() as tx:
        await tx.refunds.complete(app2, succeeded.telegram_payment_charge_id)
    assert await backend.refunds.retry(app2, succeeded.telegram_payment_charge_id) is None
    stored = await backend.refunds.get(app, pending.telegram_payment_charge_id)
    assert stored is not None and (stored.state, stored.retries) == (RefundState.FAILED, 0)
    assert "refund.retried" not in [e.type for e in await events_of(backend, app)]


async def test_a_late_failed_attempt_does_not_revive_a_failed_refund(backend: Backend) -> None:
    refund, app = await refunded_order(backend)
    await failed(backend, refund)
    await backend.payments.refund_attempt_failed(refund.telegram_payment_charge_id, "late", 5.0)
    stored = await backend.refunds.get(app, refund.telegram_payment_charge_id)
    assert stored is not None
    assert (stored.state, stored.attempts) == (RefundState.FAILED, 1)


async def test_a_list_is_newest_first_and_continues_after_a_position(backend: Backend) -> None:
    app = await backend.add_application(new_bot_token())
    made = [(await refunded_order(backend, app))[0] for _ in range(5)]
    other_app_refund, _ = await refunded_order(backend)
    newest_first = sorted(
        made, key=lambda r: (r.created_at, r.telegram_payment_charge_id), reverse=True
    )
    everything = await backend.refunds.list(app, RefundFilter(), None, 100)
    assert everything == newest_first
    assert other_app_refund not in everything
    first = await backend.refunds.list(app, RefundFilter(), None, 2)
    assert first == newest_first[:2]
    position = RefundPosition(first[-1].created_at, first[-1].telegram_payment_charge_id)
    rest = await backend.refunds.list(app, RefundFilter(), position, 100)
    assert rest == newest_first[2:]


async def test_a_list_is_filtered_by_order_state_and_time(backend: Backend) -> None:
    app = await backend.add_application(new_bot_token())
    first, _ = await refunded_order(backend, app)
    second, _ = await refunded_order(backend, app)
    third, _ = await refunded_order(backend, app)
    await failed(backend, second)
    failed_second = await backend.refunds.get(app, second.telegram_payment_charge_id)

    async def listed(refund_filter: RefundFilter) -> list[Refund]:
        return await backend.refunds.list(app, refund_filter, None, 100)

    assert await listed(RefundFilter(tg_payment_id=first.tg_payment_id)) == [first]
    assert await listed(RefundFilter(tg_payment_id=2**62)) == []
    assert await listed(RefundFilter(state=RefundState.FAILED)) == [failed_second]
    assert await listed(RefundFilter(state=RefundState.PENDING)) == [third, first]
    assert await listed(RefundFilter(state=RefundState.SUCCEEDED)) == []
    # The start is inclusive, the end exclusive.
    assert await listed(RefundFilter(created_from=second.created_at)) == [third, failed_second]
    assert await listed(RefundFilter(created_before=second.created_at)) == [first]
    assert await listed(
        RefundFilter(created_from=second.created_at, created_before=third.created_at)
    ) == [failed_second]
    assert (
        await listed(RefundFilter(created_from=third.created_at + timedelta(microseconds=1))) == []
    )
    assert await listed(
        RefundFilter(state=RefundState.PENDING, created_from=second.created_at)
    ) == [third]
