"""Pay holds no database connection while it waits for Telegram (issue 20): with a pool of one
connection and createInvoiceLink held by the fake Bot API, every concurrent Pay still reaches
Telegram. A connection held across the call would let only one through until it answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from portex.payment.v1 import payment_pb2_grpc
from portex_pay.adapters.telegram.client import BotApiClient
from portex_pay.app import PortexApp, application_admin
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, create_test_app, make_settings
from tests.integration.helpers import eventually, pay_request

PAYS = 4
HELD = 60.0  # longer than the test: a call that waits for another's answer never arrives


@pytest.fixture
async def one_connection(database_url: str, fake_telegram: FakeBotApi) -> AsyncIterator[PortexApp]:
    settings = make_settings(
        database_url, fake_telegram.base_url, pool_min=1, pool_max=1, telegram_timeout=HELD
    )
    app = PortexApp(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def test_concurrent_pays_all_reach_telegram_through_a_pool_of_one(
    one_connection: PortexApp, fake_telegram: FakeBotApi
) -> None:
    async with aiohttp.ClientSession() as session:
        admin = application_admin(
            one_connection.pool,
            BotApiClient(session, fake_telegram.base_url, 5),
            data_keys=DATA_KEYS,
        )
        shop = await create_test_app(admin, fake_telegram)
    fake_telegram.delay("createInvoiceLink", HELD, times=PAYS, token=shop.bot_token)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{one_connection.grpc_port}") as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        metadata = (("authorization", f"Bearer {shop.api_key}"),)
        calls = [
            asyncio.ensure_future(stub.Pay(pay_request(tg_use_id=7000 + n), metadata=metadata))
            for n in range(PAYS)
        ]
        try:
            await eventually(
                lambda: len(fake_telegram.calls_for("createInvoiceLink", token=shop.bot_token)),
                equals=PAYS,
                what="every Pay's createInvoiceLink in flight at once",
            )
        finally:
            for call in calls:
                call.cancel()
