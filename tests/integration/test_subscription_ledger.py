"""Subscriptions and the Star ledger: a renewal whose successful_payment never reached us is found
by getStarTransactions (its user partner carries `subscription_period`, not the period's end) and
recorded as a renewal of the next unpaid period, exactly once, never refunded; the update that
brought the same charge, early or late, changes nothing more. The fake Bot API plays Telegram."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, Sessions, Wiring, application_admin, wire
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp
from tests.integration.test_star_ledger import catch_up
from tests.integration.test_subscriptions import MONTH, event_types, query, subscribe

Sub = payment_pb2.Subscription


@pytest.fixture
async def wiring(service: PortexApp) -> AsyncIterator[Wiring]:
    """The service's wiring on its database, as the ledger jobs and `admin reconcile` use it."""
    session = await new_session()
    yield wire(service.settings, service.pool, Sessions(session), replica="ledger-test")
    await session.close()


async def set_webhook(fake: FakeBotApi, service: PortexApp, app: TestApp, on: bool) -> None:
    """Points the bot's webhook at the service (`on`) or removes it: with none, Telegram keeps
    the updates for getUpdates, which nobody calls for a webhook application (a lost update)."""
    async with aiohttp.ClientSession() as session:
        if on:
            admin = application_admin(
                service.pool, BotApiClient(session, fake.base_url, 5.0), data_keys=DATA_KEYS
            )
            await admin.register_webhook(uuid.UUID(app.id), f"http://127.0.0.1:{service.http_port}")
            return
        url = f"{fake.base_url}/bot{app.bot_token}/deleteWebhook"
        async with session.post(url) as response:
            assert (await response.json())["ok"] is True


async def renewal_rows(service: PortexApp, order_id: int) -> list[tuple[str, str]]:
    rows = await service.pool.fetch(
        "SELECT telegram_payment_charge_id, disposition FROM payments"
        " WHERE tg_payment_id = $1 ORDER BY telegram_payment_charge_id",
        order_id,
    )
    return sorted((row["telegram_payment_charge_id"], row["disposition"]) for row in rows)


async def test_a_renewal_whose_update_was_lost_is_recorded_once_by_the_ledger(
    stub, service: PortexApp, make_app, fake_telegram: FakeBotApi, wiring: Wiring
) -> None:
    shop: TestApp = await make_app(updates="webhook")
    order_id, first = await subscribe(stub, shop, fake_telegram)
    started_end = (await query(stub, shop, order_id)).subscription.current_period_end.ToSeconds()

    await set_webhook(fake_telegram, service, shop, on=False)
    lost = await fake_telegram.renew_subscription(shop.bot_token, first)
    assert lost.charged and lost.telegram_payment_charge_id
    assert (await query(stub, shop, order_id)).subscription.current_period_end.ToSeconds() == (
        started_end
    )  # the update never came

    found = await catch_up(wiring, shop)
    again = await catch_up(wiring, shop)
    assert (found.payments, found.recorded, found.already_known) == (2, 1, 1)
    assert (again.transactions, again.recorded) == (0, 0)

    order = await query(stub, shop, order_id)
    assert order.state == payment_pb2.Order.PAID
    assert order.subscription.state == Sub.ACTIVE
    assert order.subscription.current_period_end.ToSeconds() == started_end + MONTH
    assert [
        (c.telegram_payment_charge_id, c.period_end.ToSeconds()) for c in order.subscription.charges
    ] == [(first, started_end), (lost.telegram_payment_charge_id, started_end + MONTH)]
    assert sorted(await renewal_rows(service, order_id)) == sorted(
        [(first, "accepted"), (lost.telegram_payment_charge_id, "renewal")]
    )

    # The lost update arrives after all, then another renewal comes the usual way and the
    # ledger reads it too: each charge is recorded once, whichever path saw it first.
    await set_webhook(fake_telegram, service, shop, on=True)
    await fake_telegram.drain(shop.bot_token)
    usual = await fake_telegram.renew_subscription(shop.bot_token, first)
    await fake_telegram.drain(shop.bot_token)
    late = await catch_up(wiring, shop)
    assert (late.payments, late.recorded, late.already_known) == (1, 0, 1)

    order = await query(stub, shop, order_id)
    assert order.subscription.current_period_end.ToSeconds() == started_end + 2 * MONTH
    assert [c.telegram_payment_charge_id for c in order.subscription.charges] == [
        first,
        lost.telegram_payment_charge_id,
        usual.telegram_payment_charge_id,
    ]
    types = await event_types(service, order_id)
    assert types.count("subscription.started") == 1
    assert types.count("subscription.renewed") == 2
    assert "payment.duplicate" not in types
    refunds = await service.pool.fetchval(
        "SELECT count(*) FROM refunds WHERE tg_payment_id = $1", order_id
    )
    assert refunds == 0
