"""Stars subscriptions end to end: the first payment, renewals, a redelivered renewal, the
`subscription` update, CancelSubscription / ResumeSubscription through editUserStarSubscription,
a lapse past the period's end, and refunding one period, with Telegram played by the fake Bot
API over real HTTP and PostgreSQL underneath."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.postgres.orders import OrderRepository
from portex_pay.app import PortexApp
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.integration.helpers import details, pay_request

Sub = payment_pb2.Subscription
USER = 4343
MONTH = 2592000


@pytest.fixture
async def shop(make_app) -> TestApp:
    created: TestApp = await make_app(updates="webhook")
    return created


async def query(stub, app: TestApp, tg_payment_id: int) -> payment_pb2.Order:
    order: payment_pb2.Order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id), metadata=app.metadata
    )
    return order


async def event_types(service: PortexApp, tg_payment_id: int) -> list[str]:
    rows = await service.pool.fetch(
        "SELECT type FROM events WHERE tg_payment_id = $1 ORDER BY id", tg_payment_id
    )
    return [row["type"] for row in rows]


def edit_calls(fake: FakeBotApi, app: TestApp) -> list[tuple[str, bool]]:
    """The editUserStarSubscription calls the app's bot made: (charge id, is_canceled)."""
    return [
        (call.params["telegram_payment_charge_id"], call.params["is_canceled"] in (True, "true"))
        for call in fake.calls_for("editUserStarSubscription", token=app.bot_token)
    ]


async def subscribe(stub, shop: TestApp, fake: FakeBotApi) -> tuple[int, str]:
    """A subscription order, paid: its id and its first charge id."""
    paid = await stub.Pay(
        pay_request(tg_use_id=USER, amount=50, subscription_period=MONTH), metadata=shop.metadata
    )
    outcome = await fake.pay_invoice(paid.tg_payment_url, USER)
    assert outcome.approved and outcome.charge_id
    await fake.drain(shop.bot_token)
    return paid.tg_payment_id, outcome.charge_id


async def test_first_payment_and_two_renewals_each_recorded_once(
    stub, service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    order_id, first = await subscribe(stub, shop, fake_telegram)
    order = await query(stub, shop, order_id)
    assert order.state == payment_pb2.Order.PAID
    assert order.subscription.state == Sub.ACTIVE
    assert order.subscription.period_seconds == MONTH
    started_end = order.subscription.current_period_end.ToSeconds()

    renewals = []
    for _ in range(2):
        renewal = await fake_telegram.renew_subscription(shop.bot_token, first)
        await fake_telegram.drain(shop.bot_token)
        renewals.append(renewal)
    # The second renewal delivered again: recorded once.
    assert renewals[1].update_id is not None
    await fake_telegram.redeliver(renewals[1].update_id, token=shop.bot_token)
    await fake_telegram.drain(shop.bot_token)

    order = await query(stub, shop, order_id)
    assert order.state == payment_pb2.Order.PAID
    assert order.subscription.state == Sub.ACTIVE
    assert order.subscription.current_period_end.ToSeconds() == started_end + 2 * MONTH
    assert (
        order.subscription.current_period_end.ToSeconds()
        - order.subscription.current_period_start.ToSeconds()
    ) == MONTH
    charges = [c.telegram_payment_charge_id for c in order.subscription.charges]
    assert charges == [
        first,
        renewals[0].telegram_payment_charge_id,
        renewals[1].telegram_payment_charge_id,
    ]
    types = await event_types(service, order_id)
    assert types.count("subscription.started") == 1
    assert types.count("subscription.renewed") == 2
    assert "payment.duplicate" not in types
    refunds = await service.pool.fetchval(
        "SELECT count(*) FROM refunds WHERE tg_payment_id = $1", order_id
    )
    assert refunds == 0  # renewals are never refunded


async def test_the_subscription_update_in_its_three_states(
    stub, service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    order_id, first = await subscribe(stub, shop, fake_telegram)
    await fake_telegram.cancel_subscription(shop.bot_token, first)
    await fake_telegram.drain(shop.bot_token)
    assert (await query(stub, shop, order_id)).subscription.state == Sub.CANCELLED

    await fake_telegram.reactivate_subscription(shop.bot_token, first)
    await fake_telegram.drain(shop.bot_token)
    assert (await query(stub, shop, order_id)).subscription.state == Sub.ACTIVE

    fake_telegram.set_user_stars(USER, 0)
    failed = await fake_telegram.renew_subscription(shop.bot_token, first)
    assert not failed.charged
    await fake_telegram.drain(shop.bot_token)
    assert failed.update_id is not None
    await fake_telegram.redeliver(failed.update_id, token=shop.bot_token)
    await fake_telegram.drain(shop.bot_token)
    assert (await query(stub, shop, order_id)).subscription.state == Sub.LAPSED

    types = await event_types(service, order_id)
    assert [t for t in types if t.startswith("subscription.")] == [
        "subscription.started",
        "subscription.cancelled",
        "subscription.reactivated",
        "subscription.payment_failed",
    ]
    # A later renewal recovers it.
    fake_telegram.set_user_stars(USER, None)
    await fake_telegram.renew_subscription(shop.bot_token, first)
    await fake_telegram.drain(shop.bot_token)
    assert (await query(stub, shop, order_id)).subscription.state == Sub.ACTIVE


async def test_cancel_and_resume_through_edit_user_star_subscription(
    stub, service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    order_id, first = await subscribe(stub, shop, fake_telegram)
    request = payment_pb2.CancelSubscriptionRequest(tg_payment_id=order_id)
    for _ in range(2):  # idempotent
        cancelled = await stub.CancelSubscription(request, metadata=shop.metadata)
        assert cancelled.subscription.state == Sub.CANCELLED
    (subscription,) = fake_telegram.subscriptions(shop.bot_token)
    assert subscription.canceled_by_bot
    with pytest.raises(ValueError):  # Telegram does not renew a cancelled subscription
        await fake_telegram.renew_subscription(shop.bot_token, first)

    # The user cancels in their app too; then the bot lifts its own cancellation, twice.
    await fake_telegram.cancel_subscription(shop.bot_token, first)
    await fake_telegram.drain(shop.bot_token)
    resume = payment_pb2.ResumeSubscriptionRequest(tg_payment_id=order_id)
    for _ in range(2):  # idempotent
        resumed = await stub.ResumeSubscription(resume, metadata=shop.metadata)
        # Telegram renews nothing yet: it only lets the user re-enable it.
        assert resumed.subscription.state == Sub.CANCELLED
    assert not fake_telegram.subscriptions(shop.bot_token)[0].canceled_by_bot
    assert [edit[-1] for edit in edit_calls(fake_telegram, shop)] == [True, True, False, False]
    with pytest.raises(ValueError):  # still no renewal
        await fake_telegram.renew_subscription(shop.bot_token, first)
    assert "subscription.reactivated" not in await event_types(service, order_id)
    # The user re-enables it: Telegram's `active` update makes it ACTIVE.
    await fake_telegram.reactivate_subscription(shop.bot_token, first)
    await fake_telegram.drain(shop.bot_token)
    assert (await query(stub, shop, order_id)).subscription.state == Sub.ACTIVE
    types = await event_types(service, order_id)
    assert types.count("subscription.cancelled") == 1
    assert types.count("subscription.reactivated") == 1

    # A one-off order is no subscription; another application's order answers as missing.
    one_off = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CancelSubscription(
            payment_pb2.CancelSubscriptionRequest(tg_payment_id=one_off.tg_payment_id),
            metadata=shop.metadata,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(refused.value)["ErrorInfo"].reason == "NOT_A_SUBSCRIPTION"


async def test_a_renewal_forced_after_cancellation_is_recorded_and_reactivates(
    stub, service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    order_id, first = await subscribe(stub, shop, fake_telegram)
    await stub.CancelSubscription(
        payment_pb2.CancelSubscriptionRequest(tg_payment_id=order_id), metadata=shop.metadata
    )
    renewal = await fake_telegram.renew_subscription(shop.bot_token, first, force=True)
    await fake_telegram.drain(shop.bot_token)
    order = await query(stub, shop, order_id)
    assert order.subscription.state == Sub.ACTIVE
    assert (
        order.subscription.charges[-1].telegram_payment_charge_id
        == renewal.telegram_payment_charge_id
    )


async def test_a_subscription_lapses_past_its_period_end(
    stub, service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    order_id, _ = await subscribe(stub, shop, fake_telegram)
    sweeps = OrderRepository(service.pool)
    assert await sweeps.expire_subscriptions(100) == 0  # still within its period
    # The period ended two hours ago (beyond the one-hour grace) with no renewal.
    await service.pool.execute(
        """
        UPDATE orders SET current_period_end = now() - interval '2 hours',
            current_period_start = now() - interval '2 hours' - interval '30 days'
        WHERE tg_payment_id = $1
        """,
        order_id,
    )
    assert await sweeps.expire_subscriptions(100) == 1
    assert await sweeps.expire_subscriptions(100) == 0
    assert (await query(stub, shop, order_id)).subscription.state == Sub.EXPIRED
    assert (await event_types(service, order_id))[-1] == "subscription.expired"


async def test_refund_one_period(
    stub, service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    order_id, first = await subscribe(stub, shop, fake_telegram)
    renewal = await fake_telegram.renew_subscription(shop.bot_token, first)
    await fake_telegram.drain(shop.bot_token)

    def refund(charge_id: str | None, order: int = order_id) -> Any:
        return stub.RefundPayment(
            payment_pb2.RefundPaymentRequest(
                tg_payment_id=order, telegram_payment_charge_id=charge_id or ""
            ),
            metadata=shop.metadata,
        )

    response = await refund(renewal.telegram_payment_charge_id)
    assert response.refund.telegram_payment_charge_id == renewal.telegram_payment_charge_id
    assert response.refund.amount == 50
    again = await refund(renewal.telegram_payment_charge_id)  # idempotent: the same refund
    assert again.refund.create_time == response.refund.create_time
    assert again.order.state == payment_pb2.Order.PAID  # a period refunded: still paid
    # Another order's charge (the first one of another subscription) answers NOT_FOUND.
    other_id, other_first = await subscribe(stub, shop, fake_telegram)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await refund(other_first)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert other_id != order_id
