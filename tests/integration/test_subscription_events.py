"""A subscription's events reach every consumer the issue names: ListEvents (the stream's list)
and the order's callbacks, in order, for the first payment, a renewal and a cancellation by the
user, the way the fake Bot API plays them over real HTTP."""

from __future__ import annotations

import aiohttp

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.http_guard import HttpPoster
from portex_pay.adapters.postgres.callbacks import CallbackRepository
from portex_pay.app import PortexApp
from portex_pay.service.callbacks import CallbackDispatcher
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp
from tests.integration.helpers import pay_request
from tests.integration.test_callbacks import Receiver, drain

USER = 4545
MONTH = 2592000
SUBSCRIPTION_EVENTS = [
    "subscription.started",
    "subscription.renewed",
    "subscription.cancelled",
]


async def test_subscription_events_reach_list_events_and_callbacks(
    stub, service: PortexApp, make_app, fake_telegram: FakeBotApi
) -> None:
    shop: TestApp = await make_app(updates="webhook")
    await service.pool.execute(  # earlier tests' deliveries are not this dispatcher's to make
        "UPDATE callback_deliveries SET next_attempt_at = 'infinity' WHERE state = 'pending'"
    )
    receiver = Receiver()
    await receiver.start()
    try:
        paid = await stub.Pay(
            pay_request(
                tg_use_id=USER,
                amount=30,
                subscription_period=MONTH,
                callback_url=receiver.url("cb"),
            ),
            metadata=shop.metadata,
        )
        outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
        assert outcome.approved and outcome.charge_id
        await fake_telegram.renew_subscription(shop.bot_token, outcome.charge_id)
        await fake_telegram.cancel_subscription(shop.bot_token, outcome.charge_id)
        await fake_telegram.drain(shop.bot_token)
        async with aiohttp.ClientSession() as session:
            dispatcher = CallbackDispatcher(
                CallbackRepository(service.pool, DATA_KEYS), HttpPoster(session), timeout=2.0
            )
            await drain(dispatcher)
    finally:
        await receiver.stop()

    listed = await stub.ListEvents(
        payment_pb2.ListEventsRequest(
            tg_payment_id=paid.tg_payment_id, start=payment_pb2.RETENTION_START, page_size=100
        ),
        metadata=shop.metadata,
    )
    listed_types = [event.type for event in listed.events]
    assert [t for t in listed_types if t.startswith("subscription.")] == SUBSCRIPTION_EVENTS
    last = listed.events[-1]
    assert last.order.subscription.state == payment_pb2.Subscription.CANCELLED

    posted = [body.json["type"] for body in receiver.at("cb")]
    assert [t for t in posted if t.startswith("subscription.")] == SUBSCRIPTION_EVENTS
    assert "order.paid" in posted
    # Callbacks come in the order of the event log, like the list.
    assert posted == [t for t in listed_types if t in set(posted)]
