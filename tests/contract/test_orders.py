"""The Orders port's contract (service/ports.py), on the fake and on PostgreSQL: what the order
use cases rely on. A request id claims one order per application; the invoice lease goes to one
caller at a time; every change is guarded by the transition table and announced by its event,
which carries the order as it is after the change; an order past its expiry time is neither
cancelled nor resumed, and the sweep expires it; another application's order is not found."""

from __future__ import annotations

from datetime import timedelta

import pytest

from portex_pay.domain.order import OrderState, sources
from tests.contract.backend import Backend
from tests.contract.steps import (
    DAY,
    USER,
    announced,
    command,
    event_types,
    events_of,
    new_order,
    order_in,
    pay,
    unleased,
)

UNKNOWN_ORDER = 2**62


async def test_a_created_order_is_pending_leased_to_its_creator_and_announced(
    backend: Backend,
) -> None:
    app = await backend.add_application(None)
    order = await backend.orders.create(
        app,
        command(payload="p", callback_url="https://x.test/cb"),
        ttl_seconds=900,
        lease_seconds=30,
    )
    assert (order.application_id, order.state, order.invoice_link) == (
        app,
        OrderState.PENDING,
        None,
    )
    assert (order.tg_use_id, order.amount, order.payload, order.callback_url) == (
        USER,
        5,
        "p",
        "https://x.test/cb",
    )
    assert order.expires_at == order.created_at + timedelta(seconds=900)
    assert order.invoice_lease_until == order.created_at + timedelta(seconds=30)
    assert await backend.orders.get(app, order.tg_payment_id) == order
    (event,) = await events_of(backend, app)
    assert (event.type, event.tg_payment_id) == ("order.created", order.tg_payment_id)
    assert announced(event) == unleased(order)


async def test_a_request_id_claims_one_order_per_application(backend: Backend) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    first = await backend.orders.create_idempotent(
        app, "req-1", command(), ttl_seconds=DAY, lease_seconds=30
    )
    again = await backend.orders.create_idempotent(
        app, "req-1", command(), ttl_seconds=DAY, lease_seconds=30
    )
    reused = await backend.orders.create_idempotent(
        app, "req-1", command(amount=7), ttl_seconds=DAY, lease_seconds=30
    )
    assert first.created and first.request_hash == command().fingerprint()
    assert (again.created, again.order, again.request_hash) == (
        False,
        first.order,
        first.request_hash,
    )
    # A reused key with other fields finds the first order and its fingerprint: the caller tells.
    assert (reused.created, reused.order, reused.request_hash) == (
        False,
        first.order,
        first.request_hash,
    )
    found = await backend.orders.find_by_request_id(app, "req-1")
    assert found is not None and (found.created, found.order) == (False, first.order)
    assert await backend.orders.find_by_request_id(app, "req-2") is None
    assert await backend.orders.find_by_request_id(other, "req-1") is None
    theirs = await backend.orders.create_idempotent(
        other, "req-1", command(), ttl_seconds=DAY, lease_seconds=30
    )
    assert theirs.created and theirs.order.tg_payment_id != first.order.tg_payment_id
    assert await event_types(backend, app) == ["order.created"]


async def test_another_applications_order_is_not_found_and_not_changed(backend: Backend) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    order = await new_order(backend, app)
    order_id = order.tg_payment_id
    assert await backend.orders.get(other, order_id) is None
    assert await backend.orders.take_invoice_lease(other, order_id, 30) is None
    assert await backend.orders.cancel(other, order_id) is None
    assert await backend.orders.record_client_report(other, order_id, "paid") is None
    linked = await backend.orders.record_invoice_link(order_id, "https://t.me/$a")
    assert linked is not None
    assert await backend.orders.find_resumable(other, USER) is None
    assert await backend.orders.get(app, order_id) == linked
    assert await events_of(backend, other) == []


async def test_an_unknown_order_is_not_found(backend: Backend) -> None:
    app = await backend.add_application(None)
    assert await backend.orders.get(app, UNKNOWN_ORDER) is None
    assert await backend.orders.take_invoice_lease(app, UNKNOWN_ORDER, 30) is None
    assert await backend.orders.record_invoice_link(UNKNOWN_ORDER, "https://t.me/$a") is None
    assert await backend.orders.record_invoice_failure(UNKNOWN_ORDER, "E", "r", None) is None
    assert await backend.orders.cancel(app, UNKNOWN_ORDER) is None
    assert await backend.orders.record_client_report(app, UNKNOWN_ORDER, "paid") is None
    await backend.orders.release_invoice_lease(UNKNOWN_ORDER)  # nothing to release
    assert await events_of(backend, app) == []


async def test_the_invoice_lease_goes_to_one_caller_at_a_time(backend: Backend) -> None:
    app = await backend.add_application(None)
    held = await new_order(backend, app, lease=30)
    assert await backend.orders.take_invoice_lease(app, held.tg_payment_id, 30) is None
    order = await new_order(backend, app, lease=0)
    leased = await backend.orders.take_invoice_lease(app, order.tg_payment_id, 30)
    assert leased is not None and leased.invoice_lease_until is not None
    assert leased.invoice_lease_until > order.created_at
    assert await backend.orders.take_invoice_lease(app, order.tg_payment_id, 30) is None
    await backend.orders.release_invoice_lease(order.tg_payment_id)
    released = await backend.orders.get(app, order.tg_payment_id)
    assert released is not None and released.invoice_lease_until is None
    assert await backend.orders.take_invoice_lease(app, order.tg_payment_id, 30) is not None
    # Taking and giving back the lease is no change of the order: nothing is announced.
    assert await event_types(backend, app) == ["order.created", "order.created"]


async def test_an_invoice_link_is_recorded_once_and_ends_the_lease(backend: Backend) -> None:
    app = await backend.add_application(None)
    order = await new_order(backend, app, lease=30)
    linked = await backend.orders.record_invoice_link(order.tg_payment_id, "https://t.me/$a")
    assert linked is not None
    assert (linked.state, linked.invoice_link, linked.invoice_lease_until) == (
        OrderState.PENDING,
        "https://t.me/$a",
        None,
    )
    assert await backend.orders.record_invoice_link(order.tg_payment_id, "https://t.me/$b") is None
    assert await backend.orders.record_invoice_failure(order.tg_payment_id, "E", "r", 3) is None
    assert await backend.orders.take_invoice_lease(app, order.tg_payment_id, 30) is None
    await backend.orders.release_invoice_lease(order.tg_payment_id)
    assert await backend.orders.get(app, order.tg_payment_id) == linked
    events = await events_of(backend, app)
    assert [event.type for event in events] == ["order.created", "order.invoice_created"]
    assert announced(events[-1]) == linked


async def test_a_failed_invoice_is_kept_with_its_reason_and_can_be_retried(
    backend: Backend,
) -> None:
    app = await backend.add_application(None)
    order = await new_order(backend, app, lease=30)
    failed = await backend.orders.record_invoice_failure(
        order.tg_payment_id, "TOO_MANY_REQUESTS", "flood", 7
    )
    assert failed is not None
    assert (failed.state, failed.failure_code, failed.failure_reason, failed.retry_after) == (
        OrderState.FAILED,
        "TOO_MANY_REQUESTS",
        "flood",
        7,
    )
    assert failed.invoice_lease_until is None
    retry = await backend.orders.take_invoice_lease(app, order.tg_payment_id, 30)
    assert retry is not None and retry.state is OrderState.FAILED
    linked = await backend.orders.record_invoice_link(order.tg_payment_id, "https://t.me/$a")
    assert linked is not None
    assert (linked.state, linked.failure_code, linked.failure_reason, linked.retry_after) == (
        OrderState.PENDING,
        None,
        None,
        None,
    )
    events = await events_of(backend, app)
    assert [event.type for event in events] == [
        "order.created",
        "order.failed",
        "order.invoice_created",
    ]
    assert announced(events[1]) == failed


@pytest.mark.parametrize("state", list(OrderState))
async def test_a_link_a_failure_and_a_lease_follow_the_table(
    backend: Backend, state: OrderState
) -> None:
    """Only an order the table lets become pending (or failed) takes an invoice lease, a link or
    a failure; any other is left as it is."""
    app = await backend.add_application(None)
    order = await order_in(backend, app, state)
    order_id = order.tg_payment_id
    leased = await backend.orders.take_invoice_lease(app, order_id, 0)
    assert (leased is not None) is (state.value in sources(OrderState.PENDING))
    failed = await backend.orders.record_invoice_failure(order_id, "E", "r", None)
    assert (failed is not None) is (state.value in sources(OrderState.FAILED))
    linked = await backend.orders.record_invoice_link(order_id, "https://t.me/$a")
    # A failed order is failed again, and may still get its link.
    assert (linked is not None) is (state.value in sources(OrderState.PENDING))
    if linked is None:
        assert await backend.orders.get(app, order_id) == order


@pytest.mark.parametrize("state", list(OrderState))
async def test_cancel_follows_the_table(backend: Backend, state: OrderState) -> None:
    app = await backend.add_application(None)
    order = await order_in(backend, app, state)
    before = await event_types(backend, app)
    cancelled = await backend.orders.cancel(app, order.tg_payment_id)
    if state.value in sources(OrderState.CANCELLED):
        assert cancelled is not None and cancelled.state is OrderState.CANCELLED
        assert cancelled.invoice_lease_until is None
        events = await events_of(backend, app)
        assert [event.type for event in events] == [*before, "order.cancelled"]
        assert announced(events[-1]) == cancelled
    else:
        assert cancelled is None
        assert await backend.orders.get(app, order.tg_payment_id) == order
        assert await event_types(backend, app) == before


async def test_an_order_past_its_expiry_is_not_cancelled_nor_resumed(backend: Backend) -> None:
    app = await backend.add_application(None)
    order = await new_order(backend, app, ttl=0)
    assert await backend.orders.record_invoice_link(order.tg_payment_id, "https://t.me/$a")
    assert await backend.orders.cancel(app, order.tg_payment_id) is None
    assert await backend.orders.find_resumable(app, USER) is None
    stored = await backend.orders.get(app, order.tg_payment_id)
    assert stored is not None and stored.state is OrderState.PENDING  # until the sweep
    assert stored.state_at(stored.expires_at) is OrderState.EXPIRED


async def test_the_sweep_expires_only_unpaid_orders_past_their_time(backend: Backend) -> None:
    app = await backend.add_application(None)
    due_pending = await new_order(backend, app, ttl=0)
    due_failed = await new_order(backend, app, ttl=0)
    assert await backend.orders.record_invoice_failure(due_failed.tg_payment_id, "E", "r", None)
    paid = await pay(backend, await new_order(backend, app, ttl=0))
    live = await new_order(backend, app)
    assert await backend.orders.expire_due(1) == 1
    assert await backend.orders.expire_due(100) == 1
    assert await backend.orders.expire_due(100) == 0
    states = {
        order.tg_payment_id: stored.state
        for order in (due_pending, due_failed, paid, live)
        if (stored := await backend.orders.get(app, order.tg_payment_id)) is not None
    }
    assert states == {
        due_pending.tg_payment_id: OrderState.EXPIRED,
        due_failed.tg_payment_id: OrderState.EXPIRED,
        paid.tg_payment_id: OrderState.PAID,
        live.tg_payment_id: OrderState.PENDING,
    }
    expired = [event for event in await events_of(backend, app) if event.type == "order.expired"]
    assert {event.tg_payment_id for event in expired} == {
        due_pending.tg_payment_id,
        due_failed.tg_payment_id,
    }
    for event in expired:
        assert announced(event).state is OrderState.EXPIRED
        assert announced(event).invoice_lease_until is None


async def test_resume_finds_the_users_newest_payable_order(backend: Backend) -> None:
    app = await backend.add_application(None)
    older = await new_order(backend, app)
    newer = await new_order(backend, app)
    await new_order(backend, app)  # no link yet: not payable
    await backend.orders.record_invoice_link(older.tg_payment_id, "https://t.me/$a")
    assert (await backend.orders.find_resumable(app, USER)) == await backend.orders.get(
        app, older.tg_payment_id
    )
    await backend.orders.record_invoice_link(newer.tg_payment_id, "https://t.me/$b")
    found = await backend.orders.find_resumable(app, USER)
    assert found is not None and found.tg_payment_id == newer.tg_payment_id
    assert await backend.orders.find_resumable(app, USER + 1) is None
    await backend.orders.cancel(app, newer.tg_payment_id)
    found = await backend.orders.find_resumable(app, USER)
    assert found is not None and found.tg_payment_id == older.tg_payment_id


async def test_a_client_report_is_kept_and_announced_without_a_change_of_state(
    backend: Backend,
) -> None:
    app = await backend.add_application(None)
    order = await pay(backend, await new_order(backend, app))
    reported = await backend.orders.record_client_report(app, order.tg_payment_id, "cancelled")
    assert reported is not None
    assert (reported.state, reported.client_report) == (OrderState.PAID, "cancelled")
    event = (await events_of(backend, app))[-1]
    assert (event.type, event.data.get("status")) == ("order.client_report", "cancelled")
    assert announced(event) == reported
