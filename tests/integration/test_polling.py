"""Long polling: the whole payment through getUpdates, one consumer per bot across replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import structlog

from portex.payment.v1 import payment_pb2
from portex_pay.app import PortexApp
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp, make_settings
from tests.integration.helpers import eventually, pay_request

USER = 5151
WEBHOOK_DELETED = "webhook set behind portex-pay's back: deleted"


@pytest.fixture
async def start_replica(
    database_url: str, fake_telegram: FakeBotApi
) -> AsyncIterator[Callable[[], asyncio.Future[PortexApp]]]:
    replicas: list[PortexApp] = []

    async def start() -> PortexApp:
        replica = PortexApp(
            make_settings(
                database_url,
                fake_telegram.base_url,
                telegram_pollers=True,
                poll_timeout=1,
                poll_lease_seconds=2.0,
            )
        )
        await replica.start()
        replicas.append(replica)
        return replica

    yield start  # type: ignore[misc]
    for replica in replicas:
        await replica.stop()


def polls(replica: PortexApp, bot_id: int) -> int:
    assert replica.pollers is not None
    poller = replica.pollers.pollers.get(bot_id)
    return 0 if poller is None else poller.polls


async def test_a_payment_completes_through_long_polling(
    stub, make_app, start_replica, fake_telegram: FakeBotApi, service
):
    app: TestApp = await make_app(updates="polling")
    await start_replica()
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=app.metadata)
    outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
    assert outcome.approved
    await fake_telegram.drain(app.bot_token)  # confirmed by the next getUpdates offset

    order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=paid.tg_payment_id), metadata=app.metadata
    )
    assert (order.state, order.status, order.status_description) == (
        payment_pb2.Order.PAID,
        1,
        "success",
    )
    bot_id = int(app.bot_token.split(":")[0])
    last_update = await service.pool.fetchval(
        "SELECT max(update_id) FROM telegram_updates WHERE bot_id = $1", bot_id
    )
    # The offset is stored only after processing: a restart resumes right after it.
    assert (
        await service.pool.fetchval("SELECT next_offset FROM poll_state WHERE bot_id = $1", bot_id)
        == last_update + 1
    )


async def test_two_replicas_one_consumer_and_the_other_takes_over(
    stub, make_app, start_replica, fake_telegram: FakeBotApi
):
    app: TestApp = await make_app(updates="polling")
    bot_id = int(app.bot_token.split(":")[0])
    first, second = await start_replica(), await start_replica()
    await eventually(lambda: polls(first, bot_id) + polls(second, bot_id) > 0)
    holder, standby = (first, second) if polls(first, bot_id) else (second, first)
    # Several lease periods: the standby never polls while the holder is alive.
    started = polls(holder, bot_id)
    await eventually(lambda: polls(holder, bot_id) >= started + 3)
    assert polls(standby, bot_id) == 0

    await holder.stop()
    await eventually(lambda: polls(standby, bot_id) > 0, timeout=10)
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=app.metadata)
    assert (await fake_telegram.pay_invoice(paid.tg_payment_url, USER)).approved
    await fake_telegram.drain(app.bot_token)
    order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=paid.tg_payment_id), metadata=app.metadata
    )
    assert order.state == payment_pb2.Order.PAID


async def test_a_webhook_set_behind_portex_pays_back_is_deleted_and_polling_goes_on(
    stub, make_app, start_replica, fake_telegram: FakeBotApi
):
    """Anyone with the bot's token can set a webhook at Telegram (the proxy let a bot do it
    through a path with `..`, issue 16); Telegram then answers every getUpdates 409. The poller
    deletes it, says so, and the next payment is answered and recorded as before."""
    app: TestApp = await make_app(updates="polling")
    token = app.bot_token
    bot_id = int(token.split(":")[0])
    replica = await start_replica()
    await eventually(lambda: polls(replica, bot_id) > 0)
    deleted = len(fake_telegram.calls_for("deleteWebhook", token))
    with structlog.testing.capture_logs() as logs:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{fake_telegram.base_url}/bot{token}/setWebhook",
                json={"url": "http://127.0.0.1:9/hook"},
            ) as response,
        ):
            assert (await response.json())["ok"] is True
        await eventually(lambda: len(fake_telegram.calls_for("deleteWebhook", token)) > deleted)
    assert [e["bot_id"] for e in logs if e["event"] == WEBHOOK_DELETED] == [bot_id]

    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=app.metadata)
    assert (await fake_telegram.pay_invoice(paid.tg_payment_url, USER)).approved
    await fake_telegram.drain(token)
    order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=paid.tg_payment_id), metadata=app.metadata
    )
    assert order.state == payment_pb2.Order.PAID
