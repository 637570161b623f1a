"""The Python clients (sync and asyncio) and Stars subscriptions, against the in-process server
with Telegram played by the fake Bot API: `pay(subscription_period=...)`, `cancel_subscription`,
`resume_subscription` (both through editUserStarSubscription, retried on UNAVAILABLE as the
retry table allows), `refund_payment(telegram_payment_charge_id=...)` of one period's charge, and
`iter_orders` by `subscription_state`."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay_client import RetryPolicy
from portex_pay_client.retry import is_retry_safe
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.e2e.clients import Client, Connect, code_and_reason, failure, paid_order
from tests.integration.helpers import eventually, pay_fields

Sub = payment_pb2.Subscription
MONTH = 2592000
FAST_RETRY = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture
async def shop(make_app: Any) -> TestApp:
    """A webhook application, so that its orders can be paid."""
    created: TestApp = await make_app(updates="webhook")
    return created


async def subscribe(client: Client, shop: TestApp, fake: FakeBotApi, user: int) -> tuple[int, str]:
    """A subscription paid through the client's `pay`: the order id and its first charge id."""
    paid, charge_id = await paid_order(
        client, shop, fake, tg_use_id=user, amount=40, subscription_period=MONTH
    )
    assert paid.order.subscription.period_seconds == MONTH
    return paid.tg_payment_id, charge_id


def edits(fake: FakeBotApi, shop: TestApp) -> list[tuple[str, object]]:
    """The charge id and is_canceled of every editUserStarSubscription the bot made."""
    calls = fake.calls_for("editUserStarSubscription", token=shop.bot_token)
    return [(str(c.params["telegram_payment_charge_id"]), c.params["is_canceled"]) for c in calls]


async def test_pay_a_subscription_cancel_it_and_resume_it(
    connect: Connect, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    client = connect(shop.api_key)
    order_id, first = await subscribe(client, shop, fake_telegram, 9191)
    order = await client.query_order(order_id)
    assert (order.state, order.subscription.state) == (payment_pb2.Order.PAID, Sub.ACTIVE)

    cancelled = await client.call("cancel_subscription", order_id)
    assert cancelled.subscription.state == Sub.CANCELLED
    again = await client.call(
        "cancel_subscription", payment_pb2.CancelSubscriptionRequest(tg_payment_id=order_id)
    )
    assert again.subscription.state == Sub.CANCELLED
    # Resuming lifts the bot's cancellation in Telegram; it stays CANCELLED until Telegram says
    # the user re-enabled it (ResumeSubscription's contract).
    resumed = await client.call("resume_subscription", order_id)
    assert resumed.subscription.state == Sub.CANCELLED
    assert edits(fake_telegram, shop) == [(first, True), (first, True), (first, False)]

    one_off, _ = await paid_order(client, shop, fake_telegram, tg_use_id=9191)
    error = await failure(client.call("cancel_subscription", one_off.tg_payment_id))
    assert code_and_reason(error) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_SUBSCRIPTION")


async def test_cancel_and_resume_are_retried_on_unavailable(
    connect: Connect, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    """Telegram answers 502 once, the server UNAVAILABLE: both calls are in the retry table's
    idempotent RPCs, so the client repeats them and the second attempt succeeds."""
    assert is_retry_safe("CancelSubscription") and is_retry_safe("ResumeSubscription")
    client = connect(shop.api_key, retry=FAST_RETRY)
    order_id, first = await subscribe(client, shop, fake_telegram, 9292)
    for method, state in (
        ("cancel_subscription", Sub.CANCELLED),
        ("resume_subscription", Sub.CANCELLED),  # until the user re-enables it
    ):
        fake_telegram.fail_next(
            "editUserStarSubscription",
            error_code=502,
            description="Bad Gateway",
            token=shop.bot_token,
        )
        assert (await client.call(method, order_id)).subscription.state == state
    assert edits(fake_telegram, shop) == [
        (first, True),
        (first, True),
        (first, False),
        (first, False),
    ]


async def test_refund_one_periods_charge_and_list_by_subscription_state(
    connect: Connect, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    """refund_payment(telegram_payment_charge_id=) refunds that period's charge only: the order
    stays PAID and its subscription ACTIVE; iter_orders finds it by subscription_state."""
    client = connect(shop.api_key)
    order_id, first = await subscribe(client, shop, fake_telegram, 9393)
    renewal = await fake_telegram.renew_subscription(shop.bot_token, first)
    await fake_telegram.drain(shop.bot_token)
    renewed = renewal.telegram_payment_charge_id
    assert renewed is not None

    refunded = await client.call(
        "refund_payment", order_id, telegram_payment_charge_id=renewed, reason_text="one month"
    )
    assert refunded.refund.telegram_payment_charge_id == renewed
    assert refunded.refund.amount == 40

    async def refunded_charges() -> list[str]:
        order = await client.query_order(order_id)
        return [
            c.telegram_payment_charge_id
            for c in order.subscription.charges
            if c.refunded_time.seconds
        ]

    await eventually(refunded_charges, equals=[renewed])
    order = await client.query_order(order_id)
    assert (order.state, order.subscription.state) == (payment_pb2.Order.PAID, Sub.ACTIVE)

    one_off, _ = await paid_order(client, shop, fake_telegram, tg_use_id=9393)
    active = await client.collect("iter_orders", filter="subscription_state = ACTIVE")
    assert [o.tg_payment_id for o in active] == [order_id]
    others = await client.collect("iter_orders", filter="subscription_state != ACTIVE")
    assert [o.tg_payment_id for o in others] == [one_off.tg_payment_id]
    unknown = await client.pay(**pay_fields(tg_use_id=9393, request_id=""))
    error = await failure(
        client.call("refund_payment", unknown.tg_payment_id, telegram_payment_charge_id=renewed)
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
